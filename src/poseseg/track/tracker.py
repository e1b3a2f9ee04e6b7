"""Track birth, matching and death: who in this frame is who in the last one (ByteTrack's two stages).

Per frame: every track's box moves by its constant-velocity Kalman filter; then
1. high-score detections (score >= ``high_score``) are matched to the confirmed tracks, found
   or lost, on IoU blended with keypoint OKS;
2. low-score detections (``track.low_score`` <= score < ``high_score``) are matched, on box IoU
   alone, to the tracks that were found in the last frame and are still unmatched: a person
   half hidden keeps their ID even when the detector is unsure;
3. tentative tracks (born recently, no ID yet) are matched to the high-score detections left.
A tentative track gets an ID after ``track.min_hits`` consecutive matches (at once in the first
frame) and is dropped at its first miss; a confirmed track unmatched for ``track.max_lost_seconds``
is dropped, and until then can be re-found where its Kalman filter says it went.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poseseg.config import TrackConfig
from poseseg.ops.boxes import box_iou
from poseseg.track.association import assign, similarity
from poseseg.track.kalman import BoxKalman

KEYPOINT_MIN_SCORE = 0.05  # keypoints under this confidence are left out of OKS


@dataclass
class Track:
    kalman: BoxKalman
    score: float
    keypoints: np.ndarray | None = None  # (K, 2) at the last match
    keypoint_scores: np.ndarray | None = None  # (K,)
    matched_box: np.ndarray | None = None  # (4,) Kalman box at the last match: the keypoints' reference
    track_id: int = -1  # -1 while tentative
    hits: int = 1  # consecutive matches
    lost_frames: int = 0  # frames since the last match

    def predicted_keypoints(self) -> np.ndarray | None:
        """The last keypoints carried along with the box: shifted to its centre, scaled by its height."""
        if self.keypoints is None:
            return None
        ref, now = self.matched_box, self.kalman.box()
        ref_c, now_c = (ref[:2] + ref[2:]) / 2, (now[:2] + now[2:]) / 2
        scale = max(now[3] - now[1], 1.0) / max(ref[3] - ref[1], 1.0)
        return (self.keypoints - ref_c) * scale + now_c


class Tracker:
    """Assigns track IDs to the detections of consecutive frames of one video.

    ``update(boxes, scores, keypoints, keypoint_scores)`` -> (N,) int IDs (>= 1), -1 for a
    detection that belongs to no confirmed track (too unsure, or a track not yet confirmed).
    """

    def __init__(self, config: TrackConfig | None = None, *, frame_rate: float = 30.0, high_score: float = 0.5,
                 sigmas: np.ndarray | None = None) -> None:
        self.config = config or TrackConfig()
        if not frame_rate > 0:
            raise ValueError(f"frame_rate={frame_rate}: the tracker needs the video's frames per second (> 0)")
        self.high_score = float(high_score)
        self.low_score = min(self.config.low_score, self.high_score)  # a high threshold under it: one stage
        self.max_lost_frames = max(1, int(round(self.config.max_lost_seconds * frame_rate)))
        self.sigmas = sigmas
        self.tracks: list[Track] = []
        self.frames = 0
        self._next_id = 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray | None = None,
               keypoint_scores: np.ndarray | None = None, *, frame_step: int = 1) -> np.ndarray:
        """One frame's detections: boxes (N, 4) xyxy, scores (N,), keypoints (N, K, 2 or 3), keypoint_scores (N, K).

        ``frame_step``: frames since the last call (the stride when frames are skipped).
        """
        cfg = self.config
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        kps = None if keypoints is None else np.asarray(keypoints, dtype=np.float64)[..., :2]  # (N, K, 2)
        kconf = None
        if kps is not None:
            kconf = (np.asarray(keypoint_scores, dtype=np.float64) if keypoint_scores is not None
                     else np.ones(kps.shape[:2]))
        self.frames += 1
        first_frame = self.frames == 1
        was_found = {id(t): t.lost_frames == 0 for t in self.tracks}
        for t in self.tracks:
            t.kalman.predict(frame_step)

        ids = np.full(len(boxes), -1, dtype=np.int64)
        high = np.nonzero(scores >= self.high_score)[0]
        low = np.nonzero((scores >= self.low_score) & (scores < self.high_score))[0]
        confirmed = [t for t in self.tracks if t.track_id >= 0]
        tentative = [t for t in self.tracks if t.track_id < 0]
        matched: set[int] = set()

        # stage 1: confirmed tracks (found or lost) <- high-score detections, IoU + OKS
        sim = self._similarity(confirmed, high, boxes, kps, kconf, use_keypoints=True)
        pairs, left_tracks, left_high = assign(sim, cfg.match_similarity)
        for ti, di in pairs:
            self._match(confirmed[ti], high[di], boxes, scores, kps, kconf, ids, matched)
        left_high = high[left_high]

        # stage 2: tracks found in the last frame and still unmatched <- low-score detections, IoU only
        recent = [confirmed[i] for i in left_tracks if was_found[id(confirmed[i])]]
        sim = box_iou(np.array([t.kalman.box() for t in recent]).reshape(-1, 4), boxes[low])
        pairs, _, _ = assign(sim, cfg.low_match_iou)
        for ti, di in pairs:
            self._match(recent[ti], low[di], boxes, scores, kps, kconf, ids, matched)

        # stage 3: tentative tracks <- the high-score detections left
        sim = self._similarity(tentative, left_high, boxes, kps, kconf, use_keypoints=True)
        pairs, _, left_new = assign(sim, cfg.match_similarity)
        for ti, di in pairs:
            self._match(tentative[ti], left_high[di], boxes, scores, kps, kconf, ids, matched)

        # death: tentative tracks at their first miss, confirmed ones lost for too long
        survivors = []
        for t in self.tracks:
            if id(t) in matched:
                survivors.append(t)
            elif t.track_id >= 0:
                t.lost_frames += frame_step
                t.hits = 0
                if t.lost_frames <= self.max_lost_frames:
                    survivors.append(t)
        self.tracks = survivors

        # birth: the high-score detections nobody claimed
        for di in left_high[left_new]:
            t = Track(kalman=BoxKalman(boxes[di]), score=float(scores[di]))
            self._remember(t, di, kps, kconf)
            self.tracks.append(t)
            if first_frame or cfg.min_hits <= 1:
                ids[di] = self._confirm(t)
        return ids

    # ------------------------------------------------------------------ helpers
    def _similarity(self, tracks: list[Track], dets: np.ndarray, boxes, kps, kconf, use_keypoints: bool) -> np.ndarray:
        track_boxes = np.array([t.kalman.box() for t in tracks]).reshape(-1, 4)
        with_kps = use_keypoints and kps is not None and tracks and all(t.keypoints is not None for t in tracks)
        if not with_kps:
            return box_iou(track_boxes, boxes[dets])
        return similarity(track_boxes, boxes[dets], oks_weight=self.config.oks_weight,
                          track_kps=np.stack([t.predicted_keypoints() for t in tracks]),
                          track_conf=np.stack([t.keypoint_scores for t in tracks]),
                          det_kps=kps[dets], det_conf=kconf[dets], sigmas=self.sigmas, min_conf=KEYPOINT_MIN_SCORE)

    def _match(self, t: Track, di: int, boxes, scores, kps, kconf, ids: np.ndarray, matched: set) -> None:
        t.kalman.update(boxes[di])
        t.score = float(scores[di])
        t.hits = t.hits + 1 if t.lost_frames == 0 else 1
        t.lost_frames = 0
        self._remember(t, di, kps, kconf)
        if t.track_id < 0 and t.hits >= self.config.min_hits:
            self._confirm(t)
        ids[di] = t.track_id
        matched.add(id(t))

    def _remember(self, t: Track, di: int, kps, kconf) -> None:
        t.matched_box = t.kalman.box()
        if kps is not None:
            t.keypoints, t.keypoint_scores = kps[di].copy(), kconf[di].copy()

    def _confirm(self, t: Track) -> int:
        t.track_id = self._next_id
        self._next_id += 1
        return t.track_id
