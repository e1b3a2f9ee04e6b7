"""Training transforms: geometry of boxes/masks/keypoints, flips with left/right swap, seeding."""
import numpy as np
import pytest
import torch

from poseseg.keypoint_schema import coco_person_schema
from poseseg.data.transforms import (ColorJitter, Compose, RandomHorizontalFlip, ResizeShortestSide,
                                     build_transforms, hflip, resized_shape)


def _sample(h=40, w=60, k=17):
    """One person with a rectangular mask [x 10..30) x [y 5..35) and box [10, 5, 30, 35]."""
    image = torch.rand(3, h, w)
    masks = torch.zeros(1, h, w, dtype=torch.uint8)
    masks[0, 5:35, 10:30] = 1
    kps = torch.zeros(1, k, 3)
    kps[0, 9] = torch.tensor([12.5, 20.0, 2.0])  # left wrist
    kps[0, 10] = torch.tensor([27.0, 21.0, 1.0])  # right wrist
    target = {"boxes": torch.tensor([[10.0, 5.0, 30.0, 35.0]]), "labels": torch.ones(1, dtype=torch.int64),
              "masks": masks, "keypoints": kps, "iscrowd": torch.zeros(1, dtype=torch.int64), "image_id": 7}
    return image, target


def _mask_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_resized_shape_caps_the_longer_side():
    assert resized_shape(400, 600, 200, 1000) == (200, 300)
    assert resized_shape(400, 1600, 800, 1333) == (333, 1333)
    assert resized_shape(600, 400, 300, None) == (450, 300)


def test_resize_scales_everything_consistently():
    image, target = _sample()
    out_img, out = ResizeShortestSide([80], max_size=1000)(image, target)
    assert out_img.shape == (3, 80, 120)
    assert 0.0 <= float(out_img.min()) and float(out_img.max()) <= 1.0
    torch.testing.assert_close(out["boxes"], torch.tensor([[20.0, 10.0, 60.0, 70.0]]))
    assert out["masks"].dtype == torch.uint8 and set(out["masks"].unique().tolist()) == {0, 1}
    assert _mask_box(out["masks"][0]) == [20, 10, 60, 70]  # the mask still fills its box exactly
    torch.testing.assert_close(out["keypoints"][0, 9], torch.tensor([25.0, 40.0, 2.0]))
    assert out["keypoints"][0, 0].tolist() == [0.0, 0.0, 0.0]  # unlabelled stays zero
    assert target["boxes"][0, 2] == 30.0  # the input target is not modified
    # downscale with a non-integer factor: the mask stays within a pixel of the box
    _, small = ResizeShortestSide([27], max_size=None)(image, target)
    box = small["boxes"][0].tolist()
    assert np.abs(np.array(_mask_box(small["masks"][0])) - np.array(box)).max() <= 1.0


def test_resize_picks_sizes_from_the_list_with_torch_rng():
    image, target = _sample()
    t = ResizeShortestSide([20, 30, 40], max_size=1000)

    def draw_sizes():
        return [t(image, target)[0].shape[-2] for _ in range(30)]

    torch.manual_seed(123)
    a = draw_sizes()
    torch.manual_seed(123)
    assert draw_sizes() == a
    assert set(a) == {20, 30, 40}


def test_flip_mirrors_and_swaps_left_right():
    image, target = _sample()
    perm = coco_person_schema().flip_permutation()
    w = image.shape[-1]
    out_img, out = RandomHorizontalFlip(1.0, perm)(image, target)
    assert torch.equal(out_img, image.flip(-1))
    torch.testing.assert_close(out["boxes"], torch.tensor([[w - 30.0, 5.0, w - 10.0, 35.0]]))
    assert _mask_box(out["masks"][0]) == [w - 30, 5, w - 10, 35]  # x -> W - x matches the pixels
    # the right wrist, mirrored, is now the left wrist and vice versa; visibility travels along
    assert out["keypoints"][0, 9].tolist() == [w - 27.0, 21.0, 1.0]
    assert out["keypoints"][0, 10].tolist() == [w - 12.5, 20.0, 2.0]
    assert out["keypoints"][0, 0].tolist() == [0.0, 0.0, 0.0]
    # twice is the identity
    back_img, back = hflip(out_img, out, perm)
    assert torch.equal(back_img, image)
    for key in ("boxes", "masks", "keypoints"):
        torch.testing.assert_close(back[key], target[key])


def test_flip_probability_and_seeding():
    image, target = _sample()
    perm = coco_person_schema().flip_permutation()
    assert RandomHorizontalFlip(0.0, perm)(image, target)[0] is image
    flip = RandomHorizontalFlip(0.5, perm)

    def pattern():
        return [not torch.equal(flip(image, target)[0], image) for _ in range(40)]

    torch.manual_seed(5)
    a = pattern()
    torch.manual_seed(5)
    assert pattern() == a
    assert 8 < sum(a) < 32


def test_flip_without_permutation_refuses_keypoints():
    image, target = _sample()
    with pytest.raises(ValueError, match="flip_permutation"):
        RandomHorizontalFlip(1.0)(image, target)
    with pytest.raises(ValueError, match="K=17"):
        RandomHorizontalFlip(1.0, [0, 1])(image, target)


def test_color_jitter_changes_pixels_only():
    image, target = _sample()
    out_img, out = ColorJitter(0.4, 0.4, 0.4)(image, target)
    assert out_img.shape == image.shape and not torch.equal(out_img, image)
    assert 0.0 <= float(out_img.min()) and float(out_img.max()) <= 1.0
    assert out is target
    same, _ = ColorJitter()(image, target)
    assert torch.equal(same, image)


def test_build_transforms_and_compose():
    perm = coco_person_schema().flip_permutation()
    t = build_transforms(sizes=[32], max_size=64, flip_prob=0.5, flip_permutation=perm, color_jitter=0.2)
    assert isinstance(t, Compose) and len(t.transforms) == 3
    image, target = _sample()
    out_img, out = t(image, target)
    assert min(out_img.shape[-2:]) == 32 and out["masks"].shape[-2:] == out_img.shape[-2:]


def test_empty_targets_survive_all_transforms():
    image = torch.rand(3, 30, 50)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "masks": torch.zeros(0, 30, 50, dtype=torch.uint8), "keypoints": torch.zeros(0, 17, 3)}
    t = build_transforms(sizes=[20], max_size=100, flip_prob=1.0,
                         flip_permutation=coco_person_schema().flip_permutation())
    out_img, out = t(image, target)
    assert out_img.shape == (3, 20, 33) and out["masks"].shape == (0, 20, 33) and out["boxes"].shape == (0, 4)
