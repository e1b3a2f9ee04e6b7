"""A prediction (numpy arrays) -> the JSON the API returns, in ``simple`` or ``coco`` form.

A prediction's masks are ``box_masks`` (a list of :class:`BoxMask`, as ``Predictor.predict_batch(...,
full_masks=False)`` gives them to the server: memory that does not grow with the photo) or ``masks``
((N, H, W) bool planes).

``simple``: ``{"image", "people": [{"box": [x1, y1, x2, y2], "score", "mask", "keypoints":
[[x, y, score], ...]}], "keypoint_schema"}``. ``coco``: ``{"image", "results": [COCO result
records, as in poseseg predict's predictions.json], "categories", "keypoint_schema"}``. Masks
are COCO RLE (``{"size": [h, w], "counts": str}``) or polygons (lists of flat ``[x1, y1, x2,
y2, ...]`` outlines, ``poseseg.data.polygons``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from poseseg.data.polygons import mask_polygons
from poseseg.keypoint_schema import KeypointSchema
from poseseg.modeling.mask_paste import BoxMask, box_mask_to_rle, masks_to_image
from poseseg.modeling.postprocess import coco_records

OUTPUTS = ("boxes", "masks", "keypoints")
FORMATS = ("simple", "coco")
MASK_FORMATS = ("rle", "polygon")
MASK_THRESH = 0.5  # a pixel belongs to the person at this mask probability (as in Predictor and COCO records)


@dataclass
class OutputOptions:
    score_thresh: float
    outputs: tuple[str, ...]
    format: str = "simple"
    mask_format: str = "rle"


def select(pred: dict, score_thresh: float, outputs: tuple[str, ...]) -> dict:
    """The people at or above ``score_thresh``, with boxes/scores and only the asked-for masks/keypoints;
    their masks as a list (``BoxMask`` or (H, W) bool, as they came) under ``masks``."""
    keep = pred["scores"] >= score_thresh
    out = {k: pred[k][keep] for k in ("boxes", "scores", "labels") if k in pred}
    masks = pred.get("box_masks", pred.get("masks"))
    if "masks" in outputs and masks is not None:
        out["masks"] = [mask for mask, kept in zip(masks, keep) if kept]
    if "keypoints" in outputs and "keypoints" in pred:
        out["keypoints"] = pred["keypoints"][keep]
        out["keypoint_scores"] = pred["keypoint_scores"][keep]
        if "keypoint_visibility" in pred:
            out["keypoint_visibility"] = pred["keypoint_visibility"][keep]
    return out


def full_masks(masks: list, image_hw: tuple[int, int]) -> np.ndarray:
    """The masks ``select`` gives as (N, H, W) bool planes (for drawing)."""
    return masks_to_image([as_box_mask(m) for m in masks], image_hw, threshold=MASK_THRESH)


def to_json(pred: dict[str, np.ndarray], options: OutputOptions, *, image_info: dict,
            schema: KeypointSchema | None) -> dict:
    """The response body of ``POST /predict``."""
    chosen = select(pred, options.score_thresh, options.outputs)
    body = {"image": image_info, "format": options.format, "score_thresh": options.score_thresh}
    if options.format == "coco":
        body["results"] = _coco_records(chosen, options.mask_format)
        if schema is not None:
            body["categories"] = [{"id": 1, "name": "person", "keypoints": list(schema.names),
                                   "skeleton": [[a + 1, b + 1] for a, b in schema.skeleton]}]
    else:
        body["people"] = _simple_people(chosen, options.mask_format)
    body["keypoint_schema"] = schema_json(schema)
    return body


def schema_json(schema: KeypointSchema | None) -> dict | None:
    """Names, 0-based skeleton and left/right flip pairs: what a client needs to draw the skeleton."""
    if schema is None:
        return None
    return {"names": list(schema.names), "skeleton": [list(e) for e in schema.skeleton],
            "flip_pairs": [list(p) for p in schema.flip_pairs]}


def _simple_people(pred: dict[str, np.ndarray], mask_format: str) -> list[dict]:
    people = []
    for i in range(len(pred["scores"])):
        person = {"box": [float(v) for v in pred["boxes"][i]], "score": float(pred["scores"][i])}
        if "masks" in pred:
            person["mask"] = encode_mask(pred["masks"][i], mask_format)
        if "keypoints" in pred:
            person["keypoints"] = [[float(x), float(y), float(s)]
                                   for (x, y, _), s in zip(pred["keypoints"][i], pred["keypoint_scores"][i])]
            if "keypoint_visibility" in pred:  # 0 not labelled, 1 occluded, 2 visible
                person["keypoint_visibility"] = [int(v) for v in pred["keypoint_visibility"][i]]
        people.append(person)
    return people


def _coco_records(pred: dict, mask_format: str) -> list[dict]:
    records = coco_records({k: v for k, v in pred.items() if k != "masks"}, image_id=0)
    for record, mask in zip(records, pred.get("masks", [])):
        record["segmentation"] = encode_mask(mask, mask_format)
    return records


def encode_mask(mask: BoxMask | np.ndarray, mask_format: str) -> dict | list[list[float]]:
    """A person's mask (a ``BoxMask`` or an (H, W) bool plane) -> COCO RLE ``{"size", "counts"}`` or a list
    of flat polygon outlines."""
    box = as_box_mask(mask)
    if mask_format == "polygon":  # traced on the person's box only, then moved to the picture's pixels
        outlines = mask_polygons((box.probs >= MASK_THRESH).cpu().numpy())
        return [[v + (box.x0 if i % 2 == 0 else box.y0) for i, v in enumerate(line)] for line in outlines]
    rle = box_mask_to_rle(box, threshold=MASK_THRESH)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}


def as_box_mask(mask: BoxMask | np.ndarray) -> BoxMask:
    """An (H, W) bool plane as the ``BoxMask`` of the rows and columns that hold its pixels; a BoxMask as is."""
    if isinstance(mask, BoxMask):
        return mask
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return BoxMask(0, 0, torch.zeros(0, 0), tuple(mask.shape))
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return BoxMask(x0, y0, torch.from_numpy(mask[y0:y1, x0:x1].astype(np.float32)), tuple(mask.shape))
