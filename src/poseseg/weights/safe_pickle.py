"""Read ``.pkl`` weight files without running them: a pickle is a program, so only plain data may come back.

Admitted: dicts (and OrderedDict), lists, tuples, strings, bytes, numbers, booleans, None and numpy arrays
(through the few numpy globals an array's pickle names: ``_reconstruct``, ``_frombuffer``, ``ndarray``, ``dtype``,
``scalar``;
and ``_codecs.encode`` limited to latin1, which protocol-2 pickles use to rebuild bytes).
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


def _numpy_core(module: str):
    """numpy's ``_core.<module>`` (numpy >= 2) or ``core.<module>`` (numpy 1.x)."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module(f"numpy.core.{module}")


_ALLOWED: dict[tuple[str, str], object] = {}
for _core in ("numpy.core", "numpy._core"):  # pickles name either, depending on the numpy that wrote them
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _numpy_core("multiarray")._reconstruct
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _numpy_core("multiarray").scalar
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _numpy_core("numeric")._frombuffer  # protocol-5 arrays
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("collections", "OrderedDict")] = __import__("collections").OrderedDict


def _bytes_from_latin1(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 writes bytes into protocol-2 pickles as ``_codecs.encode(text, "latin1")``; only that codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r} (only latin1 rebuilds bytes)")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _bytes_from_latin1


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
