"""Request bodies -> images: the size limit, multipart or raw bytes, decoding, and the 4xx errors.

Every way a request can be wrong raises :class:`ApiError`, which the app turns into a JSON
body ``{"error": code, "message": what is wrong and how to fix it, "field": ...}``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from poseseg.data.image_io import ImageReadError, decode_image_bytes
from poseseg.serve.sniff import describe_bytes, looks_like_urlencoded_form

ACCEPTED_TYPES = "JPEG, PNG, BMP, TIFF, WebP or GIF"
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away before the answer
HOW_TO_SEND = ("as a multipart file field named 'image' (curl -F image=@photo.jpg) or as the raw request body "
               "(curl --data-binary @photo.jpg)")


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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, "too_large", f"the request body is over the limit of {limit_mb:g} MB "
                               f"(start the server with a larger --max-image-mb)")
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer: not a server error, just a line in the access log
        raise ApiError(CLIENT_CLOSED, "client_closed_request", f"the client closed the connection after sending "
                       f"{size} of {declared or 'an unknown number of'} bytes") from None
    return b"".join(chunks)


async def read_upload(request: Request, *, max_bytes: int, max_pixels: int) -> Upload:
    """The image of a ``POST``: a multipart form's file part, or the raw body (``image/*`` or octet-stream)."""
    body = await read_body(request, max_bytes)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        data, name, where = await _multipart_file(request, body)
    else:  # raw bytes, whatever the label: `curl --data-binary @photo.jpg` says x-www-form-urlencoded
        data, name, where = body, "body", f"the request body (Content-Type {media})" if media else "the request body"
        _check_raw_body(data, media)
    image = await run_in_threadpool(decode_upload, data, name, max_pixels, where=where)  # off the event loop
    return Upload(image=image, name=name)


def decode_upload(data: bytes, name: str, max_pixels: int, *, where: str | None = None) -> np.ndarray:
    """Bytes -> (H, W, 3) uint8 RGB; 16-bit, grey, palette and RGBA images are converted (alpha over white).

    ``where`` names the bytes in errors ("the file field 'image' (cat.jpg)"); by default ``name``.
    """
    where = where or f"the upload ({name})"
    if not data:
        raise ApiError(400, "empty_body", f"{where} is empty (0 bytes); send the picture's bytes", field="image")
    try:
        return decode_image_bytes(data, name, max_pixels)
    except ImageReadError as e:
        if "pixels is above" in e.reason:
            raise ApiError(413, "too_many_pixels", f"{where}: {e.reason.split(';')[0]}; send a smaller picture",
                           field="image") from None
        if e.reason.startswith("not a readable image"):
            raise ApiError(415, "not_an_image", f"{where} is not an image this server can read: {len(data)} bytes of "
                           f"{describe_bytes(data)}; send a picture as {ACCEPTED_TYPES}", field="image") from None
        raise ApiError(400, "corrupt_image", f"{where} is a truncated or corrupt image ({len(data)} bytes; "
                       f"{_first_cause(e)}); re-export the file and send it whole", field="image") from None


def _check_raw_body(body: bytes, media: str) -> None:
    """An empty raw body, or one that is an HTML form or JSON, was never the picture: say how to send one."""
    if not body:
        raise ApiError(400, "empty_body", f"the request is empty (no body, no form); send the picture {HOW_TO_SEND}",
                       field="image")
    fields = looks_like_urlencoded_form(body) if media == "application/x-www-form-urlencoded" else None
    if fields is not None:
        raise ApiError(415, "unsupported_media_type", f"the request body is a url-encoded form (fields: "
                       f"{', '.join(fields)}), which cannot carry a picture; send the picture {HOW_TO_SEND}",
                       field="content-type")
    if media == "application/json" or media.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", f"the request body is JSON (Content-Type {media}); this API "
                       f"takes the picture's bytes, not JSON: send them {HOW_TO_SEND}", field="content-type")


def _first_cause(error: Exception) -> str:
    cause = error.__cause__
    return str(cause) if cause is not None else str(error)


async def _multipart_file(request: Request, body: bytes) -> tuple[bytes, str, str]:
    """The first file part of a multipart body (the field 'image' preferred): its bytes, its name (the file
    name, else the field name) and a phrase naming it for errors ("the file field 'image' (cat.jpg)")."""

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
        where = f"the file field '{key}'" + (f" ({upload.filename})" if upload.filename else "")
        return data, upload.filename or key, where
    finally:
        await form.close()
