"""Hand the memory of a large picture back to the system once the model is done with it.

glibc's malloc keeps freed memory in its arenas (one per thread that allocated) instead of
returning it. A 12-megapixel photo passes through hundreds of MB (36 MB of pixels, a 144 MB float
tensor and its normalised copy), so without a trim a server's resident memory stays that much
higher after such photos and creeps up with every thread that has handled one: +7 to +22 % in
benchmarks/serve_soak.py's 1- and 3-minute runs, against -1 % with a trim after each large
picture; nothing leaked (with a trim between rounds, RSS stayed flat in-process). A trim takes
5-9 ms after a 12 MP photo, against ~1.3 s for the photo itself, so only large pictures trigger it.
On a C library without ``malloc_trim`` (musl, macOS) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

LARGE_PICTURE_PIXELS = 4_000_000  # a batch with at least this many pixels is followed by a trim


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library found, or one without malloc_trim
        return None


def release_freed_memory() -> bool:
    """Return the C heap's free memory to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def after_large_pictures(run_batch):
    """``run_batch`` (pictures as (H, W, 3) arrays -> results), followed by a trim when its batch was large."""

    @functools.wraps(run_batch)
    def run(images: list) -> list:
        try:
            return run_batch(images)
        finally:
            if sum(image.shape[0] * image.shape[1] for image in images) >= LARGE_PICTURE_PIXELS:
                release_freed_memory()

    return run
