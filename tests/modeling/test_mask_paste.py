"""Box-by-box mask paste: equal to the full-size paste, half-pixel correct, and cheap to encode."""
import numpy as np
import pycocotools.mask as mask_utils
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from poseseg.modeling.mask_paste import box_mask_to_rle, masks_to_image, paste_full, paste_in_boxes

HW = (37, 53)


def random_case(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand((n, 1, 28, 28), generator=g)
    xy = torch.rand((n, 2), generator=g) * torch.tensor([60.0, 44.0]) - 6  # some boxes leave the image
    wh = torch.rand((n, 2), generator=g) * 30 + 0.3
    return masks, torch.cat([xy, xy + wh], dim=1)


def test_box_paste_equals_the_full_size_paste_exactly():
    masks, boxes = random_case()
    full = paste_full(masks, boxes, HW)  # (N, 1, H, W)
    for i, m in enumerate(paste_in_boxes(masks, boxes, HW)):
        placed = torch.zeros(HW)
        h, w = m.probs.shape
        placed[m.y0:m.y0 + h, m.x0:m.x0 + w] = m.probs
        assert torch.equal(placed, full[i, 0])  # nothing outside the box region is ever non-zero


def test_a_full_mask_covers_exactly_the_pixels_whose_centres_are_in_its_box():
    masks = torch.ones((1, 1, 28, 28))
    binary = masks_to_image(paste_in_boxes(masks, torch.tensor([[10.0, 5.0, 20.0, 25.0]]), HW), HW)[0]
    want = np.zeros(HW, bool)
    want[5:25, 10:20] = True
    assert np.array_equal(binary, want)


def test_close_to_torchvisions_integer_box_paste():
    # torchvision rounds the box to integers and pads the mask by a cell; we sample at pixel centres. Masks of
    # boxes tens of pixels wide agree up to about a pixel at the border.
    _, boxes = random_case(seed=1)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = (((yy - 13.5) / 12) ** 2 + ((xx - 13.5) / 9) ** 2 < 1).float()  # a person-like ellipse
    masks = blob.expand(len(boxes), 1, 28, 28)
    ours = paste_full(masks, boxes, HW)[:, 0] >= 0.5
    theirs = paste_masks_in_image(masks, boxes, HW)[:, 0] >= 0.5
    compared = 0
    for a, b, box in zip(ours, theirs, boxes):
        if (box[2] - box[0]) * (box[3] - box[1]) > 200 and b.sum() > 50:
            inter, union = (a & b).sum().item(), (a | b).sum().item()
            assert inter / union > 0.8
            compared += 1
    assert compared >= 2


def test_rle_and_bool_masks_agree():
    masks, boxes = random_case(seed=2)
    pasted = paste_in_boxes(masks, boxes, HW)
    image = masks_to_image(pasted, HW)
    for i, m in enumerate(pasted):
        assert np.array_equal(mask_utils.decode(box_mask_to_rle(m)).astype(bool), image[i])
    assert masks_to_image([], HW).shape == (0, *HW)
