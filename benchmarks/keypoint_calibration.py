"""Are keypoint scores probabilities? Expected calibration error before and after `poseseg calibrate`.

Fits the keypoint score calibration (isotonic and Platt) of a trained model on a freshly drawn
synthetic split, then measures on the demo's val split and on a shifted set (other people sizes and
poses): ECE in 15 bins (``engine.calibrate``), a reliability diagram (PNG), and keypoint AP with the
instance score as it is (box score) and combined with the calibrated keypoint probabilities.

    python benchmarks/keypoint_calibration.py --weights runs/demo/model_final.pt --data-dir data/demo \
        --json calibration.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from poseseg.data.coco import CocoPeopleDataset
from poseseg.data.synth import generate_dataset
from poseseg.engine.calibrate import (apply_calibration, expected_calibration_error, fit_calibration,
                                      keypoint_outcomes, match_detections, pair_with_truth, reliability_bins)
from poseseg.engine.evaluate import predict_records, score_results
from poseseg.weights.load import load_model

# how the instance score (COCO's ranking) may combine the box score b with the K calibrated keypoint
# probabilities p of a person
RESCORE = {
    "box": lambda b, p: b,
    "box*mean_raw": None,  # the raw (uncalibrated) keypoint scores' mean
    "box*mean_p": lambda b, p: b * p.mean(),
    "sqrt(box*mean_p)": lambda b, p: np.sqrt(b * p.mean()),
    "box*mean_top_half_p": lambda b, p: b * np.sort(p)[len(p) // 2:].mean(),
}


def visibility_accuracy(pairs: list[tuple[list[dict], dict]], min_box_score: float = 0.5) -> dict[str, float]:
    """Per ground-truth flag (0 not labelled, 1 occluded, 2 visible): the share of keypoints of matched
    detections (box IoU >= 0.5 with a person) whose predicted flag equals it."""
    hits, counts = np.zeros(3), np.zeros(3)
    for anns, result in pairs:
        people = [a for a in anns if not a.get("iscrowd")]
        for i, person in match_detections(people, result, min_box_score=min_box_score):
            if person is None:
                continue
            flags = result["keypoints"][i][:, 2].astype(int)  # (K,) predicted
            truth = np.asarray(person["keypoints"]).reshape(-1, 3)[:, 2].astype(int)
            for v in range(3):
                counts[v] += (truth == v).sum()
                hits[v] += ((truth == v) & (flags == v)).sum()
    return {f"v={v}": round(float(hits[v] / counts[v]), 4) if counts[v] else None for v in range(3)} | {
        "keypoints": int(counts.sum()), "overall": round(float(hits.sum() / max(counts.sum(), 1)), 4)}


def diagram(curves: dict[str, list[tuple[float, float, int]]], path: Path, size: int = 420) -> None:
    """Reliability diagram: fraction right against mean score per bin, one polyline per curve."""
    pad = 40
    img = Image.new("RGB", (size + 2 * pad, size + 2 * pad + 20 * len(curves)), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad, pad + size, pad + size], outline="black")
    d.line([pad, pad + size, pad + size, pad], fill=(160, 160, 160))  # perfect calibration
    d.text((pad, pad + size + 6), "mean keypoint score in bin ->  (y: fraction within OKS-ks 0.5)", fill="black")
    colors = [(220, 50, 47), (38, 139, 210), (133, 153, 0), (211, 54, 130), (181, 137, 0), (42, 161, 152)]
    for i, (name, bins) in enumerate(curves.items()):
        pts = [(pad + c * size, pad + size - a * size) for c, a, _ in bins]
        if len(pts) > 1:
            d.line(pts, fill=colors[i % len(colors)], width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colors[i % len(colors)])
        d.text((pad, pad + size + 24 + 18 * i), name, fill=colors[i % len(colors)])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data-dir", required=True, help="the demo's data folder (its val split is measured)")
    ap.add_argument("--work", default="runs/keypoint_calibration")
    ap.add_argument("--calib-images", type=int, default=150, help="pictures drawn for the fit (not val)")
    ap.add_argument("--shifted-images", type=int, default=60)
    ap.add_argument("--people-scale", type=float, default=1.35)
    ap.add_argument("--pose-spread", type=float, default=1.4)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--png", default="benchmarks/results/keypoint_reliability.png")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    work = Path(args.work)
    splits = {"calib": work / f"calib-seed{args.seed}",
              "shifted": work / f"shifted-seed{args.seed + 1}-scale{args.people_scale:g}-spread{args.pose_spread:g}"}
    if not (splits["calib"] / "val.json").exists():
        generate_dataset(splits["calib"], num_train=0, num_val=args.calib_images, seed=args.seed, workers=2)
    if not (splits["shifted"] / "val.json").exists():
        generate_dataset(splits["shifted"], num_train=0, num_val=args.shifted_images, seed=args.seed + 1, workers=2,
                         people_scale=args.people_scale, pose_spread=args.pose_spread)
    folders = {"calib": splits["calib"], "val": Path(args.data_dir), "shifted": splits["shifted"]}

    model, cfg = load_model(args.weights)
    sigmas = (model.keypoint_schema or {}).get("sigmas") or cfg.data.oks_sigmas
    device = torch.device("cpu")
    raw, records, datasets, visibility = {}, {}, {}, {}
    for name, folder in folders.items():
        ds = CocoPeopleDataset(folder / "val.json", folder / "val", keep_empty=True, load_masks=False,
                               on_bad_image="raise", oks_sigmas=sigmas)
        datasets[name] = ds
        records[name], unreadable = predict_records(model, ds, device=device)  # one prediction pass per split
        pairs = pair_with_truth(records[name], ds, unreadable)
        raw[name] = keypoint_outcomes(pairs, sigmas)
        if model.keypoint_head.visibility_fc is not None:
            visibility[name] = visibility_accuracy(pairs)
        print(f"{name}: {len(raw[name][0])} keypoints of detected people, {int(raw[name][1].sum())} right", flush=True)

    fits = {m: fit_calibration(*raw["calib"], method=m) for m in ("isotonic", "platt")}
    table = {"fit_on": f"{args.calib_images} pictures, seed {args.seed}", "ece_15_bins": {}, "keypoint_ap": {}}
    for name in ("val", "shifted"):
        scores, right = raw[name]
        row = {"raw": expected_calibration_error(scores, right)}
        for m, (xs, ys) in fits.items():
            row[m] = expected_calibration_error(apply_calibration(scores, xs, ys), right)
        table["ece_15_bins"][name] = {k: round(v, 4) for k, v in row.items()}
        # COCO keypoint AP with the instance score rescored from the calibrated keypoint probabilities
        xs, ys = fits["platt"]  # the default of `poseseg calibrate`
        aps = {}
        for rule, combine in RESCORE.items():
            dets = []
            for r in records[name]:
                raw_p = np.asarray(r["keypoint_scores"])
                score = r["score"] * raw_p.mean() if combine is None else combine(r["score"], apply_calibration(raw_p, xs, ys))
                dets.append({**r, "score": float(score)})
            report = score_results(datasets[name].json_path, {"keypoints": dets}, category_id=1,
                                   iou_types=["keypoints"], sigmas=sigmas,
                                   image_ids=[int(i) for i in datasets[name].image_ids], verbose=False)
            aps[rule] = round(report.metrics["keypoints"]["AP"], 4)
        table["keypoint_ap"][name] = aps
        if name in visibility:
            table.setdefault("visibility_accuracy", {})[name] = visibility[name]
        print(name, table["ece_15_bins"][name], aps, visibility.get(name), flush=True)
    xs, ys = fits["platt"]  # the default of `poseseg calibrate`
    diagram({"val, raw scores": reliability_bins(*raw["val"]),
             "val, Platt": reliability_bins(apply_calibration(raw["val"][0], xs, ys), raw["val"][1]),
             "shifted, raw scores": reliability_bins(*raw["shifted"]),
             "shifted, Platt": reliability_bins(apply_calibration(raw["shifted"][0], xs, ys), raw["shifted"][1])},
            Path(args.png))
    print(json.dumps(table, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
