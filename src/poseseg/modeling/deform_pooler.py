"""Deformable RoI pooling: RoIAlign, then every bin is re-sampled at a learned offset.

Pass 1 pools the RoI as RoIAlign does; a zero-initialised fc reads those features and predicts
one (dx, dy) per bin, in units of the RoI's width and height (times ``gamma``); pass 2 samples
the FPN level again at the shifted bins. At initialisation the offsets are zero and the output
equals plain RoIAlign, so a deformable-pooling model loads and matches a plain one.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign


class DeformRoIPooler(nn.Module):
    """``forward(features, boxes, image_sizes)`` -> (R, C, S, S), like ``RoIPooler``."""

    def __init__(self, *, level_names: list[str], output_size: int, sampling_ratio: int = 2, channels: int = 256,
                 gamma: float = 0.1):
        super().__init__()
        self.output_size = output_size
        self.sampling_ratio = max(sampling_ratio, 1)
        self.gamma = gamma
        self.align = MultiScaleRoIAlign(featmap_names=level_names, output_size=output_size,
                                        sampling_ratio=self.sampling_ratio)
        self.offset_fc = nn.Linear(channels * output_size**2, 2 * output_size**2)
        nn.init.zeros_(self.offset_fc.weight)
        nn.init.zeros_(self.offset_fc.bias)
        self.last_offsets: torch.Tensor | None = None  # (R, S, S, 2) pixels, kept for drawing when asked
        self.keep_offsets = False

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        first = self.align(features, boxes, image_sizes)  # (R, C, S, S), also sets up scales/level mapper
        rois = torch.cat(boxes)  # (R, 4)
        if rois.shape[0] == 0:
            return first
        s = self.output_size
        wh = (rois[:, 2:] - rois[:, :2]).clamp(min=1.0)  # (R, 2)
        offsets = self.offset_fc(first.flatten(1)).view(-1, s, s, 2) * self.gamma * wh[:, None, None, :]  # pixels
        if self.keep_offsets:
            self.last_offsets = offsets.detach()
        levels = self.align.map_levels(boxes) if len(self.align.scales) > 1 else rois.new_zeros(len(rois)).long()
        batch_idx = torch.cat([torch.full((len(b),), i, device=rois.device, dtype=torch.long)
                               for i, b in enumerate(boxes)])
        out = first.new_zeros(first.shape)
        maps = [features[name] for name in self.align.featmap_names]
        for level, (fmap, scale) in enumerate(zip(maps, self.align.scales)):
            sel = torch.where(levels == level)[0]
            if sel.numel():
                out[sel] = sample_bins(fmap, batch_idx[sel], rois[sel] * scale, offsets[sel] * scale, s,
                                       self.sampling_ratio)
        return out


def sample_bins(fmap: torch.Tensor, batch_idx: torch.Tensor, rois: torch.Tensor, offsets: torch.Tensor,
                size: int, sampling_ratio: int) -> torch.Tensor:
    """RoIAlign (aligned=False, fixed sampling ratio) with each bin shifted by ``offsets``.

    fmap (B, C, H, W); rois (R, 4) and offsets (R, S, S, 2) in feature-map pixels -> (R, C, S, S).
    Bilinear weights follow torchvision's roi_align exactly, so zero offsets give RoIAlign.
    """
    num_rois = rois.shape[0]
    _, channels, height, width = fmap.shape
    bin_w = (rois[:, 2] - rois[:, 0]).clamp(min=1.0) / size  # (R,)
    bin_h = (rois[:, 3] - rois[:, 1]).clamp(min=1.0) / size
    grid = (torch.arange(size, device=fmap.device, dtype=fmap.dtype)[:, None]
            + (torch.arange(sampling_ratio, device=fmap.device, dtype=fmap.dtype)[None, :] + 0.5) / sampling_ratio)
    grid = grid.reshape(-1)  # (S*sr,) positions in bin units
    xs = rois[:, 0, None] + grid[None, :] * bin_w[:, None]  # (R, S*sr)
    ys = rois[:, 1, None] + grid[None, :] * bin_h[:, None]
    sr = sampling_ratio
    off = offsets.repeat_interleave(sr, dim=1).repeat_interleave(sr, dim=2)  # (R, S*sr, S*sr, 2)
    x = xs[:, None, :] + off[..., 0]  # (R, S*sr, S*sr): row = y sample, column = x sample
    y = ys[:, :, None] + off[..., 1]
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    y = y.clamp(min=0, max=height - 1)
    x = x.clamp(min=0, max=width - 1)
    y0 = y.floor().clamp(max=height - 1)
    x0 = x.floor().clamp(max=width - 1)
    y1 = (y0 + 1).clamp(max=height - 1)
    x1 = (x0 + 1).clamp(max=width - 1)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    rows = fmap.permute(0, 2, 3, 1).reshape(-1, channels)  # (B*H*W, C): a gathered row is contiguous
    base = (batch_idx * height * width)[:, None, None]

    def corner(yy, xx):
        return rows.index_select(0, (base + yy.long() * width + xx.long()).reshape(-1)).view(*yy.shape, channels)

    value = ((hy * hx)[..., None] * corner(y0, x0) + (hy * lx)[..., None] * corner(y0, x1)
             + (ly * hx)[..., None] * corner(y1, x0) + (ly * lx)[..., None] * corner(y1, x1))
    value = value * inside[..., None]  # (R, S*sr, S*sr, C)
    value = value.view(num_rois, size, sr, size, sr, channels).mean(dim=(2, 4))  # average the samples per bin
    return value.permute(0, 3, 1, 2).contiguous()  # (R, C, S, S)
