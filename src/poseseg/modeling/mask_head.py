"""Mask head: conv tower + 2x deconv -> per-class 28x28 mask logits; L_SEG = per-pixel sigmoid BCE,
optionally weighted up on the cells at the target's edges (``boundary_weight``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from poseseg.modeling.conv_tower import ConvTower, zero_loss


class MaskHead(nn.Module):
    loss_names = ("loss_mask",)

    def __init__(self, *, in_channels: int, num_convs: int, conv_dim: int, num_classes: int, norm: str = "none",
                 boundary_weight: float = 0.0):
        super().__init__()
        self.boundary_weight = boundary_weight  # extra BCE weight of the cells on a target's edge (0: plain BCE)
        self.tower = ConvTower(in_channels=in_channels, dim=conv_dim, num_convs=num_convs, norm=norm)
        self.deconv = nn.ConvTranspose2d(self.tower.out_channels, conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.predictor.weight, std=0.001)  # small logits: the initial loss is ~log 2
        for layer in (self.deconv, self.predictor):
            nn.init.zeros_(layer.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.tower(pooled)  # (R, D, S, S)
        x = F.relu(self.deconv(x))  # (R, D, 2S, 2S)
        return self.predictor(x)  # (R, num_classes, 2S, 2S)

    def loss(self, mask_logits: torch.Tensor, proposals: list[torch.Tensor], labels: list[torch.Tensor],
             matched_idxs: list[torch.Tensor], gt_masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """BCE between the logits of each RoI's class and its ground-truth mask cropped to the RoI."""
        size = mask_logits.shape[-1]
        targets = [crop_masks(m, p, i, size) for m, p, i in zip(gt_masks, proposals, matched_idxs)]
        labels_all = torch.cat(labels)
        if labels_all.numel() == 0:
            return {"loss_mask": zero_loss(mask_logits)}
        logits = mask_logits[torch.arange(labels_all.numel(), device=labels_all.device), labels_all]  # (R, M, M)
        target = torch.cat(targets)  # (R, M, M) of {0, 1}
        if self.boundary_weight <= 0:
            return {"loss_mask": F.binary_cross_entropy_with_logits(logits, target)}
        # a weighted mean: the loss keeps plain BCE's scale, the edge cells (where AP75 is lost) count more
        weight = 1.0 + self.boundary_weight * edge_band(target)
        per_cell = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return {"loss_mask": (per_cell * weight).sum() / weight.sum()}

    @torch.no_grad()
    def inference(self, mask_logits: torch.Tensor, labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per image: (N, 1, M, M) probabilities of the predicted class, in RoI coordinates."""
        labels_all = torch.cat(labels)
        probs = mask_logits[torch.arange(labels_all.numel(), device=labels_all.device), labels_all].sigmoid()
        return list(probs[:, None].split([len(lbl) for lbl in labels]))


def crop_masks(gt_masks: torch.Tensor, boxes: torch.Tensor, matched_idxs: torch.Tensor, size: int) -> torch.Tensor:
    """Resample each RoI's matched (H, W) mask into the RoI, binarised at 0.5: (R, size, size) of {0, 1}.

    Binary targets (as Detectron2) let the loss reach 0; soft ones would floor it at their entropy.
    """
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat([matched_idxs[:, None].to(boxes), boxes], dim=1)  # (R, 5) batch index + box
    # aligned: the RoI's edges are pixel edges (COCO's continuous coordinates), as the paste assumes
    soft = roi_align(gt_masks[:, None].to(boxes), rois, (size, size), 1.0, sampling_ratio=2, aligned=True)[:, 0]
    return (soft >= 0.5).to(boxes.dtype)


def edge_band(masks: torch.Tensor) -> torch.Tensor:
    """(R, M, M) binary masks -> (R, M, M) 1.0 on the cells within one cell (8-neighbourhood) of an edge
    between inside and outside: the 3x3 dilation minus the 3x3 erosion."""
    m = masks[:, None]  # (R, 1, M, M)
    dilated = F.max_pool2d(m, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-m, 3, stride=1, padding=1)  # the picture's border counts as inside: no band there
    return (dilated - eroded)[:, 0]
