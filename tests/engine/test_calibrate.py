"""Keypoint scores from labelled data: the calibration to probabilities, its error, the drawing threshold."""
import numpy as np
import pytest
import torch

from poseseg.keypoint_schema import COCO_SIGMAS
from poseseg.engine.calibrate import (apply_calibration, expected_calibration_error, fit_calibration,
                                      keypoint_outcomes)
from poseseg.modeling.score_calibration import KNOTS, ScoreCalibration


def _person(rng, x, y):
    kps = np.stack([x + rng.uniform(0, 40, 17), y + rng.uniform(0, 80, 17), np.full(17, 2.0)], 1)
    return {"bbox": [x, y, 40.0, 80.0], "area": 2000.0, "iscrowd": 0, "keypoints": kps.reshape(-1).tolist()}, kps


def test_outcomes_mark_right_keypoints_and_every_keypoint_of_an_unmatched_person_wrong():
    rng = np.random.default_rng(0)
    data, want = [], []
    for i in range(6):
        ann, kps = _person(rng, 20.0 * i, 10.0)
        pred = kps.copy()
        wrong = rng.random(17) < 0.4
        pred[wrong, :2] += 30.0  # far outside any OKS radius
        result = {"boxes": np.array([[20.0 * i, 10.0, 20.0 * i + 40, 90.0], [300.0, 300.0, 340.0, 380.0]]),
                  "scores": np.array([0.9, 0.8]), "keypoints": np.stack([pred, pred]),
                  "keypoint_scores": rng.random((2, 17))}
        data.append(([ann], result))
        want += [~wrong, np.zeros(17, bool)]  # the second person matches nobody
    scores, right = keypoint_outcomes(data, COCO_SIGMAS)
    assert len(scores) == 6 * 2 * 17
    np.testing.assert_array_equal(right, np.concatenate(want))


def test_no_detections_give_no_outcomes():
    scores, right = keypoint_outcomes([([], {"boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                                             "keypoints": np.zeros((0, 17, 3)),
                                             "keypoint_scores": np.zeros((0, 17))})], COCO_SIGMAS)
    assert len(scores) == 0 and len(right) == 0


def _naive_ece(scores, right, bins=15):
    """ECE by a plain loop over keypoints: the reference for engine.calibrate."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, s in enumerate(scores) if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if members:
            conf = sum(scores[i] for i in members) / len(members)
            acc = sum(right[i] for i in members) / len(members)
            total += len(members) * abs(conf - acc)
    return total / len(scores)


def test_ece_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    scores = rng.random(500)
    scores[:3] = [0.0, 1.0, 14 / 15]  # the edges
    right = rng.random(500) < scores**2
    assert expected_calibration_error(scores, right) == pytest.approx(_naive_ece(scores.tolist(), right.tolist()))


@pytest.mark.parametrize("method,most", [("isotonic", 0.03), ("platt", 0.06)])  # platt: a logistic curve only
def test_fitted_map_makes_scores_probabilities_on_fresh_samples(method, most):
    rng = np.random.default_rng(2)
    def draw(n):  # raw scores in [0, 0.3] (a spatial softmax peak); P(right) = (score / 0.3) ** 2
        s = rng.random(n) * 0.3
        return s, rng.random(n) < (s / 0.3) ** 2
    xs, ys = fit_calibration(*draw(4000), method=method)
    s, r = draw(4000)
    assert expected_calibration_error(s, r) > 0.15
    assert expected_calibration_error(apply_calibration(s, xs, ys), r) < most
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)


def test_too_few_or_one_sided_outcomes_are_refused():
    with pytest.raises(ValueError, match="at least 66 keypoints"):
        fit_calibration(np.random.rand(10), np.random.rand(10) < 0.5)
    with pytest.raises(ValueError, match="right and wrong"):
        fit_calibration(np.random.rand(100), np.zeros(100, dtype=bool))
    with pytest.raises(ValueError, match="isotonic or platt"):
        fit_calibration(np.random.rand(100), np.random.rand(100) < 0.5, method="histogram")


def test_the_torch_map_equals_numpy_interp_and_old_checkpoints_load_as_identity():
    rng = np.random.default_rng(3)
    xs = np.sort(rng.random(KNOTS)).astype(np.float32)
    ys = np.sort(rng.random(KNOTS)).astype(np.float32)
    calibration = ScoreCalibration()
    calibration.set_knots(xs, ys)
    s = rng.random((7, 17)).astype(np.float32) * 1.2 - 0.1  # beyond the knots too
    got = calibration(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(got, np.interp(s, xs, ys), atol=1e-6)
    fresh = ScoreCalibration()
    fresh.load_state_dict({}, strict=True)  # a checkpoint from before calibration existed
    assert not bool(fresh.fitted) and torch.equal(fresh(torch.tensor([0.3])), torch.tensor([0.3]))
    with pytest.raises(ValueError, match="non-decreasing"):
        calibration.set_knots(xs[::-1].copy(), ys)


def test_cli_calibrate_writes_a_checkpoint_whose_scores_are_probabilities(trained_checkpoint, synth_data, tmp_path,
                                                                          capsys):
    """Ground truth made from the model's own people: half of their keypoints moved far away (wrong),
    the rest kept (right), so a calibrated score must say ~0.5 wherever the raw one lies."""
    import json

    from poseseg.cli import main
    from poseseg.data.image_io import load_image_rgb
    from poseseg.predictor import Predictor

    rng = np.random.default_rng(0)
    val = json.loads((synth_data / "val.json").read_text())
    raw = Predictor(trained_checkpoint, device="cpu", score_thresh=0.0)
    anns = []
    for info in val["images"]:
        result = raw.predict(load_image_rgb(synth_data / "val" / info["file_name"]))
        for box, kps in zip(result["boxes"][:20].tolist(), result["keypoints"][:20]):
            kps = kps.copy()
            kps[:, 2] = 2
            kps[rng.random(len(kps)) < 0.5, :2] += 1000.0  # far outside any OKS radius
            x1, y1, x2, y2 = box
            anns.append({"id": len(anns) + 1, "image_id": info["id"], "category_id": 1, "iscrowd": 0,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": max((x2 - x1) * (y2 - y1), 1.0),
                         "keypoints": kps.reshape(-1).tolist(), "num_keypoints": len(kps)})
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({**val, "annotations": anns}))
    out = tmp_path / "calibrated.pt"
    args = ["calibrate", "--weights", str(trained_checkpoint), "--data", str(truth), "--images",
            str(synth_data / "val"), "--out", str(out), "--score-thresh", "0"]
    assert main(args) == 0
    report = capsys.readouterr().out
    before, after = (float(v) for v in report.split("error ")[1].split(" on")[0].split(" -> "))
    assert after < 0.05 < before
    calibrated = Predictor(out, device="cpu", score_thresh=0.0)
    assert bool(calibrated.model.keypoint_head.score_calibration.fitted)
    scores = calibrated.predict(load_image_rgb(synth_data / "val" / val["images"][0]["file_name"]))["keypoint_scores"]
    assert 0.3 < float(scores.mean()) < 0.7  # about half of the keypoints are right, whatever the raw score
    assert main(args) == 2 and "never overwrites" in capsys.readouterr().err
