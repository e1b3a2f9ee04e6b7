"""A checkpoint and its ONNX export, through `Predictor`, on a folder of pictures: do users get the same people?

Reports box differences (px), mask IoU (mean and worst, per matched person) and keypoint differences (px).
Issue 21 measured, before one post-processing path: masks mean IoU 0.936, worst 0.793; keypoints up to 1.18 px.

    PYTHONPATH=src python benchmarks/onnx_parity.py --weights runs/demo/model_final.pt --images data/synth/val --num 20
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--num", type=int, default=20)
    parser.add_argument("--score-thresh", type=float, default=0.5)
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()

    from poseseg.export.onnx_export import export_checkpoint
    from poseseg.predictor import Predictor

    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg"))[: args.num]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_checkpoint(args.weights, onnx_path, overrides=["model.test_flip=false"])
        torch_pred = Predictor(args.weights, device="cpu", score_thresh=args.score_thresh,
                               overrides=["model.test_flip=false"])
        onnx_pred = Predictor(onnx_path, score_thresh=args.score_thresh)
        box_diff, kp_diff, ious, people, unmatched = 0.0, 0.0, [], 0, 0
        for path in images:
            a, b = torch_pred.predict(path), onnx_pred.predict(path)
            if len(a["boxes"]) != len(b["boxes"]):
                unmatched += abs(len(a["boxes"]) - len(b["boxes"]))
                continue
            people += len(a["boxes"])
            if len(a["boxes"]):
                box_diff = max(box_diff, float(np.abs(a["boxes"] - b["boxes"]).max()))
                kp_diff = max(kp_diff, float(np.abs(a["keypoints"][..., :2] - b["keypoints"][..., :2]).max()))
                ious += [mask_iou(x, y) for x, y in zip(a["masks"], b["masks"])]
    result = {"images": len(images), "people": people, "unmatched": unmatched, "box_max_px": box_diff,
              "mask_iou_mean": float(np.mean(ious)) if ious else None,
              "mask_iou_min": float(np.min(ious)) if ious else None, "keypoint_max_px": kp_diff}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
