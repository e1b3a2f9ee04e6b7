"""What every runtime of an exported ``.onnx`` file shares: the file's checks and metadata, and the PyTorch
model's interface on top of one graph run per picture.

:class:`ExportedModel` checks the path and the SHA-256 seal (:mod:`poseseg.export.checksum`), reads the
metadata ``poseseg export`` wrote (format tag, output names, config, keypoint schema, fixed input size) and
turns pictures into :class:`~poseseg.modeling.postprocess.RoIOutputs`. A runtime (``OrtModel``,
``OpenVinoModel``) loads the graph and implements :meth:`ExportedModel._infer`: one (3, H, W) float32
array in, the graph's outputs as arrays out.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from poseseg.export.checksum import checksum_matches
from poseseg.export.deform_symbolic import ExportError
from poseseg.export.onnx_export import FORMAT_TAG
from poseseg.modeling.postprocess import RoIOutputs, postprocess

ONNX_MAGIC_HINT = "re-export it with `poseseg export --weights CHECKPOINT --format onnx --out FILE`"


class ModelRunError(ExportError):
    """The runtime failed while running the file on a picture (a file damaged in a way its load did not show)."""


def first_line(error: Exception) -> str:
    """The first line of a runtime's message (the rest is C++ source locations), at most 300 characters."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


class ExportedModel:
    """An exported poseseg graph behind a runtime; called like the PyTorch model in eval mode.

    Subclasses call ``super().__init__(path)`` before loading the file, :meth:`_read_metadata` with the
    file's ``metadata_props`` once loaded, and implement :meth:`_infer` and :attr:`device_name`.
    """

    runtime = ""  # the --runtime name: onnxruntime, openvino

    def __init__(self, path: str | Path):
        """Refuse a missing file, or one whose bytes changed since the export, before any runtime parses it."""
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        if checksum_matches(self.path) is False:
            raise ExportError(f"{self.path} is corrupt: its bytes changed after `poseseg export` wrote it (the "
                              "SHA-256 stored in the file no longer matches; a bad copy, a partial download or a "
                              f"damaged disk); {ONNX_MAGIC_HINT}")

    def _read_metadata(self, meta: Mapping[str, str]) -> None:
        """The file's ``metadata_props`` (key -> value): refuse a foreign or older file, keep the rest."""
        if "poseseg_format" not in meta:
            raise ExportError(f"{self.path} is an ONNX model but not a poseseg export (its metadata has no "
                              f"'poseseg_format'); {ONNX_MAGIC_HINT}")
        if meta["poseseg_format"] != FORMAT_TAG:
            raise ExportError(f"{self.path} was exported by another poseseg version (format "
                              f"{meta['poseseg_format']!r}, this one reads {FORMAT_TAG!r}); {ONNX_MAGIC_HINT}")
        self.output_names: list[str] = json.loads(meta["outputs"])
        self.keypoint_schema: dict | None = json.loads(meta.get("keypoint_schema", "null"))
        self.config_dict: dict | None = json.loads(meta.get("config", "null"))
        size = json.loads(meta.get("input_size", "null"))
        self.input_size: tuple[int, int] | None = tuple(size) if size else None

    @property
    def device_name(self) -> str:
        """Where the graph runs, for people (``/info`` of ``poseseg serve``)."""
        raise NotImplementedError

    def _infer(self, pixels: np.ndarray) -> list[np.ndarray]:
        """(3, H, W) float32 -> the graph's outputs in the order of ``output_names``."""
        raise NotImplementedError

    def _error_text(self, error: Exception) -> str:
        """The part of the runtime's message that tells a person what went wrong."""
        return first_line(error)

    @property
    def heads(self) -> list[str]:
        return ["box"] + [h for h, out in (("mask", "mask_probs"), ("keypoint", "keypoints")) if out in self.output_names]

    def config(self):
        """The exporting model's Config (None when it was exported without one)."""
        from poseseg.config import config_from_dict

        return config_from_dict(self.config_dict) if self.config_dict else None

    def eval(self) -> "ExportedModel":
        return self

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """One Prediction per image, as ``PoseSegModel`` returns in eval mode."""
        return postprocess(self.predict_rois(images))

    def predict_rois(self, images: list[torch.Tensor]) -> RoIOutputs:
        """The graph's RoI-level outputs for each image, in the resized pictures' pixels."""
        if not isinstance(images, (list, tuple)) or not all(isinstance(i, torch.Tensor) and i.ndim == 3 and
                                                             i.shape[0] == 3 for i in images):
            raise ValueError("images must be a list of (3, H, W) float tensors in [0, 1]")
        detections, resized_sizes = [], []
        for image in images:
            raw = self._run_one(image)
            resized_sizes.append(tuple(int(v) for v in raw.pop("resized_size")))
            detections.append(raw)
        return RoIOutputs(detections, resized_sizes, [tuple(i.shape[-2:]) for i in images])

    def _run_one(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = image.shape[-2:]
        if self.input_size is not None and (height, width) != self.input_size:
            raise ValueError(f"{self.path} was exported for {self.input_size[0]}x{self.input_size[1]} images, got "
                             f"{height}x{width}; resize the image or export without --size")
        pixels = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)  # (3, H, W)
        try:
            values = self._infer(pixels)
        except Exception as e:  # each runtime's own error types (onnxruntime Fail, OpenVINO RuntimeError)
            raise ModelRunError(f"{self.path} could not be run on a {height}x{width} picture ({self._error_text(e)})"
                                f"; the file is corrupt or was edited after the export: {ONNX_MAGIC_HINT}") from None
        return {n: torch.from_numpy(v) for n, v in zip(self.output_names, values)}
