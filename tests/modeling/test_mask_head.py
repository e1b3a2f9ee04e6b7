"""The mask head's loss: plain BCE by default, and the boundary term weights the edge cells up."""
import pytest
import torch
import torch.nn.functional as F

from poseseg.config import load_config
from poseseg.config_validation import ConfigError
from poseseg.modeling.mask_head import MaskHead, edge_band


def _square(size: int = 8, lo: int = 2, hi: int = 6) -> torch.Tensor:
    m = torch.zeros(1, size, size)
    m[0, lo:hi, lo:hi] = 1
    return m


def test_edge_band_is_the_ring_around_the_edge():
    band = edge_band(_square())[0]
    expected = torch.zeros(8, 8)
    expected[1:7, 1:7] = 1  # one cell outside the square ...
    expected[3:5, 3:5] = 0  # ... and one inside its edge; the centre is not on an edge
    assert torch.equal(band, expected)
    assert edge_band(torch.ones(1, 5, 5)).sum() == 0  # all inside (the picture's border is no edge)
    assert edge_band(torch.zeros(1, 5, 5)).sum() == 0


def _loss(head: MaskHead, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    box = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    return head.loss(logits, [box], [torch.tensor([1])], [torch.tensor([0])], [target])["loss_mask"]


def test_boundary_weight_zero_is_plain_bce_and_positive_weights_the_edges():
    torch.manual_seed(0)
    target = _square()
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    plain = MaskHead(in_channels=4, num_convs=1, conv_dim=4, num_classes=2)
    expected = F.binary_cross_entropy_with_logits(logits[0, 1], target[0])
    assert torch.allclose(_loss(plain, logits, target), expected)

    weighted = MaskHead(in_channels=4, num_convs=1, conv_dim=4, num_classes=2, boundary_weight=3.0)
    band = edge_band(target)[0]
    w = 1 + 3.0 * band
    naive = sum(w[i, j] * F.binary_cross_entropy_with_logits(logits[0, 1, i, j], target[0, i, j])
                for i in range(8) for j in range(8)) / w.sum()  # a loop over the cells, the reference
    got = _loss(weighted, logits, target)
    assert torch.allclose(got, naive, atol=1e-6)
    (grad,) = torch.autograd.grad(got, logits)
    (plain_grad,) = torch.autograd.grad(_loss(plain, logits, target), logits)
    ratio = grad[0, 1].abs() / plain_grad[0, 1].abs()  # edge cells' gradients 4x the others'
    assert torch.allclose(ratio[band > 0] / ratio[band == 0].mean(), torch.full_like(ratio[band > 0], 4.0), atol=1e-4)


def test_negative_boundary_weight_is_refused():
    with pytest.raises(ConfigError, match="model.mask.boundary_weight"):
        load_config("tiny", ["model.mask.boundary_weight=-1"])
