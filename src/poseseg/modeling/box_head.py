"""Box head: two fc layers -> class scores and per-class box deltas (Fast R-CNN), L_OBJ = CE + smooth-L1."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import boxes as box_ops


class BoxHead(nn.Module):
    def __init__(self, *, in_channels: int, pooled_size: int, fc_dim: int, num_classes: int,
                 bbox_reg_weights: list[float], score_thresh: float, nms_thresh: float,
                 detections_per_image: int, nested_thresh: float = 0.0):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * pooled_size**2, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.cls_score = nn.Linear(fc_dim, num_classes)
        self.bbox_pred = nn.Linear(fc_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = det_utils.BoxCoder(tuple(bbox_reg_weights))
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.nested_thresh = nested_thresh  # > 0: drop a box this much inside a higher-scoring one of its class

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pooled.flatten(1)  # (R, C*S*S)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))  # (R, fc_dim)
        return self.cls_score(x), self.bbox_pred(x)  # (R, num_classes), (R, num_classes*4)

    def loss(self, class_logits: torch.Tensor, box_deltas: torch.Tensor, labels: list[torch.Tensor],
             proposals: list[torch.Tensor], matched_gt_boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        labels_all = torch.cat(labels)  # (R,)
        targets = self.box_coder.encode(matched_gt_boxes, proposals)
        targets = torch.cat(targets)  # (R, 4)
        cls_loss = F.cross_entropy(class_logits, labels_all)
        pos = torch.where(labels_all > 0)[0]
        deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)[pos, labels_all[pos]]  # (P, 4)
        # smooth-L1 summed over positives, normalised by all sampled RoIs (Fast R-CNN); 0 when none.
        reg_loss = F.smooth_l1_loss(deltas, targets[pos], beta=1 / 9, reduction="sum") / max(labels_all.numel(), 1)
        return {"loss_box_cls": cls_loss, "loss_box_reg": reg_loss}

    @torch.no_grad()
    def inference(self, class_logits: torch.Tensor, box_deltas: torch.Tensor, proposals: list[torch.Tensor],
                  image_sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Per image: decode, clip, drop background and low scores, per-class NMS, keep the top N."""
        num_classes = class_logits.shape[-1]
        counts = [p.shape[0] for p in proposals]
        boxes_all = self.box_coder.decode(box_deltas, proposals).split(counts)  # each (R_i, C, 4)
        scores_all = F.softmax(class_logits, -1).split(counts)  # each (R_i, C)
        results = []
        for boxes, scores, size in zip(boxes_all, scores_all, image_sizes):
            boxes = box_ops.clip_boxes_to_image(boxes, size)
            labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_image]
            if self.nested_thresh > 0:
                keep = keep[~nested_in_higher(boxes[keep], labels[keep], self.nested_thresh)]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results


def nested_in_higher(boxes: torch.Tensor, labels: torch.Tensor, thresh: float) -> torch.Tensor:
    """(N,) bool: the box lies at least ``thresh`` of its own area inside an earlier (higher-scoring) box of
    its class. NMS keeps such pairs (a person and a part of them have IoU < 0.5); boxes sorted by score."""
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])  # (N, N, 2)
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N, N)
    inside = inter / box_ops.box_area(boxes).clamp(min=1e-6)[:, None]  # row i's share inside column j
    earlier = torch.ones_like(inter, dtype=torch.bool).tril(-1)  # j < i: scored higher
    return ((inside >= thresh) & earlier & (labels[:, None] == labels[None, :])).any(dim=1)
