"""The layers' rules that import-linter cannot see (the contracts themselves are in pyproject.toml and
run by `make test` as `lint-imports`)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "poseseg"


def _imports_of_private_names() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("poseseg"):
                found += [f"{path.relative_to(SRC)}:{node.lineno} imports {a.name} from {node.module}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_name():
    assert _imports_of_private_names() == []


def test_the_scan_sees_a_private_import(tmp_path, monkeypatch):
    """The check above can fail: a module that imports a `_name` is reported."""
    (tmp_path / "bad.py").write_text("from poseseg.modeling.model import _split_crowd\n")
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path)
    assert _imports_of_private_names() == ["bad.py:1 imports _split_crowd from poseseg.modeling.model"]
