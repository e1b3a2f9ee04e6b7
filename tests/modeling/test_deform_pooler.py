"""Deformable RoI pooling against torchvision's RoIAlign."""
from collections import OrderedDict

import pytest
import torch

from poseseg.modeling.deform_pooler import DeformRoIPooler
from poseseg.modeling.pooler import RoIPooler

LEVELS = ["p3", "p4", "p5"]
SIZES = [(320, 384), (320, 384)]


def features_and_boxes():
    g = torch.Generator().manual_seed(0)
    feats = OrderedDict(p3=torch.randn(2, 8, 40, 48, generator=g), p4=torch.randn(2, 8, 20, 24, generator=g),
                        p5=torch.randn(2, 8, 10, 12, generator=g))
    boxes = [torch.tensor([[20.0, 30.0, 300.0, 200.0], [10.0, 20.0, 50.0, 90.0], [100.0, 100.0, 300.0, 290.0]]),
             torch.tensor([[200.0, 100.0, 340.0, 280.0], [40.0, 45.0, 70.0, 80.0]])]
    return feats, boxes


def test_zero_offsets_equal_roi_align():
    feats, boxes = features_and_boxes()
    deform = DeformRoIPooler(level_names=LEVELS, output_size=7, channels=8)
    plain = RoIPooler(level_names=LEVELS, output_size=7)
    torch.testing.assert_close(deform(feats, boxes, SIZES), plain(feats, boxes, SIZES), atol=1e-5, rtol=1e-5)


def test_a_constant_offset_equals_roi_align_of_the_shifted_box():
    feats, boxes = features_and_boxes()
    deform = DeformRoIPooler(level_names=LEVELS, output_size=7, channels=8, gamma=0.1)
    with torch.no_grad():
        deform.offset_fc.bias.view(7, 7, 2)[..., 0] = 0.3  # dx = 0.3 * 0.1 * roi width
        deform.offset_fc.bias.view(7, 7, 2)[..., 1] = -0.2  # dy = -0.2 * 0.1 * roi height
    shifted = []
    for b in boxes:
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        d = torch.stack([0.03 * w, -0.02 * h, 0.03 * w, -0.02 * h], dim=1)
        shifted.append(b + d)
    plain = RoIPooler(level_names=LEVELS, output_size=7)
    torch.testing.assert_close(deform(feats, boxes, SIZES), plain(feats, shifted, SIZES), atol=1e-4, rtol=1e-4)


def test_offsets_receive_gradient():
    feats, boxes = features_and_boxes()
    deform = DeformRoIPooler(level_names=LEVELS, output_size=7, channels=8)
    deform(feats, boxes, SIZES).pow(2).sum().backward()
    assert deform.offset_fc.weight.grad.abs().sum() > 0


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # torchvision's level scales: constants
def test_a_trace_serves_other_map_sizes_and_box_counts():
    # the exporter traces the pooler: sizes and box counts must stay values, not constants of the trace
    feats, boxes = features_and_boxes()
    deform = DeformRoIPooler(level_names=LEVELS, output_size=7, channels=8).requires_grad_(False)
    deform.offset_fc.bias.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))  # offsets of about a bin

    def one_image(p3, p4, p5, rois):
        return deform(OrderedDict(p3=p3, p4=p4, p5=p5), [rois], [(320, 384)])

    first = [f[:1] for f in feats.values()]
    traced = torch.jit.trace(one_image, (*first, boxes[0]), check_trace=False)
    other = [f[1:, :, : f.shape[2] * 3 // 4, : f.shape[3] // 2] for f in feats.values()]  # another size
    rois = torch.cat(boxes)  # another box count
    torch.testing.assert_close(traced(*other, rois), one_image(*other, rois), atol=0, rtol=0)
