"""COCO-format people datasets: JSON -> compact arrays -> (image, Target) samples.

Storage. The JSON is parsed once into a handful of numpy arrays (one concatenated array per
field plus per-image offsets); no python dict per image or annotation survives the
constructor, so DataLoader workers that touch the dataset do not copy-on-read it into
gigabytes. Segmentations are kept encoded: polygons as float64 coordinates with offsets,
RLEs as their compressed byte strings. Masks are decoded per sample in ``__getitem__`` with
pycocotools, exactly as ``COCO.annToMask`` does.

What a sample holds (``poseseg.types.Target``): every annotation of the chosen category whose
box, clipped to the image, is at least ``min_box_size`` pixels wide and high. Crowd
annotations are included with ``iscrowd = 1`` (the model's matcher ignores them; they are
never people). Images without any non-crowd person are negatives, kept or skipped by
``keep_empty``. Keypoints are in continuous pixel coordinates, exactly as the JSON has them;
keypoints with visibility 0 have x = y = 0.

Bad images. A missing, unreadable, truncated or wrongly sized image is recorded in
``dataset.bad_images`` (all modes) and never raises from ``__getitem__`` unless
``on_bad_image="raise"`` (then an ``ImageReadError`` naming the file). Otherwise it is
logged once and, with ``on_bad_image="skip"`` (default), ``__getitem__`` returns ``None``,
which :func:`poseseg.data.transforms.collate` (alias :func:`collate_skip_none`) drops from
the batch; a batch can therefore be shorter than asked, or empty. With
``on_bad_image="resample"`` the next indices (idx + 1, idx + 2, ... modulo the length) are
tried instead, deterministically, so batches keep their size.

Multi-worker story: the record of bad images is one byte per image in a shared-memory torch
tensor created by the constructor, which DataLoader workers share under fork, spawn and
forkserver alike. So ``dataset.bad_images`` read in the main process lists what every worker
met, during and after iteration (in index order). Each DDP rank has its own record
(all-reduce ``num_bad_images`` for a global count). Pickling the dataset outside a process
start (``pickle.dumps``) gives a copy with a private record.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch.utils.data import Dataset

from poseseg.data.image_io import DEFAULT_MAX_PIXELS, ImageReadError, load_image_rgb
from poseseg.data.schema import COCO_KEYPOINT_NAMES, KeypointSchema
from poseseg.data.transforms import collate
from poseseg.types import Target

__all__ = ["CocoPeopleDataset", "check_schema", "resolve_schema", "collate_skip_none", "DatasetError"]

log = logging.getLogger("poseseg.data")

collate_skip_none = collate  # drops the ``None`` samples of unreadable images

_REASONS = {1: "missing file", 2: "unreadable or corrupt image", 3: "image size differs from the JSON"}


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


def _load_json(json_path: Path) -> dict:
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


def _parse(json_path: Path, *, category: str | int, schema: KeypointSchema | None,
           oks_sigmas: list[float] | None, flip_pairs: list | None, require_sigmas: bool,
           keep_empty: bool, min_box_size: float, strict: bool, max_examples: int = 10) -> _Parsed:
    """Read a COCO JSON into a :class:`_Store`. ``strict``: raise on the first hard error."""
    src = str(json_path)
    data = _load_json(json_path)
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

    stats = dict(images_total=0, images=0, negative_images=0, crowd_only_images=0, skipped_images=0,
                 people=0, crowd=0, dropped_boxes=0, keypoints_labeled=0, keypoints_visible=0,
                 people_with_keypoints=0, people_without_mask=0, bad_polygons=0,
                 annotations_unknown_image=0, duplicate_image_ids=0)
    bad_box_examples: list[dict] = []

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


# ----------------------------------------------------------------------------- bad-image record


class _BadImageLog:
    """One int8 reason code per image (0: fine) in a shared-memory torch tensor.

    Each worker writes only the byte of the image it failed to read, so no lock is needed.
    torch shares the tensor with DataLoader workers under fork, spawn and forkserver; plain
    pickling copies it.
    """

    def __init__(self, num_images: int) -> None:
        self.codes = torch.zeros(max(int(num_images), 1), dtype=torch.int8).share_memory_()

    def add(self, idx: int, code: int) -> bool:
        """Record ``idx``; True when it was not recorded before."""
        new = int(self.codes[idx]) == 0
        self.codes[idx] = code
        return new

    def entries(self) -> list[tuple[int, int]]:
        idx = torch.nonzero(self.codes).flatten().tolist()
        return [(i, int(self.codes[i])) for i in idx]

    def count(self) -> int:
        return int(torch.count_nonzero(self.codes))

    def clear(self) -> None:
        self.codes.zero_()


# ----------------------------------------------------------------------------- the dataset


class CocoPeopleDataset(Dataset):
    """People of one COCO category as ``(image (3, H, W) float in [0, 1], Target)`` samples.

    Args:
        json_path: COCO instances/keypoints JSON.
        image_dir: folder the JSON's ``file_name`` entries are relative to.
        category: category name or id (config ``data.category``).
        schema: keypoint schema; derived from the category when None.
        keep_empty: keep images without any non-crowd person as negatives (``data.keep_empty``).
        transforms: callable ``(image, target) -> (image, target)``, see ``poseseg.data.transforms``.
        max_image_pixels: decompression-bomb limit per image (``data.max_image_pixels``).
        min_box_size: annotations whose clipped box is narrower or lower than this are dropped.
        num_keypoints: the model's K; when given, a mismatch raises at construction.
        oks_sigmas / flip_pairs: config overrides (``data.oks_sigmas``, ``data.flip_pairs``).
        require_sigmas: raise at construction when a non-COCO-17 schema has no OKS sigmas.
        load_masks: decode masks (False for a model without a mask head: faster, no ``masks`` key).
        on_bad_image: ``"skip"`` (return None), ``"resample"`` (try the next index) or ``"raise"``.
        max_resample_tries: how many indices ``"resample"`` tries before giving up (returns None).
    """

    def __init__(self, json_path: str | os.PathLike, image_dir: str | os.PathLike, *,
                 category: str | int = "person", schema: KeypointSchema | None = None, keep_empty: bool = True,
                 transforms: Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]] | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_PIXELS, min_box_size: float = 1.0,
                 num_keypoints: int | None = None, oks_sigmas: list[float] | None = None,
                 flip_pairs: list | None = None, require_sigmas: bool = True, load_masks: bool = True,
                 on_bad_image: str = "skip", max_resample_tries: int = 16) -> None:
        if on_bad_image not in ("skip", "resample", "raise"):
            raise ValueError(f"on_bad_image must be 'skip', 'resample' or 'raise', got {on_bad_image!r}")
        self.json_path = Path(json_path)
        self.image_dir = Path(image_dir)
        parsed = _parse(self.json_path, category=category, schema=schema, oks_sigmas=oks_sigmas,
                        flip_pairs=flip_pairs, require_sigmas=require_sigmas, keep_empty=keep_empty,
                        min_box_size=float(min_box_size), strict=True)
        self._s = parsed.store
        self.category = parsed.category
        self.schema = parsed.schema
        self.stats = parsed.stats
        for w in parsed.warnings:
            log.warning("%s: %s", self.json_path, w)
        self.transforms = transforms
        self.max_image_pixels = max_image_pixels
        self.load_masks = load_masks
        self.on_bad_image = on_bad_image
        self.max_resample_tries = int(max_resample_tries)
        self._bad = _BadImageLog(len(self._s.image_ids))
        if num_keypoints is not None:
            self.check_schema(num_keypoints)

    # -- introspection ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._s.image_ids)

    def check_schema(self, num_keypoints_model: int) -> None:
        check_schema(self.schema, num_keypoints_model, source=str(self.json_path))

    def image_info(self, idx: int) -> dict:
        s = self._s
        return {"id": int(s.image_ids[idx]), "file_name": s.file_names[idx],
                "height": int(s.heights[idx]), "width": int(s.widths[idx])}

    def image_path(self, idx: int) -> Path:
        return self.image_dir / self._s.file_names[idx]

    def annotation_ids(self, idx: int) -> np.ndarray:
        """The JSON annotation ids behind the rows of ``get_target(idx)``."""
        return self._s.ann_ids[self._s.ann_start[idx]:self._s.ann_start[idx + 1]].copy()

    @property
    def image_ids(self) -> np.ndarray:
        return self._s.image_ids

    def group_ids(self) -> np.ndarray:
        """0 for landscape/square images (w >= h), 1 for portrait, from the JSON sizes."""
        return (self._s.widths < self._s.heights).astype(np.int64)

    @property
    def bad_images(self) -> list[str]:
        """File names of the images found unreadable so far (by any DataLoader worker)."""
        return [self._s.file_names[i] for i, _ in self._bad.entries()]

    @property
    def bad_image_reasons(self) -> dict[str, str]:
        return {self._s.file_names[i]: _REASONS.get(c, "unknown") for i, c in self._bad.entries()}

    @property
    def num_bad_images(self) -> int:
        return self._bad.count()

    def clear_bad_images(self) -> None:
        self._bad.clear()

    # -- samples -----------------------------------------------------------------------------

    def get_target(self, idx: int, *, masks: bool | None = None) -> Target:
        """The target of image ``idx`` in the JSON's pixel coordinates (no image read, no transform)."""
        s = self._s
        a0, a1 = int(s.ann_start[idx]), int(s.ann_start[idx + 1])
        n = a1 - a0
        target: Target = {
            "boxes": torch.from_numpy(s.boxes[a0:a1].copy()),
            "labels": torch.ones(n, dtype=torch.int64),
            "iscrowd": torch.from_numpy(s.iscrowd[a0:a1].astype(np.int64)),
            "image_id": int(s.image_ids[idx]),
            "file_name": s.file_names[idx],
        }
        if s.keypoints is not None:
            target["keypoints"] = torch.from_numpy(s.keypoints[a0:a1].copy())
        if self.load_masks if masks is None else masks:
            target["masks"] = torch.from_numpy(self.decode_masks(idx))
        return target

    def decode_masks(self, idx: int) -> np.ndarray:
        """(N, H, W) uint8 masks of image ``idx``, equal to ``COCO.annToMask`` of each annotation."""
        s = self._s
        a0, a1 = int(s.ann_start[idx]), int(s.ann_start[idx + 1])
        h, w = int(s.heights[idx]), int(s.widths[idx])
        out = np.zeros((a1 - a0, h, w), np.uint8)
        rles, where = [], []
        for j, a in enumerate(range(a0, a1)):
            p0, p1 = int(s.poly_start[a]), int(s.poly_start[a + 1])
            if p1 > p0:
                polys = [s.coords[s.coord_start[p]:s.coord_start[p + 1]] for p in range(p0, p1)]
                rles.append(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
                where.append(j)
                continue
            r0, r1 = int(s.rle_start[a]), int(s.rle_start[a + 1])
            if r1 > r0:
                rles.append({"size": [h, w], "counts": s.rle_blob[r0:r1].tobytes()})
                where.append(j)
        if rles:
            with warnings.catch_warnings():  # pycocotools' own numpy-2 `__array__` deprecation notice
                warnings.simplefilter("ignore", DeprecationWarning)
                decoded = mask_utils.decode(rles)  # (H, W, M) Fortran order
            out[where] = np.moveaxis(decoded, 2, 0)
        return out

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, Target] | None:
        if self.on_bad_image != "resample":
            return self._load(int(idx))
        n = len(self)
        for t in range(min(self.max_resample_tries, n)):
            sample = self._load((int(idx) + t) % n)
            if sample is not None:
                return sample
        return None

    def _load(self, idx: int) -> tuple[torch.Tensor, Target] | None:
        path = self.image_path(idx)
        try:
            array = load_image_rgb(path, self.max_image_pixels)
        except ImageReadError as e:
            return self._bad_image(idx, 1 if e.missing else 2, e)
        h, w = int(self._s.heights[idx]), int(self._s.widths[idx])
        if array.shape[:2] != (h, w):
            err = ImageReadError(path, f"the file is {array.shape[1]}x{array.shape[0]} (WxH) but the JSON says "
                                       f"{w}x{h}; annotations would not line up (EXIF rotation? re-export it)")
            return self._bad_image(idx, 3, err)
        image = torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div_(255.0)
        target = self.get_target(idx)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _bad_image(self, idx: int, code: int, err: ImageReadError) -> None:
        new = self._bad.add(idx, code)  # recorded in every mode, so bad_images is always complete
        if self.on_bad_image == "raise":
            raise err
        if new:
            log.warning("skipping image %d (%s): %s", idx, self._s.file_names[idx], err)
        return None
