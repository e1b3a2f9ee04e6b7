"""The HTTP API through the framework's test client: every endpoint, every bad request, JSON equal to Predictor."""
import io
import logging

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from poseseg import Predictor
from poseseg.data.image_io import load_image_rgb, to_rgb_array
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES
from poseseg.visualize import draw

from serve_helpers import assert_matches, png_bytes


def median_score(client, photo_bytes) -> float:
    people = client.post("/predict?score_thresh=0&outputs=boxes", content=photo_bytes).json()["people"]
    assert len(people) >= 4, "the fixture model should find several candidates on the photo"
    return float(np.median([p["score"] for p in people]))


def test_healthz_info_page_and_docs(make_client):
    client = make_client()
    assert client.get("/healthz").json() == {"status": "ok", "busy": False, "in_model": 0, "queued": 0}
    info = client.get("/info").json()
    assert info["keypoint_schema"]["names"] == COCO_KEYPOINT_NAMES
    assert info["device"] == "cpu" and info["version"] and info["model"]["heads"] == ["box", "mask", "keypoint"]
    assert info["outputs"] == ["boxes", "masks", "keypoints"] and info["min_score_thresh"] == 0.0
    assert info["max_batch"] == 1  # the default on CPU
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/overlay", "/healthz", "/info"} <= set(paths)
    assert "multipart/form-data" in paths["/predict"]["post"]["requestBody"]["content"]


def test_predict_json_equals_predictor(make_client, trained_checkpoint, photo_bytes, photo_path):
    client = make_client()
    threshold = median_score(client, photo_bytes)
    body = client.post(f"/predict?score_thresh={threshold}",
                       files={"image": ("785.jpg", photo_bytes, "image/jpeg")}).json()
    expected = Predictor(trained_checkpoint, device="cpu", score_thresh=threshold).predict(load_image_rgb(photo_path))
    assert body["image"] == {"name": "785.jpg", "width": 640, "height": 425}
    assert body["keypoint_schema"]["names"] == COCO_KEYPOINT_NAMES
    assert_matches(body["people"], expected)
    raw = client.post(f"/predict?score_thresh={threshold}", content=photo_bytes,
                      headers={"content-type": "image/jpeg"}).json()
    assert raw["people"] == body["people"]  # raw bytes and multipart give the same answer


def test_coco_format_and_polygons(make_client, serve_predictor, photo_bytes, photo_path):
    from poseseg.modeling.postprocess import coco_records

    client = make_client()
    threshold = median_score(client, photo_bytes)
    body = client.post(f"/predict?score_thresh={threshold}&format=coco", content=photo_bytes).json()
    pred = serve_predictor.predict(load_image_rgb(photo_path))
    keep = pred["scores"] >= threshold
    expected = coco_records({k: v[keep] for k, v in pred.items()}, image_id=0)
    assert len(body["results"]) == len(expected) > 0
    for got, want in zip(body["results"], expected):
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=1e-4)
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=1e-3)
        assert got["score"] == pytest.approx(want["score"], abs=1e-6)
    assert body["categories"][0]["keypoints"] == COCO_KEYPOINT_NAMES
    assert body["categories"][0]["skeleton"][0] == [16, 14]  # 1-based, as COCO stores it

    polygons = client.post("/predict?score_thresh=0&format=coco&mask_format=polygon", content=photo_bytes).json()
    assert polygons["results"] and all(isinstance(r["segmentation"], list) for r in polygons["results"])


def test_mask_polygons_outline_the_mask():
    from poseseg.serve.results import mask_polygons

    yy, xx = np.mgrid[:120, :160]
    mask = ((xx - 50) ** 2 + (yy - 60) ** 2 < 30 ** 2) | ((xx > 110) & (xx < 150) & (yy > 20) & (yy < 50))
    outlines = mask_polygons(mask)
    assert len(outlines) == 2 and all(len(o) % 2 == 0 and len(o) >= 6 for o in outlines)
    drawn = mask_util.decode(mask_util.merge(mask_util.frPyObjects(outlines, 120, 160))).astype(bool)
    assert (drawn & mask).sum() / (drawn | mask).sum() > 0.9  # IoU with the mask it outlines


def test_outputs_choose_the_fields(make_client, photo_bytes):
    client = make_client()
    only_kps = client.post("/predict?score_thresh=0&outputs=keypoints", content=photo_bytes).json()["people"]
    assert only_kps and all(set(p) == {"box", "score", "keypoints"} for p in only_kps)
    only_masks = client.post("/predict?score_thresh=0&outputs=masks", content=photo_bytes).json()["people"]
    assert all(set(p) == {"box", "score", "mask"} for p in only_masks)
    default = client.post("/predict", content=photo_bytes).json()
    assert default["score_thresh"] == 0.5 and all(p["score"] >= 0.5 for p in default["people"])


def test_overlay_is_the_drawing_of_the_prediction(make_client, serve_predictor, photo_bytes, photo_path):
    client = make_client()
    threshold = median_score(client, photo_bytes)
    response = client.post(f"/predict/overlay?score_thresh={threshold}", content=photo_bytes)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(response.content)))
    image = load_image_rgb(photo_path)
    pred = serve_predictor.predict(image)
    keep = pred["scores"] >= threshold
    want = np.asarray(draw(image, {k: v[keep] for k, v in pred.items()}, score_thresh=0.0))
    assert got.shape == want.shape == (425, 640, 3)
    assert (np.abs(got.astype(int) - want).max(axis=2) > 0).mean() < 0.002
    assert (got != image).any()  # something was drawn
    jpeg = client.post("/predict/overlay?image_format=jpeg&outputs=boxes", content=photo_bytes)
    assert jpeg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).size == (640, 425)


def test_16bit_and_rgba_pngs_are_converted(make_client, serve_predictor, photo_path):
    client = make_client()
    rgb = load_image_rgb(photo_path)
    grey16 = Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257)  # 16-bit grey (mode I;16)
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA")
    for picture in (grey16, rgba):
        body = client.post("/predict?score_thresh=0", content=png_bytes(picture),
                           headers={"content-type": "image/png"})
        assert body.status_code == 200, body.text
        expected = serve_predictor.predict(to_rgb_array(picture))  # 16-bit scaled, alpha over white
        assert_matches(body.json()["people"], expected)


BAD_REQUESTS = [  # (query, body or callable, headers, status, error code, words in the message)
    ("", b"", {}, 400, "empty_body", ["empty"]),
    ("", b"this is not a picture", {"content-type": "image/jpeg"}, 415, "not_an_image",
     ["not an image", "21 bytes", "'this is not a picture'", "JPEG, PNG"]),
    ("", "truncated", {"content-type": "image/jpeg"}, 400, "corrupt_image", ["truncated"]),
    ("", b"name=x", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type",
     ["url-encoded form (fields: name)", "multipart", "--data-binary"]),
    ("", b'{"image": "..."}', {"content-type": "application/json"}, 415, "unsupported_media_type",
     ["JSON", "multipart", "--data-binary"]),
    ("?scor=0.3", "photo", {}, 400, "unknown_option", ["'scor'", "score_thresh"]),
    ("?score_thresh=1.5", "photo", {}, 400, "bad_option", ["score_thresh"]),
    ("?score_thresh=high", "photo", {}, 400, "bad_option", ["score_thresh"]),
    ("?format=yolo", "photo", {}, 400, "bad_option", ["format", "coco"]),
    ("?mask_format=bitmap", "photo", {}, 400, "bad_option", ["mask_format"]),
    ("?outputs=masks,skeleton", "photo", {}, 400, "bad_option", ["'skeleton'", "keypoints"]),
    ("?outputs=", "photo", {}, 400, "bad_option", ["outputs"]),
]


@pytest.mark.parametrize("query, body, headers, status, code, words", BAD_REQUESTS,
                         ids=[r[4] + r[0] for r in BAD_REQUESTS])
def test_bad_requests_get_a_json_error_that_names_the_problem(make_client, photo_bytes, query, body, headers, status,
                                                              code, words):
    client = make_client()
    body = {"photo": photo_bytes, "truncated": photo_bytes[: len(photo_bytes) // 3]}.get(body, body)
    for path in ("/predict", "/predict/overlay"):
        if "format" in query and path.endswith("overlay"):
            continue  # the overlay has no format/mask_format: those are unknown options there
        response = client.post(path + query, content=body, headers=headers)
        assert response.status_code == status, response.text
        error = response.json()
        assert error["error"] == code
        assert all(w in error["message"] for w in words), error["message"]
    assert client.get("/healthz").status_code == 200  # still alive


NOT_IMAGES = [  # (file name, bytes, what the message says they are)
    ("notes.txt", b"meeting at 10, bring the photos\n", "text: 'meeting at 10, bring the photos '"),
    ("scan.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "a PDF document"),
    ("IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200), "HEIC"),
    ("blob.bin", bytes(range(7, 200)), "binary data starting 07 08 09"),
]


@pytest.mark.parametrize("file_name, data, kind", NOT_IMAGES, ids=[n for n, _, _ in NOT_IMAGES])
def test_a_non_image_says_what_was_sent_in_either_form(make_client, file_name, data, kind):
    """A 415 names what was sent and how big it is, lists the image types, and asks for multipart only when
    the request was not a usable form: never to a client that sent a multipart form or a raw body."""
    client = make_client()
    as_form = client.post("/predict", files={"image": (file_name, data, "application/octet-stream")})
    curl_data_binary = client.post("/predict", content=data,  # `curl --data-binary @FILE` labels it so
                                   headers={"content-type": "application/x-www-form-urlencoded"})
    for response, where in ((as_form, f"the file field 'image' ({file_name})"),
                            (curl_data_binary, "the request body (Content-Type application/x-www-form-urlencoded)")):
        assert response.status_code == 415, response.text
        error = response.json()
        assert error["error"] == "not_an_image" and error["field"] == "image"
        message = error["message"]
        assert message.startswith(f"{where} is not an image this server can read: {len(data)} bytes of "), message
        assert kind in message and "JPEG, PNG, BMP, TIFF, WebP or GIF" in message
        assert "multipart" not in message, message
    other_field = client.post("/predict", files={"upload": ("x.bin", data)})  # any file field is read
    assert other_field.json()["message"].startswith("the file field 'upload' (x.bin) is not an image")


def test_size_limits_and_forms(make_client, photo_bytes):
    small = make_client(max_image_mb=0.01)  # 10 KB
    response = small.post("/predict", content=photo_bytes)
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert "--max-image-mb" in response.json()["message"]
    few_pixels = make_client(max_pixels=1000)
    response = few_pixels.post("/predict", content=photo_bytes)
    assert response.status_code == 413 and response.json()["error"] == "too_many_pixels"
    client = make_client()
    curl_data_binary = client.post("/predict", content=photo_bytes,  # what `curl --data-binary @x.jpg` sends
                                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert curl_data_binary.status_code == 200
    form_without_file = client.post("/predict", data={"note": "hello", "size": "big"})  # urlencoded: no file
    assert form_without_file.status_code == 415 and "fields: note, size" in form_without_file.json()["message"]
    empty_file = client.post("/predict", files={"image": ("empty.jpg", b"", "image/jpeg")})
    assert empty_file.status_code == 400 and empty_file.json()["error"] == "empty_body"
    assert "the file field 'image' (empty.jpg) is empty" in empty_file.json()["message"]
    form_without_file = client.post("/predict", files={"note": (None, "hello")})
    assert form_without_file.status_code == 400 and form_without_file.json()["error"] == "no_file"
    assert "note" in form_without_file.json()["message"]
    other_name = client.post("/predict?score_thresh=0", files={"upload": ("a.jpg", photo_bytes, "image/jpeg")})
    assert other_name.status_code == 200  # any file field works; 'image' is preferred
    assert client.get("/predict").json()["error"] == "method_not_allowed"
    assert client.get("/nothing-here").json() == {"error": "not_found",
                                                  "message": "no endpoint GET /nothing-here; see /docs"}
    assert client.post("/predict?score_thresh=0.2", content=photo_bytes).status_code == 200


def test_api_key_on_every_endpoint_but_healthz(make_client, photo_bytes):
    client = make_client(api_key="s3cret")
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200  # the page itself holds no data; it asks for the key
    for method, path in (("get", "/info"), ("post", "/predict"), ("post", "/predict/overlay")):
        kwargs = {"content": photo_bytes} if method == "post" else {}
        missing = getattr(client, method)(path, **kwargs)
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["message"]
        wrong = getattr(client, method)(path, headers={"X-API-Key": "guess"}, **kwargs)
        assert wrong.status_code == 401 and wrong.json()["message"] == "wrong API key"
        assert getattr(client, method)(path, headers={"X-API-Key": "s3cret"}, **kwargs).status_code == 200
        assert getattr(client, method)(path, headers={"Authorization": "Bearer s3cret"}, **kwargs).status_code == 200


def test_a_model_failure_is_a_500_with_an_id_in_the_log(make_client, serve_predictor, photo_bytes, caplog):
    def explode_on_tiny_images(module, args):
        if any(img.shape[-1] == 77 for img in args[0]):
            raise RuntimeError("simulated kernel failure")

    client = make_client()
    hook = serve_predictor.model.transform.register_forward_pre_hook(explode_on_tiny_images)
    try:
        with caplog.at_level(logging.ERROR, logger="poseseg.serve"):
            response = client.post("/predict", content=png_bytes(Image.new("RGB", (77, 60), "white")))
        assert response.status_code == 500
        error = response.json()
        assert error["error"] == "internal_error" and error["id"] in error["message"]
        assert any(error["id"] in r.getMessage() and r.exc_info for r in caplog.records)
        assert "simulated kernel failure" in caplog.text
        assert client.post("/predict", content=photo_bytes).status_code == 200  # the server lives on
        assert client.get("/info").json()["stats"]["failures"] == 1
    finally:
        hook.remove()


def test_a_failure_outside_the_model_is_a_500_with_an_id_too(serve_predictor, photo_bytes, monkeypatch, caplog):
    from fastapi.testclient import TestClient

    import poseseg.serve.app as serve_app

    def broken_encoder(*args, **kwargs):
        raise KeyError("simulated encoder bug")

    monkeypatch.setattr(serve_app, "to_json", broken_encoder)
    with TestClient(serve_app.create_app(serve_predictor), raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="poseseg.serve"):
            response = client.post("/predict", content=photo_bytes)
        assert response.status_code == 500 and response.json()["error"] == "internal_error"
        assert response.json()["id"] in caplog.text and "simulated encoder bug" in caplog.text
        assert client.post("/predict/overlay", content=photo_bytes).status_code == 200  # still serving
