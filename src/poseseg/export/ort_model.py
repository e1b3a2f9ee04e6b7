"""Run an exported ``.onnx`` file with ONNX Runtime behind the PyTorch model's interface.

``OrtModel("model.onnx").predict_rois([image])`` returns what ``PoseSegModel.predict_rois`` returns:
the RoI-level outputs in the resized picture's pixels, which the one
:func:`poseseg.modeling.postprocess.postprocess` turns into results (``OrtModel(...)([image])`` does,
as the PyTorch model does in eval mode). So a ``.pt`` and its ``.onnx`` give their masks and keypoints
through the same paste and the same coordinate mapping. The keypoint schema and config come from
the file's metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from poseseg.export.checksum import checksum_matches
from poseseg.export.deform_symbolic import ExportError
from poseseg.export.onnx_export import FORMAT_TAG
from poseseg.modeling.postprocess import RoIOutputs, postprocess

ONNX_MAGIC_HINT = "re-export it with `poseseg export --weights CHECKPOINT --format onnx --out FILE`"


class ModelRunError(ExportError):
    """ONNX Runtime failed while running the file on a picture (a file damaged in a way its load did not show)."""


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("running an .onnx file needs ONNX Runtime: pip install 'poseseg[export]'") from None
    return onnxruntime


def _first_line(error: Exception) -> str:
    """The first line of onnxruntime's message (the rest is C++ source locations), at most 300 characters."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def providers_for(device: str) -> list[str]:
    """ONNX Runtime execution providers for a poseseg ``--device`` (auto, cpu, cuda, cuda:N)."""
    available = _import_onnxruntime().get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"--device {device}: this onnxruntime has no CUDA provider (it has {available}); "
                             "install onnxruntime-gpu or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtModel:
    """An exported poseseg model in an ONNX Runtime session; called like the PyTorch model in eval mode."""

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int = 0,
                 spin: bool = True):
        """``threads``: ORT's intra-op threads (0: its default); ``spin=False`` stops its workers from
        busy-waiting after a run (for benchmarks that time other work in the same process)."""
        ort = _import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        if checksum_matches(self.path) is False:
            raise ExportError(f"{self.path} is corrupt: its bytes changed after `poseseg export` wrote it (the "
                              "SHA-256 stored in the file no longer matches; a bad copy, a partial download or a "
                              f"damaged disk); {ONNX_MAGIC_HINT}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph types
            first = _first_line(e)
            if "DeformConv" in first:
                raise ExportError(f"{self.path} has deformable convolutions (DeformConv) and onnxruntime "
                                  f"{ort.__version__} cannot run them: pip install 'onnxruntime>=1.25'") from None
            raise ExportError(f"{self.path} is not a loadable ONNX model ({first}); {ONNX_MAGIC_HINT}") from None
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run is reported by ModelRunError, not ORT's own log
        meta = self.session.get_modelmeta().custom_metadata_map
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
    def heads(self) -> list[str]:
        return ["box"] + [h for h, out in (("mask", "mask_probs"), ("keypoint", "keypoints")) if out in self.output_names]

    def config(self):
        """The exporting model's Config (None when it was exported without one)."""
        from poseseg.config import config_from_dict

        return config_from_dict(self.config_dict) if self.config_dict else None

    def eval(self) -> "OrtModel":
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
        pixels = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)
        try:
            values = self.session.run(self.output_names, {"image": pixels}, self._run_options)
        except Exception as e:  # onnxruntime's own Fail / RuntimeException / InvalidArgument types
            raise ModelRunError(f"{self.path} could not be run on a {height}x{width} picture ({_first_line(e)}); "
                                f"the file is corrupt or was edited after the export: {ONNX_MAGIC_HINT}") from None
        return {n: torch.from_numpy(v) for n, v in zip(self.output_names, values)}
