"""Peak memory (RSS) of one prediction on a large photo: box-by-box mask paste vs full-size paste.

    python benchmarks/predict_memory.py --width 4000 --height 3000

Each measurement runs in a fresh subprocess (ru_maxrss is a process-lifetime peak). The model is
the `tiny` preset with its seeded random initialisation, saved as a checkpoint: untrained, its box
head scores every proposal near 0.5, so it returns the full `detections_per_image` people, the worst
case for masks. `box` is what `Predictor.predict` does (masks pasted per box into one (N, H, W) bool
array); `full` is the model's full-size float paste (torchvision's, N x H x W float32) then a
threshold, which is what predict did before. `baseline` loads the model and the image only.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def make_checkpoint(path: Path) -> None:
    import torch

    import poseseg
    from poseseg.keypoint_schema import coco_person_schema
    from poseseg.weights.checkpoint_file import save_checkpoint

    torch.manual_seed(0)
    cfg = poseseg.load_config("tiny", ["train.device=cpu"])
    model = poseseg.build_model(cfg)
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(),
                           "keypoint_schema": coco_person_schema().to_dict()})


def child(mode: str, weights: str, width: int, height: int) -> dict:
    import numpy as np
    import torch

    from poseseg.predictor import Predictor, to_tensor_image

    torch.set_num_threads(1)
    predictor = Predictor(weights, device="cpu", score_thresh=0.0)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    people = 0
    with torch.no_grad():
        if mode == "box":
            people = len(predictor.predict(image)["scores"])
        elif mode == "full":
            pred = predictor.model([to_tensor_image(image)])[0]  # full-size float masks, as before
            people = int((pred["masks"][:, 0] >= 0.5).shape[0])
    return {"mode": mode, "people": people, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--modes", nargs="+", default=["baseline", "box", "full"])
    ap.add_argument("--child", nargs=2, metavar=("MODE", "WEIGHTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.width, args.height)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "tiny_random.pt"
        make_checkpoint(weights)
        rows = []
        for mode in args.modes:
            out = subprocess.run([sys.executable, __file__, "--width", str(args.width), "--height", str(args.height),
                                  "--child", mode, str(weights)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{mode:9s} {rows[-1]['people']:4d} people  peak RSS {rows[-1]['peak_rss_mb']:8.0f} MB", flush=True)
    mp = args.width * args.height / 1e6
    print(json.dumps({"image": f"{args.width}x{args.height} ({mp:.1f} MP)", "rows": rows}))


if __name__ == "__main__":
    main()
