"""Feature pyramid over the configured ResNet stages: res{s} -> p{s}, plus p6 for the RPN."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


class FPN(FeaturePyramidNetwork):
    """torchvision's FPN (same parameter names) with named outputs ``p{stage}`` and optional ``p6``.

    The paper's "single scale" is ``in_stages=[5]``, its "multi scale" ``[3, 4, 5]``;
    Detectron2's usual setting is ``[2, 3, 4, 5]``.
    """

    def __init__(self, *, in_channels: dict[str, int], in_stages: list[int], out_channels: int = 256,
                 extra_pool: bool = True):
        self.in_stages = list(in_stages)
        super().__init__([in_channels[f"res{s}"] for s in self.in_stages], out_channels,
                         extra_blocks=LastLevelMaxPool() if extra_pool else None)
        self.out_channels = out_channels
        self.extra_pool = extra_pool

    @property
    def level_names(self) -> list[str]:
        """Names of the output levels, finest first; the RPN uses all, the RoI poolers all but p6."""
        names = [f"p{s}" for s in self.in_stages]
        if self.extra_pool:
            names.append(f"p{self.in_stages[-1] + 1}")
        return names

    def forward(self, features: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
        selected = OrderedDict((f"res{s}", features[f"res{s}"]) for s in self.in_stages)
        outputs = super().forward(selected)
        return OrderedDict(zip(self.level_names, outputs.values()))  # each (B, C, H/2**l, W/2**l)
