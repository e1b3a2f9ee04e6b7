"""Named weights (``torchvision-coco``, ...): torchvision's weight enums, ``torch.hub``'s cache and download
(hash-checked, progress bar), converted once into a poseseg checkpoint that is cached next to its sources.

    path = resolve_named("torchvision-coco")   # downloads on first use, then instant
    poseseg.Predictor("torchvision-coco")      # the same, through poseseg.weights.load.load_model

``POSESEG_OFFLINE=1`` never downloads: the files must already be in the hub cache.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

CONVERTER_VERSION = 1  # bump when a conversion changes: cached checkpoints are then rebuilt
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's convention: <name>-<sha256 prefix>.pth


@dataclass(frozen=True)
class HubFile:
    """One downloadable file a named weight is made of: where torchvision publishes it and what it reports."""

    role: str  # e.g. "keypoint", "mask", "backbone"
    weights_enum: str  # e.g. "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1"

    def enum_member(self):
        import torchvision.models as tvm

        enum_name, member = self.weights_enum.split(".")
        return getattr(getattr(tvm, enum_name, None) or getattr(tvm.detection, enum_name), member)

    @property
    def url(self) -> str:
        return self.enum_member().url

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def size_mb(self) -> float:
        return float(self.enum_member().meta.get("_file_size", 0.0))

    @property
    def metrics(self) -> dict:
        return dict(self.enum_member().meta.get("_metrics", {}))

    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name


@dataclass(frozen=True)
class NamedWeights:
    name: str
    description: str
    sources: tuple[HubFile, ...]
    build: Callable[[dict[str, dict]], dict]  # {role: state dict} -> poseseg checkpoint payload


def _build_torchvision_coco(states: dict[str, dict]) -> dict:
    from poseseg.weights.convert import torchvision_coco_checkpoint

    return torchvision_coco_checkpoint(keypoint_state=states["keypoint"], mask_state=states["mask"])


def _build_torchvision_resnet50(states: dict[str, dict]) -> dict:
    from poseseg.weights.convert import imagenet_checkpoint

    return imagenet_checkpoint(states["backbone"], kind="torchvision")


NAMED: dict[str, NamedWeights] = {w.name: w for w in (
    NamedWeights("torchvision-coco",
                 "torchvision's COCO Keypoint R-CNN + Mask R-CNN (ResNet-50-FPN) merged into one paper_regular "
                 "model: trunk, RPN, box and keypoint heads from the keypoint model, mask head from the mask model",
                 (HubFile("keypoint", "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1"),
                  HubFile("mask", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1")),
                 _build_torchvision_coco),
    NamedWeights("torchvision-resnet50-imagenet",
                 "torchvision's ImageNet ResNet-50 as the trunk of paper_regular (heads start fresh): a start "
                 "for `poseseg train --init-weights`",
                 (HubFile("backbone", "ResNet50_Weights.IMAGENET1K_V1"),),
                 _build_torchvision_resnet50),
)}


def is_named(weights: str | os.PathLike) -> bool:
    return isinstance(weights, str) and weights in NAMED


def describe_named() -> str:
    """What ``poseseg weights list`` prints: names, sources (URL, size) and the COCO numbers they report."""
    lines = []
    for w in NAMED.values():
        lines.append(f"{w.name}\n  {w.description}")
        for s in w.sources:
            metrics = "; ".join(f"{ds}: " + ", ".join(f"{k} {v}" for k, v in m.items()) for ds, m in s.metrics.items())
            lines.append(f"  {s.role}: torchvision {s.weights_enum} ({s.size_mb:.0f} MB) {s.url}")
            lines.append(f"    reported by the source: {metrics}")
            lines.append(f"    cached at {s.cache_path()}{'' if s.cache_path().is_file() else ' (not downloaded yet)'}")
    return "\n".join(lines)


def _offline() -> bool:
    return os.environ.get("POSESEG_OFFLINE", "") not in ("", "0", "false", "False")


def _missing_files_error(weights: NamedWeights, missing: list[HubFile], reason: str) -> FileNotFoundError:
    where = "\n".join(f"  {s.cache_path()}   ({s.size_mb:.0f} MB, from {s.url})" for s in missing)
    return FileNotFoundError(
        f"named weights '{weights.name}' need {len(missing)} file(s) that are not in the torch.hub cache and "
        f"could not be downloaded ({reason}). Put them here (the directory is $TORCH_HOME/hub/checkpoints, "
        f"default ~/.cache/torch/hub/checkpoints):\n{where}")


def fetch_source(weights: NamedWeights, source: HubFile, *, progress: bool = True) -> Path:
    """The hub cache path of ``source``, downloading it (hash-checked) when missing."""
    path = source.cache_path()
    if path.is_file():
        return path
    if _offline():
        raise _missing_files_error(weights, [source], "POSESEG_OFFLINE is set")
    path.parent.mkdir(parents=True, exist_ok=True)
    match = _HASH_IN_NAME.search(source.file_name)
    print(f"downloading {source.url} ({source.size_mb:.0f} MB) to {path}", file=sys.stderr)
    try:  # torch.hub writes to a temporary file, checks the SHA-256 prefix, then moves it into place
        torch.hub.download_url_to_file(source.url, str(path), match.group(1) if match else None, progress=progress)
    except Exception as e:  # no network, proxy, disk full, hash mismatch
        path.unlink(missing_ok=True)
        raise _missing_files_error(weights, [source], f"{type(e).__name__}: {e}") from None
    return path


def _stamp(paths: list[Path]) -> str:
    """Changes when a source file changes (size, mtime) or the converter does."""
    text = f"v{CONVERTER_VERSION}|" + "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def converted_dir() -> Path:
    return Path(torch.hub.get_dir()) / "poseseg"


def resolve_named(name: str, *, progress: bool = True) -> Path:
    """Path of the converted poseseg checkpoint for named weights, converting (and downloading) on first use."""
    from poseseg.weights.checkpoint_file import save_checkpoint

    if name not in NAMED:
        import difflib

        close = difflib.get_close_matches(name, list(NAMED), n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FileNotFoundError(f"no checkpoint file or named weights '{name}'{hint} "
                                f"(named weights: {', '.join(NAMED)}; see `poseseg weights list`)")
    weights = NAMED[name]
    present = [s.cache_path() for s in weights.sources if s.cache_path().is_file()]
    if len(present) == len(weights.sources):
        target = converted_dir() / f"{name}-{_stamp(present)}.pt"
        if target.is_file():
            return target
    paths = {s.role: fetch_source(weights, s, progress=progress) for s in weights.sources}
    target = converted_dir() / f"{name}-{_stamp(list(paths.values()))}.pt"
    states = {}
    for role, path in paths.items():
        try:
            states[role] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot load {path} ({type(e).__name__}: {e}); delete it so that it is downloaded "
                             "again") from None
    print(f"converting {', '.join(p.name for p in paths.values())} -> {target}", file=sys.stderr)
    payload = weights.build(states)
    payload["weights_source"] = {"name": name, "files": [str(p) for p in paths.values()],
                                 "urls": [s.url for s in weights.sources]}
    save_checkpoint(target, payload)
    for stale in converted_dir().glob(f"{name}-*.pt"):  # an older conversion of the same name
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


def resolve_weights(weights: str | os.PathLike) -> Path:
    """A checkpoint path for a file path or a weights name (an existing file wins over a name)."""
    path = Path(weights)
    if path.suffix == ".pkl":
        raise ValueError(f"{path} is a pickle (Detectron2 / caffe2 weights?): convert it first with "
                         f"`poseseg convert-weights {path} --out {path.with_suffix('.pt')}`")
    if path.exists() or not isinstance(weights, str):
        return path
    if is_named(weights):
        return resolve_named(weights)
    if os.sep not in weights and "/" not in weights and path.suffix not in (".pt", ".pth", ".pkl"):
        resolve_named(weights)  # raises: neither a file nor a known name
    return path
