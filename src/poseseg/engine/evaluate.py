"""COCO evaluation: predictions -> COCO results JSON -> AP tables for bbox, segm and keypoints.

Each process predicts its share of the images (an image that cannot be read is left out, counted and
named in the warnings: a long run never dies for one bad file); the results are gathered on rank 0, which runs
the COCO evaluator (faster-coco-eval or pycocotools) on the person category (OKS with the
schema's sigmas) after checking that the numbers can mean something, and shares the metrics.
"""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from poseseg.data.eval_sanity import (check_ground_truth, check_predictions, fill_missing_fields, format_warnings,
                                      unreadable_images)
from poseseg.engine import distributed as dist
from poseseg.engine.coco_backend import coco_stats, make_ground_truth, resolve_backend
from poseseg.modeling.postprocess import coco_records, postprocess, records_by_iou_type
from poseseg.safe_write import write_text_atomic

IOU_TYPES = {"box": "bbox", "mask": "segm", "keypoint": "keypoints"}
STAT_NAMES = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],  # COCO keypoints have no small-object AP
}


@dataclass
class EvalReport:
    """AP tables per iou type (None where undefined), the sanity warnings, and the backend used."""

    metrics: dict[str, dict[str, float | None]]
    warnings: list[dict] = field(default_factory=list)
    backend: str = ""

    def to_json(self) -> dict:
        """What ``metrics.json`` holds: the tables, then ``warnings`` and ``backend``."""
        return {**self.metrics, "warnings": self.warnings, "backend": self.backend}


def score_results(gt: "object | dict | str | Path", results: dict[str, list], *, category_id: int,
                  iou_types: list[str], sigmas: list[float] | None = None, image_ids: list[int] | None = None,
                  backend: str = "auto", verbose: bool = False) -> EvalReport:
    """Check ground truth and predictions (:mod:`poseseg.data.eval_sanity`), then COCO AP tables.

    ``gt`` is a pycocotools COCO, a loaded JSON dict or a path. A missing ``area`` or
    ``num_keypoints`` is filled (with a note); an empty set and a sigma/K mismatch give None
    ('-') instead of a number; an iou type with no predictions scores 0.
    """
    data = _gt_dict(gt)
    backend = resolve_backend(backend)
    warns = fill_missing_fields(data, category_id)
    warns += check_ground_truth(data, category_id=category_id, image_ids=image_ids, sigmas=sigmas,
                                keypoints="keypoints" in iou_types, masks="segm" in iou_types)
    results, pred_warns = check_predictions(data, {t: results.get(t, []) for t in iou_types},
                                            category_id=category_id, image_ids=image_ids)
    warns += pred_warns
    codes = {w["code"] for w in warns}
    metrics: dict[str, dict[str, float | None]] = {}
    coco_gt = None
    for iou_type in iou_types:
        dets = results.get(iou_type, [])
        names = STAT_NAMES[iou_type]
        if ("empty_set" in codes or (iou_type == "keypoints" and "sigmas_mismatch" in codes)
                or (iou_type == "segm" and "no_segmentation" in codes)):
            metrics[iou_type] = {n: None for n in names}
            continue
        if not dets:
            metrics[iou_type] = {n: 0.0 for n in names}
            continue
        if iou_type == "keypoints" and sigmas is None:
            raise ValueError("keypoint evaluation needs OKS sigmas (data.oks_sigmas) for this schema")
        if coco_gt is None:
            coco_gt = make_ground_truth(data, backend)
        stats = coco_stats(coco_gt, dets, iou_type, backend=backend, category_id=category_id, image_ids=image_ids,
                           sigmas=sigmas, verbose=verbose)
        # COCO reports -1 where no ground truth exists in an area range: keep that as None
        metrics[iou_type] = {n: (float(v) if v >= 0 else None) for n, v in zip(names, stats[: len(names)])}
    return EvalReport(metrics=metrics, warnings=warns, backend=backend)


def _gt_dict(gt) -> dict:
    if isinstance(gt, dict):
        return copy.deepcopy(gt)
    if isinstance(gt, (str, Path)):
        with open(gt, "rb") as f:
            return json.load(f)
    return copy.deepcopy(gt.dataset)  # a pycocotools / faster-coco-eval COCO object


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    """A small AP table: one row per iou type, values in percent."""
    cols = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    lines = [f"{'':10s}" + "".join(f"{c:>8s}" for c in cols)]
    for iou_type, stats in metrics.items():
        row = "".join(f"{'-' if stats.get(c) is None else f'{100 * stats[c]:.1f}':>8s}" for c in cols)
        lines.append(f"{iou_type:10s}{row}")
    return "\n".join(lines)


@torch.no_grad()
def predict_records(model, dataset, *, device: torch.device, batch_size: int = 2,
                    progress: bool = False) -> tuple[list[dict], dict[int, str]]:
    """COCO result records (one per detected person) for this process's share of ``dataset`` (every
    world_size-th image); masks are pasted box by box and RLE-encoded batch by batch.

    An image that cannot be read is left out: the second value maps its image id to "path (reason)",
    so that the scores leave out its ground truth too.
    """
    from poseseg.data.image_io import ImageReadError

    model.eval()
    category_id = int(dataset.category["id"])
    indices = list(range(dist.rank(), len(dataset), dist.world_size()))
    records: list[dict] = []
    unreadable: dict[int, str] = {}
    iterator = range(0, len(indices), batch_size)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="eval", unit="batch", leave=False)
    for start in iterator:
        batch = []
        for i in indices[start:start + batch_size]:
            try:
                sample, reason = dataset[i], "unreadable"  # None from a dataset with on_bad_image="skip"
            except ImageReadError as e:  # on_bad_image="raise"
                sample, reason = None, e.reason
            if sample is None:
                unreadable[int(dataset.image_ids[i])] = f"{dataset.image_path(i)} ({reason})"
                continue
            batch.append(sample)
        if not batch:
            continue
        preds = postprocess(model.predict_rois([img.to(device) for img, _ in batch]), masks="boxes")
        for (_, target), pred in zip(batch, preds):
            records += coco_records(pred, int(target["image_id"]), category_id=category_id)
    return records, unreadable


def evaluate(model, dataset, *, device: torch.device, out_dir: str | Path | None = None, batch_size: int = 2,
             heads: list[str] | None = None, sigmas: list[float] | None = None, progress: bool = False,
             verbose: bool = False, backend: str = "auto") -> dict[str, dict[str, float]]:
    """Predict on every image of ``dataset`` (a CocoPeopleDataset), gather the results from every
    process, check and score them (:func:`score_results`) on the images that could be read.

    With ``out_dir`` (rank 0): writes ``results_{bbox,segm,keypoints}.json`` and ``metrics.json``
    (the tables, the sanity ``warnings`` and the ``backend``), creating the folder, and prints the
    warning block.
    """
    heads = heads or model.heads
    iou_types = [IOU_TYPES[h] for h in heads]
    category_id = int(dataset.category["id"])
    records, unreadable = predict_records(model, dataset, device=device, batch_size=batch_size, progress=progress)
    mine = records_by_iou_type(records)
    gathered = dist.all_gather_objects(({t: mine[t] for t in iou_types}, unreadable))
    metrics = None
    if dist.is_main():
        merged = {t: [d for results, _ in gathered for d in results[t]] for t in iou_types}
        skipped = {image_id: what for _, part in gathered for image_id, what in part.items()}
        schema_sigmas = dataset.schema.sigmas if dataset.schema is not None else None
        report = score_results(dataset.json_path, merged, category_id=category_id, iou_types=iou_types,
                               sigmas=sigmas if sigmas is not None else schema_sigmas,
                               image_ids=[int(i) for i in dataset.image_ids if int(i) not in skipped],
                               backend=backend, verbose=verbose)
        if skipped:
            report.warnings.insert(0, unreadable_images([skipped[i] for i in sorted(skipped)], len(dataset)))
        metrics = report.metrics
        if out_dir is not None:
            for iou_type, dets in merged.items():
                write_text_atomic(Path(out_dir) / f"results_{iou_type}.json", json.dumps(dets))
            write_text_atomic(Path(out_dir) / "metrics.json", json.dumps(report.to_json(), indent=2))
            if report.warnings:
                print(format_warnings(report.warnings), file=sys.stderr)
    return dist.broadcast_object(metrics)
