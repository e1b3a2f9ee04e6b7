"""Evaluation says when its numbers mean nothing: each ground-truth / prediction mistake is named,
in `eval`'s report, in metrics.json and in check-data alike."""
import json

import pytest

from eval_helpers import noisy_predictions
from poseseg.data.check import summarize_dataset
from poseseg.data.eval_sanity import check_ground_truth, fill_missing_fields, format_warnings
from poseseg.engine.evaluate import format_metrics, score_results

ALL = ["bbox", "segm", "keypoints"]
SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
          0.087, 0.087, 0.089, 0.089]


@pytest.fixture
def sample(coco_sample):
    return json.loads((coco_sample / "person_keypoints_sample.json").read_text())


def codes(warnings):
    return {w["code"] for w in warnings}


def people(data):
    return [a for a in data["annotations"] if not a["iscrowd"]]


def test_a_clean_set_has_no_warning(sample):
    report = score_results(sample, noisy_predictions(sample), category_id=1, iou_types=ALL, sigmas=SIGMAS)
    assert report.warnings == [] and format_warnings(report.warnings) == ""


def test_all_invisible_keypoints_with_num_keypoints_kept_is_named(sample, coco_sample, tmp_path):
    preds = noisy_predictions(sample)
    for a in sample["annotations"]:
        a["keypoints"][2::3] = [0] * 17  # num_keypoints kept: COCO's evaluator still scores these people
    report = score_results(sample, preds, category_id=1, iou_types=ALL, sigmas=SIGMAS)
    assert {"no_labelled_keypoints", "num_keypoints_inconsistent"} <= codes(report.warnings)
    assert "recount" in format_warnings(report.warnings)
    path = tmp_path / "invisible.json"
    path.write_text(json.dumps(sample))
    checked = summarize_dataset(path, coco_sample)  # check-data says the same
    assert {"no_labelled_keypoints", "num_keypoints_inconsistent"} <= codes(checked["eval_warnings"])


def test_zero_and_inconsistent_areas_are_named(sample, coco_sample, tmp_path):
    for i, a in enumerate(people(sample)):
        a["area"] = 0 if i % 2 else a["bbox"][2] * a["bbox"][3] * 3
    report = score_results(sample, noisy_predictions(sample), category_id=1, iou_types=ALL, sigmas=SIGMAS)
    assert {"area_zero", "area_inconsistent"} <= codes(report.warnings)
    path = tmp_path / "areas.json"
    path.write_text(json.dumps(sample))
    assert {"area_zero", "area_inconsistent"} <= codes(summarize_dataset(path, coco_sample)["eval_warnings"])


def test_missing_area_is_computed_from_the_mask_with_a_note(sample):
    preds = noisy_predictions(sample)
    with_area = score_results(sample, preds, category_id=1, iou_types=ALL, sigmas=SIGMAS).metrics
    for a in sample["annotations"]:
        del a["area"]
    report = score_results(sample, preds, category_id=1, iou_types=ALL, sigmas=SIGMAS)  # no KeyError: 'area'
    assert "area_filled" in codes(report.warnings)
    for iou_type in ALL:  # COCO's areas are the polygons' pixel areas: the same tables
        for name, v in with_area[iou_type].items():
            assert report.metrics[iou_type][name] == pytest.approx(v, abs=0.02), (iou_type, name)
    filled = json.loads(json.dumps(sample))
    notes = fill_missing_fields(filled, 1)
    assert notes and all(a["area"] > 0 for a in filled["annotations"])


def test_an_empty_set_reports_dashes_not_zeros(sample):
    sample["annotations"] = []
    report = score_results(sample, {t: [] for t in ALL}, category_id=1, iou_types=ALL, sigmas=SIGMAS)
    assert "empty_set" in codes(report.warnings)
    assert all(v is None for table in report.metrics.values() for v in table.values())
    rows = format_metrics(report.metrics).splitlines()[1:]
    assert all(set(r.split()[1:]) == {"-"} for r in rows)


def test_prediction_problems_are_named_and_foreign_images_dropped(sample):
    preds = noisy_predictions(sample)
    good = score_results(sample, preds, category_id=1, iou_types=["bbox"]).metrics["bbox"]["AP"]
    preds["bbox"].append({"image_id": 999_999, "category_id": 1, "score": 0.9, "bbox": [0, 0, 10, 10]})
    preds["bbox"].append({"image_id": preds["bbox"][0]["image_id"], "category_id": 7, "score": 0.9,
                          "bbox": [0, 0, 10, 10]})
    report = score_results(sample, preds, category_id=1, iou_types=["bbox"])
    assert {"unknown_image_ids_bbox", "unknown_category_ids_bbox"} <= codes(report.warnings)
    assert report.metrics["bbox"]["AP"] == pytest.approx(good)  # pycocotools would refuse the whole file
    assert "no_predictions_segm" in codes(score_results(sample, {"segm": []}, category_id=1,
                                                        iou_types=["segm"]).warnings)


def test_xyxy_boxes_are_named(sample):
    preds = noisy_predictions(sample, false_positive_rate=0)
    for d in preds["bbox"]:
        x, y, w, h = d["bbox"]
        d["bbox"] = [x, y, x + w, y + h]
    assert "pred_boxes_xyxy" in codes(score_results(sample, preds, category_id=1, iou_types=["bbox"]).warnings)
    for a in sample["annotations"]:
        x, y, w, h = a["bbox"]
        a["bbox"] = [x, y, x + w, y + h]
    assert "gt_boxes_xyxy" in codes(check_ground_truth(sample, category_id=1))


def test_sigmas_that_do_not_fit_k_give_no_keypoint_number(sample):
    report = score_results(sample, noisy_predictions(sample), category_id=1, iou_types=ALL, sigmas=SIGMAS[:14])
    assert "sigmas_mismatch" in codes(report.warnings)
    assert all(v is None for v in report.metrics["keypoints"].values())
    assert report.metrics["bbox"]["AP"] is not None
