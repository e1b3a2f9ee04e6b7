"""Weight files -> a normal poseseg checkpoint (model, config, keypoint schema, conversion report).

    poseseg convert-weights keypointrcnn_resnet50_fpn_coco-fc266e95.pth maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --out coco.pt
    poseseg convert-weights model_final_a6e10b.pkl model_final_f10217.pkl --out d2.pt     # Detectron2 zoo
    poseseg convert-weights R-50.pkl --out r50.pt --config paper_rb                       # MSRA ImageNet trunk

Each file's kind is recognised from its keys. Whatever the model needs to compute what the source
computed (BGR input in 0..255 with the source's mean/std, stride in the 1x1 conv, frozen BN) is set in
the config saved with the weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from poseseg.config import Config, apply_overrides, load_config, set_key, validate
from poseseg.keypoint_schema import coco_person_schema
from poseseg.weights.detectron2 import convert_caffe2_resnet, convert_detectron2
from poseseg.weights.report import Conversion, ConversionReport, apply_conversion
from poseseg.weights.torchvision import convert_torchvision, convert_torchvision_classifier, load_torchvision

# The Mask R-CNN keypoint decoding the torchvision / Detectron2 heads were trained for; offsets start at zero.
COCO_DETECTOR = {"model.keypoint.loss": "ce", "model.keypoint.decode": "upsample"}
# MSRA's caffe2 ResNets (and every Detectron2 R-50/101 model-zoo model built on them)
MSRA_INPUT = {"model.input.channel_order": "bgr", "model.input.pixel_scale": 255.0,
              "model.input.pixel_mean": [103.53, 116.28, 123.675], "model.input.pixel_std": [1.0, 1.0, 1.0],
              "model.backbone.stride_in_1x1": True, "model.backbone.norm": "frozen_bn"}
# ... and what Detectron2's FPN detectors add to them
DETECTRON2_HEADS = {"model.roi.aligned": True, "model.rpn.round_anchors": False}
TORCHVISION_INPUT = {"model.backbone.norm": "frozen_bn"}  # RGB in [0, 1], ImageNet mean/std: the defaults


@dataclass
class SourceCheckpoint:
    """A weights file given to convert-weights: where it came from, what it was recognised as, its tensors."""

    path: Path
    kind: str  # torchvision-keypoint, torchvision-mask, torchvision-classifier, detectron2-keypoint,
    #            detectron2-mask, caffe2-resnet
    state: dict


def _payload(model, cfg: Config, report: ConversionReport, sources: list[str]) -> dict:
    return {"model": model.state_dict(), "config": cfg.to_dict(), "keypoint_schema": coco_person_schema().to_dict(),
            "conversion_report": report.to_dict(), "converted_from": sources}


def _config(preset: str | None, settings: dict) -> Config:
    cfg = load_config(preset or "paper_regular")
    for key, value in settings.items():
        set_key(cfg, key, value, where="weights conversion")
    return cfg


def torchvision_coco_checkpoint(*, keypoint_state: dict, mask_state: dict, preset: str | None = None,
                                sources: list[str] | None = None) -> dict:
    """torchvision's COCO keypoint + mask detectors merged into one model (named weights torchvision-coco)."""
    from poseseg.modeling.model import build_model

    cfg = _config(preset, {**TORCHVISION_INPUT, **COCO_DETECTOR})
    model = build_model(cfg)
    report = load_torchvision(model, keypoint_state=keypoint_state, mask_state=mask_state)
    return _payload(model, cfg, report, sources or ["torchvision keypoint model", "torchvision mask model"])


def imagenet_checkpoint(state: dict, *, kind: str, preset: str | None = None, source: str = "") -> dict:
    """An ImageNet ResNet (torchvision classifier or MSRA caffe2 blobs) as our trunk; heads at their init."""
    recognised = "torchvision-classifier" if kind == "torchvision" else "caffe2-resnet"
    file = SourceCheckpoint(Path(source or kind), recognised, state)
    return checkpoint_from_sources([file], preset=preset)


def read_source(path: str | Path) -> SourceCheckpoint:
    """Load one weights file (``.pkl`` through the safe unpickler, ``.pt/.pth`` with weights_only=True)
    and recognise what it is from its keys."""
    from poseseg.weights.safe_pickle import safe_load_pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".pkl":
        data = safe_load_pickle(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a dict in the pickle, found {type(data).__name__}")
        if isinstance(data.get("model"), dict):
            state = data["model"]  # Detectron2 model zoo: {"model": {...}, "__author__": ...}
        elif isinstance(data.get("blobs"), dict):
            state = data["blobs"]  # caffe2 Detectron (v1) detection model
        else:
            state = data  # caffe2 ImageNet model: the blobs themselves
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot load {path} with weights_only=True ({type(e).__name__}: {e}); a weights "
                             "file must hold only tensors") from None
        if isinstance(state, dict) and isinstance(state.get("model"), dict) and "config" in state:
            raise ValueError(f"{path} is already a poseseg checkpoint: use it directly (--weights {path})")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of named tensors, found {type(state).__name__}")
    return SourceCheckpoint(path, _recognise(path, state), state)


def _recognise(path: Path, state: dict) -> str:
    keys = set(state)
    if any(k.startswith("roi_heads.keypoint_predictor.") for k in keys):
        return "torchvision-keypoint"
    if any(k.startswith("roi_heads.mask_predictor.") for k in keys):
        return "torchvision-mask"
    if "layer1.0.conv1.weight" in keys and "conv1.weight" in keys:
        return "torchvision-classifier"
    if any(k.startswith("roi_heads.keypoint_head.conv_fcn") for k in keys):
        return "detectron2-keypoint"
    if any(k.startswith("roi_heads.mask_head.mask_fcn") for k in keys):
        return "detectron2-mask"
    if "conv1_w" in keys and "res2_0_branch2a_w" in keys:
        if any(k.startswith(("fpn_", "conv_rpn", "rpn_", "cls_score", "kps_", "mask_fcn")) for k in keys):
            raise ValueError(f"{path} is a caffe2 Detectron (v1) detection model; only its ImageNet backbones "
                             "(R-50.pkl, R-101.pkl) and Detectron2 model-zoo files are supported")
        return "caffe2-resnet"
    sample = ", ".join(sorted(keys)[:5])
    raise ValueError(f"{path}: not a torchvision, Detectron2 or caffe2 weights file I know (first keys: {sample}); "
                     "supported: torchvision Keypoint/Mask R-CNN and resnet .pth, Detectron2 model-zoo .pkl, "
                     "MSRA R-50/R-101 .pkl")


def _conversion(file: SourceCheckpoint, cfg: Config, *, with_trunk: bool) -> Conversion:
    tag = f"{file.path.name}: "
    if file.kind == "torchvision-classifier":
        return convert_torchvision_classifier(file.state, source=tag)
    if file.kind == "caffe2-resnet":
        return convert_caffe2_resnet(file.state, source=tag)
    if file.kind.startswith("torchvision"):
        if not with_trunk:  # the trunk comes from the keypoint file: only this (mask) file's mask head
            return convert_torchvision(keypoint_state={}, mask_state=file.state, prefix=("", tag),
                                       num_classes=cfg.model.num_classes)
        role = file.kind.split("-")[1]  # keypoint or mask
        return convert_torchvision(**{f"{role}_state": file.state}, prefix=(tag, tag),
                                   num_classes=cfg.model.num_classes)
    if cfg.model.num_classes != 2:
        raise ValueError("Detectron2 conversion keeps the person class only: use model.num_classes=2")
    return convert_detectron2(file.state, fpn_stages=cfg.model.fpn.in_stages, with_trunk=with_trunk, source=tag)


def checkpoint_from_sources(files: list[SourceCheckpoint], *, preset: str | None = None,
                            overrides: list[str] | None = None) -> dict:
    """Convert and merge: the trunk from the keypoint model (else the first file), heads from each file."""
    from poseseg.modeling.model import build_model

    kinds = [f.kind for f in files]
    families = {k.split("-")[0] for k in kinds}
    if len(families) > 1:
        raise ValueError(f"cannot merge {', '.join(f'{f.path.name} ({f.kind})' for f in files)}: convert files "
                         "of one family (torchvision, Detectron2 or caffe2) together")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"two files of the same kind ({', '.join(kinds)}): give one keypoint and/or one mask model")
    backbone_only = kinds[0] in ("torchvision-classifier", "caffe2-resnet")
    if backbone_only and len(files) > 1:
        raise ValueError("an ImageNet backbone converts on its own: give one file")
    family = kinds[0].split("-")[0]
    settings = dict(MSRA_INPUT if family in ("detectron2", "caffe2") else TORCHVISION_INPUT)
    if not backbone_only:
        settings.update(COCO_DETECTOR)
    if family == "detectron2":
        settings.update(DETECTRON2_HEADS)
    cfg = _config(preset, settings)
    apply_overrides(cfg, overrides)
    trunk_file = next((f for f in files if f.kind.endswith("keypoint")), files[0])
    conv = Conversion()
    for f in files:
        conv.merge(_conversion(f, cfg, with_trunk=f is trunk_file))
    for _src, key, value in conv.config_values:
        set_key(cfg, key, value, where="weights conversion")
    validate(cfg)
    model = build_model(cfg)
    report = apply_conversion(model, conv, source=", ".join(str(f.path) for f in files))
    if not report.used:
        raise ValueError(f"nothing in {', '.join(str(f.path) for f in files)} fits the model of this config")
    return _payload(model, cfg, report, [str(f.path) for f in files])


def convert_files(sources: list[str | Path], out: str | Path, *, preset: str | None = None,
                  overrides: list[str] | None = None) -> ConversionReport:
    """``poseseg convert-weights``: write ``out`` (a poseseg checkpoint) and ``out``.report.txt."""
    from poseseg.weights.checkpoint_file import save_checkpoint

    payload = checkpoint_from_sources([read_source(s) for s in sources], preset=preset, overrides=overrides)
    out = Path(out)
    save_checkpoint(out, payload)
    report = ConversionReport.from_dict(payload["conversion_report"])
    out.with_name(out.name + ".report.txt").write_text(report.format())
    return report
