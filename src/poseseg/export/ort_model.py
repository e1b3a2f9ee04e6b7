"""Run an exported ``.onnx`` file with ONNX Runtime behind the PyTorch model's interface.

``OrtModel("model.onnx").predict_rois([image])`` returns what ``PoseSegModel.predict_rois`` returns:
the RoI-level outputs in the resized picture's pixels, which the one
:func:`poseseg.modeling.postprocess.postprocess` turns into results (``OrtModel(...)([image])`` does,
as the PyTorch model does in eval mode). So a ``.pt`` and its ``.onnx`` give their masks and keypoints
through the same paste and the same coordinate mapping. The file's checks, metadata and that interface
are :class:`~poseseg.export.exported_model.ExportedModel`'s; this module loads and runs the graph.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from poseseg.export.deform_symbolic import ExportError
from poseseg.export.exported_model import ONNX_MAGIC_HINT, ExportedModel, ModelRunError, first_line

__all__ = ["ONNX_MAGIC_HINT", "ModelRunError", "OrtModel", "providers_for"]


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("running an .onnx file needs ONNX Runtime: pip install 'poseseg[export]'") from None
    return onnxruntime


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


class OrtModel(ExportedModel):
    """An exported poseseg model in an ONNX Runtime session; called like the PyTorch model in eval mode."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int = 0,
                 spin: bool = True):
        """``threads``: ORT's intra-op threads (0: its default); ``spin=False`` stops its workers from
        busy-waiting after a run (for benchmarks that time other work in the same process)."""
        ort = _import_onnxruntime()
        super().__init__(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph types
            first = first_line(e)
            if "DeformConv" in first:
                raise ExportError(f"{self.path} has deformable convolutions (DeformConv) and onnxruntime "
                                  f"{ort.__version__} cannot run them: pip install 'onnxruntime>=1.25'") from None
            raise ExportError(f"{self.path} is not a loadable ONNX model ({first}); {ONNX_MAGIC_HINT}") from None
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run is reported by ModelRunError, not ORT's own log
        self._read_metadata(self.session.get_modelmeta().custom_metadata_map)

    @property
    def device_name(self) -> str:
        return f"onnxruntime {self.session.get_providers()[0]}"

    def _infer(self, pixels: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {"image": pixels}, self._run_options)
