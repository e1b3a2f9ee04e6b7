"""Inference-only fast paths give the plain path's results.

* the backbone folds frozen / eval-mode BN into the preceding conv and adds the residual in
  place: equal to conv -> norm -> add up to float rounding;
* the model runs the trunk, FPN and RPN in channels-last layout: same values, same rounding scale;
* the keypoint head reuses the mask head's pooled features when the poolers are identical:
  bit-for-bit the same outputs.
"""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import poseseg
from poseseg.modeling import backbone as backbone_mod
from poseseg.modeling import model as model_mod
from poseseg.modeling.backbone import ResNet, conv_norm


def _randomize_norms(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial statistics and affine terms, so folding has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            c = m.running_mean.shape[0]
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


def _plain_conv_norm(conv, norm, x):
    return norm(conv(x))


@pytest.mark.parametrize("norm_kind", ["frozen_bn", "bn"])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_conv_norm_equals_conv_then_norm(norm_kind, conv_bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=conv_bias)
    norm = backbone_mod.make_norm(norm_kind, 16)
    _randomize_norms(norm)
    norm.eval()
    x = torch.randn(2, 8, 15, 17)
    with torch.no_grad():
        torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)), rtol=1e-5, atol=1e-6)


def test_norms_that_cannot_fold_take_the_plain_path():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 4, 6, 6)
    for norm in (nn.GroupNorm(2, 8).eval(), nn.BatchNorm2d(8).train()):
        with torch.no_grad():
            assert torch.equal(conv_norm(conv, norm, x), norm(conv(x)))


@pytest.mark.parametrize("depth,norm_kind", [(50, "frozen_bn"), (18, "bn")])
@pytest.mark.parametrize("channels_last", [False, True])
def test_backbone_inference_equals_the_plain_path(monkeypatch, depth, norm_kind, channels_last):
    torch.manual_seed(0)
    net = ResNet(depth=depth, width=16, norm=norm_kind).eval()
    _randomize_norms(net)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        fast_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        fast = net(fast_in)
        monkeypatch.setattr(backbone_mod, "conv_norm", _plain_conv_norm)
        plain = net(x)
    for name in plain:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-5, atol=1e-5 * plain[name].abs().max().item())


def test_backbone_training_path_is_unchanged():
    torch.manual_seed(0)
    net = ResNet(depth=50, width=16, norm="frozen_bn").train()
    _randomize_norms(net)
    x = torch.rand(1, 3, 64, 64)
    out = net(x)["res5"]
    assert out.requires_grad
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_model_features_in_eval_equal_the_plain_path(monkeypatch):
    """Trunk + FPN as the eval forward runs them (folded norms, channels-last) vs conv -> norm in NCHW."""
    torch.manual_seed(0)
    cfg = poseseg.load_config("paper_regular", overrides=["model.backbone.width=16", "model.fpn.channels=32",
                                                          "model.input.test_size=96", "model.input.max_size=128"])
    model = poseseg.build_model(cfg).eval()
    _randomize_norms(model)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        fast = model.fpn(model.backbone(x.contiguous(memory_format=torch.channels_last)))
        monkeypatch.setattr(backbone_mod, "conv_norm", _plain_conv_norm)
        plain = model.fpn(model.backbone(x))
    for name in plain:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-5, atol=1e-5 * plain[name].abs().max().item())


def test_keypoint_head_reusing_the_mask_pooling_gives_identical_outputs(monkeypatch):
    torch.manual_seed(0)
    # masks from the same FPN levels as the keypoints (tiny's mask head has its own finer level)
    cfg = poseseg.load_config("tiny", overrides=["model.input.test_size=128", "model.box.score_thresh=0.0",
                                                 "model.box.detections_per_image=5", "model.mask.fine_level=false"])
    model = poseseg.build_model(cfg).eval()
    nn.init.normal_(model.keypoint_head.offset_deconv.weight, std=0.01)  # non-zero offsets
    assert model_mod.same_pooling(model.mask_pooler, model.keypoint_pooler)
    x = torch.rand(3, 128, 160)
    with torch.no_grad():
        batch, _ = model.transform([x])
        features = model.fpn(model.backbone(batch.tensors))
        proposals, _ = model.rpn(batch, features)
        shared = model._detect(features, proposals, batch.image_sizes)
        monkeypatch.setattr(model_mod, "same_pooling", lambda a, b: False)
        separate = model._detect(features, proposals, batch.image_sizes)
    assert shared[0]["boxes"].shape[0] == 5
    for key in ("boxes", "mask_probs", "keypoints", "keypoint_scores", "keypoint_peaks"):
        assert torch.equal(shared[0][key], separate[0][key]), key


def test_poolers_with_different_settings_are_not_shared():
    base = ["model.input.test_size=128"]
    model = poseseg.build_model(poseseg.load_config("tiny", overrides=base + ["model.keypoint.pooled_size=7"]))
    assert not model_mod.same_pooling(model.mask_pooler, model.keypoint_pooler)
    model = poseseg.build_model(poseseg.load_config("tiny", overrides=base + ["model.roi.deform_pool=[keypoint]"]))
    assert not model_mod.same_pooling(model.mask_pooler, model.keypoint_pooler)
