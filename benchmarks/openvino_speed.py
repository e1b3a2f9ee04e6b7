"""OpenVINO against ONNX Runtime on the CPU (issue 25): the same exported file, the same picture, the same rounds.

    PYTHONPATH=src python benchmarks/openvino_speed.py --runs 7 --threads 2 --json results/openvino_speed.json

Each preset is built as ``benchmarks/latency.py`` builds it (fixed random weights, score threshold 0 and
``--detections`` forced detections; ``tiny`` at its own 320 px, ``paper_regular`` at ``--size``), exported
once by ``poseseg.export`` and loaded twice: by ``OrtModel`` (``--threads`` intra-op threads, spinning
off) and by ``OpenVinoModel`` (``--threads`` inference threads, LATENCY hint, float32). Every round runs
each runner in an order rotated from round to round, so load from other processes hits all alike; a
runner repeats within its turn until ``--min-turn-s`` has passed (the fast ``tiny`` several times) and
the turn's median counts. Two times: the graph (``predict_rois``, where the runtimes differ) and the
whole call with the shared post-processing (pasting the masks), as ``latency.py`` times models. The
ratio OpenVINO / ONNX Runtime is taken per round, its median reported. The outputs of the two runtimes
on the picture are compared as well (detections in the same order).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

import onnxruntime
import openvino
import torch

from latency import build, build_ort, make_image  # benchmarks/latency.py
from machine import ForeignLoad, cpu_model  # benchmarks/machine.py
from poseseg.export.openvino_model import OpenVinoModel
from poseseg.modeling.postprocess import postprocess

PRESETS = {"tiny": "tiny", "paper_regular": "ours"}  # preset -> latency.py's name for it


def agreement(ort, ov, image: torch.Tensor) -> dict:
    """How far OpenVINO's results are from ONNX Runtime's on ``image`` (detections in the same order)."""
    a, b = (postprocess(r.predict_rois([image]))[0] for r in (ort, ov))
    masks_a, masks_b = (a["masks"] >= 0.5).flatten(1), (b["masks"] >= 0.5).flatten(1)  # (N, H * W)
    union = (masks_a | masks_b).sum(1)
    iou = torch.where(union > 0, (masks_a & masks_b).sum(1) / union.clamp(min=1), 1.0)  # two empty masks agree
    return {"detections": [len(a["boxes"]), len(b["boxes"])],
            "box_max_abs_px": (a["boxes"] - b["boxes"]).abs().max().item(),
            "score_max_abs": (a["scores"] - b["scores"]).abs().max().item(),
            "keypoint_max_abs_px": (a["keypoints"][..., :2] - b["keypoints"][..., :2]).abs().max().item(),
            "mask_iou_min": iou.min().item(), "empty_masks": int((union == 0).sum())}


def turn(runner, image: torch.Tensor, detections: int, name: str, min_s: float) -> tuple[float, float]:
    """Median (graph s, whole call s) of one runner's runs until ``min_s`` has passed (at least one run)."""
    graph, total = [], []
    while not total or sum(total) < min_s:
        start = time.perf_counter()
        with torch.inference_mode():
            rois = runner.predict_rois([image])
            graph.append(time.perf_counter() - start)
            out = postprocess(rois)
        total.append(time.perf_counter() - start)
        assert out[0]["boxes"].shape[0] == detections, f"{name}: {out[0]['boxes'].shape[0]} detections"
    return statistics.median(graph), statistics.median(total)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=800, help="shorter image side of paper_regular (default 800)")
    p.add_argument("--runs", type=int, default=7, help="timed rounds (each runs every runner once)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--detections", type=int, default=20)
    p.add_argument("--min-turn-s", type=float, default=1.0, help="a runner repeats in its turn until this long")
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runners, images, agree = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset, name in PRESETS.items():
            model, side = build(name, args.detections, args.size)
            path = os.path.join(tmp, f"{preset}.onnx")
            runners[f"{preset}/onnxruntime"] = build_ort(model, path, args.threads)
            runners[f"{preset}/openvino"] = OpenVinoModel(path, threads=args.threads)
            images[preset] = make_image(side)
            agree[preset] = agreement(runners[f"{preset}/onnxruntime"], runners[f"{preset}/openvino"], images[preset])
    names = list(runners)
    print(f"onnxruntime {onnxruntime.__version__}, openvino {openvino.get_version()}, {args.threads} threads, "
          f"{cpu_model()}, {args.detections} detections, {args.warmup} warm-up + {args.runs} timed rounds", flush=True)
    times: dict[str, dict[str, list[float]]] = {n: {"graph": [], "total": []} for n in names}
    foreign = []
    for r in range(args.warmup + args.runs):
        order = names[r % len(names):] + names[:r % len(names)]
        load = ForeignLoad()
        row = {n: turn(runners[n], images[n.split("/")[0]], args.detections, n, args.min_turn_s) for n in order}
        others = load.cores()
        if r >= args.warmup:
            for n in names:
                times[n]["graph"].append(row[n][0])
                times[n]["total"].append(row[n][1])
            foreign.append(others)
        tag = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}/{args.runs}"
        print(f"  {tag}: " + ", ".join(f"{n} {row[n][0]:.3f}/{row[n][1]:.3f}s" for n in names) +
              f" (graph/whole; other processes: {others:.2f} cores)", flush=True)

    result = {"presets": {}, "other_processes_cores_per_round": foreign, "threads": args.threads,
              "detections": args.detections, "runs": args.runs, "warmup": args.warmup, "min_turn_s": args.min_turn_s,
              "cpu": cpu_model(), "cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
              "openvino": openvino.get_version(), "torch": torch.__version__,
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
    for preset in PRESETS:
        ort_t, ov_t = times[f"{preset}/onnxruntime"], times[f"{preset}/openvino"]
        entry = {"image": list(images[preset].shape[1:]), "agreement": agree[preset]}
        for part in ("graph", "total"):
            entry[part] = {"onnxruntime_s": ort_t[part], "openvino_s": ov_t[part],
                           "onnxruntime_median_s": statistics.median(ort_t[part]),
                           "openvino_median_s": statistics.median(ov_t[part]),
                           "openvino_over_onnxruntime": statistics.median(o / r for o, r in zip(ov_t[part],
                                                                                                ort_t[part]))}
        result["presets"][preset] = entry
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def format_table(r: dict) -> str:
    lines = ["| preset | image | part | ONNX Runtime median s (min-max) | OpenVINO median s (min-max) | "
             "OpenVINO / ORT (per-round median) |", "|---|---|---|---|---|---|"]
    for preset, m in r["presets"].items():
        for part, label in (("graph", "graph"), ("total", "whole call")):
            t = m[part]
            ort, ov = t["onnxruntime_s"], t["openvino_s"]
            lines.append(f"| `{preset}` | {m['image'][0]}x{m['image'][1]} | {label} "
                         f"| {t['onnxruntime_median_s']:.3f} ({min(ort):.3f}-{max(ort):.3f}) "
                         f"| {t['openvino_median_s']:.3f} ({min(ov):.3f}-{max(ov):.3f}) "
                         f"| {t['openvino_over_onnxruntime']:.2f} |")
    for preset, m in r["presets"].items():
        a = m["agreement"]
        lines.append(f"{preset}: OpenVINO vs ONNX Runtime, {a['detections'][0]} detections: boxes within "
                     f"{a['box_max_abs_px']:.1e} px, scores {a['score_max_abs']:.1e}, keypoints "
                     f"{a['keypoint_max_abs_px']:.1e} px, min mask IoU {a['mask_iou_min']:.3f} "
                     f"({a['empty_masks']} empty in both)")
    busy = r["other_processes_cores_per_round"]
    lines.append(f"other processes took {statistics.median(busy):.2f} cores (median; max {max(busy):.2f}) of "
                 f"{r['cpus']} during the timed rounds")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
