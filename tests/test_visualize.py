"""Drawing: skeleton counts and colours checked on pixels, thresholds, input formats, offsets."""

import numpy as np
import pytest
import torch
from PIL import Image

from poseseg.keypoint_schema import KeypointSchema, coco_person_schema
from poseseg.visualize import (ARROW_COLOR, CENTER_COLOR, LEFT_COLOR, RIGHT_COLOR, draw, draw_ground_truth,
                               draw_sampling_points, limb_side)

SIDE_COLORS = np.array([LEFT_COLOR, RIGHT_COLOR, CENTER_COLOR])


def _limb_pixels(img: Image.Image) -> int:
    """Pixels painted exactly in one of the three limb colours."""
    a = np.asarray(img).reshape(-1, 1, 3).astype(int)
    return int((np.abs(a - SIDE_COLORS[None]).sum(-1) == 0).any(-1).sum())


def _expected_skeletons(kps: np.ndarray, schema: KeypointSchema) -> int:
    return sum(any(p[a, 2] > 0 and p[b, 2] > 0 for a, b in schema.skeleton) for p in kps)


def _two_people(h=120, w=160):
    """Two upright people far apart; keypoints of person 1 below the 0.2 score threshold where noted."""
    s = coco_person_schema()
    kps = np.zeros((2, 17, 3), np.float32)
    for n, x0 in enumerate((40, 120)):
        pts = {"left_shoulder": (x0 + 10, 30), "right_shoulder": (x0 - 10, 30), "left_hip": (x0 + 8, 70),
               "right_hip": (x0 - 8, 70), "left_knee": (x0 + 9, 95), "right_knee": (x0 - 9, 95),
               "left_elbow": (x0 + 16, 50), "right_elbow": (x0 - 16, 50)}
        for name, (x, y) in pts.items():
            kps[n, s.names.index(name)] = (x, y, 2)
    boxes = np.array([[20, 20, 60, 110], [100, 20, 140, 110]], np.float32)
    return s, kps, boxes, (h, w)


def test_skeleton_limbs_have_side_colours_on_pixels():
    s, kps, boxes, (h, w) = _two_people()
    black = np.zeros((h, w, 3), np.uint8)
    img, stats = draw(black, {"boxes": boxes, "keypoints": kps}, show_boxes=False, return_stats=True)
    assert stats["skeletons"] == 2 and stats["people"] == 2
    px = np.asarray(img)
    checked = 0
    for p in kps:
        for a, b in s.skeleton:
            if p[a, 2] > 0 and p[b, 2] > 0:
                mid = ((p[a, :2] + p[b, :2]) / 2).round().astype(int)
                want = {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}[limb_side(s, a, b)]
                assert tuple(px[mid[1], mid[0]]) == want, (s.names[a], s.names[b])
                checked += 1
    assert checked == 2 * 8  # per person: thighs x2, torso sides x2, hips, shoulders, upper arms x2
    assert limb_side(s, 5, 6) == "center" and limb_side(s, 5, 7) == "left" and limb_side(s, 14, 12) == "right"


def test_score_and_keypoint_thresholds_hide_things():
    s, kps, boxes, (h, w) = _two_people()
    black = np.zeros((h, w, 3), np.uint8)
    pred = {"boxes": boxes, "scores": np.array([0.9, 0.3]), "keypoints": kps.copy(),
            "keypoint_scores": np.full((2, 17), 0.9, np.float32)}
    pred["keypoints"][..., 2] = 1.0
    _, stats = draw(black, pred, return_stats=True)
    assert stats["people"] == 1 and stats["skeletons"] == 1 and stats["boxes"] == 1
    pred["keypoint_scores"][0] = 0.1  # every keypoint of the kept person under the threshold
    img, stats = draw(black, pred, show_boxes=False, show_labels=False, return_stats=True)
    assert stats["skeletons"] == 0 and stats["keypoints"] == 0 and _limb_pixels(img) == 0
    _, stats = draw(black, pred, score_thresh=0.0, keypoint_thresh=0.05, return_stats=True)
    assert stats["skeletons"] == 2


def test_image_inputs_and_mask_formats_give_the_same_picture():
    s, kps, boxes, (h, w) = _two_people()
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, h, w), bool)
    masks[0, 25:105, 25:55] = True
    masks[1, 25:105, 105:135] = True
    result = {"boxes": boxes, "keypoints": kps, "masks": masks}
    ref = np.asarray(draw(arr, result))
    tensor_img = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    for image in (Image.fromarray(arr), tensor_img):
        np.testing.assert_array_equal(np.asarray(draw(image, result)), ref)
    float_masks = torch.from_numpy(masks[:, None].astype(np.float32) * 0.8)
    np.testing.assert_array_equal(np.asarray(draw(arr, {**result, "masks": float_masks})), ref)
    assert not np.array_equal(ref[60, 40], arr[60, 40])  # mask pixels are tinted
    np.testing.assert_array_equal(ref[5, 80], arr[5, 80])  # background untouched
    with pytest.raises(ValueError, match="paste them into the image"):
        draw(arr, {**result, "masks": masks[:, :28, :28]})


def test_offset_arrows_drawn_from_start_points():
    s, kps, boxes, (h, w) = _two_people()
    black = np.zeros((h, w, 3), np.uint8)
    starts = kps[..., :2] + np.array([6.0, 0.0], np.float32)
    img, stats = draw(black, {"boxes": boxes, "keypoints": kps}, show_boxes=False, show_offsets=True,
                      offsets=starts, return_stats=True)
    assert stats["arrows"] == int((kps[..., 2] > 0).sum()) == 16
    assert (np.abs(np.asarray(img).astype(int) - np.array(ARROW_COLOR)).sum(-1) == 0).sum() > 50
    _, none = draw(black, {"boxes": boxes, "keypoints": kps}, offsets=starts, return_stats=True)
    assert none["arrows"] == 0  # show_offsets is off


def test_draw_sampling_points_marks_points_and_centre():
    black = np.zeros((100, 100, 3), np.uint8)
    pts = np.array([[20.0, 20.0], [80.0, 30.0], [50.0, 85.0]])
    img = np.asarray(draw_sampling_points(black, pts, (50, 50)))
    for x, y in pts.astype(int):
        assert tuple(img[y, x]) == (255, 40, 40)
    assert (np.abs(img.astype(int) - np.array(CENTER_COLOR)).sum(-1) == 0).sum() > 10
    two = np.asarray(draw_sampling_points(black, [pts[:1], pts[1:]], (50, 50), colors=[(0, 0, 255), (255, 255, 0)]))
    assert tuple(two[20, 20]) == (0, 0, 255) and tuple(two[30, 80]) == (255, 255, 0)


def test_real_sample_overlay_has_one_skeleton_per_person_with_keypoints(coco_sample):
    from poseseg.data.coco import CocoPeopleDataset

    ds = CocoPeopleDataset(coco_sample / "person_keypoints_sample.json", coco_sample)
    total = 0
    for i in range(len(ds)):
        image, target = ds[i]
        kps = target["keypoints"].numpy()
        expected = _expected_skeletons(kps, ds.schema)
        img, stats = draw_ground_truth(image, target, ds.schema, return_stats=True)
        assert img.size == (image.shape[2], image.shape[1])
        assert stats["skeletons"] == expected and stats["people"] == len(kps) and stats["masks"] == len(kps)
        # pixels: draw each person alone on black; a skeleton shows limb-coloured pixels iff expected
        black = np.zeros((image.shape[1], image.shape[2], 3), np.uint8)
        drawn = 0
        for p in range(len(kps)):
            one = {"keypoints": kps[p:p + 1], "boxes": target["boxes"][p:p + 1]}
            alone = draw_ground_truth(black, one, ds.schema, show_boxes=False)
            has = _limb_pixels(alone) > 20
            assert has == (_expected_skeletons(kps[p:p + 1], ds.schema) == 1)
            drawn += has
        assert drawn == expected
        total += expected
    assert total == 12  # 14 people, 2 without any labelled keypoint


def test_crowd_regions_drawn_grey_without_skeleton():
    s, kps, boxes, (h, w) = _two_people()
    masks = np.zeros((2, h, w), np.uint8)
    masks[1, 25:105, 105:135] = 1
    target = {"boxes": torch.from_numpy(boxes), "keypoints": torch.from_numpy(kps), "masks": torch.from_numpy(masks),
              "iscrowd": torch.tensor([0, 1])}
    img, stats = draw_ground_truth(np.zeros((h, w, 3), np.uint8), target, return_stats=True)
    assert stats["people"] == 1 and stats["crowd"] == 1 and stats["skeletons"] == 1
    px = np.asarray(img)
    assert px[60, 120, 0] == px[60, 120, 1] == px[60, 120, 2] > 0  # grey tint, no limb colours inside


def test_deform_sampling_points_form_the_plain_grid_at_init_and_move_with_offsets():
    import poseseg
    from poseseg.visualize import deform_sampling_points, draw_deform_sampling

    model = poseseg.build_model(poseseg.load_config("tiny", ["model.backbone.deform_stages=[4,5]",
                                                              "model.input.test_size=256"]))
    image = np.zeros((256, 256, 3), np.uint8)
    points, name = deform_sampling_points(model, image, (128, 128))
    assert name.startswith("backbone.layer4")
    spacing = np.diff(np.unique(points[:, 0].round(3)))
    assert points.shape == (9, 2) and np.allclose(spacing, 32.0)  # res5 cells are 32 px apart
    conv = model.get_submodule(name)
    torch.nn.init.constant_(conv.offset_conv.bias, 0.0)
    conv.offset_conv.bias.data[1] = 1.0  # kernel point 0: dx = +1 input cell = +32 px
    moved, _ = deform_sampling_points(model, image, (128, 128))
    assert np.allclose(moved[0] - points[0], [32.0, 0.0]) and np.allclose(moved[1:], points[1:])
    assert draw_deform_sampling(model, image, (128, 128)).size == (256, 256)
