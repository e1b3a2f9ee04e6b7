"""RoIAlign over the CPU's threads: torchvision's CPU kernel runs one thread, so split the boxes.

Each box's output depends on that box alone, so pooling the boxes in chunks on a small thread pool
gives exactly the single call's result (bit-exact; ``tests/ops/test_roi_align.py``). torchvision's op
releases the GIL. Only used for inference: with autograd on, while tracing/exporting, on a GPU or for
few boxes it is the single torchvision call.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torchvision.ops import roi_align

MIN_BOXES_PER_THREAD = 64  # below this a thread's start-up costs more than it saves

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool, grown when torch's thread count grows."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            _pool, _pool_size = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poseseg-roi-align"), workers
        return _pool


def threaded_roi_align(feature: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], *,
                       spatial_scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """``torchvision.ops.roi_align(feature, rois, ...)`` -> (R, C, S, S), its boxes split over ``torch.get_num_threads()``."""
    chunks = min(torch.get_num_threads(), len(rois) // MIN_BOXES_PER_THREAD)
    if (chunks < 2 or feature.device.type != "cpu" or torch.is_grad_enabled()
            or torch.jit.is_tracing() or torch.jit.is_scripting()):
        return roi_align(feature, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                         aligned=aligned)
    feature = feature.contiguous()  # once, not in every thread
    inference = torch.is_inference_mode_enabled()  # grad and inference modes are thread-local: carry the caller's

    def pool(part: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.inference_mode(inference):
            return roi_align(feature, part, output_size, spatial_scale=spatial_scale,
                             sampling_ratio=sampling_ratio, aligned=aligned)

    return torch.cat(list(_executor(chunks).map(pool, rois.tensor_split(chunks))))  # (R, C, S, S)
