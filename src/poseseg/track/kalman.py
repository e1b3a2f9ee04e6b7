"""Constant-velocity Kalman filter on a box (centre x, centre y, width, height), as in SORT / ByteTrack.

The state is (cx, cy, w, h, vcx, vcy, vw, vh) in pixels and pixels per frame. Process and
measurement noise scale with the box height, so the filter behaves the same for a person 40 px
tall and one 400 px tall.
"""
from __future__ import annotations

import numpy as np

POSITION_NOISE = 1.0 / 20  # std of a measured position, as a fraction of the box height
VELOCITY_NOISE = 1.0 / 160  # std of the per-frame change of velocity, as a fraction of the box height


def xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dtype=np.float64)


def cxcywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    cx, cy, w, h = box[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


class BoxKalman:
    """One track's box: ``predict()`` once per frame (``steps`` frames ahead), ``update(box)`` when matched."""

    _F = np.eye(8) + np.eye(8, k=4)  # x' = x + v
    _H = np.eye(4, 8)  # we measure (cx, cy, w, h)

    def __init__(self, box_xyxy: np.ndarray) -> None:
        z = xyxy_to_cxcywh(np.asarray(box_xyxy, dtype=np.float64))
        self.mean = np.concatenate([z, np.zeros(4)])  # (8,)
        h = max(z[3], 1.0)
        std = np.array([2 * POSITION_NOISE * h] * 4 + [10 * VELOCITY_NOISE * h] * 4)
        self.cov = np.diag(std ** 2)  # (8, 8)

    def predict(self, steps: int = 1) -> np.ndarray:
        """Advance the state ``steps`` frames; returns the predicted box (x1, y1, x2, y2)."""
        for _ in range(max(int(steps), 0)):
            h = max(self.mean[3], 1.0)
            q = np.diag(np.array([POSITION_NOISE * h] * 4 + [VELOCITY_NOISE * h] * 4) ** 2)
            self.mean = self._F @ self.mean
            self.mean[2:4] = np.maximum(self.mean[2:4], 1.0)  # a box never shrinks below a pixel
            self.cov = self._F @ self.cov @ self._F.T + q
        return self.box()

    def update(self, box_xyxy: np.ndarray) -> np.ndarray:
        """Correct the state with a measured box; returns the corrected box."""
        z = xyxy_to_cxcywh(np.asarray(box_xyxy, dtype=np.float64))
        r = np.diag(np.full(4, (POSITION_NOISE * max(self.mean[3], 1.0)) ** 2))
        s = self._H @ self.cov @ self._H.T + r  # (4, 4) innovation covariance
        gain = np.linalg.solve(s, self._H @ self.cov).T  # (8, 4): cov H^T S^-1 (S symmetric)
        self.mean = self.mean + gain @ (z - self._H @ self.mean)
        self.cov = (np.eye(8) - gain @ self._H) @ self.cov
        return self.box()

    def box(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.mean)

    @property
    def velocity(self) -> np.ndarray:
        """(vcx, vcy) in pixels per frame."""
        return self.mean[4:6].copy()
