"""Label Studio JSON export (labelstud.io, "Label Studio Task Format") -> COCO keypoints.

A list of tasks ``{"data": {"image": ...}, "annotations": [{"result": [...]}]}``; each result has
``original_width``/``original_height`` and a ``value`` in percent of the image: ``keypointlabels``
(``x``, ``y``), ``polygonlabels`` (``points`` [[x, y], ...]), ``rectanglelabels`` (``x``, ``y``,
``width``, ``height``). Keypoints are grouped per person by, in order: a ``parentID`` naming the
person's polygon/rectangle, a ``relation`` result between them, or the region that contains the
point. ``brushlabels`` masks (``rle``: Label Studio's bit-packed RGBA stream, see ``brush_rle``) are
person regions as polygons are; person regions linked by ``parentID`` are one person (e.g. a brush mask
under its rectangle). A keypoint's visibility is a per-region ``choices`` result with the keypoint's id
("occluded" -> v=1, else v=2); an unlabelled keypoint (v=0) has no result. A task without a finished
annotation is read from its first prediction (pre-annotations, as ``poseseg predict --save-format
labelstudio`` writes them).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pycocotools.mask as mask_utils

from poseseg.data.convert.brush_rle import decode_brush_rle
from poseseg.data.convert.people import ConvertError, ImageRecord, Person, merge_parts, to_coco
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES, COCO_SKELETON

__all__ = ["read_label_studio", "REGION_TYPES", "VISIBILITY_CHOICES"]

REGION_TYPES = ("polygonlabels", "rectanglelabels", "brushlabels")  # a person's region (with the person label)
SUPPORTED = (*REGION_TYPES, "keypointlabels", "relation")
VISIBILITY_CHOICES = {1: "occluded", 2: "visible"}  # the per-keypoint choice poseseg writes for COCO v
OCCLUDED = {"occluded", "hidden", "invisible", "not visible"}  # choices read as v = 1


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


def _task_results(task: dict) -> list[dict]:
    """The results of a task's first finished annotation, else of its first prediction (pre-annotations)."""
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    source = done or [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    return (source[0].get("result") or []) if source else []


def _labels(res: dict) -> list:
    return (res.get("value") or {}).get(res.get("type"), []) or []


def _person_regions(results: list[dict], category: str, h: int, w: int) -> tuple[list[tuple[Person, np.ndarray]],
                                                                                dict]:
    """The people's regions as (Person, (H, W) bool mask), and each region id -> its person's index. A region
    whose ``parentID`` names another person region is a part of that person (its mask under its rectangle,
    one outline of several), as poseseg's own Label Studio writer links them."""
    parts = {r.get("id"): r for r in results if r.get("type") in REGION_TYPES and category in _labels(r)}

    def root(rid):
        seen = {rid}
        while parts[rid].get("parentID") in parts and parts[rid]["parentID"] not in seen:
            rid = parts[rid]["parentID"]
            seen.add(rid)
        return rid

    groups: dict = {}
    for rid in parts:
        groups.setdefault(root(rid), []).append(rid)
    regions, region_ids = [], {}
    for members in groups.values():
        drawn = [_region_mask(parts[rid], h, w) for rid in members]
        person = merge_parts([d[0] for d in drawn], h, w)
        for rid in members:
            region_ids[rid] = len(regions)
        regions.append((person, np.logical_or.reduce([d[1] for d in drawn])))
    return regions, region_ids


def read_label_studio(json_path: str | os.PathLike, *, category: str = "person",
                      keypoint_names: list[str] | None = None) -> tuple[dict, list[str]]:
    """(COCO dict, notes) of a Label Studio JSON export; ``category`` is the person label of the regions.

    A task's first finished annotation is read, else its first prediction. Results of other types (ellipses,
    choices that are not a keypoint's visibility, text, ...) are ignored and counted in the notes by type.
    """
    json_path = Path(json_path)
    try:
        tasks = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"cannot read the Label Studio export {json_path}: {e}") from None
    if not isinstance(tasks, list):
        raise ConvertError(f"{json_path} is not a Label Studio JSON export (a list of tasks); export as 'JSON'")
    seen: list[str] = []
    for task in tasks:
        for res in _task_results(task):
            for name in (res.get("value") or {}).get("keypointlabels") or []:
                if name not in seen:
                    seen.append(name)
    names = keypoint_names or (list(COCO_KEYPOINT_NAMES) if sorted(seen) == sorted(COCO_KEYPOINT_NAMES) else seen)
    if not names:
        raise ConvertError(f"{json_path} has no keypointlabels results")
    index = {n: i for i, n in enumerate(names)}
    notes = {"keypoints outside every person region skipped": 0, "keypoints with a name not in the schema": 0}
    ignored: Counter = Counter()  # result type -> count (what this reader does not read)
    other_labels: Counter = Counter()  # label -> count of regions that are not people
    records = []
    for task in tasks:
        results = _task_results(task)
        keypoint_ids = {r.get("id") for r in results if r.get("type") == "keypointlabels"}
        for r in results:
            if r.get("type") in REGION_TYPES and category not in _labels(r):
                other_labels.update(_labels(r) or ["(none)"])
            elif r.get("type") not in SUPPORTED and not (r.get("type") == "choices" and r.get("id") in keypoint_ids):
                ignored[r.get("type")] += 1
        sized = [r for r in results if r.get("original_width")]
        if not sized:
            continue
        w, h = int(sized[0]["original_width"]), int(sized[0]["original_height"])
        rec = ImageRecord(file_name=_image_name(task), width=w, height=h)
        regions, region_ids = _person_regions(results, category, h, w)
        links = {}
        for r in results:
            if r.get("type") == "relation":
                for a, b in ((r.get("from_id"), r.get("to_id")), (r.get("to_id"), r.get("from_id"))):
                    if b in region_ids:
                        links[a] = region_ids[b]
        visibility = {r.get("id"): _visibility(r) for r in results
                      if r.get("type") == "choices" and r.get("id") in keypoint_ids}
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
            kps[owner, index[name]] = [x, y, visibility.get(r.get("id"), 2)]
        people = [person for person, _ in regions] or [Person()]
        for j, person in enumerate(people):
            person.keypoints = kps[j]
        rec.people = [p for p in people if p.polygons or p.rle is not None or p.bbox or (p.keypoints[:, 2] > 0).any()]
        records.append(rec)
    lines = [f"{n} {what}" for what, n in notes.items() if n]
    if other_labels:
        lines.append(f"{json_path.name}: {sum(other_labels.values())} regions not labelled {category!r} ignored "
                     f"({', '.join(f'{n} {label}' for label, n in other_labels.most_common())}); --category names "
                     f"the person label")
    if ignored:
        lines.append(f"{json_path.name}: results ignored by type: "
                     f"{', '.join(f'{n} {t}' for t, n in ignored.most_common())}; supported: people as "
                     f"{', '.join(REGION_TYPES)} (joined by parentID), keypointlabels, relation, and per-keypoint "
                     f"'choices' of visibility ({', '.join(sorted(OCCLUDED))} -> occluded); redraw the others as "
                     f"one of those")
    skeleton = [[a + 1, b + 1] for a, b in COCO_SKELETON] if names == list(COCO_KEYPOINT_NAMES) else []
    data = to_coco(records, keypoint_names=names, skeleton=skeleton, category=category, notes=lines)
    return data, lines


def _visibility(choice_result: dict) -> int:
    """COCO visibility of a keypoint from its per-region visibility choice: 1 (occluded) or 2 (visible)."""
    chosen = [str(c).lower() for c in (choice_result.get("value") or {}).get("choices") or []]
    return 1 if any(c in OCCLUDED for c in chosen) else 2
