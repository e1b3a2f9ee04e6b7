"""The ``poseseg`` command: its verbs and flags (the parser) and ``main``; each verb's work is a
function in :mod:`poseseg.cli.commands`.

Verbs: synth, check-data, convert-data, show-data, train, eval, predict, export, serve, demo,
weights, convert-weights, distill, calibrate, presets, config. Every verb that takes a config also takes
``key=value`` overrides of any config key; the flags are shorthands for the most common keys.
"""
from __future__ import annotations

import argparse
import os
import sys

from poseseg.cli.commands import (
    cmd_calibrate,
    cmd_check_data,
    cmd_config,
    cmd_convert_data,
    cmd_convert_weights,
    cmd_demo,
    cmd_distill,
    cmd_eval,
    cmd_export,
    cmd_predict,
    cmd_presets,
    cmd_serve,
    cmd_show_data,
    cmd_synth,
    cmd_train,
    cmd_weights,
)
from poseseg.config import ConfigError
from poseseg.data.convert.writers import SAVE_FORMATS
from poseseg.predictor import RUNTIMES
from poseseg.safe_write import WriteFailed

EXIT_WRITE_FAILED = 74  # sysexits EX_IOERR: a write failed (disk full, quota); the previous files are intact


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="preset name (see `poseseg presets`) or YAML file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.iters=100")


def add_runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="what runs the weights: auto (PyTorch for a checkpoint, ONNX Runtime for an .onnx file), "
                        "torch, onnxruntime, or openvino (an .onnx file on the CPU: pip install 'poseseg[openvino]')")


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
    add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="COCO AP for boxes, masks and keypoints")
    p.add_argument("--weights", required=True, help="a poseseg checkpoint, named weights (poseseg weights list) or "
                   "an exported .onnx file (ONNX Runtime, or OpenVINO with --runtime openvino)")
    p.add_argument("--data", required=True, help="COCO JSON with ground truth")
    p.add_argument("--images", required=True, help="image folder")
    p.add_argument("--out", help="folder for results_*.json and metrics.json (default runs/eval/NAME)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device")
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.add_argument("--test-flip", action="store_true", help="flip test-time augmentation (model.test_flip)")
    p.add_argument("--backend", default="auto", choices=["auto", "faster-coco-eval", "pycocotools"],
                   help="COCO evaluator (auto: faster-coco-eval when installed)")
    add_runtime_arg(p)
    add_config_args(p)
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
    add_config_args(p)
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
    add_config_args(p)
    p.set_defaults(func=cmd_show_data)

    p = sub.add_parser("predict", help="overlays and COCO results for images, folders, globs, videos, .txt lists")
    p.add_argument("--weights", required=True, help="a poseseg checkpoint (carries its config and schema), named "
                   "weights, e.g. torchvision-coco (poseseg weights list), or an exported .onnx file (ONNX Runtime, "
                   "or OpenVINO with --runtime openvino)")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--out", help="output folder (default runs/predict/expN)")
    p.add_argument("--config", help="config, only for a bare state dict")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--show-offsets", action="store_true", help="draw the keypoint refinement arrows")
    p.add_argument("--keypoint-thresh", "--threshold", type=float, default=0.2,
                   help="draw keypoints scoring >= P (default 0.2). With a calibrated model (poseseg calibrate): "
                        "score >= p means within OKS-ks 0.5 of the truth with probability ~p")
    p.add_argument("--track", action="store_true",
                   help="track IDs across the frames of videos, streams and folders of frames")
    p.add_argument("--smooth", action="store_true", help="One-Euro smoothing of keypoints and boxes (implies --track)")
    p.add_argument("--save-mot", action="store_true", help="with --track: MOTChallenge lines in OUT/mot/NAME.txt")
    p.add_argument("--max-frames", type=int, help="stop each video or stream after this many frames")
    p.add_argument("--stride", type=int, default=1, help="use every S-th frame of videos and streams")
    p.add_argument("--test-flip", action="store_true", help="flip test-time augmentation (model.test_flip)")
    p.add_argument("--save-format", default="coco", choices=SAVE_FORMATS,
                   help="also write the predictions as pre-annotations an annotation tool imports: labelstudio "
                        "(tasks JSON + labeling config), cvat (CVAT for images 1.1 XML), yolo-pose (dataset folder), "
                        "csv (a row per keypoint); coco (default): predictions.json only")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of the weights, e.g. --set model.input.test_size=640 (repeatable)")
    add_runtime_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a checkpoint to one ONNX file (deformable layers as DeformConv)")
    p.add_argument("--weights", required=True, help="a poseseg checkpoint")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (otherwise refused)")
    p.add_argument("--opset", type=int, default=19, help="ONNX opset (16-20; deformable layers need 19+)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="fix the input image size (default: any size)")
    p.add_argument("--quantize", choices=["int8"], help="write an int8 file (ONNX Runtime static quantization, "
                   "QDQ); needs --calibrate")
    p.add_argument("--calibrate", metavar="FOLDER", help="--quantize: pictures like the ones the model will see "
                   "(e.g. the training images; no labels) from which the int8 ranges are measured")
    p.add_argument("--calibrate-count", type=int, metavar="N", help="--quantize: calibration pictures, spread over "
                   "the folder (default 32); up to 8 others compare int8 with fp32 in the report")
    add_config_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="synthetic data -> train tiny for a fixed number of iterations -> AP table + "
                                    "overlays")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the README's count)")
    p.add_argument("--minutes", type=float, default=None,
                   help="train within this total time budget instead (data generation included): a slower "
                        "machine then trains fewer iterations and reaches less")
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
    p.add_argument("--weights", required=True, help="a poseseg checkpoint or an exported .onnx file")
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
    p.add_argument("--drain-timeout", type=float, default=60.0, help="on SIGTERM, seconds the requests in flight "
                   "may take to finish before they are cut (default 60)")
    p.add_argument("--config", help="config, only for a bare state dict (not for an .onnx file: its config is "
                   "fixed at export)")
    add_runtime_arg(p)
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

    p = sub.add_parser("distill", help="fold a two-trunk model (model.mask.trunk=own) into one trunk, on unlabelled "
                                       "pictures")
    p.add_argument("--teacher", help="a two-trunk checkpoint or named weights (e.g. torchvision-coco)")
    p.add_argument("--images", help="a folder of pictures like the ones the model will see (no labels needed)")
    p.add_argument("--out", help="the one-trunk checkpoint to write (never overwritten)")
    p.add_argument("--iters", type=int, default=1000, help="training iterations (default 1000)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop after this long; --resume goes on")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the mask head")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--held-out", type=float, default=0.1, help="fraction of pictures kept back to measure mask IoU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--output-dir", default="runs/distill", help="where the run folder goes")
    p.add_argument("--resume", help="a distill run folder (or checkpoint) to continue")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of the student")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("calibrate", help="make keypoint scores probabilities (right within OKS-ks 0.5): fit on "
                                         "labelled pictures, write a calibrated checkpoint")
    p.add_argument("--weights", required=True, help="a checkpoint or named weights")
    p.add_argument("--data", required=True, help="COCO keypoints JSON of pictures the model did not train on")
    p.add_argument("--images", required=True, help="their image folder")
    p.add_argument("--out", required=True, help="the calibrated checkpoint to write (never overwritten)")
    p.add_argument("--method", default="platt", choices=("platt", "isotonic"),
                   help="platt (default; measured best, benchmarks/RESULTS.md) or isotonic")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="calibrate the keypoints of people kept at this box score (predict's default 0.5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (e.g. model.test_flip=true)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("presets", help="list the config presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("config", help="print a resolved config")
    add_config_args(p)
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
    except WriteFailed as e:  # disk full, quota, file-size limit: nothing was replaced
        print(f"poseseg {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError) as e:
        if os.environ.get("POSESEG_DEBUG"):
            raise
        print(f"poseseg {args.verb}: error: {e}\n(set POSESEG_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
