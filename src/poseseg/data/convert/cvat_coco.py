"""CVAT's "COCO Keypoints 1.0" export (written by Datumaro) -> the COCO keypoints JSON poseseg trains on.

The export is COCO already: one category per skeleton label (``keypoints`` + 1-based ``skeleton``),
one annotation per skeleton with ``keypoints`` (v: 0 outside, 1 occluded, 2 visible), the grouped
polygons merged into its ``segmentation`` and ``bbox``. What it may lack or get wrong for COCO tools
is repaired here: ``area`` missing or 0 (recomputed from the mask, else the box), ``num_keypoints``
(recounted from the flags), ``iscrowd``; annotations of other categories are dropped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from poseseg.data.convert.people import ConvertError
from poseseg.data.eval_sanity import segmentation_area

__all__ = ["read_cvat_coco"]


def read_cvat_coco(json_path: str | os.PathLike, *, category: str | None = None) -> dict:
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"cannot read {json_path}: {e}") from None
    cats = [c for c in data.get("categories", []) if c.get("keypoints")]
    if category is not None:
        cats = [c for c in cats if c.get("name") == category]
    if len(cats) != 1:
        names = ", ".join(repr(c.get("name")) for c in data.get("categories", []) if c.get("keypoints")) or "none"
        raise ConvertError(f"{json_path}: {len(cats)} keypoint categories match (keypoint categories: {names}); "
                           f"give --category NAME")
    cat = dict(cats[0])
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in data.get("images", [])}
    anns = []
    for a in data.get("annotations", []):
        if a.get("category_id") != cat["id"]:
            continue
        a = dict(a)
        a.setdefault("iscrowd", 0)
        if not float(a.get("area") or 0) > 0:
            h, w = sizes.get(a["image_id"], (0, 0))
            area = segmentation_area(a.get("segmentation"), h, w) if h and w else None
            a["area"] = area if area else float(a["bbox"][2]) * float(a["bbox"][3])
        a["num_keypoints"] = sum(1 for v in (a.get("keypoints") or [])[2::3] if v > 0)
        anns.append(a)
    return {**{k: v for k, v in data.items() if k not in ("annotations", "categories")},
            "categories": [cat], "annotations": anns}
