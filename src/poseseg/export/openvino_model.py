"""Run an exported ``.onnx`` file with OpenVINO on the CPU, behind the PyTorch model's interface.

``OpenVinoModel("model.onnx")`` is what :class:`~poseseg.export.ort_model.OrtModel` is, with OpenVINO
instead of ONNX Runtime: the same file (its checks, metadata and outputs are
:class:`~poseseg.export.exported_model.ExportedModel`'s), the same ``predict_rois`` and the same
post-processing. OpenVINO's ONNX frontend reads the graph as exported but for two things, both mended
here as it reads the file, so files exported for ONNX Runtime run unchanged: ONNX's ``DeformConv``, which
it has no rule for (:func:`deform_conv_to_openvino` maps it onto OpenVINO's own DeformableConvolution),
and constants that hold no elements, which it reads as a one-element 0 (:func:`empty_constants_as_shapes`).
Inference runs in float32 (``INFERENCE_PRECISION_HINT``), not the bfloat16 OpenVINO picks on CPUs that
have it, so that the results are those of ONNX Runtime and PyTorch.
"""
from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import numpy as np

from poseseg.export.deform_symbolic import ExportError
from poseseg.export.exported_model import ONNX_MAGIC_HINT, ExportedModel, first_line

INSTALL_HINT = "pip install 'poseseg[openvino]'"


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise ExportError(f"running an .onnx file with OpenVINO needs the openvino package: {INSTALL_HINT}") from None
    return openvino


def openvino_message(error: Exception) -> str:
    """OpenVINO's message without its C++ locations ("Exception from x.cpp:84:", "Check '...' failed at
    y.cpp:46:"), its lines joined; an op it cannot convert is named first; at most 300 characters."""
    lines = [re.sub(r"\s*Check '.*?' failed at \S+:\d+:", "", line).strip(" -")
             for line in str(error).splitlines() if not line.startswith("Exception from ")]
    lines = [line for line in lines if line]
    missing = [line for line in lines if line.startswith(("No conversion rule found", "Conversion is failed"))]
    return "; ".join(missing or lines)[:300] or first_line(error)


def deform_conv_to_openvino(node):
    """ONNX ``DeformConv`` (X, W, offset[, B[, mask]]) -> OpenVINO DeformableConvolution (opset 8).

    Both take offsets (N, 2 * G * kh * kw, Ho, Wo) as (y, x) pairs and a mask (N, G * kh * kw, Ho, Wo);
    ``bilinear_interpolation_pad=True`` samples within one pixel outside the input bilinearly against
    zeros, as ONNX (and torchvision) do, instead of clamping to the border. The bias is added after.
    """
    from openvino import opset8

    pads = list(node.get_attribute("pads", [0, 0, 0, 0]))  # [top, left, bottom, right]; ONNX's defaults
    inputs = node.get_input_size()
    out = opset8.deformable_convolution(
        node.get_input(0), node.get_input(2), node.get_input(1), strides=list(node.get_attribute("strides", [1, 1])),
        pads_begin=pads[:2], pads_end=pads[2:], dilations=list(node.get_attribute("dilations", [1, 1])),
        mask=node.get_input(4) if inputs > 4 else None, group=int(node.get_attribute("group", 1)),
        deformable_group=int(node.get_attribute("offset_group", 1)), bilinear_interpolation_pad=True)
    if inputs > 3:
        bias = opset8.reshape(node.get_input(3), opset8.constant(np.array([1, -1, 1, 1], np.int64)), False)
        out = opset8.add(out, bias)  # (N, C, Ho, Wo) + (1, C, 1, 1)
    return [out.output(0)]


def empty_constants_as_shapes(graph) -> int:
    """Rewrite each ``Constant`` that holds no elements (a 0 in its dims) as ``ConstantOfShape(dims)``, in
    ``graph`` and its subgraphs; returns how many. OpenVINO's ONNX frontend reads an empty constant as the
    one-element tensor 0: the empty index list of the NMS branch taken when no box is left became one
    detection of uninitialized numbers. ``ConstantOfShape`` of a non-empty dims tensor it reads right."""
    from onnx import helper, numpy_helper

    count, nodes = 0, []
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                count += empty_constants_as_shapes(sub)
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type != "Constant" or value is None or 0 not in value.dims:
            nodes.append(node)
            continue
        dims = node.output[0] + "_dims"
        fill = np.zeros(1, helper.tensor_dtype_to_np_dtype(value.data_type))
        shape = numpy_helper.from_array(np.array(value.dims, np.int64))
        nodes += [helper.make_node("Constant", [], [dims], value=shape),
                  helper.make_node("ConstantOfShape", [dims], [node.output[0]], value=numpy_helper.from_array(fill))]
        count += 1
    if len(nodes) != len(graph.node):  # in place: the same order, each empty constant now two nodes
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def read_onnx(proto):
    """An ONNX ``ModelProto`` as an OpenVINO model, by OpenVINO's ONNX frontend with
    :func:`deform_conv_to_openvino`, after :func:`empty_constants_as_shapes` (which edits ``proto``)."""
    from openvino.frontend import FrontEndManager
    from openvino.frontend.onnx import ConversionExtension

    empty_constants_as_shapes(proto.graph)
    frontend = FrontEndManager().load_by_framework("onnx")
    frontend.add_extension(ConversionExtension("DeformConv", deform_conv_to_openvino))
    return frontend.convert(frontend.load(io.BytesIO(proto.SerializeToString())))


def load_onnx(path: Path):
    """The file as an ONNX ``ModelProto`` (read by the onnx package: its metadata, then the graph OpenVINO reads)."""
    try:
        import onnx
    except ImportError:
        raise ExportError(f"reading an .onnx file for OpenVINO needs the onnx package: {INSTALL_HINT}") from None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, onnx's own errors
        raise ExportError(f"{path} is not a loadable ONNX model ({first_line(e)}); {ONNX_MAGIC_HINT}") from None


class OpenVinoModel(ExportedModel):
    """An exported poseseg model compiled by OpenVINO for the CPU; called like the PyTorch model in eval mode."""

    runtime = "openvino"

    def __init__(self, path: str | Path, *, threads: int = 0):
        """``threads``: OpenVINO's inference threads (``INFERENCE_NUM_THREADS``; 0: its default, one per
        core). The performance hint is LATENCY: one picture at a time, as ``predict_rois`` runs them."""
        ov = _import_openvino()
        if threads < 0:
            raise ValueError(f"threads must be 0 (OpenVINO's default) or more, got {threads}")
        super().__init__(path)
        proto = load_onnx(self.path)
        self._read_metadata({p.key: p.value for p in proto.metadata_props})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = ov.Core().compile_model(read_onnx(proto), "CPU", config)
        except Exception as e:  # OpenVINO's OpConversionFailure / GeneralFailure / RuntimeError
            raise ExportError(f"OpenVINO {ov.get_version().split('-')[0]} cannot run {self.path} "
                              f"({openvino_message(e)}); {ONNX_MAGIC_HINT}, or run it with --runtime onnxruntime"
                              ) from None
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns
        self._outputs = {out.get_any_name(): out for out in self.compiled.outputs}

    @property
    def device_name(self) -> str:
        return f"openvino {self.compiled.get_property('EXECUTION_DEVICES')[0]}"

    def _infer(self, pixels: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            results = self._request.infer({"image": pixels})  # copies: the request reuses its buffers
        return [results[self._outputs[name]] for name in self.output_names]

    def _error_text(self, error: Exception) -> str:
        return openvino_message(error)
