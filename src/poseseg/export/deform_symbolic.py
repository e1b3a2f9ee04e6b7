"""Deformable convolution in ONNX: torchvision's ``deform_conv2d`` (and ours, which traces as it
during an export) becomes the standard ``DeformConv`` operator of ONNX opset 19.

ONNX's DeformConv has torchvision's semantics: offsets ``(N, 2 * G * kh * kw, Ho, Wo)`` with
(y, x) pairs per kernel point, an optional modulation mask ``(N, G * kh * kw, Ho, Wo)``,
bilinear sampling with zeros outside the input. So the mapping is one node, no decomposition.
"""
from __future__ import annotations

import importlib

import torch
from torch.onnx import symbolic_helper

DEFORM_CONV_OPSET = 19  # the first opset with DeformConv
_registered_opsets: set[int] = set()


class ExportError(ValueError):
    """The model holds something that cannot be exported faithfully; the message names it and the fix."""


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
def deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                           n_weight_groups, n_offset_groups, use_mask):
    """``torchvision::deform_conv2d`` -> ``DeformConv`` (bias is always a tensor here: torchvision
    passes zeros when the layer has none; the mask input is left out for DCN v1)."""
    inputs = [input, weight, offset, bias] + ([mask] if use_mask else [])
    return g.op("DeformConv", *inputs, strides_i=[stride_h, stride_w], pads_i=[pad_h, pad_w, pad_h, pad_w],
                dilations_i=[dil_h, dil_w], group_i=n_weight_groups, offset_group_i=n_offset_groups)


def register_deform_conv_symbolic(opset: int) -> None:
    """Make the TorchScript-based exporter emit ``DeformConv`` for deformable convolutions at ``opset``."""
    if opset < DEFORM_CONV_OPSET:
        raise ExportError(f"deformable convolution needs ONNX opset >= {DEFORM_CONV_OPSET} (DeformConv); "
                          f"got --opset {opset}")
    if opset not in _registered_opsets:
        importlib.import_module("torchvision.ops")  # loads the torchvision:: operators
        torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", deform_conv2d_symbolic, opset)
        _registered_opsets.add(opset)
