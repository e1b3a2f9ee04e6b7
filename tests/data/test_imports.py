"""Layering of data and track: data never imports track, and no module takes another's private names."""
import ast
from pathlib import Path

import poseseg

SRC = Path(poseseg.__file__).parent


def _imports(path: Path):
    """(module, [names]) of every import in the file, those inside functions included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names)


def test_data_never_imports_track():
    bad = [f"{p.relative_to(SRC)}: {module}" for p in sorted((SRC / "data").rglob("*.py"))
           for module, _ in _imports(p) if module.startswith("poseseg.track")]
    assert not bad


def test_data_and_track_import_no_private_names_of_other_modules():
    bad = [f"{p.relative_to(SRC)}: {module}.{name}" for package in ("data", "track")
           for p in sorted((SRC / package).rglob("*.py")) for module, names in _imports(p)
           if module.startswith("poseseg") for name in names if name.startswith("_")]
    assert not bad
