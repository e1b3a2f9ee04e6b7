"""RoI feature pooling over the FPN levels (RoIAlign; deformable RoI pooling is a drop-in)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from poseseg.ops.roi_align import threaded_roi_align


class LevelRoIAlign(MultiScaleRoIAlign):
    """torchvision's multi-level RoIAlign (same level assignment and parameters), with ``aligned=True``
    sampling as an option (pixel centres at +0.5, Detectron2's ROIAlignV2, which its FPN models are
    trained with), and the boxes of a level pooled over the CPU's threads at inference."""

    def __init__(self, *, featmap_names: list[str], output_size: int, sampling_ratio: int, aligned: bool):
        super().__init__(featmap_names=featmap_names, output_size=output_size, sampling_ratio=sampling_ratio)
        self.aligned = aligned

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)  # (R, 5): batch index + box
        # sizes as .shape[0], not len(): a trace keeps them as values (the exporter's graph takes any box count)
        levels = (self.map_levels(boxes) if len(features) > 1
                  else torch.zeros_like(rois[:, 0], dtype=torch.int64))  # (R,)
        result = features[0].new_zeros((rois.shape[0], features[0].shape[1], *self.output_size))  # (R, C, S, S)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.where(levels == level)[0]  # (R_l,)
            pooled = threaded_roi_align(feature, rois[idx], self.output_size, spatial_scale=scale,
                                        sampling_ratio=self.sampling_ratio, aligned=self.aligned)  # (R_l, C, S, S)
            # a scatter, not result[idx] = ...: a trace records it with idx as data (any box count, any level mix)
            result = result.scatter(0, idx.view(-1, 1, 1, 1).expand_as(pooled), pooled.to(result.dtype))
        return result


class RoIPooler(nn.Module):
    """``forward(features, boxes, image_sizes)`` -> (R, C, S, S) pooled features, R = all boxes."""

    def __init__(self, *, level_names: list[str], output_size: int, sampling_ratio: int = 2, aligned: bool = False):
        super().__init__()
        self.output_size = output_size
        self.align = LevelRoIAlign(featmap_names=level_names, output_size=output_size, sampling_ratio=sampling_ratio,
                                   aligned=aligned)

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        return self.align(features, boxes, image_sizes)
