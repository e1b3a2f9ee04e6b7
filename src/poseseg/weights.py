"""Start from torchvision's COCO detectors: convert ``keypointrcnn_resnet50_fpn`` and
``maskrcnn_resnet50_fpn`` state dicts into a poseseg model's state dict.

    kp = torch.load("keypointrcnn_resnet50_fpn_coco.pth", weights_only=True)
    mk = torch.load("maskrcnn_resnet50_fpn_coco.pth", weights_only=True)
    report = poseseg.weights.load_torchvision(model, keypoint_state=kp, mask_state=mk)

The trunk, FPN, RPN and box head come from the keypoint model when given (else the mask model);
the mask head from the mask model. A 91-class COCO box/mask predictor is cut down to
background + person. Our extra parts (offset maps, deformable offsets) keep their zero init.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

COCO_PERSON = 1  # class index of "person" in torchvision's 91-class COCO models

# torchvision prefix -> ours, for the parts shared by both detectors
_SHARED_RULES = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.", "fpn."),
    (r"^rpn\.head\.", "rpn.head."),
    (r"^roi_heads\.box_head\.(fc6|fc7)\.", r"box_head.\1."),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.", r"box_head.\1."),
]
_MASK_RULES = [
    (r"^roi_heads\.mask_head\.(\d+)\.0\.", r"mask_head.tower.convs.\1."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "mask_head.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "mask_head.predictor."),
]


def _keypoint_conv_rule(name: str) -> str | None:
    m = re.match(r"^roi_heads\.keypoint_head\.(\d+)\.(weight|bias)$", name)
    if m:  # torchvision interleaves conv and ReLU: conv i sits at index 2 * i
        return f"keypoint_head.tower.convs.{int(m.group(1)) // 2}.{m.group(2)}"
    if name.startswith("roi_heads.keypoint_predictor.kps_score_lowres."):
        return name.replace("roi_heads.keypoint_predictor.kps_score_lowres.", "keypoint_head.heatmap_deconv.")
    return None


def _rename(name: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, repl in rules:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def _select_classes(name: str, value: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cut a 91-class COCO predictor down to [background, person] when our model has 2 classes."""
    per_class = {"box_head.cls_score": 1, "box_head.bbox_pred": 4, "mask_head.predictor": 1}
    for prefix, width in per_class.items():
        if name.startswith(prefix) and value.shape[0] == 91 * width and num_classes == 2:
            rows = torch.cat([torch.arange(width), COCO_PERSON * width + torch.arange(width)])
            return value[rows]
    return value


def from_torchvision(*, keypoint_state: dict | None = None, mask_state: dict | None = None,
                     num_classes: int = 2) -> dict[str, torch.Tensor]:
    """A poseseg state dict (possibly partial) from torchvision Keypoint/Mask R-CNN state dicts."""
    if keypoint_state is None and mask_state is None:
        raise ValueError("give keypoint_state, mask_state or both (torchvision state dicts)")
    out: dict[str, torch.Tensor] = {}
    trunk_source = keypoint_state if keypoint_state is not None else mask_state
    for name, value in trunk_source.items():
        new = _rename(name, _SHARED_RULES)
        if new is not None:
            out[new] = _select_classes(new, value, num_classes)
    if mask_state is not None:
        for name, value in mask_state.items():
            new = _rename(name, _MASK_RULES)
            if new is not None:
                out[new] = _select_classes(new, value, num_classes)
    if keypoint_state is not None:
        for name, value in keypoint_state.items():
            new = _keypoint_conv_rule(name)
            if new is not None:
                out[new] = value
    return out


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ours, kept at their initial values
    unexpected: list[str] = field(default_factory=list)  # converted but absent from our model


# Our parameters torchvision never has: they keep their (zero / fresh) initialisation.
_OURS_ONLY = re.compile(r"(offset_conv|offset_deconv|num_batches_tracked|deform_offset)")


def load_torchvision(model: nn.Module, *, keypoint_state: dict | None = None, mask_state: dict | None = None,
                     strict: bool = True) -> LoadReport:
    """Load converted torchvision weights into ``model``; with ``strict``, every part the model
    shares with torchvision's detectors must be covered and every converted tensor must fit."""
    state = from_torchvision(keypoint_state=keypoint_state, mask_state=mask_state,
                             num_classes=model.box_head.cls_score.out_features)
    own = model.state_dict()
    report = LoadReport()
    for name, value in state.items():
        if name not in own:
            report.unexpected.append(name)
        elif own[name].shape != value.shape:
            raise ValueError(f"torchvision tensor for '{name}' has shape {tuple(value.shape)}, our model "
                             f"expects {tuple(own[name].shape)}; build the model with a matching config "
                             "(ResNet-50, FPN [2, 3, 4, 5] with 256 channels, 1024-d box head, 4x256 mask head, "
                             "8x512 keypoint head)")
        else:
            report.loaded.append(name)
    report.missing = [n for n in own if n not in state]
    model.load_state_dict({n: state[n] for n in report.loaded}, strict=False)
    if strict:
        needed = [n for n in report.missing if not _OURS_ONLY.search(n)
                  and not (n.startswith("mask_head") and mask_state is None)
                  and not (n.startswith("keypoint_head") and keypoint_state is None)]
        if needed or report.unexpected:
            raise ValueError(f"torchvision weights do not cover {needed[:5]}{'...' if len(needed) > 5 else ''} "
                             f"and have unused {report.unexpected[:5]}; pass strict=False to load what fits")
    return report
