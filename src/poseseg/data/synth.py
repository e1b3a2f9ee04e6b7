"""Synthetic people in COCO format: the embedded default dataset for the demo, tests and benchmarks.

    from poseseg.data.synth import generate_dataset, render_image
    info = generate_dataset("data/synth", num_train=200, num_val=50, seed=0)
    # data/synth/train/000001.jpg ..., data/synth/train.json, data/synth/val/..., data/synth/val.json

Each image holds 1-5 articulated figures (see ``synth_figure``) of small, medium and large
COCO sizes, front and back views, overlapping in depth order, cut by the image border,
on a cluttered background with person-like distractors (sticks, blobs, headless limbs)
that are not annotated; sometimes a non-person object stands in front of people.

Annotations follow COCO: ``segmentation`` is the person's *visible* region as RLE (what is
covered by someone or something in front is not part of it), ``bbox`` is that mask's tight
box, ``area`` its pixel count. Keypoint visibility: 2 = on the person's visible mask;
1 = inside the image but covered by a person / object in front, or a face keypoint (nose,
eyes) of a figure seen from the back; 0 = outside the image, stored as x = y = 0. As in COCO,
people smaller than 32² px (visible area) carry no keypoints at all (``num_keypoints = 0``).
Front and back views differ as real people do: a face (eyes, nose, mouth, hair line), a shirt with a
neckline, placket and buttons and shoes with toe caps in front; hair, a collar band, a seam and heels
at the back. Each annotation also carries ``view`` ("front" / "back"); pycocotools ignores it.

Everything is drawn from a numpy Generator seeded per image by (seed, split, index), so the
same seed gives byte-identical files whatever the number of worker processes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw
from pycocotools import mask as mask_utils

from poseseg.keypoint_schema import coco_person_category
from poseseg.data.synth_figure import FACE_KEYPOINTS, Layer, pick, render_distractor, render_person

JPEG_QUALITY = 90
SYNTH_VERSION = "2.0"  # 2.0: front/back cues, no keypoints on people under 32² px
SMALL_AREA, LARGE_AREA = 32 ** 2, 96 ** 2
MIN_VISIBLE_FRACTION = 0.25  # of a person's full (unoccluded, untruncated) drawing
MIN_VISIBLE_AREA = 20
_SPLITS = {"train": 0, "val": 1}


# ----------------------------------------------------------------------------- sizes
def _sample_size(rng: np.random.Generator, image_size) -> tuple[int, int]:
    """image_size: int (square), (w, h), or ((w_lo, w_hi), (h_lo, h_hi)) sampled per image."""
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    w, h = image_size
    if isinstance(w, (tuple, list)):
        return int(rng.integers(w[0], w[1] + 1)), int(rng.integers(h[0], h[1] + 1))
    return int(w), int(h)


def size_class(area: float) -> str:
    return "small" if area < SMALL_AREA else ("medium" if area < LARGE_AREA else "large")


# ----------------------------------------------------------------------------- background
def make_background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Gradient + blotchy low-frequency colour noise + random shapes (+ sometimes a floor)."""
    corners = Image.fromarray(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8))
    img = corners.resize((w, h), Image.BILINEAR)
    alpha = rng.uniform(0, 0.45)
    if alpha > 0.05:
        cell = int(rng.integers(8, 40))
        coarse = Image.fromarray(rng.integers(0, 256, (h // cell + 2, w // cell + 2, 3), dtype=np.uint8))
        blotch = coarse.resize(((w // cell + 2) * cell, (h // cell + 2) * cell), Image.BILINEAR).crop((0, 0, w, h))
        img = Image.blend(img, blotch, alpha)
    draw = ImageDraw.Draw(img)
    col = lambda: tuple(int(c) for c in rng.integers(0, 256, 3))  # noqa: E731
    if rng.random() < 0.5:  # floor / horizon
        y_l, y_r = rng.uniform(0.35, 0.85, 2) * h
        draw.polygon([(0, y_l), (w, y_r), (w, h), (0, h)], fill=col())
        if rng.random() < 0.4:  # floor tiles / planks
            step = rng.uniform(8, 30)
            c2 = col()
            for x in np.arange(-w, 2 * w, step):
                draw.line([(x, h), (w / 2 + (x - w / 2) * 0.3, min(y_l, y_r))], fill=c2, width=1)
    for _ in range(int(rng.integers(4, 22))):
        kind = rng.integers(5)
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        sx, sy = rng.uniform(0.02, 0.35, 2) * (w, h)
        if kind == 0:
            draw.rectangle([x, y, x + sx, y + sy], fill=col())
        elif kind == 1:
            draw.ellipse([x, y, x + sx, y + sy], fill=col())
        elif kind == 2:
            n = int(rng.integers(3, 7))
            pts = np.stack([x + rng.uniform(-1, 1, n) * sx, y + rng.uniform(-1, 1, n) * sy], 1)
            draw.polygon([tuple(p) for p in pts.tolist()], fill=col())
        elif kind == 3:
            draw.line([(x, y), (x + rng.uniform(-1, 1) * sx * 2, y + rng.uniform(-1, 1) * sy * 2)],
                      fill=col(), width=int(rng.integers(1, 9)))
        else:  # striped patch
            c1, c2 = col(), col()
            draw.rectangle([x, y, x + sx, y + sy], fill=c1)
            period = rng.uniform(3, 12)
            for yy in np.arange(y, y + sy, 2 * period):
                draw.rectangle([x, yy, x + sx, min(yy + period, y + sy)], fill=c2)
    return img


# ----------------------------------------------------------------------------- compositing
def clip_layer(layer: Layer, w: int, h: int):
    """The part of ``layer`` inside a w x h image: (image slice y, image slice x, (its slices in the layer)),
    or None if the layer lies outside."""
    lh, lw = layer.mask.shape
    xa, ya = max(layer.x0, 0), max(layer.y0, 0)
    xb, yb = min(layer.x0 + lw, w), min(layer.y0 + lh, h)
    if xa >= xb or ya >= yb:
        return None
    return (slice(ya, yb), slice(xa, xb),
            (slice(ya - layer.y0, yb - layer.y0), slice(xa - layer.x0, xb - layer.x0)))


def owner_map(layers: list[Layer], w: int, h: int) -> np.ndarray:
    """(h, w) int16: at each pixel the index of the front-most layer covering it (later is in front), -1 none."""
    owner = np.full((h, w), -1, dtype=np.int16)
    for i, layer in enumerate(layers):
        c = clip_layer(layer, w, h)
        if c is not None:
            sy, sx, loc = c
            owner[sy, sx][layer.mask[loc]] = i
    return owner


def _sample_people_heights(rng: np.random.Generator, n: int, short: int) -> list[float]:
    heights, n_large = [], 0
    for _ in range(n):
        r = rng.random()
        if r < 0.36:
            lo, hi = 0.09, 0.22
        elif r < 0.78 or n_large >= 2:
            lo, hi = 0.22, 0.6
        else:
            lo, hi = 0.6, 1.4
            n_large += 1
        heights.append(short * float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
    return heights


def render_image(rng: np.random.Generator | int, size=(320, 320), *, max_people: int = 5,
                 max_distractors: int = 4, p_occluder: float = 0.25, people_scale: float = 1.0,
                 pose_spread: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    """One synthetic picture and its people.

    Returns (image HxWx3 uint8, people), each person a dict with ``mask`` (HxW bool, the
    visible region), ``full_mask`` (HxW bool, the whole figure clipped to the image, including
    parts hidden behind things in front), ``keypoints`` (17, 3) float32 (x, y, v), ``bbox``
    [x, y, w, h] (tight box of ``mask``), ``area`` (mask pixels), ``view`` and ``height``.
    ``size`` is (w, h), an int, or ((w_lo, w_hi), (h_lo, h_hi)). ``people_scale`` multiplies every
    person's height and ``pose_spread`` every joint angle (1, 1: the default mix; other values draw
    people of other sizes and poses, to test a model on what it was not tuned on).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    w, h = _sample_size(rng, size)
    short = min(w, h)
    for _attempt in range(8):
        img, people = _render_once(rng, w, h, short, max_people, max_distractors, p_occluder, people_scale,
                                   pose_spread)
        if people:
            break
    return img, people


def paste_layer(img: Image.Image, layer: Layer) -> None:
    """Draw ``layer`` over ``img`` where its mask is set."""
    img.paste(Image.fromarray(layer.rgb), (layer.x0, layer.y0), Image.fromarray(layer.mask))


def _render_once(rng, w, h, short, max_people, max_distractors, p_occluder, people_scale=1.0, pose_spread=1.0):
    img = make_background(rng, w, h)
    for _ in range(int(rng.integers(0, max_distractors + 1))):
        paste_layer(img, render_distractor(rng, short * float(np.exp(rng.uniform(np.log(0.1), np.log(0.6)))),
                                      (rng.uniform(0, w), rng.uniform(0, h))))

    n = 1 + pick(rng, _count_probs(max_people))
    heights = [people_scale * hf for hf in _sample_people_heights(rng, n, short)]
    layers, depth = [], []
    for hf in heights:
        px = rng.uniform(-0.05, 1.05) * w
        py = rng.uniform(0.05, 0.95) * h if hf < 0.9 * h else rng.uniform(0.3, 0.7) * h
        layers.append(render_person(rng, hf, (px, py), pose_spread=pose_spread))
        depth.append(py + 0.5 * hf + rng.normal(0, 0.08 * h))
    if rng.random() < p_occluder:
        d = render_distractor(rng, short * rng.uniform(0.15, 0.5), (rng.uniform(0, w), rng.uniform(0, h)))
        layers.append(d)
        depth.append(rng.uniform(0, 1.5 * h))
    layers = [layers[i] for i in np.argsort(np.asarray(depth), kind="stable")]

    # drop people too hidden or too far outside to be worth annotating (never draw them)
    while True:
        owner = owner_map(layers, w, h)
        visible = np.bincount(owner.ravel() + 1, minlength=len(layers) + 1)[1:]
        worst, worst_frac = -1, 1.0
        for i, layer in enumerate(layers):
            if layer.kind != "person":
                continue
            frac = visible[i] / max(int(layer.mask.sum()), 1)
            if (visible[i] < MIN_VISIBLE_AREA or frac < MIN_VISIBLE_FRACTION) and frac <= worst_frac:
                worst, worst_frac = i, frac
        if worst < 0:
            break
        layers.pop(worst)

    for layer in layers:
        paste_layer(img, layer)
    k = int(rng.integers(0, 9))  # sensor-like luminance noise, uniform in [-k, k]
    if k > 1:
        n1 = Image.fromarray(rng.integers(0, 2 * k + 1, (h, w), dtype=np.uint8))
        img = ImageChops.add(img, Image.merge("RGB", (n1, n1, n1)), scale=1.0, offset=-k)
    img = np.array(img)

    people = []
    for i, layer in enumerate(layers):
        if layer.kind != "person":
            continue
        sy, sx, loc = clip_layer(layer, w, h)
        vis_local = owner[sy, sx] == i
        vis = np.zeros((h, w), dtype=bool)
        vis[sy, sx] = vis_local
        full = np.zeros((h, w), dtype=bool)
        full[sy, sx] = layer.mask[loc]
        kps = np.zeros((17, 3), dtype=np.float32)
        for k, (x, y) in enumerate(layer.keypoints):
            if not (0 <= x < w and 0 <= y < h):
                continue
            on = vis[int(np.floor(y)), int(np.floor(x))]
            hidden = layer.view == "back" and k in FACE_KEYPOINTS
            kps[k] = (x, y, 2 if on and not hidden else 1)
        ys, xs = np.nonzero(vis_local)
        xs, ys = xs + sx.start, ys + sy.start
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        people.append({"mask": vis, "full_mask": full, "keypoints": kps, "bbox": bbox, "area": int(len(ys)),
                       "view": layer.view, "height": float(layer.height)})
    return img, people


def _count_probs(max_people: int) -> list[float]:
    p = [0.22, 0.24, 0.2, 0.17, 0.17][:max_people] + [0.1] * max(0, max_people - 5)
    return [v / sum(p) for v in p]


# ----------------------------------------------------------------------------- COCO writing
def person_to_coco(person: dict, ann_id: int, image_id: int) -> dict:
    """One COCO annotation. As in COCO, people smaller than 32² px carry no keypoints (all zeros,
    ``num_keypoints = 0``), so keypoint training and OKS evaluation ignore them."""
    rle = mask_utils.encode(np.asfortranarray(person["mask"].astype(np.uint8)))
    kps = person["keypoints"]
    if person["area"] < SMALL_AREA:
        kps = np.zeros_like(kps)
    flat = []
    for x, y, v in kps.tolist():
        flat += [round(x, 2), round(y, 2), int(v)]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(person["area"]), "bbox": [float(b) for b in person["bbox"]],
            "keypoints": flat, "num_keypoints": int((kps[:, 2] > 0).sum()), "view": person["view"]}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The Generator of image ``index`` of a split: independent of how images are spread over processes."""
    key = (_SPLITS.get(split, 2), int(index))
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=key))


def _make_one(args) -> tuple[dict, list[dict]]:
    """Render, save and annotate image ``index`` of a split (annotation ids filled in later)."""
    out_dir, split, index, seed, image_size, kwargs = args
    img, people = render_image(image_rng(seed, split, index), image_size, **kwargs)
    name = f"{index + 1:06d}.jpg"
    Image.fromarray(img).save(os.path.join(out_dir, split, name), format="JPEG", quality=JPEG_QUALITY)
    image = {"id": index + 1, "file_name": name, "width": int(img.shape[1]), "height": int(img.shape[0]), "license": 1}
    return image, [person_to_coco(p, 0, index + 1) for p in people]


def _write_split(out_dir: str, split: str, num: int, seed: int, image_size, workers: int, kwargs: dict) -> dict:
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    jobs = [(out_dir, split, i, seed, image_size, kwargs) for i in range(num)]
    if workers > 1 and num > 1:
        import multiprocessing as mp
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            results = pool.map(_make_one, jobs, chunksize=max(1, num // (workers * 8)))
    else:
        results = [_make_one(j) for j in jobs]
    images, anns = [], []
    for image, image_anns in results:
        images.append(image)
        for a in image_anns:
            a["id"] = len(anns) + 1
            anns.append(a)
    coco = {"info": {"description": "poseseg synthetic people", "version": SYNTH_VERSION, "contributor": "poseseg",
                     "split": split, "seed": int(seed), "year": 2025, "date_created": ""},
            "licenses": [{"id": 1, "name": "CC0 1.0: synthetic images generated by poseseg",
                          "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
            "categories": [coco_person_category()], "images": images, "annotations": anns}
    path = os.path.join(out_dir, f"{split}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    os.replace(tmp, path)
    sizes = {"small": 0, "medium": 0, "large": 0}
    for a in anns:
        sizes[size_class(a["area"])] += 1
    return {"json": path, "image_dir": os.path.join(out_dir, split), "images": len(images),
            "annotations": len(anns), "sizes": sizes}


def generate_dataset(out_dir: str | os.PathLike, *, num_train: int, num_val: int, seed: int = 0,
                     image_size=(320, 320), workers: int = 1, max_people: int = 5,
                     max_distractors: int = 4, p_occluder: float = 0.25, people_scale: float = 1.0,
                     pose_spread: float = 1.0) -> dict:
    """Write a COCO-format synthetic people dataset.

    Layout: ``out_dir/train/000001.jpg ...``, ``out_dir/train.json``, ``out_dir/val/...``,
    ``out_dir/val.json``; ``file_name`` in the JSON is relative to the split's image folder.
    ``image_size``: int, (w, h), or ((w_lo, w_hi), (h_lo, h_hi)) sampled per image.
    ``workers`` > 1 renders in that many processes (same bytes as one process).
    Returns {"root", "train": {json, image_dir, images, annotations, sizes}, "val": {...}}.
    """
    out_dir = str(Path(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    kwargs = {"max_people": max_people, "max_distractors": max_distractors, "p_occluder": p_occluder,
              "people_scale": people_scale, "pose_spread": pose_spread}
    result = {"root": out_dir}
    for split, num in (("train", num_train), ("val", num_val)):
        result[split] = _write_split(out_dir, split, int(num), seed, image_size, workers, kwargs)
    return result


def main_synth(out: str, train: int = 200, val: int = 50, seed: int = 0, size=320, workers: int = 1,
               people_scale: float = 1.0, pose_spread: float = 1.0) -> dict:
    """CLI helper: generate and print a one-line summary per split."""
    if people_scale <= 0 or pose_spread < 0:
        raise ValueError(f"--people-scale {people_scale} must be > 0 and --pose-spread {pose_spread} >= 0 "
                         "(1 and 1 draw the default mix)")
    info = generate_dataset(out, num_train=train, num_val=val, seed=seed, image_size=size, workers=workers,
                            people_scale=people_scale, pose_spread=pose_spread)
    for split in ("train", "val"):
        s = info[split]
        print(f"{split}: {s['images']} images, {s['annotations']} people "
              f"(small {s['sizes']['small']}, medium {s['sizes']['medium']}, large {s['sizes']['large']}) "
              f"-> {s['json']}")
    return info
