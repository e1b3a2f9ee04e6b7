"""Checks that say when COCO evaluation numbers would mean nothing, and the fields COCO tools need.

Every COCO toolkit silently scores garbage for a handful of ground-truth and prediction
mistakes (``area`` 0 or missing, ``num_keypoints`` that disagrees with the visibility flags,
xyxy boxes in an xywh file, predictions for images that are not in the set ...). These
functions name each one with its cause and its fix; ``poseseg eval``, the end-of-training
evaluation and ``poseseg check-data`` all report them (the same words, from here).

A warning is a dict ``{"code", "count", "message"}`` so it can go into ``metrics.json``.
"""
from __future__ import annotations

from typing import Any

import pycocotools.mask as mask_utils

__all__ = ["fill_missing_fields", "check_ground_truth", "check_predictions", "format_warnings",
           "segmentation_area", "unreadable_images"]

# a box is "past the image" when it ends this far beyond the border (COCO boxes may overhang by a pixel)
_OVERHANG_PX = 2.0
_OVERHANG_FRACTION = 0.2  # of the boxes, before the file "looks like xyxy"


def _warning(code: str, count: int, message: str) -> dict:
    return {"code": code, "count": int(count), "message": message}


def segmentation_area(segm: Any, height: int, width: int) -> float | None:
    """Pixel area of a COCO polygon list or RLE (what COCO's ``area`` is); None without a usable one."""
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and "counts" in segm:
        rle = segm
        if isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, *segm.get("size", [height, width]))
    else:
        return None
    return float(mask_utils.area(rle))


def _box_area(ann: dict) -> float | None:
    try:
        _, _, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        return None
    return max(w, 0.0) * max(h, 0.0)


def _person_anns(data: dict, category_id: int, image_ids: set | None) -> list[dict]:
    return [a for a in data.get("annotations", []) if a.get("category_id") == category_id
            and (image_ids is None or a.get("image_id") in image_ids)]


def fill_missing_fields(data: dict, category_id: int) -> list[dict]:
    """Fill what the COCO evaluators read but some files lack (CrowdPose has no ``area``), in place.

    ``area`` comes from the mask, or from the box where there is no mask; a missing
    ``num_keypoints`` is the count of keypoints with visibility > 0; a missing ``iscrowd`` is 0.
    Returns notes (warnings with code ``*_filled``) saying what was filled.
    """
    sizes = {im.get("id"): (int(im.get("height", 0) or 0), int(im.get("width", 0) or 0))
             for im in data.get("images", [])}
    filled_mask = filled_box = filled_kps = 0
    for ann in data.get("annotations", []):
        ann.setdefault("iscrowd", 0)
        if ann.get("category_id") != category_id:
            if "area" not in ann:
                ann["area"] = _box_area(ann) or 0.0
            continue
        if "area" not in ann:
            h, w = sizes.get(ann.get("image_id"), (0, 0))
            area = segmentation_area(ann.get("segmentation"), h, w) if h and w else None
            if area is not None:
                filled_mask += 1
            else:
                area = _box_area(ann) or 0.0
                filled_box += 1
            ann["area"] = area
        if "num_keypoints" not in ann and isinstance(ann.get("keypoints"), list):
            ann["num_keypoints"] = int(sum(1 for v in ann["keypoints"][2::3] if v > 0))
            filled_kps += 1
    notes = []
    if filled_mask or filled_box:
        notes.append(_warning("area_filled", filled_mask + filled_box,
                              f"{filled_mask + filled_box} annotations had no 'area': computed from the mask "
                              f"({filled_mask}) or the box ({filled_box}), as COCO defines it; write 'area' into "
                              f"the file to silence this note"))
    if filled_kps:
        notes.append(_warning("num_keypoints_filled", filled_kps,
                              f"{filled_kps} annotations had no 'num_keypoints': counted from the visibility "
                              f"flags (v > 0)"))
    return notes


def _looks_like_xyxy(boxes: list[tuple[list, tuple[int, int]]]) -> int:
    """How many xywh boxes end past their image, as xyxy boxes read as xywh do."""
    past = 0
    for bbox, (h, w) in boxes:
        try:
            x, y, bw, bh = (float(v) for v in bbox)
        except (TypeError, ValueError):
            continue
        if h and w and (x + bw > w + _OVERHANG_PX or y + bh > h + _OVERHANG_PX):
            past += 1
    return past


def check_ground_truth(data: dict, *, category_id: int, image_ids: list[int] | None = None,
                       sigmas: list[float] | None = None, keypoints: bool = True, masks: bool = True) -> list[dict]:
    """Problems of a COCO ground truth (a loaded JSON dict) that make AP meaningless.

    Only the annotations of ``category_id`` on ``image_ids`` (all images when None) are checked.
    ``keypoints``: the keypoint AP will be computed (checks the flags, counts and sigmas); ``masks``: the
    mask (segm) AP will be (checks that every person has a segmentation).
    """
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    images = [im for im in data.get("images", []) if wanted is None or im.get("id") in wanted]
    sizes = {im.get("id"): (int(im.get("height", 0) or 0), int(im.get("width", 0) or 0)) for im in images}
    anns = _person_anns(data, category_id, set(sizes))
    people = [a for a in anns if not a.get("iscrowd", 0)]
    out: list[dict] = []
    if not images or not people:
        what = "no images" if not images else "no (non-crowd) annotation of the evaluated category"
        out.append(_warning("empty_set", 1, f"the evaluation set has {what}: every AP is undefined and is "
                                            f"reported as '-'; check --data/data.val_json and data.category"))
        return out

    unmasked = sum(1 for a in anns if not a.get("segmentation"))
    if masks and unmasked:
        out.append(_warning("no_segmentation", unmasked,
                            f"{unmasked} of {len(anns)} annotations have no 'segmentation' (CrowdPose ships "
                            f"none): the mask AP is skipped and reported as '-' (the COCO evaluators stop on "
                            f"them); add polygons or RLE masks to evaluate masks, or train with "
                            f"model.heads=[box,keypoint]"))
    missing = sum(1 for a in people if "area" not in a)
    if missing:
        out.append(_warning("area_missing", missing,
                            f"{missing} of {len(people)} people have no 'area' (pycocotools stops with "
                            f"KeyError: 'area'); poseseg computes it from the mask or box"))
    zero = sum(1 for a in people if "area" in a and not float(a["area"] or 0) > 0)
    if zero:
        out.append(_warning("area_zero", zero,
                            f"{zero} of {len(people)} people have area 0: they fall in no COCO size range "
                            f"(APs/APm/APl change) and keypoint OKS divides by the area (keypoint AP 0); set "
                            f"'area' to the mask's pixel area (or delete the field and poseseg computes it)"))
    inconsistent = 0
    for a in people:
        area = float(a.get("area") or 0)
        box = _box_area(a)
        if area <= 0 or box is None:
            continue
        if area > 1.05 * box + 4:
            inconsistent += 1
            continue
        h, w = sizes.get(a.get("image_id"), (0, 0))
        mask = segmentation_area(a.get("segmentation"), h, w) if h and w else None
        if mask and not 0.5 <= area / mask <= 2.0 and abs(area - box) > 0.05 * box:
            inconsistent += 1
    if inconsistent:
        out.append(_warning("area_inconsistent", inconsistent,
                            f"{inconsistent} of {len(people)} people have an 'area' larger than their box or "
                            f"far from their mask's pixel area: the size ranges (APs/APm/APl) and keypoint OKS "
                            f"use it; recompute 'area' from the mask"))
    gt_boxes = [(a.get("bbox"), sizes.get(a.get("image_id"), (0, 0))) for a in anns]
    past = _looks_like_xyxy(gt_boxes)
    if past and past >= _OVERHANG_FRACTION * len(gt_boxes):
        out.append(_warning("gt_boxes_xyxy", past,
                            f"{past} of {len(gt_boxes)} ground-truth boxes end past their image: they look like "
                            f"[x1, y1, x2, y2]; COCO's 'bbox' is [x, y, width, height]"))
    if keypoints:
        out.extend(_check_keypoints(data, people, sigmas))
    return out


def _check_keypoints(data: dict, people: list[dict], sigmas: list[float] | None) -> list[dict]:
    out = []
    cats = {c.get("id"): c for c in data.get("categories", [])}
    k = len(cats.get(people[0].get("category_id"), {}).get("keypoints") or [])
    with_kps = [a for a in people if isinstance(a.get("keypoints"), list) and len(a["keypoints"]) >= 3]
    labelled = sum(1 for a in with_kps if any(v > 0 for v in a["keypoints"][2::3]))
    if labelled == 0:
        out.append(_warning("no_labelled_keypoints", len(people),
                            f"none of the {len(people)} people has a labelled keypoint (every visibility "
                            f"flag is 0): keypoint AP means nothing; check that the file's 'keypoints' hold "
                            f"the labels"))
    wrong = sum(1 for a in with_kps if "num_keypoints" in a
                and int(a["num_keypoints"]) != sum(1 for v in a["keypoints"][2::3] if v > 0))
    if wrong:
        out.append(_warning("num_keypoints_inconsistent", wrong,
                            f"{wrong} of {len(with_kps)} people have a 'num_keypoints' that differs from the "
                            f"count of visibility flags > 0: COCO's evaluator ignores people by "
                            f"'num_keypoints' but scores them by the flags, so keypoint AP is wrong; recount "
                            f"num_keypoints as the number of keypoints with v > 0"))
    if sigmas is not None and k and len(sigmas) != k:
        out.append(_warning("sigmas_mismatch", 1,
                            f"{len(sigmas)} OKS sigmas for {k} keypoints: keypoint AP cannot be computed and "
                            f"is reported as '-'; give data.oks_sigmas {k} values (or a named set: coco, "
                            f"crowdpose)"))
    return out


def check_predictions(data: dict, results: dict[str, list], *, category_id: int,
                      image_ids: list[int] | None = None) -> tuple[dict[str, list], list[dict]]:
    """Problems of COCO results against their ground truth; returns (usable results, warnings).

    Results whose image id is not in the ground truth are dropped (pycocotools would refuse the
    whole file); everything else is kept and only reported.
    """
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    sizes = {im.get("id"): (int(im.get("height", 0) or 0), int(im.get("width", 0) or 0))
             for im in data.get("images", []) if wanted is None or im.get("id") in wanted}
    categories = {c.get("id") for c in data.get("categories", [])}
    out: list[dict] = []
    kept: dict[str, list] = {}
    for iou_type, dets in results.items():
        if not dets:
            out.append(_warning(f"no_predictions_{iou_type}", 1,
                                f"no {iou_type} predictions at all: its AP is 0; is the score threshold too "
                                f"high, or did the model not train?"))
            kept[iou_type] = []
            continue
        unknown_image = [d for d in dets if d.get("image_id") not in sizes]
        if unknown_image:
            ids = sorted({str(d.get("image_id")) for d in unknown_image})
            out.append(_warning(f"unknown_image_ids_{iou_type}", len(unknown_image),
                                f"{len(unknown_image)} {iou_type} predictions are for image ids not in the ground "
                                f"truth (e.g. {', '.join(ids[:5])}): dropped; predict on the same JSON's images"))
        dets = [d for d in dets if d.get("image_id") in sizes]
        unknown_cat = [d for d in dets if d.get("category_id") not in categories]
        if unknown_cat:
            cats = sorted({str(d.get("category_id")) for d in unknown_cat})
            out.append(_warning(f"unknown_category_ids_{iou_type}", len(unknown_cat),
                                f"{len(unknown_cat)} {iou_type} predictions have category ids not in the ground "
                                f"truth ({', '.join(cats[:5])}): they score nothing; use the ground truth's id "
                                f"{category_id}"))
        if iou_type == "bbox":
            boxes = [(d.get("bbox"), sizes[d["image_id"]]) for d in dets]
            past = _looks_like_xyxy(boxes)
            if past and past >= _OVERHANG_FRACTION * len(boxes):
                out.append(_warning("pred_boxes_xyxy", past,
                                    f"{past} of {len(boxes)} predicted boxes end past their image: they look "
                                    f"like [x1, y1, x2, y2]; COCO results use [x, y, width, height]"))
        kept[iou_type] = dets
    return kept, out


def unreadable_images(skipped: list[str], total: int, *, shown: int = 5) -> dict:
    """The warning for images left out of an evaluation because they could not be read (``skipped``: one
    "path (reason)" each): their people would otherwise count as missed."""
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return _warning("unreadable_images", len(skipped),
                    f"{len(skipped)} of {total} images could not be read and were left out, so these numbers "
                    f"cover the other {total - len(skipped)}: {'; '.join(skipped[:shown])}{more}; fix those files "
                    f"or remove them from the JSON")


def format_warnings(warnings: list[dict]) -> str:
    """The warning block printed before an AP table ('' when there is nothing to say)."""
    if not warnings:
        return ""
    notes = [w for w in warnings if w["code"].endswith("_filled")]
    real = [w for w in warnings if not w["code"].endswith("_filled")]
    lines = []
    if real:
        lines.append(f"WARNING: {len(real)} problem(s) make some of these numbers meaningless:")
        lines.extend(f"  - [{w['code']}] {w['message']}" for w in real)
    lines.extend(f"note: {w['message']}" for w in notes)
    return "\n".join(lines)

