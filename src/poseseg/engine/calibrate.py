"""The keypoint score threshold for drawing, read from the scores a trained model actually produces.

A keypoint score (the heatmap's peak probability) has no fixed scale: a spatial softmax over a
56 x 56 map gives peaks of a few percent for a right keypoint. So instead of a constant, pick the
threshold on labelled data: a drawn keypoint counts as right when it lies within the OKS 0.5
radius of its ground truth (COCO's per-keypoint sigmas and the person's area), and the threshold
is the score that maximises F1 of right keypoints over all keypoints of the detected people.
"""
from __future__ import annotations

import numpy as np

from poseseg.ops.boxes import box_iou


def keypoint_score_threshold(predictions: list[tuple[list[dict], dict]], sigmas: list[float], *,
                             min_box_score: float = 0.5, min_iou: float = 0.5) -> tuple[float, dict]:
    """``predictions``: per image (its COCO ground-truth annotations, the model's result with
    ``boxes`` (N, 4) xyxy, ``scores``, ``keypoints`` (N, K, 3), ``keypoint_scores`` (N, K)).

    Returns (threshold, stats) with stats ``{"keypoints", "right", "precision", "recall"}``.
    """
    k2 = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    scores, right = [], []
    for anns, result in predictions:
        people = [a for a in anns if not a.get("iscrowd") and any(v > 0 for v in a["keypoints"][2::3])]
        keep = np.asarray(result["scores"]).reshape(-1) >= min_box_score
        boxes = np.asarray(result["boxes"], dtype=np.float64).reshape(-1, 4)[keep]
        if not people or not len(boxes):
            continue
        gt_boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in people)])
        iou = box_iou(boxes, gt_boxes)  # (N, G)
        kps = np.asarray(result["keypoints"], dtype=np.float64)[keep]
        kp_scores = np.asarray(result["keypoint_scores"], dtype=np.float64)[keep]
        for i in range(len(boxes)):
            g = int(iou[i].argmax())
            if iou[i, g] < min_iou:
                continue
            gt = np.asarray(people[g]["keypoints"], dtype=np.float64).reshape(-1, 3)
            d2 = ((kps[i, :, :2] - gt[:, :2]) ** 2).sum(-1)
            oks = np.exp(-d2 / (2 * max(people[g]["area"], 1.0) * k2))
            scores.append(kp_scores[i])
            right.append((gt[:, 2] > 0) & (oks >= 0.5))
    if not scores:
        return 0.0, {"keypoints": 0, "right": 0, "precision": 0.0, "recall": 0.0}
    scores, right = np.concatenate(scores), np.concatenate(right)
    order = np.argsort(-scores)
    hits = np.cumsum(right[order])  # right keypoints among the top-n scores
    drawn = np.arange(1, len(scores) + 1)
    f1 = 2 * hits / (drawn + right.sum()) if right.any() else np.zeros(len(scores))
    best = int(f1.argmax())
    stats = {"keypoints": int(len(scores)), "right": int(right.sum()),
             "precision": float(hits[best] / drawn[best]), "recall": float(hits[best] / max(right.sum(), 1))}
    return float(scores[order][best]), stats

