"""Inference latency of the full model vs what a user runs today for masks + keypoints (issue 8, "Speed").

    python benchmarks/latency.py                       # 800 px, 5 timed rounds after 1 warm-up round
    python benchmarks/latency.py --runs 7 --warmup 2 --json latency.json

Compared, in one process, on the same image:

* ``ours``: ``paper_regular`` (ResNet-50-FPN, box + mask + keypoint heads with offsets);
* ``tv_keypoint`` then ``tv_mask``: torchvision's ``keypointrcnn_resnet50_fpn`` followed by
  ``maskrcnn_resnet50_fpn`` (``weights=None, weights_backbone=None, num_classes=2``), i.e. two
  full detectors; their sum is the baseline ("torchvision" below);
* ``tiny`` at its own test size (320 px); ``paper_rb_h`` (the refinement) and ``paper_multi_scale``
  (the same model without it) for the refinement's cost.

Fairness: every model is built from ``torch.manual_seed(0)`` (random but fixed weights), runs
in eval mode under ``torch.inference_mode()`` with ``--threads`` intra-op threads, and returns
exactly ``--detections`` detections (score threshold 0, detections per image = N; asserted on
every run), so all heads do the same amount of work. The image is random noise with a fixed
seed, ``--size`` x round(4/3 * size) (800 x 1067: a 640 x 480 COCO photo at the usual 800 px
test scale; padded to 800 x 1088 inside the models). Each round runs every model once, in an
order rotated from round to round, plus a fp32 2048 x 2048 GEMM, so load from other processes
on the machine hits all of them alike; reported times are medians over the timed rounds.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed
convolutions and matrix products; RoIAlign, NMS, interpolation and elementwise ops are not
counted, nor ops it has no formula for). GFLOP/s = counted FLOPs / median seconds; it is set
against the GEMM's GFLOP/s measured in the same rounds.

Peak memory: each model is built and run once in a fresh subprocess; ``peak_rss_mb`` is that
process's peak resident set (VmHWM in /proc/self/status) after one inference (Python + torch + weights + activations) and
``infer_rss_mb`` the part added by the inference (peak minus the resident size just before it).
``tv_pair`` holds both torchvision models and runs one then the other.

ONNX Runtime (issue 17): ``ort_tiny``, ``ort_ours`` and ``ort_paper_rb_h`` are the same three models
(same weights, same image) exported by ``poseseg.export`` (dynamic size, opset 19, deformable convs as
DeformConv) and run by ``OrtModel`` with ``--threads`` intra-op threads and spinning off; they take part
in the same rotated rounds. ``ort_over_torch`` in the JSON is ORT's median over PyTorch's, by preset.
FLOPs of an ORT model are those of its PyTorch twin. ``--no-ort`` leaves them out.

Runtimes (issue 25): ``ours`` and ``tiny`` also run as exported files (``benchmarks/runtimes.py``):
``ort_*`` ONNX Runtime fp32, ``ort_int8_*`` ONNX Runtime on the int8 file (``poseseg export --quantize int8``,
calibrated on variants of the two timed pictures), ``ov_*`` / ``ov_int8_*`` OpenVINO on the same two files.
The paper_regular model and torchvision's two also run on a real photo (``--photo``, the COCO sample's
skier, resized by each model to ``--size``), in the same rounds (``@photo`` rows). ``best_runtime`` /
``best_ratio`` in the JSON: the fastest of ours' runtimes over torchvision's two, on the noise image.

Targets (issue 8): ours / (keypoint + mask torchvision) <= 0.62; ours >= 55 % of the GEMM's GFLOP/s.
Targets (issue 25): best runtime <= 0.35x torchvision; PyTorch fp32 >= 85 % of the GEMM's GFLOP/s.
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

from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import poseseg
from machine import ForeignLoad, cpu_model, proc_status_mb  # benchmarks/machine.py
from poseseg.predictor import to_tensor_image
from runtimes import RUNTIMES, calibration_folder, exported_runners  # benchmarks/runtimes.py

RATIO_TARGET = 0.62
GEMM_FRACTION_TARGET = 0.55
BEST_RATIO_TARGET = 0.35  # issue 25
GEMM_FRACTION_TARGET_25 = 0.85
PHOTO = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "coco_sample" / "000000000785.jpg"
PHOTO_MODELS = ("tv_keypoint", "tv_mask", "ours") + tuple(f"{r}_ours" for r in RUNTIMES)
GEMM_N = 2048


# ----------------------------------------------------------------------------- models and inputs


def make_image(size: int) -> torch.Tensor:
    """(3, size, round(4/3 size)) noise in [0, 1], the same every call."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, size, round(size * 4 / 3), generator=g)


def build(name: str, detections: int, size: int) -> tuple[torch.nn.Module, int]:
    """Model ``name`` in eval mode with fixed random weights, resizing images to ``size`` (shorter side;
    longer side capped at 1333/800 of it, torchvision's and our default), except ``tiny``, which keeps
    its own test size. Returns the model and the shorter image side it runs at."""
    torch.manual_seed(0)
    max_size = round(size * 1333 / 800)
    if name.startswith("tv_"):
        build_fn = {"tv_keypoint": torchvision.models.detection.keypointrcnn_resnet50_fpn,
                    "tv_mask": torchvision.models.detection.maskrcnn_resnet50_fpn}[name]
        model = build_fn(weights=None, weights_backbone=None, num_classes=2, box_score_thresh=0.0,
                         box_detections_per_img=detections, min_size=size, max_size=max_size)
        return model.eval(), size
    preset = {"ours": "paper_regular"}.get(name, name)
    overrides = ["model.box.score_thresh=0.0", f"model.box.detections_per_image={detections}"]
    if name != "tiny":
        overrides += [f"model.input.test_size={size}", f"model.input.max_size={max_size}"]
    cfg = poseseg.load_config(preset, overrides=overrides)
    return poseseg.build_model(cfg).eval(), cfg.model.input.test_size


PRESET_OF = {"ours": "paper_regular"}


def run_once(model: torch.nn.Module, image: torch.Tensor, detections: int, name: str) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        out = model([image])
    elapsed = time.perf_counter() - start
    n = out[0]["boxes"].shape[0]
    assert n == detections, f"{name} returned {n} detections, expected {detections}"
    return elapsed


def count_flops(model: torch.nn.Module, image: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model([image])
    return counter.get_total_flops()


def gemm_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- memory (subprocess)


def memory_child(names: list[str], size: int, detections: int, threads: int) -> dict:
    """Runs in a fresh process: build the models, run each once, report RSS numbers in MiB."""
    torch.set_num_threads(threads)
    models = [build(n, detections, size) for n in names]
    images = [make_image(s) for _, s in models]
    before = proc_status_mb("VmRSS")
    for n, (m, _), img in zip(names, models, images):
        run_once(m, img, detections, n)
    peak = proc_status_mb("VmHWM")
    return {"peak_rss_mb": round(peak, 1), "rss_before_mb": round(before, 1), "infer_rss_mb": round(peak - before, 1)}


def measure_memory(names: list[str], size: int, detections: int, threads: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", ",".join(names), "--size", str(size),
           "--detections", str(detections), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=800, help="shorter image side for the comparison (default 800)")
    p.add_argument("--runs", type=int, default=5, help="timed rounds (each runs every model once)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--detections", type=int, default=20)
    p.add_argument("--no-memory", action="store_true", help="skip the per-model memory subprocesses")
    p.add_argument("--no-ort", action="store_true", help="skip the exported rows (ONNX Runtime, OpenVINO, int8)")
    p.add_argument("--photo", default=str(PHOTO), help="a real photo, timed beside the noise image")
    p.add_argument("--no-photo", action="store_true", help="time the noise image only")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--_memory-child", dest="memory_child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child.split(","), args.size, args.detections, args.threads)))
        return

    torch.set_num_threads(args.threads)
    names = ["ours", "tv_keypoint", "tv_mask", "tiny"]
    notes = []
    # the refinement's cost (issue 4): paper_rb_h against paper_regular and against the plain model with
    # the same multi-scale FPN (res3-res5), so the deformable parts are the only difference
    names += ["paper_rb_h", "paper_multi_scale"]
    models, images = {}, {}
    for n in names:
        models[n], own_size = build(n, args.detections, args.size)
        images[n] = make_image(own_size)
    twin = {n: n for n in names}  # the PyTorch model each row runs (an exported row: the one it came from)
    photo = None if args.no_photo else to_tensor_image(args.photo)  # (3, H, W)
    work = tempfile.TemporaryDirectory()
    if not args.no_ort:
        pictures = calibration_folder(Path(work.name) / "calib", [images["ours"]] + ([photo] if photo is not None else []))
        for base in ("ours", "tiny"):
            for runtime, runner in exported_runners(models[base], base, Path(work.name), pictures, args.threads,
                                                    notes).items():
                name = f"{runtime}_{base}"
                models[name], images[name], twin[name] = runner, images[base], base
                names.append(name)
        rb_h = exported_runners(models["paper_rb_h"], "paper_rb_h", Path(work.name), pictures, args.threads, notes,
                                runtimes=("ort",))
        models["ort_paper_rb_h"], images["ort_paper_rb_h"], twin["ort_paper_rb_h"] = (
            rb_h["ort"], images["paper_rb_h"], "paper_rb_h")
        names.append("ort_paper_rb_h")

    print(f"torch {torch.__version__}, {args.threads} threads, {cpu_model()}, image {tuple(images['ours'].shape[1:])}, "
          f"{args.detections} detections, {args.warmup} warm-up + {args.runs} timed rounds", flush=True)
    flops = {n: count_flops(models[twin[n]], images[n]) for n in names if n == twin[n]}
    flops.update({n: flops[t] for n, t in twin.items() if n != t})
    if photo is not None:
        for n in PHOTO_MODELS:
            if n in models:
                job = f"{n}@photo"
                names.append(job)
                models[job], images[job], twin[job] = models[n], photo, twin[n]
                flops[job] = flops.get(f"{twin[n]}@photo") or count_flops(models[twin[n]], photo)
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    times: dict[str, list[float]] = {n: [] for n in names}
    gemm: list[float] = []
    foreign: list[float] = []
    load_start = os.getloadavg()
    for r in range(args.warmup + args.runs):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate so no model always goes first
        load = ForeignLoad()
        row = {n: run_once(models[n], images[n], args.detections, n) for n in order}
        g = gemm_seconds(a, b)
        others = load.cores()
        if r >= args.warmup:
            for n in names:
                times[n].append(row[n])
            gemm.append(g)
            foreign.append(others)
        tag = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}/{args.runs}"
        print(f"  {tag}: " + ", ".join(f"{n} {row[n]:.2f}s" for n in names) + f", gemm {g * 1e3:.0f}ms"
              f" (other processes: {others:.2f} cores)", flush=True)

    gemm_gflops = 2 * GEMM_N**3 / statistics.median(gemm) / 1e9
    memory = {}
    if not args.no_memory:
        for n in (n for n in names if n == twin[n]):
            memory[n] = measure_memory([n], args.size, args.detections, args.threads)
        memory["tv_pair"] = measure_memory(["tv_keypoint", "tv_mask"], args.size, args.detections, args.threads)

    per_model = {}
    for n in names:
        med = statistics.median(times[n])
        per_model[n] = {"image": list(images[n].shape[1:]), "median_s": med, "min_s": min(times[n]),
                        "max_s": max(times[n]), "times_s": times[n], "gflop": flops[n] / 1e9,
                        "gflops_per_s": flops[n] / 1e9 / med, "fraction_of_gemm": flops[n] / 1e9 / med / gemm_gflops,
                        **memory.get(n, {})}
    ours_s = per_model["ours"]["median_s"]
    tv_s = per_model["tv_keypoint"]["median_s"] + per_model["tv_mask"]["median_s"]
    paired = [o / (k + m) for o, k, m in zip(times["ours"], times["tv_keypoint"], times["tv_mask"])]
    ratio = ours_s / tv_s
    frac = per_model["ours"]["fraction_of_gemm"]
    result = {
        "ours_s": ours_s, "torchvision_s": tv_s, "ratio": ratio, "ratio_paired_median": statistics.median(paired),
        "gflops_per_s": per_model["ours"]["gflops_per_s"], "gemm_gflops_per_s": gemm_gflops,
        "fraction_of_gemm": frac, "ratio_target": RATIO_TARGET, "gemm_fraction_target": GEMM_FRACTION_TARGET,
        "ratio_met": ratio <= RATIO_TARGET, "gemm_fraction_met": frac >= GEMM_FRACTION_TARGET,
        "torchvision_gflop": (flops["tv_keypoint"] + flops["tv_mask"]) / 1e9,
        "other_processes_cores_per_round": foreign, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "rb_h_over_regular": per_model["paper_rb_h"]["median_s"] / ours_s,
        "rb_h_over_multi_scale": per_model["paper_rb_h"]["median_s"] / per_model["paper_multi_scale"]["median_s"],
        "ort_over_torch": {PRESET_OF.get(b, b): per_model[f"ort_{b}"]["median_s"] / per_model[b]["median_s"]
                           for b in ("tiny", "ours", "paper_rb_h") if f"ort_{b}" in per_model},
        **_runtime_table(per_model, tv_s),
        "onnxruntime": _onnxruntime_version(),
        "tv_pair_memory": memory.get("tv_pair"), "models": per_model, "notes": notes,
        "size": args.size, "detections": args.detections, "threads": args.threads, "runs": args.runs,
        "warmup": args.warmup, "torch": torch.__version__, "torchvision": torchvision.__version__, "cpu": cpu_model(),
        "cpus": os.cpu_count(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def _runtime_table(per_model: dict, tv_s: float) -> dict:
    """``runtimes``: ours under each runtime (noise image and photo, ratios to torchvision's two on the same
    input); ``best_runtime`` / ``best_ratio``: the fastest on the noise image."""
    tv_photo = (per_model["tv_keypoint@photo"]["median_s"] + per_model["tv_mask@photo"]["median_s"]
                if "tv_mask@photo" in per_model else None)
    table = {}
    for runtime, name in [("torch", "ours")] + [(r, f"{r}_ours") for r in RUNTIMES]:
        if name not in per_model:
            continue
        row = {"median_s": per_model[name]["median_s"], "ratio": per_model[name]["median_s"] / tv_s,
               "gflops_per_s": per_model[name]["gflops_per_s"]}
        if tv_photo and f"{name}@photo" in per_model:
            row.update(photo_s=per_model[f"{name}@photo"]["median_s"],
                       ratio_photo=per_model[f"{name}@photo"]["median_s"] / tv_photo)
        table[runtime] = row
    best = min(table, key=lambda r: table[r]["median_s"])
    return {"runtimes": table, "best_runtime": best, "best_ratio": table[best]["ratio"],
            "best_ratio_met": table[best]["ratio"] <= BEST_RATIO_TARGET, "torchvision_photo_s": tv_photo}


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def format_table(r: dict) -> str:
    head = ("| model | image | median s (min-max) | GFLOP | GFLOP/s | % of GEMM | peak RSS MiB | inference RSS MiB |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for n, m in r["models"].items():
        mem = (f"{m['peak_rss_mb']:.0f} | {m['infer_rss_mb']:.0f}" if "peak_rss_mb" in m else "- | -")
        lines.append(f"| {n} | {m['image'][0]}x{m['image'][1]} | {m['median_s']:.2f} ({m['min_s']:.2f}-{m['max_s']:.2f}) "
                     f"| {m['gflop']:.0f} | {m['gflops_per_s']:.0f} | {100 * m['fraction_of_gemm']:.0f} | {mem} |")
    pair = r["tv_pair_memory"]
    tv_mem = f"{pair['peak_rss_mb']:.0f} | {pair['infer_rss_mb']:.0f}" if pair else "- | -"
    lines.append(f"| tv_keypoint + tv_mask | | {r['torchvision_s']:.2f} | {r['torchvision_gflop']:.0f} "
                 f"| {r['torchvision_gflop'] / r['torchvision_s']:.0f} "
                 f"| {100 * r['torchvision_gflop'] / r['torchvision_s'] / r['gemm_gflops_per_s']:.0f} | {tv_mem} |")
    ok = {True: "met", False: "NOT met"}
    lines += ["",
              f"GEMM fp32 {GEMM_N}x{GEMM_N}: {r['gemm_gflops_per_s']:.0f} GFLOP/s (median over the timed rounds)",
              f"ratio ours / (keypoint + mask torchvision) = {r['ours_s']:.2f} / {r['torchvision_s']:.2f} = "
              f"{r['ratio']:.3f} (per-round paired median {r['ratio_paired_median']:.3f}); target <= {RATIO_TARGET}: "
              f"{ok[r['ratio_met']]}",
              f"ours: {r['gflops_per_s']:.0f} GFLOP/s = {100 * r['fraction_of_gemm']:.0f} % of GEMM; target >= "
              f"{100 * GEMM_FRACTION_TARGET:.0f} %: {ok[r['gemm_fraction_met']]}"]
    lines.append(f"refinement (issue 4, target <= 1.3): paper_rb_h / paper_regular = {r['rb_h_over_regular']:.2f}, "
                 f"paper_rb_h / paper_multi_scale (same FPN, no refinement) = {r['rb_h_over_multi_scale']:.2f}")
    if r["ort_over_torch"]:
        lines.append(f"ONNX Runtime {r['onnxruntime']} / PyTorch (same model, image and rounds): " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["ort_over_torch"].items()))
    lines.append(f"issue 25: ours >= {100 * GEMM_FRACTION_TARGET_25:.0f} % of GEMM: "
                 f"{ok[r['fraction_of_gemm'] >= GEMM_FRACTION_TARGET_25]}; best runtime {r['best_runtime']} at "
                 f"{r['best_ratio']:.3f} x torchvision (target <= {BEST_RATIO_TARGET}): {ok[r['best_ratio_met']]}")
    for runtime, row in r["runtimes"].items():
        photo = (f"; photo {row['photo_s']:.2f} s = {row['ratio_photo']:.3f} x torchvision"
                 if "photo_s" in row else "")
        lines.append(f"  {runtime:9s} {row['median_s']:.2f} s = {row['ratio']:.3f} x torchvision{photo}")
    busy = r["other_processes_cores_per_round"]
    lines.append(f"other processes took {statistics.median(busy):.2f} cores (median; max {max(busy):.2f}) of "
                 f"{r['cpus']} during the timed rounds; load average {r['loadavg_start'][0]:.2f} at start, "
                 f"{r['loadavg_end'][0]:.2f} at end")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
