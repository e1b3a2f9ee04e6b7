"""Detectron2 and caffe2 (Detectron / MSRA) weight names -> ours.

Detectron2 model-zoo ``.pkl`` files (e.g. ``keypoint_rcnn_R_50_FPN_3x``, ``mask_rcnn_R_50_FPN_3x``) hold
``{"model": {name: numpy array}, "__author__": ...}`` in Detectron2's module names
(``backbone.bottom_up.res2.0.conv1.norm.weight``, ``backbone.fpn_lateral2.weight``,
``proposal_generator.rpn_head.objectness_logits.weight``, ``roi_heads.box_head.fc1.weight``,
``roi_heads.keypoint_head.conv_fcn1.weight``, ...). MSRA's caffe2 ImageNet ``R-50.pkl`` holds blobs named
``conv1_w``, ``res_conv1_bn_s``, ``res2_0_branch2a_w``, ``res2_0_branch1_bn_b``, ... with each BatchNorm
already folded into a per-channel scale ``_s`` and shift ``_b`` (an AffineChannel).

Detectron2's class layout differs from ours: ``cls_score`` has the background LAST, ``bbox_pred`` and the
mask ``predictor`` have no background rows. COCO's person is Detectron2's contiguous class 0.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np
import torch

from poseseg.weights.report import Conversion

FROZEN_BN_EPS = 1e-5  # torchvision's FrozenBatchNorm2d, which our frozen_bn uses
PERSON = 0  # COCO person in Detectron2's contiguous class ids

# Detectron2 name -> ours, first match wins: (pattern, replacement, part). A replacement is a ``Match.expand``
# template, or a function of the match where an index shifts. part: "trunk" (ResNet, FPN, RPN, box head: taken
# from the keypoint model when two models are merged), "head" (mask or keypoint head) or "config".
Rule = tuple[re.Pattern, str | Callable[[re.Match], str], str]
_PARAM = r"(weight|bias|running_mean|running_var)"
# the ResNet under ``backbone.bottom_up.`` (and in an ImageNet file converted from caffe2): our backbone.*
_D2_TRUNK_RULES: list[Rule] = [
    (re.compile(rf"^stem\.conv1\.norm\.{_PARAM}$"), r"backbone.bn1.\1", "trunk"),
    (re.compile(rf"^stem\.conv1\.{_PARAM}$"), r"backbone.conv1.\1", "trunk"),
    (re.compile(rf"^res([2-5])\.(\d+)\.shortcut\.norm\.{_PARAM}$"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}", "trunk"),
    (re.compile(rf"^res([2-5])\.(\d+)\.shortcut\.{_PARAM}$"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.0.{m[3]}", "trunk"),
    (re.compile(rf"^res([2-5])\.(\d+)\.conv([123])\.norm\.{_PARAM}$"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}", "trunk"),
    (re.compile(rf"^res([2-5])\.(\d+)\.conv([123])\.{_PARAM}$"),
     lambda m: f"backbone.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.{m[4]}", "trunk"),
]
# everything after the trunk and the FPN (whose names depend on model.fpn.in_stages: _fpn_name)
_D2_RULES: list[Rule] = [
    (re.compile(r"^proposal_generator\.rpn_head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1", "trunk"),
    (re.compile(r"^proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)$"), r"rpn.head.cls_logits.\1",
     "trunk"),
    (re.compile(r"^proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)$"), r"rpn.head.bbox_pred.\1", "trunk"),
    (re.compile(r"^roi_heads\.box_head\.fc([12])\.(weight|bias)$"), lambda m: f"box_head.fc{5 + int(m[1])}.{m[2]}",
     "trunk"),
    (re.compile(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$"), r"box_head.\1.\2", "trunk"),
    (re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"mask_head.tower.convs.{int(m[1]) - 1}.{m[2]}", "head"),
    (re.compile(r"^roi_heads\.mask_head\.(deconv|predictor)\.(weight|bias)$"), r"mask_head.\1.\2", "head"),
    (re.compile(r"^roi_heads\.keypoint_head\.conv_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"keypoint_head.tower.convs.{int(m[1]) - 1}.{m[2]}", "head"),
    (re.compile(r"^roi_heads\.keypoint_head\.score_lowres\.(weight|bias)$"), r"keypoint_head.heatmap_deconv.\1",
     "head"),
    (re.compile(r"^(pixel_mean|pixel_std)$"), r"model.input.\1", "config"),
]
_D2_FPN = re.compile(r"^backbone\.fpn_(lateral|output)(\d)\.(weight|bias)$")
_C2_BLOCK = re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_C2_STEM = re.compile(r"^(conv1_w|res_conv1_bn_(s|b|rm|riv))$")
_C2_SUFFIX = {"w": "weight", "bn_s": "norm.weight", "bn_b": "norm.bias", "bn_rm": "norm.running_mean",
              "bn_riv": "norm.running_var"}
_C2_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}


def to_tensor(value, key: str) -> torch.Tensor:
    """A numpy array (or tensor) from a weights file as a float tensor; anything else is an error naming the key."""
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise ValueError(f"weights key '{key}' holds {type(value).__name__}"
                         f"{'' if not isinstance(value, np.ndarray) else ' of dtype ' + str(value.dtype)}, "
                         "not a numeric array")
    return torch.from_numpy(np.ascontiguousarray(value)).float()


def _rename(name: str, rules: list[Rule]) -> tuple[str, str] | None:
    """(our key, part) of the first rule that matches ``name``; None when none does."""
    for pattern, replacement, part in rules:
        m = pattern.match(name)
        if m:
            return (m.expand(replacement) if isinstance(replacement, str) else replacement(m)), part
    return None


def d2_trunk_to_ours(name: str) -> str | None:
    """Detectron2 ResNet names (``stem.conv1.norm.weight``, ``res3.0.shortcut.weight``) -> ours (``backbone.*``)."""
    found = _rename(name, _D2_TRUNK_RULES)
    return found[0] if found else None


def c2_to_d2_trunk(name: str) -> str | None:
    """caffe2 blob names (``res2_0_branch2a_bn_s``) -> Detectron2 ResNet names (``res2.0.conv1.norm.weight``)."""
    m = _C2_STEM.match(name)
    if m:
        return "stem.conv1.weight" if name == "conv1_w" else "stem.conv1." + _C2_SUFFIX["bn_" + m.group(2)]
    m = _C2_BLOCK.match(name)
    if not m:
        return None
    stage, block, branch, suffix = m.groups()
    return f"res{stage}.{block}.{_C2_BRANCH[branch]}.{_C2_SUFFIX[suffix]}"


def convert_caffe2_resnet(blobs: dict, *, source: str = "") -> Conversion:
    """MSRA / caffe2 ImageNet ResNet blobs -> our backbone. AffineChannel norms (scale and shift only)
    become frozen BN with mean 0 and variance 1 - eps, so the frozen BN computes exactly x * s + b."""
    conv = Conversion()
    norms_with_stats: set[str] = set()
    for name, value in blobs.items():
        src = source + name
        if name.endswith("_momentum"):
            conv.skip(src, "SGD momentum buffer (optimizer state)")
            continue
        if name.startswith("fc1000") or name.startswith("pred_"):
            conv.skip(src, "ImageNet classifier layer (detection needs only the trunk)")
            continue
        d2 = c2_to_d2_trunk(name)
        ours = d2_trunk_to_ours(d2) if d2 else None
        if ours is None:
            conv.skip(src, "no counterpart in a ResNet trunk")
            continue
        conv.add(src, ours, to_tensor(value, src))
        if ours.endswith(("running_mean", "running_var")):
            norms_with_stats.add(ours.rsplit(".", 1)[0])
    for ours in [k for k in conv.tensors if k.endswith(".weight") and _is_norm(k)]:
        norm = ours.rsplit(".", 1)[0]
        if norm in norms_with_stats:
            continue
        channels = conv.tensors[ours].shape[0]
        origin = f"{conv.sources[ours].rsplit('_', 1)[0]}_* (caffe2 AffineChannel: no statistics)"
        conv.add(origin + " -> mean 0", norm + ".running_mean", torch.zeros(channels))
        conv.add(origin + " -> variance 1 - eps", norm + ".running_var", torch.full((channels,), 1.0 - FROZEN_BN_EPS))
    return conv


def _is_norm(key: str) -> bool:
    return bool(re.search(r"\.(bn\d|downsample\.1)\.weight$", key))


def _person_rows(value: torch.Tensor, *, width: int, background: str) -> torch.Tensor:
    """Detectron2 predictor rows -> ours [background, person]; ``background`` is "last" (cls_score) or
    "none" (bbox_pred, mask predictor: zeros, never read at inference, a fresh start when fine-tuning)."""
    person = value[PERSON * width:(PERSON + 1) * width]
    if background == "last":
        bg = value[-width:]
    else:
        bg = torch.zeros_like(person)
    return torch.cat([bg, person])


def convert_detectron2(model_state: dict, *, fpn_stages: list[int], with_trunk: bool = True,
                       source: str = "") -> Conversion:
    """A Detectron2 model-zoo ``model`` dict -> ours; without ``with_trunk`` only its heads (the trunk, FPN,
    RPN and box head then come from another file, e.g. the keypoint model when merging with a mask model)."""
    conv = Conversion()
    for name, value in model_state.items():
        src = source + name
        ours, part = _d2_name(name, fpn_stages)
        if ours is None:
            conv.skip(src, part)
            continue
        if part == "trunk" and not with_trunk:
            conv.skip(src, "trunk, FPN, RPN and box head are taken from the keypoint model")
            continue
        if part == "config":
            conv.config_values.append((src, ours, to_tensor(value, src).flatten().tolist()))
            continue
        tensor = to_tensor(value, src)
        if ours == "box_head.cls_score.weight" or ours == "box_head.cls_score.bias":
            tensor = _person_rows(tensor, width=1, background="last")
        elif ours.startswith("box_head.bbox_pred."):
            tensor = _person_rows(tensor, width=4, background="none")
        elif ours.startswith("mask_head.predictor."):
            tensor = _person_rows(tensor, width=1, background="none")
        conv.add(src, ours, tensor)
    return conv


def _d2_name(name: str, fpn_stages: list[int]) -> tuple[str | None, str]:
    """(our key, part) or (None, why it is skipped); part is trunk, head or config."""
    if name.startswith("backbone.bottom_up."):
        ours = d2_trunk_to_ours(name[len("backbone.bottom_up."):])
        return (ours, "trunk") if ours else (None, "no counterpart in our ResNet")
    m = _D2_FPN.match(name)
    if m:
        return _fpn_name(m, fpn_stages)
    return _rename(name, _D2_RULES) or (None, "no counterpart in poseseg")


def _fpn_name(m: re.Match, fpn_stages: list[int]) -> tuple[str | None, str]:
    """``backbone.fpn_{lateral,output}{stage}.*`` -> our FPN block of that stage, if the model has it."""
    kind, stage, param = m[1], int(m[2]), m[3]
    if stage not in fpn_stages:
        return None, f"FPN level {stage} is not in model.fpn.in_stages={fpn_stages}"
    blocks = "inner_blocks" if kind == "lateral" else "layer_blocks"
    return f"fpn.{blocks}.{fpn_stages.index(stage)}.0.{param}", "trunk"
