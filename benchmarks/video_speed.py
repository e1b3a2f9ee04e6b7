"""Frames per second of the video path (decode + model + tracker) for ``tiny`` and ``paper_regular`` (issue 16).

    python benchmarks/video_speed.py                      # both presets at 320 and 640 px, 10 timed frames each
    python benchmarks/video_speed.py --frames 20 --json video_speed.json

``--json F`` writes ``{"rows": [...], "tiny_320_fps": wall-clock frames/s of tiny at 320 px, tracking on,
"paper_regular_640_fps": ..., "threads": N}`` (the keyed rates are present when those rows were run; PyTorch's;
``--runtimes torch ov_int8`` adds ``tiny_320_fps_ov_int8`` etc. for exported files in ONNX Runtime / OpenVINO).

Random but fixed weights (``torch.manual_seed(0)``): speed does not depend on training, except
through the number of people found, so every model returns exactly ``--people`` detections per
frame (box score threshold 0, ``model.box.detections_per_image`` = N) and the mask and keypoint
heads do the work of a scene with that many people. Frames come from a 640 x 480 synthetic
walking sequence decoded by PyAV; the model resizes the shorter side to ``--sizes`` (its
``model.input.test_size``). Timed: ``poseseg.track.pipeline.track_frames`` over the frames after
``--warmup`` frames, the same call ``Predictor.track`` makes (overlay drawing and video writing
excluded). Threads: ``OMP_NUM_THREADS`` (default: torch's).

Two rates per model: ``fps`` from wall-clock time, and ``cpu_fps`` from the process's CPU time
(``time.process_time``). On a machine shared with other jobs the wall clock counts their time
too; with one thread, CPU time is close to what a quiet core would take.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import poseseg
from poseseg.data.synth_video import generate_video
from poseseg.predictor import to_numpy, to_tensor_image
from poseseg.track.pipeline import track_frames
from poseseg.track.sources import open_source
from runtimes import RUNTIMES, calibration_folder, exported_runners  # benchmarks/runtimes.py


def frames_per_second(preset: str, size: int, video: str, *, frames: int, warmup: int,
                      people: int, runtime: str = "torch") -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU second) after ``warmup`` frames. ``runtime``: torch, or
    one of ``benchmarks/runtimes.py``'s exported runtimes (ort, ort_int8, ov, ov_int8: int8 calibrated on
    the video's first frames)."""
    cfg = poseseg.load_config(preset, [f"model.input.test_size={size}", f"model.input.max_size={size * 2}",
                                       "model.box.score_thresh=0.0", f"model.box.detections_per_image={people}"])
    torch.manual_seed(0)
    model = poseseg.build_model(cfg).eval()
    if runtime != "torch":
        work = Path(tempfile.mkdtemp(prefix="poseseg_video_runtime_"))
        first = [to_tensor_image(frame.image) for frame in open_source(video, max_frames=2)]  # (3, H, W) each
        pictures = calibration_folder(work / "calib", first)
        model = exported_runners(model, preset, work, pictures, torch.get_num_threads(), [], runtimes=(runtime,))[runtime]

    @torch.inference_mode()
    def detect(images):
        preds = model([to_tensor_image(im) for im in images])
        assert all(len(p["boxes"]) == people for p in preds), "a model returned a different number of people"
        return [to_numpy(p) for p in preds]

    source = open_source(video, max_frames=warmup + frames)
    wall, cpu = [], []
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in track_frames(detect, source, fps=source.fps, config=cfg.track, high_score=0.0):
        now, now_cpu = time.perf_counter(), time.process_time()
        wall.append(now - start)
        cpu.append(now_cpu - start_cpu)
        start, start_cpu = now, now_cpu
    return frames / sum(wall[warmup:]), frames / sum(cpu[warmup:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "paper_regular"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--runtimes", nargs="+", default=["torch"], choices=["torch", *RUNTIMES],
                    help="torch, and exported files in ONNX Runtime / OpenVINO, fp32 / int8 (benchmarks/runtimes.py)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    work = Path(tempfile.mkdtemp(prefix="poseseg_video_speed_"))
    video = generate_video(work, frames=args.frames + args.warmup, people=args.people, seed=0, size=(640, 480))["video"]
    rows = []
    for runtime in args.runtimes:
        for preset in args.presets:
            for size in args.sizes:
                fps, cpu_fps = frames_per_second(preset, size, video, frames=args.frames, warmup=args.warmup,
                                                 people=args.people, runtime=runtime)
                rows.append({"runtime": runtime, "preset": preset, "size": size, "fps": round(fps, 3),
                             "cpu_fps": round(cpu_fps, 3), "threads": torch.get_num_threads()})
                print(f"{runtime:8s} {preset:15s} {size:4d} px  {fps:6.2f} frames/s wall  {cpu_fps:6.2f} frames per "
                      f"CPU second  ({torch.get_num_threads()} threads)", flush=True)
    if args.json:
        # the keys: PyTorch's rate (the first runtime run when torch is not); other runtimes suffixed
        first = "torch" if "torch" in args.runtimes else args.runtimes[0]
        summary = {f"{r['preset']}_{r['size']}_fps" + ("" if r["runtime"] == first else f"_{r['runtime']}"): r["fps"]
                   for r in rows if (r["preset"], r["size"]) in (("tiny", 320), ("paper_regular", 640))}
        Path(args.json).write_text(json.dumps({"rows": rows, **summary, "threads": torch.get_num_threads(),
                                               "people": args.people, "frames": args.frames}, indent=1) + "\n")


if __name__ == "__main__":
    main()
