"""CrowdPose's own JSON (14 keypoints, COCO's skeleton copied in, no `area`) is accepted with warnings."""
import json

import pytest

from eval_helpers import noisy_predictions
from poseseg.cli import main
from poseseg.config import ConfigError, load_config
from poseseg.data.coco import CocoPeopleDataset
from poseseg.keypoint_schema import COCO_SKELETON, CROWDPOSE_KEYPOINT_NAMES, CROWDPOSE_SIGMAS
from poseseg.engine.evaluate import score_results

# CrowdPose keypoint i <- COCO keypoint COCO_OF[i]; head <- nose; neck <- the shoulders' midpoint
COCO_OF = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0]


def crowdpose_json(coco_sample, tmp_path):
    data = json.loads((coco_sample / "person_keypoints_sample.json").read_text())
    data["categories"] = [{"id": 1, "name": "person", "supercategory": "person",
                           "keypoints": list(CROWDPOSE_KEYPOINT_NAMES),
                           "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]}]  # as CrowdPose ships it
    for a in data["annotations"]:
        k = [a["keypoints"][3 * i:3 * i + 3] for i in range(17)]
        ls, rs = k[5], k[6]
        neck = [(ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, min(ls[2], rs[2])] if ls[2] and rs[2] else [0, 0, 0]
        a["keypoints"] = [v for i in COCO_OF for v in k[i]] + neck
        a["num_keypoints"] = sum(1 for v in a["keypoints"][2::3] if v > 0)
        del a["area"]  # CrowdPose has none
    path = tmp_path / "crowdpose.json"
    path.write_text(json.dumps(data))
    return path, data


def test_check_data_passes_with_a_skeleton_warning_in_file_indices(coco_sample, tmp_path, capsys):
    path, _ = crowdpose_json(coco_sample, tmp_path)
    code = main(["check-data", "--data", str(path), "--images", str(coco_sample), "data.oks_sigmas=crowdpose",
                 "model.keypoint.num_keypoints=14"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[16, 14]" in out and "1-based" in out  # COCO's first edge as the file writes it
    assert "computes it from the mask" in out  # no `area`: eval will compute it


def test_dataset_and_eval_accept_it(coco_sample, tmp_path):
    path, data = crowdpose_json(coco_sample, tmp_path)
    ds = CocoPeopleDataset(path, coco_sample, oks_sigmas=CROWDPOSE_SIGMAS, num_keypoints=14)
    assert ds.schema.num_keypoints == 14 and all(max(e) < 14 for e in ds.schema.skeleton)
    assert len(ds.schema.flip_pairs) == 6
    preds = noisy_predictions(data)
    report = score_results(path, preds, category_id=1, iou_types=["bbox", "segm", "keypoints"],
                           sigmas=CROWDPOSE_SIGMAS)
    assert {w["code"] for w in report.warnings} == {"area_filled"}
    assert 0 < report.metrics["keypoints"]["AP"] < 1


def test_named_sigma_sets():
    assert load_config("tiny", ["data.oks_sigmas=crowdpose"]).data.oks_sigmas == CROWDPOSE_SIGMAS
    assert len(load_config("tiny", ["data.oks_sigmas=coco"]).data.oks_sigmas) == 17
    with pytest.raises(ConfigError, match="choose coco, crowdpose"):
        load_config("tiny", ["data.oks_sigmas=mpii"])


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
def test_without_segmentation_the_mask_ap_is_skipped_with_a_warning(coco_sample, tmp_path, backend, capsys):
    """CrowdPose as shipped has no `segmentation`: both evaluators stopped with a KeyError (issue 26)."""
    path, data = crowdpose_json(coco_sample, tmp_path)
    preds = noisy_predictions(data)
    for a in data["annotations"]:
        del a["segmentation"]
    path.write_text(json.dumps(data))
    report = score_results(path, preds, category_id=1, iou_types=["bbox", "segm", "keypoints"],
                           sigmas=CROWDPOSE_SIGMAS, backend=backend)
    assert "no_segmentation" in {w["code"] for w in report.warnings}
    assert all(v is None for v in report.metrics["segm"].values())
    assert 0 < report.metrics["bbox"]["AP"] <= 1 and 0 < report.metrics["keypoints"]["AP"] < 1
    assert main(["check-data", "--data", str(path), "--images", str(coco_sample), "data.oks_sigmas=crowdpose",
                 "model.keypoint.num_keypoints=14"]) == 0
    assert "the mask AP is skipped" in capsys.readouterr().out
