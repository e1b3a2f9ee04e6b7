"""A trunk: a backbone and its FPN. The model's own is ``model.backbone`` + ``model.fpn``; with
``model.mask.trunk=own`` a second one (``model.mask_trunk``) feeds the mask head alone, so a mask head
trained on another detector's features (torchvision's or Detectron2's Mask R-CNN) reads those features."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from poseseg.modeling.backbone import ResNet
from poseseg.modeling.fpn import FPN


class Trunk(nn.Module):
    def __init__(self, *, backbone: ResNet, fpn: FPN):
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn

    def forward(self, pixels: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.backbone(pixels))  # p{l}: (B, C, H/2**l, W/2**l)
