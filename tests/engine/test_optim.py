"""Parameter groups: weight decay and the sampling-offset learning rate."""
import pytest

import poseseg
from poseseg.config import ConfigError, load_config
from poseseg.engine.optim import build_optimizer, sampling_offset_parameters

DEFORMABLE = ["model.backbone.deform_stages=[4,5]", "model.keypoint.deform=true", "model.roi.deform_pool=[keypoint]"]


def test_offset_branches_train_at_the_multiplied_rate():
    cfg = load_config("tiny", [*DEFORMABLE, "train.offset_lr_multiplier=0.1", "train.base_lr=0.002",
                               "train.batch_size=4", "train.lr_reference_batch=4"])
    model = poseseg.build_model(cfg)
    opt = build_optimizer(model, cfg.train, world_size=1)

    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)  # every parameter exactly once

    names = {id(p): n for n, p in model.named_parameters()}
    offsets = {id(p) for p in sampling_offset_parameters(model)}
    offset_names = sorted(names[i] for i in offsets)
    assert any("backbone" in n and "offset_conv" in n for n in offset_names)
    assert any("keypoint" in n and "offset_conv" in n for n in offset_names)
    assert any("offset_fc" in n for n in offset_names)
    assert not any("offset_deconv" in n for n in offset_names)  # heatmap offsets are an output, not sampling

    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= offsets or not ids & offsets  # groups never mix offset and other parameters
        want = 0.0002 if ids <= offsets else 0.002
        assert group["lr"] == pytest.approx(want)


def test_without_deformable_layers_the_groups_are_as_before():
    cfg = load_config("tiny", ["train.offset_lr_multiplier=0.1"])
    opt = build_optimizer(poseseg.build_model(cfg), cfg.train, world_size=1)
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.train.weight_decay, 0.0]


def test_negative_multiplier_is_refused():
    with pytest.raises(ConfigError, match="offset_lr_multiplier"):
        load_config("tiny", ["train.offset_lr_multiplier=-1"])
