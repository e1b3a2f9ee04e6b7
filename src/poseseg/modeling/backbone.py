"""ResNet-18/34/50/101 trunk returning res2..res5, with a choice of norm and swappable 3x3 convs.

Parameter names follow torchvision's ``resnet*`` so its checkpoints load as they are. The 3x3
convolutions of chosen stages can be deformable (the paper's "refinement in backbone").
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

STAGE_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def make_norm(kind: str, channels: int) -> nn.Module:
    """frozen_bn: BN with fixed statistics (pretrained starts); bn; gn: GroupNorm (from scratch)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(min(32, channels // 4) if channels >= 8 else 1, channels)
    raise ValueError(f"unknown norm {kind!r}; choose frozen_bn, bn or gn")


def make_conv3x3(in_ch: int, out_ch: int, *, stride: int = 1, deformable: bool = False,
                 modulated: bool = True) -> nn.Module:
    """A 3x3 conv, plain or deformable; both share the parameter names ``weight`` (no bias)."""
    if deformable:
        from poseseg.ops import DeformConv2d  # deferred: the op is only needed when asked for

        return DeformConv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False, modulated=modulated)
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``; at inference, one convolution with the norm folded into it.

    A frozen BN, or a BN in eval mode, is the per-channel affine y = x * s + t with
    s = w / sqrt(var + eps) and t = b - mean * s, so ``norm(conv(x)) = conv'(x)`` with weight
    W * s and bias t. That saves the two passes over every activation map that the affine costs
    (see benchmarks/RESULTS.md, issue 8). The folded weights are recomputed on each call (one
    multiply per weight, small next to the convolutions), so there is no cache to go stale and
    the parameters, their names and checkpoint loading are untouched. Equal to the unfolded path up to float rounding (~1e-6 relative). Used only
    in eval mode; training, GroupNorm and deformable convs take the plain path.
    """
    foldable = (not norm.training and isinstance(norm, (FrozenBatchNorm2d, nn.BatchNorm2d)) and type(conv) is nn.Conv2d
                and getattr(norm, "running_var", None) is not None)
    if not foldable:
        return norm(conv(x))
    scale = norm.running_var.add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, *, in_ch: int, width: int, stride: int, norm: str, deformable: bool, modulated: bool):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = make_conv3x3(in_ch, width, stride=stride, deformable=deformable, modulated=modulated)
        self.bn1 = make_norm(norm, width)
        self.conv2 = make_conv3x3(width, out_ch, deformable=deformable, modulated=modulated)
        self.bn2 = make_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(*self.downsample, x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = conv_norm(self.conv2, self.bn2, out)
        return _add_relu(out, identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, *, in_ch: int, width: int, stride: int, norm: str, deformable: bool, modulated: bool,
                 stride_in_1x1: bool = False):
        super().__init__()
        out_ch = width * self.expansion
        # torchvision strides in the 3x3 conv; MSRA's caffe2 ResNets (Detectron's) in the first 1x1
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1, stride=stride_1x1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = make_conv3x3(width, width, stride=stride_3x3, deformable=deformable, modulated=modulated)
        self.bn2 = make_norm(norm, width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = make_norm(norm, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(*self.downsample, x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = self.relu(conv_norm(self.conv2, self.bn2, out))
        out = conv_norm(self.conv3, self.bn3, out)
        return _add_relu(out, identity)


def _add_relu(out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """relu(out + identity); without autograd, in place in ``out`` (a fresh block-local tensor):
    the same values without allocating (and page-faulting in) another full-size map."""
    if torch.is_grad_enabled() and (out.requires_grad or identity.requires_grad):
        return torch.relu(out + identity)
    return out.add_(identity).relu_()


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), make_norm(norm, out_ch))


class ResNet(nn.Module):
    """ResNet trunk: ``forward(x)`` -> OrderedDict res2..res5 (strides 4, 8, 16, 32)."""

    def __init__(self, *, depth: int = 50, width: int = 64, norm: str = "frozen_bn",
                 deform_stages: list[int] | tuple[int, ...] = (), deform_modulated: bool = True,
                 freeze_at: int = 0, stride_in_1x1: bool = False):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet depth {depth} is not supported; choose {sorted(STAGE_BLOCKS)}")
        block = BasicBlock if depth < 50 else Bottleneck
        options = {"stride_in_1x1": stride_in_1x1} if block is Bottleneck else {}  # 3x3-only blocks: no choice
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = width
        self.out_channels: dict[str, int] = {}
        for i, num_blocks in enumerate(STAGE_BLOCKS[depth]):
            stage = i + 2
            planes = width * 2**i
            blocks = []
            for b in range(num_blocks):
                blocks.append(block(in_ch=in_ch, width=planes, stride=(2 if (b == 0 and stage > 2) else 1),
                                    norm=norm, deformable=stage in deform_stages, modulated=deform_modulated,
                                    **options))
                in_ch = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.out_channels[f"res{stage}"] = in_ch
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """Stop gradients to the stem (freeze_at >= 1) and res2..res{freeze_at}."""
        if freeze_at >= 1:
            for m in (self.conv1, self.bn1):
                m.requires_grad_(False)
        for stage in range(2, freeze_at + 1):
            getattr(self, f"layer{stage - 1}").requires_grad_(False)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))  # (B, w, H/4, W/4)
        out = OrderedDict()
        for stage in range(2, 6):
            x = getattr(self, f"layer{stage - 1}")(x)
            out[f"res{stage}"] = x  # (B, C_stage, H/2**stage, W/2**stage)
        return out
