"""What an upload that is not a readable image looks like, from its first bytes (for the 415 message).

``describe_bytes(b"%PDF-1.7 ...")`` -> ``"a PDF document"``. Only the first 64 bytes are looked at.
"""
from __future__ import annotations

import re

HEAD = 64  # bytes looked at

# (first bytes, what the file is); formats a client may well send by mistake, with the fix where there is one
SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or .docx/.xlsx)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "a program (ELF)"),
    (b"ID3", "an MP3 file"),
    (b"OggS", "an Ogg audio or video file"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video (send one frame as a picture)"),
)
FTYP_BRANDS = (  # ISO media files: bytes 4-8 are b"ftyp", bytes 8-12 the brand
    ((b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"),
     "a HEIC/HEIF photo (the iPhone's format: convert it to JPEG)"),
    ((b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"qt  ", b"M4V ", b"3gp4", b"3gp5"),
     "an MP4/QuickTime video (send one frame as a picture)"),
)
BASE64_IMAGES = ((b"/9j/", "JPEG"), (b"iVBORw0KGgo", "PNG"), (b"R0lGOD", "GIF"), (b"UklGR", "WebP"))


def describe_bytes(data: bytes) -> str:
    """A short phrase naming what ``data`` seems to be: a known format, text (quoted), or its first bytes in hex."""
    head = data[:HEAD]
    for prefix, what in SIGNATURES:
        if head.startswith(prefix):
            return what
    if head[4:8] == b"ftyp":
        for brands, what in FTYP_BRANDS:
            if head[8:12] in brands:
                return what
    text = _as_text(head)
    if text is None:
        return "binary data starting " + head[:8].hex(" ")
    return _describe_text(text.lstrip(), head.lstrip())


def looks_like_urlencoded_form(data: bytes) -> list[str] | None:
    """The field names when ``data`` is an HTML form's ``a=1&b=2`` body (``curl -d``), else None."""
    text = _as_text(data[:4096])
    if text is None or len(data) > 4096 or not re.fullmatch(r"[^=&\s]+=[^&\s]*(&[^=&\s]+=[^&\s]*)*", text.strip()):
        return None
    return [pair.split("=", 1)[0] for pair in text.strip().split("&")]


def _describe_text(text: str, head: bytes) -> str:
    for prefix, kind in BASE64_IMAGES:
        if head.startswith(prefix):
            return f"base64 text of a {kind} (send the decoded bytes, not base64)"
    if text.startswith("data:image/"):
        return "a data: URL (send the decoded image bytes, not the URL)"
    lowered = text[:HEAD].lower()
    if "<svg" in lowered:
        return "an SVG drawing (export it as PNG)"
    if lowered.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    if text.startswith(("{", "[")):
        return "JSON text"
    snippet = text[:40].replace("\n", " ").replace("\r", " ")
    return f"text: {snippet!r}{'...' if len(text) > 40 else ''}"


def _as_text(head: bytes) -> str | None:
    """``head`` as text when it is printable UTF-8 (a multi-byte character cut at the end is allowed)."""
    text = head.decode("utf-8", errors="ignore")
    if not text or len(text.encode("utf-8")) < len(head) - 3:
        return None
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return None
    return text
