"""What each CPU runtime costs in accuracy (issue 25): the same model in PyTorch, ONNX Runtime fp32/int8 and
OpenVINO fp32/int8.

    PYTHONPATH=src python benchmarks/runtime_accuracy.py --weights demo/seed0/model_final.pt --data demo/data0 \\
        --json benchmarks/results/runtime_accuracy.json

1. The demo's ``tiny`` model (``--weights``, trained on the synthetic set ``--data``): COCO AP (bbox / segm /
   keypoints) on the set's val split under each runtime. int8 is calibrated on the set's *training*
   pictures (``poseseg export --quantize int8 --calibrate DATA/train``). PyTorch runs without flip
   test-time augmentation, as the exported graph does.
2. ``paper_regular`` (random but fixed weights, ``torch.manual_seed(0)``, 800 px) against its own PyTorch fp32
   outputs on the COCO sample's photo and ``--pictures`` val pictures: the share of people found again
   and, over the pairs, box IoU, mask IoU and keypoint distance (``poseseg.export.agreement.compare``,
   every detection scoring >= ``--min-score``). Random weights make near-tied scores, so this reads how
   far each runtime moves the numbers, not accuracy.
"""
from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from pathlib import Path

import torch

import poseseg
from latency import PHOTO, build  # benchmarks/latency.py
from machine import cpu_model  # benchmarks/machine.py
from poseseg.data.coco import CocoPeopleDataset
from poseseg.engine.evaluate import evaluate
from poseseg.export.agreement import compare
from poseseg.predictor import to_tensor_image
from poseseg.weights.load import load_model
from runtimes import RUNTIMES, calibration_folder, exported_runners  # benchmarks/runtimes.py


def demo_model_ap(weights: Path, data: Path, work: Path, threads: int, notes: list[str]) -> dict:
    model, _ = load_model(weights)
    model.test_flip = False
    runners = {"torch": model, **exported_runners(model, "demo", work, data / "train", threads, notes,
                                                        calibration_count=None)}
    val = CocoPeopleDataset(data / "val.json", data / "val", on_bad_image="raise")
    table = {}
    for runtime, runner in runners.items():
        metrics = evaluate(runner, val, device=torch.device("cpu"))
        table[runtime] = {task: round(stats["AP"], 4) for task, stats in metrics.items()}
        table[runtime]["segm_AP75"] = round(metrics["segm"]["AP75"], 4) if "segm" in metrics else None
        print(f"demo model, {runtime}: {json.dumps(table[runtime])}", flush=True)
    return table


def paper_regular_agreement(data: Path, pictures: int, work: Path, threads: int, min_score: float,
                            notes: list[str]) -> dict:
    model, _ = build("ours", 20, 800)  # paper_regular, 20 detections, 800 px
    val = CocoPeopleDataset(data / "val.json", data / "val", on_bad_image="raise")
    images = [to_tensor_image(PHOTO)] + [val[i][0] for i in range(pictures)]
    calib = calibration_folder(work / "calib_regular", images[:2])
    runners = exported_runners(model, "paper_regular", work, calib, threads, notes)
    table = {}
    for runtime, runner in runners.items():
        # random weights score keypoints low: compare them all (min_keypoint_score=0), not only confident ones
        table[runtime] = compare(model, runner, images, min_score=min_score, min_keypoint_score=0.0).to_dict()
        print(f"paper_regular, {runtime} vs PyTorch fp32: {json.dumps(table[runtime])}", flush=True)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="the demo's tiny checkpoint")
    ap.add_argument("--data", required=True, help="its synthetic set (train/, val/, train.json, val.json)")
    ap.add_argument("--pictures", type=int, default=5, help="val pictures for the paper_regular agreement")
    ap.add_argument("--min-score", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-demo", action="store_true", help="only the paper_regular agreement")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        result = {"demo_model_ap": {} if args.skip_demo else demo_model_ap(Path(args.weights), Path(args.data),
                                                                           Path(tmp), args.threads, notes),
                  "paper_regular_vs_fp32": paper_regular_agreement(Path(args.data), args.pictures, Path(tmp),
                                                                   args.threads, args.min_score, notes)}
    fp32 = result["demo_model_ap"].get("torch", {})
    result["ap_loss_vs_torch"] = {r: {t: round(fp32[t] - v, 4) for t, v in row.items() if v is not None}
                                  for r, row in result["demo_model_ap"].items() if r != "torch"}
    result.update(notes=notes, runtimes=["torch", *RUNTIMES], weights=args.weights, data=args.data,
                  threads=args.threads, torch=torch.__version__, poseseg=poseseg.__version__, cpu=cpu_model(),
                  date=datetime.datetime.now().isoformat(timespec="seconds"))
    print(json.dumps(result["ap_loss_vs_torch"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
