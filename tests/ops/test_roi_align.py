"""The threaded RoIAlign is torchvision's RoIAlign, bit for bit, whatever the thread count."""
import pytest
import torch
from torchvision.ops import roi_align

from poseseg.ops.roi_align import threaded_roi_align


def _boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 300
    wh = torch.rand(n, 2, generator=generator) * 120 + 0.5
    batch = torch.randint(0, 2, (n, 1), generator=generator).float()
    return torch.cat([batch, xy, xy + wh], 1)  # (R, 5)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("count", [0, 5, 257])
def test_threaded_equals_torchvision(aligned, count):
    g = torch.Generator().manual_seed(count)
    feature = torch.randn(2, 16, 50, 70, generator=g)
    rois = _boxes(count, g)
    expected = roi_align(feature, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=aligned)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                got = threaded_roi_align(feature, rois, (7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=aligned)
            assert got.shape == (count, 16, 7, 7)
            assert torch.equal(got, expected)
    finally:
        torch.set_num_threads(before)


def test_channels_last_and_grad_paths():
    g = torch.Generator().manual_seed(1)
    feature = torch.randn(1, 8, 40, 40, generator=g)
    rois = _boxes(300, g)
    rois[:, 0] = 0
    expected = roi_align(feature, rois, (14, 14), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    with torch.no_grad():  # no_grad (not inference mode), channels-last input
        got = threaded_roi_align(feature.contiguous(memory_format=torch.channels_last), rois, (14, 14),
                                 spatial_scale=0.5, sampling_ratio=2, aligned=True)
    assert torch.equal(got, expected)
    leaf = feature.clone().requires_grad_()  # with autograd on: the single call, gradients flow
    out = threaded_roi_align(leaf, rois, (14, 14), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    out.sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
