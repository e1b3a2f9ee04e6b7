"""Detections of consecutive frames -> tracked (and optionally smoothed) per-frame results.

The detector is any callable ``detect(list of RGB arrays) -> list of result dicts`` (the
``Predictor`` passes its model), so this module stays below the model and the CLI.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from poseseg.config import TrackConfig
from poseseg.track.one_euro import TrackSmoother
from poseseg.track.sources import Frame
from poseseg.track.tracker import Tracker


def select(result: dict, keep: np.ndarray) -> dict:
    """The instances ``keep`` (bool or index array) of a result dict of per-instance arrays."""
    return {k: v[keep] for k, v in result.items()}


def track_frames(detect: Callable[[list[np.ndarray]], list[dict]], frames: Iterable[Frame], *, fps: float,
                 config: TrackConfig | None = None, high_score: float = 0.5, smooth: bool = False,
                 batch_size: int = 1, sigmas: np.ndarray | None = None) -> Iterator[dict]:
    """Yield, per frame, the tracked people: the detector's arrays plus ``track_ids`` (N,) and
    ``frame`` (index in the source), ``time`` (seconds), ``image`` (the RGB frame), ``name``.

    Detections that belong to no confirmed track are left out. ``batch_size`` frames go through
    the detector at once; tracking itself is frame by frame.
    """
    cfg = config or TrackConfig()
    tracker = Tracker(cfg, frame_rate=fps, high_score=high_score, sigmas=sigmas)
    smoother = TrackSmoother(cfg, forget_seconds=cfg.max_lost_seconds) if smooth else None
    last_index: int | None = None
    for frame, det in detect_frames(detect, frames, batch_size):
        step = 1 if last_index is None else max(frame.index - last_index, 1)
        last_index = frame.index
        ids = tracker.update(det["boxes"], det["scores"], det.get("keypoints"), det.get("keypoint_scores"),
                             frame_step=step)
        out = select(det, ids >= 0)
        out["track_ids"] = ids[ids >= 0]
        if smoother is not None:
            out = smoother.smooth(out, frame.time)
        out.update(frame=frame.index, time=frame.time, image=frame.image, name=frame.name)
        yield out


def detect_frames(detect: Callable[[list[np.ndarray]], list[dict]], frames: Iterable[Frame],
                  batch_size: int = 1) -> Iterator[tuple[Frame, dict]]:
    """(frame, detections) in order, ``batch_size`` frames per call of ``detect``."""
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= batch_size:
            yield from zip(batch, detect([f.image for f in batch]))
            batch = []
    if batch:
        yield from zip(batch, detect([f.image for f in batch]))
