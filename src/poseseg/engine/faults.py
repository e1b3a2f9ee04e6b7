"""What stops a training run from outside, and how it stops: preemption, a lost rank, a killed data worker.

* Preemption: clusters (SLURM, Kubernetes, spot instances) send SIGTERM or SIGUSR1 some seconds
  before they kill a job. :class:`PreemptionWatch` records the signal; the training loop finishes
  its step, writes a checkpoint and raises :class:`Preempted` (exit code 75, "try again later").
* A rank that dies under torchrun: the survivors' next collective fails. :func:`explain_failures`
  turns that into :class:`RankLost`, naming the dead rank when it ran on this host.
* A data-loading worker killed (usually by the out-of-memory killer): :class:`DataWorkerLost`
  with the fix.

Every message says where the last checkpoint is and how to resume; checkpoints are written
atomically, so the last one is always whole.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from poseseg.engine import checkpoint as ckpt

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "temporary failure, try again" -- requeue the job with --resume


class TrainingStopped(Exception):
    """A run that ended before ``train.iters``; the message says how to continue it."""

    exit_code = 1

    def __init__(self, message: str, *, checkpoint: Path | None = None, quiet: bool = False):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.quiet = quiet  # true on ranks other than 0 when rank 0 says the same


class Preempted(TrainingStopped):
    exit_code = EXIT_PREEMPTED


class RankLost(TrainingStopped):
    pass


class DataWorkerLost(TrainingStopped):
    pass


def resume_hint(run_dir: Path) -> str:
    """Where a stopped run stands and the command that continues it."""
    latest = ckpt.latest_good_checkpoint(run_dir)
    if latest is None:
        return f"no checkpoint was written yet in {run_dir}: start the run again"
    return (f"the last checkpoint is {latest} (whole: checkpoints are written atomically). Continue with "
            f"`poseseg train --resume {run_dir}` (under torchrun: the same torchrun command with "
            f"`-m poseseg train --resume {run_dir}`)")


class PreemptionWatch:
    """Records the first preemption signal; the training loop asks :attr:`requested` after each step.

    Only the first signal is caught: a second one of the same kind gets the default action (the
    process ends at once), so an impatient operator is never ignored. Handlers go in only in the
    main thread (Python allows nothing else) and are restored on exit.
    """

    def __init__(self, signals: list[str] | tuple[str, ...], grace_s: float = 30.0):
        self.signals = [signal.Signals[name] for name in signals]
        self.grace_s = grace_s
        self.received: str | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._warned = False

    @property
    def requested(self) -> bool:
        return self.received is not None

    def __enter__(self) -> "PreemptionWatch":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        sig = signal.Signals(signum)
        if self.received is None:
            self.received = sig.name
        signal.signal(sig, self._previous.get(sig, signal.SIG_DFL))  # a second one ends the process

    def budget_warning(self, step_s: float, save_s: float) -> str | None:
        """Once: a warning when finishing a step and writing a checkpoint may outlast the grace period."""
        if self._warned or not self.signals or step_s + save_s <= self.grace_s:
            return None
        self._warned = True
        return (f"a training step ({step_s:.1f} s) plus a checkpoint write ({save_s:.1f} s) takes longer than "
                f"train.preempt_grace_s={self.grace_s:g}: a preemption may kill the run before its checkpoint "
                "is written. Ask the scheduler for a longer grace period (SLURM: --signal=USR1@120; Kubernetes: "
                "terminationGracePeriodSeconds) and set train.preempt_grace_s to it")


def process_address() -> tuple[str, int]:
    """(host, pid) of this process: gathered from every rank at the start, to name a rank that dies."""
    return socket.gethostname(), os.getpid()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except OSError:
            return True


def dead_ranks(peers: list[tuple[str, int]]) -> list[int]:
    """Ranks on this host whose process is gone (ranks on other hosts cannot be checked from here)."""
    host = socket.gethostname()
    return [r for r, (h, pid) in enumerate(peers) if h == host and not _alive(pid)]


def _is_collective_failure(e: BaseException) -> bool:
    import torch.distributed as tdist

    dist_error = getattr(tdist, "DistError", ())
    text = str(e)
    return (bool(dist_error) and isinstance(e, dist_error)) or (
        isinstance(e, RuntimeError) and any(s in text for s in ("Connection closed by peer", "Connection reset",
                                                                "Broken pipe", "gloo", "NCCL")))


def next_batch(loader):
    """``next(loader)``; a data worker killed mid-transfer can surface as a broken pipe of its queue: it
    is reported as the dead worker it is."""
    try:
        return next(loader)
    except (ConnectionError, EOFError) as e:
        raise RuntimeError(f"DataLoader worker exited unexpectedly ({type(e).__name__}: {e})") from None


def _is_worker_death(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and "DataLoader worker" in text and (
        "exited unexpectedly" in text or "killed by signal" in text)


@dataclass
class LoopPosition:
    iteration: int = 0  # the step the loop is in; set by the loop, read by the messages


@contextmanager
def explain_failures(run_dir: Path, *, rank: int, peers: list[tuple[str, int]]):
    """Turn a failed collective or a dead data worker inside the block into a message that says what
    happened, what to change and how to resume. Yields the :class:`LoopPosition` the loop updates."""
    position = LoopPosition()
    try:
        yield position
    except Exception as e:
        if len(peers) > 1 and _is_collective_failure(e):
            gone = [r for r in dead_ranks(peers) if r != rank]
            who = (f"rank {', '.join(map(str, gone))} died" if gone
                   else "another rank stopped answering (it died or its host is unreachable; torchrun's "
                        "report names it)")
            reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
            raise RankLost(f"rank {rank} of {len(peers)}: {who} at iteration {position.iteration}, so this rank stops "
                           f"too ({reason}). {resume_hint(run_dir)}") from None
        if _is_worker_death(e):
            raise DataWorkerLost(
                f"a data-loading worker died at iteration {position.iteration} ({str(e).strip().splitlines()[0]}). "
                "Usually the out-of-memory killer ended it (`dmesg` says so). Fix: data.num_workers=0 (load in "
                "the main process) or fewer workers, or smaller images (data.max_size, data.train_sizes). "
                f"{resume_hint(run_dir)}") from None
        raise
