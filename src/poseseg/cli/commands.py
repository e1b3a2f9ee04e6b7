"""What each ``poseseg`` verb does, one function per verb: parsed arguments in, exit code out."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from poseseg.config import load_config


def _flag_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


TRAIN_FLAGS = {"data": "data.train_json", "images": "data.train_images", "val_data": "data.val_json",
               "val_images": "data.val_images", "iters": "train.iters", "batch_size": "train.batch_size",
               "checkpoint_every": "train.checkpoint_every", "eval_every": "train.eval_every",
               "name": "train.name", "init_weights": "train.init_weights", "device": "train.device",
               "output_dir": "train.output_dir"}


def cmd_train(args: argparse.Namespace) -> int:
    from poseseg.engine.faults import TrainingStopped
    from poseseg.engine.train import config_for_resume, train

    overrides = _flag_overrides(args, TRAIN_FLAGS) + list(args.overrides)
    resume = None
    if args.resume is not None:
        resume = args.resume or _latest_run(load_config(args.config, overrides).train.output_dir)
        cfg = config_for_resume(resume, overrides)
    elif args.init_weights and not args.config:  # fine-tuning: the model the weights were saved with
        from poseseg.weights import config_from_weights

        cfg = config_from_weights(args.init_weights, overrides)
    else:
        cfg = load_config(args.config or "tiny", overrides)
    try:
        result = train(cfg, resume=resume)
    except TrainingStopped as e:  # preempted, a rank or a data worker lost: the message says how to resume
        if not e.quiet:
            print(f"poseseg train: {e}", file=sys.stderr)
        return e.exit_code
    skipped = f" ({result.skipped_steps} skipped: non-finite)" if result.skipped_steps else ""
    print(f"done: {result.iterations} iterations{skipped}; weights {result.final_checkpoint}")
    return 0


def _latest_run(output_dir: str) -> str:
    from poseseg.engine.checkpoint import list_checkpoints

    root = Path(output_dir)
    runs = sorted((p for p in root.glob("*") if p.is_dir() and list_checkpoints(p)),  # failed starts have none
                  key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"--resume: no run folder with a checkpoint under {root}; give the run folder or "
                                "checkpoint path")
    return str(runs[-1])


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from poseseg.data.coco import CocoPeopleDataset, require_image_folder
    from poseseg.device import resolve_device
    from poseseg.engine import distributed as dist
    from poseseg.engine.evaluate import evaluate, format_metrics
    from poseseg.export.exported_model import ExportedModel
    from poseseg.predictor import load_runner

    model, cfg = load_runner(args.weights, config=args.config, overrides=_test_flip(args) + list(args.overrides),
                             device=args.device or "auto", runtime=args.runtime)
    if cfg is None:
        raise ValueError(f"{args.weights} carries no config, which eval needs (data.category, sigmas): export it "
                         "with `poseseg export`, which writes the config into the file")
    onnx = isinstance(model, ExportedModel)  # ONNX Runtime and OpenVINO take their inputs from the CPU
    device = resolve_device("cpu" if onnx else args.device or cfg.train.device)
    dist.init_from_env(device)
    if not onnx:
        model.to(device)
    dataset = CocoPeopleDataset(args.data, args.images, category=cfg.data.category, keep_empty=True,
                                max_image_pixels=cfg.data.max_image_pixels, on_bad_image="raise", load_masks=False,
                                oks_sigmas=cfg.data.oks_sigmas or None, require_sigmas=False)
    require_image_folder(dataset, allow_empty=True)
    sigmas = _keypoint_sigmas(args, cfg, model, dataset)
    out_dir = _eval_dir(args.out, args.weights) if dist.is_main() else None  # created when the results are written
    metrics = evaluate(model, dataset, device=device, out_dir=out_dir, batch_size=args.batch_size or cfg.eval.batch_size,
                       sigmas=sigmas, progress=sys.stderr.isatty(), backend=args.backend)
    if dist.is_main():
        print(format_metrics(metrics))
        print(f"results and metrics.json in {out_dir}")
        if args.json:
            print(json.dumps(metrics))
    return 0


def _keypoint_sigmas(args: argparse.Namespace, cfg, model, dataset) -> list[float] | None:
    """The OKS sigmas that score the keypoints, once the data is known to have the model's keypoints (a
    model is scored only on its own keypoint schema: no override makes trained weights predict others)."""
    from poseseg.predictor import is_onnx

    if "keypoint" not in model.heads:
        return None
    k = cfg.model.keypoint.num_keypoints
    names = ", ".join((model.keypoint_schema or {}).get("names") or [])
    if dataset.schema is None:
        raise ValueError(f"{args.data} has no keypoints (its category has no 'keypoints' list) but {args.weights} "
                         f"predicts {k} ({names}): evaluate on the COCO keypoints JSON of these images "
                         "(person_keypoints_*.json)")
    if dataset.schema.num_keypoints != k:
        theirs = dataset.schema.num_keypoints
        start = "CHECKPOINT.pt (the one it was exported from)" if is_onnx(args.weights) else args.weights
        raise ValueError(
            f"{args.weights} predicts {k} keypoints ({names}) but {args.data} has {theirs} "
            f"({', '.join(dataset.schema.names)}): evaluate it on data with these {k} keypoints, or fine-tune it on "
            f"this data first: poseseg train --init-weights {start} --data {args.data} --images {args.images} "
            f"model.keypoint.num_keypoints={theirs} (joints of the same name keep what they learned)")
    sigmas = cfg.data.oks_sigmas or dataset.schema.sigmas or (model.keypoint_schema or {}).get("sigmas")
    if not sigmas:
        raise ValueError(f"{args.data}: its {k} keypoints are not COCO's 17, so there are no default OKS sigmas; "
                         f"set data.oks_sigmas to {k} values (or a named set: crowdpose)")
    return list(sigmas)


def _test_flip(args: argparse.Namespace) -> list[str]:
    return ["model.test_flip=true"] if args.test_flip else []


def _eval_dir(out: str | None, weights: str) -> Path:
    from poseseg.engine.run_log import output_dir

    return output_dir(out, "runs/eval", Path(weights).stem)  # an existing --out is numbered, never overwritten


def cmd_synth(args: argparse.Namespace) -> int:
    if args.video:
        from poseseg.data.synth_video import main_synth_video

        main_synth_video(args.out, frames=args.frames, people=args.people, seed=args.seed, size=args.size, fps=args.fps)
        return 0
    from poseseg.data.synth import main_synth

    main_synth(args.out, args.train, args.val, args.seed, args.size, workers=args.workers,
               people_scale=args.people_scale, pose_spread=args.pose_spread)
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from poseseg.data.check import format_report, summarize_dataset

    cfg = load_config(args.config, args.overrides)
    keypoints = cfg.model.keypoint.num_keypoints if "keypoint" in cfg.model.heads else None
    report = summarize_dataset(args.data, args.images, category=cfg.data.category, check_images=not args.fast,
                               max_image_pixels=cfg.data.max_image_pixels, num_keypoints=keypoints,
                               oks_sigmas=cfg.data.oks_sigmas or None)
    print(format_report(report))
    return 0 if report["ok"] else 1


def cmd_convert_data(args: argparse.Namespace) -> int:
    from poseseg.data.convert import convert

    path, notes = convert(args.format, args.source, args.out, category=args.category, split=args.split,
                          images=args.images, segments=args.segments)
    print("\n".join([*notes, f"wrote {path}"]))
    return 0


def cmd_show_data(args: argparse.Namespace) -> int:
    from poseseg.data.coco import CocoPeopleDataset
    from poseseg.visualize import draw_ground_truth

    cfg = load_config(args.config, args.overrides)
    dataset = CocoPeopleDataset(args.data, args.images, category=cfg.data.category, keep_empty=True,
                                require_sigmas=False, max_image_pixels=cfg.data.max_image_pixels)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = 0
    for i in range(min(args.num, len(dataset))):
        sample = dataset[i]
        if sample is None:
            print(f"skipped unreadable {dataset.image_path(i)}", file=sys.stderr)
            continue
        image, target = sample
        path = out / f"{Path(target['file_name']).stem}_gt.jpg"
        draw_ground_truth(image, target, dataset.schema).save(path, quality=92)
        shown += 1
    print(f"drew ground truth of {shown} images into {out}")
    return 0 if shown else 1


def cmd_predict(args: argparse.Namespace) -> int:
    from poseseg.engine import distributed as dist
    from poseseg.predict import VideoOptions, run_predict

    video = VideoOptions(track=args.track, smooth=args.smooth, save_mot=args.save_mot, max_frames=args.max_frames,
                         stride=args.stride)
    report = run_predict(args.weights, args.sources, out=args.out, config=args.config, score_thresh=args.score_thresh,
                         device=args.device, batch_size=args.batch_size, show_offsets=args.show_offsets,
                         overrides=_test_flip(args) + list(args.overrides), video=video,
                         save_format=args.save_format, keypoint_thresh=args.keypoint_thresh, runtime=args.runtime)
    read = report.images + report.frames
    if dist.is_main():  # under torchrun: once, the totals of every rank
        processes = f" ({dist.world_size()} processes)" if dist.world_size() > 1 else ""
        print(f"{report.images} images and {report.frames} video frames, {report.people} people, "
              f"{read / max(report.seconds, 1e-9):.2f} images/s{processes} -> {report.out_dir}")
        if video.track or video.smooth:
            print(f"{report.tracks} track IDs; {report.skipped_frames} unreadable frame(s) skipped")
        if report.failed:
            print(f"{len(report.failed)} file(s) could not be read:", *report.failed, sep="\n  ", file=sys.stderr)
    dist.cleanup()
    return 0 if read else 1


def cmd_weights(args: argparse.Namespace) -> int:
    from poseseg.weights import describe_named

    print(describe_named())
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from poseseg.weights import convert_files

    report = convert_files(args.sources, args.out, preset=args.config, overrides=list(args.set))
    print("\n".join([report.summary(), *report.notes, f"wrote {args.out} (full report: {args.out}.report.txt)"]))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from poseseg.engine.distill import DistillOptions, distill

    options = DistillOptions(iters=args.iters, minutes=args.minutes, lr=args.lr, batch_size=args.batch_size,
                             held_out_fraction=args.held_out, seed=args.seed, checkpoint_every=args.checkpoint_every,
                             output_dir=args.output_dir)
    result = distill(args.teacher, args.images, args.out, options=options, overrides=list(args.overrides),
                     resume=args.resume)
    print(result.report(), end="")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from poseseg.engine.calibrate import calibrate_checkpoint

    report = calibrate_checkpoint(args.weights, args.data, args.images, args.out, method=args.method,
                                  overrides=list(args.overrides), device=args.device,
                                  score_thresh=args.score_thresh)
    print(report.summary())
    print(f"calibrated checkpoint: {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from poseseg.export.onnx_export import export_checkpoint
    from poseseg.export.quantize import check_quantize_args, export_checkpoint_int8

    check_quantize_args(args.quantize, args.calibrate, args.calibrate_count)
    common = dict(config=args.config, overrides=list(args.overrides), opset=args.opset, size=args.size,
                  overwrite=args.overwrite)
    if args.quantize:
        report = export_checkpoint_int8(args.weights, args.out, calibrate=args.calibrate,
                                        calibrate_count=args.calibrate_count, **common)
    else:
        report = export_checkpoint(args.weights, args.out, **common)
    print(report.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from poseseg.demo import DEMO_ITERS, run_demo

    if args.minutes is not None and args.iters is not None:
        raise ValueError("--iters and --minutes: give one (a count of iterations, or a time budget)")
    run_demo(minutes=args.minutes, iters=args.iters or DEMO_ITERS, out=args.out, data_dir=args.data_dir,
             seed=args.seed, resume=args.resume, overrides=list(args.overrides), num_train=args.train_images,
             num_val=args.val_images)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from poseseg.serve.server import ServerSpec, run_server
        from poseseg.serve.settings import ServeSettings
    except ImportError as e:
        raise ValueError(f"poseseg serve needs FastAPI, uvicorn and python-multipart: pip install 'poseseg[serve]' "
                         f"({e})") from None

    settings = ServeSettings(max_batch=args.max_batch, max_image_mb=args.max_image_mb, score_thresh=args.score_thresh,
                             api_key=args.api_key, weights=Path(args.weights).name)
    spec = ServerSpec(weights=args.weights, config=args.config, device=args.device, runtime=args.runtime,
                      settings=settings)
    run_server(spec, host=args.host, port=args.port, workers=args.workers, drain_timeout=args.drain_timeout)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from poseseg.config import PRESET_DIR, list_presets

    for name in list_presets():
        first = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
        print(f"{name:20s} {first}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


