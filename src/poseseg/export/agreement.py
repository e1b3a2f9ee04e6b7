"""How closely one runner's results follow another's on the same pictures: an int8 file against the fp32
file it was quantized from (or an export against its PyTorch model).

Every reference detection scoring >= ``min_score`` is paired with the candidate detection of highest
box IoU (a pair needs IoU >= 0.5); over the pairs: box IoU, mask IoU (masks cut at 0.5), keypoint
distance in pixels (keypoints the reference scores >= ``min_keypoint_score``), and the change of box
and keypoint scores. The keypoint scores' mean ratio shows a collapse of confidences (mmpose#3148).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from poseseg.ops.boxes import box_iou

MIN_PAIR_IOU = 0.5


@dataclass
class Agreement:
    pictures: int
    people: int  # reference detections scoring >= min_score
    paired: int  # of those, found by the candidate (box IoU >= 0.5)
    box_iou: float  # mean over pairs (1.0 when there are none)
    mask_iou: float | None  # mean over pairs; None without masks
    keypoint_px: float | None  # mean distance over paired keypoints; None without keypoints
    keypoint_px_p90: float | None  # 90th percentile of that distance
    score_diff: float  # mean |box score change| over pairs
    keypoint_score_diff: float | None  # mean |keypoint score change|
    keypoint_score_ratio: float | None  # candidate's mean keypoint score / the reference's (1: no collapse)

    def summary(self) -> str:
        parts = [f"{self.paired}/{self.people} people found again", f"box IoU {self.box_iou:.3f}"]
        if self.mask_iou is not None:
            parts.append(f"mask IoU {self.mask_iou:.3f}")
        if self.keypoint_px is not None:
            parts.append(f"keypoints {self.keypoint_px:.2f} px (90 %: {self.keypoint_px_p90:.2f})")
        parts.append(f"|score change| {self.score_diff:.4f}")
        if self.keypoint_score_diff is not None:
            parts.append(f"|keypoint score change| {self.keypoint_score_diff:.4f} (mean ratio "
                         f"{self.keypoint_score_ratio:.3f})")
        return f"on {self.pictures} pictures: " + ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


def compare(reference, candidate, images: list[torch.Tensor], *, min_score: float = 0.5,
            min_keypoint_score: float = 0.2) -> Agreement:
    """``reference`` and ``candidate``: anything called like the model in eval mode (``PoseSegModel``,
    ``OrtModel``), each image a (3, H, W) float tensor in [0, 1]."""
    box_ious, mask_ious, px, score_d, kp_ref, kp_got = [], [], [], [], [], []
    people = 0
    with torch.inference_mode():
        for image in images:
            ref, got = reference([image])[0], candidate([image])[0]
            keep = np.flatnonzero(ref["scores"].numpy() >= min_score)
            people += len(keep)
            if not len(keep) or not len(got["boxes"]):
                continue
            iou = box_iou(ref["boxes"].numpy()[keep], got["boxes"].numpy())  # (R, C)
            for row, r in zip(iou, keep):
                c = int(row.argmax())
                if row[c] < MIN_PAIR_IOU:
                    continue
                box_ious.append(row[c])
                score_d.append(abs(float(ref["scores"][r] - got["scores"][c])))
                if "masks" in ref:
                    mask_ious.append(mask_iou(ref["masks"][r], got["masks"][c]))
                if "keypoints" in ref:
                    seen = ref["keypoint_scores"][r].numpy() >= min_keypoint_score  # (K,)
                    d = (ref["keypoints"][r, :, :2] - got["keypoints"][c, :, :2]).norm(dim=-1).numpy()  # (K,)
                    px.extend(d[seen].tolist())
                    kp_ref.extend(ref["keypoint_scores"][r].tolist())
                    kp_got.extend(got["keypoint_scores"][c].tolist())
    kp_ref_a, kp_got_a = np.asarray(kp_ref), np.asarray(kp_got)
    has_kp = bool(len(kp_ref_a))
    return Agreement(
        pictures=len(images), people=people, paired=len(box_ious),
        box_iou=float(np.mean(box_ious)) if box_ious else 1.0,
        mask_iou=float(np.mean(mask_ious)) if mask_ious else None,
        keypoint_px=float(np.mean(px)) if px else (0.0 if has_kp else None),
        keypoint_px_p90=float(np.percentile(px, 90)) if px else (0.0 if has_kp else None),
        score_diff=float(np.mean(score_d)) if score_d else 0.0,
        keypoint_score_diff=float(np.abs(kp_ref_a - kp_got_a).mean()) if has_kp else None,
        keypoint_score_ratio=float(kp_got_a.mean() / max(kp_ref_a.mean(), 1e-9)) if has_kp else None)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two (1, H, W) probability masks cut at 0.5 (1.0 when both are empty)."""
    a, b = a >= 0.5, b >= 0.5
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
