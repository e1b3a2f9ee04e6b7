"""Predictions -> an Ultralytics YOLO-pose dataset: ``labels/<split>/<stem>.txt`` per image (normalised
``0 cx cy w h x1 y1 v1 ...``, v=0 keypoints as ``0 0 0``), ``images/<split>`` links to the pictures and
the ``data.yaml`` (``kpt_shape``, ``flip_idx``, ``kpt_names``) that Ultralytics and
:func:`poseseg.data.convert.yolo_pose.read_yolo_pose` need. YOLO-pose has no masks and no scores.

The records become a COCO dataset and go through the one COCO -> YOLO-pose writer, ``write_yolo_pose``.
"""
from __future__ import annotations

import os
from pathlib import Path

from poseseg.data.convert.people import ConvertError
from poseseg.data.convert.writers.common import people_by_image, refuse_existing, unique_names
from poseseg.data.convert.yolo_pose import write_yolo_pose

__all__ = ["write_yolo_pose_predictions"]


def write_yolo_pose_predictions(records: list[dict], images: list[dict], out_dir: str | os.PathLike, *,
                                category: dict, split: str = "train") -> Path:
    """Write the dataset folder ``out_dir`` (image ``file_name`` s are paths from the working directory, as
    ``predict`` records them); returns its ``data.yaml``. Read back with ``convert-data yolo-pose``."""
    if not category.get("keypoints"):
        raise ConvertError("YOLO-pose labels are keypoints, and these predictions have none (a model without a "
                           "keypoint head): choose --save-format coco, labelstudio, cvat or csv")
    out_dir = Path(out_dir)
    refuse_existing(out_dir / "data.yaml", out_dir / "labels" / split)
    groups = people_by_image(records, images, category=category)
    for g in groups:
        g.size()  # a label is normalised by the picture size: refuse records without one, naming the image
    unique_names(groups)  # one label file per picture stem: two pictures of one name would share it
    annotations = [{**r, "id": i + 1, "category_id": category["id"], "iscrowd": 0} for i, r in enumerate(records)]
    coco = {"images": [g.info for g in groups], "annotations": annotations, "categories": [category]}
    return write_yolo_pose(coco, Path("."), out_dir, split=split, category=category["name"])
