"""Start from torchvision's COCO detectors: convert ``keypointrcnn_resnet50_fpn`` and
``maskrcnn_resnet50_fpn`` state dicts into a poseseg model's state dict.

    kp = torch.load("keypointrcnn_resnet50_fpn_coco.pth", weights_only=True)
    mk = torch.load("maskrcnn_resnet50_fpn_coco.pth", weights_only=True)
    report = poseseg.weights.load_torchvision(model, keypoint_state=kp, mask_state=mk)

The trunk, FPN, RPN and box head come from the keypoint model when given (else the mask model);
the mask head from the mask model. torchvision trained the two detectors apart, so their trunks
differ: with ``mask_trunk=True`` (a model built with ``model.mask.trunk=own``) the mask model's own
ResNet and FPN become the mask head's trunk, and every head reads the features it was trained on. A 91-class COCO box/mask predictor is cut down to
background + person. Our extra parts (offset maps, deformable offsets) keep their zero init.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from poseseg.weights.report import Conversion, ConversionReport, apply_conversion

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
_MASK_TRUNK_RULES = [(r"^backbone\.body\.", "mask_trunk.backbone."), (r"^backbone\.fpn\.", "mask_trunk.fpn.")]
# torchvision's ResNet-50 classifier (ImageNet checkpoints): the trunk is ours under backbone.
_CLASSIFIER_TRUNK = re.compile(r"^(conv1|bn1|layer[1-4])\.")


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


def convert_torchvision(*, keypoint_state: dict | None = None, mask_state: dict | None = None,
                        num_classes: int = 2, prefix: tuple[str, str] = ("keypoint model: ", "mask model: "),
                        mask_trunk: bool = False) -> Conversion:
    """Every source key either converted (with the key it came from) or skipped with the reason.
    ``mask_trunk``: the mask model's ResNet + FPN also go to ``mask_trunk.*`` (the mask head's own trunk)."""
    if keypoint_state is None and mask_state is None:
        raise ValueError("give keypoint_state, mask_state or both (torchvision state dicts)")
    conv = Conversion()
    if mask_state is not None:
        conv.notes.append(trunk_note(mask_trunk, keypoint_state is not None))
    for state, tag, is_trunk in ((keypoint_state, prefix[0], True), (mask_state, prefix[1], keypoint_state is None)):
        if state is None:
            continue
        for name, value in state.items():
            src = tag + name
            if name.endswith("num_batches_tracked"):
                conv.skip(src, "BatchNorm step counter (unused by frozen BN)")
                continue
            own = _rename(name, _MASK_TRUNK_RULES) if mask_trunk and state is mask_state else None
            if own is not None:
                conv.add(src, own, value)
            shared = _rename(name, _SHARED_RULES)
            if shared is not None:
                if is_trunk:
                    conv.add(src, shared, _select_classes(shared, value, num_classes))
                elif own is None:
                    conv.skip(src, "trunk, FPN, RPN and box head are taken from the keypoint model")
                continue
            new = _rename(name, _MASK_RULES) if state is mask_state else _keypoint_conv_rule(name)
            if new is None:
                conv.skip(src, "no counterpart in poseseg")
            else:
                conv.add(src, new, _select_classes(new, value, num_classes))
    return conv


def trunk_note(own_mask_trunk: bool, two_models: bool) -> str:
    """The report's line on which trunk each head reads."""
    if own_mask_trunk:
        return ("trunks: the box and keypoint heads read the keypoint model's trunk; the mask head reads the mask "
                "model's own ResNet + FPN (model.mask.trunk=own: a second trunk runs for the masks)")
    if two_models:
        return ("trunks: every head reads the keypoint model's trunk; the mask head was trained on the mask "
                "model's trunk, so its masks are off (build with model.mask.trunk=own)")
    return "trunks: one model, one trunk"


def from_torchvision(*, keypoint_state: dict | None = None, mask_state: dict | None = None,
                     num_classes: int = 2) -> dict[str, torch.Tensor]:
    """A poseseg state dict (possibly partial) from torchvision Keypoint/Mask R-CNN state dicts."""
    return convert_torchvision(keypoint_state=keypoint_state, mask_state=mask_state, num_classes=num_classes).tensors


def convert_torchvision_classifier(state: dict, *, source: str = "") -> Conversion:
    """torchvision ``resnet*`` ImageNet classifier -> our backbone (the fc layer is skipped)."""
    conv = Conversion()
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            conv.skip(source + name, "BatchNorm step counter (unused by frozen BN)")
        elif _CLASSIFIER_TRUNK.match(name):
            conv.add(source + name, "backbone." + name, value)
        else:
            conv.skip(source + name, "ImageNet classifier layer (detection needs only the trunk)")
    return conv


# Parts of our parameter and buffer names that torchvision never has; they keep their (zero / fresh)
# initialisation: deformable convs' offset_conv, the keypoint head's offset_deconv, deformable RoI
# pooling's offset_fc, and trainable BatchNorm's step counter.
OURS_ONLY = ("offset_conv", "offset_deconv", "offset_fc", "num_batches_tracked", "score_calibration")
_OURS_ONLY = re.compile("|".join(OURS_ONLY))


def load_torchvision(model: nn.Module, *, keypoint_state: dict | None = None, mask_state: dict | None = None,
                     strict: bool = True) -> ConversionReport:
    """Load converted torchvision weights into ``model``; with ``strict``, every part the model
    shares with torchvision's detectors must be covered and every converted tensor must fit."""
    conv = convert_torchvision(keypoint_state=keypoint_state, mask_state=mask_state,
                               num_classes=model.box_head.cls_score.out_features,
                               mask_trunk=getattr(model, "mask_trunk", None) is not None)
    report = apply_conversion(model, conv, source="torchvision weights")
    if strict:
        needed = [n for n in report.left_at_init if not _OURS_ONLY.search(n)
                  and not (n.startswith(("mask_head", "mask_trunk")) and mask_state is None)
                  and not (n.startswith("keypoint_head") and keypoint_state is None)]
        if needed or report.unexpected:
            unused = [ours for _, ours in report.unexpected]
            raise ValueError(f"torchvision weights do not cover {needed[:5]}{'...' if len(needed) > 5 else ''} "
                             f"and have unused {unused[:5]}; pass strict=False to load what fits")
    return report
