"""Files written whole or not at all: a temporary file in the same folder, fsync, rename.

A process killed mid-write, a full disk or a hit quota never leaves a half-written file where a
reader (``--resume``, ``eval``, a user) would pick it up, and the previous version stays intact.
A failed write raises :class:`WriteFailed`, whose message names the path, the free space and the fix.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

# errors that mean "no room": disk full, quota exceeded, file larger than the process may write
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WriteFailed(OSError):
    """A write that did not happen; the file it would have replaced is unchanged."""


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteFailed(e.errno, _explain(path, e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            recorded = _RecordingFile(f)
            write(recorded)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        # a writer may wrap the OSError in its own error (torch.save: "unexpected pos ..."): use the cause
        cause = e if isinstance(e, OSError) else recorded.error if "recorded" in locals() else None
        if cause is not None:
            raise WriteFailed(cause.errno, _explain(path, cause)) from None
        raise
    return path


class _RecordingFile:
    """A binary file that remembers the OSError of a failed ``write``."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def free_space(folder: str | Path) -> str:
    """Free bytes on the filesystem holding ``folder``, human-readable ("1.2 GiB", "unknown")."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def _explain(path: Path, e: OSError) -> str:
    reason = e.strerror or str(e)
    kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
    if e.errno in _NO_ROOM:
        fix = ("free some space or raise the quota / file-size limit (ulimit -f), or write elsewhere"
               if e.errno != errno.EFBIG else "raise the file-size limit (ulimit -f) or write elsewhere")
        return (f"could not write {path}: {reason} ({free_space(path.parent)} free on its filesystem){kept}. "
                f"Fix: {fix}")
    return f"could not write {path}: {reason}{kept}. Fix: check that the folder exists and is writable"
