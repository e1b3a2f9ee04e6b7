"""The COCO evaluator behind ``eval``: faster-coco-eval (default when installed) or pycocotools.

faster-coco-eval is the maintained C++ re-implementation of the COCO API with the same
matching rules; its numbers equal pycocotools' (tests/engine/test_coco_backend.py checks
boxes, masks and keypoints with custom sigmas to 1e-4) and it is several times faster on
large sets (benchmarks/coco_eval_speed.py).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io

import numpy as np

__all__ = ["BACKENDS", "resolve_backend", "coco_stats", "make_ground_truth"]

BACKENDS = ("faster-coco-eval", "pycocotools")


def resolve_backend(name: str = "auto") -> str:
    """'auto' -> faster-coco-eval when importable, else pycocotools; a named one must be installed."""
    if name == "auto":
        return BACKENDS[0] if importlib.util.find_spec("faster_coco_eval") is not None else BACKENDS[1]
    if name not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {name!r}; choose auto, {' or '.join(BACKENDS)}")
    module = "faster_coco_eval" if name == BACKENDS[0] else "pycocotools"
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"evaluation backend {name} is not installed: pip install {name} (or --backend pycocotools)")
    return name


def make_ground_truth(data: dict, backend: str):
    """A COCO ground-truth object of ``backend`` built from a loaded JSON dict (copied, never mutated)."""
    data = copy.deepcopy(data)
    with contextlib.redirect_stdout(io.StringIO()):
        if backend == "faster-coco-eval":
            from faster_coco_eval import COCO

            return COCO(data)
        from pycocotools.coco import COCO

        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        return gt


def coco_stats(gt, dets: list[dict], iou_type: str, *, backend: str, category_id: int,
               image_ids: list[int] | None = None, sigmas: list[float] | None = None,
               verbose: bool = False) -> np.ndarray:
    """COCOeval's ``stats`` vector (12 for bbox/segm, 10 for keypoints) for one iou type."""
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        dt = gt.loadRes([dict(d) for d in dets])  # loadRes adds fields to its input: keep the caller's clean
        if backend == "faster-coco-eval":
            from faster_coco_eval import COCOeval_faster

            kwargs = {"kpt_oks_sigmas": list(map(float, sigmas))} if iou_type == "keypoints" else {}
            ev = COCOeval_faster(gt, dt, iou_type, print_function=print, **kwargs)
        else:
            from pycocotools.cocoeval import COCOeval

            ev = COCOeval(gt, dt, iou_type)
        ev.params.catIds = [category_id]
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)
