"""RoI feature pooling over the FPN levels (RoIAlign; deformable RoI pooling is a drop-in)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign


class RoIPooler(nn.Module):
    """``forward(features, boxes, image_sizes)`` -> (R, C, S, S) pooled features, R = all boxes."""

    def __init__(self, *, level_names: list[str], output_size: int, sampling_ratio: int = 2):
        super().__init__()
        self.output_size = output_size
        self.align = MultiScaleRoIAlign(featmap_names=level_names, output_size=output_size,
                                        sampling_ratio=sampling_ratio)

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        return self.align(features, boxes, image_sizes)
