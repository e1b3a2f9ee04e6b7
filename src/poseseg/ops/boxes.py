"""Box geometry on numpy arrays, for the code that works outside torch (tracking, calibration, converters)."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy, (M, 4) xyxy -> (N, M) intersection over union, float64.

    ``torchvision.ops.box_iou`` on arrays, except that a pair with no area at all (both boxes
    empty) scores 0 instead of 0/0. Anything array-like of 4 numbers per box is accepted.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)  # (N, M)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)  # (N,)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
