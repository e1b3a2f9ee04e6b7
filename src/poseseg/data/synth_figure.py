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

from poseseg.data.synth_draw import (DARK, HAIR, HAT, LIGHT, MOUTH, NOSE, PANTS, SHADE, SHIRT, SHOES, SKIN, SKIRT, Circle,
                                     PartList, capsule_polys, ellipse_poly, pick, random_color,
                                     random_material, rasterize, rot)

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


def _place_limb(kp: np.ndarray, joints: tuple[int, int, int], side: float, angles, segments, rng) -> None:
    """Two segments from ``kp[joints[0]]``: the first at angle ``a`` from straight down (mirrored by
    ``side``), the second bent by ``d`` more; ``segments``: (length, foreshortening spread) of each."""
    root, middle, end = joints
    a, d = angles
    (length1, spread1), (length2, spread2) = segments
    kp[middle] = kp[root] + length1 * _foreshorten(rng, spread1) * np.array([side * np.sin(a), np.cos(a)])
    kp[end] = kp[middle] + length2 * _foreshorten(rng, spread2) * np.array([side * np.sin(a + d), np.cos(a + d)])


def _foreshorten(rng: np.random.Generator, p_short: float) -> float:
    return rng.uniform(0.4, 0.75) if rng.random() < p_short else rng.uniform(0.8, 1.0)


def render_person(rng: np.random.Generator, height: float, pelvis_xy, view: str | None = None, *,
                  pose_spread: float = 1.0) -> Layer:
    """One articulated person of about ``height`` pixels (head top to feet), pelvis at pelvis_xy.

    ``pose_spread`` scales every sampled joint angle and the body's rotation (1: the default
    poses; 1.5: wider, rarer poses, e.g. to test a model on poses it was not tuned on).
    """
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
                 HAT: random_material(rng, textured=0.2), SKIRT: random_material(rng, textured=0.3),
                 LIGHT: {"color": random_color(rng, 190, 255), "kind": "solid"}}
    materials[SHADE] = {"color": materials[SHIRT]["color"] * 0.5, "kind": "solid"}
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
    for side, joints in ((s, (5, 7, 9)), (-s, (6, 8, 10))):  # shoulder, elbow, wrist
        _place_limb(kp, joints, side, np.multiply(_arm_angles(rng), pose_spread), ((ua, 0.15), (fa, 0.15)), rng)
    for side, joints in ((s, (11, 13, 15)), (-s, (12, 14, 16))):  # hip, knee, ankle
        _place_limb(kp, joints, side, np.multiply(_leg_angles(rng), pose_spread), ((th, 0.1), (sh, 0.08)), rng)
    tilt = rng.normal(0, 0.14) * pose_spread
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
        shoe_rx, shoe_ry = max(0.75 * foot, 1.0), max(0.42 * shw, 0.8)
        P.add(SHOES, ellipse_poly(fc[0], fc[1], shoe_rx, shoe_ry))
        # feet that point: toes towards the camera in a front view (a light toe cap below the ankle),
        # away from it in a back view (a dark heel above the sole)
        if view == "front":
            P.add(LIGHT, ellipse_poly(fc[0] + side * 0.2 * shoe_rx, fc[1] + 0.35 * shoe_ry, 0.6 * shoe_rx,
                                      0.5 * shoe_ry))
        else:
            P.add(DARK, ellipse_poly(fc[0], fc[1] - 0.3 * shoe_ry, 0.55 * shoe_rx, 0.45 * shoe_ry))
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
    if view == "front":  # clothing with a front: neckline, a light placket and buttons
        P.add(SKIN, np.array([[-0.28 * sw, -T - 0.1 * uaw], [0.28 * sw, -T - 0.1 * uaw], [0, -T + 0.22 * T]]))
        pw = max(0.07 * sw, 0.6)
        P.add(LIGHT, np.array([[-pw, -T + 0.2 * T], [pw, -T + 0.2 * T], [pw, y_sb], [-pw, y_sb]]))
        for yb in np.linspace(-T + 0.35 * T, y_sb - 0.1 * T, 3):
            P.add(DARK, Circle((0.0, yb), max(0.05 * sw, 0.5)))
    else:  # a different back: a dark collar band across the shoulders and a centre seam
        P.add(SHADE, np.array([[-0.55 * sw, -T - 0.12 * uaw], [0.55 * sw, -T - 0.12 * uaw],
                               [0.5 * sw, -T + 0.12 * T], [-0.5 * sw, -T + 0.12 * T]]))
        sw2 = max(0.025 * sw, 0.4)
        P.add(SHADE, np.array([[-sw2, -T], [sw2, -T], [sw2, y_sb], [-sw2, y_sb]]))
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
    ang = (rng.normal(0, 0.1) if rng.random() < 0.85 else rng.uniform(-0.8, 0.8)) * pose_spread
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
