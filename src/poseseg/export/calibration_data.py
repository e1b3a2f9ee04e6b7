"""Pictures for int8 calibration: chosen from a folder, read with the repo's image reader, and fed to
ONNX Runtime's calibrator as the exported graph takes them (``image`` (3, H, W) float32 RGB in [0, 1]).

The graph resizes every picture itself (shorter side to ``test_size``, longer side at most
``max_size``); a larger picture is shrunk here with the same rule first, which gives the network
the same input size and keeps calibration quick. Unreadable files are skipped and counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from poseseg.data.image_io import IMAGE_EXTS, ImageReadError, list_image_files, load_image_rgb, rgb_to_tensor
from poseseg.export.deform_symbolic import ExportError

DEFAULT_COUNT = 32  # calibration pictures (measured: benchmarks/RESULTS.md, "ONNX Runtime int8")
HELD_BACK = 8  # further pictures, not calibrated on, on which int8 is compared with fp32


@dataclass
class PictureChoice:
    """Which pictures of ``folder`` calibrate and which are held back for the fp32 comparison."""

    folder: Path
    calibration: list[Path]
    held_back: list[Path]
    available: int  # pictures in the folder


@dataclass
class Pictures:
    """Pictures read for the graph: (3, H, W) float32 arrays in [0, 1], and the files that could not be read."""

    arrays: list[np.ndarray] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file: reason"


def choose_pictures(folder: str | Path, count: int = DEFAULT_COUNT, held_back: int = HELD_BACK) -> PictureChoice:
    """``count`` pictures spread evenly over the folder's sorted files (consecutive video frames look alike),
    and up to ``held_back`` of the others, likewise spread."""
    folder = Path(folder)
    if count < 1:
        raise ExportError(f"--calibrate-count must be >= 1, got {count}")
    if not folder.exists():
        raise ExportError(f"--calibrate {folder}: no such folder; give a folder of pictures like the ones the model "
                          "will see (for instance the training images)")
    if not folder.is_dir():
        raise ExportError(f"--calibrate {folder}: not a folder; give a folder of pictures (for instance the "
                          "training images)")
    files = list_image_files(folder)
    if not files:
        raise ExportError(f"--calibrate {folder}: no pictures in it ({', '.join(sorted(IMAGE_EXTS))}); int8 "
                          "calibration needs pictures like the ones the model will see (no labels needed)")
    chosen = spread(files, count)
    rest = [f for f in files if f not in set(chosen)]
    return PictureChoice(folder, chosen, spread(rest, held_back), len(files))


def spread(items: list, count: int) -> list:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer), first one included."""
    if count >= len(items):
        return list(items)
    if count <= 0:
        return []
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def read_pictures(paths: list[Path], *, test_size: int, max_size: int,
                  exact: tuple[int, int] | None = None) -> Pictures:
    """Each readable picture at the size the graph works at (see :func:`fit`); the others skipped."""
    out = Pictures()
    for path in paths:
        try:
            image = rgb_to_tensor(load_image_rgb(path))  # (3, H, W) float in [0, 1]
        except ImageReadError as e:
            out.skipped.append(f"{path.name}: {e.reason}")
            continue
        out.arrays.append(fit(image, test_size, max_size, exact).numpy())
    return out


def fit(image: torch.Tensor, test_size: int, max_size: int, exact: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, H, W) -> (3, h, w): ``exact`` (h, w) for a file exported with a fixed size, else shrunk as the graph
    resizes it (shorter side ``test_size``, longer side at most ``max_size``; never enlarged). Bilinear, as the graph."""
    height, width = image.shape[-2:]
    if exact is not None:
        size = list(exact)
    else:
        scale = min(test_size / min(height, width), max_size / max(height, width))
        if scale >= 1.0:
            return image
        size = [int(height * scale), int(width * scale)]
    if size == [height, width]:
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


class CalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over pictures read in advance: ``get_next()`` gives
    ``{"image": (3, H, W) float32}`` for each, then None."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self._next, self._end = 0, len(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return {"image": self.arrays[self._next - 1]}

    def __len__(self) -> int:
        return len(self.arrays)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Give pictures ``start_index`` to ``end_index - 1`` next (ORT's strided calibration, a few at a time)."""
        self._next, self._end = start_index, min(end_index, len(self.arrays))
