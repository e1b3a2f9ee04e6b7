"""Predictions -> one CSV row per keypoint, for spreadsheets and pandas.

Columns: ``image, image_id, frame, track_id, person`` (0-based, per image), ``box_x, box_y, box_w, box_h``
(px), ``score``, ``keypoint`` (name), ``x, y`` (px), ``visibility`` (0 not labelled, 1 occluded,
2 visible), ``keypoint_score``. A v=0 keypoint keeps its row (and score) with ``x`` and ``y`` empty; a
person without keypoints has one row with the keypoint cells empty; ``frame`` and ``track_id`` are empty
for still images.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from poseseg.data.convert.writers.common import people_by_image, refuse_existing

__all__ = ["write_keypoints_csv", "COLUMNS"]

COLUMNS = ("image", "image_id", "frame", "track_id", "person", "box_x", "box_y", "box_w", "box_h", "score",
           "keypoint", "x", "y", "visibility", "keypoint_score")


def _num(v: float) -> str:
    return f"{v:.3f}"


def write_keypoints_csv(records: list[dict], images: list[dict], out: str | os.PathLike, *, category: dict) -> Path:
    """Write the CSV ``out`` (records of video frames need no image entry: their file_name and frame are used)."""
    out = Path(out)
    refuse_existing(out)
    names = list(category.get("keypoints") or [])
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for group in people_by_image(records, images, category=category):
            for p in group.people:
                head = [p.extra.get("file_name", group.info.get("file_name")), group.info["id"],
                        p.extra.get("frame", ""), p.extra.get("track_id", ""), p.index, *map(_num, p.box),
                        f"{p.score:.4f}"]
                if p.keypoints is None:
                    writer.writerow(head + [""] * 5)
                    continue
                for k, (x, y, v) in enumerate(p.keypoints):
                    score = "" if p.keypoint_scores is None else f"{p.keypoint_scores[k]:.4f}"
                    xy = ["", ""] if v == 0 else [_num(x), _num(y)]
                    writer.writerow(head + [names[k], *xy, int(v), score])
    return out
