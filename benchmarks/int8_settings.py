"""ONNX Runtime int8 settings (issue 25): which quantization settings run fastest against fp32 on this CPU,
and what each costs in accuracy.

    python benchmarks/int8_settings.py speed --rounds 8 --json int8_speed.json
    python benchmarks/int8_settings.py accuracy --weights runs/demo/model_final.pt --data data/synth --ap

``speed``: ``tiny`` at 320 px and ``paper_regular`` at 800 px with fixed random weights and exactly
``--detections`` detections (``latency.py``'s ``build``), exported to fp32 ONNX, quantized once per
variant (calibrated on ``--calibrate-count`` synthetic pictures), all run by ``OrtModel`` with
``--threads`` intra-op threads and spinning off, in rounds whose order rotates; each variant's number
is the median over rounds of (variant time / fp32 time in the same round), so load from other
processes hits both sides of each ratio alike.

``accuracy``: a trained checkpoint (``--weights``) and its COCO data (``--data`` holding train/,
val/, val.json): fp32 export, each variant calibrated on ``--calibrate-count`` training pictures and
compared with fp32 on every val picture (``poseseg.export.agreement``); ``--ap`` also runs
``poseseg eval`` on the fp32 file and each int8 file.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from latency import build, make_image, run_once  # benchmarks/latency.py
from machine import ForeignLoad, cpu_model  # benchmarks/machine.py

# layers kept fp32 one group at a time by ``accuracy --sensitivity`` (node-name prefixes), on top of the
# keypoint head's last layers, everything else int8
GROUPS = {"stem": ("/backbone/Conv",), "res2": ("/backbone/layer1/",), "res3": ("/backbone/layer2/",),
          "res4": ("/backbone/layer3/",), "res5": ("/backbone/layer4/",), "fpn": ("/fpn/",), "rpn": ("/rpn/",),
          "box_head": ("/box_head/",), "mask_head": ("/mask_head/",), "keypoint_tower": ("/keypoint_head/tower/",),
          "rpn_outputs": ("/rpn/head/cls_logits", "/rpn/head/bbox_pred"),
          "box_outputs": ("/box_head/cls_score/", "/box_head/bbox_pred/"), "mask_predictor": ("/mask_head/predictor/",)}


def variants(kind: str) -> dict:
    """Name -> (QuantizeSettings, ORT graph optimization level). ``kind``: speed, accuracy or sensitivity."""
    from poseseg.export.quantize import QuantizeSettings
    from poseseg.export.quantize_graph import DEFAULT_FP32_LAYERS, KEYPOINT_HEAD_REASON

    chosen = QuantizeSettings()
    why = "measured (benchmarks/int8_settings.py)"
    keypoint_only = replace(chosen, fp32_layers=tuple((p, w) for p, w in DEFAULT_FP32_LAYERS
                                                      if w == KEYPOINT_HEAD_REASON))  # head outputs int8
    if kind == "sensitivity":  # each group of layers kept fp32 in turn: what does int8 cost there?
        return {"keypoint_head_fp32_only": (keypoint_only, "all"), **{f"plus_fp32_{g}": (replace(
            keypoint_only, fp32_layers=keypoint_only.fp32_layers + tuple((p, why) for p in prefixes)), "all")
            for g, prefixes in GROUPS.items()}}
    common = {
        "chosen": chosen,
        "s8_activations": replace(chosen, activations="int8"),
        "per_tensor": replace(chosen, per_channel=False),
        "reduce_range": replace(chosen, reduce_range=True),
        "qoperator": replace(chosen, format="qoperator"),
        "conv_gemm_only": replace(chosen, op_types=("Conv", "Gemm")),
        "plus_add_resize_deconv": replace(chosen, op_types=chosen.op_types + ("Add", "Resize", "ConvTranspose")),
        "preprocess": replace(chosen, preprocess=True),
        "head_outputs_int8": keypoint_only,
        "keypoint_head_int8": replace(chosen, op_types=chosen.op_types + ("ConvTranspose",), fp32_layers=tuple(
            (p, w) for p, w in DEFAULT_FP32_LAYERS if w != KEYPOINT_HEAD_REASON)),
    }
    if kind == "speed":
        return {**{k: (v, "all") for k, v in common.items()},
                "chosen_level_extended": (chosen, "extended"), "chosen_level_basic": (chosen, "basic")}
    return {**{k: (v, "all") for k, v in common.items()},
            "percentile": (replace(chosen, method="percentile"), "all"),
            "entropy": (replace(chosen, method="entropy"), "all"),
            "keypoint_tower_fp32": (replace(chosen, fp32_layers=DEFAULT_FP32_LAYERS + (
                ("/keypoint_head/tower/", why),)), "all")}


def load(path: Path, threads: int, level: str = "all"):
    """``OrtModel`` as latency.py builds it (``threads``, spinning off), at graph optimization ``level``."""
    import onnxruntime as ort

    from poseseg.export.ort_model import OrtModel

    model = OrtModel(path, threads=threads, spin=False)
    if level != "all":
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
        model.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return model


def synthetic_pictures(folder: Path, count: int) -> Path:
    from poseseg.data.synth import generate_dataset

    generate_dataset(folder, num_train=count, num_val=0, seed=0, image_size=(480, 640))
    return folder / "train"


# ----------------------------------------------------------------------------- speed


def speed(args) -> dict:
    from poseseg.export.deform_symbolic import ExportError
    from poseseg.export.onnx_export import export_onnx
    from poseseg.export.quantize import quantize_onnx

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="int8_speed_"))
    pictures = synthetic_pictures(work / "synth", args.calibrate_count)
    results = {}
    for name, size, rounds in (("tiny", 320, args.rounds * args.tiny_factor), ("ours", 800, args.rounds)):
        torch_model, own_size = build(name, args.detections, size)
        image = make_image(own_size)
        fp32_path = work / f"{name}.onnx"
        export_onnx(torch_model, fp32_path)
        models = {"fp32": load(fp32_path, args.threads)}
        sizes = {"fp32": fp32_path.stat().st_size}
        files, failed = {}, {}  # QuantizeSettings -> its int8 file (variants differing only in the session share one)
        for variant, (settings, level) in variants("speed").items():
            if args.only and variant not in args.only:
                continue
            if settings not in files:
                files[settings] = work / f"{name}_{variant}.onnx"
                start = time.perf_counter()
                try:
                    quantize_onnx(fp32_path, files[settings], pictures=pictures, count=args.calibrate_count,
                                  held_back=0, settings=settings)
                except ExportError as e:  # recorded in the table: a setting ORT cannot apply to this graph
                    failed[variant] = str(e)
                    print(f"{name} {variant}: {e}", flush=True)
                    continue
                print(f"{name} {variant}: quantized in {time.perf_counter() - start:.0f} s", flush=True)
            models[variant] = load(files[settings], args.threads, level)
            sizes[variant] = files[settings].stat().st_size
        names = list(models)
        times = {n: [] for n in names}
        foreign = []
        for r in range(args.warmup + rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            load_meter = ForeignLoad()
            row = {n: run_once(models[n], image, args.detections, n) for n in order}
            if r >= args.warmup:
                for n in names:
                    times[n].append(row[n])
                foreign.append(load_meter.cores())
            print(f"  {name} round {r + 1}: " + ", ".join(f"{n} {row[n]:.3f}" for n in names), flush=True)
        results[name] = {n: {"median_s": statistics.median(times[n]), "min_s": min(times[n]),
                             "size_mb": sizes[n] / 2**20,
                             "ratio_to_fp32": statistics.median(t / f for t, f in zip(times[n], times["fp32"])),
                             "min_ratio_to_fp32": min(times[n]) / min(times["fp32"]), "times_s": times[n]}
                         for n in names}
        results[name].update({n: {"failed": why} for n, why in failed.items()})
        results[name]["_image"] = list(image.shape[1:])
        results[name]["_other_processes_cores"] = foreign
    return results


def format_speed(results: dict) -> str:
    lines = ["| variant | " + " | ".join(f"{m}: median s (min) | median of round ratios / fp32 | ratio of mins"
                                         for m in results) + " | size MiB |",
             "|---|" + "---|---|---|" * len(results) + "---|"]
    names = [n for n in next(iter(results.values())) if not n.startswith("_")]
    for n in names:
        cells = " | ".join(f"{r[n]['median_s']:.3f} ({r[n]['min_s']:.3f}) | {r[n]['ratio_to_fp32']:.2f} | "
                           f"{r[n]['min_ratio_to_fp32']:.2f}" if "failed" not in r[n] else
                           f"failed: {r[n]['failed'][:60]} | - | -" for r in results.values())
        sizes = ", ".join(f"{r[n]['size_mb']:.1f}" if "failed" not in r[n] else "-" for r in results.values())
        lines.append(f"| {n} | {cells} | {sizes} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- accuracy


def accuracy(args) -> dict:
    from poseseg.data.image_io import list_image_files, load_image_rgb, rgb_to_tensor
    from poseseg.export.agreement import compare
    from poseseg.export.onnx_export import export_checkpoint
    from poseseg.export.quantize import quantize_onnx

    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="int8_accuracy_"))
    fp32_path = work / "fp32.onnx"
    export_checkpoint(args.weights, fp32_path, overrides=["model.test_flip=false"])
    fp32 = load(fp32_path, args.threads)
    val = [rgb_to_tensor(load_image_rgb(p)) for p in list_image_files(data / "val")]
    results = {"fp32": {"ap": eval_ap(fp32_path, data, work / "eval_fp32") if args.ap else None}}
    for variant, (settings, _) in variants("sensitivity" if args.sensitivity else "accuracy").items():
        if args.only and variant not in args.only:
            continue
        path = work / f"{variant}.onnx"
        start = time.perf_counter()
        report = quantize_onnx(fp32_path, path, pictures=data / "train", count=args.calibrate_count, held_back=0,
                               settings=settings)
        seconds = time.perf_counter() - start
        agreement = compare(fp32, load(path, args.threads), val)
        results[variant] = {"agreement": agreement.to_dict(), "quantize_s": seconds, "size_mb": report.size_bytes / 2**20,
                            "kept_fp32": len(report.kept_fp32), "quantized_nodes": report.quantized_nodes,
                            "ap": eval_ap(path, data, work / f"eval_{variant}") if args.ap else None}
        print(f"{variant}: {agreement.summary()}" + (f"; AP {results[variant]['ap']}" if args.ap else ""), flush=True)
    return results


def eval_ap(path: Path, data: Path, out: Path) -> dict:
    """bbox / segm / keypoints AP of ``poseseg eval`` on the val set."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "poseseg", "eval", "--weights", str(path), "--data", str(data / "val.json"),
                    "--images", str(data / "val"), "--out", str(out)], check=True, env=env, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {k: round(metrics[k]["AP"], 4) for k in ("bbox", "segm", "keypoints") if k in metrics}


def format_accuracy(results: dict) -> str:
    lines = ["| variant | people found | box IoU | mask IoU | keypoint px (p90) | score diff | kp score diff (ratio) "
             "| bbox AP | segm AP | kp AP | MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        ap = r.get("ap") or {}
        aps = " | ".join(f"{ap[k]:.4f}" if k in ap else "-" for k in ("bbox", "segm", "keypoints"))
        if "agreement" not in r:
            lines.append(f"| {n} | | | | | | | {aps} | |")
            continue
        a = r["agreement"]
        lines.append(f"| {n} | {a['paired']}/{a['people']} | {a['box_iou']:.3f} | {a['mask_iou']:.3f} | "
                     f"{a['keypoint_px']:.2f} ({a['keypoint_px_p90']:.2f}) | {a['score_diff']:.4f} | "
                     f"{a['keypoint_score_diff']:.4f} ({a['keypoint_score_ratio']:.3f}) | {aps} | {r['size_mb']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["speed", "accuracy"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8, help="speed: timed rounds")
    p.add_argument("--warmup", type=int, default=1, help="speed: untimed rounds first")
    p.add_argument("--tiny-factor", type=int, default=3, help="speed: tiny runs this many times --rounds")
    p.add_argument("--detections", type=int, default=20)
    p.add_argument("--calibrate-count", type=int, default=None, help="pictures (default: 8 for speed, 32 accuracy)")
    p.add_argument("--weights", help="accuracy: a trained checkpoint")
    p.add_argument("--data", help="accuracy: folder with train/, val/ and val.json")
    p.add_argument("--ap", action="store_true", help="accuracy: also COCO AP by `poseseg eval`")
    p.add_argument("--only", nargs="*", help="only these variants")
    p.add_argument("--sensitivity", action="store_true", help="accuracy: keep each group of layers fp32 in turn")
    p.add_argument("--json", default="")
    args = p.parse_args()
    if args.mode == "speed":
        args.calibrate_count = args.calibrate_count or 8
        results = speed(args)
        table = format_speed(results)
    else:
        if not args.weights or not args.data:
            p.error("accuracy needs --weights and --data")
        args.calibrate_count = args.calibrate_count or 32
        results = accuracy(args)
        table = format_accuracy(results)
    import onnxruntime

    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "mode": args.mode, "results": results, "table": table, "threads": args.threads, "cpu": cpu_model(),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])}, indent=2))


if __name__ == "__main__":
    main()
