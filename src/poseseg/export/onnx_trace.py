"""The one call of ``torch.onnx.export``: which exporter writes poseseg's files, and why.

poseseg traces with the TorchScript-based exporter (``dynamo=False``), deprecated since PyTorch
2.9. The torch.export-based one (``dynamo=True``) cannot carry the inference graph yet: torchvision's
detection code meets data-dependent sizes (NMS, multi-level RoIAlign) that torch.export refuses,
and the padded size is specialised to the example picture. README.md, "Deploy: ONNX, ONNX Runtime
and OpenVINO", says exactly where (PyTorch 2.14.1, torchvision 0.29.1, onnxscript 0.7.2).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from poseseg.export.deform_symbolic import DEFORM_CONV_OPSET, ExportError, register_deform_conv_symbolic


def trace_to_onnx(module: nn.Module, args: tuple, path: str | Path, *, opset: int, input_names: list[str],
                  output_names: list[str] | None = None, dynamic_axes: dict | None = None) -> None:
    """Trace ``module(*args)`` into ``path`` at ``opset`` (constants folded); deformable convolutions
    become ``DeformConv`` from opset 19. Fails with :class:`ExportError` naming the first problem."""
    if opset >= DEFORM_CONV_OPSET:
        register_deform_conv_symbolic(opset)
    with warnings.catch_warnings():
        # Only around this call: the exporter's own deprecation (expected, see the module docstring), the
        # tracer's notes on size arithmetic it records as constants (graph.py is written for them) and
        # torchvision's notes from its tracing branches.
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                                  input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                                  do_constant_folding=True)
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"torch.onnx could not export this model at opset {opset}: {first[:400]} "
                              "(set POSESEG_DEBUG=1 for the traceback)") from e
