"""Writing RGB frames to a video file (PyAV): the synthetic-video generator's output and the overlay videos.

It sits in ``data`` so that both ``data.synth_video`` and ``track`` can use it (data never imports track).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

DEFAULT_FPS = 30.0  # the rate of a video asked for with no positive frame rate


class VideoWriter:
    """RGB frames -> an H.264 (or MPEG-4 Part 2 when x264 is missing) video at a given frame rate, via PyAV.

    The file (and its folder) is created with the first frame: a writer that gets none leaves nothing."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(DEFAULT_FPS)
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.pix_fmt = "yuv420p"
        self._size = (width + width % 2, height + height % 2)  # yuv420p needs even sides
        self._stream.width, self._stream.height = self._size

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        if self._container is None:
            self._open(w, h)
        pad_w, pad_h = self._size[0] - w, self._size[1] - h
        if pad_w or pad_h:
            rgb = np.pad(rgb, ((0, max(pad_h, 0)), (0, max(pad_w, 0)), (0, 0)), mode="edge")
            rgb = rgb[:self._size[1], :self._size[0]]  # (H', W', 3): the first frame's even size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
