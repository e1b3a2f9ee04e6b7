"""Deformable RoI pooling: RoIAlign, then every bin is re-sampled at a learned offset.

Pass 1 pools the RoI as RoIAlign does; a zero-initialised fc reads those features and predicts
one (dx, dy) per bin, in units of the RoI's width and height (times ``gamma``); pass 2 samples
the FPN level again at the shifted bins. At initialisation the offsets are zero and the output
equals plain RoIAlign, so a deformable-pooling model loads and matches a plain one.

The same code runs eagerly (training, inference) and under ``torch.jit.trace`` (ONNX export):
no Python branch on data, feature-map sizes kept as tensors, bilinear reads as a row gather.
"""
from __future__ import annotations

import torch
from torch import nn

from poseseg.modeling.pooler import LevelRoIAlign


class DeformRoIPooler(nn.Module):
    """``forward(features, boxes, image_sizes)`` -> (R, C, S, S), like ``RoIPooler``."""

    def __init__(self, *, level_names: list[str], output_size: int, sampling_ratio: int = 2, channels: int = 256,
                 gamma: float = 0.1):
        super().__init__()
        self.output_size = output_size
        self.sampling_ratio = max(sampling_ratio, 1)
        self.gamma = gamma
        self.align = LevelRoIAlign(featmap_names=level_names, output_size=output_size,
                                   sampling_ratio=self.sampling_ratio, aligned=False)
        self.offset_fc = nn.Linear(channels * output_size**2, 2 * output_size**2)
        nn.init.zeros_(self.offset_fc.weight)
        nn.init.zeros_(self.offset_fc.bias)

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        first = self.align(features, boxes, image_sizes)  # (R, C, S, S), also sets up scales/level mapper
        rois = torch.cat(boxes)  # (R, 4)
        s = self.output_size
        wh = (rois[:, 2:] - rois[:, :2]).clamp(min=1.0)  # (R, 2)
        offsets = self.offset_fc(first.flatten(1)).view(-1, s, s, 2) * self.gamma * wh[:, None, None, :]  # pixels
        maps = [features[name] for name in self.align.featmap_names]
        if len(maps) > 1:
            levels = self.align.map_levels(boxes)  # (R,) index into maps
        else:
            levels = torch.zeros_like(rois[:, 0], dtype=torch.long)
        batch_idx = torch.cat([torch.full_like(b[:, 0], i, dtype=torch.long) for i, b in enumerate(boxes)])  # (R,)
        return sample_bins(maps, self.align.scales, levels, batch_idx, rois, offsets, size=s,
                           sampling_ratio=self.sampling_ratio)


def sample_bins(maps: list[torch.Tensor], scales: list[float], levels: torch.Tensor, batch_idx: torch.Tensor,
                rois: torch.Tensor, offsets: torch.Tensor, *, size: int, sampling_ratio: int) -> torch.Tensor:
    """RoIAlign (aligned=False, fixed sampling ratio) of each RoI on its own level, each bin shifted by ``offsets``.

    maps[l] (B, C, H_l, W_l) with ``scales[l]`` feature pixels per image pixel; levels, batch_idx (R,);
    rois (R, 4) and offsets (R, S, S, 2) in image pixels -> (R, C, S, S). Bilinear weights follow
    torchvision's roi_align exactly, so zero offsets give RoIAlign. All levels are stacked into one
    (rows, C) table and every RoI reads its own level's rows: each RoI is sampled once, with no
    per-level Python selection, and the heights and widths stay tensors, so a trace (ONNX export)
    records them as values and one exported graph serves every input size.
    """
    num_rois, channels = rois.shape[0], maps[0].shape[1]
    dtype, device = rois.dtype, rois.device
    shapes = torch.stack([torch._shape_as_tensor(m).to(device) for m in maps])  # (L, 4): B, C, H, W
    counts = shapes[:, 0] * shapes[:, 2] * shapes[:, 3]  # (L,) rows per level
    starts = (torch.cumsum(counts, 0) - counts)[levels]  # (R,) first row of the RoI's level
    rows = torch.cat([m.permute(0, 2, 3, 1).reshape(-1, channels) for m in maps])  # (sum B*H*W, C)
    scale = torch.tensor(scales, dtype=dtype, device=device)[levels]  # (R,)
    height = shapes[levels, 2][:, None, None]  # (R, 1, 1) int64
    width = shapes[levels, 3][:, None, None]
    h, w = height.to(dtype), width.to(dtype)
    rois = rois * scale[:, None]  # (R, 4) in feature-map pixels
    offsets = offsets * scale[:, None, None, None]  # (R, S, S, 2)
    bin_w = (rois[:, 2] - rois[:, 0]).clamp(min=1.0) / size  # (R,)
    bin_h = (rois[:, 3] - rois[:, 1]).clamp(min=1.0) / size
    sr = sampling_ratio
    grid = (torch.arange(size, device=device, dtype=dtype)[:, None]
            + (torch.arange(sr, device=device, dtype=dtype)[None, :] + 0.5) / sr).reshape(-1)  # (S*sr,) bin units
    xs = rois[:, 0, None] + grid[None, :] * bin_w[:, None]  # (R, S*sr)
    ys = rois[:, 1, None] + grid[None, :] * bin_h[:, None]
    off = offsets.repeat_interleave(sr, dim=1).repeat_interleave(sr, dim=2)  # (R, S*sr, S*sr, 2)
    x = xs[:, None, :] + off[..., 0]  # (R, S*sr, S*sr): row = y sample, column = x sample
    y = ys[:, :, None] + off[..., 1]
    inside = (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)
    y = torch.minimum(y.clamp(min=0), h - 1)
    x = torch.minimum(x.clamp(min=0), w - 1)
    y0 = torch.minimum(y.floor(), h - 1)
    x0 = torch.minimum(x.floor(), w - 1)
    y1 = torch.minimum(y0 + 1, h - 1)
    x1 = torch.minimum(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    base = starts[:, None, None] + batch_idx[:, None, None] * height * width  # (R, 1, 1) first row of the image
    # the four corners of every sample: their rows in the table and their bilinear weights, with the
    # samples outside the map and the average over the sr x sr samples of a bin folded into the weights
    index = torch.stack([base + a.long() * width + b.long() for a, b in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))],
                        dim=-1)  # (R, S*sr, S*sr, 4)
    weight = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=-1) * (inside.to(dtype) / (sr * sr))[..., None]
    index, weight = (t.view(num_rois, size, sr, size, sr, 4).permute(0, 1, 3, 2, 4, 5).reshape(-1, sr * sr * 4)
                     for t in (index, weight))  # (R*S*S, sr*sr*4): a bin's reads side by side
    gathered = rows.index_select(0, index.reshape(-1)).view(index.shape[0], sr * sr * 4, channels)  # (R*S*S, K, C)
    value = torch.matmul(weight.to(rows.dtype)[:, None, :], gathered)  # (R*S*S, 1, C): each bin's weighted sum
    return value.view(num_rois, size, size, channels).permute(0, 3, 1, 2).contiguous()  # (R, C, S, S)
