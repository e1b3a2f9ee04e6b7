"""Keypoint codec: ground-truth keypoints -> heatmap and offset targets, predictions -> keypoints.

One pure module used by training (targets), inference (decoding) and drawing (peaks and arrows).

Coordinates: an RoI (x1, y1, x2, y2) is divided into H x H heatmap cells. A point at image x has
continuous heatmap coordinate u = (x - x1) * H / (x2 - x1); cell i covers [i, i + 1) and its
centre is u = i + 0.5. Offsets are in cells, from a cell centre to the keypoint: (u - 0.5 - i).
Offset channels are interleaved per keypoint: (dx_0, dy_0, dx_1, dy_1, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class KeypointTargets:
    valid: torch.Tensor  # (R, K) bool: labelled (v > 0) and inside the RoI
    heatmaps: torch.Tensor | None  # (R, K, H, H) Gaussian targets, zero maps where not valid (mse)
    indices: torch.Tensor  # (R, K) int64 flat index of the cell holding the keypoint (ce)
    offsets: torch.Tensor | None  # (R, K, 2, H, H) per-cell (dx, dy) to the keypoint, in cells
    offset_weights: torch.Tensor | None  # (R, K, H, H) bool: valid and within `offset_radius` cells


@dataclass
class DecodedKeypoints:
    keypoints: torch.Tensor  # (R, K, 3) image x, y, 1
    scores: torch.Tensor  # (R, K) in [0, 1]
    peaks: torch.Tensor  # (R, K, 2) image x, y of the heatmap peak before the offset refinement
    visibility: torch.Tensor | None = None  # (R, K) int64 flag 0 / 1 / 2 (with the visibility classifier)


@dataclass(frozen=True)
class KeypointCodec:
    heatmap_size: int = 56
    loss: str = "mse"  # mse: Gaussian targets, sigmoid scores; ce: one-hot cell, spatial softmax;
    # ce_soft: spatial softmax against the normalised Gaussian (denser signal early in training)
    sigma: float = 1.0  # Gaussian std in cells
    offset_radius: float = 2.0  # offsets are trained on cells whose centre is this close (cells)
    use_offsets: bool = True
    decode_mode: str = "peak"  # peak: maximum heatmap cell; upsample: Mask R-CNN's maximum after a bicubic
    #                            resize of each heatmap to its box size in pixels (torchvision / Detectron2)

    def to_heatmap_coords(self, keypoints: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, K, 3) image keypoints, (R, 4) RoIs -> (R, K, 2) continuous cell coords, (R, K) valid."""
        size = self.heatmap_size
        origin = rois[:, None, :2]  # (R, 1, 2)
        extent = (rois[:, None, 2:] - rois[:, None, :2]).clamp(min=1e-6)  # (R, 1, 2)
        uv = (keypoints[..., :2] - origin) * (size / extent)  # (R, K, 2)
        inside = ((uv >= 0) & (uv <= size)).all(-1)  # a point on the far edge counts as inside
        valid = (keypoints[..., 2] > 0) & inside
        return uv.clamp(0, size - 1e-4), valid

    def encode(self, keypoints: torch.Tensor, rois: torch.Tensor) -> KeypointTargets:
        size = self.heatmap_size
        uv, valid = self.to_heatmap_coords(keypoints, rois)
        centre = uv - 0.5  # (R, K, 2) in cell-index space
        cells = torch.arange(size, device=rois.device, dtype=rois.dtype)
        dx = centre[..., 0, None, None] - cells.view(1, 1, 1, size)  # (R, K, 1, H): to keypoint along x
        dy = centre[..., 1, None, None] - cells.view(1, 1, size, 1)  # (R, K, H, 1)
        dist2 = dx**2 + dy**2  # (R, K, H, H)
        cell_ij = uv.floor().long().clamp(0, size - 1)
        indices = cell_ij[..., 1] * size + cell_ij[..., 0]  # (R, K)
        heatmaps = None
        if self.loss in ("mse", "ce_soft"):
            heatmaps = torch.exp(-dist2 / (2 * self.sigma**2)) * valid[..., None, None]
        offsets = weights = None
        if self.use_offsets:
            offsets = torch.stack(torch.broadcast_tensors(dx, dy), dim=2)  # (R, K, 2, H, H)
            weights = (dist2 <= self.offset_radius**2) & valid[..., None, None]
        return KeypointTargets(valid=valid, heatmaps=heatmaps, indices=indices, offsets=offsets,
                               offset_weights=weights)

    def decode(self, heatmap_logits: torch.Tensor, offsets: torch.Tensor | None, rois: torch.Tensor) -> DecodedKeypoints:
        """Peak of each heatmap, moved by the offset read there (bilinear), mapped to image pixels."""
        num_rois, num_kps, height, width = heatmap_logits.shape
        flat = heatmap_logits.flatten(2)  # (R, K, H*W)
        peak_logit, peak_idx = flat.max(dim=-1)  # (R, K)
        if self.decode_mode == "upsample":
            peak_xy = upsampled_peaks(heatmap_logits, rois)  # (R, K, 2) image pixels
            # in cells; up to half a cell beyond the outer cell centres: read the offsets at the nearest inside point
            peak = image_to_cells(peak_xy, rois, width, height).clamp(min=0)
            peak = torch.minimum(peak, peak.new_tensor([width - 1, height - 1]))
        else:
            peak = torch.stack([peak_idx % width, peak_idx // width], dim=-1).to(heatmap_logits.dtype)  # (R, K, 2)
            peak_xy = cells_to_image(peak, rois, width, height)
        xy = peak_xy
        if offsets is not None and self.use_offsets:
            maps = offsets.view(num_rois, num_kps, 2, height, width)
            shift = sample_bilinear(maps, peak)  # (R, K, 2) in cells
            if self.decode_mode == "upsample":  # zero offsets leave the upsampled peak exactly as it is
                cell_size = (rois[:, None, 2:] - rois[:, None, :2]) / torch.tensor(
                    [width, height], device=rois.device, dtype=rois.dtype)
                xy = peak_xy + shift * cell_size
            else:
                xy = cells_to_image(peak + shift, rois, width, height)
        if self.loss == "mse":
            scores = peak_logit.sigmoid()
        else:
            scores = (peak_logit - flat.logsumexp(dim=-1)).exp()  # spatial-softmax probability at the peak
        keypoints = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)
        return DecodedKeypoints(keypoints=keypoints, scores=scores, peaks=peak_xy)


def cells_to_image(cells: torch.Tensor, rois: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(R, K, 2) cell-index coordinates inside (R, 4) RoIs -> (R, K, 2) image pixels."""
    cell_size = (rois[:, None, 2:] - rois[:, None, :2]) / torch.tensor([width, height], device=rois.device,
                                                                          dtype=rois.dtype)
    return rois[:, None, :2] + (cells + 0.5) * cell_size


def image_to_cells(xy: torch.Tensor, rois: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Inverse of :func:`cells_to_image`: (R, K, 2) image pixels -> cell-index coordinates."""
    cell_size = (rois[:, None, 2:] - rois[:, None, :2]).clamp(min=1e-6) / torch.tensor(
        [width, height], device=rois.device, dtype=rois.dtype)
    return (xy - rois[:, None, :2]) / cell_size - 0.5


def upsampled_peaks(heatmap_logits: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Mask R-CNN's decoding: resize each RoI's (K, H, W) heatmaps bicubically to the RoI's size in whole
    pixels (ceil), take the maximum, return its pixel centre in the image: (R, K, 2).

    The same arithmetic as torchvision's ``heatmaps_to_keypoints`` (boxes narrower than 1 px count as 1).
    """
    num_rois, num_kps = heatmap_logits.shape[:2]
    sizes = (rois[:, 2:] - rois[:, :2]).clamp(min=1)  # (R, 2) w, h
    out = heatmap_logits.new_zeros((num_rois, num_kps, 2))
    for i in range(num_rois):
        w_px, h_px = int(sizes[i, 0].ceil()), int(sizes[i, 1].ceil())
        up = F.interpolate(heatmap_logits[i][:, None], size=(h_px, w_px), mode="bicubic",
                           align_corners=False)[:, 0]  # (K, h_px, w_px)
        pos = up.flatten(1).argmax(dim=1)  # (K,)
        x_int, y_int = pos % w_px, pos // w_px
        out[i, :, 0] = rois[i, 0] + (x_int.to(out.dtype) + 0.5) * (sizes[i, 0] / w_px)
        out[i, :, 1] = rois[i, 1] + (y_int.to(out.dtype) + 0.5) * (sizes[i, 1] / h_px)
    return out


def sample_bilinear(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear read of (R, K, C, H, W) maps at (R, K, 2) cell-index points (x, y) -> (R, K, C).

    G(q, p) = g(qx, px) g(qy, py), g(a, b) = max(0, 1 - |a - b|): the paper's eq. 2-3.
    """
    num_rois, num_kps, channels, height, width = maps.shape
    grid = torch.stack([points[..., 0] * 2 / max(width - 1, 1) - 1,
                        points[..., 1] * 2 / max(height - 1, 1) - 1], dim=-1)  # normalised, align_corners=True
    sampled = F.grid_sample(maps.reshape(num_rois * num_kps, channels, height, width),
                            grid.reshape(num_rois * num_kps, 1, 1, 2), mode="bilinear", align_corners=True)
    return sampled.view(num_rois, num_kps, channels)
