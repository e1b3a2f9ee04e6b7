"""``poseseg predict``: images, folders, globs, videos, streams or .txt lists -> overlays + COCO results JSON.

An unreadable file is skipped with a warning and listed at the end; the run fails only when
nothing at all could be read (a missing path or a folder without pictures is named before the model
loads). The output folder is created with the first file written into it, and ``predictions.json``
only once something was read, so a failed run leaves neither an empty folder nor a misleading file.
Videos and streams are decoded by PyAV; an unreadable frame is skipped and counted. ``track=True``
gives every person a track ID across the frames of a video, stream or folder of frames
(``poseseg.track``), ``smooth=True`` also filters their keypoints and boxes. Under ``torchrun`` the
inputs are shared out among the processes and rank 0 writes what one process would (``poseseg.predict_shard``).
"""
from __future__ import annotations

import glob
import json
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from poseseg.data.image_io import IMAGE_EXTS
from poseseg.engine import distributed as dist
from poseseg.export.exported_model import ModelRunError
from poseseg.modeling.postprocess import coco_records
from poseseg.predict_shard import Part, from_rank0, gather_parts, number_parts, owners, unique_names
from poseseg.track.sources import is_stream

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".ogv", ".3gp"}
ACCEPTED = (f"pictures: {', '.join(sorted(IMAGE_EXTS))}; videos: {', '.join(sorted(VIDEO_EXTS))}; folders of them, "
            "glob patterns, .txt lists of paths, streams (rtsp://, http://, /dev/video0)")


@dataclass
class PredictReport:
    out_dir: Path
    images: int = 0
    frames: int = 0
    people: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped_frames: int = 0  # unreadable video frames (the rest of the video was used)
    tracks: int = 0  # distinct track IDs over all tracked sequences
    image_infos: list[dict] = field(default_factory=list)  # id, file_name, width, height of every image read
    saved: list[Path] = field(default_factory=list)  # the --save-format files (beside predictions.json)
    visibility: bool = False  # the model predicted keypoint visibility flags (model.keypoint.visibility)


def expand_sources(sources: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their images and videos, sorted), globs and .txt lists of paths; and a line for
    each source that gives nothing (a missing path, a folder without pictures or videos, a glob that
    matches nothing, an empty list)."""
    out: list[Path] = []
    problems: list[str] = []
    for src in sources:
        p = Path(src)
        if p.suffix.lower() == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            found, inner = expand_sources([str(p.parent / ln) if not Path(ln).is_absolute() else ln for ln in lines])
            out += found
            problems += inner if lines else [f"{p}: the list names no files"]
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
            out += found
            if not found:
                problems.append(f"{p}: no pictures or videos in this folder")
        elif p.exists():
            out.append(p)
        elif any(ch in src for ch in "*?["):
            found = sorted(Path(m) for m in glob.glob(src, recursive=True) if Path(m).is_file())
            out += found
            if not found:
                problems.append(f"{src}: no file matches this pattern")
        else:
            problems.append(f"{p}: no such file or folder")
    return out, problems


@dataclass
class VideoOptions:
    """How frame sequences (videos, streams, folders with ``track``) are read and what is written for them."""

    track: bool = False
    smooth: bool = False
    save_mot: bool = False
    max_frames: int | None = None
    stride: int = 1


@dataclass
class OverlayOptions:
    """How the pictures and videos written beside predictions.json are drawn."""

    show_offsets: bool = False  # the keypoint refinement arrows
    # keypoints drawn at this score or more; with a calibrated model (`poseseg calibrate`) a score p means
    # "within OKS-ks 0.5 of the truth with probability p"
    keypoint_thresh: float = 0.2


def run_predict(weights: str, sources: list[str], *, out: str | None = None, config: str | None = None,
                score_thresh: float = 0.5, device: str = "auto", batch_size: int = 1, show_offsets: bool = False,
                overrides: list[str] | None = None, video: VideoOptions | None = None,
                save_format: str = "coco", keypoint_thresh: float = 0.2, runtime: str = "auto") -> PredictReport:
    """Predict every source into a new folder: overlays, ``predictions.json`` (COCO results) and, with
    ``save_format`` other than ``coco``, pre-annotations for an annotation tool
    (``poseseg.data.convert.writers``: labelstudio, cvat, yolo-pose, csv). ``runtime``: what runs the
    weights (:func:`poseseg.predictor.resolve_runtime`).

    Under ``torchrun`` (or in an initialised process group) each rank predicts its share of the inputs
    (``poseseg.predict_shard``) into the same folder and rank 0 writes the merged files, the same as one
    process writes; every rank returns the report of the whole run (``image_infos`` on rank 0 only)."""
    from poseseg.device import resolve_device
    from poseseg.engine.run_log import output_dir
    from poseseg.predictor import Predictor, is_onnx

    video = video or VideoOptions()
    if video.smooth:
        video.track = True  # smoothing is per track
    _check_save_format(save_format, sources, video)  # before the model loads
    if not 0.0 <= keypoint_thresh <= 1.0:
        raise ValueError(f"--keypoint-thresh {keypoint_thresh}: a keypoint score is in [0, 1]")
    overlay = OverlayOptions(show_offsets=show_offsets, keypoint_thresh=keypoint_thresh)
    if video.stride < 1 or (video.max_frames is not None and video.max_frames < 1):
        raise ValueError(f"--stride {video.stride} / --max-frames {video.max_frames}: both must be positive")
    dist.init_from_env(torch.device("cpu") if is_onnx(weights) else resolve_device(device))
    # rank 0 lists the inputs once, so every rank shares out the same list (a folder may change meanwhile)
    specs, problems = dist.broadcast_object(_inputs(sources, video) if dist.is_main() else None)
    if not specs:  # before the model loads (a named model may download first)
        raise ValueError(f"nothing to predict on: {'; '.join(problems)}. predict reads {ACCEPTED}")
    streams = [isinstance(s, str) and is_stream(s) for s in specs]
    if dist.is_main():
        for problem in problems:
            print(f"warning: skipping {problem}", file=sys.stderr)
        if any(streams) and dist.world_size() > 1:
            print(f"warning: rank 0 alone reads the {sum(streams)} live stream(s) ({specs[streams.index(True)]}): "
                  f"a stream is one sequence and cannot be split across processes; the other ranks share the "
                  "files", file=sys.stderr)
    predictor = Predictor(weights, config=config, device=device, score_thresh=score_thresh, overrides=overrides,
                          runtime=runtime)
    # never into a folder that already holds results; rank 0 decides before any rank writes into it
    out_dir = dist.broadcast_object(output_dir(out, "runs/predict") if dist.is_main() else None)
    names = unique_names([_base_name(s) for s in specs])
    work = [(i, specs[i], names[i]) for i, rank in enumerate(owners(streams, dist.world_size())) if rank == dist.rank()]
    start = time.perf_counter()
    parts, error = [], None
    try:
        parts = _predict_inputs(predictor, work, out_dir, overlay, batch_size, video)
    except Exception as e:  # every rank learns of it (gather_parts), none waits for this one forever
        error = e
    merged = gather_parts(parts, error, len(specs))
    report, error = None, None
    if merged is not None:  # rank 0
        try:
            report = _write_results(merged, problems, out_dir, predictor, weights, save_format,
                                    time.perf_counter() - start)
        except Exception as e:
            error = e
    return from_rank0(report, error, share=lambda r: replace(r, image_infos=[]))


def _inputs(sources: list[str], video: VideoOptions) -> tuple[list[str | Path], list[str]]:
    """The run's inputs in order (sequences as given: streams and, with ``track``, folders of frames; then
    the files the other sources expand to) and a line for each source that gives nothing."""
    sequences = [s for s in sources if is_stream(s) or (video.track and _holds_images(Path(s)))]
    files, problems = expand_sources([s for s in sources if s not in sequences])
    return sequences + files, problems


def _base_name(spec: str | Path) -> str:
    """The name an input's outputs start with: a picture's stem; a video's stem, a folder's or stream's name,
    made safe for a file name."""
    if isinstance(spec, Path) and spec.suffix.lower() not in VIDEO_EXTS:
        return spec.stem
    name = spec.stem if isinstance(spec, Path) else spec if is_stream(spec) else Path(spec).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "stream"


def _predict_inputs(predictor, work: list[tuple[int, str | Path, str]], out_dir: Path, overlay: OverlayOptions,
                    batch_size: int, video: VideoOptions) -> list[Part]:
    """This rank's inputs (index, source, output name) -> one part each; pictures in batches of ``batch_size``."""
    from tqdm import tqdm

    parts: list[Part] = []
    batch: list[tuple[int, Path, str]] = []
    read = 0  # pictures and frames this rank has read (before any, a model failure stops the run)
    start = time.perf_counter()
    bar = tqdm(total=len(work), unit="file", disable=not _progress_shown())

    def add(new: list[Part]) -> None:
        nonlocal read
        parts.extend(new)
        read += sum((p.info is not None) + p.frames for p in new)

    for index, spec, name in work:
        if isinstance(spec, str) or spec.suffix.lower() in VIDEO_EXTS:
            add(_predict_images(predictor, batch, out_dir, overlay, read > 0))
            batch.clear()
            add([_predict_sequence(predictor, index, spec, name, out_dir, overlay, batch_size, video, read > 0)])
        else:
            batch.append((index, spec, name))
            if len(batch) >= batch_size:
                add(_predict_images(predictor, batch, out_dir, overlay, read > 0))
                batch.clear()
        bar.update(1)
        bar.set_postfix_str(f"{read / max(time.perf_counter() - start, 1e-9):.2f} img/s")
    add(_predict_images(predictor, batch, out_dir, overlay, read > 0))
    bar.close()
    return parts


def _write_results(parts: list[Part], problems: list[str], out_dir: Path, predictor, weights: str,
                   save_format: str, seconds: float) -> PredictReport:
    """The run's parts, in input order -> ``predictions.json`` (and the ``save_format`` files) and its report."""
    from poseseg.safe_write import write_text_atomic

    results, infos = number_parts(parts)
    report = PredictReport(out_dir=out_dir, images=len(infos), frames=sum(p.frames for p in parts),
                           people=len(results), failed=problems + [f for p in parts for f in p.failed],
                           seconds=seconds, skipped_frames=sum(p.skipped_frames for p in parts),
                           tracks=sum(p.tracks for p in parts), image_infos=infos,
                           visibility=any(p.visibility for p in parts))
    if report.images + report.frames:  # a run that read nothing has no predictions (not an empty list)
        write_text_atomic(out_dir / "predictions.json", json.dumps(results))
    if save_format != "coco" and report.images + report.frames:
        from poseseg.data.convert.writers import person_category, write_predictions

        schema = predictor.schema or {}
        k = next((len(r["keypoints"]) // 3 for r in results if "keypoints" in r), None)
        category = person_category(schema.get("names"), schema.get("skeleton"), num_keypoints=k)
        tool_records = results
        if k is not None and not report.visibility:
            # no visibility head: v = 1 in predictions.json is the COCO results convention, not a prediction;
            # an annotation tool would show every keypoint as occluded, so they go as plain (visible) points
            print(f"note: {weights} predicts no keypoint visibility (train with model.keypoint.visibility=true): "
                  f"the {save_format} keypoints carry no occlusion flags, annotators set them", file=sys.stderr)
            tool_records = [_without_flags(r) for r in results]
        report.saved = write_predictions(save_format, tool_records, report.image_infos, out_dir, category=category)
    return report


def _progress_shown() -> bool:
    """Progress bars on a terminal, from rank 0 only (one bar per rank would interleave)."""
    return sys.stderr.isatty() and dist.is_main()


def _check_save_format(save_format: str, sources: list[str], video: VideoOptions) -> None:
    """A known format, and for the annotation-tool formats only image files (a tool annotates pictures)."""
    from poseseg.data.convert.writers import SAVE_FORMATS, SEQUENCE_FORMATS

    if save_format not in SAVE_FORMATS:
        raise ValueError(f"--save-format {save_format!r} is not a format; choose one of {', '.join(SAVE_FORMATS)}")
    if save_format in SEQUENCE_FORMATS:
        return
    specs, _ = _inputs(sources, video)
    frames = [str(s) for s in specs if isinstance(s, str) or s.suffix.lower() in VIDEO_EXTS]
    if frames:
        raise ValueError(f"--save-format {save_format} writes pre-annotations of image files, and {frames[0]} is a "
                         f"video, stream or tracked frame sequence: predict its frames as image files (a folder "
                         f"without --track), or choose --save-format {' or '.join(SEQUENCE_FORMATS)}")


def _without_flags(record: dict) -> dict:
    """A COCO result record with every keypoint marked plainly visible (v = 2)."""
    if "keypoints" not in record:
        return record
    kps = list(record["keypoints"])
    kps[2::3] = [2] * (len(kps) // 3)
    return {**record, "keypoints": kps}


def _skip_after_model_failure(started: bool, failed: list[tuple[Part, str]], error: ModelRunError) -> None:
    """The model failed on the inputs of ``failed`` (pictures, or a video whose frames share one size).
    Before it has run on anything (``started``) it cannot run at all: re-raised, so the run stops before
    writing anything. After it has worked: those are skipped and counted, the run goes on."""
    if not started:
        raise error
    for part, what in failed:
        part.failed.append(f"{what} (the model failed on it)")
    print(f"warning: skipping {', '.join(what for _, what in failed)}: {error}", file=sys.stderr)


def _holds_images(folder: Path) -> bool:
    """A folder of frames (tracked as one sequence); a folder of videos is expanded instead."""
    return folder.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in folder.iterdir())


def _predict_images(predictor, batch: list[tuple[int, Path, str]], out_dir: Path, overlay: OverlayOptions,
                    started: bool) -> list[Part]:
    """Pictures (index, path, output name) -> their overlays ``NAME_pred.jpg`` and one part each."""
    from poseseg.data.image_io import ImageReadError, load_image_rgb

    parts, arrays, good = [], [], []
    for index, path, name in batch:
        parts.append(Part(index))
        try:
            arrays.append(load_image_rgb(path))
            good.append((parts[-1], path, name))
        except ImageReadError as e:
            parts[-1].failed.append(f"{path} ({e.reason})")
            print(f"warning: skipping {path}: {e.reason}", file=sys.stderr)
    if not arrays:
        return parts
    try:
        preds = predictor.predict_batch(arrays, with_offsets=overlay.show_offsets)
    except ModelRunError as e:
        _skip_after_model_failure(started, [(part, str(path)) for part, path, _ in good], e)
        return parts
    out_dir.mkdir(parents=True, exist_ok=True)
    for (part, path, name), array, pred in zip(good, arrays, preds):
        _save_overlay(predictor, array, pred, overlay).save(out_dir / f"{name}_pred.jpg", quality=92)
        part.info = {"file_name": str(path), "width": int(array.shape[1]), "height": int(array.shape[0])}
        _add_results(part, pred, 0, {"file_name": str(path)})
    return parts


def _predict_sequence(predictor, index: int, spec: str | Path, name: str, out_dir: Path, overlay: OverlayOptions,
                      batch_size: int, video: VideoOptions, started: bool) -> Part:
    """A video, stream or (when tracking) folder of frames -> an overlay video ``NAME_pred.mp4`` (or
    ``_track``), a part whose results carry ``frame`` (and ``track_id``), and with ``save_mot`` a
    MOTChallenge file ``mot/NAME.txt``."""
    from tqdm import tqdm

    from poseseg.track.mot import mot_lines, write_mot
    from poseseg.data.video_io import VideoWriter
    from poseseg.track.sources import SourceError, open_source

    part = Part(index)
    try:
        source = open_source(spec, max_frames=video.max_frames, stride=video.stride)
    except SourceError as e:
        part.failed.append(str(e))
        print(f"warning: skipping {e}", file=sys.stderr)
        return part
    suffix = "_track" if video.track else "_pred"
    writer = VideoWriter(out_dir / f"{name}{suffix}.mp4", source.fps / video.stride)
    mot: list[str] = []
    ids: set[int] = set()
    frames = _tracked(predictor, source, video, batch_size) if video.track else \
        _detected(predictor, source, batch_size, overlay.show_offsets)
    bar = tqdm(unit="frame", desc=name, total=video.max_frames, disable=not _progress_shown())
    try:
        for pred in frames:
            image, frame = pred.pop("image"), pred.pop("frame")
            drawn = OverlayOptions(overlay.show_offsets and not video.track, overlay.keypoint_thresh)
            writer.write(np.asarray(_save_overlay(predictor, image, pred, drawn)))
            _add_results(part, pred, frame, {"file_name": str(spec), "frame": frame})
            if video.track:
                ids.update(pred["track_ids"].tolist())
                mot += mot_lines(frame, pred["boxes"], pred["track_ids"], pred["scores"])
            part.frames += 1
            bar.update(1)
    except ModelRunError as e:
        _skip_after_model_failure(started or part.frames > 0, [(part, str(spec))], e)
    finally:
        bar.close()
        writer.close()
        source.close()
    part.skipped_frames = len(source.skipped)
    part.tracks = len(ids)
    if video.save_mot and video.track:
        write_mot(out_dir / "mot" / f"{name}.txt", mot)
    if source.read == 0:
        part.failed.append(f"{spec} (no frame could be decoded)")
    return part


def _tracked(predictor, source, video: VideoOptions, batch_size: int):
    for pred in predictor.track(source, smooth=video.smooth, batch_size=batch_size):
        pred.pop("time"), pred.pop("name")
        yield pred


def _detected(predictor, source, batch_size: int, show_offsets: bool):
    from poseseg.track.pipeline import detect_frames

    for frame, pred in detect_frames(lambda images: predictor.predict_batch(images, with_offsets=show_offsets),
                                     source, batch_size):
        yield {**pred, "image": frame.image, "frame": frame.index}


def _save_overlay(predictor, array: np.ndarray, pred: dict, overlay: OverlayOptions):
    from poseseg.keypoint_schema import KeypointSchema
    from poseseg.visualize import draw

    schema = KeypointSchema.from_dict(predictor.schema) if predictor.schema else None
    return draw(array, pred, schema=schema, score_thresh=0.0, show_offsets=overlay.show_offsets,
                keypoint_thresh=overlay.keypoint_thresh,
                offsets=pred.get("keypoint_peaks") if overlay.show_offsets else None)


def _add_results(part: Part, pred: dict, image_id: int, extra: dict) -> None:
    """One picture's or frame's people as COCO records (``image_id`` within the input, see ``Part``)."""
    part.visibility = part.visibility or "keypoint_visibility" in pred
    part.records.extend(coco_records(pred, image_id, extra=extra))
