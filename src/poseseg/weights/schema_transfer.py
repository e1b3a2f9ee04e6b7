"""Fine-tuning on a new keypoint schema: per-keypoint output channels are carried over by joint name.

The keypoint head's last layers have one channel per keypoint (heatmaps) and two per keypoint (offsets).
When a checkpoint's schema (e.g. COCO-17) differs from the dataset's (e.g. CrowdPose-14), each joint whose
name both share keeps its trained filters; the other joints keep the fresh initialisation of the new model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

# (state-dict key, dim holding the keypoint channels, channels per keypoint)
PER_KEYPOINT_TENSORS = [
    ("keypoint_head.heatmap_deconv.weight", 1, 1),  # ConvTranspose2d weight: (in, K, 4, 4)
    ("keypoint_head.heatmap_deconv.bias", 0, 1),  # (K,)
    ("keypoint_head.offset_deconv.weight", 1, 2),  # (in, 2K, 4, 4): (dx_k, dy_k) interleaved
    ("keypoint_head.offset_deconv.bias", 0, 2),  # (2K,)
    ("keypoint_head.visibility_fc.weight", 0, 3),  # (3K, in): logits of v = 0, 1, 2 per keypoint
    ("keypoint_head.visibility_fc.bias", 0, 3),  # (3K,)
]


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())  # "Left Shoulder", "left_shoulder" -> "leftshoulder"


@dataclass
class SchemaMatch:
    kept: list[tuple[int, int, str]] = field(default_factory=list)  # (our index, source index, name)
    fresh: list[str] = field(default_factory=list)  # our joints with no source channel
    dropped: list[str] = field(default_factory=list)  # source joints we do not have

    def message(self) -> str:
        kept = ", ".join(name for _, _, name in self.kept) or "none"
        return (f"keypoint schema change: {len(self.kept)} joints keep their trained filters ({kept}); "
                f"{len(self.fresh)} start fresh ({', '.join(self.fresh) or 'none'}); "
                f"{len(self.dropped)} of the checkpoint's joints are dropped ({', '.join(self.dropped) or 'none'})")


def match_schemas(source_names: list[str], target_names: list[str]) -> SchemaMatch:
    source_index = {_normalise(n): i for i, n in enumerate(source_names)}
    match = SchemaMatch()
    used = set()
    for i, name in enumerate(target_names):
        j = source_index.get(_normalise(name))
        if j is None:
            match.fresh.append(name)
        else:
            match.kept.append((i, j, name))
            used.add(j)
    match.dropped = [n for j, n in enumerate(source_names) if j not in used]
    return match


def transfer_keypoint_channels(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor],
                               source_names: list[str], target_names: list[str]
                               ) -> tuple[dict[str, torch.Tensor], SchemaMatch]:
    """``state`` with its per-keypoint tensors rebuilt for ``target_names``: matched joints' channels from
    ``state``, the rest from ``own`` (the new model's initial tensors)."""
    match = match_schemas(source_names, target_names)
    out = dict(state)
    for key, dim, width in PER_KEYPOINT_TENSORS:
        if key not in state or key not in own:
            out.pop(key, None)
            continue
        src, new = state[key], own[key].clone()
        if src.shape[dim] != width * len(source_names):
            raise ValueError(f"checkpoint tensor '{key}' has {src.shape[dim]} keypoint channels but its schema "
                             f"names {len(source_names)} keypoints")
        for i, j, _ in match.kept:
            new.narrow(dim, width * i, width).copy_(src.narrow(dim, width * j, width))
        out[key] = new
    return out, match
