"""Training transforms on ``(image (3, H, W) float in [0, 1], Target)``.

Coordinates. Boxes and keypoints are continuous pixel coordinates: pixel column i covers
[i, i + 1), an image of width W spans [0, W] (COCO's convention, and the keypoint codec's).
Hence a resize by s maps x -> s * x, and a horizontal flip maps x -> W - x (a box
[x1, x2] -> [W - x2, W - x1]). Unlabelled keypoints (visibility 0) keep x = y = 0.

Randomness comes from torch's global RNG only (``torch.rand``/``torch.randint``), so
``torch.manual_seed`` makes a pipeline reproducible and DataLoader workers, which torch seeds
with ``base_seed + worker_id``, draw different but reproducible augmentations.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from poseseg.types import Target

__all__ = ["Compose", "ResizeShortestSide", "RandomHorizontalFlip", "ColorJitter", "build_transforms", "hflip",
           "resized_shape"]

Transform = Callable[[torch.Tensor, Target], "tuple[torch.Tensor, Target]"]


class Compose:
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def resized_shape(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """(H', W') with the shorter side ``size``, shrunk so that the longer side is <= ``max_size``."""
    scale = size / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


class ResizeShortestSide:
    """Resize so the shorter side is a size drawn uniformly from ``sizes`` (longer side <= ``max_size``).

    Image: bilinear with antialiasing; masks: nearest (pixel centres); boxes and labelled
    keypoints: scaled by the exact per-axis factors W'/W and H'/H.
    """

    def __init__(self, sizes: Sequence[int] | int, max_size: int | None = None) -> None:
        self.sizes = [int(sizes)] if isinstance(sizes, (int, np.integer)) else [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) <= 0:
            raise ValueError(f"sizes must be positive integers, got {sizes}")
        self.max_size = None if max_size is None else int(max_size)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        size = self.sizes[int(torch.randint(len(self.sizes), (1,)))] if len(self.sizes) > 1 else self.sizes[0]
        h, w = image.shape[-2:]
        nh, nw = resized_shape(h, w, size, self.max_size)
        if (nh, nw) == (h, w):
            return image, target
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp_(0.0, 1.0)
        sx, sy = nw / w, nh / h
        target = dict(target)
        if "boxes" in target:
            target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype)
        if "keypoints" in target:
            kps = target["keypoints"].clone()
            labelled = kps[..., 2] > 0
            kps[..., 0] = torch.where(labelled, kps[..., 0] * sx, 0.0)
            kps[..., 1] = torch.where(labelled, kps[..., 1] * sy, 0.0)
            target["keypoints"] = kps
        if "masks" in target:
            m = target["masks"]
            if m.shape[0] == 0:
                target["masks"] = m.new_zeros((0, nh, nw))
            else:
                target["masks"] = F.interpolate(m[None].float(), size=(nh, nw), mode="nearest-exact")[0].to(m.dtype)
        return image, target

    def __repr__(self) -> str:
        return f"ResizeShortestSide(sizes={self.sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """With probability ``p`` mirror image, boxes, masks and keypoints, and swap left/right keypoints.

    ``flip_permutation`` is ``KeypointSchema.flip_permutation()``: after the flip keypoint i takes
    the (mirrored) value of keypoint ``perm[i]``, so the left wrist ends up where the right wrist
    was, mirrored. Labelled keypoints map x -> W - x; unlabelled ones stay (0, 0, 0).
    """

    def __init__(self, p: float = 0.5, flip_permutation: Sequence[int] | None = None) -> None:
        self.p = float(p)
        self.perm = None if flip_permutation is None else torch.as_tensor(list(flip_permutation), dtype=torch.long)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return image, target
        return hflip(image, target, self.perm)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def hflip(image: torch.Tensor, target: Target,
          perm: torch.Tensor | Sequence[int] | None) -> tuple[torch.Tensor, Target]:
    """The deterministic mirror used by :class:`RandomHorizontalFlip`."""
    w = image.shape[-1]
    image = image.flip(-1)
    target = dict(target)
    if "boxes" in target:
        b = target["boxes"]
        target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    if "keypoints" in target:
        kps = target["keypoints"]
        k = kps.shape[1]
        if perm is None:
            if k > 1:
                raise ValueError("flipping keypoints needs flip_permutation=schema.flip_permutation(), or "
                                 "left and right would be exchanged in the labels")
            perm = list(range(k))
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.numel() != k:
            raise ValueError(f"flip permutation has {perm.numel()} entries but the keypoints have K={k}")
        kps = kps.clone()
        labelled = kps[..., 2] > 0
        kps[..., 0] = torch.where(labelled, w - kps[..., 0], 0.0)
        target["keypoints"] = kps[:, perm]
    return image, target


class ColorJitter:
    """Random brightness, contrast and saturation factors in [1 - a, 1 + a] (fixed order)."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0) -> None:
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)

    @staticmethod
    def _factor(amount: float) -> float | None:
        if amount <= 0:
            return None
        lo = max(0.0, 1.0 - amount)
        return lo + float(torch.rand(())) * (1.0 + amount - lo)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        f = self._factor(self.brightness)
        if f is not None:
            image = (image * f).clamp_(0.0, 1.0)
        f = self._factor(self.contrast)
        if f is not None:
            mean = _grey(image).mean()
            image = ((image - mean) * f + mean).clamp_(0.0, 1.0)
        f = self._factor(self.saturation)
        if f is not None:
            grey = _grey(image)[None]
            image = ((image - grey) * f + grey).clamp_(0.0, 1.0)
        return image, target

    def __repr__(self) -> str:
        return f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, saturation={self.saturation})"


def _grey(image: torch.Tensor) -> torch.Tensor:
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


def build_transforms(*, sizes: Sequence[int], max_size: int | None, flip_prob: float = 0.0,
                     flip_permutation: Sequence[int] | None = None, color_jitter: float = 0.0) -> Compose:
    """The training pipeline from config values (``data.train_sizes``, ``data.max_size``,
    ``data.flip_prob``, the schema's ``flip_permutation()``, ``data.color_jitter``)."""
    ts: list[Transform] = []
    if color_jitter > 0:
        ts.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    ts.append(ResizeShortestSide(sizes, max_size))
    if flip_prob > 0:
        ts.append(RandomHorizontalFlip(flip_prob, flip_permutation))
    return Compose(ts)
