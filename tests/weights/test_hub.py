"""Named weights `torchvision-coco` through torch.hub's cache, end to end through `poseseg predict`.

torchvision's two COCO detectors are built with weights=None and a fixed seed and saved under the exact
file names their weight enums download to; TORCH_HOME points at that folder, so nothing is downloaded.
The reference is torchvision itself: the keypoint model run as a whole, and the mask model's mask head run
on the keypoint model's features and detections (the merged model's design: one trunk, both heads).
"""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image
from torchvision.models.detection import (KeypointRCNN_ResNet50_FPN_Weights, MaskRCNN_ResNet50_FPN_Weights,
                                          keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn)
from torchvision.models.detection.roi_heads import maskrcnn_inference

from poseseg import Predictor, cli
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES
from poseseg.modeling import backbone as backbone_mod
from poseseg.modeling.mask_paste import paste_full
from poseseg.weights import config_from_weights, hub

SIZE, MAX_SIZE, PROPOSALS, DETECTIONS = 256, 384, 100, 2  # small: 8 ResNet-50 passes on CPU
OVERRIDES = [f"model.input.test_size={SIZE}", f"model.input.max_size={MAX_SIZE}",
             f"model.rpn.post_nms_top_n_test={PROPOSALS}", f"model.box.detections_per_image={DETECTIONS}"]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    small = dict(weights=None, weights_backbone=None, min_size=SIZE, max_size=MAX_SIZE,
                 rpn_post_nms_top_n_test=PROPOSALS, box_detections_per_img=DETECTIONS)
    torch.manual_seed(0)
    keypoint = keypointrcnn_resnet50_fpn(num_classes=2, **small).eval()  # the COCO_V1 layout: person only
    torch.manual_seed(1)
    mask = maskrcnn_resnet50_fpn(**small).eval()  # 91 COCO classes, as the real file
    for model, enum in ((keypoint, KeypointRCNN_ResNet50_FPN_Weights.COCO_V1),
                        (mask, MaskRCNN_ResNet50_FPN_Weights.COCO_V1)):
        torch.save(model.state_dict(), checkpoints / enum.url.rsplit("/", 1)[-1])
    return home, keypoint, mask


@torch.no_grad()
def _torchvision_reference(keypoint, mask, image: torch.Tensor) -> dict:
    batch, _ = keypoint.transform([image])
    features = keypoint.backbone(batch.tensors)
    proposals, _ = keypoint.rpn(batch, features)
    detections, _ = keypoint.roi_heads(features, proposals, batch.image_sizes)
    boxes = [d["boxes"] for d in detections]
    # the mask model's own backbone and FPN (its random weights differ from the keypoint model's) at those boxes
    pooled = mask.roi_heads.mask_roi_pool(mask.backbone(batch.tensors), boxes, batch.image_sizes)
    logits = mask.roi_heads.mask_predictor(mask.roi_heads.mask_head(pooled))
    roi_probs = maskrcnn_inference(logits, [d["labels"] for d in detections])[0]  # (N, 1, 28, 28)
    result = keypoint.transform.postprocess(detections, batch.image_sizes, [tuple(image.shape[-2:])])[0]
    # torchvision's mask probabilities, pasted as Predictor pastes (half-pixel-aligned, box by box)
    result["masks"] = paste_full(roi_probs, result["boxes"], tuple(image.shape[-2:]))
    result["roi_boxes"], result["mask_probs"] = boxes[0], roi_probs
    return result


def test_predict_with_named_weights_equals_torchvision(hub_cache, coco_sample, tmp_path, monkeypatch):
    home, keypoint, mask = hub_cache
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("POSESEG_OFFLINE", "1")  # everything is in the cache: nothing may be downloaded
    # Random weights with fresh BN statistics magnify float rounding through 50 layers: compare on the plain
    # (unfolded, NCHW) path, as tests/modeling/test_torchvision_parity.py does.
    monkeypatch.setattr(backbone_mod, "conv_norm", lambda conv, norm, x: norm(conv(x.contiguous())))
    out = tmp_path / "pred"
    args = ["predict", "--weights", "torchvision-coco", str(coco_sample), "--out", str(out), "--score-thresh", "0"]
    assert cli.main(args + [a for o in OVERRIDES for a in ("--set", o)]) == 0
    results = json.loads((out / "predictions.json").read_text())
    images = sorted(coco_sample.glob("*.jpg"))
    assert len({r["file_name"] for r in results}) == len(images)
    compared = 0
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        want = _torchvision_reference(keypoint, mask, torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255)
        got = [r for r in results if r["file_name"] == str(path)]
        assert len(got) == len(want["boxes"])
        for r, box, score, kps, probs in zip(got, want["boxes"], want["scores"], want["keypoints"], want["masks"]):
            x1, y1, x2, y2 = box.tolist()
            np.testing.assert_allclose(r["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1e-3, rtol=1e-4)
            assert r["score"] == pytest.approx(score.item(), abs=1e-4)
            np.testing.assert_allclose(np.reshape(r["keypoints"], (-1, 3))[:, :2], kps[:, :2].numpy(), atol=1e-3)
            ours = mask_util.decode(r["segmentation"]).astype(bool)
            theirs = probs[0].numpy() >= 0.5
            assert (ours != theirs).mean() < 1e-3  # binarised at 0.5: only pixels within rounding of 0.5 may differ
            compared += 1
    assert compared >= 4  # random weights still give detections on every image

    # the converted checkpoint is cached: the second use converts nothing
    converted = list((home / "hub" / "poseseg").glob("torchvision-coco-*.pt"))
    assert len(converted) == 1
    stamp = converted[0].stat().st_mtime_ns
    assert hub.resolve_named("torchvision-coco") == converted[0]
    assert converted[0].stat().st_mtime_ns == stamp
    predictor = Predictor("torchvision-coco", device="cpu")  # the Python API takes the name too
    assert predictor.schema["names"] == COCO_KEYPOINT_NAMES and predictor.cfg.model.backbone.depth == 50
    assert predictor.cfg.model.mask.trunk == "own"  # the mask head reads the mask model's trunk
    image = torch.from_numpy(np.asarray(Image.open(images[0]).convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    want = _torchvision_reference(keypoint, mask, image)
    rois = Predictor("torchvision-coco", device="cpu", overrides=OVERRIDES).model.predict_rois([image]).detections[0]
    torch.testing.assert_close(rois["boxes"], want["roi_boxes"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rois["mask_probs"], want["mask_probs"], atol=1e-4, rtol=1e-4)
    finetune = config_from_weights("torchvision-coco", ["model.keypoint.num_keypoints=14"])  # train --init-weights
    assert finetune.train.init_weights == "torchvision-coco" and finetune.model.keypoint.loss == "ce"
    assert converted[0].stat().st_mtime_ns == stamp
    payload = torch.load(converted[0], weights_only=True)
    assert payload["keypoint_schema"]["names"][0] == "nose" and payload["config"]["model"]["keypoint"]["decode"] == "upsample"
    report = payload["conversion_report"]
    assert not report["unexpected"]
    assert any("mask head reads the mask model's own ResNet + FPN" in n for n in report["notes"])
    assert all("offset" in k or "num_batches" in k or "score_calibration" in k
               for k in report["left_at_init"])  # only our extra parts


def _photo(folder) -> str:
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "photo.png")
    return str(folder / "photo.png")


def test_missing_files_offline_say_which_and_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("POSESEG_OFFLINE", "1")
    assert cli.main(["predict", "--weights", "torchvision-coco", _photo(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "need 2 file(s)" in err and str(tmp_path / "hub" / "checkpoints") in err  # both at once, not the first
    assert "keypointrcnn_resnet50_fpn_coco-fc266e95.pth   (226 MB" in err
    assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth   (170 MB" in err


def test_a_damaged_download_in_the_cache_is_named_with_its_hash(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("POSESEG_OFFLINE", "1")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("keypointrcnn_resnet50_fpn_coco-fc266e95.pth", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"):
        torch.save({"w": torch.ones(1000)}, checkpoints / name)
    keypoint = checkpoints / "keypointrcnn_resnet50_fpn_coco-fc266e95.pth"
    keypoint.write_bytes(keypoint.read_bytes()[:1500])  # a download cut short, or a damaged disk
    assert cli.main(["predict", "--weights", "torchvision-coco", _photo(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"the cached file {keypoint} is corrupt: its SHA-256 begins" in err and "not fc266e95" in err
    assert "Delete it: the next run downloads it again" in err and "Traceback" not in err
    assert keypoint.is_file()  # the user deletes it, not us


def test_unknown_name_suggests_close_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["predict", "--weights", "torchvision-coc", _photo(tmp_path)]) == 2
    assert "did you mean torchvision-coco" in capsys.readouterr().err


def test_weights_list(capsys):
    assert cli.main(["weights", "list"]) == 0
    text = capsys.readouterr().out
    assert "torchvision-coco" in text and "kp_map 65.0" in text and "mask_map 34.6" in text


def test_a_damaged_conversion_in_the_cache_is_converted_again(hub_cache, monkeypatch, capsys):
    from poseseg.weights.load import load_weights_file

    home, _, _ = hub_cache
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("POSESEG_OFFLINE", "1")
    converted = hub.resolve_named("torchvision-coco")
    converted.write_bytes(converted.read_bytes()[:100_000])  # ours, derived from the downloads: rebuilt
    payload = load_weights_file("torchvision-coco")
    assert f"{converted}, the cached conversion of 'torchvision-coco', is corrupt" in capsys.readouterr().err
    assert payload["keypoint_schema"]["names"] == COCO_KEYPOINT_NAMES
    assert hub.resolve_named("torchvision-coco") == converted and torch.load(converted, weights_only=True)["config"]
