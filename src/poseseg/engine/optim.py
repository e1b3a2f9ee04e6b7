"""The optimizer and which parameters train.

The learning rate scaled to the total batch, the parameter groups (no weight decay on norms and
biases; the deformable layers' sampling-offset branches at ``offset_lr_multiplier`` times the rate)
and the ``train.freeze`` modes. The learning-rate schedule is in ``engine/schedule.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from poseseg.config import TrainConfig


def scaled_lr(train: TrainConfig, world_size: int) -> float:
    """Linear scaling rule: ``base_lr`` is for ``lr_reference_batch`` images in total per step."""
    return train.base_lr * train.batch_size * world_size / train.lr_reference_batch


# parts of the model each freeze mode holds fixed (deform_only: the backbone but its deformable convs)
FREEZE_MODES = {
    "none": (),
    "deform_only": ("backbone",),
    "backbone": ("backbone", "fpn"),
    "trunk": ("backbone", "fpn", "rpn", "box_pooler", "box_head"),  # trains the mask and keypoint heads only
    # trains the mask head only (and the FPN's finer level made for it, model.mask.fine_level)
    "mask_only": ("backbone", "fpn", "rpn", "box_pooler", "box_head", "keypoint_pooler", "keypoint_head"),
}


def apply_freeze(model: nn.Module, mode: str) -> list[str]:
    """Stop training the parts ``mode`` names; returns the frozen parameter names.

    ``deform_only`` trains only the backbone's deformable convolutions (and their offset branches)
    plus everything after the backbone: the paper's "for the refinement backbone we only train the
    part which uses deformable convolution". ``backbone`` and ``trunk`` also keep the batch norms
    of those parts in eval mode (they keep their running statistics), e.g. for a finishing phase
    that trains the mask and keypoint heads on fixed features.
    """
    if mode not in FREEZE_MODES:
        raise ValueError(f"train.freeze={mode!r}; choose one of {', '.join(FREEZE_MODES)}")
    keep_training: set[int] = set()
    if mode == "deform_only":
        from poseseg.ops import DeformConv2d

        keep_training = {id(p) for m in model.backbone.modules() if isinstance(m, DeformConv2d)
                         for p in m.parameters()}
        if not keep_training:
            raise ValueError("train.freeze=deform_only but the backbone has no deformable convs; "
                             "set model.backbone.deform_stages, e.g. [3, 4, 5]")
    elif mode == "mask_only":
        if getattr(model, "mask_head", None) is None:
            raise ValueError("train.freeze=mask_only but the model has no mask head (model.heads)")
        keep_training = {id(p) for name, p in model.fpn.named_parameters() if name.startswith("fine_")}
    frozen = []
    for part in FREEZE_MODES[mode]:
        if getattr(model, part, None) is None:  # e.g. no keypoint head
            continue
        for name, p in getattr(model, part).named_parameters():
            if id(p) not in keep_training and p.requires_grad:
                p.requires_grad_(False)
                frozen.append(f"{part}.{name}")
        if mode != "deform_only":
            model.frozen_parts.add(part)
    model.train(model.training)  # the frozen parts' batch norms switch to eval mode now
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
