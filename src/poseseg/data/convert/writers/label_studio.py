"""Predictions -> Label Studio tasks with pre-annotations (``predictions``), and the labeling config they fit.

One task per image: ``{"data": {"image": file_name}, "predictions": [{"model_version", "score", "result"}]}``.
Per person (ids ``p<i>...``): a ``rectanglelabels`` box (the person's root region, with its score); its
mask as a ``brushlabels`` RLE (exact) or ``polygonlabels`` outlines, each with ``parentID`` = the box;
per labelled keypoint a ``keypointlabels`` point (``parentID`` = the box, ``score`` = the keypoint's)
and a per-region ``choices`` result of the control ``visibility`` ("visible" v=2 / "occluded" v=1). A
v = 0 keypoint is not labelled: it has no result. Values are in percent of the picture, as Label Studio
stores them. :func:`poseseg.data.convert.label_studio.read_label_studio` reads the file back.
``data.image`` is the path ``predict`` read: Label Studio shows the picture once it is the URL its storage
serves it at (e.g. ``/data/local-files/?d=photos/a.jpg``); the importer matches tasks by the file's name.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from poseseg.data.convert.brush_rle import encode_brush_rle
from poseseg.data.convert.label_studio import VISIBILITY_CHOICES
from poseseg.data.convert.writers.common import PersonRecord, people_by_image, refuse_existing

__all__ = ["write_label_studio", "label_config", "MASK_FORMS"]

MASK_FORMS = ("brush", "polygon")
# the names of the labeling config's controls; each result's from_name is one of them
CONTROLS = {"rectanglelabels": "person", "brushlabels": "mask", "polygonlabels": "outline",
            "keypointlabels": "keypoints", "choices": "visibility"}
TAGS = {"rectanglelabels": "RectangleLabels", "brushlabels": "BrushLabels", "polygonlabels": "PolygonLabels",
        "keypointlabels": "KeyPointLabels"}


def write_label_studio(records: list[dict], images: list[dict], out: str | os.PathLike, *, category: dict,
                       masks: str = "brush", model_version: str = "poseseg") -> list[Path]:
    """Write the tasks JSON ``out`` and, beside it, ``<out stem>_config.xml`` (the labeling interface to paste
    into the project's settings); returns both paths. ``masks``: ``brush`` (pixel-exact) or ``polygon``."""
    if masks not in MASK_FORMS:
        raise ValueError(f"masks={masks!r}; choose one of {', '.join(MASK_FORMS)}")
    out = Path(out)
    config = out.with_name(f"{out.stem}_config.xml")
    refuse_existing(out, config)
    names = list(category.get("keypoints") or [])
    tasks = []
    for group in people_by_image(records, images, category=category):
        w, h = group.size()
        result = [r for person in group.people for r in _person_results(person, names, category["name"], w, h, masks)]
        scores = [p.score for p in group.people]
        tasks.append({"data": {"image": str(group.info["file_name"])},
                      "predictions": [{"model_version": model_version, "result": result,
                                       "score": sum(scores) / len(scores) if scores else 0.0}]})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, indent=1))
    config.write_text(label_config(category["name"], names, masks))
    return [out, config]


def _person_results(person: PersonRecord, names: list[str], label: str, w: int, h: int, masks: str) -> list[dict]:
    pid = f"p{person.index}"
    x, y, bw, bh = person.box

    def result(rid: str, kind: str, value: dict, **more) -> dict:
        return {"id": rid, "type": kind, "from_name": CONTROLS[kind], "to_name": "image", "original_width": w,
                "original_height": h, "image_rotation": 0, "value": value, **more}

    out = [result(pid, "rectanglelabels", {"x": 100 * x / w, "y": 100 * y / h, "width": 100 * bw / w,
                                           "height": 100 * bh / h, "rotation": 0, "rectanglelabels": [label]},
                  score=person.score)]
    if masks == "brush":
        mask = person.mask(h, w)
        if mask is not None and mask.any():
            out.append(result(f"{pid}_mask", "brushlabels", {"format": "rle", "rle": encode_brush_rle(mask),
                                                             "brushlabels": [label]}, parentID=pid))
    else:
        for j, poly in enumerate(person.outlines(h, w)):
            points = [[100 * px / w, 100 * py / h] for px, py in zip(poly[0::2], poly[1::2])]
            out.append(result(f"{pid}_outline{j}", "polygonlabels",
                              {"points": points, "closed": True, "polygonlabels": [label]}, parentID=pid))
    if person.keypoints is None:
        return out
    for k, (kx, ky, v) in enumerate(person.keypoints):
        if v == 0:
            continue  # not labelled: Label Studio has no point for it
        kid = f"{pid}_kp{k}"
        point = {"x": 100 * kx / w, "y": 100 * ky / h, "width": 0.5}
        score = {} if person.keypoint_scores is None else {"score": float(person.keypoint_scores[k])}
        out.append(result(kid, "keypointlabels", {**point, "keypointlabels": [names[k]]}, parentID=pid, **score))
        out.append(result(kid, "choices", {**point, "choices": [VISIBILITY_CHOICES[int(v)]]}))
    return out


def label_config(label: str, keypoint_names: list[str], masks: str = "brush") -> str:
    """The Label Studio labeling config whose control names (``CONTROLS``) match the written results."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name="image", value="$image", zoom="true")
    mask_kind = "brushlabels" if masks == "brush" else "polygonlabels"
    for kind, labels in (("rectanglelabels", [label]), (mask_kind, [label]), ("keypointlabels", keypoint_names)):
        if labels:
            control = ET.SubElement(view, TAGS[kind], name=CONTROLS[kind], toName="image")
            for value in labels:
                ET.SubElement(control, "Label", value=value)
    choices = ET.SubElement(view, "Choices", name=CONTROLS["choices"], toName="image", perRegion="true")
    for value in VISIBILITY_CHOICES.values():
        ET.SubElement(choices, "Choice", value=value)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"
