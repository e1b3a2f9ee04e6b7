"""Fine-tuning a COCO-17 checkpoint on a 14-keypoint (CrowdPose-style) dataset: the shared joints keep their
trained filters, bit for bit, at step 0; head_top and neck start fresh; the start-up log says which."""
import json

import torch

from poseseg import cli
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES
from poseseg.weights import match_schemas

CROWDPOSE = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
             "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head_top", "neck"]


def _crowdpose_json(synth_data, out):
    """The synthetic training set relabelled with CrowdPose's 14 joints (head_top from the nose, neck from the
    shoulders' midpoint)."""
    d = json.loads((synth_data / "train.json").read_text())
    index = {n: i for i, n in enumerate(COCO_KEYPOINT_NAMES)}
    for ann in d["annotations"]:
        kps = [ann["keypoints"][3 * i:3 * i + 3] for i in range(17)]
        left, right = kps[index["left_shoulder"]], kps[index["right_shoulder"]]
        neck = [(left[0] + right[0]) / 2, (left[1] + right[1]) / 2, min(left[2], right[2])]
        new = [kps[index[n]] for n in CROWDPOSE[:12]] + [kps[index["nose"]], neck]
        ann["keypoints"] = [v for kp in new for v in kp]
        ann["num_keypoints"] = sum(1 for kp in new if kp[2] > 0)
    for cat in d["categories"]:
        cat["keypoints"] = CROWDPOSE
        cat["skeleton"] = [[1, 2], [1, 3], [3, 5], [2, 4], [4, 6], [7, 9], [9, 11], [8, 10], [10, 12], [13, 14]]
    out.write_text(json.dumps(d))
    return out


def test_match_by_name():
    match = match_schemas(COCO_KEYPOINT_NAMES, CROWDPOSE)
    assert [name for _, _, name in match.kept] == CROWDPOSE[:12]
    assert match.fresh == ["head_top", "neck"]
    assert match.dropped == COCO_KEYPOINT_NAMES[:5]


def test_new_schema_keeps_shared_joints_bit_exactly(synth_data, trained_checkpoint, tmp_path, capsys):
    data = _crowdpose_json(synth_data, tmp_path / "crowdpose.json")
    sigmas = "[" + ",".join(["0.079"] * 12 + ["0.026", "0.035"]) + "]"
    code = cli.main(["train", "--init-weights", str(trained_checkpoint), "--data", str(data), "--images",
                     str(synth_data / "train"), "--iters", "0", "--output-dir", str(tmp_path / "runs"),
                     "model.keypoint.num_keypoints=14", f"data.oks_sigmas={sigmas}", "data.val_json=",
                     "data.num_workers=0"])
    assert code == 0
    log = capsys.readouterr().out
    assert "12 joints keep their trained filters" in log and "2 start fresh (head_top, neck)" in log
    source = torch.load(trained_checkpoint, weights_only=True)
    tuned = torch.load(next((tmp_path / "runs").glob("*/model_final.pt")), weights_only=True)
    assert tuned["keypoint_schema"]["names"] == CROWDPOSE
    old, new = source["model"], tuned["model"]
    for ours, name in enumerate(CROWDPOSE[:12]):
        theirs = COCO_KEYPOINT_NAMES.index(name)
        assert torch.equal(new["keypoint_head.heatmap_deconv.weight"][:, ours],
                           old["keypoint_head.heatmap_deconv.weight"][:, theirs])
        assert torch.equal(new["keypoint_head.heatmap_deconv.bias"][ours], old["keypoint_head.heatmap_deconv.bias"][theirs])
        assert torch.equal(new["keypoint_head.offset_deconv.weight"][:, 2 * ours:2 * ours + 2],
                           old["keypoint_head.offset_deconv.weight"][:, 2 * theirs:2 * theirs + 2])
    # fresh joints are not copies of any trained channel
    fresh = new["keypoint_head.heatmap_deconv.weight"][:, 12]
    assert not any(torch.equal(fresh, old["keypoint_head.heatmap_deconv.weight"][:, j]) for j in range(17))
    shared = [k for k in old if k in new and not k.startswith(("keypoint_head.heatmap", "keypoint_head.offset_deconv"))]
    assert shared and all(torch.equal(old[k], new[k]) for k in shared)  # boxes, masks, trunk carry over as they are
