"""``poseseg convert-data``: annotation-tool exports -> COCO keypoints JSON, and COCO -> YOLO-pose.

One module per format: :mod:`.cvat_coco` (CVAT "COCO Keypoints 1.0"), :mod:`.cvat_xml` (CVAT for
images 1.1), :mod:`.label_studio` (Label Studio JSON), :mod:`.yolo_pose` (Ultralytics, both ways).
The result of every reader passes ``poseseg check-data``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from poseseg.data.convert.people import ConvertError, coordinate_notes, write_coco

__all__ = ["FORMATS", "convert", "ConvertError"]

FORMATS = ("cvat-coco", "cvat-xml", "label-studio", "yolo-pose", "to-yolo-pose")


def convert(fmt: str, source: str | os.PathLike, out: str | os.PathLike, *, category: str = "person",
            split: str = "train", images: str | os.PathLike | None = None,
            segments: str | os.PathLike | None = None) -> tuple[Path, list[str]]:
    """Convert ``source`` (a file of format ``fmt``) into ``out``; returns (written path, notes).

    ``to-yolo-pose`` reads a COCO JSON (``images`` = its image folder) and writes a YOLO-pose
    dataset folder ``out``; every other format writes the COCO JSON ``out``. The notes count what was
    dropped or looks wrong (people without a size, ignored results, negative coordinates).
    """
    notes: list[str] = []
    if fmt == "cvat-coco":
        from poseseg.data.convert.cvat_coco import read_cvat_coco

        data = read_cvat_coco(source, category=category if category != "person" else None)
    elif fmt == "cvat-xml":
        from poseseg.data.convert.cvat_xml import read_cvat_xml

        data = read_cvat_xml(source, category=category, notes=notes)
    elif fmt == "label-studio":
        from poseseg.data.convert.label_studio import read_label_studio

        data, notes = read_label_studio(source, category=category)
    elif fmt == "yolo-pose":
        from poseseg.data.convert.yolo_pose import read_yolo_pose

        data, images_dir = read_yolo_pose(source, split=split, segments=segments, notes=notes)
        notes.append(f"images of this split: {images_dir} (give it to --images)")
    elif fmt == "to-yolo-pose":
        from poseseg.data.convert.yolo_pose import write_yolo_pose

        if images is None:
            raise ConvertError("to-yolo-pose needs --images, the folder the COCO file's file_name is relative to")
        try:
            coco = json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConvertError(f"cannot read COCO JSON {source}: {e}") from None
        return write_yolo_pose(coco, images, out, split=split, category=category), notes
    else:
        raise ConvertError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    people = len(data["annotations"])
    notes += coordinate_notes(data)
    notes.insert(0, f"{len(data['images'])} images, {people} people, "
                    f"{len(data['categories'][0]['keypoints'])} keypoints per person")
    return write_coco(data, out), notes
