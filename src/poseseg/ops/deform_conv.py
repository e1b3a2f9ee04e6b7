"""Deformable convolution (DCN v1 / v2 "modulated") with a fast CPU path.

``deform_conv2d`` has the signature and semantics of :func:`torchvision.ops.deform_conv2d`:

* ``offset``: ``(N, 2 * G * kh * kw, Hout, Wout)``, for offset group ``g`` and kernel point
  ``k = i * kw + j`` channel ``g * 2 * kh * kw + 2 * k`` is the y (row) offset and the next
  channel the x (column) offset; ``G = offset.shape[1] // (2 * kh * kw)``.
* ``mask`` (optional, v2): ``(N, G * kh * kw, Hout, Wout)``, multiplies each sample.
* weight groups are ``input.shape[1] // weight.shape[1]``.
* sample ``(y, x) = (ho * sh - ph + i * dh + dy, wo * sw - pw + j * dw + dx)`` is read by
  bilinear interpolation with zeros outside the image:
  ``sum_q max(0, 1 - |qy - y|) * max(0, 1 - |qx - x|) * input[q]``. Gradients with respect to
  the sample position use the same one-sided convention as torchvision (the derivative on the
  right at an integer coordinate, i.e. the neighbours are ``floor`` and ``floor + 1``).

CUDA (and any non-CPU) tensors go to torchvision's kernel. On CPU the op is our own, written
with PyTorch tensor ops: a custom :class:`torch.autograd.Function` over the sampling plan of
:mod:`poseseg.ops.deform_sampling` (where the sparse-matrix design is written down). Double
backward is not supported (as with torchvision).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import init
from torch.nn.modules.utils import _pair

from poseseg.ops.deform_sampling import (PAD, SamplingPlan, group_cols, image_rows, weight_from_matrix,
                                         weight_matrix)

__all__ = ["deform_conv2d", "DeformConv2d"]

IntOrPair = Union[int, Tuple[int, int]]

class _DeformConv2dCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, offset, weight, bias, mask, stride, padding, dilation):
        p = SamplingPlan(input, offset, weight, mask, stride, padding, dilation)
        xp = image_rows(input, p)
        wm = weight_matrix(weight, p)
        per_img = p.per_img
        out = input.new_empty(p.n, p.co, p.ho, p.wo)
        out3 = out.view(p.n, p.co, per_img)
        wg, cow = p.wg, p.co // p.wg
        rbuf = input.new_empty(p.max_rows, p.co) if wg == 1 else None
        for i, s, e, n0, n1, j0, j1 in p.chunks():
            rows = e - s
            cols = p.gather(xp, i).view(rows, p.k * p.c)
            single = n1 == n0 + 1
            if wg == 1:
                res = torch.mm(cols, wm, out=rbuf[:rows])
                # the transposing copy into the NCHW output also adds the bias
                if single:
                    src, dst = res.t(), out3[n0, :, j0:j1]
                else:
                    src, dst = res.view(n1 - n0, per_img, p.co).transpose(1, 2), out3[n0:n1]
                if bias is not None:
                    torch.add(src, bias.view(-1, 1), out=dst)
                else:
                    dst.copy_(src)
            else:
                res = torch.bmm(group_cols(cols, p), wm)  # (wg, rows, Co / wg)
                if single:
                    out3[n0, :, j0:j1].view(wg, cow, rows).copy_(res.transpose(1, 2))
                else:
                    out3[n0:n1].view(n1 - n0, wg, cow, per_img).copy_(
                        res.view(wg, n1 - n0, per_img, cow).permute(1, 0, 3, 2))
        if bias is not None and (wg > 1 or p.np == 0):
            out += bias.view(-1, 1, 1)
        p.offset = p.mask = None  # the pieces hold what the backward needs
        ctx.plan = p
        ctx.save_for_backward(xp, wm)
        ctx.has_bias = bias is not None
        ctx.has_mask = mask is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        p: SamplingPlan = ctx.plan
        xp, wm = ctx.saved_tensors
        need_x, need_off, need_w, need_b, need_m = ctx.needs_input_grad[:5]
        need_m = need_m and ctx.has_mask
        grad_out = grad_out.contiguous()
        g3 = grad_out.view(p.n, p.co, p.per_img)
        gxp = torch.zeros_like(xp) if need_x else None
        gw = torch.zeros_like(wm) if need_w else None
        goff = xp.new_empty(p.n, p.g, p.k, 2, p.per_img) if need_off else None
        gmask = xp.new_empty(p.n, p.g, p.k, p.per_img) if need_m else None
        r = p.rows_per_pos
        wg, cow = p.wg, p.co // p.wg
        if p.np > 0 and (need_x or need_w or need_off or need_m):
            gbuf = xp.new_empty(p.max_rows, p.k * p.c) if (need_x or need_off or need_m) else None
            for i, s, e, n0, n1, j0, j1 in p.chunks():
                rows = e - s
                if n1 == n0 + 1:
                    go = g3[n0, :, j0:j1].t()  # (rows, Co), a transposed view
                else:
                    go = g3[n0:n1].transpose(1, 2).reshape(rows, p.co)
                gop = go.reshape(rows, wg, cow).transpose(0, 1) if wg > 1 else None
                if need_w:
                    cols = p.gather(xp, i).view(rows, p.k * p.c)
                    if wg == 1:
                        gw.addmm_(cols.t(), go)
                    else:
                        gw.baddbmm_(group_cols(cols, p).transpose(1, 2), gop)
                if need_x or need_off or need_m:
                    gcols = gbuf[:rows]
                    if wg == 1:
                        torch.mm(go, wm.t(), out=gcols)
                    else:
                        res = torch.bmm(gop, wm.transpose(1, 2))  # (wg, rows, K * Cw)
                        gcols.view(rows, p.k, wg, p.cw).copy_(res.view(wg, rows, p.k, p.cw).permute(1, 2, 0, 3))
                    gcols_rows = gcols.view(rows * r, p.cg)
                    if need_x:
                        p.scatter_add(gxp, i, gcols_rows)
                    if need_off or need_m:
                        p.sample_grads(i, gcols_rows, xp, goff, gmask)
        grad_input = grad_offset = grad_weight = grad_bias = grad_mask = None
        if need_x:
            gi = gxp.view(p.n, p.g, p.hp, p.wp, p.cg)[:, :, PAD:PAD + p.h, PAD:PAD + p.w, :]
            grad_input = gi.permute(0, 1, 4, 2, 3).reshape(p.n, p.c, p.h, p.w)
        if need_w:
            grad_weight = weight_from_matrix(gw, p)
        if need_b and ctx.has_bias:
            grad_bias = grad_out.sum((0, 2, 3))
        if need_off:
            grad_offset = goff.view(p.n, p.g * p.k * 2, p.ho, p.wo)
        if need_m:
            grad_mask = gmask.view(p.n, p.g * p.k, p.ho, p.wo)
        return grad_input, grad_offset, grad_weight, grad_bias, grad_mask, None, None, None


def _check(input: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Optional[Tensor],
           stride, padding, dilation) -> None:
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError("input, offset and weight must be 4-D")
    n, c, h, w = input.shape
    co, cw, kh, kw = weight.shape
    k = kh * kw
    if offset.shape[1] % (2 * k) != 0 or offset.shape[1] == 0:
        raise RuntimeError(
            "the shape of the offset tensor at dimension 1 is not valid. It should be a multiple of "
            f"2 * weight.size[2] * weight.size[3].\nGot offset.shape[1]={offset.shape[1]}, while "
            f"2 * weight.size[2] * weight.size[3]={2 * k}")
    g = offset.shape[1] // (2 * k)
    if cw == 0 or c % cw != 0:
        raise RuntimeError(f"input channels {c} not divisible by weight.shape[1]={cw}")
    wg = c // cw
    if co % wg != 0:
        raise RuntimeError(f"output channels {co} not divisible by the {wg} weight groups")
    if c % g != 0:
        raise RuntimeError(f"input channels {c} not divisible by the {g} offset groups")
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise RuntimeError("stride and dilation must be >= 1 and padding >= 0")
    ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if ho <= 0 or wo <= 0:
        raise RuntimeError(f"output size would be {ho}x{wo}")
    if offset.shape[0] != n or tuple(offset.shape[2:]) != (ho, wo):
        raise RuntimeError(f"offset has shape {tuple(offset.shape)}, expected ({n}, {2 * g * k}, {ho}, {wo})")
    if mask is not None and tuple(mask.shape) != (n, g * k, ho, wo):
        raise RuntimeError(f"mask has shape {tuple(mask.shape)}, expected ({n}, {g * k}, {ho}, {wo})")
    if bias is not None and tuple(bias.shape) != (co,):
        raise RuntimeError(f"bias has shape {tuple(bias.shape)}, expected ({co},)")


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: IntOrPair = (1, 1),
    padding: IntOrPair = (0, 0),
    dilation: IntOrPair = (1, 1),
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Deformable convolution v1 (``mask=None``) or v2 (modulated, with ``mask``).

    Same arguments, shapes, offset layout and result as :func:`torchvision.ops.deform_conv2d`
    (see the module docstring). Differentiable with respect to ``input``, ``offset``,
    ``weight``, ``bias`` and ``mask`` (first order). CPU tensors use our implementation,
    anything else (and an ONNX export's trace) torchvision's kernel.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if input.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        # ONNX export traces torchvision's op (same numerics), which poseseg.export maps to DeformConv
        import torchvision

        return torchvision.ops.deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding,
                                             dilation=dilation, mask=mask)
    _check(input, offset, weight, bias, mask, stride, padding, dilation)
    dtype = input.dtype
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32

    def cast(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.to(work)

    out = _DeformConv2dCPU.apply(cast(input), cast(offset), cast(weight), cast(bias), cast(mask),
                                 stride, padding, dilation)
    return out if out.dtype == dtype else out.to(dtype)


class DeformConv2d(nn.Module):
    """A 3x3 (or any kernel) convolution whose sampling grid is deformed by learned offsets.

    Holds the main convolution as ``weight`` / ``bias`` with exactly the names and shapes of
    :class:`torch.nn.Conv2d` (a plain Conv2d's state dict loads into it; the missing
    ``offset_conv.*`` keys are then kept as they are), plus ``offset_conv``: a plain
    ``nn.Conv2d`` on the same input with the same kernel, stride, padding and dilation that
    predicts ``2 * offset_groups * kh * kw`` offsets (torchvision layout) and, when
    ``modulated`` (DCN v2), ``offset_groups * kh * kw`` mask logits after them.

    ``offset_conv`` starts at zero weights and bias, so at initialisation the module computes
    exactly the plain convolution: zero offsets, and the modulation mask is
    ``2 * sigmoid(logits)``, which is exactly 1 at zero logits (range (0, 2)).

    ``forward(x, return_offsets=True)`` returns ``(out, offset, mask)`` (``mask`` is None for
    v1) for visualisation; :meth:`offsets` computes just the latter two.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, *, stride: IntOrPair = 1,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1, offset_groups: int = 1,
                 modulated: bool = False, bias: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        if in_channels % offset_groups:
            raise ValueError("in_channels must be divisible by offset_groups")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.offset_groups = offset_groups
        self.modulated = modulated
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        n_off = offset_groups * kh * kw * (3 if modulated else 2)
        self.offset_conv = nn.Conv2d(in_channels, n_off, self.kernel_size, stride=self.stride,
                                     padding=self.padding, dilation=self.dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the main conv exactly as nn.Conv2d initialises itself
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)
        init.zeros_(self.offset_conv.weight)
        init.zeros_(self.offset_conv.bias)

    def offsets(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """The sampling offsets ``(N, 2 * G * kh * kw, Hout, Wout)`` and mask (or None) for ``x``."""
        o = self.offset_conv(x)
        if not self.modulated:
            return o, None
        n_off = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        offset, logits = o[:, :n_off], o[:, n_off:]
        return offset, 2.0 * torch.sigmoid(logits)

    def forward(self, x: Tensor, return_offsets: bool = False):
        offset, mask = self.offsets(x)
        out = deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                            dilation=self.dilation, mask=mask)
        if return_offsets:
            return out, offset, mask
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A plain nn.Conv2d state dict has no offset branch: keep ours (zeros at init) instead of
        # reporting missing keys. Children are loaded from this same dict after this call.
        if prefix + "weight" in state_dict:
            for name, t in self.offset_conv.state_dict(keep_vars=True).items():
                state_dict.setdefault(prefix + "offset_conv." + name, t.detach())
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.offset_groups != 1:
            s += f", offset_groups={self.offset_groups}"
        if self.modulated:
            s += ", modulated=True"
        if self.bias is None:
            s += ", bias=False"
        return s
