"""Which mask levers pay (issue 23): each trained for the demo's iteration count, segm AP on the demo's val.

Two protocols:

* ``frozen``: the demo's trained model (``--weights``) keeps its trunk, RPN and box head fixed (BatchNorm in
  eval mode), and a fresh mask head with the lever's settings trains alone for ``--iters`` iterations (the
  demo's 990, its schedule: AdamW 1e-3, warm-up 6.7 %, x0.1 at 73 % and 90 %) on the demo's training
  pictures; every lever then masks the same boxes, so only the head differs. Cheap (the trunk runs
  forward only) and free of the seed noise of a whole run; what it cannot measure is how a lever shapes
  the trunk (the loss weight: with AdamW on a head alone, scaling its loss changes nothing).
* ``joint``: the whole demo from scratch with the lever (``poseseg demo``'s config and seed), as a user
  gets it. Ten minutes each.

The mask paste is measured on the ``frozen`` baseline's predictions: the threshold on the pasted
probabilities (0.5 everywhere in poseseg) at 0.3-0.7.

    python benchmarks/mask_levers.py --weights demo/seed0/model_final.pt --data demo/data0 \\
        --json benchmarks/results/mask_levers.json --parallel 2

Runs go to ``--work``; the JSON is written after each and runs it holds are not trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from poseseg.data.coco import CocoPeopleDataset
from poseseg.demo import DEMO_ITERS, demo_config
from poseseg.engine.evaluate import score_results
from poseseg.engine.train import train
from poseseg.modeling.postprocess import coco_records, records_by_iou_type
from poseseg.weights.checkpoint_file import load_checkpoint, save_checkpoint
from poseseg.weights.finetune import config_from_weights

# name -> (label, protocol, config switches)
LEVERS: dict[str, tuple[str, str, list[str]]] = {
    "head": ("the demo's head (2 convs, 64 wide, 28x28), retrained", "frozen", []),
    "wide": ("128 wide", "frozen", ["model.mask.conv_dim=128"]),
    "deep": ("4 convs", "frozen", ["model.mask.num_convs=4"]),
    "wide_deep": ("4 convs, 128 wide", "frozen", ["model.mask.conv_dim=128", "model.mask.num_convs=4"]),
    "res56": ("56x56 (RoIAlign 28x28)", "frozen", ["model.mask.pooled_size=28"]),
    "fine_level": ("P2 (a level finer than the FPN's p3) for the mask head only", "frozen",
                   ["model.mask.fine_level=true"]),
    "deep_fine": ("4 convs + P2", "frozen", ["model.mask.num_convs=4", "model.mask.fine_level=true"]),
    "more_rois": ("more RoIs: 5 jittered copies, 24 per picture", "frozen",
                  ["model.roi.gt_jitter_copies=5", "model.mask.max_rois_per_image=24"]),
    "boundary2": ("boundary term, edge cells x3", "frozen", ["model.mask.boundary_weight=2"]),
    "boundary4": ("boundary term, edge cells x5", "frozen", ["model.mask.boundary_weight=4"]),
    "joint_demo": ("the demo as it is (the tiny preset)", "joint", []),
    "joint_loss2": ("the demo with mask loss weight 2", "joint", ["model.mask.loss_weight=2"]),
}
PASTE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def trunk_checkpoint(weights: Path, work: Path) -> Path:
    """The demo checkpoint without its mask head (and keypoint head): what every frozen run starts from."""
    out = work / "trunk.pt"
    if not out.exists():
        payload = load_checkpoint(weights)
        payload["model"] = {k: v for k, v in payload["model"].items()
                            if not k.startswith(("mask_head.", "keypoint_head."))}
        payload.pop("optimizer", None)
        work.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, payload)
    return out


def lever_config(args: argparse.Namespace, name: str):
    _, protocol, switches = LEVERS[name]
    data, work, n = Path(args.data), Path(args.work), args.iters
    out = work / "runs" / name
    if protocol == "joint":  # the demo's own config: from scratch, the seed, the schedule
        return demo_config(data, out, [f"train.seed={args.seed}", "train.checkpoint_every=1000000", *switches],
                           iters=n)
    schedule = [f"train.iters={n}", f"train.lr_steps=[{round(0.73 * n)},{round(0.9 * n)}]",
                f"train.warmup_iters={max(1, round(0.067 * n))}"]
    return config_from_weights(args.weights, [
        f"data.train_json={data / 'train.json'}", f"data.train_images={data / 'train'}",
        f"data.val_json={data / 'val.json'}", f"data.val_images={data / 'val'}",
        f"train.output_dir={out.parent}", f"train.name={out.name}", *schedule, "train.checkpoint_every=1000000",
        f"train.seed={args.seed}", "train.schedule=iters", "train.time_limit_minutes=0", "train.finish_fraction=0",
        f"train.init_weights={trunk_checkpoint(Path(args.weights), work)}", "train.freeze=mask_only",
        "model.heads=[box,mask]", "model.test_flip=true", "model.test_flip_masks=false", *switches])


def run_one(args: argparse.Namespace, name: str) -> dict:
    cfg = lever_config(args, name)
    start = time.perf_counter()
    result = train(cfg, quiet=True)
    seconds = time.perf_counter() - start
    record = {"lever": name, "label": LEVERS[name][0], "protocol": LEVERS[name][1], "switches": LEVERS[name][2],
              "iterations": result.iterations, "seconds": round(seconds, 1), "checkpoint": str(result.final_checkpoint),
              "metrics": {t: result.metrics[t] for t in ("bbox", "segm", "keypoints") if t in result.metrics}}
    if name == "head":
        record["paste"] = paste_thresholds(result.model, Path(args.data))
    return record


def paste_thresholds(model: torch.nn.Module, data: Path) -> dict[str, dict]:
    """segm AP of the same predictions with the pasted probabilities thresholded at each of PASTE_THRESHOLDS."""
    from poseseg.modeling.postprocess import postprocess

    dataset = CocoPeopleDataset(data / "val.json", data / "val", on_bad_image="raise")
    model.eval()
    rois = []
    with torch.inference_mode():
        for i in range(len(dataset)):
            image, target = dataset[i]
            rois.append((int(target["image_id"]), postprocess(model.predict_rois([image]), masks="boxes")[0]))
    out = {}
    for thresh in PASTE_THRESHOLDS:
        records = [r for image_id, pred in rois for r in coco_records(pred, image_id, mask_thresh=thresh)]
        report = score_results(data / "val.json", {"segm": records_by_iou_type(records)["segm"]},
                               category_id=int(dataset.category["id"]), iou_types=["segm"])
        out[f"{thresh:g}"] = report.metrics["segm"]
    return out


def format_table(result: dict) -> str:
    rows = ["| lever | protocol | segm AP | AP50 | AP75 | bbox AP | keypoints AP | minutes |",
            "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        m = r["metrics"]
        kps = f"{100 * m['keypoints']['AP']:.1f}" if "keypoints" in m else "-"
        rows.append(f"| {r['label']} | {r['protocol']} | {100 * m['segm']['AP']:.1f} | {100 * m['segm']['AP50']:.1f} | "
                    f"{100 * m['segm']['AP75']:.1f} | {100 * m['bbox']['AP']:.1f} | {kps} | {r['seconds'] / 60:.1f} |")
    for r in result["runs"]:
        for thresh, m in r.get("paste", {}).items():
            rows.append(f"| paste threshold {thresh} (on the retrained demo head) | frozen | {100 * m['AP']:.1f} | "
                        f"{100 * m['AP50']:.1f} | {100 * m['AP75']:.1f} | | | |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="the demo's trained checkpoint (the frozen protocol's trunk)")
    p.add_argument("--data", help="the demo's synthetic data folder (train + val) it was trained on")
    p.add_argument("--levers", nargs="+", default=[n for n, v in LEVERS.items() if v[1] == "frozen"],
                   choices=list(LEVERS))
    p.add_argument("--iters", type=int, default=DEMO_ITERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/mask_levers")
    p.add_argument("--json", default="")
    p.add_argument("--parallel", type=int, default=1,
                   help="levers trained at once, each in its own 1-thread process (2 on 2 cores)")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # a child process: train this lever, print JSON
    p.add_argument("--table-from", default="", metavar="JSON")
    args = p.parse_args()
    if args.table_from:
        print(format_table(json.loads(Path(args.table_from).read_text())))
        return
    if not args.weights or not args.data:
        p.error("--weights and --data are required (unless --table-from)")
    if args.one:
        print("RESULT " + json.dumps(run_one(args, args.one)), flush=True)
        return
    trunk_checkpoint(Path(args.weights), Path(args.work))
    out = Path(args.json) if args.json else None
    result = json.loads(out.read_text()) if out and out.exists() else {"runs": []}
    result.update({"weights": args.weights, "data": args.data, "iters": args.iters, "seed": args.seed,
                   "parallel": args.parallel})
    done = {r["lever"] for r in result["runs"]}
    todo = [n for n in args.levers if n not in done]
    threads = 1 if args.parallel > 1 else torch.get_num_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    base = [sys.executable, __file__, "--weights", args.weights, "--data", args.data, "--iters", str(args.iters),
            "--seed", str(args.seed), "--work", args.work]
    running: list[tuple[str, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < args.parallel:
            name = todo.pop(0)
            running.append((name, subprocess.Popen([*base, "--one", name], env=env, stdout=subprocess.PIPE, text=True)))
        name, proc = running.pop(0)
        stdout, _ = proc.communicate()
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            raise SystemExit(f"lever {name} failed (exit {proc.returncode}):\n{stdout[-2000:]}")
        record = json.loads(line[-1][len("RESULT "):])
        record["threads"] = threads
        result["runs"].append(record)
        if out:
            out.write_text(json.dumps(result, indent=1))
        m = record["metrics"]["segm"]
        print(f"{name}: segm AP {100 * m['AP']:.1f} AP75 {100 * m['AP75']:.1f} ({record['seconds'] / 60:.1f} min)",
              flush=True)
    print(format_table(result))


if __name__ == "__main__":
    main()
