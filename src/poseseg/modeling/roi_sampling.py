"""Match proposals to ground truth and sample the RoIs the heads train on."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou


@dataclass
class SampledRoIs:
    """Per-image training RoIs: proposals, their class labels and matched ground-truth indices."""

    proposals: list[torch.Tensor]  # each (R_i, 4) xyxy
    labels: list[torch.Tensor]  # each (R_i,) int64, 0 = background
    matched_idxs: list[torch.Tensor]  # each (R_i,) index into that image's (non-crowd) targets

    def positives(self, max_per_image: int, generator: torch.Generator | None = None) -> "SampledRoIs":
        """The foreground RoIs, at most ``max_per_image`` per image (a random subset when capped)."""
        out = SampledRoIs([], [], [])
        for props, labels, idxs in zip(self.proposals, self.labels, self.matched_idxs):
            pos = torch.where(labels > 0)[0]
            if pos.numel() > max_per_image:
                perm = torch.randperm(pos.numel(), device=pos.device, generator=generator)[:max_per_image]
                pos = pos[perm]
            out.proposals.append(props[pos])
            out.labels.append(labels[pos])
            out.matched_idxs.append(idxs[pos])
        return out

    def num_rois(self) -> int:
        return sum(p.shape[0] for p in self.proposals)


class ProposalSampler:
    """Adds the ground-truth boxes to the proposals, matches by IoU and samples a balanced set.

    Proposals overlapping a crowd region (IoU >= fg_iou) are never sampled: crowd regions are
    neither positives nor negatives.
    """

    def __init__(self, *, fg_iou: float, bg_iou: float, batch_size_per_image: int, positive_fraction: float):
        self.matcher = det_utils.Matcher(fg_iou, bg_iou, allow_low_quality_matches=False)
        self.sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.fg_iou = fg_iou

    def __call__(self, proposals: list[torch.Tensor], targets: list[dict]) -> SampledRoIs:
        all_props, all_labels, all_idxs = [], [], []
        for props, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            crowd = target.get("crowd_boxes")
            props = torch.cat([props, gt_boxes])  # (P + G, 4): the gt boxes are always candidates
            if gt_boxes.numel() == 0:
                matched = torch.full((props.shape[0],), -1, dtype=torch.int64, device=props.device)  # background
                labels = torch.zeros_like(matched)
                idxs = torch.zeros_like(matched)
            else:
                matched = self.matcher(box_iou(gt_boxes, props))  # (P + G,): gt index, -1 bg, -2 between
                idxs = matched.clamp(min=0)
                labels = gt_labels[idxs].to(torch.int64)
                labels[matched == self.matcher.BELOW_LOW_THRESHOLD] = 0
                labels[matched == self.matcher.BETWEEN_THRESHOLDS] = -1
            if crowd is not None and crowd.numel() > 0:
                near_crowd = box_iou(crowd, props).max(dim=0).values >= self.fg_iou
                labels[near_crowd & (labels == 0)] = -1
            pos_mask, neg_mask = self.sampler([labels])
            keep = torch.where(pos_mask[0] | neg_mask[0])[0]
            all_props.append(props[keep])
            all_labels.append(labels[keep])
            all_idxs.append(idxs[keep])
        return SampledRoIs(all_props, all_labels, all_idxs)


def jittered_gt_rois(targets: list[dict], *, copies: int, jitter: float,
                     image_sizes: list[tuple[int, int]]) -> SampledRoIs:
    """Each ground-truth person's box plus ``copies`` randomly shifted and scaled versions of it
    (each side moves by up to ``jitter`` times the box's width or height): clean, plentiful RoIs for
    the mask and keypoint heads, close to the detected boxes they see at inference."""
    out = SampledRoIs([], [], [])
    for target, (height, width) in zip(targets, image_sizes):
        boxes = target["boxes"]  # (G, 4)
        n = boxes.shape[0]
        idxs = torch.arange(n, device=boxes.device).repeat(copies + 1)  # (G * (copies + 1),)
        rois = boxes[idxs].clone()
        if copies and n:
            size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)[idxs[n:]]  # (G * copies, 4): w, h, w, h
            rois[n:] += (torch.rand_like(size) * 2 - 1) * jitter * size
            rois[n:, 0::2] = rois[n:, 0::2].clamp(0, width)
            rois[n:, 1::2] = rois[n:, 1::2].clamp(0, height)
            degenerate = (rois[:, 2:] - rois[:, :2] < 1).any(dim=1)
            rois[degenerate] = boxes[idxs[degenerate]]
        out.proposals.append(rois)
        out.labels.append(target["labels"][idxs].to(torch.int64))
        out.matched_idxs.append(idxs)
    return out
