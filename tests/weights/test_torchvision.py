"""torchvision's Keypoint / Mask R-CNN weights in our model: the same outputs, classes cut to person,
strict loading that knows which of our parameters torchvision lacks."""
import pytest
import torch
import torchvision
from torchvision.models.detection.roi_heads import maskrcnn_inference

import poseseg
from poseseg.modeling import backbone as backbone_mod
from poseseg.weights import from_torchvision, load_torchvision
from poseseg.weights.torchvision import OURS_ONLY

SIZE = 256


def _image():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 200, 280, generator=g)
    img[:, 40:160, 60:120] += 0.5  # some structure so proposals are not all alike
    return img.clamp(0, 1)


def _ours(heads):
    cfg = poseseg.load_config("paper_regular", overrides=[
        f"model.heads={heads}", "model.backbone.norm=bn", "model.keypoint.loss=ce",
        "model.keypoint.offsets=false", f"model.input.test_size={SIZE}", "model.input.max_size=400"])
    return poseseg.build_model(cfg).eval()


@pytest.mark.parametrize("kind", ["keypoint", "mask"])
def test_same_outputs_as_torchvision(kind, monkeypatch):
    # Our inference folds BN into the convs and runs channels-last: other float rounding. With
    # random weights and fresh BN statistics nothing normalises the activations, which grow
    # through 50 layers and magnify it past 1e-4 (and reorder near-tied detections). The fast
    # paths' equivalence is tested in test_inference_fast_path.py; the architecture is compared
    # here on the plain path (unfolded convs on NCHW tensors: x.contiguous() undoes channels-last).
    monkeypatch.setattr(backbone_mod, "conv_norm", lambda conv, norm, x: norm(conv(x.contiguous())))
    torch.manual_seed(0)
    build = (torchvision.models.detection.keypointrcnn_resnet50_fpn if kind == "keypoint"
             else torchvision.models.detection.maskrcnn_resnet50_fpn)
    theirs = build(weights=None, weights_backbone=None, num_classes=2, min_size=SIZE, max_size=400).eval()
    ours = _ours(f"[box,{kind}]")
    state = theirs.state_dict()
    report = load_torchvision(ours, **{f"{kind}_state": state})
    assert not report.unexpected and report.loaded
    img = _image()
    with torch.no_grad():
        want = theirs([img])[0]
        got = ours([img])[0]
    assert want["boxes"].shape[0] >= 3  # random weights still give detections to compare
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["labels"], want["labels"])
    if kind == "mask":
        # the mask head's probabilities over each box; the paste into the picture is our aligned one
        # (tests/modeling/test_mask_paste.py compares it with torchvision's paste)
        with torch.no_grad():
            batch, _ = theirs.transform([img])
            feats = theirs.backbone(batch.tensors)
            rois = ours.predict_rois([img]).detections[0]
            pooled = theirs.roi_heads.mask_roi_pool(feats, [rois["boxes"]], batch.image_sizes)
            tv = maskrcnn_inference(theirs.roi_heads.mask_predictor(theirs.roi_heads.mask_head(pooled)),
                                    [rois["labels"]])[0]  # (N, 1, 28, 28)
        torch.testing.assert_close(rois["mask_probs"], tv, atol=1e-4, rtol=1e-4)
    else:
        # heatmap logits on the final boxes, through each model's own pooler and head
        with torch.no_grad():
            batch, _ = theirs.transform([img])
            feats = theirs.backbone(batch.tensors)
            boxes = [theirs.transform.postprocess([{"boxes": want["boxes"]}], [tuple(img.shape[-2:])],
                                                  batch.image_sizes)[0]["boxes"]]
            tv = theirs.roi_heads.keypoint_predictor(theirs.roi_heads.keypoint_head(
                theirs.roi_heads.keypoint_roi_pool(feats, boxes, batch.image_sizes)))
            our_feats = ours.fpn(ours.backbone(batch.tensors))
            heatmaps, offsets, _ = ours.keypoint_head(ours.keypoint_pooler(our_feats, boxes, batch.image_sizes))
        assert offsets is None
        torch.testing.assert_close(heatmaps, tv, atol=1e-4, rtol=1e-4)


def test_coco_91_class_checkpoint_is_cut_to_person():
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = theirs.state_dict()
    converted = from_torchvision(mask_state=state)
    cls_w = state["roi_heads.box_predictor.cls_score.weight"]
    torch.testing.assert_close(converted["box_head.cls_score.weight"], cls_w[[0, 1]])
    reg_w = state["roi_heads.box_predictor.bbox_pred.weight"]
    torch.testing.assert_close(converted["box_head.bbox_pred.weight"], reg_w[[0, 1, 2, 3, 4, 5, 6, 7]])
    assert converted["mask_head.predictor.weight"].shape[0] == 2


def test_mismatched_config_is_a_clear_error():
    theirs = torchvision.models.detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    ours = poseseg.build_model(poseseg.load_config("tiny"))
    with pytest.raises(ValueError, match="matching config"):
        load_torchvision(ours, keypoint_state=theirs.state_dict())


def _fully_deformable(preset):
    """The preset with every offset option on: deformable res3-res5, RoI pooling and keypoint convs."""
    heads = poseseg.load_config(preset).model.heads
    extra = ["model.keypoint.deform=true"] if "keypoint" in heads else []
    return poseseg.load_config(preset, overrides=[f"model.roi.deform_pool=[{','.join(heads)}]",
                                                  "model.backbone.deform_stages=[3,4,5]", *extra])


def test_every_ours_only_name_is_a_real_name_and_strict_loading_covers_a_fully_deformable_model():
    keys = {k for preset in poseseg.list_presets() for k in poseseg.build_model(_fully_deformable(preset)).state_dict()}
    for part in OURS_ONLY:
        assert any(part in k for k in keys), f"{part} names no parameter or buffer of any preset"
    # strict loading fails on any parameter of ours that torchvision lacks and OURS_ONLY does not name
    ours = poseseg.build_model(_fully_deformable("paper_regular"))
    kp = torchvision.models.detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    mk = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    report = load_torchvision(ours, keypoint_state=kp.state_dict(), mask_state=mk.state_dict())
    assert any(k.endswith("pooler.offset_fc.weight") for k in report.left_at_init)
