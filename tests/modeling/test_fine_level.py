"""model.mask.fine_level: a p2 over res3-res5 that only the mask head reads."""
import pytest
import torch
import torch.nn.functional as F

from poseseg.config import load_config
from poseseg.engine.optim import apply_freeze
from poseseg.modeling.model import build_model

SMALL = ["model.input.test_size=128", "model.input.max_size=160", "model.box.score_thresh=0.0",
         "model.box.detections_per_image=5", "model.rpn.post_nms_top_n_test=20"]


def _model(fine: bool, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(load_config("tiny", [*SMALL, f"model.mask.fine_level={str(fine).lower()}"])).eval()


def test_fine_level_is_the_fpn_step_once_more():
    model = _model(True)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        res = model.backbone(x)
        out = model.fpn(res)
        fpn = model.fpn
        expected = fpn.fine_out(fpn.fine_lateral(res["res2"]) + F.interpolate(out["p3"], scale_factor=2.0))
    assert list(out) == ["p3", "p4", "p5", "p6", "p2"]
    assert out["p2"].shape == (1, 64, 32, 40)
    assert torch.allclose(out["p2"], expected, atol=1e-6)
    assert model.rpn.level_names == ["p3", "p4", "p5", "p6"]
    assert model.mask_pooler.align.featmap_names == ["p2"]
    assert model.keypoint_pooler.align.featmap_names == ["p3", "p4", "p5"]


def test_only_the_masks_read_the_fine_level():
    model = _model(True)
    images = [torch.rand(3, 120, 150)]
    before = model.predict_rois(images).detections[0]
    with torch.no_grad():
        model.fpn.fine_out.weight.mul_(3.0)
    after = model.predict_rois(images).detections[0]
    assert len(before["boxes"]) == 5
    for key in ("boxes", "scores", "keypoints"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.allclose(before["mask_probs"], after["mask_probs"])


def test_a_train_step_and_mask_only_freezing():
    model = _model(True).train()
    frozen = apply_freeze(model, "mask_only")
    assert frozen and not any(n.startswith("fpn.fine_") for n in frozen)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("mask_head.", "fpn.fine_"))}
    img = torch.rand(3, 128, 128)
    masks = torch.zeros(1, 128, 128)
    masks[0, 30:90, 40:80] = 1
    kps = torch.zeros(1, 17, 3)
    kps[0, :, 0], kps[0, :, 1], kps[0, :, 2] = 60.0, 60.0, 2
    target = {"boxes": torch.tensor([[40.0, 30.0, 80.0, 90.0]]), "labels": torch.tensor([1]), "masks": masks,
              "keypoints": kps}
    losses = model([img], [target])
    sum(losses.values()).backward()
    assert model.fpn.fine_out.weight.grad.abs().sum() > 0
    assert model.fpn.layer_blocks[0][0].weight.grad is None  # p3's conv: frozen


def test_mask_only_needs_a_mask_head():
    model = build_model(load_config("tiny", [*SMALL, "model.heads=[box,keypoint]"]))
    with pytest.raises(ValueError, match="no mask head"):
        apply_freeze(model, "mask_only")
