"""The tracker: IDs survive crossings and missed detections; Kalman and association numerics."""
import numpy as np
import pytest

from poseseg.config import ConfigError, TrackConfig, load_config
from poseseg.track import Tracker
from poseseg.track.association import assign, keypoint_oks
from poseseg.track.kalman import BoxKalman


def _box(cx, cy, w=40.0, h=100.0):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_oks_is_one_for_the_same_pose_and_falls_with_distance():
    kps = np.random.default_rng(1).uniform(0, 100, (1, 17, 2))
    conf = np.ones((1, 17))
    sig = np.full(17, 0.05)
    same = keypoint_oks(kps, conf, kps, conf, np.array([1000.0]), sig)
    moved = keypoint_oks(kps, conf, kps + 3.0, conf, np.array([1000.0]), sig)
    assert same[0, 0] == pytest.approx(1.0)
    # every keypoint 3*sqrt(2) px away: exp(-18 / (2 * area * (2 sigma)^2))
    assert moved[0, 0] == pytest.approx(np.exp(-18.0 / (2 * 1000.0 * 0.1 ** 2)))


def test_assignment_refuses_pairs_below_the_threshold():
    sim = np.array([[0.9, 0.1], [0.05, 0.1]])
    matches, rows, cols = assign(sim, 0.2)
    assert matches == [(0, 0)] and rows == [1] and cols == [1]


def test_kalman_learns_a_constant_velocity():
    kf = BoxKalman(np.array(_box(10, 50)))
    for t in range(1, 15):
        kf.predict()
        kf.update(np.array(_box(10 + 4 * t, 50 - 2 * t)))
    np.testing.assert_allclose(kf.velocity, [4.0, -2.0], atol=0.3)
    predicted = kf.predict(3)
    np.testing.assert_allclose(predicted, _box(10 + 4 * 17, 50 - 2 * 17), atol=2.0)


def test_two_crossing_people_keep_their_ids():
    """Two people walk through each other; while one hides the other, only the front one is detected."""
    tracker = Tracker(frame_rate=15)
    seen = {"left": set(), "right": set()}
    for t in range(40):
        a, b = 40 + 6 * t, 280 - 6 * t  # cross at t = 20
        boxes, names = [_box(a, 100)], ["left"]
        if abs(a - b) > 20:  # b is hidden behind a while they overlap most
            boxes.append(_box(b, 104)), names.append("right")
        ids = tracker.update(np.array(boxes), np.full(len(boxes), 0.9))
        for name, tid in zip(names, ids):
            if t > 0:  # from the second frame every detection has its ID
                assert tid > 0
                seen[name].add(int(tid))
    assert len(seen["left"]) == 1 and len(seen["right"]) == 1 and seen["left"] != seen["right"]


def test_a_missed_detection_does_not_start_a_new_id():
    tracker = Tracker(frame_rate=30)
    ids = []
    for t in range(12):
        boxes = np.array([_box(50 + 5 * t, 80)]) if t != 6 else np.zeros((0, 4))
        out = tracker.update(boxes, np.full(len(boxes), 0.9))
        ids += out.tolist()
    assert set(ids) == {1}
    assert len(ids) == 11


def test_a_low_score_detection_keeps_a_track_alive_but_never_starts_one():
    tracker = Tracker(TrackConfig(low_score=0.1), frame_rate=30, high_score=0.5)
    first = tracker.update(np.array([_box(50, 80)]), np.array([0.9]))
    unsure = tracker.update(np.array([_box(53, 80), _box(300, 80)]), np.array([0.3, 0.3]))
    assert first.tolist() == [1] and unsure.tolist() == [1, -1]


def test_keypoints_tell_apart_two_people_with_the_same_box():
    """Same boxes, swapped in order: OKS on the keypoints decides who is who."""
    rng = np.random.default_rng(0)
    pose_a, pose_b = rng.uniform(0, 40, (17, 2)), rng.uniform(0, 40, (17, 2))
    tracker = Tracker(TrackConfig(oks_weight=0.8, min_hits=1), frame_rate=30)
    boxes = np.array([[0, 0, 40, 40], [2, 0, 42, 40]], dtype=float)
    first = tracker.update(boxes, np.array([0.9, 0.9]), np.stack([pose_a, pose_b]))
    second = tracker.update(boxes[::-1], np.array([0.9, 0.9]), np.stack([pose_b + 1, pose_a + 1]))
    assert second.tolist() == first[::-1].tolist()


def test_track_config_is_checked():
    cfg = load_config("tiny", ["track.min_hits=3", "track.oks_weight=0.25"])
    assert cfg.track.min_hits == 3 and cfg.track.oks_weight == 0.25
    with pytest.raises(ConfigError, match="track.low_score"):
        load_config("tiny", ["track.low_score=1.5"])
    with pytest.raises(ValueError, match="frame_rate"):
        Tracker(frame_rate=0)
