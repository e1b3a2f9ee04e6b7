"""The stack of 3x3 conv (+ GroupNorm) + ReLU layers shared by the mask and keypoint heads."""
from __future__ import annotations

import torch
from torch import nn


class ConvTower(nn.Module):
    """``num_convs`` 3x3 convs of ``dim`` channels, each followed by ReLU; optionally deformable.

    ``norm="gn"`` adds GroupNorm before each ReLU (Detectron2's GN heads): heads trained from scratch
    learn faster with it.
    """

    def __init__(self, *, in_channels: int, dim: int, num_convs: int, deformable: bool = False,
                 modulated: bool = True, norm: str = "none"):
        super().__init__()
        if norm not in ("none", "gn"):
            raise ValueError(f"head norm {norm!r}; choose none or gn")
        layers = []
        for i in range(num_convs):
            c_in = in_channels if i == 0 else dim
            if deformable:
                from poseseg.ops import DeformConv2d

                conv = DeformConv2d(c_in, dim, 3, padding=1, modulated=modulated)
            else:
                conv = nn.Conv2d(c_in, dim, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers.append(conv)
        self.convs = nn.ModuleList(layers)
        self.norms = nn.ModuleList(nn.GroupNorm(min(32, dim // 2), dim) for _ in layers) if norm == "gn" else None
        self.out_channels = dim if num_convs else in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = torch.relu(x)
        return x


def zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A 0 that is still connected to the graph, so every parameter gets a (zero) gradient."""
    return sum(t.sum() * 0.0 for t in tensors)
