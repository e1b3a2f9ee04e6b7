"""Run folders and what a run writes while it trains: metrics.jsonl, TensorBoard, progress; atomic result files."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path


def next_run_dir(root: str | Path, name: str = "") -> Path:
    """``root/NAME`` auto-numbered (``exp``, ``exp2``, ...): the first name not taken; not created."""
    root = Path(root)
    base = name or "exp"
    taken = {p.name for p in root.iterdir()} if root.is_dir() else set()
    if base not in taken:
        return root / base
    nums = [int(m.group(1)) for t in taken if (m := re.fullmatch(re.escape(base) + r"(\d+)", t))]
    return root / f"{base}{max(nums + [1]) + 1}"


def new_run_dir(root: str | Path, name: str = "") -> Path:
    """:func:`next_run_dir`, created: an existing run is never overwritten."""
    path = next_run_dir(root, name)
    path.mkdir(parents=True, exist_ok=False)
    return path


def output_dir(out: str | Path | None, default_root: str | Path, default_name: str = "exp") -> Path:
    """The folder an ``--out`` flag names, or a new numbered one beside it when it already holds files
    (``out`` -> ``out2``), so old predictions, metrics and overlays are never overwritten or mixed in.

    Not created here: the caller creates it when it writes its first file, so a run that fails before
    that leaves no empty folder behind."""
    if not out:
        return next_run_dir(default_root, default_name)
    out = Path(out)
    return next_run_dir(out.parent, out.name) if out.is_dir() and any(out.iterdir()) else out


class RunLogger:
    """metrics.jsonl (one JSON object per logged step), TensorBoard if installed, and a progress
    line: a tqdm bar with ETA on a terminal, plain lines otherwise."""

    def __init__(self, run_dir: Path, *, total_iters: int, start_iter: int, enabled: bool = True,
                 remaining_s: float | None = None):
        self.enabled = enabled
        self.total = total_iters
        self.remaining_s = remaining_s  # a run bounded by time (train.schedule=time): its eta is the time left
        self.start_time = time.perf_counter()
        self.start_iter = start_iter
        self.jsonl = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: the jsonl has everything
                self.tb = None
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            # bounded by time: no iteration total (tqdm then shows the count and the rate)
            self.bar = tqdm(total=None if remaining_s is not None else total_iters, initial=start_iter, unit="it",
                            dynamic_ncols=True)

    def log(self, iteration: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"iter": iteration, **values}
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, iteration)
        loss_text = " ".join(f"{k.removeprefix('loss_')}={v:.3f}" for k, v in values.items() if k.startswith("loss"))
        if not loss_text:  # e.g. evaluation results: in the jsonl and TensorBoard, printed as a table elsewhere
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"lr={values.get('lr', 0):.4g} {loss_text}", refresh=False)
        else:
            done = iteration - self.start_iter
            elapsed = time.perf_counter() - self.start_time
            eta = elapsed / max(done, 1) * (self.total - iteration)
            if self.remaining_s is not None:
                eta = max(self.remaining_s - elapsed, 0.0)
            total = "" if self.remaining_s is not None else f"/{self.total}"
            print(f"[{iteration}{total}] lr={values.get('lr', 0):.4g} {loss_text} "
                  f"({values.get('time_s', 0):.2f}s/it, eta {eta / 60:.1f} min)", flush=True)

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
