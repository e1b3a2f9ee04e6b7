"""The FastAPI app: ``create_app(predictor, settings)`` serves the model, the page and the docs.

Endpoints: ``POST /predict`` (JSON), ``POST /predict/overlay`` (PNG/JPEG), ``GET /healthz``,
``GET /info``, the page at ``/`` and OpenAPI docs at ``/docs``. Images go through the
:class:`~poseseg.serve.batcher.Batcher`; a bad request is a 4xx JSON error that names the
problem, a failure inside the model is a 500 whose id is in the server log.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import io
import logging
import secrets
import uuid
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from poseseg.export.exported_model import ExportedModel
from poseseg.keypoint_schema import KeypointSchema, coco_person_schema
from poseseg.serve.batcher import Batcher
from poseseg.serve.codec import ApiError, Upload, read_upload
from poseseg.serve.memory import after_large_pictures
from poseseg.serve.results import OUTPUTS, OutputOptions, full_masks, schema_json, select, to_json
from poseseg.serve.settings import API_KEY_HEADER, ServeSettings

log = logging.getLogger("poseseg.serve")
STATIC_DIR = Path(__file__).parent / "static"
IMAGE_BODY = {"requestBody": {"required": True, "description": "the image: a multipart file field 'image', or the "
                              "raw bytes (Content-Type image/* or application/octet-stream)", "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
ERROR_RESPONSES = {400: {"description": "bad request: {error, message, field}"},
                   401: {"description": "missing or wrong API key"}, 413: {"description": "image too large"},
                   415: {"description": "not an image (the message says what was sent), or a form/JSON body"},
                   500: {"description": "the model failed; the id is in the server log"}}


def create_app(predictor, settings: ServeSettings | None = None) -> FastAPI:
    """An app serving ``predictor`` (a :class:`poseseg.Predictor`).

    The predictor's own ``score_thresh`` is the lowest threshold a request may ask for (build it
    with ``score_thresh=0.0`` to allow any); ``settings.score_thresh`` is the default.
    """
    settings = settings or ServeSettings()
    max_batch = settings.batch_size_for(predictor.device)
    # masks stay in their boxes (BoxMask): a 12-megapixel photo costs no full-size plane per person;
    # after a large picture the freed memory goes back to the system
    run_batch = after_large_pictures(functools.partial(predictor.predict_batch, full_masks=False))
    batcher = Batcher(run_batch, max_batch=max_batch, max_wait_ms=settings.max_wait_ms)
    schema = _schema_of(predictor)
    available = _available_outputs(predictor)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(title="poseseg", version=_version(), lifespan=lifespan,
                  description="Boxes, instance masks and body keypoints for every person in a picture.")
    app.state.predictor, app.state.settings, app.state.batcher = predictor, settings, batcher
    _add_error_handlers(app)
    require_key = _key_checker(settings.api_key)

    def predict_options(request: Request,
                        score_thresh: float | None = Query(None, ge=0.0, le=1.0, description="keep people at or "
                                                           f"above this score (default {settings.score_thresh})"),
                        outputs: str | None = Query(None, description="comma-separated subset of "
                                                    f"{','.join(available)} (default: all)"),
                        format: Literal["simple", "coco"] = Query("simple", description="simple: one object per "
                                                                  "person; coco: COCO result records"),
                        mask_format: Literal["rle", "polygon"] = Query("rle", description="COCO RLE or polygon "
                                                                        "outlines")) -> OutputOptions:
        _reject_unknown(request, {"score_thresh", "outputs", "format", "mask_format"})
        return OutputOptions(_threshold(score_thresh), _outputs(outputs), format, mask_format)

    def overlay_options(request: Request,
                        score_thresh: float | None = Query(None, ge=0.0, le=1.0, description="draw people at or "
                                                           f"above this score (default {settings.score_thresh})"),
                        outputs: str | None = Query(None, description="layers to draw, comma-separated subset of "
                                                    f"{','.join(available)} (default: all)"),
                        image_format: Literal["png", "jpeg"] = Query("png", description="the picture's format")
                        ) -> tuple[OutputOptions, str]:
        _reject_unknown(request, {"score_thresh", "outputs", "image_format"})
        return OutputOptions(_threshold(score_thresh), _outputs(outputs)), image_format

    def _threshold(value: float | None) -> float:
        value = settings.score_thresh if value is None else value
        if value < predictor.score_thresh:
            raise ApiError(400, "bad_option", f"score_thresh={value} is below {predictor.score_thresh}, the lowest "
                           "this server computes (start it with a lower --score-thresh)", field="score_thresh")
        return value

    def _outputs(text: str | None) -> tuple[str, ...]:
        if text is None:
            return available
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        for name in names:
            if name not in OUTPUTS:
                raise ApiError(400, "bad_option", f"outputs: unknown output '{name}'{_close(name, OUTPUTS)}; "
                               f"choose from {','.join(available)}", field="outputs")
            if name not in available:
                raise ApiError(400, "bad_option", f"outputs: this model has no '{name}' head; it gives "
                               f"{','.join(available)}", field="outputs")
        if not names:
            raise ApiError(400, "bad_option", f"outputs is empty; choose from {','.join(available)}", field="outputs")
        return names

    async def run_model(upload: Upload):
        _check_fixed_size(predictor, upload)
        try:
            return await batcher.submit(upload.image)
        except Exception as error:  # noqa: BLE001 - the server lives on; the id leads to the traceback
            raise _internal_error(error, f"the model failed on {upload.name} "
                                  f"({upload.image.shape[1]}x{upload.image.shape[0]})") from None

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", summary="liveness: answers while the model works (no API key needed)")
    async def healthz():
        return {"status": "ok", "busy": batcher.stats.in_model > 0, "in_model": batcher.stats.in_model,
                "queued": batcher.queued}

    @app.get("/info", summary="model, keypoint schema, device, version, limits", dependencies=[Depends(require_key)],
             responses={401: ERROR_RESPONSES[401]})
    async def info():
        stats = batcher.stats
        return {"name": "poseseg", "version": _version(), "weights": settings.weights, "model": _model_json(predictor),
                "outputs": list(available), "keypoint_schema": schema_json(schema), "device": _device_name(predictor),
                "torch": _torch_version(), "max_batch": max_batch, "max_wait_ms": settings.max_wait_ms,
                "max_image_mb": settings.max_image_mb, "max_pixels": settings.max_pixels,
                "score_thresh": settings.score_thresh, "min_score_thresh": float(predictor.score_thresh),
                "stats": {"batches": stats.batches, "images": stats.images, "largest_batch": stats.largest_batch,
                          "failures": stats.failures}}

    @app.post("/predict", summary="boxes, masks and keypoints of every person, as JSON",
              dependencies=[Depends(require_key)], openapi_extra=IMAGE_BODY, responses=ERROR_RESPONSES)
    async def predict(request: Request, options: OutputOptions = Depends(predict_options)):
        upload = await read_upload(request, max_bytes=settings.max_bytes, max_pixels=settings.max_pixels)
        pred = await run_model(upload)
        info = {"name": upload.name, "width": int(upload.image.shape[1]), "height": int(upload.image.shape[0])}
        return await run_in_threadpool(to_json, pred, options, image_info=info, schema=schema)

    @app.post("/predict/overlay", summary="the picture with boxes, masks and skeletons drawn (PNG or JPEG)",
              dependencies=[Depends(require_key)], openapi_extra=IMAGE_BODY, responses=ERROR_RESPONSES,
              response_class=Response)
    async def overlay(request: Request, chosen: tuple[OutputOptions, str] = Depends(overlay_options)):
        options, image_format = chosen
        upload = await read_upload(request, max_bytes=settings.max_bytes, max_pixels=settings.max_pixels)
        pred = await run_model(upload)
        data = await run_in_threadpool(_draw_overlay, upload.image, pred, options, schema, image_format)
        return Response(data, media_type=f"image/{image_format}")

    return app


def _draw_overlay(image, pred, options: OutputOptions, schema, image_format: str) -> bytes:
    from poseseg.visualize import draw

    chosen = select(pred, options.score_thresh, options.outputs)
    if "masks" in chosen:
        chosen["masks"] = full_masks(chosen["masks"], image.shape[:2])
    picture = draw(image, chosen, schema=schema, score_thresh=0.0,
                   show_boxes="boxes" in options.outputs, show_masks="masks" in options.outputs,
                   show_keypoints="keypoints" in options.outputs)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG" if image_format == "png" else "JPEG", quality=90)
    return buffer.getvalue()


def _schema_of(predictor) -> KeypointSchema | None:
    """The keypoint schema the weights carry, else COCO's for a 17-keypoint model, else none."""
    if "keypoint" not in predictor.model.heads:
        return None
    if predictor.schema:
        return KeypointSchema.from_dict(predictor.schema)
    cfg = predictor.cfg  # None only for an ONNX file exported without its config
    return coco_person_schema() if cfg is not None and cfg.model.keypoint.num_keypoints == 17 else None


def _available_outputs(predictor) -> tuple[str, ...]:
    """``PoseSegModel.heads`` and ``ExportedModel.heads`` (box, mask, keypoint) as the API's output names."""
    heads = predictor.model.heads
    return tuple(output for head, output in (("box", "boxes"), ("mask", "masks"), ("keypoint", "keypoints"))
                 if head in heads)


def _is_onnx(predictor) -> bool:
    return isinstance(predictor.model, ExportedModel)  # run by ONNX Runtime or OpenVINO


def _model_json(predictor) -> dict:
    """What /info (and the page) says about the model: heads, architecture from the config, size."""
    out = {"format": "onnx" if _is_onnx(predictor) else "pytorch", "heads": list(predictor.model.heads)}
    cfg = predictor.cfg
    if cfg is None:
        out["backbone"] = "an exported ONNX graph (exported without its config)"
    else:
        m = cfg.model
        out.update(backbone=f"ResNet-{m.backbone.depth} (width {m.backbone.width}, {m.backbone.norm})",
                   deform_stages=list(m.backbone.deform_stages), fpn_stages=list(m.fpn.in_stages),
                   test_size=m.input.test_size, max_size=m.input.max_size)
    if _is_onnx(predictor):
        size = predictor.model.input_size
        out["input_size"] = list(size) if size else None  # (H, W) when exported with --size: only that size
    else:
        out["parameters"] = sum(p.numel() for p in predictor.model.parameters())
    return out


def _device_name(predictor) -> str:
    if _is_onnx(predictor):  # the Predictor feeds the runtime from CPU memory; the runtime says where it runs
        return predictor.model.device_name
    return str(predictor.device)


def _check_fixed_size(predictor, upload: Upload) -> None:
    """An ONNX file exported with ``--size H W`` takes pictures of exactly that size: others are a 400, not a 500."""
    size = predictor.model.input_size if _is_onnx(predictor) else None
    height, width = upload.image.shape[:2]
    if size is not None and (height, width) != tuple(size):
        raise ApiError(400, "wrong_size", f"the image ({upload.name}) is {width}x{height}, but this server's model "
                       f"was exported for {size[1]}x{size[0]} pictures only (poseseg export --size); resize it "
                       "to that size, or serve an export made without --size", field="image")


def _reject_unknown(request: Request, known: set[str]) -> None:
    for name in request.query_params.keys():
        if name not in known:
            raise ApiError(400, "unknown_option", f"unknown query option '{name}'{_close(name, known)}; this "
                           f"endpoint takes {', '.join(sorted(known))}", field=name)


def _close(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _key_checker(api_key: str | None):
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the server's --api-key")

    async def require_key(request: Request, given: str | None = Depends(header)) -> None:
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "unauthorized", f"this server needs an API key: send it in the {API_KEY_HEADER} "
                           "header (or Authorization: Bearer KEY)" if given is None else "wrong API key",
                           field=API_KEY_HEADER)

    return require_key


def _internal_error(error: BaseException, what: str) -> ApiError:
    error_id = uuid.uuid4().hex[:12]
    log.error("error id %s: %s: %s", error_id, what, error, exc_info=error)
    return ApiError(500, "internal_error", f"{what}; error id {error_id} is in the server log", error_id=error_id)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.to_json(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def bad_option(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        field = str(first["loc"][-1]) if first.get("loc") else None
        given = first.get("input")
        return JSONResponse({"error": "bad_option", "message": f"{field}={given!r}: {first['msg']}", "field": field},
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = (f"no endpoint {request.method} {request.url.path}; see /docs" if error.status_code in (404, 405)
                   else str(error.detail))
        return JSONResponse({"error": code, "message": message}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        api = _internal_error(error, f"{request.method} {request.url.path} failed")
        return await api_error(request, api)


def _version() -> str:
    from importlib.metadata import version

    return version("poseseg")


def _torch_version() -> str:
    import torch

    return torch.__version__
