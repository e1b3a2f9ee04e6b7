"""After a large picture the server hands the memory it freed back to the system (glibc keeps it otherwise)."""
import os

import numpy as np
import pytest

from poseseg.serve.memory import LARGE_PICTURE_PIXELS, after_large_pictures, release_freed_memory


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def fragment_200_mb() -> list:
    """Allocate 200 MB on the C heap in pieces below the mmap threshold and free them behind a live one, so that
    free() cannot shrink the heap from its top: the memory stays resident until a trim."""
    pieces = [bytearray(64 * 1024) for _ in range(3200)]
    pin = bytearray(64 * 1024)
    del pieces
    return [pin]


@pytest.mark.skipif(not os.path.exists("/proc/self/status") or not release_freed_memory(),
                    reason="needs Linux with glibc's malloc_trim")
def test_a_large_batch_gives_its_freed_memory_back_and_a_small_one_does_not():
    def run_batch(images):
        return fragment_200_mb()

    run = after_large_pictures(run_batch)
    small = np.zeros((480, 640, 3), np.uint8)
    large = np.zeros((2000, LARGE_PICTURE_PIXELS // 2000, 3), np.uint8)

    release_freed_memory()
    before = rss_mb()
    pins = run([small, small])  # no trim after two VGA pictures
    assert rss_mb() - before > 150
    release_freed_memory()
    before = rss_mb()
    pins += run([large])
    assert rss_mb() - before < 50  # the 200 MB went back
