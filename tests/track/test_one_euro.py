"""One-Euro smoothing: less jitter on a noisy track, at most a frame of lag on a steady motion."""
import numpy as np
import pytest

from poseseg.config import TrackConfig
from poseseg.track import OneEuroFilter, TrackSmoother

FPS = 30.0


def _jitter(xy: np.ndarray) -> float:
    """Mean frame-to-frame acceleration, in pixels: |x[t+1] - 2 x[t] + x[t-1]|."""
    return float(np.linalg.norm(xy[2:] - 2 * xy[1:-1] + xy[:-2], axis=-1).mean())


def _smooth_track(points: np.ndarray, config: TrackConfig | None = None) -> np.ndarray:
    """points (T, K, 2) of one person -> smoothed through TrackSmoother as track ID 7."""
    smoother = TrackSmoother(config)
    out = []
    for t, p in enumerate(points):
        box = np.concatenate([p.min(0), p.max(0)])[None]
        r = smoother.smooth({"boxes": box, "keypoints": np.concatenate([p, np.ones((len(p), 1))], 1)[None],
                             "track_ids": np.array([7])}, t / FPS)
        out.append(r["keypoints"][0, :, :2])
    return np.stack(out)


def test_smoothing_lowers_the_jitter_of_a_noisy_track():
    rng = np.random.default_rng(0)
    t = np.arange(90)[:, None, None]
    truth = np.stack([100 + 40 * np.sin(t[..., 0] / 15.0) + np.arange(17), 200 + 0 * t[..., 0] + np.arange(17)], -1)
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    smoothed = _smooth_track(noisy)
    assert _jitter(smoothed) < 0.5 * _jitter(noisy)
    # and it stays on the person: closer to the truth than the raw detections
    assert np.abs(smoothed - truth)[10:].mean() < np.abs(noisy - truth)[10:].mean()


@pytest.mark.parametrize("speed", [2.0, 8.0])  # pixels per frame
def test_smoothing_lags_a_steady_motion_by_at_most_a_frame(speed):
    t = np.arange(60, dtype=float)
    points = np.stack([50 + speed * t, 80 + 0.5 * speed * t], -1)[:, None, :].repeat(3, axis=1)  # (T, 3, 2)
    smoothed = _smooth_track(points)
    lag_frames = np.abs(smoothed[20:, :, 0] - points[20:, :, 0]) / speed
    assert lag_frames.max() <= 1.0


def test_a_filter_does_not_depend_on_the_frame_rate_and_checks_its_parameters():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0)
    a, b = OneEuroFilter(), OneEuroFilter()
    slow = [a.filter(np.array([v]), t / 10.0) for t, v in enumerate(np.linspace(0, 10, 11))]
    fast = [b.filter(np.array([v]), t / 30.0) for t, v in enumerate(np.linspace(0, 10, 31))]
    assert abs(slow[-1][0] - fast[-1][0]) < 1.0  # same motion in seconds -> about the same output


def test_tracks_are_smoothed_separately():
    smoother = TrackSmoother()
    for t in range(5):
        r = smoother.smooth({"boxes": np.array([[0, 0, 10, 10], [100, 100, 110, 110]], float) + t,
                             "track_ids": np.array([1, 2])}, t / FPS)
    assert r["boxes"][1, 0] > 100 > r["boxes"][0, 2]  # no blending of one person into another
