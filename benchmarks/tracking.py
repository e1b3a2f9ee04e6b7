"""Tracking on a synthetic walking sequence: MOTA / IDF1 / ID switches (motmetrics) and keypoint jitter (issue 16).

    python benchmarks/tracking.py --json tracking.json                     # trains tiny (9-minute budget) first
    python benchmarks/tracking.py --weights runs/demo/model_final.pt --json tracking.json

1. The model: ``--weights``, or the ``tiny`` preset trained from scratch on the synthetic stills by
   ``poseseg demo``'s budgeted training (``--train-minutes``; evaluation and overlays included).
2. The sequence: ``poseseg synth --video`` (``--frames`` frames, ``--people`` figures walking,
   turning, crossing and occluding each other; 320 x 240 at 15 fps), a seed the model never saw.
3. One pass of ``Predictor.track`` over the video (decode + detection + tracking): its frames/s is
   ``fps``. The detections of that pass are kept and replayed (the detector is deterministic) for
   the naive baseline and for ``--smooth``, so all three see exactly the same detections.
4. The naive baseline: each frame's detections above the score threshold inherit the ID of the
   previous frame's detection they overlap most (Hungarian on IoU >= 0.3), else get a new ID.
5. MOTA, IDF1 and ID switches by ``motmetrics`` (boxes matched at IoU >= 0.5) against the
   ground-truth tracks of the sequence.
6. Keypoint jitter: each ground-truth person is matched per frame to a tracked detection (IoU
   >= 0.5, Hungarian); over every three consecutive frames where it is matched, the mean of
   |k[t+1] - 2 k[t] + k[t-1]| (pixels) over its labelled keypoints; the same triples give the
   jitter of the smoothed keypoints and of the ground truth itself (the walk's own bob and turns).

``--detector noisy-gt`` replaces the model by the ground truth with known noise (box and keypoint
jitter of 3 % of the person's height, 10 % of people missed per frame, scores uniform in
[0.3, 1], about one false positive every two frames): the tracker's own quality, whatever the
detector; ``fps`` is then the tracker's alone.

``--json FILE`` writes {"idf1", "idf1_baseline", "mota", "id_switches", "id_switches_baseline",
"jitter_px", "jitter_smoothed_px", "jitter_gt_px", "fps"} (+ a "details" entry is printed, not written).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import poseseg
from poseseg.data.synth_video import generate_video
from poseseg.ops.boxes import box_iou
from poseseg.track.association import assign
from poseseg.track.pipeline import track_frames
from poseseg.track.sources import open_source

MATCH_IOU = 0.5  # box IoU at which a hypothesis counts as the ground-truth person (MOT convention)
BASELINE_IOU = 0.3


def train_model(work: Path, minutes: float) -> Path:
    from poseseg.demo import run_demo

    result = run_demo(minutes=minutes, out=work / "train", data_dir=work / "synth", num_train=600, num_val=30)
    return Path(result["run_dir"]) / "model_final.pt"


def ground_truth(coco: dict) -> dict[int, list[dict]]:
    """frame -> [{"id", "box" xyxy, "keypoints" (17, 3)}]."""
    frame_of = {im["id"]: im["frame"] for im in coco["images"]}
    out: dict[int, list[dict]] = defaultdict(list)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        out[frame_of[a["image_id"]]].append({"id": a["track_id"], "box": np.array([x, y, x + w, y + h]),
                                             "keypoints": np.asarray(a["keypoints"], float).reshape(-1, 3)})
    return out


def naive_iou_tracks(detections: list[dict], high: float) -> list[dict]:
    """The baseline: frame-to-frame IoU matching of the confident detections, no motion model, no memory."""
    out, previous, next_id = [], None, 1
    for det in detections:
        keep = det["scores"] >= high
        boxes = det["boxes"][keep]
        ids = np.zeros(len(boxes), dtype=np.int64)
        if previous is not None:
            pairs, _, _ = assign(box_iou(previous["boxes"], boxes), BASELINE_IOU)
            for pi, di in pairs:
                ids[di] = previous["track_ids"][pi]
        for i in np.nonzero(ids == 0)[0]:
            ids[i], next_id = next_id, next_id + 1
        previous = {"boxes": boxes, "track_ids": ids}
        out.append({"boxes": boxes, "track_ids": ids})
    return out


def mot_metrics(gt: dict[int, list[dict]], hyps: list[dict], frames: list[int]) -> dict:
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for f, hyp in zip(frames, hyps):
        g = gt.get(f, [])
        # motmetrics' iou_matrix (1 - IoU, NaN = may not match) calls np.asfarray, gone in NumPy 2: same matrix here
        distance = 1.0 - box_iou(np.array([p["box"] for p in g]).reshape(-1, 4), hyp["boxes"])
        distance[distance > 1.0 - MATCH_IOU] = np.nan
        acc.update([p["id"] for p in g], hyp["track_ids"].tolist(), distance)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches", "num_false_positives",
                                                        "num_misses", "num_unique_objects"], name="seq")
    return {k: float(summary[k].iloc[0]) for k in summary.columns}


def _accel(track: dict[int, np.ndarray], triples: list[int]) -> list[float]:
    """Per keypoint labelled in all three frames (NaN elsewhere): |k[t+1] - 2 k[t] + k[t-1]|."""
    out = []
    for t in triples:
        a = np.linalg.norm(track[t + 1] - 2 * track[t] + track[t - 1], axis=-1)  # (K,)
        out += a[np.isfinite(a)].tolist()
    return out


def keypoint_jitter(gt: dict[int, list[dict]], tracked: list[dict], smoothed: list[dict], frames: list[int]) -> dict:
    """Mean keypoint acceleration (px) of raw tracked, smoothed and ground-truth keypoints on the same triples."""
    per_person = defaultdict(lambda: ({}, {}, {}))  # gt id -> (raw, smoothed, gt) frame -> (k, 2) labelled kps
    for f, raw, smooth in zip(frames, tracked, smoothed):
        g = gt.get(f, [])
        if not g or not len(raw["boxes"]):
            continue
        pairs, _, _ = assign(box_iou(np.stack([p["box"] for p in g]), raw["boxes"]), MATCH_IOU)
        for gi, hi in pairs:
            person = g[gi]
            labelled = person["keypoints"][:, 2] > 0
            store = per_person[person["id"]]
            store[0][f] = np.where(labelled[:, None], raw["keypoints"][hi, :, :2], np.nan)
            store[1][f] = np.where(labelled[:, None], smooth["keypoints"][hi, :, :2], np.nan)
            store[2][f] = np.where(labelled[:, None], person["keypoints"][:, :2], np.nan)
    values = ([], [], [])
    for raw, smooth, truth in per_person.values():
        triples = [t for t in raw if t - 1 in raw and t + 1 in raw]
        for out, track in zip(values, (raw, smooth, truth)):
            out += _accel(track, triples)
    return {name: float(np.mean(v)) if v else float("nan")
            for name, v in zip(("jitter_px", "jitter_smoothed_px", "jitter_gt_px"), values)}


def noisy_ground_truth(gt: dict[int, list[dict]], frames: int, seed: int = 0) -> list[dict]:
    """Per frame, detections made from the ground truth with the noise described in the module docstring."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(frames):
        boxes, scores, kps = [], [], []
        for person in gt.get(f, []):
            if rng.random() < 0.1:
                continue
            noise = 0.03 * (person["box"][3] - person["box"][1])
            boxes.append(person["box"] + rng.normal(0, noise, 4))
            scores.append(rng.uniform(0.3, 1.0))
            kps.append(person["keypoints"][:, :2] + rng.normal(0, noise, (len(person["keypoints"]), 2)))
        for _ in range(rng.poisson(0.5)):
            x, y = rng.uniform(0, 280), rng.uniform(0, 180)
            boxes.append(np.array([x, y, x + 30, y + 60]))
            scores.append(rng.uniform(0.1, 0.7))
            kps.append(np.column_stack([rng.uniform(x, x + 30, 17), rng.uniform(y, y + 60, 17)]))
        n = len(boxes)
        kp = np.concatenate([np.array(kps).reshape(n, -1, 2), np.ones((n, 17, 1))], 2) if n else np.zeros((0, 17, 3))
        out.append({"boxes": np.array(boxes).reshape(-1, 4), "scores": np.array(scores), "keypoints": kp,
                    "keypoint_scores": np.ones(kp.shape[:2])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="a poseseg checkpoint; default: train tiny for --train-minutes")
    ap.add_argument("--detector", choices=["model", "noisy-gt"], default="model",
                    help="noisy-gt: the ground truth with known noise instead of a model (the tracker alone)")
    ap.add_argument("--train-minutes", type=float, default=9.0)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--score-thresh", type=float, default=0.5, help="the high threshold (and the baseline's)")
    ap.add_argument("--work", help="folder for the dataset, training run and sequence (default: a temp folder)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    work = Path(args.work or tempfile.mkdtemp(prefix="poseseg_tracking_"))
    start = time.perf_counter()

    weights = None
    if args.detector == "model":
        weights = Path(args.weights) if args.weights else train_model(work, args.train_minutes)
    seq = generate_video(work / "sequence", frames=args.frames, people=args.people, seed=args.seed,
                         size=(320, 240), fps=15.0)
    gt = ground_truth(json.loads(Path(seq["json"]).read_text()))
    recorded: list[dict] = []
    if weights is not None:
        predictor = poseseg.Predictor(weights, device="cpu", score_thresh=args.score_thresh)
        track_config = predictor.cfg.track
        sigmas = np.asarray(predictor.schema["sigmas"]) if (predictor.schema or {}).get("sigmas") else None

        def detect_and_record(images):
            dets = predictor.predict_batch(images, score_thresh=min(track_config.low_score, args.score_thresh))
            recorded.extend(dets)
            return dets
    else:
        track_config, sigmas = poseseg.load_config("tiny").track, None
        simulated = iter(noisy_ground_truth(gt, args.frames))

        def detect_and_record(images):
            dets = [next(simulated) for _ in images]
            recorded.extend(dets)
            return dets

    t0, cpu0 = time.perf_counter(), time.process_time()
    source = open_source(seq["video"])
    common = dict(fps=source.fps, config=track_config, high_score=args.score_thresh, sigmas=sigmas)
    tracked = list(track_frames(detect_and_record, source, **common))
    fps = len(tracked) / (time.perf_counter() - t0)
    cpu_fps = len(tracked) / (time.process_time() - cpu0)  # frames per CPU second: robust to other jobs
    frames = [r["frame"] for r in tracked]

    replay = iter(recorded)
    smoothed = list(track_frames(lambda images: [next(replay) for _ in images], open_source(seq["video"]),
                                 smooth=True, **common))
    baseline = naive_iou_tracks(recorded, args.score_thresh)
    ours, naive = mot_metrics(gt, tracked, frames), mot_metrics(gt, baseline, frames)
    jitter = keypoint_jitter(gt, tracked, smoothed, frames)
    result = {"idf1": ours["idf1"], "idf1_baseline": naive["idf1"], "mota": ours["mota"],
              "id_switches": int(ours["num_switches"]), "id_switches_baseline": int(naive["num_switches"]),
              **jitter, "fps": fps}
    details = {"ours": ours, "baseline": naive, "detector": args.detector, "weights": str(weights), "frames": len(frames), "cpu_fps": cpu_fps,
               "people": args.people, "seed": args.seed, "threads": torch.get_num_threads(),
               "minutes": (time.perf_counter() - start) / 60}
    print(json.dumps(result, indent=1))
    print("details:", json.dumps(details))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
