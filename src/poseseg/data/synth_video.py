"""Synthetic video with ground-truth tracks: a few figures walking, turning, crossing and occluding each other.

    from poseseg.data.synth_video import generate_video
    info = generate_video("data/synth_video", frames=90, people=3, seed=0)
    # data/synth_video/video.mp4, data/synth_video/video.json (COCO + track_id), frames/000001.jpg ... (optional)

Each figure is drawn by the still-image renderer (``synth_figure.render_person``) from its own
seed every frame, so it keeps its looks; it walks back and forth along its own depth line, turns
around at the ends of its path (front <-> back view), bobs with its steps and grows as it comes
closer. Paths overlap, so figures cross and the one further away is hidden behind the nearer
one; a static object stands in front of part of the scene. The figures keep one pose while they
move (the renderer draws one pose per seed).

The JSON is COCO keypoints with one image per frame (``frame`` index, ``video`` name) and
``track_id`` on every annotation; ``segmentation`` is the visible region, as in the still
dataset. A person less than ``MIN_VISIBLE_FRACTION`` visible is drawn but not annotated.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from poseseg.keypoint_schema import coco_person_category
from poseseg.data.synth import (MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION, clip_layer, make_background, owner_map,
                                paste_layer, person_to_coco)
from poseseg.data.synth_figure import FACE_KEYPOINTS, render_distractor, render_person
from poseseg.data.video_io import VideoWriter


@dataclass
class Walker:
    """One figure's path: back and forth between x_min and x_max along a slowly drifting depth line."""

    seed: int
    height: float  # pixels at the bottom of the image; smaller further up (perspective)
    x_min: float
    x_max: float
    x0: float
    speed: float  # pixels per frame, signed: + walks right
    y0: float  # pelvis y at the start
    drift: float  # pelvis y change per frame (towards or away from the camera)
    bob: float  # vertical bob amplitude, in pixels
    step_period: float  # frames per step
    facing_front_when_right: bool


def _walkers(rng: np.random.Generator, people: int, w: int, h: int) -> list[Walker]:
    out = []
    for i in range(people):
        y0 = h * (0.45 + 0.3 * (i + rng.uniform(0, 0.6)) / people)  # one depth lane each: crossings occlude
        height = h * rng.uniform(0.42, 0.58)
        margin = 0.12 * w
        direction = 1.0 if i % 2 == 0 else -1.0  # alternate directions: neighbours cross
        out.append(Walker(seed=int(rng.integers(2 ** 31)), height=height, x_min=margin, x_max=w - margin,
                          x0=float(margin + rng.uniform(0, 0.25) * w if direction > 0
                                   else w - margin - rng.uniform(0, 0.25) * w),
                          speed=direction * rng.uniform(0.012, 0.022) * w, y0=float(y0),
                          drift=float(rng.uniform(-0.0015, 0.0015) * h), bob=float(rng.uniform(0.008, 0.015) * height),
                          step_period=float(rng.uniform(5, 8)), facing_front_when_right=bool(rng.random() < 0.5)))
    return out


def _position(wk: Walker, t: int, h: int) -> tuple[float, float, float, str]:
    """(pelvis x, pelvis y, height, view) at frame t: a ping-pong walk with a turn at each end."""
    span = wk.x_max - wk.x_min
    start = wk.x0 - wk.x_min if wk.speed > 0 else wk.x_max - wk.x0  # distance from the end it starts at
    s = (start + abs(wk.speed) * t) % (2 * span)
    forward = s < span  # still walking in the starting direction
    offset = s if forward else 2 * span - s
    x = wk.x_min + offset if wk.speed > 0 else wk.x_max - offset
    moving_right = forward == (wk.speed > 0)
    y = wk.y0 + wk.drift * t - wk.bob * abs(np.sin(np.pi * t / wk.step_period))
    height = wk.height * (0.55 + 0.45 * y / h)  # nearer (lower in the image) is larger
    view = "front" if moving_right == wk.facing_front_when_right else "back"
    return float(x), float(y), float(height), view


def render_frame(background: np.ndarray, walkers: list[Walker], t: int, *, occluder=None,
                 noise_rng: np.random.Generator | None = None) -> tuple[np.ndarray, list[dict]]:
    """Frame t: (image (H, W, 3) uint8, annotated people with ``track_id``, ``visibility`` and the still fields)."""
    h, w = background.shape[:2]
    layers, depth, ids = [], [], []
    for track_id, wk in enumerate(walkers, start=1):
        x, y, height, view = _position(wk, t, h)
        layers.append(render_person(np.random.default_rng(wk.seed), height, (x, y), view=view))
        depth.append(y + 0.5 * height)  # feet further down = nearer the camera = drawn later
        ids.append(track_id)
    order = np.argsort(np.asarray(depth), kind="stable")
    layers, ids = [layers[i] for i in order], [ids[i] for i in order]
    if occluder is not None:
        layers.append(occluder)
        ids.append(0)
    img = Image.fromarray(background)
    for layer in layers:
        paste_layer(img, layer)
    image = np.array(img)
    if noise_rng is not None:  # sensor noise, different every frame
        image = np.clip(image.astype(np.int16) + noise_rng.integers(-3, 4, image.shape[:2])[..., None], 0, 255)
        image = image.astype(np.uint8)
    owner = owner_map(layers, w, h)
    people = []
    for i, (layer, track_id) in enumerate(zip(layers, ids)):
        if layer.kind != "person":
            continue
        clip = clip_layer(layer, w, h)
        if clip is None:
            continue
        sy, sx, loc = clip
        visible = np.zeros((h, w), dtype=bool)
        visible[sy, sx] = owner[sy, sx] == i
        area = int(visible.sum())
        fraction = area / max(int(layer.mask.sum()), 1)
        if area < MIN_VISIBLE_AREA or fraction < MIN_VISIBLE_FRACTION:
            continue
        kps = np.zeros((17, 3), dtype=np.float32)
        for k, (kx, ky) in enumerate(layer.keypoints):
            if 0 <= kx < w and 0 <= ky < h:
                on = visible[int(np.floor(ky)), int(np.floor(kx))]
                kps[k] = (kx, ky, 2 if on and not (layer.view == "back" and k in FACE_KEYPOINTS) else 1)
        ys, xs = np.nonzero(visible)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        people.append({"mask": visible, "keypoints": kps, "bbox": bbox, "area": area, "view": layer.view,
                       "track_id": track_id, "visibility": round(float(fraction), 3)})
    people.sort(key=lambda p: p["track_id"])
    return image, people


def generate_video(out_dir: str | os.PathLike, *, frames: int = 90, people: int = 3, seed: int = 0,
                   size: tuple[int, int] = (320, 240), fps: float = 15.0, write_frames: bool = False) -> dict:
    """Write ``video.mp4`` and ``video.json`` (and with ``write_frames`` the JPEG frames in ``frames/``).

    Returns {"video", "json", "frames_dir" (or None), "frames", "tracks", "annotations", "fps"}.
    """
    if frames < 1 or people < 1:
        raise ValueError(f"frames={frames}, people={people}: both must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, h = int(size[0]), int(size[1])
    rng = np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(3,)))
    background = np.array(make_background(rng, w, h))
    walkers = _walkers(rng, people, w, h)
    occluder = render_distractor(rng, h * 0.45, (rng.uniform(0.3, 0.7) * w, h * 0.55))
    noise_rng = np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(4,)))
    frames_dir = out / "frames" if write_frames else None
    if frames_dir is not None:
        frames_dir.mkdir(exist_ok=True)
    images, annotations = [], []
    with VideoWriter(out / "video.mp4", fps) as writer:
        for t in range(frames):
            image, annotated = render_frame(background, walkers, t, occluder=occluder, noise_rng=noise_rng)
            writer.write(image)
            name = f"{t + 1:06d}.jpg"
            if frames_dir is not None:
                Image.fromarray(image).save(frames_dir / name, quality=92)
            images.append({"id": t + 1, "file_name": name, "width": w, "height": h, "frame": t, "video": "video.mp4",
                           "license": 1})
            for person in annotated:
                ann = person_to_coco(person, len(annotations) + 1, t + 1)
                ann.update(track_id=person["track_id"], visibility=person["visibility"])
                annotations.append(ann)
    coco = {"info": {"description": "poseseg synthetic video", "version": "1.0", "seed": int(seed), "fps": fps,
                     "frames": frames, "people": people},
            "licenses": [{"id": 1, "name": "CC0 1.0: synthetic images generated by poseseg",
                          "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
            "videos": [{"id": 1, "file_name": "video.mp4", "fps": fps, "frames": frames}],
            "categories": [coco_person_category()], "images": images, "annotations": annotations}
    (out / "video.json").write_text(json.dumps(coco, separators=(",", ":")))
    return {"video": str(out / "video.mp4"), "json": str(out / "video.json"),
            "frames_dir": str(frames_dir) if frames_dir else None, "frames": frames, "fps": fps,
            "tracks": len({a["track_id"] for a in annotations}), "annotations": len(annotations)}


def main_synth_video(out: str, frames: int = 90, people: int = 3, seed: int = 0, size: int = 320,
                     fps: float = 15.0) -> dict:
    """CLI helper: write the sequence (video, JSON and frames) and print a one-line summary."""
    info = generate_video(out, frames=frames, people=people, seed=seed, size=(size, size * 3 // 4), fps=fps,
                          write_frames=True)
    print(f"video: {info['frames']} frames at {info['fps']:g} fps, {info['tracks']} people, "
          f"{info['annotations']} annotations -> {info['video']}, {info['json']}, {info['frames_dir']}")
    return info
