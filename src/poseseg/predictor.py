"""Run a trained model on images: ``Predictor(weights).predict(image)`` -> numpy arrays.

``weights`` is a poseseg checkpoint, or a ``.onnx`` file from ``poseseg export`` (run by ONNX Runtime,
or by OpenVINO with ``runtime="openvino"``, with the same outputs).

An image is a file path, a PIL image or an HxWx3 uint8 RGB array. A checkpoint carries its
config and keypoint schema, so the weights file is all that is needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from poseseg.device import resolve_device
from poseseg.export.exported_model import ExportedModel
from poseseg.export.openvino_model import OpenVinoModel
from poseseg.export.ort_model import OrtModel, providers_for
from poseseg.modeling.mask_paste import masks_to_image
from poseseg.modeling.postprocess import postprocess
from poseseg.weights.load import load_model


RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")  # --runtime


def is_onnx(weights: str | Path) -> bool:
    return str(weights).lower().endswith(".onnx")


def resolve_runtime(weights: str | Path, runtime: str = "auto") -> str:
    """The runtime that runs ``weights``: ``auto`` is PyTorch for a checkpoint or named weights and ONNX
    Runtime for an ``.onnx`` file; a runtime that cannot run this kind of weights is refused with the fix."""
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime {runtime}: unknown runtime; choose one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnxruntime" if is_onnx(weights) else "torch"
    if runtime == "torch" and is_onnx(weights):
        raise ValueError(f"--runtime torch runs checkpoints, and {weights} is an exported ONNX graph: give the "
                         "checkpoint it was exported from, or run the file with --runtime onnxruntime or openvino")
    if runtime != "torch" and not is_onnx(weights):
        out = f"{Path(str(weights)).stem}.onnx"
        raise ValueError(f"--runtime {runtime} runs an exported .onnx file, and {weights} is not one: export it "
                         f"first with `poseseg export --weights {weights} --out {out}`, then give --weights {out}")
    return runtime


def load_runner(weights: str | Path, *, config: str | Path | None = None, overrides: list[str] | None = None,
                device: str = "auto", runtime: str = "auto"):
    """``(model, cfg)`` for inference: a checkpoint or named weights -> a ``PoseSegModel`` in eval mode on the
    CPU (:func:`poseseg.weights.load.load_model`); an exported ``.onnx`` file -> an :class:`OrtModel` on
    ``device``'s ONNX Runtime providers (``runtime="openvino"``: an :class:`OpenVinoModel` on the CPU), with
    the config it was exported with. All take pictures through ``predict_rois`` (what ``Predictor`` and
    ``poseseg eval`` call). ``runtime``: one of :data:`RUNTIMES` (:func:`resolve_runtime`)."""
    runtime = resolve_runtime(weights, runtime)
    if runtime == "torch":
        return load_model(weights, config=config, overrides=overrides)
    if config is not None or overrides:
        raise ValueError(f"{weights} is an exported ONNX graph: its config is fixed at export, so "
                         f"--config and overrides ({overrides}) cannot apply; export again with them "
                         "(flip test-time augmentation is not available in an exported graph)")
    if runtime == "openvino":
        if device.startswith("cuda"):
            raise ValueError(f"--runtime openvino runs on the CPU, not --device {device}: use --device cpu, or "
                             "--runtime onnxruntime with onnxruntime-gpu for CUDA")
        model = OpenVinoModel(weights)
    else:
        model = OrtModel(weights, providers=providers_for(device))
    return model, model.config()


def to_tensor_image(image) -> torch.Tensor:
    """Path / PIL image / HxWx3 uint8 array -> (3, H, W) float tensor in [0, 1]."""
    from PIL import Image

    from poseseg.data.image_io import load_image_rgb, rgb_to_tensor

    if isinstance(image, (str, Path)):
        array = load_image_rgb(image)
    elif isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image array must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"the image array is empty (shape {image.shape}): nothing to predict on; give an "
                             "HxWx3 array with H, W >= 1")
        array = image
    else:
        raise TypeError(f"cannot read an image from {type(image).__name__}: give a path, a PIL image or an "
                        "HxWx3 uint8 array")
    return rgb_to_tensor(array)


def to_numpy(pred: dict, *, full_masks: bool = True) -> dict[str, np.ndarray]:
    """A post-processed prediction as numpy; ``box_masks`` become ``masks`` (N, H, W) bool, or stay
    a list of :class:`~poseseg.modeling.mask_paste.BoxMask` with ``full_masks=False``."""
    out = {k: v.cpu().numpy() for k, v in pred.items() if isinstance(v, torch.Tensor)}
    if "box_masks" in pred:
        if full_masks:
            out["masks"] = masks_to_image(pred["box_masks"], pred["image_size"])
        else:
            out["box_masks"] = pred["box_masks"]
    return out


class Predictor:
    """Boxes, masks and keypoints for every person in an image, as numpy arrays."""

    def __init__(self, weights: str | Path = "torchvision-coco", config: str | Path | None = None, device: str = "auto", *,
                 score_thresh: float = 0.5, overrides: list[str] | None = None, runtime: str = "auto"):
        """``runtime``: auto, torch, onnxruntime or openvino (:func:`resolve_runtime`)."""
        self.model, self.cfg = load_runner(weights, config=config, overrides=overrides, device=device,
                                           runtime=runtime)
        if isinstance(self.model, ExportedModel):
            self.device = torch.device("cpu")  # inputs go to ONNX Runtime / OpenVINO as numpy
        else:
            self.device = resolve_device(device)
            self.model.to(self.device)
        self.score_thresh = score_thresh
        self.schema = self.model.keypoint_schema

    @torch.no_grad()
    def predict_batch(self, images: list, *, with_offsets: bool = False, score_thresh: float | None = None,
                      full_masks: bool = True) -> list[dict[str, np.ndarray]]:
        """``score_thresh``: this call's threshold instead of the predictor's. ``full_masks=False``: each
        person's mask as a ``BoxMask`` (its probabilities in its box only, ``box_masks``) instead of a
        plane of the whole picture in ``masks``, which for 30 people on a 12-megapixel photo is 360 MB."""
        tensors = [to_tensor_image(img).to(self.device) for img in images]
        thresh = self.score_thresh if score_thresh is None else score_thresh
        # masks pasted box by box: no full-size float mask per person (a 12 MP photo stays small)
        preds = postprocess(self.model.predict_rois(tensors), masks="boxes", score_thresh=thresh,
                            keypoint_peaks=with_offsets)
        return [to_numpy({**p, "image_size": tuple(t.shape[-2:])}, full_masks=full_masks)
                for p, t in zip(preds, tensors)]

    def predict(self, image, *, with_offsets: bool = False) -> dict[str, np.ndarray]:
        return self.predict_batch([image], with_offsets=with_offsets)[0]

    def track(self, source, *, smooth: bool = False, max_frames: int | None = None, stride: int = 1,
              batch_size: int = 1, fps: float | None = None, config=None) -> Iterator[dict]:
        """People with track IDs, frame by frame, from a video file, stream, device or folder of frames.

        ``source``: a path / URL, or a :class:`poseseg.track.FrameSource` (whose ``skipped`` then
        lists the unreadable frames). Yields the arrays of :meth:`predict` plus ``track_ids`` (N,),
        ``frame`` (index in the source), ``time`` (s), ``image`` (the RGB frame) and ``name``.
        ``--score-thresh`` is the high threshold of the two-stage association; detections down
        to ``track.low_score`` only keep existing tracks alive. ``smooth``: One-Euro filtering of
        keypoints and boxes per track. ``config``: a ``TrackConfig`` instead of ``cfg.track``.
        """
        from poseseg.track.pipeline import track_frames
        from poseseg.track.sources import FrameSource, open_source

        frames = source if isinstance(source, FrameSource) else open_source(source, max_frames=max_frames,
                                                                             stride=stride, fps=fps)
        cfg = config or self.cfg.track
        low = min(cfg.low_score, self.score_thresh)
        sigmas = (self.schema or {}).get("sigmas") or None
        yield from track_frames(lambda images: self.predict_batch(images, score_thresh=low), frames, fps=frames.fps,
                                config=cfg, high_score=self.score_thresh, smooth=smooth, batch_size=batch_size,
                                sigmas=np.asarray(sigmas) if sigmas else None)
