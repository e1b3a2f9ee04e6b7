"""Export a trained model to one ONNX file: the whole inference graph, deformable layers included.

    report = export_onnx(model, "model.onnx", config=cfg)      # dynamic image size
    print(report.summary())

The file takes ``image`` (3, H, W) float32 RGB in [0, 1] (any H, W; or exactly the ``size`` it
was exported for) and returns the tensors of ``graph.output_names``. Its ``metadata_props`` carry
the config, the keypoint schema and the output names, so ``OrtModel`` needs nothing else, and a
SHA-256 of the file (:mod:`poseseg.export.checksum`), so ``OrtModel`` refuses a file changed since.
"""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from poseseg.export.checksum import CHECKSUM_KEY, PLACEHOLDER, seal
from poseseg.export.deform_symbolic import DEFORM_CONV_OPSET, ExportError
from poseseg.export.graph import InferenceGraph, output_names
from poseseg.export.onnx_trace import trace_to_onnx
from poseseg.modeling.model import PoseSegModel

FORMAT_TAG = "poseseg-onnx-2"  # 2: RoI-level outputs in the resized picture, pasted by postprocess
MIN_OPSET = 16
MAX_OPSET = 20  # torch.onnx's TorchScript-based exporter (the one that follows this graph's NMS and RoIAlign)


@dataclass
class ExportReport:
    path: Path
    opset: int
    size_bytes: int
    op_counts: dict[str, int] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_size: tuple[int, int] | None = None  # (H, W) when fixed, None when any size is accepted

    def summary(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.op_counts.items()))
        shape = "(3, H, W) any size" if self.input_size is None else f"(3, {self.input_size[0]}, {self.input_size[1]})"
        return (f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB), ONNX opset {self.opset}, checked by "
                f"onnx.checker\n  input: image {shape}\n  outputs: {', '.join(self.outputs)}\n"
                f"  {sum(self.op_counts.values())} nodes, {len(self.op_counts)} op types: {ops}")


def check_exportable(model: PoseSegModel, opset: int) -> None:
    """Fail before tracing, naming the layer and the option, where the export would not be faithful."""
    from poseseg.ops import DeformConv2d

    if model.training:
        raise ExportError("the model is in training mode; call model.eval() before exporting")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ExportError("export traces on the CPU: call model.cpu() first (the file runs on any ORT provider)")
    if opset < MIN_OPSET:
        raise ExportError(f"keypoint decoding (GridSample) and RoIAlign's sampling need ONNX opset >= {MIN_OPSET}; "
                          f"got --opset {opset}")
    if opset > MAX_OPSET:
        raise ExportError(f"the TorchScript-based exporter writes ONNX opsets up to {MAX_OPSET}; got --opset {opset}")
    if getattr(model, "test_flip", False):
        raise ExportError("model.test_flip (flip test-time augmentation of the mask and keypoint heads) is not "
                          "part of the exported graph; export with model.test_flip=false")
    if model.transform.fixed_size is not None:
        raise ExportError("the model's transform has a fixed_size; the exported graph resizes by "
                          "model.input.test_size / max_size only")
    deformable = [name for name, module in model.named_modules() if isinstance(module, DeformConv2d)]
    if deformable and opset < DEFORM_CONV_OPSET:
        raise ExportError(f"layer '{deformable[0]}' (and {len(deformable) - 1} more) is a deformable convolution, "
                          f"which ONNX has as DeformConv from opset {DEFORM_CONV_OPSET}: export with --opset "
                          f"{DEFORM_CONV_OPSET}, or use a config without model.backbone.deform_stages and "
                          "model.keypoint.deform")


def export_onnx(model: PoseSegModel, out: str | Path, *, opset: int = DEFORM_CONV_OPSET,
                size: tuple[int, int] | None = None, config: dict | None = None,
                keypoint_schema: dict | None = None) -> ExportReport:
    """Trace ``model`` (eval mode) into ``out`` and check the result.

    ``size=(H, W)`` fixes the input image size (the file then accepts only that size); by default
    H and W are dynamic. ``config`` (``Config.to_dict()``) and ``keypoint_schema`` go into the
    file's metadata; the schema defaults to ``model.keypoint_schema``.
    """
    import onnx

    check_exportable(model, opset)  # below opset 19 it makes sure that no layer is deformable
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    height, width = size if size is not None else _example_size(model)
    example = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    names = output_names(model)
    dynamic_axes = {n: [0] for n in names}
    if size is None:
        dynamic_axes["image"] = {1: "height", 2: "width"}
    graph = InferenceGraph(model).eval()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_file = Path(tmp) / out.name
        trace_to_onnx(graph, (example,), tmp_file, opset=opset, input_names=["image"], output_names=names,
                      dynamic_axes=dynamic_axes)
        proto = onnx.load(str(tmp_file))
        _set_metadata(proto, names=names, config=config,
                      keypoint_schema=keypoint_schema if keypoint_schema is not None else model.keypoint_schema,
                      size=size)
        onnx.checker.check_model(proto, full_check=False)
        tmp_file.write_bytes(seal(proto.SerializeToString()))  # what onnx.save writes, with its checksum
        os.replace(tmp_file, out)
    return ExportReport(path=out, opset=opset, size_bytes=out.stat().st_size,
                        op_counts=dict(Counter(n.op_type for n in all_nodes(proto.graph))), inputs=["image"],
                        outputs=names, input_size=size)


def all_nodes(graph):
    """The graph's nodes and those of its subgraphs (NMS sits inside If branches)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from all_nodes(sub)


def _example_size(model: PoseSegModel) -> tuple[int, int]:
    """A trace input of the model's test size (4:3): every code path runs, shapes stay symbolic."""
    short = int(model.transform.min_size[0])
    return short, round(short * 4 / 3)


def _set_metadata(proto, *, names: list[str], config: dict | None, keypoint_schema: dict | None,
                  size: tuple[int, int] | None) -> None:
    entries = {"poseseg_format": FORMAT_TAG, "outputs": json.dumps(names),
               "keypoint_schema": json.dumps(keypoint_schema), "config": json.dumps(config),
               "input_size": json.dumps(list(size) if size is not None else None),
               CHECKSUM_KEY: PLACEHOLDER}  # last: filled in by checksum.seal once the bytes are final
    del proto.metadata_props[:]
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def check_out_free(out: str | Path, overwrite: bool) -> None:
    """An existing ``--out`` is replaced only when asked (``--overwrite``); checked before the model loads."""
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; export replaces it only with --overwrite (or choose another path)")


def export_checkpoint(weights: str | Path, out: str | Path, *, config: str | Path | None = None,
                      overrides: list[str] | None = None, opset: int = DEFORM_CONV_OPSET,
                      size: tuple[int, int] | None = None, overwrite: bool = False) -> ExportReport:
    """``poseseg export``: a checkpoint (its saved config, or ``config`` + ``overrides``) -> ``out``
    (an existing ``out`` only with ``overwrite``; the file is replaced atomically)."""
    from poseseg.weights.load import load_model

    check_out_free(out, overwrite)
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("ONNX export needs the onnx package: pip install 'poseseg[export]'")
    if size is not None and (len(size) != 2 or min(size) < 32):
        raise ExportError(f"--size takes the image height and width in pixels (each >= 32), got {list(size)}")
    model, cfg = load_model(weights, config=config, overrides=overrides)
    return export_onnx(model.cpu().eval(), out, opset=opset, size=tuple(size) if size else None,
                       config=cfg.to_dict(), keypoint_schema=model.keypoint_schema)
