"""Small videos for the tracking tests: MJPEG in Matroska, with chosen frames replaced by garbage."""
import io
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def write_mjpeg_clip(path: Path, frames: list[np.ndarray], fps: int = 10, corrupt: tuple[int, ...] = ()) -> Path:
    """Each frame a JPEG packet; the packets of the ``corrupt`` frame indices hold bytes no decoder reads."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuvj420p"
        stream.time_base = Fraction(1, fps)
        for i, frame in enumerate(frames):
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=92)
            packet = av.Packet(b"\x00not a jpeg\xff" * 40 if i in corrupt else buf.getvalue())
            # in frame units: Matroska keeps its own time base and rescales (the header then holds the true duration)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, fps)
            packet.duration = 1
            container.mux(packet)
    return path
