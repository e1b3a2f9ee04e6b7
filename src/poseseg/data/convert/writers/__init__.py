"""Predictions -> files that annotation tools import as pre-annotations (``poseseg predict --save-format``).

Every writer takes COCO result records (as ``poseseg.modeling.postprocess.coco_records`` makes them:
``image_id``, ``bbox`` xywh, ``score``, optional ``segmentation``, ``keypoints`` flat x, y, v,
``keypoint_scores``), the images they belong to (``id``, ``file_name``, ``width``, ``height``) and the
person category (COCO: ``name``, ``keypoints``, 1-based ``skeleton``; :func:`person_category` builds it).
Each mirrors a reader of ``poseseg convert-data``, which reads the file back. Keypoint visibility is
written as the records carry it (0 not labelled, 1 occluded, 2 visible), in each tool's idiom.

| format | files in ``out_dir`` | read back with |
|---|---|---|
| coco | predictions.json (COCO results) | pycocotools ``loadRes`` |
| labelstudio | labelstudio_tasks.json + labelstudio_tasks_config.xml | convert-data label-studio |
| cvat | cvat_annotations.xml | convert-data cvat-xml |
| yolo-pose | yolo_pose/ (data.yaml, labels/train, images/train) | convert-data yolo-pose |
| csv | keypoints.csv (one row per keypoint) | any CSV reader |
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from poseseg.data.convert.writers.common import person_category, refuse_existing

log = logging.getLogger(__name__)

__all__ = ["SAVE_FORMATS", "SEQUENCE_FORMATS", "write_predictions", "person_category"]

SAVE_FORMATS = ("coco", "labelstudio", "cvat", "yolo-pose", "csv")
SEQUENCE_FORMATS = ("coco", "csv")  # the ones that can hold video frames (the others are about image files)


def write_predictions(fmt: str, records: list[dict], images: list[dict], out_dir: str | os.PathLike, *,
                      category: dict) -> list[Path]:
    """Write ``records`` in format ``fmt`` into ``out_dir`` (nothing there is overwritten); the paths written."""
    out_dir = Path(out_dir)
    if fmt == "coco":
        out = out_dir / "predictions.json"
        refuse_existing(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records))
        return [out]
    if fmt == "labelstudio":
        from poseseg.data.convert.writers.label_studio import write_label_studio

        return write_label_studio(records, images, out_dir / "labelstudio_tasks.json", category=category)
    if fmt == "cvat":
        from poseseg.data.convert.writers.cvat_xml import write_cvat_xml

        masks = "polygon" if importlib.util.find_spec("cv2") else "mask"
        if masks == "mask":
            log.warning("OpenCV is not installed: CVAT masks are written as <mask> runs, not polygons "
                        "(pip install opencv-python-headless for polygons)")
        return [write_cvat_xml(records, images, out_dir / "cvat_annotations.xml", category=category, masks=masks)]
    if fmt == "yolo-pose":
        from poseseg.data.convert.writers.yolo_pose import write_yolo_pose_predictions

        return [write_yolo_pose_predictions(records, images, out_dir / "yolo_pose", category=category)]
    if fmt == "csv":
        from poseseg.data.convert.writers.csv_table import write_keypoints_csv

        return [write_keypoints_csv(records, images, out_dir / "keypoints.csv", category=category)]
    raise ValueError(f"unknown save format {fmt!r}; choose one of {', '.join(SAVE_FORMATS)}")
