"""Articulated synthetic people: pose sampling, body-part polygons and rasterisation.

A figure is built in a canonical body frame (pixels, y down, origin at the pelvis centre),
rotated as a whole and moved into the image. Every body part is a polygon with a part id;
the parts are rasterised in z-order into a small local canvas of part ids, which is then
coloured per material (skin, hair, shirt, pants, shoes, ...) with optional textures and
darkened outlines. The person mask is the union of the parts.

Keypoints sit on the drawn figure: joints are the ends of limb segments (capsules whose
end circles cover them), shoulders and hips are the top and bottom corners of the torso,
ears at the sides of the head and eyes / nose on the face. In a front view the person's
left side is on the image right; in a back view it is on the image left and no face is
drawn (nose and eyes are then marked hidden by the caller).

Coordinates are continuous with pixel (r, c) covering [c, c+1) x [r, r+1) (COCO's
convention); a keypoint at (x, y) lies on pixel (floor(y), floor(x)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Materials: index into a per-layer palette; 0 is "no material" (background).
SKIN, HAIR, SHIRT, PANTS, SHOES, DARK, MOUTH, NOSE, HAT, SKIRT = range(1, 11)
NUM_MATERIALS = 11
FACE_KEYPOINTS = (0, 1, 2)  # nose, left_eye, right_eye: hidden in a back view

_SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96],
                        [161, 102, 68], [120, 74, 48], [88, 56, 38]], dtype=np.float32)
_HAIR_TONES = np.array([[20, 16, 14], [60, 40, 25], [110, 70, 35], [180, 140, 80], [225, 200, 140],
                        [150, 150, 150], [140, 45, 20], [40, 30, 60]], dtype=np.float32)


@dataclass
class Layer:
    """A rasterised object: colours and mask on a local canvas whose top-left pixel is (x0, y0)."""

    x0: int
    y0: int
    rgb: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) bool
    kind: str = "distractor"  # "person" | "distractor"
    keypoints: np.ndarray | None = None  # (17, 2) float64, image coordinates
    view: str | None = None  # "front" | "back" for people
    height: float = 0.0  # figure height in pixels


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


# ----------------------------------------------------------------------------- people
def _arm_angles(rng: np.random.Generator) -> tuple[float, float]:
    """(abduction from 'hanging down', elbow change) in radians; positive = away from the body."""
    r = rng.random()
    if r < 0.45:
        a = rng.uniform(5, 30)
    elif r < 0.72:
        a = rng.uniform(30, 100)
    elif r < 0.88:
        a = rng.uniform(100, 170)
    else:
        a = rng.uniform(-20, 5)
    d = rng.uniform(-25, 40) if rng.random() < 0.6 else (1 if rng.random() < 0.5 else -1) * rng.uniform(40, 135)
    return np.radians(a), np.radians(d)


def _leg_angles(rng: np.random.Generator) -> tuple[float, float]:
    r = rng.random()
    if r < 0.6:
        a = rng.uniform(-3, 12)
    elif r < 0.9:
        a = rng.uniform(10, 35)
    else:
        a = rng.uniform(30, 65)
    d = rng.normal(0, 10) if rng.random() < 0.75 else rng.uniform(-50, 50)
    return np.radians(a), np.radians(d)


def _foreshorten(rng: np.random.Generator, p_short: float) -> float:
    return rng.uniform(0.4, 0.75) if rng.random() < p_short else rng.uniform(0.8, 1.0)


def render_person(rng: np.random.Generator, height: float, pelvis_xy, view: str | None = None) -> Layer:
    """One articulated person of about ``height`` pixels (head top to feet), pelvis at pelvis_xy."""
    H = float(height)
    view = view or ("front" if rng.random() < 0.55 else "back")
    s = 1.0 if view == "front" else -1.0  # image-x sign of the person's left side
    j = lambda lo, hi: H * rng.uniform(lo, hi)  # noqa: E731 - a length in figure units
    T = j(0.28, 0.32)  # pelvis centre -> shoulder line
    sw, hw = j(0.105, 0.14), j(0.07, 0.095)
    neck = j(0.03, 0.05)
    ry = j(0.062, 0.075)
    rx = ry * rng.uniform(0.78, 0.88)
    ua, fa = j(0.16, 0.19), j(0.14, 0.17)
    th, sh = j(0.22, 0.26), j(0.21, 0.25)
    mw = lambda v: max(v, 1.6)  # noqa: E731 - minimum drawable width
    uaw, faw = mw(j(0.05, 0.065)), mw(j(0.04, 0.052))
    thw, shw = mw(j(0.075, 0.095)), mw(j(0.055, 0.07))
    hand_r, foot = max(H * rng.uniform(0.024, 0.032), 1.0), H * rng.uniform(0.035, 0.05)

    # --- appearance
    skin = {"color": _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.08), "kind": "solid"}
    hair = {"color": _HAIR_TONES[rng.integers(len(_HAIR_TONES))] * rng.uniform(0.85, 1.15), "kind": "solid"}
    materials = {SKIN: skin, HAIR: hair, SHIRT: random_material(rng, textured=0.5),
                 PANTS: random_material(rng, textured=0.25),
                 SHOES: {"color": random_color(rng, 0, 120), "kind": "solid"},
                 DARK: {"color": np.array([25, 20, 20], np.float32), "kind": "solid"},
                 MOUTH: {"color": np.array([150, 40, 45], np.float32), "kind": "solid"},
                 NOSE: {"color": skin["color"] * 0.78, "kind": "solid"},
                 HAT: random_material(rng, textured=0.2), SKIRT: random_material(rng, textured=0.3)}
    sleeves = pick(rng, (0.35, 0.45, 0.2))  # 0 short, 1 long, 2 none
    legwear = pick(rng, (0.6, 0.25, 0.15))  # 0 trousers, 1 shorts, 2 skirt
    hairstyle = pick(rng, (0.65, 0.25, 0.1))  # 0 short, 1 long, 2 bald
    hat = rng.random() < 0.12

    # --- keypoints in the canonical frame (pelvis centre at origin, y down)
    kp = np.zeros((17, 2))
    kp[5] = (s * sw, -T + 0.3 * uaw)
    kp[6] = (-s * sw, -T + 0.3 * uaw)
    kp[11] = (s * hw, 0.0)
    kp[12] = (-s * hw, 0.0)
    for side, (shi, eli, wri) in ((s, (5, 7, 9)), (-s, (6, 8, 10))):
        a, d = _arm_angles(rng)
        d1 = np.array([side * np.sin(a), np.cos(a)])
        d2 = np.array([side * np.sin(a + d), np.cos(a + d)])
        kp[eli] = kp[shi] + ua * _foreshorten(rng, 0.15) * d1
        kp[wri] = kp[eli] + fa * _foreshorten(rng, 0.15) * d2
    for side, (hii, kni, ani) in ((s, (11, 13, 15)), (-s, (12, 14, 16))):
        a, d = _leg_angles(rng)
        d1 = np.array([side * np.sin(a), np.cos(a)])
        d2 = np.array([side * np.sin(a + d), np.cos(a + d)])
        kp[kni] = kp[hii] + th * _foreshorten(rng, 0.1) * d1
        kp[ani] = kp[kni] + sh * _foreshorten(rng, 0.08) * d2
    tilt = rng.normal(0, 0.14)
    neck_base = np.array([0.0, -T])
    up = np.array([np.sin(tilt), -np.cos(tilt)])
    head_c = neck_base + up * (neck + 0.9 * ry)
    yaw = rng.uniform(-0.22, 0.22) * rx if view == "front" else 0.0

    def head_pts(pts):
        return rot(np.asarray(pts, dtype=np.float64).reshape(-1, 2), tilt) + head_c

    kp[0] = head_pts([yaw, 0.22 * ry])
    kp[1] = head_pts([s * 0.36 * rx + yaw, -0.12 * ry])
    kp[2] = head_pts([-s * 0.36 * rx + yaw, -0.12 * ry])
    kp[3] = head_pts([s * 0.9 * rx, 0.02 * ry])
    kp[4] = head_pts([-s * 0.9 * rx, 0.02 * ry])

    # --- parts, back to front
    P = PartList()
    leg_mat_thigh = PANTS if legwear in (0, 1) else SKIN
    leg_mat_shin = PANTS if legwear == 0 else SKIN
    pid = {}
    for hii, kni, ani, side in ((11, 13, 15, s), (12, 14, 16, -s)):
        pid[ani] = P.add(leg_mat_shin, capsule_polys(kp[kni], kp[ani], shw * 0.95, shw * 0.8))
        dleg = kp[ani] - kp[kni]
        dleg = dleg / (np.hypot(*dleg) + 1e-9)
        fc = kp[ani] + dleg * 0.45 * shw + np.array([side * 0.25 * foot, 0.0])
        P.add(SHOES, ellipse_poly(fc[0], fc[1], max(0.75 * foot, 1.0), max(0.42 * shw, 0.8)))
        pid[hii] = pid[kni] = P.add(leg_mat_thigh, capsule_polys(kp[hii], kp[kni], thw, shw))
    ww = max(hw, 0.78 * sw) * rng.uniform(0.85, 1.0)
    hwo = hw + 0.45 * thw
    P.add(PANTS if legwear != 2 else SKIRT,
          np.array([[-ww, -0.35 * T], [ww, -0.35 * T], [hwo, 0.25 * thw], [0, 0.4 * thw], [-hwo, 0.25 * thw]]))
    if legwear == 2:
        sk = th * rng.uniform(0.35, 0.75)
        P.add(SKIRT, np.array([[-ww, -0.3 * T], [ww, -0.3 * T], [hwo + 0.35 * sk, sk], [-hwo - 0.35 * sk, sk]]))
    if hairstyle == 1 and view == "front":
        P.add(HAIR, head_pts([[-1.05 * rx, 0], [1.05 * rx, 0], [1.15 * rx, 2.4 * ry], [-1.15 * rx, 2.4 * ry]]))
    P.add(SKIN, capsule_polys(neck_base + (0, 0.2 * uaw), head_c, 0.95 * rx))
    swo = sw + 0.3 * uaw
    y_sb = T * rng.uniform(-0.18, 0.05)
    xb = ww + (hwo - ww) * (y_sb + 0.35 * T) / (0.35 * T + 0.25 * thw)
    pid[5] = pid[6] = P.add(SHIRT, np.array([
        [-swo, -T + 0.15 * uaw], [-0.45 * sw, -T - 0.12 * uaw], [0.45 * sw, -T - 0.12 * uaw], [swo, -T + 0.15 * uaw],
        [swo * 0.97, -T + 0.9 * uaw], [ww, -0.35 * T], [xb, y_sb], [-xb, y_sb], [-ww, -0.35 * T],
        [-swo * 0.97, -T + 0.9 * uaw]]))
    if view == "front" and rng.random() < 0.5:  # neckline / buttons: a front-view cue
        P.add(SKIN, np.array([[-0.28 * sw, -T - 0.1 * uaw], [0.28 * sw, -T - 0.1 * uaw], [0, -T + 0.22 * T]]))
    ua_mat = SHIRT if sleeves in (0, 1) else SKIN
    fa_mat = SHIRT if sleeves == 1 else SKIN
    for shi, eli, wri in ((5, 7, 9), (6, 8, 10)):
        pid[shi] = pid[eli] = P.add(ua_mat, capsule_polys(kp[shi], kp[eli], uaw, faw * 1.05))
        pid[wri] = P.add(fa_mat, capsule_polys(kp[eli], kp[wri], faw, faw * 0.85))
        dh = kp[wri] - kp[eli]
        dh = dh / (np.hypot(*dh) + 1e-9)
        hc = kp[wri] + dh * hand_r * 0.9
        P.add(SKIN, Circle(hc, hand_r))
    if hairstyle == 1 and view == "back":
        P.add(HAIR, head_pts([[-1.05 * rx, 0], [1.05 * rx, 0], [1.15 * rx, 2.4 * ry], [-1.15 * rx, 2.4 * ry]]))
    for e in (3, 4):
        ex = np.sign(rot((kp[e] - head_c)[None], -tilt)[0, 0])
        pid[e] = P.add(SKIN, head_pts(ellipse_poly(ex * 0.97 * rx, 0.05 * ry, 0.24 * rx + 0.4, 0.3 * ry + 0.4)))
    if view == "front":
        if hairstyle != 2:
            P.add(HAIR, head_pts(ellipse_poly(0, -0.14 * ry, 1.06 * rx, 0.9 * ry)))
        face = P.add(SKIN, head_pts(ellipse_poly(0, 0.12 * ry, 0.9 * rx, 0.86 * ry)))
        pid[0] = pid[1] = pid[2] = face
        er = max(0.13 * ry, 0.6)
        for e in (1, 2):
            P.add(DARK, ellipse_poly(kp[e][0], kp[e][1], er, er * 1.15))
        P.add(NOSE, head_pts(ellipse_poly(yaw, 0.22 * ry, 0.12 * rx + 0.3, 0.16 * ry + 0.3)))
        P.add(MOUTH, head_pts(ellipse_poly(yaw, 0.55 * ry, 0.28 * rx, 0.06 * ry + 0.35)))
    else:
        pid[0] = pid[1] = pid[2] = P.add(SKIN, head_pts(ellipse_poly(0, 0, rx, ry)))
        if hairstyle != 2:
            P.add(HAIR, head_pts(ellipse_poly(0, -0.06 * ry, 1.04 * rx, 0.97 * ry)))
    if hat:
        P.add(HAT, head_pts([[-1.2 * rx, -0.35 * ry], [1.2 * rx, -0.35 * ry], [0.9 * rx, -1.05 * ry],
                             [-0.9 * rx, -1.05 * ry]]))

    # --- place in the image: whole-body rotation about the pelvis
    ang = rng.normal(0, 0.1) if rng.random() < 0.85 else rng.uniform(-0.8, 0.8)
    P.transform(ang, pelvis_xy)
    kp_img = np.round(rot(kp, ang) + pelvis_xy, 2)
    ensure = [(kp_img[k, 0], kp_img[k, 1], pid[k]) for k in range(17)]
    x0, y0, rgb, mask = rasterize(P, materials, rng, frame_angle=ang, scale=H / 100.0,
                                  outline=0.6 if H > 60 else 0.78, ensure=ensure)
    return Layer(x0=x0, y0=y0, rgb=rgb, mask=mask, kind="person", keypoints=kp_img, view=view, height=H)


# ----------------------------------------------------------------------------- distractors
def render_distractor(rng: np.random.Generator, scale: float, center) -> Layer:
    """A person-like thing that is not a person: a stick, a blob, a headless limb, a ball on a pole."""
    P = PartList()
    a = rng.uniform(0, 2 * np.pi)
    kind = pick(rng, (0.25, 0.25, 0.3, 0.1, 0.1))
    mats = {SKIN: {"color": _SKIN_TONES[rng.integers(len(_SKIN_TONES))], "kind": "solid"},
            SHIRT: random_material(rng, textured=0.5), PANTS: random_material(rng, textured=0.3)}
    L = scale
    if kind == 0:  # stick / pole
        P.add(SHIRT, capsule_polys((0, -L / 2), (0, L / 2), max(L * rng.uniform(0.04, 0.12), 1.5)))
    elif kind == 1:  # blob
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = L * rng.uniform(0.15, 0.45, n)
        P.add(SHIRT, np.stack([r * np.cos(t), r * np.sin(t)], 1))
    elif kind == 2:  # a single limb: two jointed segments and a hand/foot, no head
        w = max(L * rng.uniform(0.08, 0.14), 1.6)
        p1 = np.array([0.0, L * 0.45])
        b = rng.uniform(-1.2, 1.2)
        p2 = p1 + L * 0.45 * np.array([np.sin(b), np.cos(b)])
        P.add(SHIRT if rng.random() < 0.5 else PANTS, capsule_polys((0, 0), p1, w, w * 0.85))
        P.add(SKIN, capsule_polys(p1, p2, w * 0.85, w * 0.7))
        P.add(SKIN, Circle((p2[0], p2[1] + w * 0.5), w * 0.65))
    elif kind == 3:  # ball on a pole (a head without a body)
        r = L * rng.uniform(0.08, 0.14)
        P.add(PANTS, capsule_polys((0, 0), (0, L * 0.8), max(r * 0.35, 1.2)))
        P.add(SKIN if rng.random() < 0.5 else SHIRT, Circle((0.0, 0.0), r))
    else:  # a rectangle "sign" / box
        P.add(SHIRT, np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * L * rng.uniform(0.1, 0.35, 2))
    P.transform(a, np.asarray(center, dtype=np.float64))
    x0, y0, rgb, mask = rasterize(P, mats, rng, frame_angle=a, scale=L / 100.0)
    return Layer(x0=x0, y0=y0, rgb=rgb, mask=mask, kind="distractor")
