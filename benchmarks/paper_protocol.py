"""The paper's refinement claim tested the paper's way (issue 23): deformable layers fine-tuned from a trained
Regular model, against the Regular model trained on for the same iterations.

Every variant starts from one checkpoint (``--base``, the demo's ``tiny`` Regular model) with that checkpoint's
own config plus only the switches under test. The offset branches start at zero, so at step 0 every variant
computes the Regular model; that is checked on val pictures before any training. All variants train
``--iters`` iterations with one schedule (AdamW at ``--lr``, warm-up ``--warmup``, x0.1 at 73 % and 90 % of the
run: the demo's schedule shape at a tenth of its peak lr) and are scored on the synthetic val split of
``--data-dir`` and on the shifted set of benchmarks/generalization.py (other people sizes and poses).

    python benchmarks/paper_protocol.py --base runs/demo/model_final.pt --data-dir data/synth \\
        --iters 300 --seeds 0 1 --json benchmarks/results/paper_protocol.json

The JSON is written after every run; started again with the same ``--json``, the runs it holds are kept and
only the missing (variant, seed) pairs train, so ``--variants`` can be added to an earlier table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from generalization import shifted_set  # benchmarks/generalization.py
from poseseg.data.coco import CocoPeopleDataset
from poseseg.data.image_io import load_image_rgb, rgb_to_tensor
from poseseg.engine.evaluate import evaluate
from poseseg.engine.train import train
from poseseg.modeling.model import build_model
from poseseg.ops import DeformConv2d
from poseseg.weights.finetune import config_from_weights, init_from_weights
from poseseg.weights.load import load_model

RB = ["model.backbone.deform_stages=[3,4,5]"]
RB_H = [*RB, "model.keypoint.deform=true"]
# name -> (label, switches on top of the base checkpoint's config, train.freeze)
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "regular": ("Regular, trained on", [], "none"),
    "rb_deform_only": ("RB, deform_only", RB, "deform_only"),
    "rb_all": ("RB, all trained", RB, "none"),
    "rb_h_all": ("RB+H, all trained", RB_H, "none"),
    "rb_h_deform_only": ("RB+H, deform_only", RB_H, "deform_only"),
}
TASKS = ("bbox", "segm", "keypoints")


def base_config(base: str):
    """The base checkpoint's config, refused unless it is a Regular model (no deformable layer)."""
    cfg = config_from_weights(base)
    m = cfg.model
    if m.backbone.deform_stages or m.keypoint.deform or m.roi.deform_pool:
        raise SystemExit(f"--base {base} is not a Regular model: model.backbone.deform_stages="
                         f"{m.backbone.deform_stages}, model.keypoint.deform={m.keypoint.deform}, "
                         f"model.roi.deform_pool={m.roi.deform_pool}")
    return cfg


def variant_config(args: argparse.Namespace, name: str, seed: int):
    """The base checkpoint's config with the variant's switches, the data and the shared schedule."""
    data, n = Path(args.data_dir), args.iters
    _, switches, freeze = VARIANTS[name]
    return config_from_weights(args.base, [
        f"data.train_json={data / 'train.json'}", f"data.train_images={data / 'train'}", "data.val_json=",
        f"data.num_workers={args.workers}", f"train.iters={n}", f"train.base_lr={args.lr}",
        f"train.warmup_iters={args.warmup}", f"train.lr_steps=[{round(0.73 * n)},{round(0.9 * n)}]",
        "train.schedule=iters", f"train.checkpoint_every={n}", f"train.log_every={max(1, n // 10)}",
        f"train.seed={seed}", f"train.output_dir={Path(args.work) / 'runs'}", f"train.name={name}_s{seed}",
        f"train.freeze={freeze}", *switches])


def check_images(data_dir: Path, count: int) -> list[torch.Tensor]:
    """The first ``count`` val pictures as the model's (3, H, W) tensors."""
    return [rgb_to_tensor(load_image_rgb(p)) for p in sorted((data_dir / "val").iterdir())[:count]]


@torch.no_grad()
def step0_check(args: argparse.Namespace, images: list[torch.Tensor]) -> dict:
    """Each refinement model as it starts training (the base's weights loaded the way `train --init-weights`
    loads them) against the base model on ``images``: the largest difference of every output."""
    regular, _ = load_model(args.base)
    want = regular(images)
    report = {}
    for label, switches in (("RB", RB), ("RB+H", RB_H)):
        model = build_model(config_from_weights(args.base, switches))
        model.keypoint_schema = regular.keypoint_schema
        log = init_from_weights(model, args.base)
        got = model.eval()(images)
        diffs: dict[str, float] = {}
        for w, g in zip(want, got):
            if w["boxes"].shape != g["boxes"].shape:
                raise SystemExit(f"{label} at step 0 finds {g['boxes'].shape[0]} people where the base finds "
                                 f"{w['boxes'].shape[0]}: the weights did not load as the Regular model's")
            for key, value in w.items():
                diffs[key] = max(diffs.get(key, 0.0), (g[key].float() - value.float()).abs().max().item()
                                 if value.numel() else 0.0)
        worst = max(diffs.values())
        if worst > args.tolerance:
            raise SystemExit(f"{label} at step 0 differs from the base by {worst:g} (> --tolerance "
                             f"{args.tolerance:g}): {diffs}")
        report[label] = {"init_log": log, "max_abs_diff": diffs, "people": sum(len(w["boxes"]) for w in want)}
        print(f"step 0, {label} vs base on {len(images)} val pictures: max |diff| "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()), flush=True)
    return report


@torch.no_grad()
def offset_sizes(model: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, float]:
    """Mean |sampling offset| (cells of each layer's input) and mean |modulation - 1| of the deformable convs
    on ``images``, by part (backbone, keypoint head): how far training moved them from the plain conv."""
    sums: dict[str, list[float]] = {}

    def hook(part: str):
        def record(module, inputs, _output):
            offset, mask = module.offsets(inputs[0])  # (N, 2*kh*kw, H, W), (N, kh*kw, H, W) or None
            sums.setdefault(f"{part}_offset", []).append(offset.abs().mean().item())
            if mask is not None:
                sums.setdefault(f"{part}_modulation", []).append((mask - 1).abs().mean().item())
        return record

    handles = [m.register_forward_hook(hook(name.split(".")[0])) for name, m in model.named_modules()
               if isinstance(m, DeformConv2d)]
    try:
        if handles:
            model.eval()(images)
    finally:
        for h in handles:
            h.remove()
    return {k: statistics.mean(v) for k, v in sums.items()}


def score(model: torch.nn.Module, sets: dict[str, CocoPeopleDataset], batch_size: int) -> dict:
    """COCO metrics of ``model`` on every set (the model's own test-time flip settings)."""
    return {name: evaluate(model.eval(), ds, device=torch.device("cpu"), batch_size=batch_size)
            for name, ds in sets.items()}


def ap(metrics: dict, task: str) -> float | None:
    return metrics.get(task, {}).get("AP")


def format_table(result: dict) -> str:
    """A markdown table: AP in percent, mean ± half the range over seeds, then each seed."""
    runs, start = result["runs"], result.get("start", {})
    lines = ["| variant | set | bbox AP | segm AP | kps AP | seeds (bbox / segm / kps) | min per run |",
             "|---|---|---|---|---|---|---|"]
    for set_name in ("val", "shifted"):
        if set_name in start:
            cells = " | ".join(f"{100 * ap(start[set_name], t):.1f}" for t in TASKS)
            lines.append(f"| start: the base at step 0 (every variant) | {set_name} | {cells} | - | - |")
        for name in dict.fromkeys(r["variant"] for r in runs):
            mine = sorted((r for r in runs if r["variant"] == name), key=lambda r: r["seed"])
            cells = []
            for task in TASKS:
                values = [100 * ap(r["metrics"][set_name], task) for r in mine]
                cells.append(f"{statistics.mean(values):.1f} ± {(max(values) - min(values)) / 2:.1f}")
            seeds = "; ".join(f"s{r['seed']}: " + " / ".join(f"{100 * ap(r['metrics'][set_name], t):.1f}"
                                                             for t in TASKS) for r in mine)
            minutes = "-".join(sorted({f"{r['seconds'] / 60:.1f}" for r in mine}))
            lines.append(f"| {VARIANTS[name][0]} | {set_name} | {' | '.join(cells)} | {seeds} | {minutes} |")
    lines.append("(AP in percent; ± = half the range over the seeds)")
    return "\n".join(lines + deltas(runs))


def deltas(runs: list[dict]) -> list[str]:
    """Each variant's mean AP minus the Regular model's (trained on for as long), per set."""
    def mean_ap(name: str, set_name: str, task: str) -> float:
        return statistics.mean(100 * ap(r["metrics"][set_name], task) for r in runs if r["variant"] == name)

    names = [n for n in dict.fromkeys(r["variant"] for r in runs) if n != "regular"]
    if not any(r["variant"] == "regular" for r in runs):
        return []
    return [f"  {VARIANTS[n][0]} - Regular: " + "; ".join(
        f"{s} " + " / ".join(f"{mean_ap(n, s, t) - mean_ap('regular', s, t):+.1f}" for t in TASKS)
        for s in ("val", "shifted")) + " (bbox / segm / kps)" for n in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table-from", default="", metavar="JSON", help="train nothing: print the table of a results file")
    p.add_argument("--base", help="the trained Regular checkpoint every variant starts from")
    p.add_argument("--data-dir", help="the synthetic set the base was trained on (train + val)")
    p.add_argument("--iters", type=int, default=300, help="extra iterations, equal for every variant")
    p.add_argument("--lr", type=float, default=1e-4, help="peak lr of the shared schedule (the demo peaks at 1e-3)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--people-scale", type=float, default=1.35, help="of the shifted set (generalization.py's)")
    p.add_argument("--pose-spread", type=float, default=1.4)
    p.add_argument("--check-images", type=int, default=4, help="val pictures of the step-0 check")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest output difference allowed at step 0")
    p.add_argument("--work", default="runs/paper_protocol", help="runs and the shifted set go here")
    p.add_argument("--workers", type=int, default=1, help="data loader processes per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="", help="results; kept runs are not trained again")
    p.add_argument("--verbose", action="store_true", help="print the training logs")
    args = p.parse_args()
    if args.table_from:
        print(format_table(json.loads(Path(args.table_from).read_text())))
        return
    if not args.base or not args.data_dir:
        p.error("--base and --data-dir are required (unless --table-from)")
    torch.set_num_threads(args.threads)
    base_cfg = base_config(args.base)
    data = Path(args.data_dir)
    seed = json.loads((data / "val.json").read_text()).get("info", {}).get("seed", 0)
    shifted = shifted_set(Path(args.work), seed, args.people_scale, args.pose_spread,
                          len(json.loads((data / "val.json").read_text())["images"]))
    sets = {name: CocoPeopleDataset(root / "val.json", root / "val", on_bad_image="raise", load_masks=False)
            for name, root in (("val", data), ("shifted", shifted))}
    out = Path(args.json) if args.json else None
    result = json.loads(out.read_text()) if out and out.exists() else {"runs": []}
    result.update({"base": args.base, "data_dir": str(data), "shifted_set": str(shifted), "iters": args.iters,
                   "schedule": f"AdamW lr {args.lr:g}, warm-up {args.warmup}, x0.1 at {round(0.73 * args.iters)} "
                               f"and {round(0.9 * args.iters)}, batch {base_cfg.train.batch_size}",
                   "threads": args.threads})

    def save() -> None:
        if out:
            out.write_text(json.dumps(result, indent=1))

    images = check_images(data, args.check_images)
    if "step0" not in result:
        result["step0"] = step0_check(args, images)
        regular, _ = load_model(args.base)
        result["start"] = score(regular, sets, base_cfg.eval.batch_size)
        print("start:", {s: {t: round(100 * ap(m, t), 1) for t in TASKS} for s, m in result["start"].items()},
              flush=True)
        save()
    done = {(r["variant"], r["seed"]) for r in result["runs"]}
    for seed in args.seeds:  # seed-major: a cut-short session has every variant of the first seed
        for name in args.variants:
            if (name, seed) in done:
                continue
            cfg = variant_config(args, name, seed)
            start = time.perf_counter()
            run = train(cfg, quiet=not args.verbose)
            seconds = time.perf_counter() - start
            model = run.model
            record = {"variant": name, "seed": seed, "seconds": seconds, "iterations": run.iterations,
                      "checkpoint": str(run.final_checkpoint), "offsets": offset_sizes(model, images),
                      "metrics": score(model, sets, cfg.eval.batch_size)}
            record["eval_seconds"] = time.perf_counter() - start - seconds
            result["runs"].append(record)
            save()
            print(f"{name} seed {seed} ({seconds / 60:.1f} min): " + "; ".join(
                f"{s} " + " / ".join(f"{100 * ap(m, t):.1f}" for t in TASKS) for s, m in record["metrics"].items())
                + f"; offsets {record['offsets']}", flush=True)
    print(format_table(result))


if __name__ == "__main__":
    main()
