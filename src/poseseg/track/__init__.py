"""Video: people keep one ID across frames (ByteTrack-style tracker), One-Euro smoothing, frame sources, MOT export.

    from poseseg.track import Tracker, TrackSmoother, open_source
    tracker = Tracker(TrackConfig(), frame_rate=30.0, high_score=0.5)
    ids = tracker.update(boxes, scores, keypoints)   # (N,) track IDs, -1 for detections without one

Library code: it imports numpy/scipy (and PyAV for sources), never the model, trainer or CLI.
"""
from poseseg.track.mot import mot_lines, write_mot
from poseseg.track.one_euro import OneEuroFilter, TrackSmoother
from poseseg.track.sources import Frame, FrameSource, open_source
from poseseg.track.tracker import Tracker

__all__ = ["Tracker", "TrackSmoother", "OneEuroFilter", "Frame", "FrameSource", "open_source", "mot_lines",
           "write_mot"]
