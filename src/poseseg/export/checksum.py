"""A SHA-256 of an exported file, kept inside the file, so that bytes changed after the export (a bad copy,
a partial download, bit rot) are found when the file is loaded instead of as an ONNX Runtime error deep in
the graph, or as numbers that are silently wrong (a flipped byte in a weight still runs).

The digest is the value of the metadata entry ``poseseg_sha256`` and covers every byte of the file but
its own 64 hex digits: the export serializes the model with 64 zeros as that value, hashes those bytes,
and writes the digest over the zeros (same length, so no other byte moves). Checking reverses it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

CHECKSUM_KEY = "poseseg_sha256"
PLACEHOLDER = "0" * 64


def seal(data: bytes) -> bytes:
    """A serialized model whose ``poseseg_sha256`` entry holds :data:`PLACEHOLDER` -> the same bytes with
    the digest of ``data`` in its place."""
    at = _value_offset(data)
    if at < 0 or data[at:at + len(PLACEHOLDER)] != PLACEHOLDER.encode():
        raise ValueError(f"the serialized model has no '{CHECKSUM_KEY}' entry holding the placeholder")
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:at] + digest + data[at + len(digest):]


def checksum_matches(path: str | Path) -> bool | None:
    """Whether the file still hashes to the digest written into it at export; None for a file without one
    (exported before poseseg wrote checksums)."""
    data = memoryview(Path(path).read_bytes())
    at = _value_offset(data.obj)
    if at < 0:
        return None
    stored = bytes(data[at:at + len(PLACEHOLDER)])
    sha = hashlib.sha256(data[:at])
    sha.update(PLACEHOLDER.encode())
    sha.update(data[at + len(PLACEHOLDER):])
    return sha.hexdigest().encode() == stored


def _value_offset(data: bytes) -> int:
    """Where the value of the (last) ``poseseg_sha256`` entry starts, or -1. In the protobuf bytes a
    string entry is its key, then a two-byte header (field tag, length 64), then its value."""
    key = data.rfind(CHECKSUM_KEY.encode())
    return key + len(CHECKSUM_KEY) + 2 if key >= 0 else -1
