"""Keypoint scores as probabilities: a monotone piecewise-linear map fitted on labelled pictures.

A raw keypoint score (the heatmap's peak) has no fixed meaning. After ``poseseg calibrate`` the score
of a keypoint is the probability that it lies within OKS-ks 0.5 of a labelled ground-truth keypoint
(see :mod:`poseseg.engine.calibrate`). The map is ``KNOTS`` (x, y) knots held as buffers, so it is
saved in checkpoints and traced into ONNX graphs (only clamps, products and a sum).
Until it is fitted the map is the identity.
"""
from __future__ import annotations

import torch
from torch import nn

KNOTS = 33


class ScoreCalibration(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("knots_x", torch.linspace(0, 1, KNOTS))  # (KNOTS,) increasing raw scores
        self.register_buffer("knots_y", torch.linspace(0, 1, KNOTS))  # (KNOTS,) non-decreasing probabilities
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set_knots(self, xs, ys) -> None:
        xs = torch.as_tensor(xs, dtype=torch.float32)
        ys = torch.as_tensor(ys, dtype=torch.float32)
        if xs.shape != (KNOTS,) or ys.shape != (KNOTS,):
            raise ValueError(f"a score calibration has {KNOTS} knots, got {tuple(xs.shape)} and {tuple(ys.shape)}")
        if (xs[1:] < xs[:-1]).any() or (ys[1:] < ys[:-1]).any():
            raise ValueError("score calibration knots must be non-decreasing in x and y")
        self.knots_x.copy_(xs)
        self.knots_y.copy_(ys)
        self.fitted.fill_(True)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """(...) raw scores -> (...) probabilities; flat beyond the outer knots."""
        xs, ys = self.knots_x.to(scores.dtype), self.knots_y.to(scores.dtype)
        widths = xs[1:] - xs[:-1]  # (KNOTS - 1,)
        slopes = (ys[1:] - ys[:-1]) / widths.clamp(min=1e-12)
        covered = torch.minimum((scores[..., None] - xs[:-1]).clamp(min=0), widths)  # (..., KNOTS - 1)
        return ys[0] + (covered * slopes).sum(-1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before calibration existed: keep the identity map
        for name in ("knots_x", "knots_y", "fitted"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
