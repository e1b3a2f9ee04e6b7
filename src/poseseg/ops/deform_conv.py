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
with PyTorch tensor ops and a custom :class:`torch.autograd.Function`:

Fast path (CPU)
---------------
Bilinear sampling is a linear map, so the deformable "columns" matrix is a sparse matrix times
the image. The image is copied once to channels-last rows ``Xp`` of shape
``(N * G * (H + 4) * (W + 4), C / G)`` -- one row per pixel and offset group, with a 2 pixel
zero border -- and every sample ``(n, ho, wo, k, g)`` becomes one row of a sparse matrix ``B``
with exactly 4 non-zeros: its 4 neighbours, weight = bilinear weight x modulation. Samples
further outside are clamped into the zero border, so there are no validity masks anywhere:
the border makes out-of-image neighbours contribute 0 to the value *and* to every gradient.

* forward, per chunk of output positions (about 8 MB of columns, so it stays in cache):
  ``cols = B_chunk @ Xp`` -> ``(rows, kh * kw * C)``. That product is computed by
  ``F.embedding_bag(mode="sum", per_sample_weights=...)``: 4-element bags over the rows of
  ``Xp`` -- the gather, the 4-tap weighted sum and the mask in one pass over contiguous rows
  (PyTorch's fbgemm kernel; ~2.5x faster than MKL's sparse x dense here). Then one GEMM
  ``cols @ W`` whose ``(rows, Cout)`` result is copied (transposed, + bias) into the NCHW
  output.
* backward, per chunk: ``cols`` is recomputed (cheaper than keeping 9x the input),
  ``dW += cols^T @ dout``; ``dcols = dout @ W``; ``dXp += B_chunk^T @ dcols`` by sorting the
  chunk's column indices (the transpose as bags over ``dcols``, same gather kernel, touching
  only the rows of ``Xp`` the chunk reads); and the loss derivative at every non-zero of ``B``,
  ``d = <dcols_row, Xp_row'>``, is one sampled dense-dense product
  (``torch.sparse.sampled_addmm`` on B's CSR pattern). The offset and mask gradients follow
  from ``d`` and the bilinear weights: ``dmask = sum_q w_q d_q``,
  ``doffset_y = mask * sum_q (dw_q / dy) d_q`` (likewise x).

B is built chunk by chunk right before its first use and kept for the backward, together
with ``Xp``: about the input's size plus ~40 bytes per sample (N * Hout * Wout * kh * kw * G).
Building it per chunk keeps those index/weight ops small, below PyTorch's parallel grain size,
so only the gathers, GEMMs and copies start OpenMP parallel regions (about 3 per chunk). That
costs a few % on an idle machine but is ~1.7x faster when another multi-threaded process
shares the cores, where every parallel region can wait a scheduler tick.
Everything is vectorised; the only Python loop is over chunks. Double backward is not
supported (as with torchvision).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.autograd.function import once_differentiable
from torch.nn import init
from torch.nn.modules.utils import _pair

__all__ = ["deform_conv2d", "DeformConv2d"]

IntOrPair = Union[int, Tuple[int, int]]

# Target size (elements) of one chunk of the columns matrix; rows per chunk is at least
# _MIN_CHUNK_ROWS output positions. Tuned on a 2-core AMD EPYC (see benchmarks/RESULTS.md).
_CHUNK_ELEMS = 1 << 21
_MIN_CHUNK_ROWS = 128
_PAD = 2  # zero border of the channels-last image copy


def _csr(crow: Tensor, col: Tensor, val: Tensor, size: Tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val, size=size, check_invariants=False)


class _Piece:
    """The sparse sampling matrix B for one chunk of output positions (and what the backward
    needs of it): ``col``/``val`` hold the 4 neighbours (flat rows of ``Xp``) and weights of
    each sample, row order (position, k, g)."""

    __slots__ = ("col", "val", "ly", "lx", "m", "_csr")

    def csr(self, x_rows: int) -> Tensor:
        if self._csr is None:
            nnz = self.col.numel()
            crow = torch.arange(0, nnz + 1, 4, dtype=self.col.dtype, device=self.col.device)
            self._csr = _csr(crow, self.col, self.val, (nnz // 4, x_rows))
        return self._csr


class _Plan:
    """Shapes and chunking of one call; the per-chunk sampling matrices are built lazily.

    Building B chunk by chunk, right before it is used, keeps it in cache and keeps every
    index/weight op small (below PyTorch's parallel grain size): only the gathers and GEMMs
    start parallel regions, which matters when other processes compete for the cores."""

    def __init__(self, input: Tensor, offset: Tensor, weight: Tensor, mask: Optional[Tensor],
                 stride, padding, dilation):
        n, c, h, w = input.shape
        co, cw, kh, kw = weight.shape
        sh, sw = stride
        ph, pw = padding
        dh, dw = dilation
        k = kh * kw
        g = offset.shape[1] // (2 * k)
        ho = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
        wo = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
        self.n, self.c, self.h, self.w = n, c, h, w
        self.co, self.cw, self.kh, self.kw, self.k = co, cw, kh, kw, k
        self.g, self.cg = g, c // g
        self.wg = c // cw  # weight groups
        self.ho, self.wo = ho, wo
        self.per_img = per_img = ho * wo
        self.np = n * per_img  # output positions = GEMM rows
        self.rows_per_pos = k * g  # rows of B per output position
        self.hp, self.wp = h + 2 * _PAD, w + 2 * _PAD
        self.x_rows = n * g * self.hp * self.wp
        self.stride, self.padding, self.dilation = stride, padding, dilation
        big = max(4 * self.np * self.rows_per_pos, self.x_rows) >= 2**31 - 1
        self.index_dtype = torch.int64 if big else torch.int32
        self.dtype, self.device = offset.dtype, offset.device
        # (N, G, K, 2, P) / (N, G, K, P) views of the offsets and the mask
        self.offset = offset.reshape(n, g, k, 2, per_img)
        self.mask = None if mask is None else mask.reshape(n, g, k, per_img)
        dt, dev = self.dtype, self.device
        self.ky = (torch.arange(kh, dtype=dt, device=dev) * dh).repeat_interleave(kw).view(1, 1, k, 1)
        self.kx = (torch.arange(kw, dtype=dt, device=dev) * dw).repeat(kh).view(1, 1, k, 1)
        # chunks of output positions: whole images, or pieces of one image (GEMMs then write
        # straight into the NCHW output)
        target = max(_MIN_CHUNK_ROWS, _CHUNK_ELEMS // max(1, k * c))
        self.spans = []  # (n0, n1, j0, j1): images [n0, n1) or positions [j0, j1) of image n0
        if per_img >= target:
            pieces = -(-per_img // target)
            step = -(-per_img // pieces)
            for i in range(n):
                for j0 in range(0, per_img, step):
                    self.spans.append((i, i + 1, j0, min(per_img, j0 + step)))
            self.max_rows = step
        else:
            imgs = max(1, target // per_img) if per_img else 1
            for n0 in range(0, n, imgs):
                self.spans.append((n0, min(n, n0 + imgs), 0, per_img))
            self.max_rows = imgs * per_img
        self.pieces: list = [None] * len(self.spans)

    def chunks(self):
        """(i, s, e, n0, n1, j0, j1): chunk i = global output positions [s, e) and where they sit."""
        for i, (n0, n1, j0, j1) in enumerate(self.spans):
            yield i, n0 * self.per_img + j0, (n1 - 1) * self.per_img + j1, n0, n1, j0, j1

    def piece(self, i: int) -> _Piece:
        if self.pieces[i] is None:
            self.pieces[i] = self._build(*self.spans[i])
        return self.pieces[i]

    def _build(self, n0: int, n1: int, j0: int, j1: int) -> _Piece:
        dt, dev, idt = self.dtype, self.device, self.index_dtype
        sh, sw = self.stride
        ph, pw = self.padding
        h, w, g = self.h, self.w, self.g
        # offsets of these positions in row order (image, position, k, g, yx)
        off = self.offset[n0:n1, :, :, :, j0:j1].permute(0, 4, 2, 1, 3)
        j = torch.arange(j0, j1, device=dev)
        by = ((j // self.wo) * sh - ph).to(dt).view(1, -1, 1, 1)
        bx = ((j % self.wo) * sw - pw).to(dt).view(1, -1, 1, 1)
        # Anything at or beyond 2 pixels outside reads only the zero border (value and gradients
        # are exactly 0 there), so clamping to [-2, h] changes nothing but keeps indices local.
        y = (off[..., 0] + (by + self.ky)).clamp_(-2, h)
        x = (off[..., 1] + (bx + self.kx)).clamp_(-2, w)
        # floor = truncation, minus 1 below non-integer negatives (torch.floor goes through VML,
        # which starts a parallel region from 2048 elements on); then clamp again in integer
        # space: NaN offsets must not index out of bounds
        yi = y.to(idt)
        yi.sub_((yi > y).to(idt))
        xi = x.to(idt)
        xi.sub_((xi > x).to(idt))
        ly = y.sub_(yi)
        lx = x.sub_(xi)
        yi.clamp_(-2, h)
        xi.clamp_(-2, w)
        # flat row of the top-left neighbour; the block of image n, group g starts at (n * G + g) * Hp * Wp
        wp = self.wp
        first = (torch.arange(n0 * g, n1 * g, device=dev, dtype=idt) * self.hp + _PAD) * wp + _PAD
        base = yi.mul_(wp).add_(xi)
        base += first.view(n1 - n0, 1, 1, g)
        col = torch.empty(base.shape + (4,), dtype=idt, device=dev)
        col[..., 0] = base
        torch.add(base, 1, out=col[..., 1])
        torch.add(base, wp, out=col[..., 2])
        torch.add(base, wp + 1, out=col[..., 3])
        hy = 1.0 - ly
        hx = 1.0 - lx
        pc = _Piece()
        if self.mask is not None:
            m = self.mask[n0:n1, :, :, j0:j1].permute(0, 3, 2, 1).contiguous()  # (image, position, k, g)
            hy = hy.mul_(m)
            pc.m = m
            vy1 = ly * m
        else:
            pc.m = None
            vy1 = ly
        val = torch.empty(col.shape, dtype=dt, device=dev)
        torch.mul(hy, hx, out=val[..., 0])
        torch.mul(hy, lx, out=val[..., 1])
        torch.mul(vy1, hx, out=val[..., 2])
        torch.mul(vy1, lx, out=val[..., 3])
        pc.col, pc.val, pc.ly, pc.lx, pc._csr = col.view(-1), val.view(-1), ly, lx, None
        return pc

    def gather(self, xp: Tensor, i: int) -> Tensor:
        """cols = B_i @ xp: (rows * K * G, C / G), i.e. (rows, K * C) row-major."""
        pc = self.piece(i)
        # a sum-mode embedding bag with per-sample weights is exactly a CSR x dense product with
        # 4 non-zeros per row, and PyTorch's CPU kernel for it (fbgemm) is the fastest we have
        return F.embedding_bag(pc.col.view(-1, 4), xp, mode="sum", per_sample_weights=pc.val.view(-1, 4))

    def scatter_add(self, gxp: Tensor, i: int, grad_cols: Tensor) -> None:
        """gxp += B_i^T @ grad_cols, touching only the rows of gxp this chunk reads.

        The transpose of the chunk is built by sorting its column indices; each touched image
        row is then one "bag" over the rows of grad_cols, so the same gather kernel does it."""
        pc = self.piece(i)
        lo, hi = torch.aminmax(pc.col.view(-1, 4)[:, 0])  # top-left neighbours: 4x fewer
        lo, hi = int(lo), int(hi) + self.wp + 2
        key, order = torch.sort(pc.col)
        starts = torch.searchsorted(key, torch.arange(lo, hi, dtype=key.dtype, device=key.device))
        res = F.embedding_bag(order >> 2, grad_cols, starts, mode="sum",
                              per_sample_weights=pc.val.index_select(0, order))
        gxp[lo:hi] += res

    def sample_grads(self, i: int, grad_cols: Tensor, xp: Tensor, goff: Optional[Tensor],
                     gmask: Optional[Tensor]) -> None:
        """Offset and mask gradients of chunk i, written into (N, G, K, 2, P) / (N, G, K, P)."""
        pc = self.piece(i)
        # dL/dB at B's non-zeros, d = <grad_cols row, xp row>: a sampled dense-dense product
        d = torch.sparse.sampled_addmm(pc.csr(self.x_rows), grad_cols, xp.t(), beta=0.0).values()
        d0, d1, d2, d3 = d.view(pc.ly.shape + (4,)).unbind(-1)
        n0, n1, j0, j1 = self.spans[i]
        ly, lx = pc.ly, pc.lx
        hy, hx = 1.0 - ly, 1.0 - lx
        if goff is not None:
            gy = hx * (d2 - d0) + lx * (d3 - d1)
            gx = hy * (d1 - d0) + ly * (d3 - d2)
            if pc.m is not None:
                gy *= pc.m
                gx *= pc.m
            dst = goff[n0:n1, :, :, :, j0:j1]  # (image, g, k, yx, position)
            dst[:, :, :, 0].copy_(gy.permute(0, 3, 2, 1))
            dst[:, :, :, 1].copy_(gx.permute(0, 3, 2, 1))
        if gmask is not None:
            gm = hy * (hx * d0 + lx * d1) + ly * (hx * d2 + lx * d3)
            gmask[n0:n1, :, :, j0:j1].copy_(gm.permute(0, 3, 2, 1))


def _image_rows(input: Tensor, p: _Plan) -> Tensor:
    """(N, C, H, W) -> channels-last rows (N * G * Hp * Wp, C / G) with a zero border."""
    xp = input.new_empty(p.n, p.g, p.hp, p.wp, p.cg)
    xp[:, :, :_PAD].zero_()
    xp[:, :, _PAD + p.h:].zero_()
    xp[:, :, _PAD:_PAD + p.h, :_PAD].zero_()
    xp[:, :, _PAD:_PAD + p.h, _PAD + p.w:].zero_()
    xp[:, :, _PAD:_PAD + p.h, _PAD:_PAD + p.w, :] = input.reshape(p.n, p.g, p.cg, p.h, p.w).permute(0, 1, 3, 4, 2)
    return xp.view(p.x_rows, p.cg)


def _weight_matrix(weight: Tensor, p: _Plan) -> Tensor:
    """(Co, Cw, kh, kw) -> (K * C, Co) for wg == 1, else (wg, K * Cw, Co / wg); rows ordered (k, c)."""
    if p.wg == 1:
        return weight.permute(2, 3, 1, 0).reshape(p.k * p.c, p.co)
    wg, cow = p.wg, p.co // p.wg
    return weight.reshape(wg, cow, p.cw, p.kh, p.kw).permute(0, 3, 4, 2, 1).reshape(wg, p.k * p.cw, cow)


def _weight_from_matrix(gw: Tensor, p: _Plan) -> Tensor:
    if p.wg == 1:
        return gw.view(p.kh, p.kw, p.c, p.co).permute(3, 2, 0, 1).contiguous()
    wg, cow = p.wg, p.co // p.wg
    return gw.view(wg, p.kh, p.kw, p.cw, cow).permute(0, 4, 3, 1, 2).reshape(p.co, p.cw, p.kh, p.kw)


def _group_cols(cols: Tensor, p: _Plan) -> Tensor:
    """(rows, K * C) -> (wg, rows, K * Cw) (copy)."""
    rows = cols.shape[0]
    return cols.view(rows, p.k, p.wg, p.cw).permute(2, 0, 1, 3).reshape(p.wg, rows, p.k * p.cw)


class _DeformConv2dCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, offset, weight, bias, mask, stride, padding, dilation):
        p = _Plan(input, offset, weight, mask, stride, padding, dilation)
        xp = _image_rows(input, p)
        wm = _weight_matrix(weight, p)
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
                res = torch.bmm(_group_cols(cols, p), wm)  # (wg, rows, Co / wg)
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
        p: _Plan = ctx.plan
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
                        gw.baddbmm_(_group_cols(cols, p).transpose(1, 2), gop)
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
            gi = gxp.view(p.n, p.g, p.hp, p.wp, p.cg)[:, :, _PAD:_PAD + p.h, _PAD:_PAD + p.w, :]
            grad_input = gi.permute(0, 1, 4, 2, 3).reshape(p.n, p.c, p.h, p.w)
        if need_w:
            grad_weight = _weight_from_matrix(gw, p)
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
    anything else torchvision's kernel.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if input.device.type != "cpu":
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
