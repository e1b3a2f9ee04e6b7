"""poseseg.ops.deform_conv2d / DeformConv2d against torchvision's kernel and nn.Conv2d."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from poseseg.ops import DeformConv2d, deform_conv2d
from poseseg.ops import deform_sampling as dc_mod

# (N, C, H, W, Cout, kh, kw, stride, padding, dilation, offset groups, weight groups, mask, bias, offset scale)
CASES = {
    "v2_basic": (2, 6, 9, 11, 4, 3, 3, 1, 1, 1, 1, 1, True, True, 3.0),
    "v1_basic": (2, 6, 9, 11, 4, 3, 3, 1, 1, 1, 1, 1, False, True, 3.0),
    "v1_s2_d2_p0_og2": (2, 6, 12, 13, 4, 3, 3, 2, 0, 2, 2, 1, False, True, 4.0),
    "v2_s2_p1_og4_wg4": (3, 8, 12, 9, 8, 3, 3, 2, 1, 1, 4, 4, True, True, 3.0),
    "v2_wg2_og2_nonsquare_kernel": (1, 8, 7, 10, 6, 3, 2, 1, 1, 1, 2, 2, True, False, 2.0),
    "v2_og3_wg2_mixed": (2, 12, 8, 6, 4, 3, 3, 1, (1, 0), (2, 1), 3, 2, True, True, 5.0),
    "v2_stride_2_1_huge_offsets": (2, 4, 10, 7, 5, 3, 3, (2, 1), 1, 1, 1, 1, True, True, 20.0),
    "v1_1x1": (2, 4, 5, 6, 3, 1, 1, 1, 0, 1, 1, 1, False, True, 1.5),
}


def make(case, dtype=torch.float64, seed=0):
    n, c, h, w, co, kh, kw, s, p, d, g, wg, use_mask, use_bias, scale = case
    gen = torch.Generator().manual_seed(seed)
    s2, p2, d2 = (s, s) if isinstance(s, int) else s, (p, p) if isinstance(p, int) else p, (d, d) if isinstance(d, int) else d
    ho = (h + 2 * p2[0] - (d2[0] * (kh - 1) + 1)) // s2[0] + 1
    wo = (w + 2 * p2[1] - (d2[1] * (kw - 1) + 1)) // s2[1] + 1
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(co, c // wg, kh, kw, generator=gen, dtype=dtype)
    offset = torch.randn(n, 2 * g * kh * kw, ho, wo, generator=gen, dtype=dtype) * scale
    mask = torch.rand(n, g * kh * kw, ho, wo, generator=gen, dtype=dtype) * 2 if use_mask else None
    bias = torch.randn(co, generator=gen, dtype=dtype) if use_bias else None
    return dict(input=x, offset=offset, weight=weight, bias=bias, mask=mask, stride=s, padding=p, dilation=d)


def run(fn, args, grad_seed=1):
    tensors = {k: v.detach().clone().requires_grad_() for k, v in args.items() if isinstance(v, torch.Tensor)}
    kw = {k: v for k, v in args.items() if not isinstance(v, torch.Tensor)}
    out = fn(**tensors, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    names = list(tensors)
    grads = torch.autograd.grad(out, [tensors[k] for k in names], g)
    return out, dict(zip(names, grads))


def assert_close_rel(a, b, rtol, name):
    scale = b.abs().max().clamp_min(1e-12)
    err = (a - b).abs().max() / scale
    assert err <= rtol, f"{name}: max relative error {err:.3g} > {rtol}"


def compare_with_torchvision(args, rtol):
    out, grads = run(deform_conv2d, args)
    ref_out, ref_grads = run(torchvision.ops.deform_conv2d, args)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    assert_close_rel(out, ref_out, rtol, "output")
    assert set(grads) == set(ref_grads)
    for k in grads:
        assert grads[k].shape == ref_grads[k].shape
        assert_close_rel(grads[k], ref_grads[k], rtol, f"grad {k}")
    return out, grads


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torchvision_float64(name):
    args = make(CASES[name])
    out, grads = compare_with_torchvision(args, rtol=1e-4)
    # the offsets were large enough that some samples fall outside the image
    assert grads["offset"].abs().sum() > 0


@pytest.mark.parametrize("name", ["v2_basic", "v1_s2_d2_p0_og2", "v2_s2_p1_og4_wg4"])
def test_matches_torchvision_float32(name):
    args = make(CASES[name], dtype=torch.float32)
    compare_with_torchvision(args, rtol=1e-4)


def test_samples_outside_the_image_are_zero():
    args = make(CASES["v2_basic"])
    args["offset"] = torch.full_like(args["offset"], 50.0)  # every sample far outside
    out, grads = compare_with_torchvision(args, rtol=1e-4)
    torch.testing.assert_close(out, args["bias"].view(1, -1, 1, 1).expand_as(out))
    assert grads["offset"].abs().max() == 0 and grads["mask"].abs().max() == 0 and grads["input"].abs().max() == 0


@pytest.mark.parametrize("fill", [0.0, 1.0, -1.0])
def test_integer_sample_positions_match_torchvision(fill):
    """At integer coordinates the position gradient is one-sided; ours follows torchvision's."""
    args = make(CASES["v2_basic"])
    args["offset"] = torch.full_like(args["offset"], fill)
    compare_with_torchvision(args, rtol=1e-4)
    args = make(CASES["v1_s2_d2_p0_og2"])
    args["offset"] = torch.randint(-3, 4, args["offset"].shape, generator=torch.Generator().manual_seed(3)).double()
    compare_with_torchvision(args, rtol=1e-4)


@pytest.mark.parametrize("rows", [7, 60, 250])
def test_many_chunks(monkeypatch, rows):
    """Pieces of images (7 rows), and several whole images per chunk (60, 250 rows)."""
    monkeypatch.setattr(dc_mod, "_CHUNK_ELEMS", 1)
    monkeypatch.setattr(dc_mod, "_MIN_CHUNK_ROWS", rows)
    for name in ("v2_basic", "v2_s2_p1_og4_wg4"):
        compare_with_torchvision(make(CASES[name]), rtol=1e-4)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradcheck(modulated):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    # keep samples away from integer coordinates (the bilinear kink) for finite differences;
    # offsets up to 2.8 px push some samples partly or fully outside the 3x4 image
    shape = (1, 8, 2, 3)
    off = torch.randint(-2, 3, shape, generator=gen) + 0.2 + 0.6 * torch.rand(shape, generator=gen)
    off = off.double().requires_grad_()
    inputs = [x, off, w, b]
    if modulated:
        m = torch.rand(1, 4, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        inputs.append(m)

    def f(x, off, w, b, m=None):
        return deform_conv2d(x, off, w, b, mask=m)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_other_dtypes_and_empty_batch():
    args = make(CASES["v2_basic"], dtype=torch.float32)
    ref = deform_conv2d(**args)
    half = {k: (v.bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    out = deform_conv2d(**half)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
    empty = {k: (v[:0] if isinstance(v, torch.Tensor) and k in ("input", "offset", "mask") else v)
             for k, v in args.items()}
    empty = {k: (v.requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in empty.items()}
    out = deform_conv2d(**empty)
    assert out.shape == (0,) + ref.shape[1:]
    out.sum().backward()
    assert empty["weight"].grad is not None and empty["weight"].grad.abs().sum() == 0


def test_bad_offset_channels():
    args = make(CASES["v1_basic"])
    args["offset"] = args["offset"][:, :5]
    with pytest.raises(RuntimeError, match="offset"):
        deform_conv2d(**args)


def test_nan_offsets_do_not_crash():
    args = make(CASES["v2_basic"])
    args["offset"][0, 0, 0, 0] = float("nan")
    args["offset"][1, 3, 2, 1] = float("inf")
    out = deform_conv2d(**args)
    assert out.shape[0] == 2


@pytest.mark.parametrize("modulated,bias,stride", [(False, True, 1), (True, True, 1), (True, False, 2)])
def test_module_equals_conv2d_at_init_and_loads_its_state_dict(modulated, bias, stride):
    conv = nn.Conv2d(8, 6, 3, stride=stride, padding=1, bias=bias)
    dcn = DeformConv2d(8, 6, 3, stride=stride, padding=1, bias=bias, modulated=modulated)
    assert {k: v.shape for k, v in conv.state_dict().items()} == {
        k: v.shape for k, v in dcn.state_dict().items() if not k.startswith("offset_conv.")}
    result = dcn.load_state_dict(conv.state_dict())  # strict: missing offset_conv.* is fine
    assert not result.missing_keys and not result.unexpected_keys
    assert dcn.offset_conv.weight.abs().sum() == 0 and dcn.offset_conv.bias.abs().sum() == 0
    x = torch.randn(3, 8, 11, 9)
    torch.testing.assert_close(dcn(x), conv(x), rtol=1e-5, atol=1e-5)
    # nested, and a full DeformConv2d state dict round-trips
    outer = nn.Sequential(DeformConv2d(8, 6, 3, stride=stride, padding=1, bias=bias, modulated=modulated))
    outer.load_state_dict(nn.Sequential(conv).state_dict())
    torch.testing.assert_close(outer(x), conv(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        dcn.offset_conv.weight.normal_()
    other = DeformConv2d(8, 6, 3, stride=stride, padding=1, bias=bias, modulated=modulated)
    other.load_state_dict(dcn.state_dict())
    torch.testing.assert_close(other(x), dcn(x))


@pytest.mark.parametrize("modulated", [False, True])
def test_offsets_get_gradient_at_init(modulated):
    dcn = DeformConv2d(4, 5, 3, padding=1, modulated=modulated, offset_groups=2)
    x = torch.randn(2, 4, 9, 7)
    out, offset, mask = dcn(x, return_offsets=True)
    assert offset.shape == (2, 2 * 2 * 9, 9, 7) and offset.abs().max() == 0
    if modulated:
        assert mask.shape == (2, 2 * 9, 9, 7)
        torch.testing.assert_close(mask, torch.ones_like(mask))
    else:
        assert mask is None
    (out ** 2).sum().backward()
    g = dcn.offset_conv.weight.grad
    n_off = 2 * 2 * 9
    assert g is not None and g[:n_off].abs().sum() > 0
    if modulated:
        assert g[n_off:].abs().sum() > 0
    assert dcn.weight.grad.abs().sum() > 0 and dcn.bias.grad.abs().sum() > 0


def test_memory_layouts():
    args = make(CASES["v2_s2_p1_og4_wg4"])
    ref = deform_conv2d(**args)
    odd = dict(args)
    odd["input"] = args["input"].contiguous(memory_format=torch.channels_last)
    odd["offset"] = torch.cat([args["offset"], args["offset"]], dim=1)[:, : args["offset"].shape[1]]
    odd["mask"] = args["mask"].transpose(2, 3).contiguous().transpose(2, 3)
    odd["weight"] = args["weight"].contiguous(memory_format=torch.channels_last)
    assert not odd["offset"].is_contiguous() and not odd["mask"].is_contiguous()
    torch.testing.assert_close(deform_conv2d(**odd), ref, rtol=1e-12, atol=1e-12)
