"""Read ``.pkl`` weight files without running them: a pickle is a program, so only plain data may come back.

Admitted: dicts (and OrderedDict), lists, tuples, strings, bytes, numbers, booleans, None and numpy arrays
(through the few numpy globals an array's pickle names: ``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``).
Any other global (a class, ``os.system``, ``builtins.eval``, ...) is refused before it is looked up, so
nothing in the file is executed.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np


class UnsafePickleError(ValueError):
    """The pickle names something other than plain data and numpy arrays."""


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


_ALLOWED: dict[tuple[str, str], object] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _numpy_multiarray()._reconstruct
    _ALLOWED[(_module, "scalar")] = _numpy_multiarray().scalar
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("collections", "OrderedDict")] = __import__("collections").OrderedDict


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # caffe2-era pickles are Python 2 pickles
        self.source = source

    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load '{module}.{name}': a weights .pkl may hold only dicts, lists, "
                "strings, numbers and numpy arrays, and this file names other code, which would run on loading. "
                "Nothing from it was executed. If you trust the file, convert it to a state dict of tensors "
                "yourself and save it with torch.save")
        return found

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused a persistent reference in the pickle ({pid!r})")


def safe_load_pickle(path: str | Path) -> object:
    """Unpickle ``path`` admitting only plain data and numpy arrays (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated, not a pickle, ...
        raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
