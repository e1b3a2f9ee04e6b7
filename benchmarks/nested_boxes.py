"""Issue 23, "one box per person": nested duplicate boxes per val picture, and AP, by `model.box.nested_thresh`
and by the box NMS threshold (`model.box.nms_thresh`, 0.5 by default).

A nested duplicate is a detection (score >= 0.5) that lies at least 70 % inside a higher-scoring detection
and matches no other ground-truth person than that one does (best IoU >= 0.5 with another person would make
it a real neighbour): a person plus a part of the same person, which NMS keeps because their IoU is < 0.5.

    python benchmarks/nested_boxes.py --weights demo/seed0/model_final.pt --data demo/data0 --thresh 0 0.9 0.8 0.7 \
        --nms 0.4 0.3
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from poseseg.data.coco import CocoPeopleDataset
from poseseg.engine.evaluate import evaluate
from poseseg.modeling.postprocess import postprocess
from poseseg.ops.boxes import box_iou
from poseseg.weights.load import load_model


def count_nested(boxes: np.ndarray, gt: np.ndarray, inside: float = 0.7) -> int:
    """Nested duplicates among ``boxes`` (N, 4), sorted by score, against ground-truth boxes ``gt`` (G, 4)."""
    match = box_iou(boxes, gt) if len(gt) else np.zeros((len(boxes), 0))
    best = [int(m.argmax()) if m.size and m.max() >= 0.5 else -1 for m in match]
    count = 0
    for i in range(1, len(boxes)):
        x0, y0 = np.maximum(boxes[:i, :2], boxes[i, :2]).T
        x1, y1 = np.minimum(boxes[:i, 2:], boxes[i, 2:]).T
        share = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None) / max(np.prod(boxes[i, 2:] - boxes[i, :2]), 1e-6)
        hosts = np.where(share >= inside)[0]
        if len(hosts) and (best[i] == -1 or any(best[i] == best[j] for j in hosts)):
            count += 1
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True, help="a synthetic set folder (val.json, val/)")
    ap.add_argument("--thresh", type=float, nargs="+", default=[0.0, 0.9, 0.8, 0.7])
    ap.add_argument("--nms", type=float, nargs="*", default=[],
                    help="also these box NMS thresholds (with nested_thresh 0)")
    ap.add_argument("--json")
    args = ap.parse_args()
    data = Path(args.data)
    dataset = CocoPeopleDataset(data / "val.json", data / "val", on_bad_image="raise")
    results = {}
    settings = [(str(t), [f"model.box.nested_thresh={t}"]) for t in args.thresh]
    settings += [(f"nms {t:g}", [f"model.box.nms_thresh={t}"]) for t in args.nms]
    for thresh, overrides in settings:
        model, _ = load_model(args.weights, overrides=overrides)
        nested = people = 0
        for i in range(len(dataset)):
            image, target = dataset[i]
            pred = postprocess(model.predict_rois([image]), masks="boxes", score_thresh=0.5)[0]
            keep = target["iscrowd"] == 0 if "iscrowd" in target else slice(None)
            nested += count_nested(pred["boxes"].numpy(), target["boxes"][keep].numpy())
            people += len(pred["boxes"])
        metrics = evaluate(model, dataset, device=torch.device("cpu"))
        results[thresh] = {"nested_per_image": round(nested / len(dataset), 3), "nested": nested,
                                "detections": people, **{t: round(m["AP"], 4) for t, m in metrics.items()}}
        print(thresh, json.dumps(results[thresh]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
