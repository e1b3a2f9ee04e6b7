"""``poseseg predict``: images, folders, globs, videos or .txt lists -> overlays + COCO results JSON.

An unreadable file is skipped with a warning and listed at the end; the run fails only when
nothing at all could be read.
"""
from __future__ import annotations

import glob
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


@dataclass
class PredictReport:
    out_dir: Path
    images: int = 0
    frames: int = 0
    people: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def expand_sources(sources: list[str]) -> list[Path]:
    """Files, folders (their images and videos, sorted), globs and .txt lists of paths."""
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.suffix.lower() == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            out += expand_sources([str(p.parent / ln) if not Path(ln).is_absolute() else ln for ln in lines])
        elif p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
        elif any(ch in src for ch in "*?["):
            out += sorted(Path(m) for m in glob.glob(src, recursive=True) if Path(m).is_file())
        else:
            out.append(p)  # may not exist: reported as unreadable, not a crash
    return out


def run_predict(weights: str, sources: list[str], *, out: str | None = None, config: str | None = None,
                score_thresh: float = 0.5, device: str = "auto", batch_size: int = 1, show_offsets: bool = False,
                overrides: list[str] | None = None) -> PredictReport:
    from tqdm import tqdm

    from poseseg.engine.run_log import output_dir
    from poseseg.predictor import Predictor

    predictor = Predictor(weights, config=config, device=device, score_thresh=score_thresh, overrides=overrides)
    out_dir = output_dir(out, "runs/predict")  # never into a folder that already holds results
    report = PredictReport(out_dir=out_dir)
    results: list[dict] = []
    files = expand_sources(sources)
    start = time.perf_counter()
    bar = tqdm(total=len(files), unit="file", disable=not sys.stderr.isatty())
    image_batch: list[Path] = []

    def flush():
        _predict_images(predictor, image_batch, out_dir, results, report, show_offsets)
        image_batch.clear()

    for path in files:
        if path.suffix.lower() in VIDEO_EXTS:
            flush()
            _predict_video(predictor, path, out_dir, results, report, show_offsets, batch_size)
        else:
            image_batch.append(path)
            if len(image_batch) >= batch_size:
                flush()
        bar.update(1)
        elapsed = time.perf_counter() - start
        bar.set_postfix_str(f"{(report.images + report.frames) / max(elapsed, 1e-9):.2f} img/s")
    flush()
    bar.close()
    report.seconds = time.perf_counter() - start
    (out_dir / "predictions.json").write_text(json.dumps(results))
    return report


def _predict_images(predictor, paths: list[Path], out_dir: Path, results: list, report: PredictReport,
                    show_offsets: bool) -> None:
    from poseseg.data.image_io import ImageReadError, load_image_rgb

    arrays, good = [], []
    for p in paths:
        try:
            arrays.append(load_image_rgb(p))
            good.append(p)
        except ImageReadError as e:
            report.failed.append(f"{p} ({e.reason})")
            print(f"warning: skipping {p}: {e.reason}", file=sys.stderr)
    if not arrays:
        return
    preds = predictor.predict_batch(arrays, with_offsets=show_offsets)
    for path, array, pred in zip(good, arrays, preds):
        report.images += 1
        image_id = report.images
        _save_overlay(predictor, array, pred, show_offsets).save(out_dir / f"{path.stem}_pred.jpg", quality=92)
        _add_results(results, pred, image_id, {"file_name": str(path)}, report)


def _predict_video(predictor, path: Path, out_dir: Path, results: list, report: PredictReport,
                   show_offsets: bool, batch_size: int) -> None:
    try:
        import cv2
    except ImportError:
        report.failed.append(f"{path} (video needs OpenCV: pip install 'poseseg[video]')")
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        report.failed.append(f"{path} (not a readable video)")
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    frame_index = 0
    video_id = report.images + report.frames + 1
    frames: list[np.ndarray] = []

    def flush():
        nonlocal writer, frame_index
        if not frames:
            return
        for frame, pred in zip(frames, predictor.predict_batch(frames, with_offsets=show_offsets)):
            overlay = np.asarray(_save_overlay(predictor, frame, pred, show_offsets))
            if writer is None:
                h, w = overlay.shape[:2]
                writer = cv2.VideoWriter(str(out_dir / f"{path.stem}_pred.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                         fps, (w, h))
            writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            _add_results(results, pred, video_id * 100_000 + frame_index,
                         {"file_name": str(path), "frame": frame_index}, report)
            frame_index += 1
            report.frames += 1
        frames.clear()

    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if len(frames) >= batch_size:
            flush()
    flush()
    cap.release()
    if writer is not None:
        writer.release()
    if frame_index == 0:
        report.failed.append(f"{path} (no frame could be decoded)")


def _save_overlay(predictor, array: np.ndarray, pred: dict, show_offsets: bool):
    from poseseg.data.schema import KeypointSchema
    from poseseg.visualize import draw

    schema = KeypointSchema.from_dict(predictor.schema) if predictor.schema else None
    return draw(array, pred, schema=schema, score_thresh=0.0, show_offsets=show_offsets,
                offsets=pred.get("keypoint_peaks") if show_offsets else None)


def _add_results(results: list, pred: dict, image_id: int, extra: dict, report: PredictReport) -> None:
    report.people += len(pred["boxes"])
    results.extend(coco_records(pred, image_id, extra))


def coco_records(pred: dict, image_id: int, extra: dict | None = None) -> list[dict]:
    """One image's prediction -> COCO result records (one per person: bbox, segmentation, keypoints, scores)."""
    from poseseg.engine.evaluate import prediction_to_coco

    records = []
    per_type = prediction_to_coco(pred, image_id, category_id=1)
    for i, box in enumerate(per_type["bbox"]):
        record = {**box, **(extra or {})}
        if per_type["segm"]:
            record["segmentation"] = per_type["segm"][i]["segmentation"]
        if per_type["keypoints"]:
            record["keypoints"] = per_type["keypoints"][i]["keypoints"]
            record["keypoint_scores"] = [float(s) for s in pred["keypoint_scores"][i]]
        records.append(record)
    return records
