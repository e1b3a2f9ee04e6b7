"""From the network's RoI-level outputs to results in the original picture's pixels: the one way.

The network (``PoseSegModel.predict_rois`` or an exported graph run by ``OrtModel.predict_rois``)
stops at the RoI level, in the pixels of the resized picture it saw:

    boxes            (N, 4) xyxy               scores (N,), labels (N,)
    mask_probs       (N, 1, M, M) in [0, 1]    the predicted class's mask over each box
    keypoints        (N, K, 3) x, y, 1         decoded (peak + offset; flip TTA already averaged)
    keypoint_scores  (N, K)                    keypoint_peaks (N, K, 2) the peaks before the offsets
    keypoint_visibility (N, K) int64           0 not labelled, 1 occluded, 2 visible (visibility head only)
    keypoint_instance_scores (N,)              the score ranking people for keypoint AP (box score x mean
                                               keypoint probability; calibrated models only)

:func:`postprocess` maps boxes and keypoints to the original picture and pastes the masks with
the one half-pixel-aligned paste (:mod:`poseseg.modeling.mask_paste`): into full (N, 1, H, W)
probability planes (``masks="image"``, the torchvision-style API) or into each box's own pixels
(``masks="boxes"``: ``box_masks``, whose memory does not grow with the photo). :func:`coco_records`
is the one writer of COCO result records, used by evaluation, ``predict`` and ``serve``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as mask_util
from torchvision.models.detection.transform import resize_boxes, resize_keypoints

from poseseg.modeling.mask_paste import BoxMask, box_mask_to_rle, paste_full, paste_in_boxes

MASK_FORMS = ("image", "boxes")


@dataclass
class RoIOutputs:
    """A batch's network outputs before post-processing (the keys are in the module docstring)."""

    detections: list[dict[str, torch.Tensor]]  # one per image, in the resized picture's pixels
    resized_sizes: list[tuple[int, int]]  # (h, w) of each picture as the network saw it
    original_sizes: list[tuple[int, int]]  # (h, w) of each input picture
    # the trunk's FPN levels (B, C, h, w) when asked for (``predict_rois(..., keep_features=True)``)
    features: dict[str, torch.Tensor] | None = None


def postprocess(outputs: RoIOutputs, *, masks: str = "image", score_thresh: float = 0.0,
                keypoint_peaks: bool = False) -> list[dict]:
    """One Prediction per image (``poseseg.types``) with the detections scoring ``>= score_thresh``.

    ``masks``: ``image`` gives ``masks`` (N, 1, H, W) probabilities; ``boxes`` gives ``box_masks``, a
    list of :class:`BoxMask` (the same values on each box's pixels only). ``keypoint_peaks``: add
    the (N, K, 2) heatmap peaks before the offset refinement (for drawing the offsets).
    """
    if masks not in MASK_FORMS:
        raise ValueError(f"masks={masks!r}; choose one of {', '.join(MASK_FORMS)}")
    results = []
    for det, resized, original in zip(outputs.detections, outputs.resized_sizes, outputs.original_sizes):
        keep = det["scores"] >= score_thresh
        det = {k: v[keep] for k, v in det.items()}
        boxes = resize_boxes(det["boxes"], resized, original)  # (N, 4) in the original picture
        out = {"boxes": boxes, "scores": det["scores"], "labels": det["labels"]}
        if "mask_probs" in det:
            if masks == "image":
                out["masks"] = paste_full(det["mask_probs"], boxes, original)  # (N, 1, H, W)
            else:
                out["box_masks"] = paste_in_boxes(det["mask_probs"], boxes, original)
        if "keypoints" in det:
            out["keypoints"] = resize_keypoints(det["keypoints"], resized, original)  # (N, K, 3)
            out["keypoint_scores"] = det["keypoint_scores"]
            if "keypoint_instance_scores" in det:
                out["keypoint_instance_scores"] = det["keypoint_instance_scores"]
            if "keypoint_visibility" in det:
                out["keypoint_visibility"] = det["keypoint_visibility"]
            if keypoint_peaks:
                out["keypoint_peaks"] = resize_keypoints(det["keypoint_peaks"], resized, original)  # (N, K, 2)
        results.append(out)
    return results


def coco_records(pred: dict, image_id: int, *, category_id: int = 1, extra: dict | None = None,
                 mask_thresh: float = 0.5) -> list[dict]:
    """One image's prediction (tensors or numpy) -> one COCO result record per person: ``bbox`` (xywh),
    ``score``, and where present ``segmentation`` (RLE), ``keypoints`` (flat x, y, v: v from the visibility
    head, else 1, the results convention), ``keypoint_scores`` and ``track_id``; ``extra`` is merged into each."""
    boxes = np.asarray(_numpy(pred["boxes"]), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(_numpy(pred["scores"]), dtype=np.float64).reshape(-1)
    records = []
    for i, (box, score) in enumerate(zip(boxes, scores)):
        x1, y1, x2, y2 = box.tolist()
        record = {"image_id": int(image_id), "category_id": int(category_id), "score": float(score),
                  "bbox": [x1, y1, x2 - x1, y2 - y1]}
        if "box_masks" in pred:
            record["segmentation"] = box_mask_to_rle(pred["box_masks"][i], mask_thresh)
        elif "masks" in pred:
            record["segmentation"] = _full_mask_rle(_numpy(pred["masks"])[i], mask_thresh)
        if "keypoints" in pred:
            kps = np.asarray(_numpy(pred["keypoints"])[i], dtype=np.float64)  # (K, 3)
            flags = (np.asarray(_numpy(pred["keypoint_visibility"])[i], dtype=np.float64)[:, None]
                     if "keypoint_visibility" in pred else np.ones((len(kps), 1)))  # (K, 1)
            record["keypoints"] = np.concatenate([kps[:, :2], flags], axis=1).reshape(-1).tolist()
            if "keypoint_scores" in pred:
                record["keypoint_scores"] = [float(s) for s in _numpy(pred["keypoint_scores"])[i]]
            if "keypoint_instance_scores" in pred:
                record["keypoints_score"] = float(_numpy(pred["keypoint_instance_scores"])[i])
        if "track_ids" in pred:
            record["track_id"] = int(pred["track_ids"][i])
        records.append({**record, **(extra or {})})
    return records


IOU_TYPE_FIELDS = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}


def records_by_iou_type(records: list[dict]) -> dict[str, list[dict]]:
    """Person records -> the per-iou-type result lists a COCO evaluator takes (bbox, segm, keypoints)."""
    out: dict[str, list[dict]] = {t: [] for t in IOU_TYPE_FIELDS}
    for r in records:
        base = {"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"]}
        for iou_type, key in IOU_TYPE_FIELDS.items():
            if key in r:
                score = r.get("keypoints_score", r["score"]) if iou_type == "keypoints" else r["score"]
                out[iou_type].append({**base, "score": score, key: r[key]})
    return out


def _full_mask_rle(mask: np.ndarray, threshold: float) -> dict:
    """(H, W) bool or (1, H, W) / (H, W) probabilities -> COCO RLE with ``counts`` as str."""
    mask = mask[0] if mask.ndim == 3 else mask
    binary = mask if mask.dtype == bool else mask >= threshold
    rle = mask_util.encode(np.asfortranarray(binary, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


__all__ = ["RoIOutputs", "postprocess", "coco_records", "records_by_iou_type", "BoxMask", "MASK_FORMS"]
