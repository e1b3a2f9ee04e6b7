"""Do the demo preset's gains hold on people it was not tuned on?

Trains ``tiny`` (the demo's recipe) for ``--iters`` iterations on a synthetic set drawn with another
seed than the demo's, then evaluates it on that set's own val split and on a set drawn with other
people sizes and poses (``--people-scale``, ``--pose-spread``), with and without keypoint flip TTA.

    python benchmarks/generalization.py --iters 1500 --seed 11 --json generalization.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from poseseg.config import load_config
from poseseg.data.coco import CocoPeopleDataset
from poseseg.data.synth import generate_dataset
from poseseg.engine.evaluate import evaluate
from poseseg.engine.train import train


def _ap_table(metrics: dict) -> dict:
    return {task: {k: round(v, 4) for k, v in stats.items() if k in ("AP", "AP50", "AP75") and v is not None}
            for task, stats in metrics.items()}


def shifted_set(work: Path, seed: int, people_scale: float, pose_spread: float, num_val: int) -> Path:
    """The val-only synthetic set of other people sizes and poses beside a set drawn with ``seed``: drawn with
    ``seed + 1``, made once in ``work`` (benchmarks/paper_protocol.py measures on it too)."""
    root = Path(work) / f"synth-seed{seed + 1}-scale{people_scale:g}-spread{pose_spread:g}"
    if not (root / "val.json").exists():
        generate_dataset(root, num_train=0, num_val=num_val, seed=seed + 1, workers=2,
                         people_scale=people_scale, pose_spread=pose_spread)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=11, help="seed of the training set (the demo's is 0)")
    ap.add_argument("--people-scale", type=float, default=1.35)
    ap.add_argument("--pose-spread", type=float, default=1.4)
    ap.add_argument("--train-images", type=int, default=600)
    ap.add_argument("--val-images", type=int, default=60)
    ap.add_argument("--work", default="runs/generalization")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("overrides", nargs="*", help="config overrides of the tiny preset")
    args = ap.parse_args()

    work = Path(args.work)
    same = work / f"synth-seed{args.seed}"
    if not (same / "val.json").exists():
        generate_dataset(same, num_train=args.train_images, num_val=args.val_images, seed=args.seed, workers=2)
    shifted = shifted_set(work, args.seed, args.people_scale, args.pose_spread, args.val_images)
    n = args.iters
    cfg = load_config("tiny", [
        f"data.train_json={same / 'train.json'}", f"data.train_images={same / 'train'}",
        f"data.val_json={same / 'val.json'}", f"data.val_images={same / 'val'}", f"train.output_dir={work}",
        "train.name=train", f"train.iters={n}", f"train.lr_steps=[{round(0.73 * n)},{round(0.9 * n)}]",
        f"train.warmup_iters={max(1, n // 15)}", f"train.checkpoint_every={n}", *args.overrides])
    start = time.perf_counter()
    run = train(cfg)
    model = run.model.eval()
    results = {"iters": run.iterations, "train_minutes": round((time.perf_counter() - start) / 60, 1),
               "seed": args.seed, "people_scale": args.people_scale, "pose_spread": args.pose_spread,
               "overrides": args.overrides}
    for name, root in (("same_distribution", same), ("other_sizes_and_poses", shifted)):
        dataset = CocoPeopleDataset(root / "val.json", root / "val", on_bad_image="raise", load_masks=False)
        for flip in (False, True):
            model.test_flip, model.test_flip_masks = flip, False  # as the demo evaluates: keypoint flip only
            metrics = evaluate(model, dataset, device=torch.device("cpu"))
            results[f"{name}{'_flip' if flip else ''}"] = _ap_table(metrics)
            print(name, "flip" if flip else "", json.dumps(results[f"{name}{'_flip' if flip else ''}"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
