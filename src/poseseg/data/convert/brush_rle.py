"""Label Studio's BrushLabels masks: its ``rle`` is thi.ng's rle-pack bit stream of the image's RGBA bytes.

The stream, most significant bit first: 32 bits value count, 5 bits word size - 1, four 4-bit run-length
field sizes - 1; then chunks of: 1 bit (1 = a run of one repeated value, 0 = literal values), 2 bits
choosing a run-length field size, that many bits giving the chunk length - 1, then one value (a run) or
length values (literals), each word-size bits. The mask is the alpha channel (every 4th value) > 0.
:func:`encode_brush_rle` writes the same stream (runs of one value, single values as one-value literals).
"""
from __future__ import annotations

import numpy as np

__all__ = ["decode_brush_rle", "encode_brush_rle"]

RUN_BITS = (2, 4, 8, 16)  # the four run-length field sizes the encoder declares in its header


class _Bits:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))  # MSB first
        self.pos = 0

    def read(self, size: int) -> int:
        if self.pos + size > len(self.bits):
            raise ValueError("the brush RLE ends in the middle of a value")
        value = 0
        for bit in self.bits[self.pos:self.pos + size]:
            value = (value << 1) | int(bit)
        self.pos += size
        return value


def decode_brush_rle(rle: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of a Label Studio ``brushlabels`` ``rle`` list."""
    stream = _Bits(bytes(rle))
    count = stream.read(32)
    if count != height * width * 4:
        raise ValueError(f"the brush RLE holds {count} values, not {height} x {width} RGBA pixels "
                         f"({height * width * 4}): original_width/original_height do not fit it")
    word = stream.read(5) + 1
    run_sizes = [stream.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint32)
    i = 0
    while i < count:
        repeated = stream.read(1)
        end = min(i + 1 + stream.read(run_sizes[stream.read(2)]), count)
        if repeated:
            out[i:end] = stream.read(word)
        else:
            for k in range(i, end):
                out[k] = stream.read(word)
        i = end
    return out.reshape(height, width, 4)[..., 3] > 0


def encode_brush_rle(mask: np.ndarray, color: tuple[int, int, int, int] = (255, 255, 255, 255)) -> list[int]:
    """A Label Studio ``brushlabels`` ``rle`` list of a (H, W) bool mask: RGBA ``color`` on the mask, 0 elsewhere."""
    rgba = np.zeros((*np.shape(mask), 4), np.uint8)
    rgba[np.asarray(mask, bool)] = color
    values = rgba.reshape(-1)
    n = values.size
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])  # where each run of one value begins
    lengths = np.diff(np.r_[starts, n])
    longest = 2 ** RUN_BITS[-1]
    bits = [format(n, "032b"), format(8 - 1, "05b"), *(format(b - 1, "04b") for b in RUN_BITS)]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        word = format(int(values[start]), "08b")
        while length:
            chunk = min(length, longest)
            size = next(i for i, b in enumerate(RUN_BITS) if chunk - 1 < 2 ** b)
            bits.append(("1" if chunk > 1 else "0") + format(size, "02b")
                        + format(chunk - 1, f"0{RUN_BITS[size]}b") + word)
            length -= chunk
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return np.packbits(np.frombuffer(stream.encode("ascii"), np.uint8) - ord("0")).tolist()
