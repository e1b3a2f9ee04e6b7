"""Refinement by offsets in the assembled model: deformable backbone, keypoint head and RoI pooling."""
import pytest
import torch

import poseseg
from poseseg.engine.optim import apply_freeze
from poseseg.ops import DeformConv2d

from test_model import person_batch

ALL_REFINEMENT = ["model.backbone.deform_stages=[3,4,5]", "model.keypoint.deform=true",
                  "model.roi.deform_pool=[box,mask,keypoint]"]


def tiny(*overrides):
    return poseseg.build_model(poseseg.load_config("tiny", ["model.input.test_size=128", *overrides]))


@pytest.mark.parametrize("modulated", [True, False])
def test_deformable_model_equals_plain_model_at_init_and_loads_its_weights(modulated):
    torch.manual_seed(0)
    plain = tiny().eval()
    deform = tiny(*ALL_REFINEMENT, f"model.backbone.deform_modulated={str(modulated).lower()}",
                  f"model.keypoint.deform_modulated={str(modulated).lower()}").eval()
    result = deform.load_state_dict(plain.state_dict(), strict=False)  # a plain checkpoint
    assert not result.unexpected_keys
    assert all("offset" in k for k in result.missing_keys), result.missing_keys
    n_deform = sum(isinstance(m, DeformConv2d) for m in deform.modules())
    assert n_deform == 2 * (2 + 2 + 2) + 4  # BasicBlock convs of res3-res5 (2 blocks x 2 convs) + 4 head convs
    images, _ = person_batch()
    with torch.no_grad():
        want, got = plain(images), deform(images)
    for w, g in zip(want, got):
        assert w["boxes"].shape[0] > 0
        for k in w:
            torch.testing.assert_close(g[k], w[k], atol=1e-5, rtol=1e-5)


def test_training_with_all_refinement_moves_the_offsets():
    torch.manual_seed(0)
    model = tiny(*ALL_REFINEMENT).train()
    offset_params = {n: p for n, p in model.named_parameters() if "offset" in n}
    before = {n: p.detach().clone() for n, p in offset_params.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    images, targets = person_batch()
    for _ in range(3):
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    moved = [n for n, p in offset_params.items() if not torch.equal(p, before[n])]
    groups = {"backbone": "backbone.", "keypoint head": "keypoint_head.tower.", "RoI pooling": "pooler."}
    for label, key in groups.items():
        assert any(key in n for n in moved), f"no {label} offsets moved; moved: {moved[:5]}"


def test_freeze_deform_only_trains_just_the_deformable_backbone_parts():
    model = tiny("model.backbone.deform_stages=[4,5]")
    frozen = apply_freeze(model, "deform_only")
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert frozen and trainable
    assert all(n.startswith(("layer3", "layer4")) for n in trainable)
    assert all(isinstance(model.backbone.get_submodule(n.rsplit(".", 1)[0].removesuffix(".offset_conv")),
                          DeformConv2d) for n in trainable)
    assert all(p.requires_grad for p in model.box_head.parameters())


def test_freeze_deform_only_without_deformable_convs_is_a_clear_error():
    with pytest.raises(ValueError, match="deform_stages"):
        apply_freeze(tiny(), "deform_only")


@pytest.mark.parametrize("preset", ["paper_rb", "paper_rb_h"])
def test_refinement_presets(preset):
    cfg = poseseg.load_config(preset)
    assert cfg.model.backbone.deform_stages == [3, 4, 5] and cfg.model.fpn.in_stages == [3, 4, 5]
    assert cfg.model.keypoint.deform == (preset == "paper_rb_h")
