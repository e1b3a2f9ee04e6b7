"""Parsing a COCO people JSON once into compact arrays, with checks that name the field and the fix.

Storage. The JSON is parsed once into a handful of numpy arrays (one concatenated array per
field plus per-image offsets); no python dict per image or annotation survives the
constructor, so DataLoader workers that touch the dataset do not copy-on-read it into
gigabytes. Segmentations are kept encoded: polygons as float64 coordinates with offsets,
RLEs as their compressed byte strings. Masks are decoded per sample in ``__getitem__`` with
pycocotools, exactly as ``COCO.annToMask`` does.

``parse_coco_people`` is used by :class:`poseseg.data.coco.CocoPeopleDataset` and by
``poseseg check-data`` (:mod:`poseseg.data.check`), so both report the same problems.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES, KeypointSchema, skeleton_outside

__all__ = ["DatasetError", "check_schema", "resolve_schema", "parse_coco_people", "negative_coordinate",
           "negative_coordinates_warning", "empty_dataset_problem"]


class DatasetError(ValueError):
    """A dataset JSON that cannot be used as configured (raised at start-up, never mid-training)."""


# ----------------------------------------------------------------------------- schema checks


def check_schema(schema: KeypointSchema | None, num_keypoints_model: int, *, source: str = "the dataset") -> None:
    """Raise a clear :class:`DatasetError` when the dataset's K differs from the model's K."""
    if schema is None:
        raise DatasetError(
            f"dataset {source} has no keypoints (its category has no 'keypoints' list) but the model has a "
            f"keypoint head for {num_keypoints_model} keypoints (model.keypoint.num_keypoints); use a COCO "
            f"keypoints JSON, or drop 'keypoint' from model.heads")
    k = schema.num_keypoints
    if k != int(num_keypoints_model):
        raise DatasetError(
            f"dataset {source} has {k} keypoints ({', '.join(schema.names)}) but the model is configured for "
            f"{num_keypoints_model} (model.keypoint.num_keypoints); set model.keypoint.num_keypoints={k}, or "
            f"use a dataset with {num_keypoints_model} keypoints")


def resolve_schema(category: dict, *, oks_sigmas: list[float] | None = None,
                   flip_pairs: list[tuple[int, int]] | None = None, require_sigmas: bool = True,
                   source: str = "the dataset") -> KeypointSchema | None:
    """The keypoint schema of a COCO category dict, with config overrides; None without keypoints.

    OKS sigmas: COCO's for the COCO-17 names, else ``oks_sigmas`` (config ``data.oks_sigmas``),
    which is then required when ``require_sigmas``. Flip pairs: ``flip_pairs`` (config
    ``data.flip_pairs``) or derived from left/right names.
    """
    names = list(category.get("keypoints") or [])
    if not names:
        return None
    k = len(names)
    sigmas = [float(s) for s in oks_sigmas] if oks_sigmas else None
    if sigmas is not None and len(sigmas) != k:
        raise DatasetError(f"data.oks_sigmas has {len(sigmas)} values but dataset {source} has {k} keypoints "
                           f"({', '.join(names)}); give one sigma per keypoint")
    is_coco17 = [n.lower() for n in names] == COCO_KEYPOINT_NAMES
    if sigmas is None and not is_coco17 and require_sigmas:
        raise DatasetError(
            f"dataset {source}: category {category.get('name')!r} has {k} keypoints ({', '.join(names)}), not "
            f"COCO's 17, so there are no default OKS sigmas; set data.oks_sigmas to {k} per-keypoint values "
            f"(e.g. from the dataset's benchmark)")
    schema = KeypointSchema.from_coco_category(category, sigmas=sigmas)
    if flip_pairs:
        pairs = [tuple(int(i) for i in p) for p in flip_pairs]
        for a, b in pairs:
            if not (0 <= a < k and 0 <= b < k):
                raise DatasetError(f"data.flip_pairs has pair ({a}, {b}) outside the {k} keypoints of {source}")
        schema = KeypointSchema(names=schema.names, skeleton=schema.skeleton, flip_pairs=pairs, sigmas=schema.sigmas)
    return schema


def _find_category(categories: list[dict], category: str | int, source: str) -> dict:
    for c in categories:
        if isinstance(category, str) and c.get("name") == category:
            return c
    want = None
    if isinstance(category, (int, np.integer)):
        want = int(category)
    elif isinstance(category, str) and category.strip().lstrip("-").isdigit():
        want = int(category)
    for c in categories:
        if want is not None and c.get("id") == want:
            return c
    avail = ", ".join(f"{c.get('id')}: {c.get('name')!r}" for c in categories) or "none"
    raise DatasetError(f"dataset {source} has no category {category!r} (data.category); its categories are {avail}")


# ----------------------------------------------------------------------------- compact storage


class _StringTable:
    """Many strings in one uint8 blob + offsets (no per-string python objects)."""

    def __init__(self, strings: list[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.blob = np.frombuffer(b"".join(encoded), np.uint8).copy()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")


@dataclass
class _Store:
    image_ids: np.ndarray  # (I,) int64
    heights: np.ndarray  # (I,) int32
    widths: np.ndarray  # (I,) int32
    file_names: _StringTable
    ann_start: np.ndarray  # (I + 1,) int64: annotations of image i are [ann_start[i], ann_start[i + 1])
    ann_ids: np.ndarray  # (A,) int64
    boxes: np.ndarray  # (A, 4) float32 xyxy, clipped to the image
    iscrowd: np.ndarray  # (A,) uint8
    keypoints: np.ndarray | None  # (A, K, 3) float32
    poly_start: np.ndarray  # (A + 1,) int64: polygons of annotation a are [poly_start[a], poly_start[a + 1])
    coord_start: np.ndarray  # (P + 1,) int64: coordinates of polygon p are coords[coord_start[p]:...]
    coords: np.ndarray  # (C,) float64
    rle_start: np.ndarray  # (A + 1,) int64: compressed RLE bytes of annotation a
    rle_blob: np.ndarray  # (B,) uint8


@dataclass
class _Parsed:
    store: _Store
    category: dict
    schema: KeypointSchema | None
    stats: dict
    errors: list[str]
    warnings: list[str]
    bad_box_examples: list[dict]


def negative_coordinate(ann: dict) -> str | None:
    """The first negative coordinate of a COCO annotation, e.g. ``bbox x = -3.2`` or ``keypoint 5 y = -0.5``
    (labelled keypoints only: v = 0 points carry no position); None when it has none."""
    bbox = ann.get("bbox")
    if isinstance(bbox, (list, tuple)) and len(bbox) == 4:
        for name, value in zip("xy", bbox[:2]):
            if isinstance(value, (int, float)) and value < 0:
                return f"bbox {name} = {value:g}"
    raw = ann.get("keypoints") or []
    for i in range(len(raw) // 3):
        x, y, v = raw[3 * i:3 * i + 3]
        if isinstance(v, (int, float)) and v > 0:
            for name, value in (("x", x), ("y", y)):
                if isinstance(value, (int, float)) and value < 0:
                    return f"keypoint {i + 1} {name} = {value:g}"
    return None


def negative_coordinates_warning(count: int, first: str) -> str:
    """The one wording of the negative-coordinates warning (check-data, training, convert-data)."""
    return (f"{count} annotation(s) have negative coordinates, first: {first}; a box is clipped at 0 and a "
            f"keypoint outside the picture gets no training target: fix the points in the annotation tool (or "
            f"set their visibility to 0 if they are not in the picture)")


def empty_dataset_problem(json_path: str | Path, stats: dict, category_name: str) -> str | None:
    """Why a dataset holds nothing to train on (no images, or images without one non-crowd person), with the
    fix; None when it has people. ``train`` refuses such a dataset and ``check-data`` reports it as an error."""
    if not stats.get("images_total"):
        return (f"{json_path} has no images: nothing to train on (its 'images' list is empty; check --data, or "
                f"export the annotations again with the images included)")
    if not stats.get("people"):
        return (f"{json_path} has no images with people of category {category_name!r}: nothing to train on "
                f"({stats.get('images_total')} image(s), no non-crowd annotation of that category; check the file "
                f"and data.category)")
    return None


def load_coco_json(json_path: Path) -> dict:
    """The COCO dict of a dataset JSON, or a DatasetError that says what is wrong with the file."""
    try:
        with open(json_path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise DatasetError(f"dataset JSON {json_path} does not exist (data.train_json / data.val_json)") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"dataset JSON {json_path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DatasetError(f"dataset JSON {json_path} is not COCO format (needs 'images', 'annotations' "
                           f"and 'categories')")
    return data


def parse_coco_people(json_path: Path, *, category: str | int, schema: KeypointSchema | None,
           oks_sigmas: list[float] | None, flip_pairs: list | None, require_sigmas: bool,
           keep_empty: bool, min_box_size: float, strict: bool, max_examples: int = 10) -> _Parsed:
    """Read a COCO JSON into a :class:`_Store`. ``strict``: raise on the first hard error."""
    src = str(json_path)
    data = load_coco_json(json_path)
    errors: list[str] = []
    warns: list[str] = []

    def hard(msg: str) -> None:
        if strict:
            raise DatasetError(msg)
        errors.append(msg)

    cat = _find_category(data.get("categories") or [], category, src)
    cat_id = cat["id"]
    if schema is None:
        schema = resolve_schema(cat, oks_sigmas=oks_sigmas, flip_pairs=flip_pairs,
                                require_sigmas=require_sigmas, source=src)
    elif cat.get("keypoints") and len(cat["keypoints"]) != schema.num_keypoints:
        hard(f"dataset {src}: category {cat.get('name')!r} has {len(cat['keypoints'])} keypoints but the given "
             f"schema has {schema.num_keypoints} ({', '.join(schema.names)})")
    k = schema.num_keypoints if schema is not None else 0
    outside = skeleton_outside(cat)
    if outside:
        warns.append(f"category {cat.get('name')!r} has {len(outside)} skeleton edge(s) naming keypoints beyond its "
                     f"{len(cat.get('keypoints') or [])} (1-based, as in the file): "
                     f"{', '.join(str(e) for e in outside[:6])}; they are left out of drawings")

    stats = dict(images_total=0, images=0, negative_images=0, crowd_only_images=0, skipped_images=0,
                 people=0, crowd=0, dropped_boxes=0, keypoints_labeled=0, keypoints_visible=0,
                 people_with_keypoints=0, people_without_mask=0, bad_polygons=0,
                 annotations_unknown_image=0, duplicate_image_ids=0)
    bad_box_examples: list[dict] = []
    negative, first_negative = 0, ""

    images = data["images"]
    stats["images_total"] = len(images)
    index: dict[int, int] = {}
    for i, im in enumerate(images):
        iid = im.get("id")
        if iid in index:
            stats["duplicate_image_ids"] += 1
            continue
        index[iid] = i
    if stats["duplicate_image_ids"]:
        hard(f"dataset {src}: {stats['duplicate_image_ids']} image ids appear more than once in 'images'")

    per_image: list[list[dict]] = [[] for _ in images]
    for ann in data["annotations"]:
        if ann.get("category_id") != cat_id:
            continue
        i = index.get(ann.get("image_id"))
        if i is None:
            stats["annotations_unknown_image"] += 1
            continue
        per_image[i].append(ann)
    if stats["annotations_unknown_image"]:
        warns.append(f"{stats['annotations_unknown_image']} annotations refer to image ids not in 'images' "
                     f"(ignored)")

    image_ids, heights, widths, names = [], [], [], []
    ann_start = [0]
    ann_ids, boxes, iscrowd, kps_rows = [], [], [], []
    poly_start, coord_start, coord_chunks = [0], [0], []
    rle_start, rle_chunks = [0], []
    n_coords = n_rle = 0

    for i, im in enumerate(images):
        if index.get(im.get("id")) != i:
            continue  # a duplicate id
        try:
            h, w = int(im["height"]), int(im["width"])
            fname = str(im["file_name"])
        except (KeyError, TypeError, ValueError):
            hard(f"dataset {src}: image {im.get('id')} lacks 'file_name', 'height' or 'width'")
            continue
        rows = []
        for ann in per_image[i]:
            crowd = 1 if ann.get("iscrowd", 0) else 0
            where = negative_coordinate(ann)
            if where:
                negative += 1
                first_negative = first_negative or f"annotation {ann.get('id')} in {fname}: {where}"
            bbox = ann.get("bbox")
            try:
                x, y, bw, bh = (float(v) for v in bbox)
            except (TypeError, ValueError):
                x = y = bw = bh = float("nan")
            x1, y1 = min(max(x, 0.0), w), min(max(y, 0.0), h)
            x2, y2 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
            if not (x2 - x1 >= min_box_size and y2 - y1 >= min_box_size):  # also catches NaN
                stats["dropped_boxes"] += 1
                if len(bad_box_examples) < max_examples:
                    bad_box_examples.append({"annotation_id": ann.get("id"), "image_id": im.get("id"),
                                             "file_name": fname, "bbox": bbox, "iscrowd": crowd})
                continue
            kp = np.zeros((k, 3), np.float32)
            raw = ann.get("keypoints")
            if raw and k:
                if len(raw) != 3 * k:
                    hard(f"dataset {src}: annotation {ann.get('id')} (image {im.get('id')}) has "
                         f"{len(raw) / 3:g} keypoints but category {cat.get('name')!r} has {k} "
                         f"({', '.join(schema.names)})")
                    continue
                kp = np.asarray(raw, np.float32).reshape(k, 3)
                kp[kp[:, 2] <= 0] = 0.0
                kp[:, 2] = np.clip(kp[:, 2], 0, 2)
            if crowd:
                kp[:] = 0.0
            segm = ann.get("segmentation")
            polys, rle = [], b""
            if isinstance(segm, list):
                for p in segm:
                    if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0:
                        polys.append(np.asarray(p, np.float64))
                    else:
                        stats["bad_polygons"] += 1
            elif isinstance(segm, dict) and "counts" in segm:
                size = [int(s) for s in segm.get("size", [h, w])]
                if size != [h, w]:
                    hard(f"dataset {src}: annotation {ann.get('id')} has an RLE of size {size} but its image "
                         f"{fname} is {h}x{w} (height x width)")
                else:
                    counts = segm["counts"]
                    if isinstance(counts, list):  # uncompressed RLE -> compressed bytes
                        counts = mask_utils.frPyObjects(segm, h, w)["counts"]
                    rle = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
            if not polys and not rle and not crowd:
                stats["people_without_mask"] += 1
            rows.append(dict(id=ann.get("id", -1), box=(x1, y1, x2, y2), crowd=crowd, kp=kp, polys=polys, rle=rle))

        n_people = sum(1 for r in rows if not r["crowd"])
        if n_people == 0:
            if not keep_empty:
                stats["skipped_images"] += 1
                continue
            stats["negative_images"] += 1
            if rows:
                stats["crowd_only_images"] += 1
        stats["images"] += 1
        image_ids.append(int(im["id"]))
        heights.append(h)
        widths.append(w)
        names.append(fname)
        for r in rows:
            ann_ids.append(int(r["id"]) if r["id"] is not None else -1)
            boxes.append(r["box"])
            iscrowd.append(r["crowd"])
            kps_rows.append(r["kp"])
            for p in r["polys"]:
                coord_chunks.append(p)
                n_coords += p.size
                coord_start.append(n_coords)
            poly_start.append(len(coord_start) - 1)
            if r["rle"]:
                rle_chunks.append(r["rle"])
                n_rle += len(r["rle"])
            rle_start.append(n_rle)
            if r["crowd"]:
                stats["crowd"] += 1
            else:
                stats["people"] += 1
                labeled = int((r["kp"][:, 2] > 0).sum()) if k else 0
                stats["keypoints_labeled"] += labeled
                stats["keypoints_visible"] += int((r["kp"][:, 2] >= 2).sum()) if k else 0
                stats["people_with_keypoints"] += int(labeled > 0)
        ann_start.append(len(ann_ids))

    if stats["bad_polygons"]:
        warns.append(f"{stats['bad_polygons']} polygons with fewer than 3 points or an odd coordinate count "
                     f"(ignored)")
    if stats["dropped_boxes"]:
        warns.append(f"{stats['dropped_boxes']} annotations dropped: box narrower or lower than "
                     f"{min_box_size:g} px after clipping to the image")
    if negative:
        warns.append(negative_coordinates_warning(negative, first_negative))
    if stats["people_without_mask"]:
        warns.append(f"{stats['people_without_mask']} people have no segmentation (their mask is empty)")
    del data, per_image, images, index

    a = len(ann_ids)
    store = _Store(
        image_ids=np.asarray(image_ids, np.int64), heights=np.asarray(heights, np.int32),
        widths=np.asarray(widths, np.int32), file_names=_StringTable(names),
        ann_start=np.asarray(ann_start, np.int64), ann_ids=np.asarray(ann_ids, np.int64),
        boxes=np.asarray(boxes, np.float32).reshape(a, 4), iscrowd=np.asarray(iscrowd, np.uint8),
        keypoints=None if not k else (np.stack(kps_rows).astype(np.float32) if a else np.zeros((0, k, 3), np.float32)),
        poly_start=np.asarray(poly_start, np.int64), coord_start=np.asarray(coord_start, np.int64),
        coords=np.concatenate(coord_chunks) if coord_chunks else np.zeros(0, np.float64),
        rle_start=np.asarray(rle_start, np.int64),
        rle_blob=np.frombuffer(b"".join(rle_chunks), np.uint8).copy())
    return _Parsed(store, {"id": cat_id, "name": cat.get("name")}, schema, stats, errors, warns, bad_box_examples)
