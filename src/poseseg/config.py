"""Typed configuration: nested dataclasses, YAML presets and ``key=value`` overrides.

The dataclass defaults are the paper's Regular model (ResNet-50-FPN, three heads). A preset
YAML lists only the keys it changes; there is no inheritance between presets. Every key is
checked: an unknown key or a value of the wrong type is a ``ConfigError`` that names the key
and the closest valid ones; values are then checked together (``config_validation``).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from poseseg.config_validation import ConfigError, check_value, validate

PRESET_DIR = Path(__file__).parent / "configs"


# ----------------------------------------------------------------------------- model


@dataclass
class InputConfig:
    """How images are normalised and resized inside the model."""

    test_size: int = 800  # shorter side at inference (training sizes: data.train_sizes)
    max_size: int = 1333  # longer-side cap at inference
    size_divisible: int = 32
    pixel_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    pixel_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # What pretrained weights expect (set by `poseseg convert-weights` / named weights): caffe2 / Detectron2
    # models take BGR pixels in 0..255 (channel_order=bgr, pixel_scale=255, mean/std in that scale).
    channel_order: str = "rgb"  # rgb | bgr: channel order the trunk sees
    pixel_scale: float = 1.0  # images arrive in [0, 1]; multiplied by this before pixel_mean / pixel_std


@dataclass
class BackboneConfig:
    depth: int = 50  # 18, 34, 50 or 101
    width: int = 64  # channels of the stem and res2; ResNet's standard is 64
    norm: str = "frozen_bn"  # frozen_bn (pretrained starts), bn, gn (training from scratch)
    freeze_at: int = 0  # freeze the stem (1) and res2..res{freeze_at} when > 0
    deform_stages: list[int] = field(default_factory=list)  # e.g. [3, 4, 5]: deformable 3x3 convs there
    deform_modulated: bool = True  # DCN v2 (offsets + modulation mask) vs v1 (offsets only)
    stride_in_1x1: bool = False  # bottleneck stride in the first 1x1 conv (MSRA / caffe2 weights), not the 3x3


@dataclass
class FPNConfig:
    in_stages: list[int] = field(default_factory=lambda: [2, 3, 4, 5])  # res stages feeding the FPN
    channels: int = 256
    extra_pool: bool = True  # P6 by max-pooling the coarsest level (used by the RPN only)


@dataclass
class RPNConfig:
    anchor_sizes: list[list[int]] = field(default_factory=list)  # per FPN level; empty: derived (32 * 2**(l-2))
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    conv_depth: int = 1
    fg_iou: float = 0.7
    bg_iou: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_top_n_train: int = 2000
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 1000
    post_nms_top_n_test: int = 1000
    nms_thresh: float = 0.7
    score_thresh: float = 0.0
    loss_weight: float = 1.0
    round_anchors: bool = True  # torchvision rounds base anchors to whole pixels; Detectron2 (its weights) does not


@dataclass
class RoIConfig:
    """Proposal sampling and RoI feature pooling shared by the heads."""

    batch_size_per_image: int = 512  # RoIs sampled per image for the box head
    positive_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: float = 0.5
    sampling_ratio: int = 2
    deform_pool: list[str] = field(default_factory=list)  # heads with deformable RoI pooling
    head_rois: str = "proposals"  # what the mask/keypoint heads train on: proposals (positives) | gt_jitter
    gt_jitter_copies: int = 2  # head_rois=gt_jitter: shifted copies of each ground-truth box
    gt_jitter: float = 0.1  # ... each side moved by up to this fraction of the box size
    aligned: bool = False  # half-pixel RoIAlign (Detectron2's ROIAlignV2, set for its weights); torchvision's is False


@dataclass
class BoxHeadConfig:
    pooled_size: int = 7
    fc_dim: int = 1024
    bbox_reg_weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    loss_weight: float = 1.0
    nested_thresh: float = 0.0  # > 0: drop a box at least this much inside a higher-scoring one (0: off)


@dataclass
class MaskHeadConfig:
    pooled_size: int = 14
    num_convs: int = 4
    conv_dim: int = 256
    max_rois_per_image: int = 128  # cap on positive RoIs trained per image
    norm: str = "none"  # none | gn: GroupNorm in the conv tower
    loss_weight: float = 1.0
    # pool the mask RoIs from one FPN level finer than the finest (p2 over res3-res5), made for the mask head
    # only (the RPN, box and keypoint heads keep their levels): 4x the resolution of p3 for the edges
    fine_level: bool = False
    boundary_weight: float = 0.0  # > 0: BCE weighted 1 + this on the cells at each target's edge (a boundary term)
    # shared: the mask head pools from the model's trunk (backbone + FPN); own: from a second trunk of the
    # same architecture that feeds the mask head only (a keypoint detector's trunk + a mask detector's)
    trunk: str = "shared"


@dataclass
class KeypointHeadConfig:
    num_keypoints: int = 17
    pooled_size: int = 14
    num_convs: int = 8
    conv_dim: int = 512
    heatmap_size: int = 56  # side of the output heatmap (2x the deconv output)
    deform: bool = False  # deformable 3x3 convs in the head ("RB+H")
    deform_modulated: bool = True
    offsets: bool = True  # predict 2K sub-cell offset maps (heatmap refinement)
    loss: str = "mse"  # mse (paper: Gaussian target, sigmoid), ce (Mask R-CNN spatial softmax) or ce_soft
    norm: str = "none"  # none | gn: GroupNorm in the conv tower
    # peak: heatmap cell of the maximum; upsample: Mask R-CNN's (torchvision / Detectron2) bicubic resize of
    # each heatmap to its box size in pixels, maximum there. Offsets (when on) refine either.
    decode: str = "peak"
    sigma: float = 1.0  # Gaussian target std in heatmap cells (mse, ce_soft)
    offset_radius: float = 2.0  # offsets are trained on cells within this many cells of a keypoint
    max_rois_per_image: int = 128
    loss_weight: float = 1.0
    offset_loss_weight: float = 1.0
    # a per-keypoint classifier of the data's visibility flag (0 not labelled, 1 occluded, 2 visible) on the
    # tower's pooled features: ``keypoint_visibility`` in results, v in predictions.json
    visibility: bool = False
    visibility_loss_weight: float = 0.5
    visibility_trains_tower: bool = False  # false: a probe on detached features (keypoint AP cannot suffer)


@dataclass
class ModelConfig:
    heads: list[str] = field(default_factory=lambda: ["box", "mask", "keypoint"])
    num_classes: int = 2  # background + person
    test_flip: bool = False  # flip test-time augmentation of the keypoint (and mask) heads (about 1.5x the time)
    test_flip_masks: bool = True  # ... of the mask head too (a weak mask head can lose AP by it: measure)
    input: InputConfig = field(default_factory=InputConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)
    box: BoxHeadConfig = field(default_factory=BoxHeadConfig)
    mask: MaskHeadConfig = field(default_factory=MaskHeadConfig)
    keypoint: KeypointHeadConfig = field(default_factory=KeypointHeadConfig)


# ----------------------------------------------------------------------------- data / train / eval


@dataclass
class DataConfig:
    train_json: str = ""
    train_images: str = ""
    val_json: str = ""
    val_images: str = ""
    category: str = "person"  # category name or id
    keep_empty: bool = True  # keep images without people as negatives
    oks_sigmas: list[float] | str = field(default_factory=list)  # K values, or a named set: coco, crowdpose
    flip_pairs: list[list[int]] = field(default_factory=list)  # empty: derived from left_/right_ names
    train_sizes: list[int] = field(default_factory=lambda: [640, 672, 704, 736, 768, 800])
    max_size: int = 1333
    flip_prob: float = 0.5
    color_jitter: float = 0.0
    max_image_pixels: int = 178_956_970  # decompression-bomb limit
    num_workers: int = 2


@dataclass
class TrainConfig:
    iters: int = 90_000
    batch_size: int = 12  # per process
    base_lr: float = 0.03  # for `lr_reference_batch` images; scaled linearly with the total batch
    lr_reference_batch: int = 12
    optimizer: str = "sgd"  # sgd (with momentum) | adamw (betas 0.9/0.999; converges faster from scratch)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "iters"  # iters: lr_steps / warmup_iters count iterations; time: fractions of time_limit_minutes
    lr_steps: list[int] = field(default_factory=lambda: [60_000, 80_000])
    lr_step_fractions: list[float] = field(default_factory=lambda: [0.75, 0.9])  # schedule=time
    lr_gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_fraction: float = 0.05  # schedule=time
    warmup_factor: float = 0.001
    finish_fraction: float = 0.0  # the last fraction of the run (iterations or time) trains with finish_freeze
    finish_freeze: str = "trunk"  # what the finishing phase freezes (a train.freeze mode)
    clip_grad_norm: float = 0.0  # 0: off
    offset_lr_multiplier: float = 1.0  # lr scale for the sampling-offset branches (deformable conv / RoI pooling)
    amp: bool = True  # mixed precision on CUDA
    freeze: str = "none"  # none | deform_only | backbone | trunk | mask_only (see engine/optim.py FREEZE_MODES)
    nonfinite: str = "stop"  # stop | skip: what a NaN/inf loss does
    max_skipped_steps: int = 20  # with nonfinite=skip, more skipped steps than this stop the run (0: no limit)
    time_limit_minutes: float = 0.0  # stop training after this long (0: off), or the budget of schedule=time
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    eval_every: int = 0
    log_every: int = 20
    # preemption (SLURM, Kubernetes, spot instances): on one of these signals, finish the step, write a
    # checkpoint and exit with code 75; [] turns it off. grace_s: the scheduler's time between signal and kill
    preempt_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    preempt_grace_s: float = 30.0
    seed: int = 0
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1
    init_weights: str = ""
    output_dir: str = "runs/train"
    name: str = ""


@dataclass
class EvalConfig:
    batch_size: int = 2
    score_thresh: float = 0.05


@dataclass
class TrackConfig:
    """Video tracking (ByteTrack-style association) and One-Euro smoothing: ``poseseg predict --track``."""

    low_score: float = 0.1  # detections in [low_score, --score-thresh) only extend existing tracks (second stage)
    match_similarity: float = 0.2  # least (1 - w) * IoU + w * OKS for a high-score match (first stage)
    low_match_iou: float = 0.5  # least IoU for a low-score match (second stage, boxes only)
    oks_weight: float = 0.5  # w above: share of keypoint OKS in the similarity (0: boxes only)
    min_hits: int = 2  # consecutive matches before a new track gets an ID (1: at once)
    max_lost_seconds: float = 1.0  # a track unmatched this long is dropped; until then it can be re-found
    smooth_min_cutoff: float = 1.0  # One-Euro: cutoff frequency (Hz) at rest; lower = smoother, more lag
    smooth_beta: float = 0.05  # One-Euro: cutoff growth per pixel/s of speed; higher = less lag when moving
    smooth_d_cutoff: float = 1.0  # One-Euro: cutoff (Hz) of the speed estimate


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- loading and validation


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, e.g. ``model.keypoint.loss``."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(all_keys(hints[f.name], name + "."))
        else:
            keys.append(name)
    return keys


def _unknown_key_error(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
    if not close:  # also try matching on the last component, e.g. "lr" -> "train.base_lr"
        last = key.rsplit(".", 1)[-1]
        close = [k for k in all_keys() if last and last in k.rsplit(".", 1)[-1]][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key '{key}' in {where}{hint}")


def _apply(obj: Any, data: dict, where: str, prefix: str = "") -> None:
    """Write the nested mapping ``data`` into dataclass ``obj``, validating every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' in {where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    for name, value in data.items():
        key = prefix + str(name)
        if name not in hints:
            raise _unknown_key_error(key, where)
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, where, key + ".")
        else:
            setattr(obj, name, check_value(value, hints[name], key, where))


def set_key(cfg: Config, key: str, value: Any, where: str = "overrides") -> None:
    """Set one dotted key, e.g. ``set_key(cfg, "train.iters", 100)``."""
    parts = key.split(".")
    nested: dict = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        nested = {p: nested}
    _apply(cfg, nested, where)


def parse_override(text: str) -> tuple[str, Any]:
    """``"model.heads=[box,mask]"`` -> ``("model.heads", ["box", "mask"])`` (values parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. train.iters=100")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': cannot parse value {raw!r} ({e})") from None
    return key.strip(), value


def resolve_preset(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    close = difflib.get_close_matches(str(name_or_path), list_presets(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"no config file or preset named '{name_or_path}'{hint} (presets: {', '.join(list_presets())})")


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Build a Config from defaults, a preset name or YAML path, then ``key=value`` overrides."""
    cfg = Config()
    if name_or_path is not None:
        path = resolve_preset(name_or_path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        _apply(cfg, data, str(path))
    if isinstance(overrides, dict):
        overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for k, v in overrides.items()]
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Set each ``key=value`` override on ``cfg`` (in place), then check the whole config; returns ``cfg``."""
    for text in overrides or []:
        key, value = parse_override(text)
        set_key(cfg, key, value, where=f"override '{text}'")
    validate(cfg)
    return cfg


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config saved with ``to_dict`` (e.g. inside a checkpoint)."""
    cfg = Config()
    _apply(cfg, data, "saved config")
    validate(cfg)
    return cfg
