"""The synthetic people generator: determinism, COCO format, keypoint/mask consistency, size mix."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES, coco_person_category
from poseseg.data.synth import generate_dataset, image_rng, render_image, size_class

LS, RS = COCO_KEYPOINT_NAMES.index("left_shoulder"), COCO_KEYPOINT_NAMES.index("right_shoulder")
FACE = [COCO_KEYPOINT_NAMES.index(n) for n in ("nose", "left_eye", "right_eye")]
# pycocotools' decode trips a numpy-2 deprecation inside pycocotools itself
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
            out[yd, xd] |= mask[ys, xs]
    return out


@pytest.fixture(scope="module")
def rendered():
    """(image, people) for 60 seeded images."""
    return [render_image(np.random.default_rng(1000 + i), (320, 320)) for i in range(60)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    info = generate_dataset(root, num_train=50, num_val=6, seed=3, image_size=(320, 320))
    return root, info


def test_render_image_contract(rendered):
    n_people = 0
    for img, people in rendered:
        assert img.dtype == np.uint8 and img.shape == (320, 320, 3)
        assert 1 <= len(people) <= 5
        for p in people:
            n_people += 1
            m = p["mask"]
            assert m.dtype == bool and m.shape == (320, 320)
            assert p["keypoints"].shape == (17, 3)
            assert p["view"] in ("front", "back")
            assert p["area"] == int(m.sum()) > 0
            assert not (m & ~p["full_mask"]).any()  # the visible part is part of the whole figure
            ys, xs = np.nonzero(m)
            assert p["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        # people do not share pixels: each pixel belongs to the front-most one
        if len(people) > 1:
            assert np.stack([p["mask"] for p in people]).sum(0).max() == 1
    assert n_people > 100


def test_keypoint_visibility_rules(rendered):
    counts = {"v2": 0, "v1_face": 0, "v1_covered": 0, "v0": 0}
    for _img, people in rendered:
        others = [np.zeros((320, 320), bool)] * len(people)
        if len(people) > 1:
            union = np.stack([p["mask"] for p in people])
            others = [union[np.arange(len(people)) != i].any(0) for i in range(len(people))]
        for p, other in zip(people, others):
            near = _dilate(p["mask"], 2)
            for k, (x, y, v) in enumerate(p["keypoints"]):
                if v == 0:
                    assert x == 0 and y == 0
                    counts["v0"] += 1
                    continue
                assert 0 <= x < 320 and 0 <= y < 320
                r, c = int(y), int(x)
                if v == 2:
                    assert near[r, c], (k, x, y)
                    assert p["mask"][r, c]  # exact, in fact
                    counts["v2"] += 1
                else:
                    assert v == 1
                    if p["view"] == "back" and k in FACE:
                        counts["v1_face"] += 1  # self-occluded: the face is on the hidden side
                    else:  # on the figure, but covered by something in front of it
                        assert p["full_mask"][r, c] and not p["mask"][r, c], (k, x, y)
                        counts["v1_covered"] += other[r, c]
            if p["view"] == "back":
                assert all(p["keypoints"][k, 2] != 2 for k in FACE)
    assert all(v > 0 for v in counts.values()), counts  # every case occurs


def test_left_right_follows_view(rendered):
    diffs = {"front": [], "back": []}
    for _img, people in rendered:
        for p in people:
            k = p["keypoints"]
            if k[LS, 2] > 0 and k[RS, 2] > 0:
                diffs[p["view"]].append(k[LS, 0] - k[RS, 0])
    front, back = np.array(diffs["front"]), np.array(diffs["back"])
    assert len(front) > 20 and len(back) > 20
    # front view: the person's left shoulder is on the image right; back view: the opposite
    assert front.mean() > 0 and (front > 0).mean() > 0.9
    assert back.mean() < 0 and (back < 0).mean() > 0.9


def test_image_size_range():
    for i in range(6):
        img, people = render_image(i, ((200, 260), (150, 180)))
        h, w = img.shape[:2]
        assert 200 <= w <= 260 and 150 <= h <= 180
        assert all(p["mask"].shape == (h, w) for p in people)


def test_dataset_layout_and_coco(dataset):
    root, info = dataset
    assert info["train"]["images"] == 50 and info["val"]["images"] == 6
    for split, n in (("train", 50), ("val", 6)):
        d = json.loads((root / f"{split}.json").read_text())
        assert set(d) >= {"info", "licenses", "categories", "images", "annotations"}
        assert d["categories"] == [coco_person_category()]
        assert len(list((root / split).glob("*.jpg"))) == n
        coco = COCO(str(root / f"{split}.json"))
        assert coco.getCatIds() == [1] and len(coco.getImgIds()) == n
        for img in d["images"]:
            with Image.open(root / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) and im.format == "JPEG"
        ids = [a["id"] for a in d["annotations"]]
        assert len(set(ids)) == len(ids)
        for a in d["annotations"]:
            assert a["iscrowd"] == 0 and a["category_id"] == 1
            m = coco.annToMask(a)
            assert m.sum() == a["area"] > 0
            assert list(mask_utils.toBbox(a["segmentation"])) == a["bbox"]
            kps = np.array(a["keypoints"], dtype=float).reshape(17, 3)
            assert a["num_keypoints"] == int((kps[:, 2] > 0).sum())
            assert (kps[kps[:, 2] == 0, :2] == 0).all()


def test_json_masks_equal_rendered_masks(dataset):
    root, _ = dataset
    coco = COCO(str(root / "val.json"))
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        _img, people = render_image(image_rng(3, "val", img_id - 1), (320, 320))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert len(anns) == len(people)
        for a, p in zip(anns, people):
            assert np.array_equal(coco.annToMask(a).astype(bool), p["mask"])
            expected = p["keypoints"] if p["area"] >= 32 ** 2 else np.zeros((17, 3))
            assert np.allclose(np.array(a["keypoints"]).reshape(17, 3), expected, atol=0.006)
            assert a["bbox"] == p["bbox"] and a["view"] == p["view"]
        assert info["file_name"] == f"{img_id:06d}.jpg"


def test_size_mix_covers_small_medium_large(dataset):
    root, info = dataset
    d = json.loads((root / "train.json").read_text())
    sizes = [size_class(a["area"]) for a in d["annotations"]]
    assert {s: sizes.count(s) for s in ("small", "medium", "large")} == info["train"]["sizes"]
    for s in ("small", "medium", "large"):
        assert sizes.count(s) >= 5, (s, info["train"]["sizes"])


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_dataset(tmp_path / "a", num_train=4, num_val=2, seed=7)
    generate_dataset(tmp_path / "b", num_train=4, num_val=2, seed=7, workers=2)  # processes change nothing
    generate_dataset(tmp_path / "c", num_train=4, num_val=2, seed=8)
    ha, hb, hc = (_tree_hashes(tmp_path / x) for x in "abc")
    assert len(ha) == 4 + 2 + 2 and a["train"]["images"] == 4
    assert ha == hb
    assert ha.keys() == hc.keys()
    assert all(ha[k] != hc[k] for k in ha)


def test_people_under_32_squared_carry_no_keypoints(dataset):
    """As in COCO: small people are annotated with box and mask only (num_keypoints = 0)."""
    root, _ = dataset
    anns = json.loads((root / "train.json").read_text())["annotations"]
    small = [a for a in anns if a["area"] < 32 ** 2]
    others = [a for a in anns if a["area"] >= 32 ** 2]
    assert small and others
    assert all(a["num_keypoints"] == 0 and not any(a["keypoints"]) for a in small)
    assert all(a["num_keypoints"] == sum(v > 0 for v in a["keypoints"][2::3]) > 0 for a in others)


def test_front_and_back_views_look_different():
    """Front/back cues: a front view shows a light placket on the shirt, a back view a dark collar band."""
    from poseseg.data.synth_figure import render_person

    def torso_brightness(view, seed):
        layer = render_person(np.random.default_rng(seed), 200.0, (150.0, 150.0), view=view)
        kp = layer.keypoints - (layer.x0, layer.y0)
        mid = ((kp[5] + kp[6] + kp[11] + kp[12]) / 4).astype(int)  # torso centre (x, y)
        return float(np.median(layer.rgb[mid[1] - 3:mid[1] + 4, mid[0]].astype(float)))

    # the light placket runs down the torso's centre line (an arm in front of it hides it sometimes)
    lighter = [torso_brightness("front", s) > 160 and torso_brightness("front", s) - torso_brightness("back", s) > 40
               for s in range(10)]
    assert sum(lighter) >= 7, lighter


def test_people_scale_and_pose_spread_change_sizes_and_poses():
    from poseseg.data.synth_figure import render_person

    def heights(**kw):
        return np.median([p["height"] for i in range(12) for p in render_image(np.random.default_rng(i), 320, **kw)[1]])

    def limb_angle(spread):  # mean angle of the forearms and shins from hanging straight down
        angles = []
        for i in range(40):
            kp = render_person(np.random.default_rng(i), 150.0, (200.0, 200.0), pose_spread=spread).keypoints
            for a, b in ((7, 9), (8, 10), (13, 15), (14, 16)):
                d = kp[b] - kp[a]
                angles.append(abs(np.arctan2(d[0], d[1])))
        return np.mean(angles)

    assert heights(people_scale=1.5) > 1.3 * heights()
    assert limb_angle(1.6) > 1.2 * limb_angle(1.0)
