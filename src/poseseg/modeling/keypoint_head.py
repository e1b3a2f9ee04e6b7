"""Keypoint head: conv tower (optionally deformable) + deconv + 2x upsample -> K heatmaps and 2K offsets,
and optionally a visibility classifier (K x 3 logits from the tower's pooled features).

L_KEY = heatmap loss (``mse``: sigmoid vs Gaussian, the paper's; ``ce``: Mask R-CNN's spatial
softmax) + offset loss (smooth-L1 on cells near each labelled keypoint) + visibility loss
(cross-entropy against the ground truth's flag v in {0, 1, 2}).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from poseseg.modeling.conv_tower import ConvTower, zero_loss
from poseseg.modeling.keypoint_codec import DecodedKeypoints, KeypointCodec
from poseseg.modeling.score_calibration import ScoreCalibration


MSE_SCALE = 20.0


class KeypointHead(nn.Module):
    def __init__(self, *, in_channels: int, num_keypoints: int, num_convs: int, conv_dim: int,
                 heatmap_size: int = 56, offsets: bool = True, loss: str = "mse", sigma: float = 1.0,
                 offset_radius: float = 2.0, deform: bool = False, deform_modulated: bool = True, norm: str = "none",
                 decode: str = "peak", visibility: bool = False, visibility_loss_weight: float = 0.5,
                 visibility_trains_tower: bool = False):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.heatmap_size = heatmap_size
        self.codec = KeypointCodec(heatmap_size=heatmap_size, loss=loss, sigma=sigma,
                                   offset_radius=offset_radius, use_offsets=offsets, decode_mode=decode)
        self.tower = ConvTower(in_channels=in_channels, dim=conv_dim, num_convs=num_convs, deformable=deform,
                               modulated=deform_modulated, norm=norm)
        dim = self.tower.out_channels
        self.heatmap_deconv = nn.ConvTranspose2d(dim, num_keypoints, 4, stride=2, padding=1)
        nn.init.kaiming_normal_(self.heatmap_deconv.weight, mode="fan_out", nonlinearity="relu")
        # mse: start every heatmap near 0.01 so the initial loss is not dominated by the background
        nn.init.constant_(self.heatmap_deconv.bias, -math.log(99.0) if loss == "mse" else 0.0)
        self.score_calibration = ScoreCalibration()  # identity until `poseseg calibrate` fits it
        self.offset_deconv = None
        self.loss_names = ("loss_keypoint", "loss_keypoint_offset") if offsets else ("loss_keypoint",)
        if offsets:
            # zero init: decoding starts as the plain heatmap peak, refinement is learned from there
            self.offset_deconv = nn.ConvTranspose2d(dim, 2 * num_keypoints, 4, stride=2, padding=1)
            nn.init.zeros_(self.offset_deconv.weight)
            nn.init.zeros_(self.offset_deconv.bias)
        self.visibility_fc = nn.Linear(dim, num_keypoints * 3) if visibility else None
        self.visibility_loss_weight = visibility_loss_weight
        self.visibility_trains_tower = visibility_trains_tower
        if visibility:
            self.loss_names += ("loss_keypoint_visibility",)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(self.heatmap_size, self.heatmap_size), mode="bilinear", align_corners=False)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """-> heatmap logits (R, K, H, H), offsets (R, 2K, H, H) or None, visibility logits (R, K, 3) or None."""
        x = self.tower(pooled)  # (R, D, S, S)
        heatmaps = self._upsample(self.heatmap_deconv(x))  # (R, K, H, H) logits
        offsets = None if self.offset_deconv is None else self._upsample(self.offset_deconv(x))  # (R, 2K, H, H)
        visibility = None
        if self.visibility_fc is not None:
            pooled_features = x.mean(dim=(2, 3))  # (R, D)
            if not self.visibility_trains_tower:
                pooled_features = pooled_features.detach()
            visibility = self.visibility_fc(pooled_features).view(x.shape[0], self.num_keypoints, 3)  # (R, K, 3)
        return heatmaps, offsets, visibility

    def loss(self, heatmaps: torch.Tensor, offsets: torch.Tensor | None, visibility: torch.Tensor | None,
             proposals: list[torch.Tensor], matched_idxs: list[torch.Tensor],
             gt_keypoints: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        graph_anchor = zero_loss(heatmaps, *[o for o in (offsets, visibility) if o is not None])
        rois = torch.cat(proposals)  # (R, 4)
        kps = torch.cat([gt[idx] for gt, idx in zip(gt_keypoints, matched_idxs)])  # (R, K, 3)
        losses = {"loss_keypoint": graph_anchor}
        if offsets is not None:
            losses["loss_keypoint_offset"] = graph_anchor
        if visibility is not None:
            losses["loss_keypoint_visibility"] = graph_anchor
        if rois.shape[0] == 0:
            return losses
        if visibility is not None:  # every keypoint of every RoI, the flag as the data gives it
            flags = kps[..., 2].round().long().clamp(0, 2)  # (R, K)
            losses["loss_keypoint_visibility"] = self.visibility_loss_weight * F.cross_entropy(
                visibility.reshape(-1, 3), flags.reshape(-1))
        targets = self.codec.encode(kps, rois)
        if self.codec.loss == "mse":
            # per-map sum of squared errors, averaged over every map (unlabelled ones have zero targets),
            # divided by MSE_SCALE: at initialisation the raw sum's gradient norm is ~20x the ce loss's
            # (every background pixel pushes the same way), enough to blow up training from scratch.
            sq_err = ((heatmaps.sigmoid() - targets.heatmaps) ** 2).sum((2, 3))  # (R, K)
            losses["loss_keypoint"] = sq_err.mean() / MSE_SCALE
        elif targets.valid.any():
            logits = heatmaps.flatten(2)[targets.valid]  # (V, H*H)
            if self.codec.loss == "ce_soft":  # cross-entropy against the normalised Gaussian around the keypoint
                soft = targets.heatmaps.flatten(2)[targets.valid]  # (V, H*H)
                losses["loss_keypoint"] = F.cross_entropy(logits, soft / soft.sum(dim=1, keepdim=True))
            else:
                losses["loss_keypoint"] = F.cross_entropy(logits, targets.indices[targets.valid])
        if offsets is not None and targets.offset_weights.any():
            num_rois, num_kps, size, _ = heatmaps.shape
            pred = offsets.view(num_rois, num_kps, 2, size, size).permute(0, 1, 3, 4, 2)  # (R, K, H, H, 2)
            tgt = targets.offsets.permute(0, 1, 3, 4, 2)
            w = targets.offset_weights
            losses["loss_keypoint_offset"] = F.smooth_l1_loss(pred[w], tgt[w], beta=1 / 9)
        return losses

    def decode(self, heatmaps: torch.Tensor, offsets: torch.Tensor | None, visibility: torch.Tensor | None,
               rois: torch.Tensor) -> DecodedKeypoints:
        """The codec's keypoints for (R, 4) RoIs, scores through the fitted calibration, and the most
        likely visibility flag."""
        decoded = self.codec.decode(heatmaps, offsets, rois)
        decoded.scores = self.score_calibration(decoded.scores)  # (R, K)
        if visibility is not None:
            decoded.visibility = visibility.argmax(dim=-1)  # (R, K) in {0, 1, 2}
        return decoded

    @property
    def ranks_by_keypoints(self) -> bool:
        """Whether people are ranked for keypoint AP by :meth:`instance_scores` (a calibrated head) rather
        than by their box score."""
        return bool(self.score_calibration.fitted)

    def instance_scores(self, box_scores: torch.Tensor, keypoint_scores: torch.Tensor) -> torch.Tensor:
        """(N,) the score that ranks people for keypoint AP once the keypoint scores are calibrated: the box
        score times the mean keypoint probability (measured best: benchmarks/RESULTS.md)."""
        return box_scores * keypoint_scores.mean(dim=-1)

    @torch.no_grad()
    def inference(self, heatmaps: torch.Tensor, offsets: torch.Tensor | None, visibility: torch.Tensor | None,
                  boxes: list[torch.Tensor]) -> list[DecodedKeypoints]:
        decoded = self.decode(heatmaps, offsets, visibility, torch.cat(boxes))
        counts = [b.shape[0] for b in boxes]
        flags = decoded.visibility.split(counts) if decoded.visibility is not None else [None] * len(boxes)
        return [DecodedKeypoints(k, s, p, v) for k, s, p, v in
                zip(decoded.keypoints.split(counts), decoded.scores.split(counts), decoded.peaks.split(counts), flags)]
