"""One-Euro filter (Casiez, Roussel, Vogel, CHI 2012): smooths jitter at rest, follows fast motion with little lag.

Each value is low-pass filtered with a cutoff that grows with its speed:
``cutoff = min_cutoff + beta * |filtered speed|``; ``alpha = 1 / (1 + tau / dt)`` with
``tau = 1 / (2 pi cutoff)``. Time is in seconds, so the filter does not depend on the frame rate.
``TrackSmoother`` keeps one filter per track for its keypoints (K, 2) and its box (4,).
"""
from __future__ import annotations

import math

import numpy as np

from poseseg.config import TrackConfig


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One-Euro filter of an array of any fixed shape; ``filter(x, t)`` returns the smoothed array."""

    def __init__(self, *, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One-Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, "
                             f"{d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self._x: np.ndarray | None = None  # last filtered value
        self._dx: np.ndarray | None = None  # last filtered speed (units per second)
        self._t: float | None = None

    def filter(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if dt <= 0:  # the same instant again (or time going back): nothing to integrate
            return self._x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        a = _alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = self._x + a * (x - self._x)
        self._t = float(t)
        return self._x.copy()


class TrackSmoother:
    """Smooths the keypoints and boxes of tracked people, one One-Euro filter per track ID and quantity.

    ``smooth(result, t)`` takes a per-frame result with ``track_ids`` and returns a copy whose
    ``keypoints[..., :2]`` and ``boxes`` are filtered; filters of tracks unseen for longer than
    ``forget_seconds`` are dropped (a re-found track restarts from its new position).
    """

    def __init__(self, config: TrackConfig | None = None, *, forget_seconds: float = 1.0) -> None:
        cfg = config or TrackConfig()
        self._params = dict(min_cutoff=cfg.smooth_min_cutoff, beta=cfg.smooth_beta, d_cutoff=cfg.smooth_d_cutoff)
        self.forget_seconds = float(forget_seconds)
        self._filters: dict[int, tuple[OneEuroFilter, OneEuroFilter, float]] = {}  # id -> (keypoints, box, last t)

    def smooth(self, result: dict, t: float) -> dict:
        out = dict(result)
        ids = np.asarray(result.get("track_ids", []), dtype=np.int64)
        boxes = np.array(result["boxes"], dtype=np.float64, copy=True) if "boxes" in result else None
        kps = np.array(result["keypoints"], dtype=np.float64, copy=True) if "keypoints" in result else None
        for i, tid in enumerate(ids.tolist()):
            if tid < 0:
                continue
            entry = self._filters.get(tid)
            if entry is None or t - entry[2] > self.forget_seconds:
                entry = (OneEuroFilter(**self._params), OneEuroFilter(**self._params), t)
            kp_filter, box_filter, _ = entry
            if kps is not None:
                kps[i, :, :2] = kp_filter.filter(kps[i, :, :2], t)  # (K, 2)
            if boxes is not None:
                boxes[i] = box_filter.filter(boxes[i], t)  # (4,)
            self._filters[tid] = (kp_filter, box_filter, t)
        for tid in [k for k, v in self._filters.items() if t - v[2] > self.forget_seconds]:
            del self._filters[tid]
        if boxes is not None:
            out["boxes"] = boxes.astype(np.asarray(result["boxes"]).dtype)
        if kps is not None:
            out["keypoints"] = kps.astype(np.asarray(result["keypoints"]).dtype)
        return out
