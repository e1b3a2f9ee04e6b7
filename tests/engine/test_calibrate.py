"""The drawing threshold for keypoint scores comes from labelled data."""
import numpy as np
import pytest

from poseseg.keypoint_schema import COCO_SIGMAS
from poseseg.engine.calibrate import keypoint_score_threshold


def _person(rng, x, y):
    kps = np.stack([x + rng.uniform(0, 40, 17), y + rng.uniform(0, 80, 17), np.full(17, 2.0)], 1)
    return {"bbox": [x, y, 40.0, 80.0], "area": 2000.0, "iscrowd": 0, "keypoints": kps.reshape(-1).tolist()}, kps


def test_threshold_separates_right_keypoints_from_wrong_ones():
    rng = np.random.default_rng(0)
    data = []
    for i in range(6):
        ann, kps = _person(rng, 20.0 * i, 10.0)
        pred = kps.copy()
        wrong = rng.random(17) < 0.4
        pred[wrong, :2] += 30.0  # far outside any OKS radius
        scores = np.where(wrong, rng.uniform(0.01, 0.04, 17), rng.uniform(0.05, 0.09, 17))  # right ones score higher
        result = {"boxes": np.array([[20.0 * i, 10.0, 20.0 * i + 40, 90.0]]), "scores": np.array([0.9]),
                  "keypoints": pred[None], "keypoint_scores": scores[None]}
        data.append(([ann], result))
    thresh, stats = keypoint_score_threshold(data, COCO_SIGMAS)
    assert 0.04 < thresh < 0.06  # the lowest score of a right keypoint
    assert stats["precision"] == pytest.approx(1.0) and stats["recall"] == pytest.approx(1.0)


def test_no_matched_people_gives_zero():
    thresh, stats = keypoint_score_threshold([([], {"boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                                                    "keypoints": np.zeros((0, 17, 3)),
                                                    "keypoint_scores": np.zeros((0, 17))})], COCO_SIGMAS)
    assert thresh == 0.0 and stats["keypoints"] == 0
