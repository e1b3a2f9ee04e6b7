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

CONVERTER_VERSION = 2  # bump when a conversion changes: cached checkpoints are then rebuilt (2: own mask trunk)
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
                 "model: trunk, RPN, box and keypoint heads from the keypoint model; the mask head with the mask "
                 "model's own trunk (model.mask.trunk=own: the two were trained apart, so each head reads the "
                 "features it learned on; a second ResNet-50-FPN runs for the masks)",
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


def _missing_files_error(weights: NamedWeights, reason: str) -> FileNotFoundError:
    """Names every source file of ``weights`` not in the cache yet (all of them at once, not the first)."""
    missing = [s for s in weights.sources if not s.cache_path().is_file()]
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
        raise _missing_files_error(weights, "POSESEG_OFFLINE is set")
    path.parent.mkdir(parents=True, exist_ok=True)
    match = _HASH_IN_NAME.search(source.file_name)
    print(f"downloading {source.url} ({source.size_mb:.0f} MB) to {path}", file=sys.stderr)
    try:  # torch.hub writes to a temporary file, checks the SHA-256 prefix, then moves it into place
        torch.hub.download_url_to_file(source.url, str(path), match.group(1) if match else None, progress=progress)
    except Exception as e:  # no network, proxy, disk full, hash mismatch
        path.unlink(missing_ok=True)
        raise _missing_files_error(weights, f"{type(e).__name__}: {e}") from None
    return path


def _unloadable_source_error(source: HubFile, error: Exception) -> ValueError:
    """Why a cached download does not load: torch.hub's file names carry the first digits of the file's SHA-256
    (checked when it downloaded), so a file whose hash no longer matches has been damaged since."""
    path = source.cache_path()
    match = _HASH_IN_NAME.search(source.file_name)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    reason = type(error).__name__ + (f": {str(error).splitlines()[0]}" if str(error).strip() else "")
    if match and not sha.hexdigest().startswith(match.group(1)):
        named, actual = match.group(1), sha.hexdigest()[:len(match.group(1))]
        return ValueError(f"the cached file {path} is corrupt: its SHA-256 begins {actual}, not {named} as its name "
                          f"says (torch.hub checked that when it downloaded it), so it was damaged since ({reason}). "
                          f"Delete it: the next run downloads it again ({source.size_mb:.0f} MB from {source.url}; "
                          "offline, put a good copy there)")
    return ValueError(f"cannot load the cached file {path} ({reason}); delete it so that it is downloaded again")


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
    for source in weights.sources:
        try:
            states[source.role] = torch.load(paths[source.role], map_location="cpu", weights_only=True)
        except Exception as e:
            raise _unloadable_source_error(source, e) from None
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
    if path.suffix.lower() == ".onnx":
        raise ValueError(f"{path} is an exported ONNX graph, which runs in predict, eval and serve only: here "
                         "a PyTorch checkpoint (.pt) is needed, such as the model_final.pt it was exported from")
    if path.exists() or not isinstance(weights, str):
        return path
    if is_named(weights):
        return resolve_named(weights)
    if os.sep not in weights and "/" not in weights and path.suffix not in (".pt", ".pth", ".pkl"):
        resolve_named(weights)  # raises: neither a file nor a known name
    return path
