"""Frames in order from a video file, a stream, a capture device or a folder of images.

    with open_source("clip.mkv", max_frames=100, stride=2) as source:
        for frame in source:           # Frame(index, image (H, W, 3) uint8 RGB, time in seconds, name)
            ...
        source.skipped                 # "frame 17 (Invalid data found ...)", one line per unreadable frame

Videos, streams (``rtsp://``, ``http://``, ...) and devices (``/dev/video0``) are decoded by PyAV
(FFmpeg), so any container and codec it reads works. A frame that cannot be decoded, or an
unreadable image in a folder, is skipped with a warning and counted, never the end of the run; a video
file that ends well before the length its header announces (cut short) gets a warning saying so. A
folder is one sequence: its pictures must all have one size (else :class:`SourceError` names the first
that differs).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from poseseg.data.image_io import IMAGE_EXTS, ImageReadError, load_image_rgb, read_image_size

__all__ = ["Frame", "FrameSource", "SourceError", "is_stream", "open_source"]

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
DEFAULT_FOLDER_FPS = 30.0
MAX_CONSECUTIVE_ERRORS = 50  # a stream that fails this many times in a row is over
SHORT_VIDEO_TOLERANCE = 0.05  # a video file may end this fraction (at least 2 frames) short of its header's length


class SourceError(ValueError):
    """A source that cannot be opened at all (missing file, not a video, no image in a folder)."""


@dataclass
class Frame:
    index: int  # position in the source, counting skipped and strided-over frames (0-based)
    image: np.ndarray  # (H, W, 3) uint8 RGB
    time: float  # seconds since the first frame
    name: str = ""  # the image file of a folder source


def is_stream(spec: str) -> bool:
    return spec.lower().startswith(STREAM_PREFIXES) or spec.startswith("/dev/video")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class FrameSource:
    """An ordered sequence of frames; iterate it once. ``fps`` is the source's rate (folders: ``DEFAULT_FOLDER_FPS``)."""

    name: str
    kind: str  # "video" | "stream" | "folder"
    fps: float
    max_frames: int | None = None
    stride: int = 1
    on_skip: Callable[[str], None] = _warn
    skipped: list[str] = field(default_factory=list)
    read: int = 0  # frames yielded
    expected_frames: int | None = None  # a video file's length by its header (frame count, or duration x rate)
    path: str = ""  # the file, folder or URL
    _files: list[Path] = field(default_factory=list)
    _container: object = None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __iter__(self) -> Iterator[Frame]:
        frames = self._folder_frames() if self.kind == "folder" else self._decoded_frames()
        try:
            for frame in frames:  # lazy: nothing past max_frames is read
                self.read += 1
                yield frame
                if self.max_frames is not None and self.read >= self.max_frames:
                    break
        finally:
            self.close()

    def _skip(self, what: str) -> None:
        self.skipped.append(what)
        self.on_skip(f"{self.name}: skipping unreadable {what}")

    def _folder_frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self._files):
            if index % self.stride:
                continue
            try:
                image = load_image_rgb(path)
            except ImageReadError as e:
                self._skip(f"frame {index} {path.name} ({e.reason})")
                continue
            yield Frame(index, image, index / self.fps, path.name)

    def _decoded_frames(self) -> Iterator[Frame]:
        import av

        container = self._container
        stream = container.streams.video[0]
        index, errors = 0, 0
        while errors < MAX_CONSECUTIVE_ERRORS:
            try:
                for packet in container.demux(stream):
                    try:
                        decoded = packet.decode()
                    except av.error.FFmpegError as e:
                        if packet.size:  # a real frame that would not decode
                            self._skip(f"frame {index} ({_reason(e)})")
                            index += 1
                        errors += 1
                        if errors >= MAX_CONSECUTIVE_ERRORS:
                            break
                        continue
                    for vf in decoded:
                        errors = 0
                        if index % self.stride == 0:  # every frame is decoded; only the kept ones converted
                            yield Frame(index, vf.to_ndarray(format="rgb24"), index / self.fps)
                        index += 1
                else:
                    self._check_complete(index)
                    return  # end of the stream
            except av.error.FFmpegError as e:  # the container itself failed mid-way (truncated file, dropped stream)
                self._skip(f"data after frame {index} ({_reason(e)})")
                errors += 1
        self.on_skip(f"{self.name}: {MAX_CONSECUTIVE_ERRORS} read errors in a row; stopping at frame {index}")

    def _check_complete(self, decoded: int) -> None:
        """Warn when a video file ends well before the length its header announces (a file cut short)."""
        expected = self.expected_frames
        if self.kind == "video" and expected and decoded < expected - max(2, SHORT_VIDEO_TOLERANCE * expected):
            self.on_skip(f"{self.path}: only {decoded} of the {expected} frames its header announces could be read; "
                         f"the file is cut short (an interrupted copy, download or recording?), so the results end at "
                         f"frame {decoded - 1}; copy or export the video again for the rest")


def _header_frames(container, video, fps: float) -> int | None:
    """A video file's frame count by its header, else its duration x frame rate; None when it says neither."""
    import av

    if video.frames:
        return int(video.frames)
    if video.duration and video.time_base:
        seconds = float(video.duration * video.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return round(seconds * fps)


def _first_other_size(files: list[Path]) -> str | None:
    """A sentence naming the first picture whose size differs from the first readable one (header reads only;
    unreadable files are left to the frame loop, which skips them with a warning)."""
    first: tuple[Path, tuple[int, int]] | None = None
    for path in files:
        try:
            size = read_image_size(path)
        except ImageReadError:
            continue
        if first is None:
            first = (path, size)
        elif size != first[1]:
            return f"{path.name} is {size[0]}x{size[1]} but {first[0].name} is {first[1][0]}x{first[1][1]}"
    return None


def _reason(error: Exception) -> str:
    text = str(error)
    return text.split(":")[0].split("] ", 1)[-1] if text else type(error).__name__


def open_source(spec: str | Path, *, max_frames: int | None = None, stride: int = 1, fps: float | None = None,
                on_skip: Callable[[str], None] = _warn) -> FrameSource:
    """A video file, a stream URL, a capture device (``/dev/video0``) or a folder of frames in name order.

    ``max_frames``: stop after that many frames; ``stride``: keep every S-th frame; ``fps``: the
    frame rate of a folder (videos report their own). Raises :class:`SourceError` if nothing can be opened.
    """
    if stride < 1:
        raise SourceError(f"stride={stride}: use 1 (every frame) or more")
    if max_frames is not None and max_frames < 1:
        raise SourceError(f"max_frames={max_frames}: use a positive number (or none for all frames)")
    text = str(spec)
    common = dict(max_frames=max_frames, stride=stride, on_skip=on_skip)
    path = Path(text)
    if path.is_dir():
        files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTS), key=_natural_key)
        if not files:
            raise SourceError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
        differs = _first_other_size(files)
        if differs:
            raise SourceError(f"{path}: {differs}; a folder is read as the frames of one video, all of one size, "
                              "to follow people from frame to frame. These look like separate pictures: predict "
                              "them without --track (or put each sequence of one size in its own folder)")
        return FrameSource(name=path.name, kind="folder", fps=float(fps or DEFAULT_FOLDER_FPS), _files=files,
                           path=text, **common)
    stream = is_stream(text)
    if not stream and not path.is_file():
        raise SourceError(f"{text}: no such file or folder (streams start with rtsp://, http://, ... or /dev/video)")
    import av

    try:
        options = {"format": "v4l2"} if text.startswith("/dev/video") and sys.platform.startswith("linux") else {}
        container = av.open(text, **options, timeout=10.0 if stream else None)
    except (av.error.FFmpegError, OSError) as e:
        raise SourceError(f"{text}: cannot open as a video ({_reason(e)}); is it a video file or a reachable "
                          "stream?") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{text}: holds no video stream")
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    rate = video.average_rate or video.guessed_rate or video.base_rate
    expected = None if stream or not rate else _header_frames(container, video, float(rate))
    return FrameSource(name=path.stem if not stream else text, kind="stream" if stream else "video",
                       fps=float(fps or rate or DEFAULT_FOLDER_FPS), _container=container, expected_frames=expected,
                       path=text, **common)
