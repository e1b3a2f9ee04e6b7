"""Feature pyramid over the configured ResNet stages: res{s} -> p{s}, plus p6 for the RPN, and optionally
one level finer than the finest (p2 over res3-res5) that only the mask head reads."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


class FPN(FeaturePyramidNetwork):
    """torchvision's FPN (same parameter names) with named outputs ``p{stage}`` and optional ``p6``.

    The paper's "single scale" is ``in_stages=[5]``, its "multi scale" ``[3, 4, 5]``;
    Detectron2's usual setting is ``[2, 3, 4, 5]``.
    """

    def __init__(self, *, in_channels: dict[str, int], in_stages: list[int], out_channels: int = 256,
                 extra_pool: bool = True, fine_level: bool = False):
        self.in_stages = list(in_stages)
        super().__init__([in_channels[f"res{s}"] for s in self.in_stages], out_channels,
                         extra_blocks=LastLevelMaxPool() if extra_pool else None)
        self.out_channels = out_channels
        self.extra_pool = extra_pool
        self.fine_stage = self.in_stages[0] - 1 if fine_level else None
        if self.fine_stage is not None:
            if f"res{self.fine_stage}" not in in_channels:
                raise ValueError(f"a level finer than p{self.in_stages[0]} needs res{self.fine_stage}, which the "
                                 "backbone does not have; drop model.mask.fine_level")
            # p_fine = 3x3(lateral(res_fine) + 2x nearest(p_finest)): the FPN's top-down step once more
            self.fine_lateral = nn.Conv2d(in_channels[f"res{self.fine_stage}"], out_channels, 1)
            self.fine_out = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            for conv in (self.fine_lateral, self.fine_out):
                nn.init.kaiming_uniform_(conv.weight, a=1)  # torchvision's FPN init
                nn.init.zeros_(conv.bias)

    @property
    def level_names(self) -> list[str]:
        """Names of the output levels, finest first; the RPN uses all, the RoI poolers all but p6."""
        names = [f"p{s}" for s in self.in_stages]
        if self.extra_pool:
            names.append(f"p{self.in_stages[-1] + 1}")
        return names

    @property
    def fine_name(self) -> str | None:
        """The mask head's finer level (``p{finest - 1}``), or None."""
        return None if self.fine_stage is None else f"p{self.fine_stage}"

    def forward(self, features: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
        selected = OrderedDict((f"res{s}", features[f"res{s}"]) for s in self.in_stages)
        outputs = OrderedDict(zip(self.level_names, super().forward(selected).values()))  # (B, C, H/2**l, W/2**l)
        if self.fine_stage is not None:
            lateral = self.fine_lateral(features[f"res{self.fine_stage}"])  # (B, C, 2h, 2w)
            coarser = F.interpolate(outputs[self.level_names[0]], size=lateral.shape[-2:], mode="nearest")
            outputs[self.fine_name] = self.fine_out(lateral + coarser)
        return outputs
