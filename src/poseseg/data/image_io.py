"""Reading any image file people actually have into an (H, W, 3) uint8 RGB array.

* EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so the array is the picture
  as a viewer shows it. A file whose EXIF block is malformed is read without rotation.
* Modes: ``1``/``L``/``P``/``CMYK``/``YCbCr``/``LAB``/``HSV`` are converted to RGB.
  Images with an alpha channel (``RGBA``, ``LA``, ``PA``, palette with a transparency
  entry) are composited over a white background by default (what a browser shows);
  pass ``background=None`` to drop the alpha channel instead (the colour stored under
  transparent pixels is kept).
* High bit depth: ``I;16*`` (16-bit grey) is scaled with v8 = round(v16 * 255 / 65535), so
  65535 -> 255 and 32768 -> 128 (never clipped at 255). ``I`` (32-bit int) holding values in
  [0, 65535] is treated as 16-bit the same way, and otherwise mapped linearly from its
  min..max. ``F`` (float) in [0, 1] is scaled by 255, otherwise mapped from its min..max.
* Decompression bombs: an image with more than ``max_pixels`` pixels is refused before it
  is decoded (``max_pixels=None``: no limit). The limit is ours, not PIL's global one; PIL's
  own check is lifted while we open a file whose limit is above PIL's.
* Every failure (missing file, not an image, truncated or corrupt data, too large) raises
  :class:`ImageReadError`, a ``ValueError`` that names the file and says what to do.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# PIL's own default refuses images above 2 * 89_478_485 pixels; ours is the same number but a parameter.
DEFAULT_MAX_PIXELS = 178_956_970
# the suffixes of the files taken as images when a folder is listed (lower case; PIL reads them all)
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image file could not be read. ``path`` is the file, ``reason`` a short explanation."""

    def __init__(self, path: str | os.PathLike, reason: str, *, missing: bool = False) -> None:
        self.path = str(path)
        self.reason = reason
        self.missing = missing
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):  # keep the fields when the error crosses a process boundary
        return (_rebuild_error, (self.path, self.reason, self.missing))


def _rebuild_error(path: str, reason: str, missing: bool) -> "ImageReadError":
    return ImageReadError(path, reason, missing=missing)


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """The picture files directly in ``folder`` (suffixes :data:`IMAGE_EXTS`), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def rgb_to_tensor(array: np.ndarray) -> torch.Tensor:
    """An HxWx3 uint8 RGB array -> the model's (3, H, W) float tensor in [0, 1]."""
    pixels = torch.from_numpy(array if array.flags.writeable else array.copy())  # (H, W, 3) uint8
    return pixels.permute(2, 0, 1).contiguous().float().div_(255.0)


def load_image_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
                   exif_transpose: bool = True,
                   background: tuple[int, int, int] | None = (255, 255, 255)) -> np.ndarray:
    """Read ``path`` as an (H, W, 3) uint8 RGB array (see the module docstring for the rules).

    Raises :class:`ImageReadError` for a missing, unreadable, truncated or too large file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file does not exist (check the image directory and the JSON's "
                             "'file_name')" if not path.exists() else "not a regular file", missing=True)
    return _decode(path, path, max_pixels, exif_transpose, background)


def decode_image_bytes(data: bytes, name: str = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
                       exif_transpose: bool = True,
                       background: tuple[int, int, int] | None = (255, 255, 255)) -> np.ndarray:
    """:func:`load_image_rgb` for an encoded image held in memory (an upload); ``name`` is used in errors."""
    if not data:
        raise ImageReadError(name, "empty data: no image bytes were given")
    return _decode(io.BytesIO(data), name, max_pixels, exif_transpose, background)


def _decode(source: Path | io.BytesIO, path: str | os.PathLike, max_pixels: int | None, exif_transpose: bool,
            background: tuple[int, int, int] | None) -> np.ndarray:
    """Open, check the pixel count, decode, rotate and convert ``source``; errors name ``path``."""
    try:
        with _open_image(source, max_pixels) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(
                    path, f"{width}x{height} = {width * height} pixels is above the decompression-bomb "
                    f"limit of {max_pixels}; if the file is trusted, raise the limit "
                    f"(data.max_image_pixels / max_pixels=)")
            img.load()  # decode now: truncated and corrupt files fail here
            if exif_transpose:
                img = _exif_transpose(img)
            return to_rgb_array(img, background=background)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageReadError(path, f"not a readable image ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        # PIL reports truncated files as OSError("image file is truncated ..."), broken headers as
        # SyntaxError/ValueError.
        raise ImageReadError(path, f"corrupt or truncated image data ({e}); re-export or remove the file") from e


def read_image_size(path: str | os.PathLike, *, exif_transpose: bool = True) -> tuple[int, int]:
    """(width, height) from the header only (no decoding), after EXIF rotation when asked."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file does not exist", missing=True)
    try:
        with _open_image(path, None) as img:
            w, h = img.size
            if exif_transpose:
                try:
                    orientation = img.getexif().get(0x0112, 1)
                except Exception:  # malformed EXIF: no rotation, as load_image_rgb does
                    orientation = 1
                if orientation in (5, 6, 7, 8):
                    w, h = h, w
            return w, h
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(path, f"not a readable image ({e})") from e


def to_rgb_array(img: Image.Image, *, background: tuple[int, int, int] | None = (255, 255, 255)) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8 RGB array, with the module docstring's rules."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I" or mode == "F":
        grey = _high_depth_to_uint8(img)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        if background is None:
            return np.asarray(rgba.convert("RGB"), dtype=np.uint8).copy()
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return np.asarray(Image.alpha_composite(base, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def _high_depth_to_uint8(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        return _scale_16bit(arr.astype(np.uint32))
    if img.mode == "I":
        a = arr.astype(np.int64)
        if a.size == 0 or (a.min() >= 0 and a.max() <= 65535):
            return _scale_16bit(a)
        return _minmax(a.astype(np.float64))
    a = arr.astype(np.float64)  # "F"
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    if a.size == 0 or (a.min() >= 0.0 and a.max() <= 1.0):
        return np.rint(a * 255.0).astype(np.uint8)
    return _minmax(a)


def _scale_16bit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int64)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _exif_transpose(img: Image.Image) -> Image.Image:
    try:
        out = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a readable picture unreadable
        return img
    return img if out is None else out


class _open_image:
    """Context manager: ``Image.open`` with PIL's global bomb check lifted above ``max_pixels`` only.

    PIL warns above ``Image.MAX_IMAGE_PIXELS`` and raises above twice that, reading the global
    at call time. We check ``max_pixels`` ourselves, so PIL's warning is silenced and, when our
    limit is higher than PIL's (or None), its limit is lifted for this one open under a lock.
    Truncated files always fail (``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False).
    """

    def __init__(self, path: Path | io.BytesIO, max_pixels: int | None) -> None:
        self.path, self.max_pixels = path, max_pixels
        self.img: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True somewhere in this process; "
                          "truncated images will load as partly grey pictures", RuntimeWarning, stacklevel=3)
        pil_limit = Image.MAX_IMAGE_PIXELS
        lift = pil_limit is not None and (self.max_pixels is None or self.max_pixels > 2 * pil_limit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if lift:
                with _PIL_LIMIT_LOCK:
                    saved = Image.MAX_IMAGE_PIXELS
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        self.img = Image.open(self.path)
                    finally:
                        Image.MAX_IMAGE_PIXELS = saved
            else:
                self.img = Image.open(self.path)
        return self.img

    def __exit__(self, *exc) -> None:
        if self.img is not None:
            self.img.close()
