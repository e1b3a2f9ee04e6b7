"""COCO evaluation: ground truth scores AP 1.0, nothing scores 0, results are valid COCO JSON."""
import contextlib
import io

import pytest
import torch
from pycocotools.coco import COCO

from poseseg.data.coco import CocoPeopleDataset
from poseseg.engine.evaluate import format_metrics, score_results
from poseseg.modeling.postprocess import coco_records, records_by_iou_type



def ground_truth_as_predictions(sample):
    json_path = sample / "person_keypoints_sample.json"
    ds = CocoPeopleDataset(json_path, sample, on_bad_image="raise")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(json_path))
    results = {"bbox": [], "segm": [], "keypoints": []}
    for i in range(len(ds)):
        target = ds.get_target(i)
        keep = target["iscrowd"] == 0
        n = int(keep.sum())
        pred = {"boxes": target["boxes"][keep], "scores": torch.ones(n),
                "masks": target["masks"][keep][:, None].float(), "keypoints": target["keypoints"][keep]}
        labelled = (pred["keypoints"][..., 2] > 0).any(dim=1).tolist()
        for k, v in records_by_iou_type(coco_records(pred, target["image_id"])).items():
            # people without labelled keypoints are ignored by COCO's keypoint evaluation
            results[k].extend(d for d, has_kps in zip(v, labelled) if k != "keypoints" or has_kps)
    return gt, results, [int(i) for i in ds.image_ids], ds.schema.sigmas


def test_ground_truth_scores_ap_one_for_all_three_types(coco_sample):
    gt, results, image_ids, sigmas = ground_truth_as_predictions(coco_sample)
    metrics = score_results(gt, results, category_id=1, iou_types=["bbox", "segm", "keypoints"], sigmas=sigmas,
                             image_ids=image_ids).metrics
    for iou_type in ("bbox", "segm", "keypoints"):
        assert metrics[iou_type]["AP"] == pytest.approx(1.0), (iou_type, metrics[iou_type])
        assert metrics[iou_type]["AP50"] == pytest.approx(1.0)
    assert "APs" not in metrics["keypoints"]  # COCO keypoints have no small-object AP


def test_no_predictions_score_zero_without_crashing(coco_sample):
    gt, _, image_ids, sigmas = ground_truth_as_predictions(coco_sample)
    empty = {"bbox": [], "segm": [], "keypoints": []}
    metrics = score_results(gt, empty, category_id=1, iou_types=["bbox", "segm", "keypoints"], sigmas=sigmas,
                             image_ids=image_ids).metrics
    assert all(v == 0.0 for stats in metrics.values() for v in stats.values())
    assert "bbox" in format_metrics(metrics)


def test_shifted_boxes_score_below_one(coco_sample):
    gt, results, image_ids, sigmas = ground_truth_as_predictions(coco_sample)
    for r in results["bbox"]:
        r["bbox"][0] += r["bbox"][2] * 0.4  # IoU ~0.43 with its ground truth
    metrics = score_results(gt, results, category_id=1, iou_types=["bbox"], image_ids=image_ids).metrics
    assert metrics["bbox"]["AP"] < 0.2 and metrics["bbox"]["AP50"] < 0.5


def test_results_are_accepted_by_pycocotools_load_res(coco_sample):
    gt, results, _, _ = ground_truth_as_predictions(coco_sample)
    for dets in results.values():
        with contextlib.redirect_stdout(io.StringIO()):
            assert len(gt.loadRes(dets).anns) == len(dets)
