"""MOTChallenge text lines: ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1`` (frames from 1).

The layout of MOTChallenge's ``gt.txt`` / results files, which ``motmetrics.io.loadtxt`` and the
official devkits read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np


def mot_lines(frame: int, boxes: np.ndarray, track_ids: np.ndarray, scores: np.ndarray | None = None) -> list[str]:
    """Lines for one frame (``frame`` is 0-based here, written 1-based); detections with ID < 0 are left out."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    lines = []
    for (x1, y1, x2, y2), tid, s in zip(boxes, np.asarray(track_ids).reshape(-1), scores):
        if tid < 0:
            continue
        lines.append(f"{frame + 1},{int(tid)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1")
    return lines


def write_mot(path: str | Path, lines: Iterable[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    path.write_text(text + "\n" if text else "")
    return path
