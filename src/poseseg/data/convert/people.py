"""What every converter builds: people (keypoints + mask of the same person) per image -> COCO JSON.

A reader turns a tool's export into :class:`ImageRecord` s holding :class:`Person` s, each with its
keypoints (K, 3) in pixels (visibility 0/1/2 as COCO), its polygons and/or RLE, and its box if the
tool gave one; :func:`to_coco` fills in what COCO needs (box from the mask or keypoints, ``area``
from the mask, ``num_keypoints``) and writes one JSON that ``poseseg check-data`` passes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from poseseg.data.coco_json import negative_coordinate, negative_coordinates_warning

__all__ = ["ConvertError", "Person", "ImageRecord", "to_coco", "write_coco", "assign_to_regions", "coordinate_notes",
           "merge_parts"]


class ConvertError(ValueError):
    """An export that cannot be converted; the message names the file, the field and the fix."""


@dataclass
class Person:
    keypoints: np.ndarray | None = None  # (K, 3) x, y in pixels, v in {0, 1, 2}
    polygons: list[list[float]] = field(default_factory=list)  # COCO polygons [x0, y0, x1, y1, ...]
    rle: dict | None = None  # COCO RLE (counts str) of the whole image
    bbox: list[float] | None = None  # [x, y, w, h] pixels
    iscrowd: int = 0


@dataclass
class ImageRecord:
    file_name: str
    width: int
    height: int
    people: list[Person] = field(default_factory=list)


def _mask_rle(person: Person, h: int, w: int) -> dict | None:
    if person.rle is not None:
        rle = dict(person.rle)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        return rle
    polys = [p for p in person.polygons if len(p) >= 6]
    return mask_utils.merge(mask_utils.frPyObjects(polys, h, w)) if polys else None


def merge_parts(parts: list[Person], height: int, width: int) -> Person:
    """One person drawn as several regions (outlines, brush strokes, masks, a rectangle) -> one Person: the
    union of their masks (polygons stay polygons unless a part is an RLE) and the box of a rectangle part."""
    if len(parts) == 1:
        return parts[0]
    bbox = next((p.bbox for p in parts if p.bbox is not None and not p.polygons and p.rle is None), None)
    shaped = [p for p in parts if p.polygons or p.rle is not None]
    if any(p.rle is not None for p in shaped):
        rle = mask_utils.merge([_mask_rle(p, height, width) for p in shaped])
        return Person(rle={"size": [int(v) for v in rle["size"]], "counts": _counts_str(rle)}, bbox=bbox)
    return Person(polygons=[poly for p in shaped for poly in p.polygons], bbox=bbox)


def _person_box(person: Person, rle: dict | None) -> list[float] | None:
    if person.bbox is not None:
        return [float(v) for v in person.bbox]
    if rle is not None and mask_utils.area(rle) > 0:
        return [float(v) for v in mask_utils.toBbox(rle)]
    if person.keypoints is not None:
        kp = person.keypoints[person.keypoints[:, 2] > 0]
        if len(kp):
            x0, y0 = kp[:, :2].min(0)
            x1, y1 = kp[:, :2].max(0)
            return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
    return None


def to_coco(images: list[ImageRecord], *, keypoint_names: list[str], skeleton: list[list[int]] | None = None,
            category: str = "person", notes: list[str] | None = None) -> dict:
    """COCO keypoints JSON (1-based ``skeleton`` as COCO stores it). People without a box, or whose box is
    0 px wide or high (one keypoint and no region), are dropped; ``notes`` gets a line counting the latter."""
    k = len(keypoint_names)
    out_images, anns = [], []
    flat, first_flat = 0, ""
    for image_id, rec in enumerate(images, start=1):
        out_images.append({"id": image_id, "file_name": rec.file_name, "width": int(rec.width),
                           "height": int(rec.height)})
        for person in rec.people:
            rle = _mask_rle(person, rec.height, rec.width)
            box = _person_box(person, rle)
            if box is None:
                continue
            if not (box[2] > 0 and box[3] > 0):  # never write a 0x0 person: nothing can train or score on it
                flat += 1
                first_flat = first_flat or rec.file_name
                continue
            kp = person.keypoints if person.keypoints is not None else np.zeros((k, 3))
            if kp.shape != (k, 3):
                raise ConvertError(f"{rec.file_name}: a person has {kp.shape[0]} keypoints but the schema has {k} "
                                   f"({', '.join(keypoint_names)})")
            kp = np.asarray(kp, np.float64).copy()
            kp[kp[:, 2] <= 0] = 0.0
            segmentation = person.polygons if person.rle is None else \
                {"size": [rec.height, rec.width], "counts": _counts_str(rle)}
            area = float(mask_utils.area(rle)) if rle is not None else box[2] * box[3]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": int(person.iscrowd),
                         "bbox": [round(v, 3) for v in box], "area": area, "segmentation": segmentation,
                         "keypoints": [round(float(v), 3) if i % 3 != 2 else int(v) for i, v in enumerate(kp.ravel())],
                         "num_keypoints": int((kp[:, 2] > 0).sum())})
    if flat and notes is not None:
        notes.append(f"{flat} people dropped: their box is 0 px wide or high (first in {first_flat}), e.g. a single "
                     f"keypoint without a person region; draw a rectangle, polygon or brush region around each person")
    return {"images": out_images, "annotations": anns,
            "categories": [{"id": 1, "name": category, "supercategory": category, "keypoints": list(keypoint_names),
                            "skeleton": [list(map(int, e)) for e in skeleton or []]}]}


def coordinate_notes(data: dict) -> list[str]:
    """convert-data's note on a converted COCO dict: annotations with negative coordinates (check-data's words)."""
    files = {im["id"]: im.get("file_name") for im in data.get("images", [])}
    count, first = 0, ""
    for ann in data.get("annotations", []):
        where = negative_coordinate(ann)
        if where:
            count += 1
            first = first or f"annotation {ann.get('id')} in {files.get(ann.get('image_id'))}: {where}"
    return [negative_coordinates_warning(count, first)] if count else []


def _counts_str(rle: dict) -> str:
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def write_coco(data: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return out


def assign_to_regions(point_sets: list[np.ndarray], regions: list[np.ndarray]) -> list[int | None]:
    """For each person's labelled points (P, 2), the index of the region mask (H, W) bool holding most of
    them (each region used once, best matches first); None when no region holds any."""
    scores = []
    for i, pts in enumerate(point_sets):
        for j, region in enumerate(regions):
            h, w = region.shape
            xs = np.clip(pts[:, 0].astype(int), 0, w - 1) if len(pts) else np.zeros(0, int)
            ys = np.clip(pts[:, 1].astype(int), 0, h - 1) if len(pts) else np.zeros(0, int)
            inside = int(region[ys, xs].sum()) if len(pts) else 0
            if inside:
                scores.append((inside, i, j))
    owner: list[int | None] = [None] * len(point_sets)
    used: set[int] = set()
    for _, i, j in sorted(scores, reverse=True):
        if owner[i] is None and j not in used:
            owner[i] = j
            used.add(j)
    return owner
