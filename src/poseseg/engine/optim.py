"""Optimizer, learning-rate schedule and which parameters train."""
from __future__ import annotations

import torch
from torch import nn

from poseseg.config import TrainConfig


def scaled_lr(train: TrainConfig, world_size: int) -> float:
    """Linear scaling rule: ``base_lr`` is for ``lr_reference_batch`` images in total per step."""
    return train.base_lr * train.batch_size * world_size / train.lr_reference_batch


def apply_freeze(model: nn.Module, mode: str) -> list[str]:
    """``deform_only``: train only the backbone's deformable convolutions (and their offset
    branches) plus everything after the backbone — the paper's "for the refinement backbone we
    only train the part which uses deformable convolution". Returns the frozen parameter names."""
    if mode == "none":
        return []
    if mode != "deform_only":
        raise ValueError(f"train.freeze={mode!r}; choose none or deform_only")
    from poseseg.ops import DeformConv2d

    deform_params = {id(p) for m in model.backbone.modules() if isinstance(m, DeformConv2d) for p in m.parameters()}
    if not deform_params:
        raise ValueError("train.freeze=deform_only but the backbone has no deformable convs; "
                         "set model.backbone.deform_stages, e.g. [3, 4, 5]")
    frozen = []
    for name, p in model.backbone.named_parameters():
        if id(p) not in deform_params and p.requires_grad:
            p.requires_grad_(False)
            frozen.append(f"backbone.{name}")
    return frozen


def sampling_offset_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The branches that predict where deformable layers sample (conv offsets and modulation,
    RoI-bin offsets); not the keypoint head's heatmap offsets, which are an output."""
    from poseseg.modeling.deform_pooler import DeformRoIPooler
    from poseseg.ops import DeformConv2d

    params = []
    for module in model.modules():
        if isinstance(module, DeformConv2d):
            params += list(module.offset_conv.parameters())
        elif isinstance(module, DeformRoIPooler):
            params += list(module.offset_fc.parameters())
    return params


def build_optimizer(model: nn.Module, train: TrainConfig, world_size: int) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; no weight decay on norm layers and biases; the sampling-offset
    branches at ``offset_lr_multiplier`` times the learning rate."""
    lr = scaled_lr(train, world_size)
    offsets = {id(p) for p in sampling_offset_parameters(model)}
    by_kind: dict[tuple[bool, bool], list[nn.Parameter]] = {}  # (no weight decay, offset branch) -> params
    for p in model.parameters():
        if p.requires_grad:
            by_kind.setdefault((p.ndim <= 1, id(p) in offsets), []).append(p)
    # sorted: decayed first, as before offsets had a group, so older optimizer states still load
    groups = [{"params": params, "weight_decay": 0.0 if no_decay else train.weight_decay,
               "lr": lr * (train.offset_lr_multiplier if is_offset else 1.0)}
              for (no_decay, is_offset), params in sorted(by_kind.items())]
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=train.momentum)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"train.optimizer={train.optimizer!r}; choose sgd or adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ``warmup_factor``, then ÷(1/gamma) at each of ``lr_steps``."""
    steps = sorted(train.lr_steps)

    def factor(it: int) -> float:
        f = train.lr_gamma ** sum(it >= s for s in steps)
        if it < train.warmup_iters:
            alpha = it / train.warmup_iters
            f *= train.warmup_factor * (1 - alpha) + alpha
        return f

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
