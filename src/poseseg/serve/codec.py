"""Request bodies -> images: the size limit, multipart or raw bytes, decoding, and the 4xx errors.

Every way a request can be wrong raises :class:`ApiError`, which the app turns into a JSON
body ``{"error": code, "message": what is wrong and how to fix it, "field": ...}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from poseseg.data.image_io import ImageReadError, decode_image_bytes

RAW_CONTENT_TYPES = ("image/", "application/octet-stream")


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a short ``code`` and a message naming the fix."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 error_id: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.error_id = status, code, message, field, error_id

    def to_json(self) -> dict:
        body = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.error_id is not None:
            body["id"] = self.error_id
        return body


@dataclass
class Upload:
    """A decoded upload: the RGB pixels and where they came from (a multipart file name or 'body')."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    name: str


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole request body, refused with 413 as soon as it passes ``max_bytes``."""
    limit_mb = max_bytes / 2**20
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "too_large", f"the request body is {int(declared) / 2**20:.1f} MB; the limit is "
                       f"{limit_mb:g} MB (start the server with a larger --max-image-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "too_large", f"the request body is over the limit of {limit_mb:g} MB "
                           f"(start the server with a larger --max-image-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, *, max_bytes: int, max_pixels: int) -> Upload:
    """The image of a ``POST``: a multipart form's file part, or the raw body (``image/*`` or octet-stream)."""
    body = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        data, name = await _multipart_file(request, body)
    else:  # raw bytes, whatever the label: `curl --data-binary @photo.jpg` says x-www-form-urlencoded
        data, name = body, "body"
    try:
        image = await run_in_threadpool(decode_upload, data, name, max_pixels)  # off the event loop
    except ApiError as error:
        media = content_type.split(";")[0]
        if error.code == "not_an_image" and media and not media.startswith(RAW_CONTENT_TYPES):
            raise ApiError(415, "unsupported_media_type", f"the body (Content-Type {media}) is not an image; send "
                           "the image as multipart/form-data (a file field named 'image') or as the raw body "
                           "(image/jpeg, image/png, ... or application/octet-stream)", field="content-type") from None
        raise
    return Upload(image=image, name=name)


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Bytes -> (H, W, 3) uint8 RGB; 16-bit, grey, palette and RGBA images are converted (alpha over white)."""
    if not data:
        raise ApiError(400, "empty_body", f"the upload ({name}) is empty: send the image bytes as the body or as "
                       "a multipart file field named 'image'", field="image")
    try:
        return decode_image_bytes(data, name, max_pixels)
    except ImageReadError as e:
        if "pixels is above" in e.reason:
            raise ApiError(413, "too_many_pixels", f"the image ({name}) {e.reason.split(';')[0]}; send a smaller "
                           "picture", field="image") from None
        if e.reason.startswith("not a readable image"):
            raise ApiError(400, "not_an_image", f"the upload ({name}, {len(data)} bytes) is not an image PIL can "
                           f"read; send a JPEG, PNG, BMP, TIFF, WebP or GIF", field="image") from None
        raise ApiError(400, "corrupt_image", f"the image ({name}) is truncated or corrupt ({_first_cause(e)}); "
                       "re-export the file and send it whole", field="image") from None


def _first_cause(error: Exception) -> str:
    cause = error.__cause__
    return str(cause) if cause is not None else str(error)


async def _multipart_file(request: Request, body: bytes) -> tuple[bytes, str]:
    """The first file part of a multipart body (the field 'image' preferred)."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive=replay).form()
    except Exception as e:  # python-multipart's parse errors, Starlette's MultiPartException
        raise ApiError(400, "bad_multipart", f"the multipart body could not be parsed ({e}); let the HTTP client "
                       "build the form (curl -F image=@photo.jpg)", field="body") from None
    try:
        files = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            fields = ", ".join(sorted(form.keys())) or "none"
            raise ApiError(400, "no_file", f"the multipart form has no file part (fields: {fields}); send the image "
                           "as a file field named 'image' (curl -F image=@photo.jpg)", field="image")
        files.sort(key=lambda kv: kv[0] != "image")
        key, upload = files[0]
        data = await upload.read()
        return data, upload.filename or key
    finally:
        await form.close()
