"""Drawing primitives of the synthetic figures: polygons and discs with part ids, rasterised into
a local canvas and coloured per material (solid or textured), with darkened outlines.

Coordinates are continuous with pixel (r, c) covering [c, c+1) x [r, r+1) (COCO's convention).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Materials: index into a per-layer palette; 0 is "no material" (background).
SKIN, HAIR, SHIRT, PANTS, SHOES, DARK, MOUTH, NOSE, HAT, SKIRT, LIGHT, SHADE = range(1, 13)
NUM_MATERIALS = 13


# ----------------------------------------------------------------------------- geometry
def rot(pts: np.ndarray, ang: float) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    return pts @ np.array([[c, s], [-s, c]], dtype=np.float64)


_UNIT_CIRCLES: dict[int, np.ndarray] = {}


def _unit_circle(n: int) -> np.ndarray:
    u = _UNIT_CIRCLES.get(n)
    if u is None:
        t = np.arange(n) * (2 * np.pi / n)
        u = _UNIT_CIRCLES[n] = np.stack([np.cos(t), np.sin(t)], axis=1)
    return u


def ellipse_poly(cx: float, cy: float, rx: float, ry: float, ang: float = 0.0) -> np.ndarray:
    n = min(max(int(1.6 * (rx + ry)), 8), 40)
    pts = _unit_circle(n) * (rx, ry)
    if ang:
        pts = rot(pts, ang)
    return pts + (cx, cy)


class Circle:
    """A disc, drawn with PIL's ellipse (cheaper than a polygon); rotation moves its centre only."""

    __slots__ = ("c", "r")

    def __init__(self, c, r: float) -> None:
        self.c = np.asarray(c, dtype=np.float64)
        self.r = float(r)


def capsule_polys(p0, p1, w0: float, w1: float | None = None) -> list:
    """A tapered segment from p0 (width w0) to p1 (width w1) with round ends."""
    w1 = w0 if w1 is None else w1
    x0, y0 = float(p0[0]), float(p0[1])
    x1, y1 = float(p1[0]), float(p1[1])
    dx, dy = x1 - x0, y1 - y0
    n = (dx * dx + dy * dy) ** 0.5
    out = [Circle((x0, y0), w0 / 2), Circle((x1, y1), w1 / 2)]
    if n > 1e-6:
        nx, ny = -dy / n, dx / n
        a, b = w0 / 2, w1 / 2
        out.append(np.array([[x0 + nx * a, y0 + ny * a], [x1 + nx * b, y1 + ny * b],
                             [x1 - nx * b, y1 - ny * b], [x0 - nx * a, y0 - ny * a]]))
    return out


class PartList:
    """Polygons and discs in z-order, each with a part id (its draw order) and a material."""

    def __init__(self) -> None:
        self.items: list[tuple[int, object]] = []
        self.material = [0]

    def add(self, material: int, shapes) -> int:
        pid = len(self.material)
        if pid > 255:
            raise ValueError("too many parts for a uint8 part map")
        self.material.append(material)
        for p in shapes if isinstance(shapes, list) else [shapes]:
            self.items.append((pid, p))
        return pid

    def transform(self, ang: float, offset) -> None:
        """Rotate every shape about the origin by ang, then move it by offset (in place)."""
        offset = np.asarray(offset, dtype=np.float64)
        polys = [p for _, p in self.items if not isinstance(p, Circle)]
        circles = [p for _, p in self.items if isinstance(p, Circle)]
        if polys:
            allp = rot(np.concatenate(polys, axis=0), ang) + offset
            i = 0
            for p in polys:
                p[:] = allp[i:i + len(p)]
                i += len(p)
        if circles:
            cs = rot(np.stack([c.c for c in circles]), ang) + offset
            for c, v in zip(circles, cs):
                c.c = v

    def bounds(self) -> tuple[float, float, float, float]:
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        polys = [p for _, p in self.items if not isinstance(p, Circle)]
        if polys:
            allp = np.concatenate(polys, axis=0)
            lo, hi = allp.min(0), allp.max(0)
        circles = [p for _, p in self.items if isinstance(p, Circle)]
        if circles:
            cr = np.array([[c.c[0], c.c[1], c.r] for c in circles])
            lo = np.minimum(lo, (cr[:, :2] - cr[:, 2:]).min(0))
            hi = np.maximum(hi, (cr[:, :2] + cr[:, 2:]).max(0))
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# ----------------------------------------------------------------------------- colours
def random_color(rng: np.random.Generator, lo: float = 0.0, hi: float = 255.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=3).astype(np.float32)


def pick(rng: np.random.Generator, probs) -> int:
    """Index drawn with the given probabilities (cheaper than Generator.choice for a few options)."""
    r, acc = rng.random(), 0.0
    for i, p in enumerate(probs):
        acc += p
        if r < acc:
            return i
    return len(probs) - 1


def random_material(rng: np.random.Generator, textured: float = 0.5) -> dict:
    """A material: base colour plus an optional texture (stripes, checks or noise)."""
    u = rng.random(11)
    kind = "solid"
    if u[0] < textured:
        kind = "stripes" if u[1] < 0.5 else ("checks" if u[1] < 0.7 else "noise")
    angle = 0.0 if u[2] < 0.35 else (np.pi / 2 if u[2] < 0.6 else np.pi * u[3])
    return {"color": (10 + 235 * u[5:8]).astype(np.float32), "kind": kind,
            "color2": (255 * u[8:11]).astype(np.float32), "period": 2.5 + 6.5 * float(u[4]),
            "angle": float(angle), "amp": 0.15 + 0.3 * float(u[3])}


def rasterize(parts: PartList, materials: dict[int, dict], rng: np.random.Generator, *,
              frame_angle: float = 0.0, scale: float = 1.0, outline: float = 0.6,
              ensure: list[tuple[float, float, int]] | None = None) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Draw the part polygons into a local canvas; returns (x0, y0, rgb uint8, mask bool).

    ``ensure`` lists (x, y, part id) points that must land on the mask: a pixel whose part
    map is empty there is given that part (guards against polygon rounding at tiny scales).
    """
    bx0, by0, bx1, by1 = parts.bounds()
    x0, y0 = int(np.floor(bx0)) - 1, int(np.floor(by0)) - 1
    w, h = int(np.ceil(bx1)) - x0 + 2, int(np.ceil(by1)) - y0 + 2
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    ox, oy = x0 + 0.5, y0 + 0.5  # pixel centres sit at integer PIL coordinates
    for pid, p in parts.items:
        if isinstance(p, Circle):
            cx, cy, r = p.c[0] - ox, p.c[1] - oy, p.r
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=pid)
        else:
            draw.polygon([(x - ox, y - oy) for x, y in p.tolist()], fill=pid)
    pmap = np.array(canvas)
    if ensure:
        for x, y, pid in ensure:
            c, r = int(np.floor(x)) - x0, int(np.floor(y)) - y0
            if 0 <= r < h and 0 <= c < w and pmap[r, c] == 0:
                pmap[r, c] = pid
    mask = pmap > 0
    # one colour per part: its material's colour with a small per-part brightness change
    npart = len(parts.material)
    mats = np.asarray(parts.material)
    base = np.zeros((NUM_MATERIALS, 3), dtype=np.float32)
    for m, spec in materials.items():
        base[m] = spec["color"]
    shade = rng.uniform(0.9, 1.1, size=(npart, 1)).astype(np.float32)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:npart] = np.clip(base[mats] * shade, 0, 255).astype(np.uint8)
    rgb = palette[pmap]
    used = set(parts.material)
    for m, spec in materials.items():
        if spec["kind"] == "solid" or m not in used:
            continue
        sel = (mats == m)[pmap]
        ys, xs = np.nonzero(sel)
        if len(ys) == 0:
            continue
        ang = frame_angle + spec["angle"]
        period = max(2.0, spec["period"] * max(scale, 0.35))
        ca, sa = np.cos(ang) / period, np.sin(ang) / period
        u = np.floor((xs + x0) * ca + (ys + y0) * sa)
        if spec["kind"] == "stripes":
            t = (u % 2 == 0)[:, None]
            rgb[ys, xs] = np.where(t, spec["color"], spec["color2"]).astype(np.uint8)
        elif spec["kind"] == "checks":
            v = np.floor((ys + y0) * ca - (xs + x0) * sa)
            t = ((u + v) % 2 == 0)[:, None]
            rgb[ys, xs] = np.where(t, spec["color"], 0.5 * (spec["color"] + spec["color2"])).astype(np.uint8)
        else:  # noise, on a coarse grid
            cell = max(1, int(period / 2))
            grid = rng.uniform(1 - spec["amp"], 1 + spec["amp"], size=(h // cell + 1, w // cell + 1)).astype(np.float32)
            vals = rgb[ys, xs] * grid[ys // cell, xs // cell][:, None]
            rgb[ys, xs] = np.minimum(vals, 255).astype(np.uint8)
    # outlines: darken pixels where the part id changes (both sides at the outer contour)
    edge = np.zeros_like(mask)
    dv = pmap[1:] != pmap[:-1]
    edge[1:] |= dv
    edge[:-1] |= dv & (pmap[1:] == 0)
    dh = pmap[:, 1:] != pmap[:, :-1]
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh & (pmap[:, 1:] == 0)
    edge &= mask
    rgb[edge] = (rgb[edge] * np.float32(outline)).astype(np.uint8)
    return x0, y0, rgb, mask
