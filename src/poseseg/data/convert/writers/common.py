"""What every prediction writer shares: people read from COCO result records, grouped by image, and named.

A result record (``poseseg.modeling.postprocess.coco_records``) holds one person: ``image_id``,
``bbox`` [x, y, w, h] px, ``score``, and where the model has the heads ``segmentation`` (COCO RLE or
polygons), ``keypoints`` (flat x, y, v) and ``keypoint_scores``. Writers get :class:`PersonRecord` s
grouped per image (:func:`people_by_image`) and the keypoint names of a COCO category
(:func:`person_category`), so no writer parses records or masks itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import pycocotools.mask as mask_utils

from poseseg.data.convert.people import ConvertError
from poseseg.data.polygons import mask_polygons
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES, COCO_SKELETON

__all__ = ["PersonRecord", "ImagePeople", "people_by_image", "person_category", "refuse_existing",
           "unique_names"]


@dataclass
class PersonRecord:
    """One predicted person, in the picture's pixels."""

    index: int  # 0-based number of the person in its image, in record order (by score for our predictions)
    box: list[float]  # x, y, w, h
    score: float
    keypoints: np.ndarray | None  # (K, 3) x, y, v: v 0 = not labelled, 1 = labelled but occluded, 2 = visible
    keypoint_scores: np.ndarray | None  # (K,)
    segmentation: dict | list | None  # COCO RLE {"size": [h, w], "counts"} or polygons [[x0, y0, x1, ...], ...]
    extra: dict  # what else the record carries (file_name, frame, track_id)

    def mask(self, height: int, width: int) -> np.ndarray | None:
        """(H, W) bool mask, or None when the record has no segmentation."""
        segm = self.segmentation
        if not segm:
            return None
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects([p for p in segm if len(p) >= 6], height, width))
        elif isinstance(segm["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            counts = segm["counts"]
            rle = {"size": segm["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(rle).astype(bool)

    def outlines(self, height: int, width: int) -> list[list[float]]:
        """The mask as flat polygons [x0, y0, x1, y1, ...] (polygon records are kept as they are)."""
        if isinstance(self.segmentation, list):
            return [list(map(float, p)) for p in self.segmentation if len(p) >= 6]
        mask = self.mask(height, width)
        return mask_polygons(mask) if mask is not None else []


@dataclass
class ImagePeople:
    info: dict  # id, file_name, and for images width, height (a video frame: its record's file_name, frame)
    people: list[PersonRecord]

    def size(self) -> tuple[int, int]:
        """(width, height) of the picture; annotation tools need it."""
        try:
            return int(self.info["width"]), int(self.info["height"])
        except (KeyError, TypeError, ValueError):
            what = (f"image {self.info['file_name']!r} (id {self.info.get('id')}) has no width/height"
                    if self.info.get("file_name") else f"records refer to image id {self.info.get('id')}, which is "
                    f"not in the images given")
            raise ConvertError(f"{what}: annotation-tool files need each picture's size; give every image as "
                               f"{{'id', 'file_name', 'width', 'height'}}") from None


def _person(index: int, record: dict, num_keypoints: int | None) -> PersonRecord:
    x, y, w, h = (float(v) for v in record["bbox"])
    kps = scores = None
    if record.get("keypoints"):
        kps = np.asarray(record["keypoints"], np.float64).reshape(-1, 3).copy()
        if num_keypoints is not None and len(kps) != num_keypoints:
            raise ConvertError(f"a record of image {record.get('image_id')} has {len(kps)} keypoints but the category "
                               f"names {num_keypoints}; give the keypoint names the model was trained with")
        kps[:, 2] = np.clip(np.rint(kps[:, 2]), 0, 2)  # COCO visibility 0 / 1 / 2
        if record.get("keypoint_scores") is not None:
            scores = np.asarray(record["keypoint_scores"], np.float64).reshape(-1)
    known = {"image_id", "category_id", "bbox", "score", "keypoints", "keypoint_scores", "segmentation"}
    return PersonRecord(index=index, box=[x, y, w, h], score=float(record.get("score", 1.0)), keypoints=kps,
                        keypoint_scores=scores, segmentation=record.get("segmentation"),
                        extra={k: v for k, v in record.items() if k not in known})


def people_by_image(records: list[dict], images: list[dict], *, category: dict | None = None) -> list[ImagePeople]:
    """Records grouped by ``image_id``, in the order of ``images`` (images without people included), then any
    image ids that ``images`` lacks (video frames), described by their first record."""
    k = len(category["keypoints"]) if category and category.get("keypoints") else None
    groups = {im["id"]: ImagePeople(dict(im), []) for im in images}
    for record in records:
        iid = record["image_id"]
        if iid not in groups:
            groups[iid] = ImagePeople({"id": iid, **{f: record[f] for f in ("file_name", "frame") if f in record}}, [])
        group = groups[iid]
        group.people.append(_person(len(group.people), record, k))
    return list(groups.values())


def person_category(names: list[str] | None = None, skeleton: list | None = None, *,
                    num_keypoints: int | None = None, name: str = "person") -> dict:
    """A COCO category (1-based ``skeleton``) from a keypoint schema's names and 0-based edges; without names,
    COCO's 17 when K is 17, else ``kp1``..``kpK``. Every writer names keypoints from this one place."""
    if names is None and num_keypoints:
        names = list(COCO_KEYPOINT_NAMES) if num_keypoints == 17 else [f"kp{i + 1}" for i in range(num_keypoints)]
        skeleton = skeleton if skeleton is not None else (COCO_SKELETON if num_keypoints == 17 else [])
    return {"id": 1, "name": name, "supercategory": name, "keypoints": list(names or []),
            "skeleton": [[int(a) + 1, int(b) + 1] for a, b in skeleton or []]}


def refuse_existing(*paths: Path) -> None:
    """Writers never overwrite: a file already there is an error naming it (``predict`` writes to a new folder)."""
    for path in paths:
        if Path(path).exists():
            raise FileExistsError(f"{path} exists; poseseg does not overwrite it: choose another output folder")


def unique_names(groups: list[ImagePeople]) -> list[str]:
    """The images' base names (the name a tool's task knows a picture by); two inputs with one name are refused."""
    names, seen = [], {}
    for g in groups:
        name = PurePath(str(g.info.get("file_name"))).name
        if name in seen:
            raise ConvertError(f"two images are both called {name!r} ({seen[name]} and {g.info.get('file_name')}); "
                               f"annotation tools know a picture by its name: predict them in separate runs")
        seen[name] = g.info.get("file_name")
        names.append(name)
    return names
