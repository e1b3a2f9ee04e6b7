"""A training run's checkpoints: names, listing, pruning, integrity, and the RNG state they carry.

The files themselves are written and read by :mod:`poseseg.weights.checkpoint_file` (atomic writes,
``weights_only=True`` loads); a run killed at any moment leaves no half-written ``.pt`` that resume
would pick up.
"""
from __future__ import annotations

import random
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

CKPT_PATTERN = re.compile(r"^model_(\d{7})\.pt$")


def checkpoint_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pt"


def capture_rng_state() -> dict:
    """All RNG streams as tensors / plain Python, loadable with weights_only=True."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def is_complete(path: str | Path) -> bool:
    """Cheap integrity check: a torch zip checkpoint whose central directory is readable (a truncated
    write has none)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def latest_good_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run; each newer broken one is reported on stderr and passed over."""
    for path in reversed(list_checkpoints(run_dir)):
        if is_complete(path):
            return path
        print(f"checkpoint {path} is truncated or corrupt: falling back to the previous one", file=sys.stderr)
    return None


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the ``.model_*.tmp`` files a kill during a checkpoint write left behind."""
    run_dir = Path(run_dir)
    stale = sorted(run_dir.glob(".model_*.pt.*.tmp")) if run_dir.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are never listed)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CKPT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (``model_final.pt`` is never touched)."""
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)

