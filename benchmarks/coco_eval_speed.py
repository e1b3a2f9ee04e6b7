"""COCO evaluation time: faster-coco-eval vs pycocotools on the same synthetic val set and predictions.

    python benchmarks/coco_eval_speed.py --images 1000 --size 320

Renders ``--images`` synthetic pictures (annotations only, no JPEG written), jitters their ground
truth into predictions (tests/eval_helpers.py: AP strictly between 0 and 1, false positives
included), then times ``score_results`` with each backend for bbox, segm and keypoints, and checks
that both give the same tables (max abs difference printed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from eval_helpers import noisy_predictions  # noqa: E402
from poseseg.keypoint_schema import coco_person_category  # noqa: E402
from poseseg.data.synth import image_rng, person_to_coco, render_image  # noqa: E402
from poseseg.engine.evaluate import score_results  # noqa: E402

IOU_TYPES = ["bbox", "segm", "keypoints"]


def synthetic_val_set(num_images: int, size: int, seed: int = 0) -> dict:
    images, anns = [], []
    for i in range(num_images):
        img, people = render_image(image_rng(seed, "val", i), (size, size))
        images.append({"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "height": img.shape[0], "width": img.shape[1]})
        for p in people:
            anns.append({**person_to_coco(p, len(anns) + 1, i + 1)})
    return {"images": images, "annotations": anns, "categories": [coco_person_category()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per backend (the best is kept)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = synthetic_val_set(args.images, args.size)
    preds = noisy_predictions(data, seed=1)
    print(f"{len(data['images'])} images, {len(data['annotations'])} people, "
          f"{len(preds['bbox'])} predictions per type (made in {time.perf_counter() - t0:.1f} s)")
    sigmas = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
              0.087, 0.087, 0.089, 0.089]
    rows, tables = {}, {}
    for backend in ("pycocotools", "faster-coco-eval"):
        for iou_type in IOU_TYPES:
            best = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                report = score_results(data, preds, category_id=1, iou_types=[iou_type], sigmas=sigmas,
                                       backend=backend)
                best = min(best, time.perf_counter() - t)
            rows[(backend, iou_type)] = best
            tables[(backend, iou_type)] = report.metrics[iou_type]
    diff = max(abs((tables[("pycocotools", t)][n] or 0) - (tables[("faster-coco-eval", t)][n] or 0))
               for t in IOU_TYPES for n in tables[("pycocotools", t)])
    print(f"{'type':10s}{'pycocotools s':>15s}{'faster s':>10s}{'speed-up':>10s}{'AP':>8s}")
    for t in IOU_TYPES:
        slow, fast = rows[("pycocotools", t)], rows[("faster-coco-eval", t)]
        print(f"{t:10s}{slow:15.3f}{fast:10.3f}{slow / fast:9.2f}x{100 * tables[('pycocotools', t)]['AP']:8.1f}")
    print(f"max |difference| over every AP cell: {diff:.2e}")
    print(json.dumps({"images": args.images, "people": len(data["annotations"]),
                      "seconds": {f"{b}/{t}": round(v, 3) for (b, t), v in rows.items()}, "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
