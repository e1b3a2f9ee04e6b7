"""Region proposal network: torchvision's RPN with anchors derived from the FPN levels."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead


def default_anchor_sizes(level_names: list[str]) -> list[list[int]]:
    """One size per level, 32 * 2**(l - 2) (p2: 32 ... p6: 512).

    Sizes that belong to levels finer than the finest one present go to the finest level, so a
    single-scale pyramid (p5, p6) still has anchors for small people: p5 gets 32..256.
    """
    levels = [int(n[1:]) for n in level_names]
    sizes = [[32 * 2 ** (lvl - 2)] for lvl in levels]
    finest = levels[0]
    sizes[0] = [32 * 2 ** (lvl - 2) for lvl in range(2, finest + 1)]
    return sizes


class UnroundedAnchorGenerator(AnchorGenerator):
    """Base anchors at their exact sizes (Detectron2's); torchvision rounds them to whole pixels."""

    def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32, device=torch.device("cpu")):
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)  # height / width
        widths = (scales[None, :] / ratios.sqrt()[:, None]).view(-1)  # (A,): area scale**2 at each ratio
        heights = (scales[None, :] * ratios.sqrt()[:, None]).view(-1)
        return torch.stack([-widths, -heights, widths, heights], dim=1) / 2  # (A, 4) centred xyxy


class LevelRPN(RegionProposalNetwork):
    """torchvision's RPN over the pyramid levels it was built for, whatever else the feature dict holds
    (the mask head's finer level, ``model.mask.fine_level``)."""

    def __init__(self, *args, level_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.level_names = list(level_names)

    def forward(self, images, features, targets=None):
        return super().forward(images, OrderedDict((n, features[n]) for n in self.level_names), targets)


def build_rpn(*, level_names: list[str], in_channels: int, anchor_sizes: list[list[int]],
              aspect_ratios: list[float], conv_depth: int, fg_iou: float, bg_iou: float,
              batch_size_per_image: int, positive_fraction: float, pre_nms_top_n_train: int,
              post_nms_top_n_train: int, pre_nms_top_n_test: int, post_nms_top_n_test: int,
              nms_thresh: float, score_thresh: float, round_anchors: bool = True) -> RegionProposalNetwork:
    sizes = anchor_sizes or default_anchor_sizes(level_names)
    if len(sizes) != len(level_names):
        raise ValueError(f"model.rpn.anchor_sizes has {len(sizes)} entries for {len(level_names)} FPN levels "
                         f"{level_names}; give one list per level or leave it empty")
    if len({len(s) for s in sizes}) != 1:
        # torchvision's RPN head shares one conv over all levels: each level needs the same anchor count.
        width = max(len(s) for s in sizes)
        sizes = [list(s) + [s[-1]] * (width - len(s)) for s in sizes]
    generator = (AnchorGenerator if round_anchors else UnroundedAnchorGenerator)(tuple(tuple(s) for s in sizes), (tuple(aspect_ratios),) * len(sizes))
    head = RPNHead(in_channels, generator.num_anchors_per_location()[0], conv_depth=conv_depth)
    return LevelRPN(
        generator, head, level_names=level_names,
        fg_iou_thresh=fg_iou, bg_iou_thresh=bg_iou,
        batch_size_per_image=batch_size_per_image, positive_fraction=positive_fraction,
        pre_nms_top_n=dict(training=pre_nms_top_n_train, testing=pre_nms_top_n_test),
        post_nms_top_n=dict(training=post_nms_top_n_train, testing=post_nms_top_n_test),
        nms_thresh=nms_thresh, score_thresh=score_thresh,
    )
