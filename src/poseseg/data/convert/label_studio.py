"""Label Studio JSON export (labelstud.io, "Label Studio Task Format") -> COCO keypoints.

A list of tasks ``{"data": {"image": ...}, "annotations": [{"result": [...]}]}``; each result has
``original_width``/``original_height`` and a ``value`` in percent of the image: ``keypointlabels``
(``x``, ``y``), ``polygonlabels`` (``points`` [[x, y], ...]), ``rectanglelabels`` (``x``, ``y``,
``width``, ``height``). Keypoints are grouped per person by, in order: a ``parentID`` naming the
person's polygon/rectangle, a ``relation`` result between them, or the region that contains the
point. ``brushlabels`` masks (``rle``: Label Studio's bit-packed RGBA stream, see ``brush_rle``) are
person regions as polygons are.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pycocotools.mask as mask_utils

from poseseg.data.convert.brush_rle import decode_brush_rle
from poseseg.data.convert.people import ConvertError, ImageRecord, Person, to_coco
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES, COCO_SKELETON

__all__ = ["read_label_studio"]


def _image_name(task: dict) -> str:
    values = [v for v in (task.get("data") or {}).values() if isinstance(v, str)]
    if not values:
        raise ConvertError(f"task {task.get('id')} has no image in 'data'")
    value = values[0]
    if "?d=" in value:  # local-files storage: /data/local-files/?d=folder/name.jpg
        value = value.split("?d=", 1)[1]
    return PurePosixPath(value.split("?")[0]).name


def _region_mask(res: dict, h: int, w: int) -> tuple[Person, np.ndarray]:
    v = res["value"]
    if res["type"] == "brushlabels":
        try:
            mask = decode_brush_rle(v["rle"], h, w)
        except (KeyError, ValueError) as e:
            raise ConvertError(f"brushlabels region {res.get('id')}: {e}") from None
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        return Person(rle=rle), mask
    if res["type"] == "polygonlabels":
        poly = [c for x, y in v["points"] for c in (x * w / 100, y * h / 100)]
        person = Person(polygons=[poly])
        rle = mask_utils.frPyObjects([poly], h, w)[0]
    else:  # rectanglelabels
        box = [v["x"] * w / 100, v["y"] * h / 100, v["width"] * w / 100, v["height"] * h / 100]
        person = Person(bbox=box)
        rle = mask_utils.frPyObjects(np.asarray([box], np.float64), h, w)[0]
    return person, mask_utils.decode(rle).astype(bool)


def read_label_studio(json_path: str | os.PathLike, *, category: str = "person",
                      keypoint_names: list[str] | None = None) -> tuple[dict, list[str]]:
    """(COCO dict, notes) of a Label Studio JSON export; ``category`` is the person label of the regions."""
    json_path = Path(json_path)
    try:
        tasks = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"cannot read the Label Studio export {json_path}: {e}") from None
    if not isinstance(tasks, list):
        raise ConvertError(f"{json_path} is not a Label Studio JSON export (a list of tasks); export as 'JSON'")
    seen: list[str] = []
    for task in tasks:
        for ann in task.get("annotations") or []:
            for res in ann.get("result") or []:
                for name in (res.get("value") or {}).get("keypointlabels") or []:
                    if name not in seen:
                        seen.append(name)
    names = keypoint_names or (list(COCO_KEYPOINT_NAMES) if sorted(seen) == sorted(COCO_KEYPOINT_NAMES) else seen)
    if not names:
        raise ConvertError(f"{json_path} has no keypointlabels results")
    index = {n: i for i, n in enumerate(names)}
    notes = {"keypoints outside every person region skipped": 0, "keypoints with a name not in the schema": 0}
    records = []
    for task in tasks:
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        results = done[0].get("result") or [] if done else []
        sized = [r for r in results if r.get("original_width")]
        if not sized:
            continue
        w, h = int(sized[0]["original_width"]), int(sized[0]["original_height"])
        rec = ImageRecord(file_name=_image_name(task), width=w, height=h)
        regions, region_ids = [], {}
        for r in results:
            labels = (r.get("value") or {}).get(r.get("type"), [])
            if r.get("type") in ("polygonlabels", "rectanglelabels", "brushlabels") and category in labels:
                region_ids[r.get("id")] = len(regions)
                regions.append(_region_mask(r, h, w))
        links = {}
        for r in results:
            if r.get("type") == "relation":
                for a, b in ((r.get("from_id"), r.get("to_id")), (r.get("to_id"), r.get("from_id"))):
                    if b in region_ids:
                        links[a] = region_ids[b]
        kps = np.zeros((max(len(regions), 1), len(names), 3))
        for r in results:
            if r.get("type") != "keypointlabels":
                continue
            v = r["value"]
            name = (v.get("keypointlabels") or [None])[0]
            if name not in index:
                notes["keypoints with a name not in the schema"] += 1
                continue
            x, y = v["x"] * w / 100, v["y"] * h / 100
            owner = region_ids.get(r.get("parentID"), links.get(r.get("id")))
            if owner is None and regions:
                holding = [j for j, (_, m) in enumerate(regions)
                           if m[min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)]]
                owner = min(holding, key=lambda j: regions[j][1].sum()) if holding else None
            elif owner is None:
                owner = 0  # no person regions at all: the image's keypoints are one person
            if owner is None:
                notes["keypoints outside every person region skipped"] += 1
                continue
            kps[owner, index[name]] = [x, y, 2]
        people = [person for person, _ in regions] or [Person()]
        for j, person in enumerate(people):
            person.keypoints = kps[j]
        rec.people = [p for p in people if p.polygons or p.bbox or (p.keypoints[:, 2] > 0).any()]
        records.append(rec)
    skeleton = [[a + 1, b + 1] for a, b in COCO_SKELETON] if names == list(COCO_KEYPOINT_NAMES) else []
    return (to_coco(records, keypoint_names=names, skeleton=skeleton, category=category),
            [f"{n} {what}" for what, n in notes.items() if n])
