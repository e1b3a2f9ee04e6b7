"""Paste RoI mask probabilities into the image, one box at a time, with half-pixel-correct coordinates.

The mask head predicts an M x M grid over each box; cell i covers [i/M, (i+1)/M] of the box's width.
Pixel x of the image has its centre at x + 0.5, so it reads the grid at u = (x + 0.5 - x0) / (x1 - x0),
bilinearly (``grid_sample`` with ``align_corners=False``), as Detectron2's aligned paste does.

Memory. Only the pixels of each box's region are computed (``paste_in_boxes``), so the cost of a
12 MP photo is the boxes' area, not N full-size float masks; ``masks_to_image`` then writes them
into one (N, H, W) bool array and ``box_mask_to_rle`` encodes COCO RLE from a box without any
full-size float mask. ``paste_full`` is the same computation over the whole image, the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BoxMask", "paste_in_boxes", "paste_full", "masks_to_image", "box_mask_to_rle"]


@dataclass
class BoxMask:
    """One person's mask probabilities on the pixel rectangle [y0, y0 + h) x [x0, x0 + w) of its image."""

    x0: int
    y0: int
    probs: torch.Tensor  # (h, w) float in [0, 1]
    image_hw: tuple[int, int]  # the size of the picture the rectangle lies in


def _region(box: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """The pixels whose centres can see the box's mask (one pixel of margin for the bilinear fall-off)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0),
            min(int(math.ceil(x1)) + 1, width), min(int(math.ceil(y1)) + 1, height))


def _sample(mask: torch.Tensor, box: torch.Tensor, px0: int, py0: int, px1: int, py1: int) -> torch.Tensor:
    """mask (M, M) read at the centres of pixels [py0, py1) x [px0, px1): (py1 - py0, px1 - px0)."""
    if px1 <= px0 or py1 <= py0:
        return mask.new_zeros((max(py1 - py0, 0), max(px1 - px0, 0)))
    x0, y0, x1, y1 = (float(v) for v in box)
    xs = torch.arange(px0, px1, device=mask.device, dtype=mask.dtype) + 0.5
    ys = torch.arange(py0, py1, device=mask.device, dtype=mask.dtype) + 0.5
    gx = (xs - x0) / max(x1 - x0, 1e-6) * 2 - 1  # grid_sample's -1/+1 are the box's outer edges
    gy = (ys - y0) / max(y1 - y0, 1e-6) * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)  # (h, w, 2) as (x, y)
    return F.grid_sample(mask[None, None], grid[None], mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0, 0]


def paste_in_boxes(masks: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int]) -> list[BoxMask]:
    """masks (N, 1, M, M) or (N, M, M) probabilities, boxes (N, 4) xyxy in image pixels -> N BoxMasks."""
    masks = masks.reshape(masks.shape[0], masks.shape[-2], masks.shape[-1]).float()
    height, width = image_hw
    out = []
    for mask, box in zip(masks, boxes):
        px0, py0, px1, py1 = _region(box, height, width)
        out.append(BoxMask(px0, py0, _sample(mask, box, px0, py0, px1, py1), (height, width)))
    return out


def paste_full(masks: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """The reference: the same sampling over every pixel of the image, (N, 1, H, W) float."""
    masks = masks.reshape(masks.shape[0], masks.shape[-2], masks.shape[-1]).float()
    height, width = image_hw
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 1, height, width))
    return torch.stack([_sample(m, b, 0, 0, width, height) for m, b in zip(masks, boxes)])[:, None]


def masks_to_image(pasted: list[BoxMask], image_hw: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """(N, H, W) bool: each person's probabilities >= ``threshold``, written into its own box only."""
    out = np.zeros((len(pasted), *image_hw), dtype=bool)
    for i, m in enumerate(pasted):
        h, w = m.probs.shape
        out[i, m.y0:m.y0 + h, m.x0:m.x0 + w] = (m.probs >= threshold).cpu().numpy()
    return out


def box_mask_to_rle(mask: BoxMask, threshold: float = 0.5) -> dict:
    """COCO RLE (counts as str) of one pasted mask: one full-size uint8 plane, no full-size float."""
    import pycocotools.mask as mask_utils

    plane = np.zeros(mask.image_hw, dtype=np.uint8, order="F")
    h, w = mask.probs.shape
    plane[mask.y0:mask.y0 + h, mask.x0:mask.x0 + w] = (mask.probs >= threshold).cpu().numpy()
    rle = mask_utils.encode(plane)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
