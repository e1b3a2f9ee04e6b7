"""CVAT for images 1.1 XML (docs.cvat.ai, "XML annotation format") -> COCO keypoints.

Per ``<image name width height>``: a ``<skeleton label>`` per person whose ``<points label outside
occluded points="x,y">`` children are its keypoints (outside -> v=0, occluded -> v=1, else 2),
and the person's ``<polygon points="x0,y0;x1,y1;...">`` / ``<mask rle left top width height>``
(CVAT's row-major run lengths inside the box, background first) / ``<box>``. Shapes and skeletons
of one person share a ``group_id`` (several polygons or masks of one group are one mask); without one, a
mask goes to the skeleton whose points it holds.
The keypoint order and the edges come from the skeleton label's ``<svg>`` in ``<meta>``.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from poseseg.data.convert.people import (
    ConvertError,
    ImageRecord,
    Person,
    assign_to_regions,
    merge_parts,
    to_coco,
)

__all__ = ["read_cvat_xml", "cvat_mask_to_rle", "mask_to_cvat_rle"]


def cvat_mask_to_rle(rle_text: str, left: int, top: int, width: int, height: int, image_h: int,
                     image_w: int) -> dict:
    """CVAT's mask runs (row-major inside [left, left + width) x [top, top + height), zeros first) -> COCO RLE."""
    runs = [int(v) for v in rle_text.replace(",", " ").split()]
    flat = np.zeros(width * height, np.uint8)
    pos, value = 0, 0
    for run in runs:
        flat[pos:pos + run] = value
        pos, value = pos + run, 1 - value
    if pos != width * height:
        raise ConvertError(f"a CVAT mask's runs cover {pos} pixels but its box is {width}x{height}")
    plane = np.zeros((image_h, image_w), np.uint8, order="F")
    box = flat.reshape(height, width)[: max(image_h - top, 0), : max(image_w - left, 0)]
    plane[top:top + box.shape[0], left:left + box.shape[1]] = box
    rle = mask_utils.encode(plane)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_to_cvat_rle(mask: np.ndarray) -> tuple[str, int, int, int, int] | None:
    """(H, W) bool mask -> CVAT's ``<mask>`` attributes (rle, left, top, width, height): the runs of the mask's
    box, row by row, background first (the inverse of :func:`cvat_mask_to_rle`); None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    left, top = int(xs.min()), int(ys.min())
    width, height = int(xs.max()) - left + 1, int(ys.max()) - top + 1
    flat = np.asarray(mask[top:top + height, left:left + width], bool).ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.r_[0, edges, flat.size]).tolist()
    if flat[0]:
        runs.insert(0, 0)  # the runs start with the background
    return ", ".join(map(str, runs)), left, top, width, height


def _skeleton_schema(root: ET.Element, label: str) -> tuple[list[str], list[list[int]]]:
    """Keypoint names (in node order) and 1-based edges of skeleton ``label`` from the XML's meta."""
    children, svg = [], None
    for lab in root.iter("label"):
        name, parent = lab.findtext("name"), lab.findtext("parent")
        if name == label and lab.findtext("type") == "skeleton":
            svg = unescape(lab.findtext("svg") or "")
        elif parent == label:
            children.append(name)
    if not children:
        raise ConvertError(f"the XML's <meta> has no skeleton label {label!r} with point labels (a <label> with "
                           f"<type>skeleton</type> and <label>s whose <parent> is it); give --category")
    names = children
    if svg:
        nodes = {m.group(1): m.group(2) for m in re.finditer(r'data-node-id="(\d+)"[^>]*data-label-name="([^"]+)"', svg)}
        if len(nodes) == len(children):
            names = [nodes[i] for i in sorted(nodes, key=int)]
        index = {n: i + 1 for i, n in enumerate(names)}
        edges = []
        for m in re.finditer(r'data-node-from="(\d+)"[^>]*data-node-to="(\d+)"', svg):
            a, b = nodes.get(m.group(1)), nodes.get(m.group(2))
            if a in index and b in index:
                edges.append([index[a], index[b]])
        return names, edges
    return names, []


def _points(text: str) -> np.ndarray:
    return np.asarray([[float(v) for v in p.split(",")] for p in text.split(";") if p], np.float64)


def read_cvat_xml(xml_path: str | os.PathLike, *, category: str = "person", notes: list[str] | None = None) -> dict:
    """COCO dict of a CVAT for images 1.1 export; ``category`` names the skeleton and mask label; what was
    dropped is added to ``notes``."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as e:
        raise ConvertError(f"cannot read CVAT XML {xml_path}: {e}") from None
    names, edges = _skeleton_schema(root, category)
    index = {n: i for i, n in enumerate(names)}
    records = []
    for im in root.iter("image"):
        w, h = int(float(im.get("width", 0))), int(float(im.get("height", 0)))
        if not w or not h:
            raise ConvertError(f"{xml_path}: <image name={im.get('name')!r}> has no width/height (an images task "
                               f"export has them; video exports are not supported)")
        rec = ImageRecord(file_name=im.get("name"), width=w, height=h)
        skeletons, regions, boxes = [], [], {}
        for el in im:
            if el.get("label") != category:
                continue
            group = el.get("group_id")
            if el.tag == "skeleton":
                kp = np.zeros((len(names), 3))
                for pt in el.findall("points"):
                    i = index.get(pt.get("label"))
                    if i is None:
                        raise ConvertError(f"{xml_path}: image {rec.file_name}: skeleton point {pt.get('label')!r} "
                                           f"is not one of {names}")
                    if pt.get("outside", "0") == "1":
                        continue
                    kp[i, :2] = _points(pt.get("points"))[0]
                    kp[i, 2] = 1 if pt.get("occluded", "0") == "1" else 2
                skeletons.append((group, kp))
            elif el.tag == "polygon":
                regions.append((group, Person(polygons=[_points(el.get("points")).ravel().tolist()])))
            elif el.tag == "mask":
                rle = cvat_mask_to_rle(el.get("rle"), int(float(el.get("left"))), int(float(el.get("top"))),
                                       int(float(el.get("width"))), int(float(el.get("height"))), h, w)
                regions.append((group, Person(rle=rle)))
            elif el.tag == "box" and group:
                x0, y0, x1, y1 = (float(el.get(k)) for k in ("xtl", "ytl", "xbr", "ybr"))
                boxes[group] = [x0, y0, x1 - x0, y1 - y0]
        rec.people = _pair(skeletons, regions, boxes, h, w)
        records.append(rec)
    return to_coco(records, keypoint_names=names, skeleton=edges, category=category, notes=notes)


def _pair(skeletons, regions, boxes, h, w) -> list[Person]:
    """One Person per skeleton with its region (the shapes of its group_id, else the region holding its points)."""
    people, free = [], []
    grouped: dict = {}
    for g, r in regions:
        if g:
            grouped.setdefault(g, []).append(r)
    by_group = {g: merge_parts(parts, h, w) for g, parts in grouped.items()}  # several outlines: one mask
    for group, kp in skeletons:
        region = by_group.pop(group, None) if group else None
        person = region or Person()
        person.keypoints, person.bbox = kp, boxes.get(group) if group else None
        people.append(person)
        if region is None:
            free.append(person)
    loose = [r for g, r in regions if not g] + list(by_group.values())
    if free and loose:
        masks = [mask_utils.decode(_as_rle(r, h, w)).astype(bool) for r in loose]
        owner = assign_to_regions([p.keypoints[p.keypoints[:, 2] > 0, :2] for p in free], masks)
        for person, j in zip(free, owner):
            if j is not None:
                person.polygons, person.rle = loose[j].polygons, loose[j].rle
    return people


def _as_rle(person: Person, h: int, w: int) -> dict:
    if person.rle is not None:
        return {"size": person.rle["size"], "counts": person.rle["counts"].encode("ascii")}
    return mask_utils.merge(mask_utils.frPyObjects(person.polygons, h, w))
