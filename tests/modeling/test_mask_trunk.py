"""model.mask.trunk=own: the mask head reads a second trunk of its own, never the keypoint model's.

A merge of two models with different trunks must give model A's boxes and keypoints exactly, and
model B's masks as B's own trunk and mask head compute them at A's boxes.
"""
from __future__ import annotations

import torch

import poseseg
from poseseg.modeling.postprocess import postprocess

SMALL = ["model.input.test_size=128", "model.input.max_size=160", "model.box.score_thresh=0.0",
         "model.box.detections_per_image=8"]


def _model(seed: int, *extra: str):
    torch.manual_seed(seed)
    model = poseseg.build_model(poseseg.load_config("tiny", SMALL + list(extra))).eval()
    with torch.no_grad():  # trained-looking BN statistics, different per model
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for p in model.mask_head.parameters():  # a mask head far from its near-0.5 initial output
            p.normal_(0, 0.3)
    return model


def _merge(keypoint_model, mask_model):
    """A's trunk, RPN, box and keypoint heads; B's trunk as the mask trunk and B's mask head."""
    merged = _model(99, "model.mask.trunk=own")
    state = {k: v for k, v in keypoint_model.state_dict().items() if not k.startswith("mask_head.")}
    for k, v in mask_model.state_dict().items():
        if k.startswith(("backbone.", "fpn.")):
            state[f"mask_trunk.{k}"] = v
        elif k.startswith("mask_head."):
            state[k] = v
    merged.load_state_dict(state)
    return merged


def test_a_merge_of_two_different_trunks_keeps_each_heads_own_features():
    a, b = _model(1), _model(2)
    assert not torch.equal(a.backbone.conv1.weight, b.backbone.conv1.weight)
    merged = _merge(a, b)
    image = torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(3))
    got = merged.predict_rois([image]).detections[0]
    want = a.predict_rois([image]).detections[0]
    assert got["boxes"].shape[0] == 8
    for key in ("boxes", "scores", "keypoints", "keypoint_scores"):
        torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=1e-4)
    # B's masks at A's boxes: B's own trunk, pooler and mask head
    with torch.no_grad():
        batch, _ = b.transform([image])
        # channels-last, as predict_rois runs every trunk (the same values up to float rounding)
        features = b.fpn(b.backbone(batch.tensors.contiguous(memory_format=torch.channels_last)))
        features = {k: v.contiguous() for k, v in features.items()}
        logits = b.mask_head(b.mask_pooler(features, [want["boxes"]], batch.image_sizes))
        probs = b.mask_head.inference(logits, [want["labels"]])[0]
    torch.testing.assert_close(got["mask_probs"], probs, atol=1e-4, rtol=1e-4)
    # the graft users had before (B's mask head on A's trunk) gives other masks: the test can tell
    grafted = {**a.state_dict(), **{k: v for k, v in b.state_dict().items() if k.startswith("mask_head.")}}
    a.load_state_dict(grafted)
    assert (a.predict_rois([image]).detections[0]["mask_probs"] - probs).abs().max() > 1e-2


def test_the_own_trunk_trains_through_the_mask_loss_only():
    model = _model(1, "model.mask.trunk=own").train()
    image = torch.rand(3, 128, 160)
    target = {"boxes": torch.tensor([[20.0, 10.0, 90.0, 120.0]]), "labels": torch.tensor([1]),
              "masks": torch.zeros(1, 128, 160, dtype=torch.uint8), "keypoints": torch.zeros(1, 17, 3)}
    target["masks"][0, 20:110, 30:80] = 1
    losses = model([image], [target])
    losses["loss_keypoint"].backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in model.mask_trunk.parameters())
    losses["loss_mask"].backward()
    assert model.mask_trunk.backbone.conv1.weight.grad.abs().sum() > 0


def test_flip_tta_and_the_full_picture_api_run_with_an_own_trunk():
    model = _model(1, "model.mask.trunk=own", "model.test_flip=true")
    model.keypoint_schema = poseseg.keypoint_schema.coco_person_schema().to_dict()
    out = postprocess(model.predict_rois([torch.rand(3, 100, 130)]))[0]
    assert out["masks"].shape[1:] == (1, 100, 130) and out["keypoints"].shape[1:] == (17, 3)
