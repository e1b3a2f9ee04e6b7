"""The two model options Detectron2 weights need: half-pixel RoIAlign (ROIAlignV2) and unrounded anchors."""
import math

import torch
from torchvision.ops import roi_align
from torchvision.ops.poolers import LevelMapper

import poseseg
from poseseg.modeling.pooler import RoIPooler
from poseseg.modeling.rpn import UnroundedAnchorGenerator


def test_aligned_pooler_is_roi_align_v2_on_the_mapped_level():
    g = torch.Generator().manual_seed(0)
    features = {"p2": torch.randn(1, 4, 64, 64, generator=g), "p3": torch.randn(1, 4, 32, 32, generator=g),
                "p4": torch.randn(1, 4, 16, 16, generator=g), "p5": torch.randn(1, 4, 8, 8, generator=g)}
    boxes = [torch.tensor([[3.0, 4.0, 40.0, 50.0], [10.0, 10.0, 250.0, 240.0], [0.5, 1.5, 120.0, 90.0]])]
    pooler = RoIPooler(level_names=list(features), output_size=7, sampling_ratio=2, aligned=True)
    got = pooler(features, boxes, [(256, 256)])
    levels = LevelMapper(2, 5)(boxes)  # Mask R-CNN's level rule: canonical 224 px at p4
    for i, level in enumerate(levels.tolist()):
        scale = 1 / 2 ** (level + 2)
        rois = torch.cat([torch.zeros(1, 1), boxes[0][i:i + 1]], dim=1)
        want = roi_align(features[f"p{level + 2}"], rois, 7, spatial_scale=scale, sampling_ratio=2, aligned=True)
        torch.testing.assert_close(got[i:i + 1], want)
    plain = RoIPooler(level_names=list(features), output_size=7, sampling_ratio=2)(features, boxes, [(256, 256)])
    assert not torch.allclose(plain, got)  # the option changes the sampling


def test_unrounded_anchors_are_detectron2s():
    anchors = UnroundedAnchorGenerator(((32,),), ((0.5, 1.0, 2.0),)).generate_anchors([32], [0.5, 1.0, 2.0])
    for row, ratio in zip(anchors, (0.5, 1.0, 2.0)):  # Detectron2: w = sqrt(size^2 / ratio), h = ratio * w
        w = math.sqrt(32 * 32 / ratio)
        h = ratio * w
        torch.testing.assert_close(row, torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))


def test_defaults_unchanged():
    cfg = poseseg.load_config("paper_regular")
    assert not cfg.model.roi.aligned and cfg.model.rpn.round_anchors
    assert cfg.model.input.channel_order == "rgb" and cfg.model.input.pixel_scale == 1.0
    assert not cfg.model.backbone.stride_in_1x1 and cfg.model.keypoint.decode == "peak"
