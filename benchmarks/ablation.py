"""The paper's ablations in miniature: train each variant on the synthetic people with an equal
budget, evaluate, and report mean and spread over seeds.

Every variant is the ``tiny`` preset (half-width ResNet-18, multi-scale FPN res3-res5, trained
from scratch) plus exactly the switch under test, on the same data with the same schedule.

    python benchmarks/ablation.py --iters 1500 --seeds 0 1 --json ablation.json
    python benchmarks/ablation.py --table-from part1.json part2.json   # one table from several sessions
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import poseseg
from poseseg.engine.train import train

# name -> (paper table, overrides on top of the tiny preset)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "regular": ("T3-5, T2, T6", []),
    "rb": ("T3-5", ["model.backbone.deform_stages=[3,4,5]"]),
    "rb_h": ("T3-5", ["model.backbone.deform_stages=[3,4,5]", "model.keypoint.deform=true"]),
    # RB+H with the sampling offsets learning 10x slower (the usual DCN recipe), not a paper row
    "rb_h_slow": ("T3-5", ["model.backbone.deform_stages=[3,4,5]", "model.keypoint.deform=true",
                           "train.offset_lr_multiplier=0.1"]),
    "kps_only": ("T6", ["model.heads=[box,keypoint]"]),
    "single_scale": ("T2", ["model.fpn.in_stages=[5]", "model.rpn.anchor_sizes=[[16,32,64,128],[192,256,384,512]]"]),
    "offsets_off": ("-", ["model.keypoint.offsets=false"]),
    "mse_loss": ("-", ["model.keypoint.loss=mse"]),  # the tiny preset itself uses ce
}
COMPARISONS = [  # (question, baseline, variant)
    ("refinement in backbone (RB vs Regular)", "regular", "rb"),
    ("refinement in backbone + head (RB+H vs Regular)", "regular", "rb_h"),
    ("RB+H, offsets at 0.1x lr, vs Regular", "regular", "rb_h_slow"),
    ("mask head helps keypoints (kps+mask vs kps-only)", "kps_only", "regular"),
    ("multi- vs single-scale FPN", "single_scale", "regular"),
    ("heatmap offsets on vs off", "offsets_off", "regular"),
    ("mse (paper) vs ce keypoint loss", "regular", "mse_loss"),
]


def run_variant(name: str, seed: int, args: argparse.Namespace) -> dict:
    data = Path(args.data_dir)
    overrides = [
        f"data.train_json={data / 'train.json'}", f"data.train_images={data / 'train'}",
        f"data.val_json={data / 'val.json'}", f"data.val_images={data / 'val'}", f"train.iters={args.iters}",
        f"train.lr_steps=[{int(args.iters * 0.75)},{int(args.iters * 0.92)}]", f"train.seed={seed}",
        f"train.warmup_iters={min(200, args.iters // 10)}", f"train.checkpoint_every={args.iters}",
        f"train.output_dir={args.out}", f"train.name={name}_s{seed}", f"train.log_every={max(1, args.iters // 10)}",
        f"data.num_workers={args.workers}", *VARIANTS[name][1],
    ]
    cfg = poseseg.load_config("tiny", overrides)
    start = time.perf_counter()
    result = train(cfg, quiet=not args.verbose)
    metrics = result.metrics
    return {"variant": name, "seed": seed, "seconds": time.perf_counter() - start,
            "bbox_AP": metrics["bbox"]["AP"], "segm_AP": metrics.get("segm", {}).get("AP"),
            "kps_AP": metrics["keypoints"]["AP"], "metrics": metrics}


def summarize(runs: list[dict]) -> dict[str, dict[str, tuple[float, float] | None]]:
    table: dict = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        table[name] = {}
        for key in ("bbox_AP", "segm_AP", "kps_AP"):
            values = [r[key] for r in mine if r[key] is not None]
            table[name][key] = (statistics.mean(values), (max(values) - min(values)) / 2) if values else None
    return table


def format_table(table: dict) -> str:
    lines = [f"{'variant':14s}{'paper':>14s}{'bbox AP':>16s}{'segm AP':>16s}{'kps AP':>16s}"]
    for name, row in table.items():
        cells = "".join(f"{'-':>16s}" if row[k] is None else f"{100 * row[k][0]:>10.1f} ±{100 * row[k][1]:4.1f}"
                        for k in ("bbox_AP", "segm_AP", "kps_AP"))
        lines.append(f"{name:14s}{VARIANTS[name][0]:>14s}{cells}")
    lines.append("(mean ± half the range over seeds, AP in percent on the synthetic val split)")
    for question, base, var in COMPARISONS:
        if base in table and var in table:
            deltas = ", ".join(f"{k.removesuffix('_AP')} {100 * (table[var][k][0] - table[base][k][0]):+.1f}"
                               for k in ("bbox_AP", "segm_AP", "kps_AP") if table[var][k] and table[base][k])
            lines.append(f"  {question}: {deltas}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=1500, help="training iterations per run (equal for all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--data-dir", default="data/synth")
    p.add_argument("--train-images", type=int, default=600)
    p.add_argument("--val-images", type=int, default=60)
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--table-from", nargs="+", default=[], metavar="JSON",
                   help="train nothing: print (and with --json write) the table of the runs in these files")
    args = p.parse_args()
    if args.table_from:
        runs = [r for path in args.table_from for r in json.loads(Path(path).read_text())["runs"]]
        if args.json:
            Path(args.json).write_text(json.dumps({"runs": runs, "table": summarize(runs)}, indent=2))
        print(format_table(summarize(runs)))
        return
    torch.set_num_threads(args.threads)
    from poseseg.demo import ensure_dataset

    ensure_dataset(Path(args.data_dir), num_train=args.train_images, num_val=args.val_images)
    runs = []
    for name in args.variants:
        for seed in args.seeds:
            run = run_variant(name, seed, args)
            print(f"{name} seed {seed}: bbox {run['bbox_AP']:.3f} segm {run['segm_AP'] or 0:.3f} "
                  f"kps {run['kps_AP']:.3f} ({run['seconds'] / 60:.1f} min)", flush=True)
            runs.append(run)
            if args.json:  # after every run, so an interrupted table keeps what finished
                Path(args.json).write_text(json.dumps({"iters": args.iters, "seeds": args.seeds, "runs": runs,
                                                       "table": summarize(runs)}, indent=2))
    print(format_table(summarize(runs)))


if __name__ == "__main__":
    main()
