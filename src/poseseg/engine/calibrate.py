"""Keypoint scores people can read: calibration to probabilities and its error.

A raw keypoint score (the heatmap's peak) has no fixed scale. Here a keypoint of a detected person
counts as *right* when a labelled ground-truth keypoint lies within OKS-ks 0.5 of it:
exp(-d^2 / (2 s^2 k^2)) >= 0.5, with s^2 the person's area and k the keypoint's COCO sigma
(2 * sigma, as in COCO's OKS). Detections with a box score >= ``min_box_score`` are matched to the
ground-truth person of highest box IoU (>= ``min_iou``); every keypoint of an unmatched detection,
and every keypoint whose truth is not labelled, is wrong. :func:`fit_calibration` maps raw scores to
the frequency of right keypoints (isotonic or Platt), so that after ``poseseg calibrate`` a score
p means "right with probability p"; :func:`expected_calibration_error` measures how far from that.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from poseseg.engine.evaluate import predict_records
from poseseg.modeling.score_calibration import KNOTS
from poseseg.ops.boxes import box_iou

CALIBRATION_METHODS = ("isotonic", "platt")


def check_method(method: str) -> None:
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r}; choose {' or '.join(CALIBRATION_METHODS)}")


def match_detections(people: list[dict], result: dict, *, min_box_score: float = 0.5,
                     min_iou: float = 0.5) -> list[tuple[int, dict | None]]:
    """(index into ``result``, the ground-truth person it matches or None) for every detection with a box
    score >= ``min_box_score``: the person of highest box IoU, if that IoU is >= ``min_iou``."""
    kept = np.flatnonzero(np.asarray(result["scores"]).reshape(-1) >= min_box_score)
    if not people or not len(kept):
        return [(int(i), None) for i in kept]
    boxes = np.asarray(result["boxes"], dtype=np.float64).reshape(-1, 4)[kept]
    gt_boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in people)])
    iou = box_iou(boxes, gt_boxes)  # (N, G)
    return [(int(i), people[int(row.argmax())] if row.max() >= min_iou else None) for i, row in zip(kept, iou)]


def keypoint_outcomes(predictions: list[tuple[list[dict], dict]], sigmas: list[float], *,
                      min_box_score: float = 0.5, min_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``predictions``: per image (its COCO ground-truth annotations, the model's result with
    ``boxes`` (N, 4) xyxy, ``scores``, ``keypoints`` (N, K, 3), ``keypoint_scores`` (N, K)).

    Returns (scores (M,), right (M,) bool) over every keypoint of every detection kept.
    """
    k2 = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    scores, right = [], []
    for anns, result in predictions:
        people = [a for a in anns if not a.get("iscrowd") and any(v > 0 for v in a["keypoints"][2::3])]
        for i, person in match_detections(people, result, min_box_score=min_box_score, min_iou=min_iou):
            kp_scores = np.asarray(result["keypoint_scores"][i], dtype=np.float64)  # (K,)
            scores.append(kp_scores)
            if person is None:
                right.append(np.zeros(len(kp_scores), dtype=bool))
                continue
            gt = np.asarray(person["keypoints"], dtype=np.float64).reshape(-1, 3)  # (K, 3)
            d2 = ((np.asarray(result["keypoints"][i], dtype=np.float64)[:, :2] - gt[:, :2]) ** 2).sum(-1)
            oks = np.exp(-d2 / (2 * max(person["area"], 1.0) * k2))
            right.append((gt[:, 2] > 0) & (oks >= 0.5))
    if not scores:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate(scores), np.concatenate(right)


def expected_calibration_error(scores: np.ndarray, right: np.ndarray, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width bins of [0, 1]: sum over bins of (share of keypoints) x
    |mean score - fraction right|."""
    return float(sum(n * abs(conf - acc) for conf, acc, n in reliability_bins(scores, right, bins)) / max(len(scores), 1))


def reliability_bins(scores: np.ndarray, right: np.ndarray, bins: int = 15) -> list[tuple[float, float, int]]:
    """(mean score, fraction right, count) of each non-empty bin; a score of exactly 1 is in the last."""
    scores, right = np.asarray(scores, dtype=np.float64), np.asarray(right, dtype=np.float64)
    index = np.minimum((scores * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = index == b
        if sel.any():
            out.append((float(scores[sel].mean()), float(right[sel].mean()), int(sel.sum())))
    return out


def fit_calibration(scores: np.ndarray, right: np.ndarray, method: str = "platt") -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys): ``KNOTS`` knots of a non-decreasing map from raw score to the probability of being
    right, at quantiles of the raw scores (where the data is). ``isotonic``: pool-adjacent-violators
    (scipy); ``platt``: a logistic regression on the logit of the score."""
    check_method(method)
    scores, right = np.asarray(scores, dtype=np.float64), np.asarray(right, dtype=np.float64)
    if len(scores) < 2 * KNOTS or right.min() == right.max():
        raise ValueError(f"calibration needs at least {2 * KNOTS} keypoints of detected people, right and wrong "
                         f"ones; got {len(scores)} ({int(right.sum())} right). Use more labelled pictures")
    xs = np.quantile(scores, np.linspace(0, 1, KNOTS))
    xs = np.maximum.accumulate(xs + np.arange(KNOTS) * 1e-7)  # strictly increasing (ties in the scores)
    if method == "isotonic":
        from scipy.optimize import isotonic_regression

        order = np.argsort(scores, kind="stable")
        fitted = isotonic_regression(right[order]).x  # (M,) non-decreasing along the sorted scores
        ys = np.interp(xs, scores[order], fitted)
    else:
        from scipy.optimize import minimize

        z = _logit(scores)

        def nll(ab):
            logits = ab[0] * z + ab[1]
            return float(np.sum(np.logaddexp(0, logits) - right * logits))

        a, b = minimize(nll, x0=np.array([1.0, 0.0]), method="Nelder-Mead").x
        ys = 1 / (1 + np.exp(-(a * _logit(xs) + b)))
    return xs.astype(np.float32), np.maximum.accumulate(np.clip(ys, 0, 1)).astype(np.float32)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def apply_calibration(scores: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The map :class:`~poseseg.modeling.score_calibration.ScoreCalibration` applies, in numpy."""
    return np.interp(scores, xs, ys)


@dataclass
class CalibrationReport:
    method: str
    keypoints: int  # keypoints of detected people the fit saw
    right: int
    ece_before: float  # on the fitting pictures, 15 bins
    ece_after: float

    def summary(self) -> str:
        return (f"keypoint score calibration ({self.method}) on {self.keypoints} keypoints of detected people, "
                f"{self.right} right (within OKS-ks 0.5): expected calibration error {self.ece_before:.3f} -> "
                f"{self.ece_after:.3f} on these pictures (measure it on others: benchmarks/keypoint_calibration.py)")


def detections_with_truth(model, dataset, *, device: torch.device, batch_size: int = 2) -> list[tuple[list[dict], dict]]:
    """(ground-truth annotations, result) per image of ``dataset``, the result in :func:`keypoint_outcomes`'
    form, from the evaluation's own prediction path."""
    records, unreadable = predict_records(model, dataset, device=device, batch_size=batch_size)  # unreadable: left out
    return pair_with_truth(records, dataset, unreadable)


def pair_with_truth(records: list[dict], dataset, unreadable=()) -> list[tuple[list[dict], dict]]:
    """COCO result records of ``dataset``'s images -> (ground-truth annotations, result) per readable image."""
    truth = json.loads(Path(dataset.json_path).read_text())
    anns: dict[int, list[dict]] = {}
    for a in truth.get("annotations", []):
        anns.setdefault(a["image_id"], []).append(a)
    by_image: dict[int, list[dict]] = {}
    for r in records:
        by_image.setdefault(r["image_id"], []).append(r)
    pairs = []
    for image_id in (int(i) for i in dataset.image_ids if int(i) not in unreadable):
        mine = by_image.get(image_id, [])
        result = {"boxes": np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]).reshape(-1, 4),
                  "scores": np.array([r["score"] for r in mine]),
                  "keypoints": np.array([r["keypoints"] for r in mine]).reshape(len(mine), -1, 3),
                  "keypoint_scores": np.array([r["keypoint_scores"] for r in mine]).reshape(len(mine), -1)}
        pairs.append((anns.get(image_id, []), result))
    return pairs


def calibrate_model(model, dataset, *, sigmas: list[float], method: str = "platt", device: torch.device,
                    batch_size: int = 2, score_thresh: float = 0.5) -> CalibrationReport:
    """Fit the keypoint head's score calibration on a labelled dataset (from the raw scores, whatever
    was fitted before) and set it in ``model``."""
    if model.keypoint_head is None:
        raise ValueError("this model has no keypoint head: there are no keypoint scores to calibrate")
    check_method(method)
    calibration = model.keypoint_head.score_calibration
    fitted = (calibration.knots_x.clone(), calibration.knots_y.clone(), bool(calibration.fitted))
    calibration.set_knots(torch.linspace(0, 1, KNOTS), torch.linspace(0, 1, KNOTS))  # raw scores
    try:
        scores, right = keypoint_outcomes(detections_with_truth(model, dataset, device=device, batch_size=batch_size),
                                          sigmas, min_box_score=score_thresh)
        xs, ys = fit_calibration(scores, right, method)
    except BaseException:
        calibration.set_knots(*fitted[:2])
        calibration.fitted.fill_(fitted[2])
        raise
    calibration.set_knots(xs, ys)
    return CalibrationReport(method=method, keypoints=len(scores), right=int(right.sum()),
                             ece_before=expected_calibration_error(scores, right),
                             ece_after=expected_calibration_error(apply_calibration(scores, xs, ys), right))


def calibrate_checkpoint(weights: str | Path, data: str | Path, images: str | Path, out: str | Path, *,
                         method: str = "platt", overrides: list[str] | None = None,
                         device: str = "cpu", score_thresh: float = 0.5) -> CalibrationReport:
    """``poseseg calibrate``: fit the keypoint score calibration of ``weights`` on a labelled COCO set
    (pictures the model did not train on) and write the calibrated checkpoint to ``out`` (never
    overwritten). The map travels in the checkpoint and into exported ONNX files."""
    from poseseg.data.coco import CocoPeopleDataset
    from poseseg.device import resolve_device
    from poseseg.weights.checkpoint_file import save_checkpoint
    from poseseg.weights.load import load_model

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"--out {out} exists; calibrate never overwrites: choose another path")
    check_method(method)  # before the model loads
    model, cfg = load_model(weights, overrides=overrides)
    sigmas = cfg.data.oks_sigmas or (model.keypoint_schema or {}).get("sigmas") or None
    if model.keypoint_head is None:
        raise ValueError(f"{weights} has no keypoint head: there are no keypoint scores to calibrate")
    dataset = CocoPeopleDataset(data, images, category=cfg.data.category, keep_empty=True, load_masks=False,
                                max_image_pixels=cfg.data.max_image_pixels, on_bad_image="raise", oks_sigmas=sigmas,
                                require_sigmas=True, num_keypoints=model.keypoint_head.num_keypoints)
    sigmas = sigmas or dataset.schema.sigmas
    target = resolve_device(device)
    model.to(target)
    report = calibrate_model(model, dataset, sigmas=sigmas, method=method, device=target, score_thresh=score_thresh)
    save_checkpoint(out, {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "config": cfg.to_dict(),
                          "keypoint_schema": model.keypoint_schema,
                          "keypoint_calibration": {"method": method, "data": str(data), "score_thresh": score_thresh,
                                                   "keypoints": report.keypoints,
                                                   "ece_before": report.ece_before, "ece_after": report.ece_after}})
    return report
