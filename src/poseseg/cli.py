"""The ``poseseg`` command: synth, train, eval, predict, export, serve, demo, check-data, show-data, presets.

Every verb that takes a config also takes ``key=value`` overrides of any config key; the flags
are shorthands for the most common keys.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from poseseg.config import ConfigError, load_config


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="preset name (see `poseseg presets`) or YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.iters=100")


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
    result = train(cfg, resume=resume)
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

    from poseseg.data.coco import CocoPeopleDataset
    from poseseg.engine import distributed as dist
    from poseseg.engine.evaluate import evaluate, format_metrics
    from poseseg.device import resolve_device
    from poseseg.weights.load import load_model

    model, cfg = load_model(args.weights, config=args.config, overrides=_test_flip(args) + list(args.overrides))
    device = resolve_device(args.device or cfg.train.device)
    dist.init_from_env(device)
    model.to(device)
    sigmas = cfg.data.oks_sigmas or (model.keypoint_schema or {}).get("sigmas") or None
    dataset = CocoPeopleDataset(args.data, args.images, category=cfg.data.category, keep_empty=True,
                                max_image_pixels=cfg.data.max_image_pixels, on_bad_image="raise", load_masks=False,
                                oks_sigmas=sigmas, require_sigmas=model.keypoint_head is not None,
                                num_keypoints=model.keypoint_head.num_keypoints if model.keypoint_head else None)
    out_dir = _eval_dir(args.out, args.weights) if dist.is_main() else None
    metrics = evaluate(model, dataset, device=device, out_dir=out_dir, batch_size=args.batch_size or cfg.eval.batch_size,
                       sigmas=sigmas, progress=sys.stderr.isatty(), backend=args.backend)
    if dist.is_main():
        print(format_metrics(metrics))
        print(f"results and metrics.json in {out_dir}")
        if args.json:
            print(json.dumps(metrics))
    return 0


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
    from poseseg.predict import VideoOptions, run_predict

    video = VideoOptions(track=args.track, smooth=args.smooth, save_mot=args.save_mot, max_frames=args.max_frames,
                         stride=args.stride)
    report = run_predict(args.weights, args.sources, out=args.out, config=args.config, score_thresh=args.score_thresh,
                         device=args.device, batch_size=args.batch_size, show_offsets=args.show_offsets,
                         overrides=_test_flip(args) + list(args.overrides), video=video)
    read = report.images + report.frames
    print(f"{report.images} images and {report.frames} video frames, {report.people} people, "
          f"{read / max(report.seconds, 1e-9):.2f} images/s -> {report.out_dir}")
    if video.track or video.smooth:
        print(f"{report.tracks} track IDs; {report.skipped_frames} unreadable frame(s) skipped")
    if report.failed:
        print(f"{len(report.failed)} file(s) could not be read:", *report.failed, sep="\n  ", file=sys.stderr)
    return 0 if read else 1


def cmd_weights(args: argparse.Namespace) -> int:
    from poseseg.weights import describe_named

    print(describe_named())
    return 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    from poseseg.weights import convert_files

    report = convert_files(args.sources, args.out, preset=args.config, overrides=list(args.set))
    print(f"{report.summary()}\nwrote {args.out} (full report: {args.out}.report.txt)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from poseseg.export.onnx_export import export_checkpoint

    report = export_checkpoint(args.weights, args.out, config=args.config, overrides=list(args.overrides),
                               opset=args.opset, size=args.size)
    print(report.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from poseseg.demo import run_demo

    run_demo(minutes=args.minutes, out=args.out, data_dir=args.data_dir, seed=args.seed, resume=args.resume,
             overrides=list(args.overrides), num_train=args.train_images, num_val=args.val_images)
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
    spec = ServerSpec(weights=args.weights, config=args.config, device=args.device, settings=settings)
    run_server(spec, host=args.host, port=args.port, workers=args.workers)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poseseg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("train", help="train a model (torchrun -m poseseg train ... for many processes)")
    p.add_argument("--data", help="training COCO JSON")
    p.add_argument("--images", help="training image folder")
    p.add_argument("--val-data", help="validation COCO JSON")
    p.add_argument("--val-images", help="validation image folder")
    p.add_argument("--iters", type=int)
    p.add_argument("--batch-size", type=int, help="images per process per step")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--name", help="run name: runs/train/NAME (auto-numbered)")
    p.add_argument("--output-dir", help="root of the run folders (default runs/train)")
    p.add_argument("--resume", nargs="?", const="", default=None,
                   help="resume the latest run, or the given run folder or checkpoint")
    p.add_argument("--init-weights", help="start from these weights (no optimizer/iteration state): a checkpoint or "
                   "named weights (poseseg weights list); without --config, the model they were saved with")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="COCO AP for boxes, masks and keypoints")
    p.add_argument("--weights", required=True, help="a poseseg checkpoint or named weights (poseseg weights list)")
    p.add_argument("--data", required=True, help="COCO JSON with ground truth")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--out", help="folder for results_*.json and metrics.json (default runs/eval/NAME)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.add_argument("--test-flip", action="store_true", help="flip test-time augmentation (model.test_flip)")
    p.add_argument("--backend", default="auto", choices=["auto", "faster-coco-eval", "pycocotools"],
                   help="COCO evaluator (auto: faster-coco-eval when installed)")
    _add_config_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("synth", help="write the synthetic people dataset (COCO format)")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=320, help="image side in pixels")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (same files for any count)")
    p.add_argument("--people-scale", type=float, default=1.0, help="multiply every person's height (1: the default mix)")
    p.add_argument("--pose-spread", type=float, default=1.0, help="multiply every joint angle (1: the default poses)")
    p.add_argument("--video", action="store_true",
                   help="a sequence instead: video.mp4, frames/ and video.json with track_id (size x 3/4 size)")
    p.add_argument("--frames", type=int, default=90, help="--video: number of frames")
    p.add_argument("--people", type=int, default=3, help="--video: walking figures")
    p.add_argument("--fps", type=float, default=15.0, help="--video: frame rate")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("check-data", help="validate a COCO dataset and print a summary")
    p.add_argument("--data", required=True, help="COCO JSON")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--fast", action="store_true", help="do not open every image")
    _add_config_args(p)
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("convert-data", help="CVAT / Label Studio / YOLO-pose exports -> COCO JSON (and COCO -> YOLO-pose)")
    p.add_argument("format", choices=["cvat-coco", "cvat-xml", "label-studio", "yolo-pose", "to-yolo-pose"])
    p.add_argument("source", help="the export: JSON, XML, or the YOLO dataset YAML (a COCO JSON for to-yolo-pose)")
    p.add_argument("--out", required=True, help="COCO JSON to write (a dataset folder for to-yolo-pose)")
    p.add_argument("--category", default="person", help="the person label / skeleton name in the export")
    p.add_argument("--split", default="train", help="YOLO split to read or write")
    p.add_argument("--images", help="to-yolo-pose: the image folder of the COCO JSON")
    p.add_argument("--segments", help="yolo-pose: a YOLO segment label folder with the people's polygons")
    p.set_defaults(func=cmd_convert_data, overrides=[])

    p = sub.add_parser("show-data", help="draw the ground truth (boxes, masks, skeletons) of a few images")
    p.add_argument("--data", required=True, help="COCO JSON")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--out", default="runs/show-data")
    p.add_argument("--num", type=int, default=8, help="how many images")
    _add_config_args(p)
    p.set_defaults(func=cmd_show_data)

    p = sub.add_parser("predict", help="overlays and COCO results for images, folders, globs, videos, .txt lists")
    p.add_argument("--weights", required=True, help="a poseseg checkpoint (carries its config and schema), named "
                   "weights, e.g. torchvision-coco (poseseg weights list), or an exported .onnx file (ONNX Runtime)")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--out", help="output folder (default runs/predict/expN)")
    p.add_argument("--config", help="config, only for a bare state dict")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--show-offsets", action="store_true", help="draw the keypoint refinement arrows")
    p.add_argument("--track", action="store_true",
                   help="track IDs across the frames of videos, streams and folders of frames")
    p.add_argument("--smooth", action="store_true", help="One-Euro smoothing of keypoints and boxes (implies --track)")
    p.add_argument("--save-mot", action="store_true", help="with --track: MOTChallenge lines in OUT/mot/NAME.txt")
    p.add_argument("--max-frames", type=int, help="stop each video or stream after this many frames")
    p.add_argument("--stride", type=int, default=1, help="use every S-th frame of videos and streams")
    p.add_argument("--test-flip", action="store_true", help="flip test-time augmentation (model.test_flip)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of the weights, e.g. --set model.input.test_size=640 (repeatable)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint to one ONNX file (deformable layers as DeformConv)")
    p.add_argument("--weights", required=True, help="a poseseg checkpoint")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=19, help="ONNX opset (16-20; deformable layers need 19+)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="fix the input image size (default: any size)")
    _add_config_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="synthetic data -> train tiny within a time budget -> AP table + overlays")
    p.add_argument("--minutes", type=float, default=9.5, help="total time budget, data generation included")
    p.add_argument("--out", default="runs/demo", help="run folder (auto-numbered if it exists)")
    p.add_argument("--data-dir", help="where the synthetic dataset lives / is made (default data/synth, "
                   "data/synth-seedS for --seed S)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--train-images", type=int, default=600, help="synthetic training images to generate")
    p.add_argument("--val-images", type=int, default=60, help="synthetic validation images to generate")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of the tiny preset")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="HTTP API + web page: POST /predict, /predict/overlay, /docs (pip install "
                       "'poseseg[serve]')")
    p.add_argument("--weights", required=True, help="a poseseg checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it; a warning is printed)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    p.add_argument("--max-batch", type=int, default=None, help="images that arrive together run as one batch of "
                   "up to this many (default 8 on a GPU, 1 on CPU where batching measured no faster)")
    p.add_argument("--max-image-mb", type=float, default=20.0, help="largest accepted upload")
    p.add_argument("--score-thresh", type=float, default=0.5, help="default score threshold of requests")
    p.add_argument("--api-key", default=None, help="require this key in the X-API-Key header (or env "
                   "POSESEG_API_KEY) on every endpoint but /healthz")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--config", help="config, only for a bare state dict")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("weights", help="named pretrained weights: `poseseg weights list`")
    p.add_argument("action", choices=["list"])
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("convert-weights", help="torchvision .pth, Detectron2 .pkl, ImageNet R-50 -> poseseg checkpoint")
    p.add_argument("sources", nargs="+", metavar="SRC", help="one weights file, or a keypoint and a mask model")
    p.add_argument("--out", required=True, help="the poseseg checkpoint to write (a .report.txt goes next to it)")
    p.add_argument("--config", help="preset the weights go into (default paper_regular)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.set_defaults(func=cmd_convert_weights)

    p = sub.add_parser("presets", help="list the config presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("config", help="print a resolved config")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """argparse, except that ``key=value`` overrides may stand anywhere, between flags too."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, FloatingPointError) as e:
        if os.environ.get("POSESEG_DEBUG"):
            raise
        print(f"poseseg {args.verb}: error: {e}\n(set POSESEG_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
