"""A .pkl is a program: the restricted unpickler admits plain data and numpy arrays only, and refuses
anything else before it can run."""
import pickle

import numpy as np
import pytest

from poseseg import cli
from poseseg.weights import UnsafePickleError, safe_load_pickle


class RunsCodeOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious weights file does: call exec on load
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


class PlainObject:
    pass


def test_plain_data_and_arrays_load(tmp_path):
    data = {"model": {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(2.5)},
            "__author__": "test", "list": [1, 2.0, "x", (3, None, True)]}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):  # caffe2-era files are protocol 2 Python 2 pickles
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = safe_load_pickle(path)
        np.testing.assert_array_equal(loaded["model"]["a.weight"], data["model"]["a.weight"])
        assert loaded["list"] == data["list"] and loaded["model"]["b"] == 2.5


def test_code_on_load_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "payload": RunsCodeOnLoad(marker)}))
    with pytest.raises(UnsafePickleError, match="builtins.exec"):
        safe_load_pickle(path)
    assert not marker.exists()
    # through the CLI: a clear error naming the file, exit code 2, still nothing ran
    assert cli.main(["convert-weights", str(path), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "refused" in err and "Nothing from it was executed" in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_any_class_is_refused(tmp_path):
    path = tmp_path / "object.pkl"
    path.write_bytes(pickle.dumps({"x": PlainObject()}))
    with pytest.raises(UnsafePickleError, match="PlainObject"):
        safe_load_pickle(path)


def test_not_a_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable pickle"):
        safe_load_pickle(path)
