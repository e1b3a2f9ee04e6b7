"""int8 ONNX files: ONNX Runtime's static quantization of an exported fp32 file, calibrated on pictures.

    report = quantize_onnx("model.onnx", "model_int8.onnx", pictures="train_images/")
    print(report.summary())      # layers kept in fp32 and why, pictures, size, agreement with fp32
    export_checkpoint_int8("model_final.pt", "model_int8.onnx", calibrate="train_images/")  # poseseg export --quantize

The file keeps the fp32 file's inputs, outputs and metadata (plus a ``quantization`` entry) and is
sealed with its own SHA-256, so ``OrtModel``, ``Predictor``, ``predict``, ``eval`` and ``serve`` run
it as they run the fp32 file. Layers where int8 costs accuracy stay fp32
(:func:`poseseg.export.quantize_graph.fp32_layers`). The defaults of :class:`QuantizeSettings` are the
settings measured best on an AVX-512 VNNI CPU (benchmarks/RESULTS.md, "ONNX Runtime int8").
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from poseseg.export.agreement import Agreement, compare
from poseseg.export.calibration_data import (
    DEFAULT_COUNT,
    HELD_BACK,
    CalibrationReader,
    choose_pictures,
    read_pictures,
)
from poseseg.export.checksum import checksum_matches, seal
from poseseg.export.deform_symbolic import DEFORM_CONV_OPSET, ExportError
from poseseg.export.onnx_export import ExportReport, all_nodes, check_out_free, export_checkpoint
from poseseg.export.ort_model import OrtModel
from poseseg.export.quantize_graph import (
    DEFAULT_FP32_LAYERS,
    check_deform_inputs_fp32,
    check_keypoint_layers_found,
    count_quantized,
    fp32_layers,
    own_weights,
    write_metadata,
)

QUANTIZE_CHOICES = ("int8",)
METHODS = ("minmax", "percentile", "entropy")


@dataclass(frozen=True)
class QuantizeSettings:
    """How ONNX Runtime quantizes (see its ``quantize_static``); the defaults are the measured best."""

    format: str = "qdq"  # qdq (QuantizeLinear/DequantizeLinear around fp32 ops) or qoperator (QLinearConv...)
    activations: str = "uint8"  # uint8 or int8; weights are always int8
    per_channel: bool = True  # one scale per output channel of every weight
    reduce_range: bool = False  # 7-bit weights (for CPUs without VNNI)
    op_types: tuple[str, ...] = ("Conv", "Gemm", "Relu", "MaxPool")
    method: str = "minmax"  # minmax, percentile (99.999) or entropy: how activation ranges are set
    preprocess: bool = False  # ORT's quant_pre_process (shape inference + graph optimization) first
    fp32_layers: tuple[tuple[str, str], ...] = DEFAULT_FP32_LAYERS

    def to_dict(self) -> dict:
        out = asdict(self)
        out["op_types"] = list(self.op_types)
        out["fp32_layers"] = [prefix for prefix, _ in self.fp32_layers]
        return out


@dataclass
class QuantizeReport:
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    settings: QuantizeSettings
    calibration_folder: Path
    calibration_pictures: int  # read and used
    skipped: list[str] = field(default_factory=list)  # unreadable pictures, "file: reason"
    kept_fp32: dict[str, str] = field(default_factory=dict)  # node name -> why it stays fp32
    quantized_nodes: int = 0  # weighted layers (Conv, Gemm...) with int8 weights
    op_counts: dict[str, int] = field(default_factory=dict)  # the int8 file's nodes by op type
    agreement: Agreement | None = None  # int8 vs fp32 on held-back pictures

    def summary(self) -> str:
        s = self.settings
        lines = [f"int8: {s.format.upper()}, {s.activations} activations, int8 weights "
                 f"{'per channel' if s.per_channel else 'per tensor'}{', reduce_range' if s.reduce_range else ''}, "
                 f"{s.method} ranges from {self.calibration_pictures} pictures of {self.calibration_folder}"
                 + (f" ({len(self.skipped)} unreadable skipped: {', '.join(self.skipped[:3])})" if self.skipped else ""),
                 f"  {self.size_bytes / 2**20:.1f} MiB (fp32 {self.fp32_size_bytes / 2**20:.1f} MiB); "
                 f"{self.quantized_nodes} weighted layers in int8"]
        for reason, nodes in self.kept_by_reason().items():
            lines.append(f"  kept in fp32, {len(nodes)} nodes ({', '.join(nodes[:4])}{', ...' if len(nodes) > 4 else ''}):"
                         f" {reason}")
        if self.agreement is not None:
            lines.append(f"  int8 vs fp32 {self.agreement.summary()}")
        return "\n".join(lines)

    def kept_by_reason(self) -> dict[str, list[str]]:
        """Why -> the nodes kept in fp32 for that reason."""
        out: dict[str, list[str]] = {}
        for node, reason in self.kept_fp32.items():
            out.setdefault(reason, []).append(node)
        return out

    def metadata(self) -> dict:
        """The ``quantization`` entry of the file's metadata."""
        return {"type": "int8", **self.settings.to_dict(), "calibration_pictures": self.calibration_pictures,
                "kept_fp32": self.kept_by_reason(), "onnxruntime": _ort().__version__}


@dataclass
class Int8ExportReport(ExportReport):
    """``poseseg export --quantize int8``: the int8 file's report, with how it was quantized."""

    quantization: QuantizeReport | None = None

    def summary(self) -> str:
        return super().summary() + ("" if self.quantization is None else "\n" + self.quantization.summary())


def _ort():
    try:
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        raise ExportError("int8 quantization needs ONNX Runtime: pip install 'poseseg[export]'") from None
    return onnxruntime


def check_quantize_args(quantize: str | None, calibrate: str | Path | None, count: int | None = None) -> None:
    """``--quantize``, ``--calibrate`` and ``--calibrate-count`` make sense together; checked (the folder too)
    before any model is loaded."""
    if quantize is None:
        if calibrate is not None or count is not None:
            raise ExportError(f"{'--calibrate' if calibrate is not None else '--calibrate-count'} is for int8 "
                              "quantization: add --quantize int8")
        return
    if quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE_CHOICES)}")
    if calibrate is None:
        raise ExportError("--quantize int8 needs --calibrate FOLDER: pictures like the ones the model will see (for "
                          "instance the training images), from which the int8 activation ranges are measured")
    _ort()
    choose_pictures(calibrate, DEFAULT_COUNT if count is None else count)


def quantize_onnx(fp32_path: str | Path, out: str | Path, *, pictures: str | Path, count: int = DEFAULT_COUNT,
                  held_back: int = HELD_BACK, settings: QuantizeSettings | None = None) -> QuantizeReport:
    """Quantize the poseseg export ``fp32_path`` into ``out`` (written atomically, replacing it), calibrated on
    ``count`` pictures of the folder ``pictures``, then compared with fp32 on ``held_back`` other pictures of
    it."""
    import onnx

    settings = settings or QuantizeSettings()
    check_settings(settings)
    _ort()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32_path, out = Path(fp32_path), Path(out)
    fp32 = load_fp32(fp32_path)
    meta = {p.key: p.value for p in fp32.metadata_props}
    choice = choose_pictures(pictures, count, held_back)
    size = picture_size(meta)
    calib = read_pictures(choice.calibration, **size)
    if not calib.arrays:
        raise ExportError(f"--calibrate {choice.folder}: none of its {len(choice.calibration)} chosen pictures could "
                          f"be read ({'; '.join(calib.skipped[:3])}); give a folder of readable pictures")
    kept = fp32_layers(fp32.graph, settings.fp32_layers)
    check_keypoint_layers_found(json.loads(meta.get("outputs", "[]")), kept, settings.fp32_layers)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, _quiet_ort_logging():
        source = Path(tmp) / "own_weights.onnx"
        own_weights(fp32.graph)
        onnx.save(fp32, str(source))
        if settings.preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            owned, source = source, Path(tmp) / "preprocessed.onnx"
            _run_ort_step("quant_pre_process", lambda: quant_pre_process(str(owned), str(source),
                                                                         skip_symbolic_shape=True))
            kept = fp32_layers(onnx.load(str(source)).graph, settings.fp32_layers)
        tmp_out = Path(tmp) / out.name
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[settings.method]
        extra = {"CalibStridedMinMax": 1}  # fold each picture's activations into the ranges at once: bounded memory
        if settings.method == "percentile":
            extra["CalibPercentile"] = 99.999
        _run_ort_step("quantize_static", lambda: quantize_static(
            str(source), str(tmp_out), CalibrationReader(calib.arrays),
            quant_format=QuantFormat.QDQ if settings.format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=sorted(kept), calibrate_method=method,
            extra_options=extra))
        proto = onnx.load(str(tmp_out))
        check_deform_inputs_fp32(proto.graph)
        report = QuantizeReport(path=out, size_bytes=0, fp32_size_bytes=fp32_path.stat().st_size, settings=settings,
                                calibration_folder=choice.folder, calibration_pictures=len(calib.arrays),
                                skipped=calib.skipped, kept_fp32=kept,
                                quantized_nodes=count_quantized(proto.graph),
                                op_counts=dict(Counter(n.op_type for n in all_nodes(proto.graph))))
        if not any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in proto.graph.node):
            raise ExportError(f"ONNX Runtime quantized no layer of {fp32_path} (op types {list(settings.op_types)})")
        write_metadata(proto, meta, report.metadata())
        onnx.checker.check_model(proto, full_check=False)
        tmp_out.write_bytes(seal(proto.SerializeToString()))
        os.replace(tmp_out, out)
    report.size_bytes = out.stat().st_size
    if choice.held_back:
        held = read_pictures(choice.held_back, **size)
        if held.arrays:
            images = [torch.from_numpy(a) for a in held.arrays]  # (3, H, W) each
            report.agreement = compare(OrtModel(fp32_path, threads=ort_threads()), OrtModel(out, threads=ort_threads()),
                                       images)
    return report


def export_checkpoint_int8(weights: str | Path, out: str | Path, *, calibrate: str | Path,
                           calibrate_count: int | None = None, config: str | Path | None = None,
                           overrides: list[str] | None = None, opset: int = DEFORM_CONV_OPSET,
                           size: tuple[int, int] | None = None, settings: QuantizeSettings | None = None,
                           overwrite: bool = False) -> Int8ExportReport:
    """``poseseg export --quantize int8``: the checkpoint exported to fp32 (a temporary file, as
    :func:`export_checkpoint`) and quantized into ``out``, calibrated on pictures of the folder ``calibrate``."""
    check_quantize_args("int8", calibrate, calibrate_count)  # before the model loads: a wrong folder fails at once
    check_out_free(out, overwrite)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = export_checkpoint(weights, Path(tmp) / "fp32.onnx", config=config, overrides=overrides, opset=opset,
                                 size=size)
        report = quantize_onnx(fp32.path, out, pictures=calibrate, count=calibrate_count or DEFAULT_COUNT,
                               settings=settings)
    return Int8ExportReport(path=out, opset=fp32.opset, size_bytes=report.size_bytes, op_counts=report.op_counts,
                            inputs=fp32.inputs, outputs=fp32.outputs, input_size=fp32.input_size,
                            quantization=report)


def check_settings(settings: QuantizeSettings) -> None:
    if settings.format not in ("qdq", "qoperator"):
        raise ValueError(f"QuantizeSettings.format {settings.format!r}: choose qdq or qoperator")
    if settings.activations not in ("uint8", "int8"):
        raise ValueError(f"QuantizeSettings.activations {settings.activations!r}: choose uint8 or int8")
    if settings.method not in METHODS:
        raise ValueError(f"QuantizeSettings.method {settings.method!r}: choose one of {', '.join(METHODS)}")


def load_fp32(path: Path):
    """The fp32 poseseg export at ``path``, refused with the reason when it is missing, corrupt or not ours."""
    import onnx

    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file to quantize")
    if checksum_matches(path) is False:
        raise ExportError(f"{path} is corrupt: its bytes changed after `poseseg export` wrote it; export it again")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for a file that is not a model
        raise ExportError(f"{path} is not an ONNX model ({type(e).__name__}); export it with `poseseg export`") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if "poseseg_format" not in meta:
        raise ExportError(f"{path} is not a poseseg export (no 'poseseg_format' in its metadata); export it with "
                          "`poseseg export`")
    if "quantization" in meta:
        raise ExportError(f"{path} is already quantized ({json.loads(meta['quantization'])['type']}); quantize the "
                          "fp32 file it came from")
    return proto


def picture_size(meta: dict[str, str]) -> dict[str, int]:
    """``read_pictures``' size arguments from the file's metadata: its fixed input size, else its test size."""
    fixed = json.loads(meta.get("input_size", "null"))
    if fixed:
        return {"test_size": min(fixed), "max_size": max(fixed), "exact": tuple(fixed)}
    model = (json.loads(meta.get("config", "null")) or {}).get("model", {}).get("input", {})
    return {"test_size": int(model.get("test_size", 10**6)), "max_size": int(model.get("max_size", 10**6))}


def ort_threads() -> int:
    """Intra-op threads for the comparison sessions: ``OMP_NUM_THREADS`` when set, else ORT's default."""
    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)


def _run_ort_step(what: str, step) -> None:
    try:
        step()
    except ExportError:
        raise
    except Exception as e:  # ORT's quantization tools raise many types from deep inside
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(f"ONNX Runtime's {what} failed: {first} (set POSESEG_DEBUG=1 for the traceback)") from e


@contextlib.contextmanager
def _quiet_ort_logging():
    """ORT's quantization tools log advice through the root logger and print progress; keep only errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
