"""Configs: presets, overrides and the errors a user sees."""
import pytest
import torch

import poseseg
from poseseg.config import ConfigError, config_from_dict, load_config


@pytest.mark.parametrize("preset", ["paper_regular", "paper_kps_only", "paper_single_scale",
                                    "paper_multi_scale", "tiny"])
def test_required_presets_exist_and_load(preset):
    assert preset in poseseg.list_presets()
    load_config(preset)


def test_presets_describe_the_paper_variants():
    assert load_config("paper_regular").model.heads == ["box", "mask", "keypoint"]
    assert load_config("paper_regular").model.backbone.depth == 50
    assert load_config("paper_kps_only").model.heads == ["box", "keypoint"]
    assert load_config("paper_single_scale").model.fpn.in_stages == [5]
    assert load_config("paper_multi_scale").model.fpn.in_stages == [3, 4, 5]
    assert load_config("paper_regular").model.keypoint.num_convs == 8


def test_overrides_are_typed():
    cfg = load_config("tiny", ["train.iters=7", "model.heads=[box, mask]", "model.keypoint.sigma=2"])
    assert cfg.train.iters == 7 and cfg.model.heads == ["box", "mask"] and cfg.model.keypoint.sigma == 2.0


def test_exponent_floats_parse():
    assert load_config("tiny", ["train.base_lr=1e-3"]).train.base_lr == 0.001


def test_box_head_is_always_on():
    assert load_config(None, ["model.heads=[keypoint]"]).model.heads == ["box", "keypoint"]


@pytest.mark.parametrize("override, message", [
    ("model.keypoint.los=ce", "did you mean model.keypoint.loss"),
    ("train.iters=many", "expected int"),
    ("model.heads=box", "expected list"),
    ("model.keypoint.offsets=maybe", "expected bool"),
    ("model.heads=[box,pose]", "unknown head"),
    ("model.backbone.depth=42", "choose 18, 34, 50 or 101"),
    ("train.optimizer=adam", "choose sgd or adamw"),
    ("noequals", "key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_bad_yaml_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  backbone:\n    detph: 50\n")
    with pytest.raises(ConfigError, match=r"model\.backbone\.detph.*mine\.yaml.*model\.backbone\.depth"):
        load_config(path)


def test_unknown_preset_suggests_the_close_ones():
    with pytest.raises(ConfigError, match="paper_regular"):
        load_config("paper_regulr")


def test_round_trip_through_a_dict():
    cfg = load_config("tiny", ["model.keypoint.loss=ce"])
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice(name, cls):
    from poseseg.engine.optim import build_optimizer

    cfg = load_config("tiny", [f"train.optimizer={name}", "train.base_lr=0.004", "train.batch_size=2",
                               "train.lr_reference_batch=4"])
    opt = build_optimizer(poseseg.build_model(cfg), cfg.train, world_size=2)
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.004)  # 2 images x 2 processes = the reference batch
    assert opt.param_groups[1]["weight_decay"] == 0.0  # norms and biases
