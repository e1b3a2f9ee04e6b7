"""Where a run stands (its clock) and what that means for the learning rate and the phase.

A run's length is counted in iterations (``train.schedule=iters``: ``train.iters``) or in time
(``train.schedule=time``: ``train.time_limit_minutes``). Either way training has a *progress*
in [0, 1]; with the time clock, warm-up, lr drops and the finishing phase are fractions of the
budget, so a slower machine runs fewer iterations of the same schedule instead of being cut off
before its last lr drop.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from poseseg.config import TrainConfig


class TrainingClock:
    """Progress of a run in [0, 1]: iterations done / ``iters``, or seconds trained / the time budget.

    Seconds trained carry over a resume (``state_dict``). ``clock`` is injectable for tests.
    """

    def __init__(self, train: TrainConfig, *, clock: Callable[[], float] = time.perf_counter):
        self.by_time = train.schedule == "time"
        self.iters = train.iters
        self.budget_s = 60.0 * train.time_limit_minutes
        self.clock = clock
        self.elapsed_before = 0.0  # seconds trained by earlier sessions of this run
        self.started = clock()

    def elapsed(self) -> float:
        return self.elapsed_before + self.clock() - self.started

    def progress(self, iteration: int) -> float:
        if self.by_time:
            return min(1.0, self.elapsed() / self.budget_s)
        return min(1.0, iteration / self.iters)

    def finished(self, iteration: int) -> bool:
        return iteration >= self.iters or (self.by_time and self.elapsed() >= self.budget_s)

    def state_dict(self) -> dict:
        return {"elapsed_seconds": self.elapsed()}

    def load_state_dict(self, state: dict) -> None:
        self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
        self.started = self.clock()


def lr_factor(train: TrainConfig, progress: float, iteration: int) -> float:
    """Multiplier of the base lr: linear warm-up from ``warmup_factor``, then x``lr_gamma`` at each drop.

    By iterations: warm-up over ``warmup_iters``, drops at ``lr_steps``. By time: warm-up over
    ``warmup_fraction`` of the budget, drops at ``lr_step_fractions``.
    """
    if train.schedule == "time":
        f = train.lr_gamma ** sum(progress >= s for s in train.lr_step_fractions)
        warm = progress / train.warmup_fraction if train.warmup_fraction > 0 else 1.0
    else:
        f = train.lr_gamma ** sum(iteration >= s for s in train.lr_steps)
        warm = iteration / train.warmup_iters if train.warmup_iters > 0 else 1.0
    if warm < 1.0:
        f *= train.warmup_factor * (1 - warm) + warm
    return f


def in_finishing_phase(train: TrainConfig, progress: float) -> bool:
    """The last ``finish_fraction`` of the run trains with ``finish_freeze`` applied."""
    return train.finish_fraction > 0 and progress >= 1.0 - train.finish_fraction


class LRSchedule:
    """Sets each param group's lr to its base lr times ``lr_factor`` (called before every step)."""

    def __init__(self, optimizer: torch.optim.Optimizer, train: TrainConfig):
        self.optimizer = optimizer
        self.train = train
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def apply(self, progress: float, iteration: int) -> float:
        factor = lr_factor(self.train, progress, iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return factor
