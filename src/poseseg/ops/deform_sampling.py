"""The sampling plan of the CPU deformable convolution (:mod:`poseseg.ops.deform_conv`).

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
Everything is vectorised; the only Python loop is over chunks.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F


# Target size (elements) of one chunk of the columns matrix; rows per chunk is at least
# _MIN_CHUNK_ROWS output positions. Tuned on a 2-core AMD EPYC (see benchmarks/RESULTS.md).
_CHUNK_ELEMS = 1 << 21
_MIN_CHUNK_ROWS = 128
PAD = 2  # zero border of the channels-last image copy


def _csr(crow: Tensor, col: Tensor, val: Tensor, size: Tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val, size=size, check_invariants=False)


class SamplingPiece:
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


class SamplingPlan:
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
        self.hp, self.wp = h + 2 * PAD, w + 2 * PAD
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

    def piece(self, i: int) -> SamplingPiece:
        if self.pieces[i] is None:
            self.pieces[i] = self._build(*self.spans[i])
        return self.pieces[i]

    def _build(self, n0: int, n1: int, j0: int, j1: int) -> SamplingPiece:
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
        first = (torch.arange(n0 * g, n1 * g, device=dev, dtype=idt) * self.hp + PAD) * wp + PAD
        base = yi.mul_(wp).add_(xi)
        base += first.view(n1 - n0, 1, 1, g)
        col = torch.empty(base.shape + (4,), dtype=idt, device=dev)
        col[..., 0] = base
        torch.add(base, 1, out=col[..., 1])
        torch.add(base, wp, out=col[..., 2])
        torch.add(base, wp + 1, out=col[..., 3])
        hy = 1.0 - ly
        hx = 1.0 - lx
        pc = SamplingPiece()
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


def image_rows(input: Tensor, p: SamplingPlan) -> Tensor:
    """(N, C, H, W) -> channels-last rows (N * G * Hp * Wp, C / G) with a zero border."""
    xp = input.new_empty(p.n, p.g, p.hp, p.wp, p.cg)
    xp[:, :, :PAD].zero_()
    xp[:, :, PAD + p.h:].zero_()
    xp[:, :, PAD:PAD + p.h, :PAD].zero_()
    xp[:, :, PAD:PAD + p.h, PAD + p.w:].zero_()
    xp[:, :, PAD:PAD + p.h, PAD:PAD + p.w, :] = input.reshape(p.n, p.g, p.cg, p.h, p.w).permute(0, 1, 3, 4, 2)
    return xp.view(p.x_rows, p.cg)


def weight_matrix(weight: Tensor, p: SamplingPlan) -> Tensor:
    """(Co, Cw, kh, kw) -> (K * C, Co) for wg == 1, else (wg, K * Cw, Co / wg); rows ordered (k, c)."""
    if p.wg == 1:
        return weight.permute(2, 3, 1, 0).reshape(p.k * p.c, p.co)
    wg, cow = p.wg, p.co // p.wg
    return weight.reshape(wg, cow, p.cw, p.kh, p.kw).permute(0, 3, 4, 2, 1).reshape(wg, p.k * p.cw, cow)


def weight_from_matrix(gw: Tensor, p: SamplingPlan) -> Tensor:
    if p.wg == 1:
        return gw.view(p.kh, p.kw, p.c, p.co).permute(3, 2, 0, 1).contiguous()
    wg, cow = p.wg, p.co // p.wg
    return gw.view(wg, p.kh, p.kw, p.cw, cow).permute(0, 4, 3, 1, 2).reshape(p.co, p.cw, p.kh, p.kw)


def group_cols(cols: Tensor, p: SamplingPlan) -> Tensor:
    """(rows, K * C) -> (wg, rows, K * Cw) (copy)."""
    rows = cols.shape[0]
    return cols.view(rows, p.k, p.wg, p.cw).permute(2, 0, 1, 3).reshape(p.wg, rows, p.k * p.cw)
