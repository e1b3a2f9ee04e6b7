"""A ``predict`` run as parts, one per input, and how processes share them (``torchrun -m poseseg predict``).

Ranks take the inputs in turn (a video or a tracked folder stays whole on one rank; a live stream is read
by rank 0), rank 0 gathers every rank's parts and numbers the pictures in input order exactly as one
process numbers them, so ``predictions.json`` is the same for any number of processes. One process is the
case ``world = 1`` of the same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from poseseg.engine import distributed as dist

FRAME_ID_STRIDE = 100_000  # frame f of the video numbered v is image v * FRAME_ID_STRIDE + f

__all__ = ["FRAME_ID_STRIDE", "Part", "RankFailed", "from_rank0", "gather_parts", "number_parts", "owners",
           "unique_names"]


class RankFailed(ValueError):
    """Another rank stopped the run (its own error is printed by that rank)."""


@dataclass
class Part:
    """What one input gave. ``records``' ``image_id`` counts from the input (0 for a picture, the frame
    index for a video) until :func:`number_parts` gives the run's ids."""

    index: int  # position of the input in the run's input order
    records: list[dict] = field(default_factory=list)  # COCO result records, one per person
    info: dict | None = None  # a picture that was read: file_name, width, height
    frames: int = 0  # video / stream / tracked-folder frames read
    failed: list[str] = field(default_factory=list)  # why (part of) the input could not be used
    skipped_frames: int = 0  # unreadable frames of a sequence (the rest was used)
    tracks: int = 0  # distinct track IDs of a sequence
    visibility: bool = False  # the model predicted keypoint visibility flags


def owners(streams: list[bool], world: int) -> list[int]:
    """The rank that predicts each input: a live stream on rank 0 (it is read once, and a capture device
    such as /dev/video0 is on rank 0's machine), every other input to the ranks in turn after them."""
    owner, turn = [], sum(streams)
    for stream in streams:
        owner.append(0 if stream else turn % world)
        turn += not stream
    return owner


def unique_names(bases: list[str]) -> list[str]:
    """One output name per input, so no two inputs (on any rank) write one file: the first input called
    ``x`` keeps ``x``, a later one becomes ``x_2`` (``x_3``, ...), never a name another input has; case is
    ignored (a case-insensitive disk would mix ``X`` and ``x``)."""
    reserved = {b.casefold() for b in bases}
    used: set[str] = set()
    names = []
    for base in bases:
        name, k = base, 2
        while name.casefold() in used or (name != base and name.casefold() in reserved):
            name, k = f"{base}_{k}", k + 1
        used.add(name.casefold())
        names.append(name)
    return names


def number_parts(parts: list[Part]) -> tuple[list[dict], list[dict]]:
    """The records and image infos (``id``, ``file_name``, ``width``, ``height``) of ``parts`` in input order,
    with the ids one process gives: the n-th picture read is image n; a video read after p pictures and f
    frames is video p + f + 1, and its frame i is image ``(p + f + 1) * FRAME_ID_STRIDE + i``."""
    images = frames = 0
    records: list[dict] = []
    infos: list[dict] = []
    for part in parts:
        if part.info is not None:
            images += 1
            infos.append({"id": images, **part.info})
            base = images
        else:
            base = (images + frames + 1) * FRAME_ID_STRIDE
            frames += part.frames
        for record in part.records:
            record["image_id"] += base
        records += part.records
    return records, infos


def gather_parts(parts: list[Part], error: Exception | None, count: int) -> list[Part] | None:
    """Every rank's parts on rank 0, in input order (None on the other ranks). A rank that stopped with
    ``error`` raises it and the others raise :class:`RankFailed`, so no rank waits for it forever and no
    partial ``predictions.json`` is written. ``count``: the run's inputs, each in exactly one part."""
    stops = dist.all_gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    stopped = [(rank, why) for rank, why in enumerate(stops) if why is not None]
    if stopped:
        rank, why = stopped[0]
        raise RankFailed(f"rank {rank} stopped ({why}); nothing was merged, so no predictions.json is written")
    gathered = dist.gather_objects(parts)
    if gathered is None:
        return None
    merged = sorted((p for rank_parts in gathered for p in rank_parts), key=lambda p: p.index)
    if [p.index for p in merged] != list(range(count)):
        raise RuntimeError(f"the ranks predicted {len(merged)} parts for {count} inputs: an input was lost or "
                           "predicted twice (the ranks must see the same inputs); please report this")
    return merged


def from_rank0(result, error: Exception | None, *, share=lambda result: result):
    """Rank 0's ``result`` on rank 0 and ``share(result)`` on the others (what they need of it). When rank 0
    stopped with ``error``, it raises it and the others raise :class:`RankFailed`."""
    why = None if error is None else f"{type(error).__name__}: {error}"
    sent = dist.broadcast_object((share(result) if why is None else None, why) if dist.is_main() else None)
    if error is not None:
        raise error
    if sent[1] is not None:
        raise RankFailed(f"rank 0 stopped while merging the results ({sent[1]})")
    return result if dist.is_main() else sent[0]
