"""Pictures of predictions and ground truth: boxes, translucent masks, skeletons, offsets.

* Masks: one distinct colour per person, blended at ``mask_alpha`` with a solid outline.
* Skeletons: limbs between two left keypoints (or left and centre) in :data:`LEFT_COLOR`,
  right ones in :data:`RIGHT_COLOR`, centre ones (both sides, e.g. shoulder to shoulder, or
  no side) in :data:`CENTER_COLOR`; each line has a dark outline so it reads on any
  background. Keypoints under ``keypoint_thresh`` (their score, or for ground truth their
  visibility, where 0 = unlabelled) are hidden, and so are limbs touching them.
* Sizes scale with the image: line widths, dot radii and label fonts are proportional to
  the longer side (640 px gives 3 px limbs).
* ``show_offsets=True`` draws the keypoint refinement: an arrow from each ``offsets`` point
  (e.g. the heatmap peak before refinement, ``keypoint_peaks`` of the model) to the refined
  keypoint.

``draw(..., return_stats=True)`` also returns what was drawn (people, boxes, masks, skeletons,
limbs, keypoints, arrows), for tests and logs.
"""
from __future__ import annotations

import colorsys
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from poseseg.keypoint_schema import KeypointSchema, coco_person_schema

__all__ = ["draw", "draw_ground_truth", "draw_sampling_points", "draw_deform_sampling", "deform_sampling_points",
           "to_pil", "person_color",
           "LEFT_COLOR", "RIGHT_COLOR", "CENTER_COLOR", "limb_side"]

LEFT_COLOR = (30, 144, 255)  # blue
RIGHT_COLOR = (255, 69, 0)  # orange-red
CENTER_COLOR = (50, 205, 50)  # green
CROWD_COLOR = (160, 160, 160)
ARROW_COLOR = (255, 230, 0)
OUTLINE = (0, 0, 0)


def to_pil(image: Any) -> Image.Image:
    """PIL image / (H, W, 3) or (H, W) uint8 array / (3, H, W) float tensor in [0, 1] -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3):  # tensors are (C, H, W)
            t = t.permute(1, 2, 0)
        arr = t.numpy()
    else:
        arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"cannot draw on an image of shape {arr.shape}; give (H, W, 3) uint8, (3, H, W) float "
                         f"or a PIL image")
    return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]), "RGB")


def person_color(i: int) -> tuple[int, int, int]:
    """Distinct, saturated colours for person i (golden-ratio hue steps)."""
    h = (0.11 + i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def limb_side(schema: KeypointSchema, a: int, b: int) -> str:
    """'left', 'right' or 'center' for the skeleton edge (a, b)."""
    left = schema.is_left(a) or schema.is_left(b)
    right = schema.is_right(a) or schema.is_right(b)
    if left and not right:
        return "left"
    if right and not left:
        return "right"
    return "center"


def _side_color(side: str) -> tuple[int, int, int]:
    return {"left": LEFT_COLOR, "right": RIGHT_COLOR}.get(side, CENTER_COLOR)


def _np(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class _Style:
    def __init__(self, width: int, height: int) -> None:
        s = max(width, height) / 640.0
        self.limb = max(2, int(round(3 * s)))
        self.outline = max(1, int(round(1.5 * s)))
        self.box = max(1, int(round(2 * s)))
        self.radius = max(2, int(round(3.5 * s)))
        self.font_size = max(10, int(round(13 * s)))
        self.font = _font(self.font_size)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ValueError):  # old Pillow or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _blend_masks(canvas: np.ndarray, masks: np.ndarray, colors: list[tuple[int, int, int]], alpha: float) -> None:
    """In place: translucent fill + solid 1-2 px outline per mask."""
    out = canvas.astype(np.float32)
    h, w = canvas.shape[:2]
    thick = max(1, int(round(max(h, w) / 640)))
    for m, c in zip(masks, colors):
        if not m.any():
            continue
        col = np.asarray(c, np.float32)
        out[m] = out[m] * (1.0 - alpha) + col * alpha
        inner = m.copy()
        for _ in range(thick):  # erosion by a 4-neighbourhood, `thick` times
            e = inner.copy()
            e[1:, :] &= inner[:-1, :]
            e[:-1, :] &= inner[1:, :]
            e[:, 1:] &= inner[:, :-1]
            e[:, :-1] &= inner[:, 1:]
            e[0, :] = e[-1, :] = False
            e[:, 0] = e[:, -1] = False
            inner = e
        edge = m & ~inner
        out[edge] = col
    canvas[...] = np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _masks_bool(masks: np.ndarray | None, n: int, h: int, w: int) -> np.ndarray | None:
    if masks is None:
        return None
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W), got {masks.shape}")
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[0] != n:
        raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W) for N={n} people, got {masks.shape}")
    if masks.shape[1:] != (h, w):
        raise ValueError(f"masks are {masks.shape[1]}x{masks.shape[2]} but the image is {h}x{w}; paste them into "
                         f"the image first (the model's outputs already are)")
    if masks.dtype == np.bool_:
        return masks
    if np.issubdtype(masks.dtype, np.floating):
        return masks >= 0.5
    return masks > 0


def _text(d: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: tuple[int, int, int],
          style: _Style, size: tuple[int, int]) -> None:
    x, y = xy
    l, t, r, b = d.textbbox((0, 0), text, font=style.font)
    tw, th = r - l + 4, b - t + 4
    x = min(max(0, x), max(0, size[0] - tw))
    y = y - th if y - th >= 0 else y  # above the box, or inside when at the top edge
    d.rectangle([x, y, x + tw, y + th], fill=color, outline=OUTLINE)
    lum = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    d.text((x + 2 - l, y + 2 - t), text, fill=(0, 0, 0) if lum > 140 else (255, 255, 255), font=style.font)


def _line(d: ImageDraw.ImageDraw, p: Sequence[float], q: Sequence[float], color, style: _Style, width: int) -> None:
    d.line([tuple(p), tuple(q)], fill=OUTLINE, width=width + 2 * style.outline)
    d.line([tuple(p), tuple(q)], fill=color, width=width)


def _dot(d: ImageDraw.ImageDraw, p: Sequence[float], r: float, color, outline=OUTLINE, width: int = 1) -> None:
    x, y = float(p[0]), float(p[1])
    d.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=outline, width=width)


def _arrow(d: ImageDraw.ImageDraw, p: np.ndarray, q: np.ndarray, style: _Style) -> None:
    width = max(1, style.limb - 1)
    vec = q - p
    length = float(np.hypot(*vec))
    d.ellipse([p[0] - style.radius, p[1] - style.radius, p[0] + style.radius, p[1] + style.radius],
              outline=ARROW_COLOR, width=max(1, width // 2 + 1))
    if length < 1.0:
        return
    u = vec / length
    head = min(length * 0.6, 3.0 * style.radius)
    base = q - u * head
    normal = np.array([-u[1], u[0]])
    tri = [tuple(q), tuple(base + normal * head * 0.5), tuple(base - normal * head * 0.5)]
    _line(d, p, base, ARROW_COLOR, style, width)
    d.polygon(tri, fill=ARROW_COLOR, outline=OUTLINE)


def draw(image: Any, result: dict, *, schema: KeypointSchema | None = None, score_thresh: float = 0.5,
         keypoint_thresh: float = 0.2, show_offsets: bool = False, offsets: Any = None, show_boxes: bool = True,
         show_masks: bool = True, show_keypoints: bool = True, show_labels: bool = True, mask_alpha: float = 0.45,
         return_stats: bool = False) -> Image.Image | tuple[Image.Image, dict[str, int]]:
    """Draw a prediction (or ground truth) on ``image``; returns a new RGB PIL image.

    ``result``: dict with any of ``boxes`` (N, 4) xyxy, ``scores`` (N,) (absent for ground truth:
    everybody is drawn), ``masks`` (N, 1, H, W) float or (N, H, W) bool/uint8, ``keypoints``
    (N, K, 3), ``keypoint_scores`` (N, K) (absent: the third keypoint column, i.e. the
    visibility, is compared with ``keypoint_thresh``), ``keypoint_visibility`` (N, K) (the visibility
    head's flag: 0 hidden, 1 occluded drawn hollow, 2 visible), ``iscrowd`` (N,) (crowd regions drawn
    grey, without skeleton), ``track_ids`` (N,) (video: one colour per ID, ``#ID`` on the label),
    torch tensors or numpy arrays. ``offsets`` (N, K, 2): arrow start
    points in image coordinates, drawn when ``show_offsets``.
    """
    canvas_img = to_pil(image)
    w, h = canvas_img.size
    style = _Style(w, h)
    schema = schema or coco_person_schema()
    boxes = _np(result.get("boxes"))
    kps = _np(result.get("keypoints"))
    masks = _np(result.get("masks"))
    scores = _np(result.get("scores"))
    kp_scores = _np(result.get("keypoint_scores"))
    kp_flags = _np(result.get("keypoint_visibility"))  # (N, K) 0 / 1 / 2 from the visibility head
    crowd = _np(result.get("iscrowd"))
    track_ids = _np(result.get("track_ids"))  # (N,): colour per track ID and the ID on the box
    n = next((len(x) for x in (boxes, kps, masks, scores) if x is not None), 0)
    crowd = np.zeros(n, bool) if crowd is None else crowd.astype(bool).reshape(-1)
    keep = np.ones(n, bool) if scores is None else (scores.reshape(-1) >= score_thresh)
    idx = np.nonzero(keep)[0]
    stats = dict(people=0, crowd=0, boxes=0, masks=0, skeletons=0, limbs=0, keypoints=0, arrows=0)
    colors = {int(i): (CROWD_COLOR if crowd[i] else person_color(int(i))) for i in idx}
    if track_ids is not None:
        colors = {int(i): person_color(int(track_ids[i])) for i in idx}

    canvas = np.array(canvas_img)
    mb = _masks_bool(masks, n, h, w) if (show_masks and masks is not None) else None
    if mb is not None and len(idx):
        _blend_masks(canvas, mb[idx], [colors[int(i)] for i in idx], mask_alpha)
        stats["masks"] = int(sum(bool(mb[i].any()) for i in idx))
    out = Image.fromarray(canvas, "RGB")
    d = ImageDraw.Draw(out)

    if kps is not None and kps.ndim == 3 and kps.shape[1] != schema.num_keypoints:
        raise ValueError(f"keypoints have K={kps.shape[1]} but the schema has {schema.num_keypoints} "
                         f"({', '.join(schema.names)}); pass schema=")
    offs = _np(offsets) if show_offsets else None
    if offs is not None and kps is not None and offs.shape[:2] != kps.shape[:2]:
        raise ValueError(f"offsets must be (N, K, 2) like the keypoints {kps.shape[:2]}, got {offs.shape}")

    for i in idx:
        i = int(i)
        if crowd[i]:
            stats["crowd"] += 1
        else:
            stats["people"] += 1
        color = colors[i]
        if show_boxes and boxes is not None:
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            width = max(1, style.box - 1) if crowd[i] else style.box
            d.rectangle([x1, y1, x2, y2], outline=OUTLINE, width=width + 2)
            if x2 - x1 > 2 and y2 - y1 > 2:  # a box under 2 px wide has no inside to draw (PIL refuses it)
                d.rectangle([x1 + 1, y1 + 1, x2 - 1, y2 - 1], outline=color, width=width)
            stats["boxes"] += 1
        if crowd[i] or not show_keypoints or kps is None:
            continue
        p = kps[i]
        conf = kp_scores[i] if kp_scores is not None else p[:, 2]
        shown = conf >= keypoint_thresh if kp_scores is not None else (p[:, 2] > 0) & (p[:, 2] >= keypoint_thresh)
        occluded = np.zeros(len(p), bool)
        if kp_flags is not None:  # predicted "not labelled" is hidden, "occluded" drawn hollow
            shown = shown & (kp_flags[i] > 0)
            occluded = kp_flags[i] == 1
        limbs = 0
        for a, b in schema.skeleton:
            if shown[a] and shown[b]:
                _line(d, p[a, :2], p[b, :2], _side_color(limb_side(schema, a, b)), style, style.limb)
                limbs += 1
        for k in np.nonzero(shown)[0]:
            k = int(k)
            side = "left" if schema.is_left(k) else ("right" if schema.is_right(k) else "center")
            if occluded[k]:
                _dot(d, p[k, :2], style.radius, None, outline=_side_color(side), width=max(2, style.outline + 1))
            else:
                _dot(d, p[k, :2], style.radius, _side_color(side), width=max(1, style.outline))
        if offs is not None:
            for k in np.nonzero(shown)[0]:
                _arrow(d, offs[i, int(k)].astype(np.float64), p[int(k), :2].astype(np.float64), style)
                stats["arrows"] += 1
        stats["limbs"] += limbs
        stats["keypoints"] += int(shown.sum())
        stats["skeletons"] += int(limbs > 0)

    if show_labels and boxes is not None:
        for i in idx:
            i = int(i)
            if crowd[i]:
                label = "crowd"
            elif scores is not None:
                label = f"{float(scores.reshape(-1)[i]):.2f}"
            else:
                continue
            if track_ids is not None:
                label = f"#{int(track_ids[i])} {label}"
            _text(d, (float(boxes[i][0]), float(boxes[i][1])), label, colors[i], style, (w, h))
    return (out, stats) if return_stats else out


def draw_ground_truth(image: Any, target: dict, schema: KeypointSchema | None = None, **kwargs: Any
                      ) -> Image.Image | tuple[Image.Image, dict[str, int]]:
    """Draw a ``Target``: every annotation, keypoints with visibility > 0, crowd regions in grey."""
    result = {k: target[k] for k in ("boxes", "masks", "keypoints", "iscrowd") if k in target}
    kwargs.setdefault("keypoint_thresh", 0.5)  # visibility 1 and 2 are shown, 0 hidden
    kwargs.setdefault("score_thresh", 0.0)
    return draw(image, result, schema=schema, **kwargs)


def draw_sampling_points(image: Any, points: Any, center: Sequence[float], *,
                         colors: Sequence[tuple[int, int, int]] | None = None, radius: float | None = None,
                         connect: bool = False) -> Image.Image:
    """Deformable-convolution sampling locations on ``image``.

    ``points``: (P, 2) (x, y) image coordinates, or a list of such arrays (e.g. one per layer,
    drawn in ``colors``, later groups on top); ``center``: the output pixel, drawn as a green
    ring with a cross. ``connect`` draws faint lines from the centre to each point.
    """
    out = to_pil(image)
    w, h = out.size
    style = _Style(w, h)
    groups = points if isinstance(points, (list, tuple)) and len(points) and np.ndim(_np(points[0])) == 2 else [points]
    groups = [np.asarray(_np(g), np.float64).reshape(-1, 2) for g in groups]
    palette = list(colors) if colors else [(255, 40, 40), (255, 160, 0), (255, 255, 60), (255, 0, 255)]
    r = radius if radius is not None else max(2.0, style.radius * 0.8)
    d = ImageDraw.Draw(out)
    cx, cy = float(center[0]), float(center[1])
    if connect:
        for g in groups:
            for x, y in g:
                d.line([(cx, cy), (float(x), float(y))], fill=(255, 255, 255), width=1)
    rc = style.radius * 1.5  # the centre first: sampling points stay visible on top of it
    d.ellipse([cx - rc, cy - rc, cx + rc, cy + rc], outline=OUTLINE, width=max(1, style.box) + 2)
    d.ellipse([cx - rc, cy - rc, cx + rc, cy + rc], outline=CENTER_COLOR, width=max(1, style.box))
    d.line([(cx - rc, cy), (cx + rc, cy)], fill=CENTER_COLOR, width=1)
    d.line([(cx, cy - rc), (cx, cy + rc)], fill=CENTER_COLOR, width=1)
    for gi, g in enumerate(groups):
        c = palette[gi % len(palette)]
        for x, y in g:
            _dot(d, (x, y), r, c, outline=OUTLINE, width=1)
    return out


@torch.no_grad()
def deform_sampling_points(model: torch.nn.Module, image: Any, pixel: Sequence[float],
                           layer: str | None = None) -> tuple[np.ndarray, str]:
    """Where a deformable layer samples for the output location over image ``pixel`` (x, y).

    Returns ((kh*kw, 2) sampling points in the image's pixel coordinates, the layer's name).
    ``layer`` is a module name such as ``backbone.layer4.1.conv2``; the last deformable conv of
    the backbone by default.
    """
    from poseseg.ops import DeformConv2d

    layers = {n: m for n, m in model.named_modules() if isinstance(m, DeformConv2d) and n.startswith("backbone.")}
    if not layers:
        raise ValueError("the model has no deformable conv in its backbone (model.backbone.deform_stages)")
    name = layer or list(layers)[-1]
    if name not in layers:
        raise ValueError(f"{name!r} is not a deformable backbone layer; choose from {', '.join(layers)}")
    conv = layers[name]
    img = to_pil(image)
    tensor = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
    captured = {}
    hook = conv.register_forward_hook(lambda m, args, out: captured.setdefault("x", args[0]))
    was_training = model.training
    model.eval()
    try:
        batch, _ = model.transform([tensor.to(next(model.parameters()).device)])
        model.backbone(batch.tensors)
    finally:
        hook.remove()
        model.train(was_training)
    x = captured["x"]  # (1, C, Hin, Win)
    offset, _ = conv.offsets(x)  # (1, 2*kh*kw, Hout, Wout), (dy, dx) per kernel point
    scale = batch.image_sizes[0][1] / img.width  # resized / original
    stride_in = batch.tensors.shape[-1] / x.shape[-1]  # image pixels per input cell
    sh, sw = conv.stride
    ph, pw = conv.padding
    dh, dw = conv.dilation
    kh, kw = conv.kernel_size
    hout, wout = offset.shape[-2:]
    i = int(min(max(pixel[1] * scale / (stride_in * sh), 0), hout - 1))
    j = int(min(max(pixel[0] * scale / (stride_in * sw), 0), wout - 1))
    points = []
    for k in range(kh * kw):
        ky, kx = divmod(k, kw)
        y = i * sh - ph + ky * dh + float(offset[0, 2 * k, i, j])
        xx = j * sw - pw + kx * dw + float(offset[0, 2 * k + 1, i, j])
        points.append(((xx + 0.5) * stride_in / scale, (y + 0.5) * stride_in / scale))
    return np.asarray(points), name


def draw_deform_sampling(model: torch.nn.Module, image: Any, pixel: Sequence[float],
                         layer: str | None = None) -> Image.Image:
    """The picture: the sampling points of a deformable layer for one pixel, drawn on the image."""
    points, _ = deform_sampling_points(model, image, pixel, layer)
    return draw_sampling_points(image, points, pixel, connect=True)
