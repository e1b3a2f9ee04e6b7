"""Ultralytics YOLO-pose <-> COCO keypoints.

YOLO-pose (docs.ultralytics.com/datasets/pose): a dataset YAML (``path``, ``train``/``val`` image
folders, ``kpt_shape: [K, 2 or 3]``, ``flip_idx``, ``names``) and one ``labels/<split>/<stem>.txt``
per image beside ``images/<split>/``: a line per object, ``class cx cy w h x1 y1 [v1] ... xK yK [vK]``,
everything normalised to [0, 1] by the image size. Optional polygons come from a YOLO segment label
folder (``class x1 y1 x2 y2 ...``) and are matched to the pose lines by box overlap.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from poseseg.data.convert.people import ConvertError, ImageRecord, Person, to_coco
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES, COCO_SKELETON, KeypointSchema
from poseseg.ops.boxes import box_iou

__all__ = ["read_yolo_pose", "write_yolo_pose"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _labels_dir(images_dir: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir.parent / "labels" / images_dir.name


def _parse_floats(line: str, where: str) -> list[float]:
    try:
        return [float(v) for v in line.split()]
    except ValueError:
        raise ConvertError(f"{where}: not a list of numbers: {line.strip()[:80]!r}") from None


def _require_normalised(named: list[tuple[str, float]], where: str) -> None:
    """Refuse the first value outside 0..1 (a pixel coordinate, or a box past the border) with file:line."""
    for name, value in named:
        if not 0.0 <= value <= 1.0:
            raise ConvertError(f"{where}: {name} = {value:g} is outside 0..1: YOLO coordinates are normalised to "
                               f"0..1 by the image width and height; divide pixel coordinates by them, and clip "
                               f"boxes and points to the image")


def read_yolo_pose(data_yaml: str | os.PathLike, *, split: str = "train", class_id: int = 0,
                   segments: str | os.PathLike | None = None, keypoint_names: list[str] | None = None,
                   notes: list[str] | None = None) -> tuple[dict, Path]:
    """(COCO dict, images folder) of one split of a YOLO-pose dataset; what was dropped is added to ``notes``.
    A coordinate outside 0..1 is refused with its file:line (Ultralytics refuses such labels too)."""
    data_yaml = Path(data_yaml)
    try:
        spec = yaml.safe_load(data_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConvertError(f"cannot read the YOLO dataset YAML {data_yaml}: {e}") from None
    if "kpt_shape" not in spec:
        raise ConvertError(f"{data_yaml} has no 'kpt_shape' (e.g. kpt_shape: [17, 3]): is it a pose dataset?")
    k, dims = (int(v) for v in spec["kpt_shape"])
    if dims not in (2, 3):
        raise ConvertError(f"{data_yaml}: kpt_shape {spec['kpt_shape']}: the second value must be 2 or 3")
    if split not in spec:
        raise ConvertError(f"{data_yaml} has no '{split}' split (it has {', '.join(s for s in ('train', 'val', 'test') if s in spec)})")
    root = Path(spec.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    images_dir = root / str(spec[split])
    if not images_dir.is_dir():
        raise ConvertError(f"{data_yaml}: the {split} image folder {images_dir} does not exist")
    labels_dir = _labels_dir(images_dir)
    names = keypoint_names or spec.get("kpt_names") or (COCO_KEYPOINT_NAMES if k == 17 else [f"kp{i}" for i in range(k)])
    if isinstance(names, dict):  # Ultralytics writes kpt_names per class: {0: [...]}
        names = names.get(class_id) or next(iter(names.values()))
    if len(names) != k:
        raise ConvertError(f"{len(names)} keypoint names for kpt_shape K={k}; give K names")
    records = []
    for image_path in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        with Image.open(image_path) as im:
            w, h = im.size
        rec = ImageRecord(file_name=image_path.name, width=w, height=h)
        label = labels_dir / f"{image_path.stem}.txt"
        lines = label.read_text().splitlines() if label.is_file() else []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            values = _parse_floats(line, f"{label}:{n}")
            if len(values) != 5 + k * dims:
                raise ConvertError(f"{label}:{n} has {len(values)} numbers; kpt_shape [{k}, {dims}] needs "
                                   f"{5 + k * dims} (class, cx, cy, w, h, then {k} x {dims})")
            if int(values[0]) != class_id:
                continue
            cx, cy, bw, bh = values[1:5]
            kp = np.asarray(values[5:], np.float64).reshape(k, dims)
            _require_normalised([("box cx", cx), ("box cy", cy), ("box w", bw), ("box h", bh)]
                                + [(f"keypoint {i + 1} ({names[i]}) {axis}", kp[i, a])
                                   for i in range(k) for a, axis in enumerate("xy")], f"{label}:{n}")
            xy = kp[:, :2] * [w, h]
            vis = kp[:, 2] if dims == 3 else np.where((kp[:, 0] > 0) | (kp[:, 1] > 0), 2.0, 0.0)
            rec.people.append(Person(keypoints=np.concatenate([xy, vis[:, None]], 1),
                                     bbox=[(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]))
        if segments is not None:
            _attach_polygons(rec, Path(segments) / f"{image_path.stem}.txt", class_id)
        records.append(rec)
    skeleton = [[a + 1, b + 1] for a, b in COCO_SKELETON] if [n.lower() for n in names] == COCO_KEYPOINT_NAMES else []
    return to_coco(records, keypoint_names=list(names), skeleton=skeleton, notes=notes), images_dir


def _attach_polygons(rec: ImageRecord, seg_file: Path, class_id: int) -> None:
    """Give each pose line the segment polygon whose box overlaps its box most (IoU >= 0.5, one each)."""
    if not seg_file.is_file():
        return
    polys = []
    for n, line in enumerate(seg_file.read_text().splitlines(), start=1):
        values = _parse_floats(line, f"{seg_file}:{n}")
        if len(values) < 7 or int(values[0]) != class_id:
            continue
        pts = np.asarray(values[1:1 + 2 * ((len(values) - 1) // 2)]).reshape(-1, 2)
        _require_normalised([(f"point {i + 1} {'xy'[a]}", v) for i, p in enumerate(pts) for a, v in enumerate(p)],
                            f"{seg_file}:{n}")
        pts = pts * [rec.width, rec.height]
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        polys.append((pts.ravel().tolist(), [x0, y0, x1 - x0, y1 - y0]))
    person_boxes = [[x, y, x + w, y + h] for x, y, w, h in (p.bbox for p in rec.people)]  # xyxy
    polygon_boxes = [[x, y, x + w, y + h] for x, y, w, h in (box for _, box in polys)]
    overlap = box_iou(person_boxes, polygon_boxes)  # (people, polygons)
    pairs = sorted(((float(overlap[i, j]), i, j) for i in range(len(person_boxes)) for j in range(len(polys))),
                   reverse=True)
    taken_p, taken_s = set(), set()
    for iou, i, j in pairs:
        if iou >= 0.5 and i not in taken_p and j not in taken_s:
            rec.people[i].polygons = [polys[j][0]]
            taken_p.add(i)
            taken_s.add(j)


def write_yolo_pose(coco: dict, images_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    split: str = "train", category: str | int = "person", link_images: bool = True) -> Path:
    """COCO keypoints -> ``out_dir/labels/<split>/*.txt`` + ``images/<split>`` (links) + ``data.yaml``.

    Boxes and keypoints are clipped to the image (Ultralytics, and :func:`read_yolo_pose`, refuse values
    outside 0..1); a v = 0 keypoint is written ``0 0 0``.
    """
    cats = coco.get("categories") or []
    cat = next((c for c in cats if c.get("name") == category or c.get("id") == category), None)
    if cat is None or not cat.get("keypoints"):
        raise ConvertError(f"no keypoint category {category!r} in the COCO file (categories: "
                           f"{', '.join(repr(c.get('name')) for c in cats) or 'none'})")
    schema = KeypointSchema.from_coco_category(cat)
    k = schema.num_keypoints
    out_dir, images_dir = Path(out_dir), Path(images_dir)
    labels, image_out = out_dir / "labels" / split, out_dir / "images" / split
    labels.mkdir(parents=True, exist_ok=True)
    image_out.mkdir(parents=True, exist_ok=True)
    per_image: dict = {}
    for a in coco.get("annotations", []):
        if a.get("category_id") == cat["id"] and not a.get("iscrowd", 0):
            per_image.setdefault(a["image_id"], []).append(a)
    for im in coco.get("images", []):
        w, h = float(im["width"]), float(im["height"])
        lines = []
        for a in per_image.get(im["id"], []):
            x, y, bw, bh = (float(v) for v in a["bbox"])
            x0, y0, x1, y1 = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])  # YOLO has nothing outside 0..1
            kp = np.asarray(a.get("keypoints") or [0.0] * 3 * k, np.float64).reshape(k, 3)
            kp[kp[:, 2] <= 0] = 0.0
            norm = np.stack([np.clip(kp[:, 0] / w, 0, 1), np.clip(kp[:, 1] / h, 0, 1), kp[:, 2]], 1)
            numbers = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
            cells = [f"{v:.6f}" for v in numbers] + [f"{v:.6f}" if i % 3 != 2 else str(int(v))
                                                     for i, v in enumerate(norm.ravel())]
            lines.append("0 " + " ".join(cells))
        stem = Path(im["file_name"]).stem
        (labels / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        src, dst = images_dir / im["file_name"], image_out / Path(im["file_name"]).name
        if link_images and src.is_file() and not dst.exists():
            try:
                dst.symlink_to(src.resolve())
            except OSError:
                shutil.copy2(src, dst)
    spec_path = out_dir / "data.yaml"
    spec = yaml.safe_load(spec_path.read_text()) if spec_path.is_file() else {}
    spec.update({"path": str(out_dir.resolve()), split: f"images/{split}", "kpt_shape": [k, 3],
                 "flip_idx": schema.flip_permutation(), "names": {0: cat.get("name", "person")},
                 "kpt_names": {0: list(schema.names)}})
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec_path
