"""Training speed: seconds per iteration and peak memory, ours against torchvision's detectors (issue 8).

    python benchmarks/train_speed.py                        # batch 2 x 512 px, 2 threads, 5 timed rounds
    python benchmarks/train_speed.py --runs 3 --json train_speed.json

Compared in one process, on the same batch (2 images of 512 x 512 with 3 people each: boxes, box-shaped
masks, 17 keypoints; see ``train_step.person_batch``), one SGD step = forward with every loss, backward,
update:

* ``tiny``: our CPU preset (half-width ResNet-18, trainable BatchNorm, slim heads);
* ``ours``: ``paper_regular`` (ResNet-50-FPN P2-P6, box + mask + keypoint heads with offsets);
* ``ours_kps``: ``paper_kps_only`` (box + keypoint heads), the like-for-like match of ...
* ``tv_keypoint``: torchvision's Keypoint R-CNN (ResNet-50-FPN, 8 x 512 keypoint convs), and
* ``tv_mask``: torchvision's Mask R-CNN; ``tv_keypoint + tv_mask`` is what training both tasks costs a
  torchvision user today.

Matched settings: both sides use frozen BatchNorm with every backbone stage trainable (``paper_regular``'s
``frozen_bn`` / ``freeze_at: 0``; torchvision built with ``FrozenBatchNorm2d`` and 5 trainable layers),
2 classes, the same RPN / RoI sampling defaults (256 anchors, 512 RoIs per image at 25 % positives),
images not resized (torchvision's ``min_size`` = the image size). Random fixed weights
(``torch.manual_seed(0)``); SGD lr 1e-3, momentum 0.9. Each round runs one step of every model, in an
order rotated between rounds, so load from other processes hits all alike; times are medians.

Peak memory: each model trains ``--memory-steps`` steps in a fresh subprocess; ``peak_rss_mb`` is its
VmHWM (Python + torch + weights + optimizer state + activations), ``train_rss_mb`` the part added by the
training steps (peak minus the resident size just before the first step).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection import KeypointRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

import poseseg
from machine import ForeignLoad, cpu_model, proc_status_mb  # benchmarks/machine.py
from train_step import person_batch  # benchmarks/train_step.py

MODELS = ["tiny", "ours", "ours_kps", "tv_keypoint", "tv_mask"]
PRESETS = {"tiny": "tiny", "ours": "paper_regular", "ours_kps": "paper_kps_only"}
NUM_KEYPOINTS = 17


def build(name: str, size: int) -> torch.nn.Module:
    """Model ``name`` in training mode with fixed random weights, for ``size`` x ``size`` images."""
    torch.manual_seed(0)
    if name in PRESETS:
        cfg = poseseg.load_config(PRESETS[name], [f"model.input.test_size={size}"])
        return poseseg.build_model(cfg).train()
    backbone = _resnet_fpn_extractor(torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d), 5)
    detector = {"tv_keypoint": lambda: KeypointRCNN(backbone, num_classes=2, num_keypoints=NUM_KEYPOINTS,
                                                    min_size=size, max_size=size),
                "tv_mask": lambda: MaskRCNN(backbone, num_classes=2, min_size=size, max_size=size)}[name]
    return detector().train()


def make_step(model: torch.nn.Module, size: int, batch_size: int):
    """A closure running one real SGD step of ``model`` on the shared synthetic batch."""
    images, targets = person_batch(batch_size, size, NUM_KEYPOINTS)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        losses = model(images, [dict(t) for t in targets])
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def memory_child(name: str, size: int, batch_size: int, steps: int, threads: int) -> dict:
    """Runs in a fresh process: build one model, train a few steps, report RSS numbers in MiB."""
    torch.set_num_threads(threads)
    step = make_step(build(name, size), size, batch_size)
    before = proc_status_mb("VmRSS")
    for _ in range(steps):
        step()
    peak = proc_status_mb("VmHWM")
    return {"peak_rss_mb": round(peak, 1), "rss_before_mb": round(before, 1), "train_rss_mb": round(peak - before, 1)}


def measure_memory(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", name, "--size", str(args.size),
           "--batch-size", str(args.batch_size), "--memory-steps", str(args.memory_steps),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# the demo's process and thread layouts on 2 cores: name -> (processes, threads each, data workers each)
DEMO_LAYOUTS = {
    "1 process x 2 threads, 0 workers": (1, 2, 0),
    "1 process x 2 threads, 1 worker": (1, 2, 1),
    "1 process x 2 threads, 2 workers (the demo's)": (1, 2, 2),
    "2 DDP processes x 1 thread, 0 workers": (2, 1, 0),
    "2 DDP processes x 1 thread, 1 worker": (2, 1, 1),
}


def demo_layouts(iters: int, skip: int, data: Path, work: Path, *, switches: tuple[str, ...] = (),
                 names: tuple[str, ...] = ()) -> dict[str, float]:
    """Median seconds per demo training iteration (the same global batch of 4) for each layout (or those
    whose name starts with one of ``names``), from the ``time_s`` of every step in ``metrics.jsonl`` after
    the first ``skip``; no validation, no checkpoint. ``switches``: config overrides (another recipe)."""
    from poseseg.demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, demo_config, ensure_dataset

    ensure_dataset(data, num_train=DEMO_TRAIN_IMAGES, num_val=DEMO_VAL_IMAGES, seed=0)
    results = {}
    for n, (name, (procs, threads, workers)) in enumerate(DEMO_LAYOUTS.items()):
        if names and not name.startswith(names):
            continue
        out = work / f"layout{n}"
        shutil.rmtree(out, ignore_errors=True)  # an existing folder would send the run to layout{n}-2: read this run
        cfg = demo_config(data, out, [f"data.num_workers={workers}", "data.val_json=", "train.log_every=1",
                                      f"train.batch_size={4 // procs}", f"train.checkpoint_every={10 * iters}",
                                      f"train.iters={iters}", *switches], iters=iters)
        work.mkdir(parents=True, exist_ok=True)
        config = work / f"layout{n}.yaml"
        config.write_text(cfg.to_yaml())
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                    if procs > 1 else [sys.executable])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([*launcher, "-m", "poseseg", "train", "--config", str(config)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        times = [r["time_s"] for r in steps if "time_s" in r and r["iter"] > skip]
        results[name] = statistics.median(times)
        print(f"{name:48s} {results[name]:.3f} s/iteration (median of {len(times)})", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true", help="time the demo's training under each process/thread/worker "
                                                        "layout instead (DEMO_LAYOUTS)")
    p.add_argument("--demo-iters", type=int, default=60)
    p.add_argument("--demo-data", default="data/synth", help="the demo's data folder (made if missing)")
    p.add_argument("--demo-work", default="runs/train_speed_demo")
    p.add_argument("--demo-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every layout (e.g. an earlier recipe, as a baseline)")
    p.add_argument("--demo-layouts", nargs="*", default=[], metavar="PREFIX",
                   help="only the layouts whose names start so (default: all of DEMO_LAYOUTS)")
    p.add_argument("--size", type=int, default=512, help="image side (square images)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--runs", type=int, default=5, help="timed rounds (each runs one step of every model)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    p.add_argument("--memory-steps", type=int, default=2, help="steps per memory subprocess (0: skip memory)")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--_memory-child", dest="memory_child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.demo:
        layouts = demo_layouts(args.demo_iters, 10, Path(args.demo_data), Path(args.demo_work),
                               switches=tuple(args.demo_set), names=tuple(args.demo_layouts))
        chosen = "1 process x 2 threads, 2 workers (the demo's)"
        if args.json:
            Path(args.json).write_text(json.dumps({"layout": chosen, "s_per_iter": round(layouts.get(chosen, float("nan")), 4),
                                                   "switches": args.demo_set,
                                                   "fastest": min(layouts, key=layouts.get),
                                                   "layouts": {k: round(v, 4) for k, v in layouts.items()},
                                                   "iters": args.demo_iters, "cpu": cpu_model()}, indent=2))
        return
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.size, args.batch_size, args.memory_steps, args.threads)))
        return
    names = args.models.split(",")
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {MODELS}")

    torch.set_num_threads(args.threads)
    steps = {n: make_step(build(n, args.size), args.size, args.batch_size) for n in names}
    print(f"torch {torch.__version__}, {args.threads} threads, {cpu_model()}, batch {args.batch_size} x "
          f"{args.size}px, {args.warmup} warm-up + {args.runs} timed rounds", flush=True)
    times: dict[str, list[float]] = {n: [] for n in names}
    foreign: list[float] = []
    for r in range(args.warmup + args.runs):
        order = names[r % len(names):] + names[:r % len(names)]
        load = ForeignLoad()
        row = {n: steps[n]() for n in order}
        others = load.cores()
        if r >= args.warmup:
            for n in names:
                times[n].append(row[n])
            foreign.append(others)
        tag = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}/{args.runs}"
        print(f"  {tag}: " + ", ".join(f"{n} {row[n]:.2f}s" for n in names) + f" (other processes: {others:.2f} cores)",
              flush=True)

    per_model = {}
    for n in names:
        per_model[n] = {"median_s": statistics.median(times[n]), "min_s": min(times[n]), "max_s": max(times[n]),
                        "times_s": times[n]}
        if args.memory_steps > 0:
            per_model[n].update(measure_memory(n, args))
    result = {"models": per_model, "size": args.size, "batch_size": args.batch_size, "threads": args.threads,
              "runs": args.runs, "warmup": args.warmup, "other_processes_cores_per_round": foreign,
              "torch": torch.__version__, "torchvision": torchvision.__version__, "cpu": cpu_model(),
              "cpus": os.cpu_count(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
    med = {n: m["median_s"] for n, m in per_model.items()}
    if {"ours", "tv_keypoint", "tv_mask"} <= med.keys():
        result["ours_over_tv_pair"] = med["ours"] / (med["tv_keypoint"] + med["tv_mask"])
    if {"ours_kps", "tv_keypoint"} <= med.keys():
        result["ours_kps_over_tv_keypoint"] = med["ours_kps"] / med["tv_keypoint"]
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def format_table(r: dict) -> str:
    lines = ["| model | s / iteration, median (min-max) | images / s | peak RSS MiB | training RSS MiB |",
             "|---|---|---|---|---|"]
    for n, m in r["models"].items():
        mem = f"{m['peak_rss_mb']:.0f} | {m['train_rss_mb']:.0f}" if "peak_rss_mb" in m else "- | -"
        lines.append(f"| {n} | {m['median_s']:.2f} ({m['min_s']:.2f}-{m['max_s']:.2f}) "
                     f"| {r['batch_size'] / m['median_s']:.2f} | {mem} |")
    lines.append("")
    if "ours_over_tv_pair" in r:
        lines.append(f"ours (3 heads) / (tv_keypoint + tv_mask) = {r['ours_over_tv_pair']:.3f}")
    if "ours_kps_over_tv_keypoint" in r:
        lines.append(f"ours_kps / tv_keypoint (same heads) = {r['ours_kps_over_tv_keypoint']:.3f}")
    busy = r["other_processes_cores_per_round"]
    lines.append(f"other processes took {statistics.median(busy):.2f} cores (median; max {max(busy):.2f}) of "
                 f"{r['cpus']} during the timed rounds")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
