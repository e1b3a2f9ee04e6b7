"""Checkpoint files: written atomically, read with ``weights_only=True``.

A checkpoint is written to a temporary file and renamed into place, so a process killed at any
moment never leaves a half-written ``.pt``. Loading always uses ``weights_only=True``: nothing but
tensors and plain Python containers comes back, and a file holding other objects is refused.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from poseseg.safe_write import write_atomic


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder + rename); a full disk
    raises :class:`~poseseg.safe_write.WriteFailed` and leaves the previous file intact."""
    return write_atomic(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False: we never give that advice
        raise ValueError(f"checkpoint {path} is not a plain checkpoint: it holds Python objects beyond tensors "
                         "and containers, which poseseg refuses to load. Never load pickles from untrusted "
                         "sources (they can run code); if you made the file yourself, re-save its state_dict "
                         "with torch.save") from None
    except Exception as e:  # corrupt, truncated or foreign file: say which and what to do
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"cannot load checkpoint {path}: it is truncated, corrupt or not a PyTorch checkpoint "
                         f"({reason})") from None


def model_state_from(payload: dict) -> dict:
    """The model state dict in a training checkpoint or a bare state dict."""
    return payload["model"] if isinstance(payload, dict) and "model" in payload else payload
