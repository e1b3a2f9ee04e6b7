"""Keypoint-learning levers at a fixed time budget (issue 14): each variant trains ``tiny`` from scratch
for ``--minutes`` by the time schedule on the demo's synthetic data, then is evaluated on its val split.

A time budget (not an iteration count) makes each lever pay for its own cost: a slower step trains
fewer iterations. The table in benchmarks/RESULTS.md was made with

    taskset -c 0 python benchmarks/levers.py --minutes 5 --threads 1 --data /path/to/demo-data --json levers.json

(one thread on one core; each variant's overrides are listed in VARIANTS, on top of the preset as it was
when the run was made: ``--base`` gives overrides shared by every variant, e.g. the preset before a change).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from poseseg.config import load_config
from poseseg.engine.train import train

GTJ = ["model.roi.head_rois=gt_jitter"]
KPW = ["model.keypoint.conv_dim=128"]
# name -> overrides; the levers, each on top of the variant its name extends
VARIANTS: dict[str, list[str]] = {
    "baseline": ["model.roi.head_rois=proposals", "model.keypoint.conv_dim=64"],
    "kpw128": ["model.roi.head_rois=proposals", *KPW],
    "gtj": [*GTJ, "model.keypoint.conv_dim=64"],
    "gtj_kpw128": [*GTJ, *KPW],
    "gtj_kpw128_gn": [*GTJ, *KPW, "model.keypoint.norm=gn", "model.mask.norm=gn"],
    "gtj_kpw128_cesoft": [*GTJ, *KPW, "model.keypoint.loss=ce_soft"],
    "gtj_kpw128_finish25": [*GTJ, *KPW, "train.finish_fraction=0.25"],
    "gtj_kpw128_copies4": [*GTJ, *KPW, "model.roi.gt_jitter_copies=4", "model.mask.max_rois_per_image=24",
                           "model.keypoint.max_rois_per_image=24"],
    "gtj_kpw128_mask128": [*GTJ, *KPW, "model.mask.conv_dim=128"],
    "gtj_kpw128_aligned": [*GTJ, *KPW, "model.roi.aligned=true"],
}


def run_variant(name: str, overrides: list[str], *, data: Path, out: Path, minutes: float, seed: int) -> dict:
    cfg = load_config("tiny", [
        f"data.train_json={data / 'train.json'}", f"data.train_images={data / 'train'}",
        f"data.val_json={data / 'val.json'}", f"data.val_images={data / 'val'}", f"train.output_dir={out}",
        f"train.name={name}", "train.checkpoint_every=100000", "data.num_workers=0", "train.schedule=time",
        f"train.time_limit_minutes={minutes}", "train.iters=1000000", f"train.seed={seed}", *overrides])
    start = time.perf_counter()
    result = train(cfg, quiet=True)
    row = {"name": name, "overrides": overrides, "seed": seed, "iterations": result.iterations,
           "seconds": round(time.perf_counter() - start, 1)}
    for task, stats in (result.metrics or {}).items():
        if isinstance(stats, dict):
            row.update({f"{task}_{k}": round(v, 4) for k, v in stats.items() if k in ("AP", "AP50") and v is not None})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the demo's synthetic data (poseseg synth --out D --train 600 --val 60)")
    ap.add_argument("--out", default="runs/levers")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--base", nargs="*", default=[], help="overrides shared by every variant")
    ap.add_argument("--json", help="write the rows here after every run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            rows.append(run_variant(name, [*args.base, *VARIANTS[name]], data=Path(args.data), out=Path(args.out),
                                    minutes=args.minutes, seed=seed))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
