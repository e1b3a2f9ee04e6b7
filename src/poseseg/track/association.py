"""Matching tracks to detections: box IoU, keypoint OKS, and a Hungarian assignment (scipy).

Similarity of a track and a detection = (1 - w) * IoU + w * OKS when both carry keypoints
(w = ``track.oks_weight``), IoU alone otherwise. OKS is COCO's object keypoint similarity
with the detection's box area as the scale and the schema's per-keypoint sigmas, over the
keypoints confident in both.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from poseseg.keypoint_schema import COCO_SIGMAS
from poseseg.ops.boxes import box_iou


def keypoint_oks(kps_a: np.ndarray, conf_a: np.ndarray, kps_b: np.ndarray, conf_b: np.ndarray,
                 areas_b: np.ndarray, sigmas: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """(N, K, 2) and (M, K, 2) keypoints with (N, K), (M, K) confidences -> (N, M) OKS in [0, 1].

    Only keypoints with confidence above ``min_conf`` on both sides count; a pair with none is 0.
    """
    kps_a = np.asarray(kps_a, dtype=np.float64)[..., :2]
    kps_b = np.asarray(kps_b, dtype=np.float64)[..., :2]
    d2 = ((kps_a[:, None] - kps_b[None]) ** 2).sum(-1)  # (N, M, K)
    var = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    scale = np.maximum(np.asarray(areas_b, dtype=np.float64), 1.0)[None, :, None]  # (1, M, 1)
    e = np.exp(-d2 / (2 * scale * var))
    both = (np.asarray(conf_a)[:, None] > min_conf) & (np.asarray(conf_b)[None] > min_conf)  # (N, M, K)
    count = both.sum(-1)
    return np.where(count > 0, (e * both).sum(-1) / np.maximum(count, 1), 0.0)


def similarity(track_boxes: np.ndarray, det_boxes: np.ndarray, *, oks_weight: float = 0.0,
               track_kps: np.ndarray | None = None, track_conf: np.ndarray | None = None,
               det_kps: np.ndarray | None = None, det_conf: np.ndarray | None = None,
               sigmas: np.ndarray | None = None, min_conf: float = 0.0) -> np.ndarray:
    """(T, D) similarity: IoU, blended with OKS when keypoints are given for both sides."""
    iou = box_iou(track_boxes, det_boxes)
    if oks_weight <= 0 or track_kps is None or det_kps is None or iou.size == 0:
        return iou
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    areas = np.prod(np.clip(det_boxes[:, 2:] - det_boxes[:, :2], 0, None), axis=1)
    k = track_kps.shape[1]
    sig = np.asarray(sigmas) if sigmas is not None else (COCO_SIGMAS if k == 17 else np.full(k, 0.08))
    oks = keypoint_oks(track_kps, track_conf, det_kps, det_conf, areas, sig, min_conf)
    return (1.0 - oks_weight) * iou + oks_weight * oks


def assign(sim: np.ndarray, min_similarity: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment maximising total similarity; pairs below ``min_similarity`` are refused.

    Returns (matches as (row, col), unmatched rows, unmatched cols).
    """
    rows, cols = sim.shape
    if rows == 0 or cols == 0:
        return [], list(range(rows)), list(range(cols))
    allowed = np.where(sim >= min_similarity, sim, 0.0)  # a refused pair weighs nothing: the same as no match
    r, c = linear_sum_assignment(allowed, maximize=True)
    matches = [(int(i), int(j)) for i, j in zip(r, c) if sim[i, j] >= min_similarity and sim[i, j] > 0]
    matched_r = {i for i, _ in matches}
    matched_c = {j for _, j in matches}
    return matches, [i for i in range(rows) if i not in matched_r], [j for j in range(cols) if j not in matched_c]
