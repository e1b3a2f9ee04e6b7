"""Predictions -> CVAT for images 1.1 XML (upload as "CVAT 1.1" into a task that holds the same pictures).

``<meta>`` declares the person label as a skeleton (``<svg>`` nodes in keypoint order and the edges) with
one ``points`` label per keypoint. Per image and person, sharing ``group_id`` = person number + 1:
a ``<box>``, the mask as ``<polygon>`` outlines or one ``<mask>`` (CVAT's runs, pixel-exact), and a
``<skeleton>`` whose ``<points>`` carry the visibility: v=0 ``outside="1"`` (not labelled), v=1
``occluded="1"``, v=2 neither. :func:`poseseg.data.convert.cvat_xml.read_cvat_xml` reads it back.
Scores have no place in CVAT 1.1 shapes and are not written (``predictions.json`` keeps them).
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from poseseg.data.convert.cvat_xml import mask_to_cvat_rle
from poseseg.data.convert.writers.common import PersonRecord, people_by_image, refuse_existing, unique_names

__all__ = ["write_cvat_xml", "MASK_FORMS"]

MASK_FORMS = ("polygon", "mask")


def _num(v: float) -> str:
    return f"{v:.2f}"


def write_cvat_xml(records: list[dict], images: list[dict], out: str | os.PathLike, *, category: dict,
                   masks: str = "polygon") -> Path:
    """Write the CVAT XML ``out``; ``masks``: ``polygon`` outlines (editable point by point) or ``mask``."""
    if masks not in MASK_FORMS:
        raise ValueError(f"masks={masks!r}; choose one of {', '.join(MASK_FORMS)}")
    out = Path(out)
    refuse_existing(out)
    groups = people_by_image(records, images, category=category)
    label, names = category["name"], list(category.get("keypoints") or [])
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = "poseseg predictions"
    ET.SubElement(task, "size").text = str(len(groups))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    _label(labels, label, "skeleton" if names else "any", svg=_skeleton_svg(names, category.get("skeleton") or []))
    for name in names:
        _label(labels, name, "points", parent=label)
    for number, (group, name) in enumerate(zip(groups, unique_names(groups))):
        w, h = group.size()
        image = ET.SubElement(root, "image", id=str(number), name=name, width=str(w), height=str(h))
        for person in group.people:
            _person(image, person, label, names, masks, w, h)
    ET.indent(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out


def _label(labels: ET.Element, name: str, kind: str, *, parent: str | None = None, svg: str | None = None) -> None:
    el = ET.SubElement(labels, "label")
    ET.SubElement(el, "name").text = name
    ET.SubElement(el, "type").text = kind
    ET.SubElement(el, "attributes")
    if svg:
        ET.SubElement(el, "svg").text = svg
    if parent:
        ET.SubElement(el, "parent").text = parent


def _skeleton_svg(names: list[str], skeleton: list[list[int]]) -> str:
    """CVAT's skeleton template: a node per keypoint (on a circle in its 100 x 100 box) and a line per edge."""
    spots = [(50 + 40 * math.sin(2 * math.pi * i / len(names)), 50 - 40 * math.cos(2 * math.pi * i / len(names)))
             for i in range(len(names))]
    lines = [f'<line x1="{spots[a - 1][0]:.1f}" y1="{spots[a - 1][1]:.1f}" x2="{spots[b - 1][0]:.1f}" '
             f'y2="{spots[b - 1][1]:.1f}" stroke="black" data-type="edge" data-node-from="{a}" stroke-width="0.5" '
             f'data-node-to="{b}"></line>' for a, b in skeleton]
    nodes = [f'<circle r="1.5" stroke="black" fill="#b3b3b3" cx="{x:.1f}" cy="{y:.1f}" stroke-width="0.1" '
             f'data-type="element node" data-element-id="{i + 1}" data-node-id="{i + 1}" data-label-name="{n}">'
             f'</circle>' for i, (n, (x, y)) in enumerate(zip(names, spots))]
    return "".join(lines + nodes)


def _person(image: ET.Element, person: PersonRecord, label: str, names: list[str], masks: str, w: int, h: int):
    shape = {"label": label, "source": "auto", "occluded": "0", "z_order": "0", "group_id": str(person.index + 1)}
    x, y, bw, bh = person.box
    ET.SubElement(image, "box", **shape, xtl=_num(x), ytl=_num(y), xbr=_num(x + bw), ybr=_num(y + bh))
    if masks == "polygon":
        for poly in person.outlines(h, w):
            points = ";".join(f"{_num(px)},{_num(py)}" for px, py in zip(poly[0::2], poly[1::2]))
            ET.SubElement(image, "polygon", **shape, points=points)
    else:
        mask = person.mask(h, w)
        runs = mask_to_cvat_rle(mask) if mask is not None else None
        if runs is not None:
            rle, left, top, width, height = runs
            ET.SubElement(image, "mask", **shape, rle=rle, left=str(left), top=str(top), width=str(width),
                          height=str(height))
    if person.keypoints is None:
        return
    skeleton = ET.SubElement(image, "skeleton", label=label, source="auto", z_order="0", group_id=shape["group_id"])
    for name, (kx, ky, v) in zip(names, person.keypoints):
        ET.SubElement(skeleton, "points", label=name, source="auto", outside="1" if v == 0 else "0",
                      occluded="1" if v == 1 else "0", points=f"{_num(kx)},{_num(ky)}")
