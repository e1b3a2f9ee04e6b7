"""RoI feature pooling over the FPN levels (RoIAlign; deformable RoI pooling is a drop-in)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


class HalfPixelMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's multi-level RoIAlign with ``aligned=True`` sampling (pixel centres at +0.5, Detectron2's
    ROIAlignV2, which its FPN models are trained with); same level assignment and parameters."""

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)  # (R, 5): batch index + box
        levels = self.map_levels(boxes) if len(features) > 1 else rois.new_zeros(len(rois), dtype=torch.int64)
        result = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))  # (R, C, S, S)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.where(levels == level)[0]
            result[idx] = roi_align(feature, rois[idx], self.output_size, spatial_scale=scale,
                                    sampling_ratio=self.sampling_ratio, aligned=True).to(result.dtype)
        return result


class RoIPooler(nn.Module):
    """``forward(features, boxes, image_sizes)`` -> (R, C, S, S) pooled features, R = all boxes."""

    def __init__(self, *, level_names: list[str], output_size: int, sampling_ratio: int = 2, aligned: bool = False):
        super().__init__()
        self.output_size = output_size
        align = HalfPixelMultiScaleRoIAlign if aligned else MultiScaleRoIAlign
        self.align = align(featmap_names=level_names, output_size=output_size, sampling_ratio=sampling_ratio)
        self.align.aligned = aligned

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        return self.align(features, boxes, image_sizes)
