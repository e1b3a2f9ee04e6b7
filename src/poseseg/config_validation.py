"""Checks of config values: each value against its key's type (``check_value``), then cross-field and
range checks of a resolved config, what a type check cannot express (``validate``).

Every message names the key as the user writes it (``train.base_lr``) and what the value must be.
"""
from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poseseg.config import Config, TrackConfig, TrainConfig


class ConfigError(ValueError):
    """A bad key or value in a config file or override."""


def check_value(value: Any, tp: Any, key: str, where: str) -> Any:
    """``value`` converted to the annotated type ``tp`` of config key ``key``, or a ConfigError naming it."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}' in {where}: expected {type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return check_value(value, arg, key, where)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        return [check_value(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad
    if tp is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise bad


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _validate_schedule(t: TrainConfig) -> None:
    if t.schedule not in ("iters", "time"):
        raise ConfigError(f"train.schedule={t.schedule!r}; choose iters (lr_steps in iterations) or time "
                          "(lr_step_fractions of train.time_limit_minutes)")
    if t.schedule == "time" and t.time_limit_minutes <= 0:
        raise ConfigError("train.schedule=time needs the budget: set train.time_limit_minutes, e.g. 9")
    fractions = [("train.lr_step_fractions", f) for f in t.lr_step_fractions] + [
        ("train.warmup_fraction", t.warmup_fraction), ("train.finish_fraction", t.finish_fraction)]
    for key, value in fractions:
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key}={value}: a fraction of the run, in [0, 1)")


# key -> (test, what the value must be); checked by validate_ranges with the key as the user writes it
_RANGES: dict[str, tuple[Any, str]] = {
    "train.iters": (lambda v: v >= 0, ">= 0 (0: save the starting weights and evaluate them)"),
    "train.preempt_grace_s": (lambda v: v >= 0, ">= 0 seconds"),
    "train.batch_size": (lambda v: v >= 1, "at least 1 image per process"),
    "train.base_lr": (lambda v: 0 < v < float("inf"), "a positive number (e.g. 0.02)"),
    "train.lr_reference_batch": (lambda v: v >= 1, "at least 1"),
    "train.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.weight_decay": (lambda v: v >= 0, ">= 0"),
    "train.lr_gamma": (lambda v: v > 0, "> 0"),
    "train.warmup_iters": (lambda v: v >= 0, ">= 0"),
    "train.warmup_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "train.clip_grad_norm": (lambda v: v >= 0, ">= 0 (0: off)"),
    "model.mask.boundary_weight": (lambda v: v >= 0, ">= 0 (0: plain BCE)"),
    "train.checkpoint_every": (lambda v: v >= 1, "at least 1"),
    "train.keep_checkpoints": (lambda v: v >= 0, ">= 0 (0: keep all)"),
    "train.eval_every": (lambda v: v >= 0, ">= 0 (0: only at the end)"),
    "train.log_every": (lambda v: v >= 1, "at least 1"),
    "train.max_skipped_steps": (lambda v: v >= 0, ">= 0 (0: no limit)"),
    "eval.batch_size": (lambda v: v >= 1, "at least 1"),
    "eval.score_thresh": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "data.flip_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "data.color_jitter": (lambda v: v >= 0, ">= 0"),
    "data.max_size": (lambda v: v >= 1, "at least 1"),
    "data.train_sizes": (lambda v: len(v) > 0 and min(v) >= 1, "a non-empty list of sizes >= 1"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.max_image_pixels": (lambda v: v >= 1, "at least 1"),
    "model.input.test_size": (lambda v: v >= 1, "at least 1"),
    "model.box.nested_thresh": (lambda v: 0 <= v <= 1, "in [0, 1] (0: off)"),
    "model.input.max_size": (lambda v: v >= 1, "at least 1"),
}


FREEZE_MODES = ("none", "deform_only", "backbone", "trunk", "mask_only")
# key -> the values it may take; checked by validate_ranges with the key as the user writes it
# the signals a cluster sends before it kills a job (SIGKILL and SIGSTOP cannot be caught)
PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT")

_CHOICES: dict[str, tuple] = {
    "model.backbone.depth": (18, 34, 50, 101),
    "model.backbone.norm": ("frozen_bn", "bn", "gn"),
    "model.keypoint.loss": ("mse", "ce", "ce_soft"),
    "model.mask.norm": ("none", "gn"),
    "model.keypoint.norm": ("none", "gn"),
    "model.mask.trunk": ("shared", "own"),  # own: a second backbone + FPN that feeds the mask head alone
    "model.keypoint.decode": ("peak", "upsample"),
    "model.input.channel_order": ("rgb", "bgr"),
    "model.roi.head_rois": ("proposals", "gt_jitter"),
    "train.freeze": FREEZE_MODES,
    "train.finish_freeze": FREEZE_MODES,
    "train.optimizer": ("sgd", "adamw"),
    "train.nonfinite": ("stop", "skip"),
}


def _value(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate_ranges(cfg: Config) -> None:
    """Numbers that type-check but train nothing (a negative lr, ``--iters -5``, ``--batch-size 0``), and
    names outside their key's choices."""
    for key, (ok, what) in _RANGES.items():
        if not ok(value := _value(cfg, key)):
            raise ConfigError(f"{key}={value!r}: must be {what}")
    for key, choices in _CHOICES.items():
        if (value := _value(cfg, key)) not in choices:
            names = [str(c) for c in choices]
            raise ConfigError(f"{key}={value!r}; choose {', '.join(names[:-1])} or {names[-1]}")
    wrong = [s for s in cfg.train.preempt_signals if s not in PREEMPTION_SIGNALS]
    if wrong:
        raise ConfigError(f"train.preempt_signals={cfg.train.preempt_signals}: {wrong} cannot be caught for a clean "
                          f"stop; choose from {', '.join(PREEMPTION_SIGNALS)} (or [] for none)")


def validate(cfg: Config) -> None:
    """Cross-field checks that a type check cannot express."""
    validate_ranges(cfg)
    if isinstance(cfg.data.oks_sigmas, str):  # a named set -> its values (what config.yaml then records)
        from poseseg.keypoint_schema import named_sigmas

        try:
            cfg.data.oks_sigmas = named_sigmas(cfg.data.oks_sigmas)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    m = cfg.model
    unknown = [h for h in m.heads if h not in ("box", "mask", "keypoint")]
    if unknown:
        raise ConfigError(f"model.heads has unknown head(s) {unknown}; choose from box, mask, keypoint")
    if "box" not in m.heads:
        m.heads = ["box"] + list(m.heads)
    for name, stages in (("model.fpn.in_stages", m.fpn.in_stages), ("model.backbone.deform_stages", m.backbone.deform_stages)):
        if any(s not in (2, 3, 4, 5) for s in stages):
            raise ConfigError(f"{name}={stages}: stages are 2..5 (res2..res5)")
    if not m.fpn.in_stages or sorted(m.fpn.in_stages) != m.fpn.in_stages:
        raise ConfigError(f"model.fpn.in_stages={m.fpn.in_stages} must be a non-empty increasing list, e.g. [3, 4, 5]")
    if not m.input.pixel_scale > 0:
        raise ConfigError(f"model.input.pixel_scale={m.input.pixel_scale}; use 1 (mean/std for [0, 1] pixels) "
                          "or 255 (mean/std for 0..255 pixels)")
    if m.keypoint.heatmap_size % 4 != 0:
        raise ConfigError(f"model.keypoint.heatmap_size={m.keypoint.heatmap_size} must be a multiple of 4")
    bad_pool = [h for h in m.roi.deform_pool if h not in m.heads]
    if bad_pool:
        raise ConfigError(f"model.roi.deform_pool names {bad_pool}, which are not in model.heads={m.heads}")
    if m.num_classes < 2:
        raise ConfigError("model.num_classes counts the background too: use 2 for person-only")
    if cfg.train.time_limit_minutes < 0:
        raise ConfigError(f"train.time_limit_minutes={cfg.train.time_limit_minutes}; use 0 (off) or a positive number")
    _validate_schedule(cfg.train)
    if not cfg.train.offset_lr_multiplier >= 0:
        raise ConfigError(f"train.offset_lr_multiplier={cfg.train.offset_lr_multiplier}; use a number >= 0 "
                          "(0.1 is the usual choice for deformable offsets, 1 trains them like every other layer)")
    _validate_track(cfg.track)


def _validate_track(t: TrackConfig) -> None:
    for name in ("low_score", "match_similarity", "low_match_iou", "oks_weight"):
        if not 0.0 <= getattr(t, name) <= 1.0:
            raise ConfigError(f"track.{name}={getattr(t, name)}; use a number in [0, 1]")
    if t.min_hits < 1:
        raise ConfigError(f"track.min_hits={t.min_hits}; use 1 (an ID at the first match) or more")
    for name in ("max_lost_seconds", "smooth_min_cutoff", "smooth_d_cutoff"):
        if not getattr(t, name) > 0:
            raise ConfigError(f"track.{name}={getattr(t, name)}; use a positive number")
    if t.smooth_beta < 0:
        raise ConfigError(f"track.smooth_beta={t.smooth_beta}; use 0 (a fixed cutoff) or a positive number")
