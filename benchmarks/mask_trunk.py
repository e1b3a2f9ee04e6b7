"""Issue 22: what a mask head on a foreign trunk costs, and what its own trunk or distillation gives back.

Two ``tiny`` models are trained apart (the demo's recipe, ``--iters`` iterations each): A on the synthetic
set of seed 0, B on the set of seed 1. Then, on A's and B's val splits:

- ``A``: A whole; ``B``: B whole (the mask donor on its own boxes);
- ``B_at_A_boxes``: the mask donor's own masks at A's boxes, by a path that does not use
  ``model.mask.trunk=own``: A detects, then B itself (its transform, backbone, FPN, mask pooler and head)
  makes the masks at A's boxes. ``own_trunk`` must score what this scores: the donor's masks, undamaged;
- ``graft``: A with B's mask head on A's trunk (what merging two detectors into one trunk did);
- ``own_trunk``: A's trunk, boxes and keypoints, B's trunk + mask head for the masks (``model.mask.trunk=own``);
- ``distilled``: ``own_trunk`` folded into A's one trunk by ``poseseg distill`` on A's training pictures
  (unlabelled), at most ``--distill-minutes``.

Reported: segm AP (and bbox / keypoints, which only A's parts make), mask IoU against ``own_trunk``'s masks,
and 800 px latency of ``paper_regular`` with one trunk and with two (random weights, 20 detections).

    PYTHONPATH=src python benchmarks/mask_trunk.py --iters 800 --distill-iters 1500 --distill-minutes 15 \
        --json benchmarks/results/mask_trunk.json
    # or with two demo models: --a demo/seed0/model_final.pt --a-data demo/data0 --b ... --b-data ...
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from poseseg.config import load_config
from poseseg.data.coco import CocoPeopleDataset
from poseseg.data.synth import generate_dataset
from poseseg.engine.distill import DistillOptions, distill, mask_iou_against_teacher
from poseseg.engine.evaluate import evaluate
from poseseg.engine.train import train
from poseseg.modeling.model import build_model
from poseseg.weights.checkpoint_file import save_checkpoint
from poseseg.weights.load import load_model


def _synth(work: Path, seed: int) -> Path:
    root = work / f"synth-seed{seed}"
    if not (root / "val.json").exists():
        generate_dataset(root, num_train=600, num_val=60, seed=seed, workers=2)
    return root


def _train(work: Path, data: Path, name: str, iters: int, seed: int) -> Path:
    final = work / name / "model_final.pt"
    if final.exists():
        return final
    cfg = load_config("tiny", [
        f"data.train_json={data / 'train.json'}", f"data.train_images={data / 'train'}", f"train.output_dir={work}",
        f"train.name={name}", f"train.iters={iters}", f"train.lr_steps=[{round(0.73 * iters)},{round(0.9 * iters)}]",
        f"train.warmup_iters={max(1, iters // 15)}", f"train.checkpoint_every={iters}", f"train.seed={seed}"])
    return train(cfg).final_checkpoint


def _merge(a_path: Path, b_path: Path, out: Path, *, own_trunk: bool) -> Path:
    """A's model with B's mask head, on A's trunk (graft) or on B's own trunk."""
    a, cfg = load_model(a_path)
    b, _ = load_model(b_path)
    cfg.model.mask.trunk = "own" if own_trunk else "shared"
    merged = build_model(cfg)
    state = {k: v for k, v in a.state_dict().items() if not k.startswith("mask_head.")}
    for k, v in b.state_dict().items():
        if k.startswith("mask_head."):
            state[k] = v
        elif own_trunk and k.startswith(("backbone.", "fpn.")):
            state["mask_trunk." + k] = v
    merged.load_state_dict(state)
    save_checkpoint(out, {"model": merged.state_dict(), "config": cfg.to_dict(), "keypoint_schema": a.keypoint_schema})
    return out


def _scores(path: Path, sets: dict[str, Path]) -> dict:
    model, _ = load_model(path)
    model.test_flip = False
    return _scores_of(model, sets)


class DonorMasksAtBoxes:
    """A's detections with B's masks made by B itself at A's boxes (``evaluate`` calls ``predict_rois``)."""

    def __init__(self, a, b):
        self.a, self.b, self.heads = a, b, a.heads

    def eval(self):
        return self

    def predict_rois(self, images):
        rois = self.a.predict_rois(images)
        batch, _ = self.b.transform(images)
        features = self.b.fpn(self.b.backbone(batch.tensors))  # B's own pyramid, NCHW
        at_a_boxes = [{"boxes": d["boxes"], "labels": d["labels"]} for d in rois.detections]
        masks = self.b.heads_on_boxes(features, at_a_boxes, list(batch.image_sizes))
        for d, m in zip(rois.detections, masks):
            d["mask_probs"] = m["mask_probs"]  # (N, 1, 28, 28)
        return rois


def _scores_of(model, sets: dict[str, Path]) -> dict:
    out = {}
    for name, root in sets.items():
        dataset = CocoPeopleDataset(root / "val.json", root / "val", on_bad_image="raise")
        metrics = evaluate(model, dataset, device=torch.device("cpu"))
        out[name] = {task: round(stats["AP"], 4) for task, stats in metrics.items()}
    return out


def _latency(size: int = 800, rounds: int = 5) -> dict:
    """Median seconds of paper_regular (random weights, 20 detections) with one trunk and with two."""
    torch.manual_seed(0)
    image = torch.rand(3, size, round(size * 4 / 3))
    models = {}
    for trunk in ("shared", "own"):
        cfg = load_config("paper_regular", [f"model.mask.trunk={trunk}", "model.box.score_thresh=0.0",
                                            "model.box.detections_per_image=20", f"model.input.test_size={size}",
                                            f"model.input.max_size={round(size * 4 / 3)}"])
        models[trunk] = build_model(cfg).eval()
    times = {k: [] for k in models}
    with torch.no_grad():
        for model in models.values():
            model([image])  # warm-up
        for _ in range(rounds):  # rotated rounds: both see the same machine state
            for name, model in models.items():
                start = time.perf_counter()
                model([image])
                times[name].append(time.perf_counter() - start)
    one, two = statistics.median(times["shared"]), statistics.median(times["own"])
    return {"one_trunk_s": round(one, 3), "two_trunks_s": round(two, 3), "ratio": round(two / one, 3),
            "threads": torch.get_num_threads(), "size": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=800)
    ap.add_argument("--distill-iters", type=int, default=1500)
    ap.add_argument("--distill-minutes", type=float, default=15.0)
    ap.add_argument("--work", default="runs/mask_trunk")
    ap.add_argument("--a", help="model A (a checkpoint, e.g. `poseseg demo --seed 0`'s) instead of training it")
    ap.add_argument("--a-data", help="A's synthetic set (train/, val/, *.json)")
    ap.add_argument("--b", help="model B (e.g. `poseseg demo --seed 1`'s) instead of training it")
    ap.add_argument("--b-data", help="B's synthetic set")
    ap.add_argument("--no-latency", action="store_true", help="skip the one-vs-two-trunk latency")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sets = {"A_val": Path(args.a_data) if args.a_data else _synth(work, 0),
            "B_val": Path(args.b_data) if args.b_data else _synth(work, 1)}
    a = Path(args.a) if args.a else _train(work, sets["A_val"], "A", args.iters, seed=0)
    b = Path(args.b) if args.b else _train(work, sets["B_val"], "B", args.iters, seed=1)
    graft = _merge(a, b, work / "graft.pt", own_trunk=False)
    own = _merge(a, b, work / "own_trunk.pt", own_trunk=True)
    distilled = work / "distilled.pt"
    start = time.perf_counter()
    if not distilled.exists():
        distill(own, sets["A_val"] / "train", distilled, options=DistillOptions(
            iters=args.distill_iters, minutes=args.distill_minutes, output_dir=str(work / "distill_runs")))
    distill_minutes = (time.perf_counter() - start) / 60
    results = {"a": str(a), "b": str(b), "iters": args.iters if not args.a else None, "distill_iters": args.distill_iters, "distill_minutes": round(distill_minutes, 1),
               "threads": torch.get_num_threads()}
    teacher, _ = load_model(own)
    val_images = [CocoPeopleDataset(sets["A_val"] / "val.json", sets["A_val"] / "val", on_bad_image="raise")[i][0]
                  for i in range(60)]
    for name, path in (("A", a), ("B", b), ("graft", graft), ("own_trunk", own), ("distilled", distilled)):
        results[name] = _scores(path, sets)
        model, _ = load_model(path)
        if name in ("graft", "own_trunk", "distilled"):  # the same boxes as own_trunk: masks compare person by person
            iou, people = mask_iou_against_teacher(teacher, model, val_images)
            results[name]["mask_iou_vs_own_trunk_on_A_val"] = round(iou, 4)
            results[name]["people"] = people
        print(name, json.dumps(results[name]), flush=True)
        if name == "B":
            a_model, b_model = load_model(a)[0], load_model(b)[0]
            a_model.test_flip = b_model.test_flip = False
            results["B_at_A_boxes"] = _scores_of(DonorMasksAtBoxes(a_model, b_model), sets)
            print("B_at_A_boxes", json.dumps(results["B_at_A_boxes"]), flush=True)
    if not args.no_latency:
        results["latency_800px"] = _latency()
        print(json.dumps(results["latency_800px"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
