"""One model under every runtime a user can pick on a CPU (issue 25), for latency.py and runtime_accuracy.py.

``exported_runners(model, work, pictures, threads)`` exports a PyTorch model once to fp32 ONNX, quantizes
that file to int8 (ONNX Runtime static quantization calibrated on ``pictures``; the same file runs in both
runtimes) and opens each file in ONNX Runtime and in OpenVINO. A runtime whose package is missing is
left out with a note, so the benchmark still runs.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from poseseg.export.onnx_export import export_onnx
from poseseg.export.ort_model import OrtModel

RUNTIMES = ("ort", "ort_int8", "ov", "ov_int8")  # prefixes of the exported twins' names


def calibration_folder(folder: Path, images: list[torch.Tensor], copies: int = 4) -> Path:
    """A folder of PNGs for int8 calibration: each image, plus flipped and darkened variants of it."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for image in images:
        array = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)  # (H, W, 3)
        for k in range(copies):
            variant = array[:, ::-1] if k % 2 else array
            variant = (variant * (1.0 - 0.15 * (k // 2))).astype(np.uint8)
            Image.fromarray(np.ascontiguousarray(variant)).save(folder / f"calib_{n:03d}.png")
            n += 1
    return folder


def exported_runners(model: torch.nn.Module, stem: str, work: Path, pictures: Path, threads: int,
                     notes: list[str], runtimes: tuple[str, ...] = RUNTIMES,
                     calibration_count: int | None = 8) -> dict[str, object]:
    """``{"ort": ..., "ort_int8": ..., "ov": ..., "ov_int8": ...}`` (those of ``runtimes``): ``model`` as
    exported files in each runtime; int8 calibrated on ``calibration_count`` pictures of ``pictures``
    (None: ``poseseg export --quantize int8``'s default count)."""
    fp32, int8 = work / f"{stem}.onnx", work / f"{stem}_int8.onnx"
    export_onnx(model, fp32)
    runners = {"ort": OrtModel(fp32, threads=threads, spin=False)} if "ort" in runtimes else {}
    if {"ort_int8", "ov_int8"} & set(runtimes):
        from poseseg.export.quantize import quantize_onnx

        counts = {} if calibration_count is None else {"count": calibration_count, "held_back": 2}
        report = quantize_onnx(fp32, int8, pictures=pictures, **counts)
        notes.append(f"{stem} int8: " + " ".join(report.summary().split()))
        if "ort_int8" in runtimes:
            runners["ort_int8"] = OrtModel(int8, threads=threads, spin=False)
    if not {"ov", "ov_int8"} & set(runtimes):
        return runners
    if importlib.util.find_spec("openvino") is None:
        notes.append("OpenVINO is not installed (pip install 'poseseg[openvino]'): its rows are left out")
        return runners
    from poseseg.export.openvino_model import OpenVinoModel

    if "ov" in runtimes:
        runners["ov"] = OpenVinoModel(fp32, threads=threads)
    if "ov_int8" in runtimes:
        runners["ov_int8"] = OpenVinoModel(int8, threads=threads)
    return runners
