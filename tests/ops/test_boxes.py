"""The numpy box IoU against torchvision's."""
import numpy as np
import torch
from torchvision.ops import box_iou as tv_box_iou

from poseseg.ops.boxes import box_iou


def random_boxes(rng, n, *, min_size=1.0):
    xy = rng.uniform(0, 100, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(min_size, 50, (n, 2))], 1)  # (n, 4) xyxy


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    np.testing.assert_allclose(box_iou(a, b), tv_box_iou(torch.tensor(a), torch.tensor(b)).numpy(), atol=1e-12)


def test_box_iou_with_overlaps_identical_and_zero_area_boxes():
    rng = np.random.default_rng(1)
    a = random_boxes(rng, 40, min_size=0.0)
    a[::5, 2] = a[::5, 0]  # zero width
    a[1::7, 3] = a[1::7, 1]  # zero height
    b = random_boxes(rng, 30, min_size=0.0)
    b[::4, 2:] = b[::4, :2]  # points
    b = np.concatenate([b, a[:6]])  # and boxes identical to a's first six
    got = box_iou(a, b)
    want = tv_box_iou(torch.tensor(a), torch.tensor(b)).numpy()  # 0/0 = nan where both boxes are empty
    assert got.shape == (40, 36) and got.dtype == np.float64
    assert np.isnan(want).any()
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], atol=1e-12)
    assert (got[np.isnan(want)] == 0).all()
    area = (a[:6, 2] - a[:6, 0]) * (a[:6, 3] - a[:6, 1])
    np.testing.assert_allclose(got[:6, 30:].diagonal()[area > 0], 1.0)  # a box with itself
    assert 0 < (got > 0).mean() < 1 and got.max() <= 1.0


def test_box_iou_of_empty_inputs():
    boxes = random_boxes(np.random.default_rng(2), 3)
    assert box_iou(np.zeros((0, 4)), boxes).shape == (0, 3)
    assert box_iou(boxes, np.zeros((0, 4))).shape == (3, 0)
    assert box_iou([], []).shape == (0, 0)
    assert tv_box_iou(torch.zeros(0, 4), torch.tensor(boxes)).shape == (0, 3)
