"""The real COCO sample for tests, built from `tests/fixtures/coco_sample` on any machine.

Image 785 (CC BY 2.0) is shipped; the three NonCommercial images are replaced by deterministic
stand-ins of their exact sizes (see the fixture's README), so the 14 real annotations load everywhere.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "coco_sample"
JSON_NAME = "person_keypoints_sample.json"
REAL_IMAGE = "000000000785.jpg"


def build_coco_sample(root: Path) -> Path:
    """Write the sample (JSON + 4 images) into ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / JSON_NAME, root / JSON_NAME)
    shutil.copy(FIXTURE / REAL_IMAGE, root / REAL_IMAGE)
    for info in json.loads((FIXTURE / JSON_NAME).read_text())["images"]:
        if info["file_name"] == REAL_IMAGE:
            continue
        rng = np.random.default_rng(info["id"])
        pixels = rng.integers(0, 256, size=(info["height"], info["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / info["file_name"], quality=90)
    return root
