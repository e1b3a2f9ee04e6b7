"""COCO-format people datasets: (image, Target) samples from the compact arrays of
:mod:`poseseg.data.coco_json`.

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
for the DataLoader's ``collate_fn`` to drop from the batch; a batch can therefore be shorter
than asked, or empty. With
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

import logging
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch.utils.data import Dataset

from poseseg.data.coco_json import (
    DatasetError,
    check_schema,
    empty_dataset_problem,
    parse_coco_people,
    resolve_schema,
)
from poseseg.data.image_io import DEFAULT_MAX_PIXELS, ImageReadError, load_image_rgb, rgb_to_tensor
from poseseg.keypoint_schema import KeypointSchema
from poseseg.types import Target

__all__ = ["CocoPeopleDataset", "check_schema", "resolve_schema", "DatasetError",
           "require_image_folder"]

log = logging.getLogger("poseseg.data")

_REASONS = {1: "missing file", 2: "unreadable or corrupt image", 3: "image size differs from the JSON"}


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


# ----------------------------------------------------------------------------- start-up check


def require_image_folder(dataset: "CocoPeopleDataset", *, flag: str = "--images", first: int = 20,
                         allow_empty: bool = False) -> None:
    """Refuse, before any data worker starts, a dataset with no images, no people (``allow_empty`` accepts
    both, for validation) or whose first files are all missing (a wrong ``--images`` folder would otherwise
    print a traceback from every worker)."""
    n = len(dataset)
    empty = empty_dataset_problem(dataset.json_path, dataset.stats, dataset.category["name"])
    if empty and not allow_empty:
        raise DatasetError(empty)  # the same words as check-data's error
    if n == 0:
        return
    probe = min(n, first)
    if not any(dataset.image_path(i).is_file() for i in range(probe)):
        raise DatasetError(f"none of the first {probe} files of {dataset.json_path} exist under {dataset.image_dir} "
                           f"(e.g. {dataset.image_path(0)}); is {flag} the folder that `file_name` is relative to?")


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
        parsed = parse_coco_people(self.json_path, category=category, schema=schema, oks_sigmas=oks_sigmas,
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
        image = rgb_to_tensor(array)  # (3, H, W)
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
