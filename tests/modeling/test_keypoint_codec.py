"""Keypoint codec: encode ground truth into targets and decode it back."""
import pytest
import torch

from poseseg.modeling.keypoint_codec import KeypointCodec, sample_bilinear


def random_rois_and_keypoints(n=64, k=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 300
    wh = 20 + torch.rand(n, 2, generator=g) * 200
    rois = torch.cat([xy, xy + wh], dim=1)
    frac = torch.rand(n, k, 2, generator=g)
    kps = torch.cat([rois[:, None, :2] + frac * wh[:, None], torch.full((n, k, 1), 2.0)], dim=-1)
    return rois, kps


def round_trip_error_in_cells(codec, rois, kps):
    t = codec.encode(kps, rois)
    heatmaps = t.heatmaps if codec.loss in ("mse", "ce_soft") else torch.nn.functional.one_hot(
        t.indices, codec.heatmap_size**2).float().view(*t.indices.shape, codec.heatmap_size, codec.heatmap_size)
    offsets = None if t.offsets is None else t.offsets.flatten(1, 2)  # (R, 2K, H, H)
    decoded = codec.decode(heatmaps, offsets, rois)
    cell = (rois[:, 2:] - rois[:, :2]) / codec.heatmap_size  # (R, 2) pixels per cell
    err = (decoded.keypoints[..., :2] - kps[..., :2]) / cell[:, None]
    return err.norm(dim=-1).mean().item()


def test_round_trip_with_offsets_is_sub_cell_exact():
    rois, kps = random_rois_and_keypoints()
    assert round_trip_error_in_cells(KeypointCodec(loss="mse", use_offsets=True), rois, kps) < 0.05


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_round_trip_without_offsets_suffers_argmax_quantization(loss):
    rois, kps = random_rois_and_keypoints()
    assert round_trip_error_in_cells(KeypointCodec(loss=loss, use_offsets=False), rois, kps) >= 0.2


def test_targets_for_unlabelled_and_outside_keypoints_are_empty():
    codec = KeypointCodec()
    rois = torch.tensor([[0.0, 0.0, 56.0, 56.0]])
    kps = torch.tensor([[[10.5, 10.5, 2.0], [20.0, 20.0, 0.0], [80.0, 10.0, 2.0], [30.0, 5.0, 1.0]]])
    t = codec.encode(kps, rois)
    assert t.valid.tolist() == [[True, False, False, True]]
    assert t.heatmaps[0, 1].sum() == 0 and t.heatmaps[0, 2].sum() == 0
    assert t.heatmaps[0, 0].max() == pytest.approx(1.0, abs=1e-6)
    assert t.heatmaps[0, 0, 10, 10] == pytest.approx(1.0)  # the cell whose centre is the keypoint
    assert t.offset_weights[0, 1].sum() == 0 and t.offset_weights[0, 0].sum() > 0
    # the cell containing the point is its ce class
    assert t.indices[0, 0].item() == 10 * 56 + 10


def test_decode_maps_peak_to_image_pixels():
    codec = KeypointCodec(use_offsets=False)
    heatmaps = torch.full((1, 1, 56, 56), -10.0)
    heatmaps[0, 0, 7, 21] = 5.0  # row 7, column 21
    rois = torch.tensor([[100.0, 200.0, 212.0, 312.0]])  # 2 px per cell
    out = codec.decode(heatmaps, None, rois)
    assert out.keypoints[0, 0].tolist() == pytest.approx([100 + 21.5 * 2, 200 + 7.5 * 2, 1.0])
    assert out.scores[0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


def test_sample_bilinear_matches_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 3, 2, 6, 7, generator=g)
    points = torch.rand(2, 3, 2, generator=g) * torch.tensor([6.0, 5.0])
    got = sample_bilinear(maps, points)
    want = torch.zeros(2, 3, 2)
    for r in range(2):
        for k in range(3):
            px, py = points[r, k].tolist()
            for qy in range(6):
                for qx in range(7):
                    w = max(0, 1 - abs(qx - px)) * max(0, 1 - abs(qy - py))
                    want[r, k] += w * maps[r, k, :, qy, qx]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_soft_ce_loss_is_lowest_at_its_gaussian_target_and_round_trips():
    """ce_soft: the spatial-softmax cross-entropy against the normalised Gaussian is minimal (its
    entropy) when the logits are the Gaussian's log, and the Gaussian's peak decodes exactly."""
    from poseseg.modeling.keypoint_head import KeypointHead

    rois, kps = random_rois_and_keypoints(n=8)
    head = KeypointHead(in_channels=8, num_keypoints=17, num_convs=1, conv_dim=8, loss="ce_soft")
    target = head.codec.encode(kps, rois).heatmaps  # (R, K, H, H) Gaussians
    ideal = target.clamp(min=1e-30).log()
    matched = [torch.arange(8)]
    at_target = head.loss(ideal, None, None, [rois], matched, [kps])["loss_keypoint"]
    shifted = head.loss(ideal.roll(3, dims=-1), None, None, [rois], matched, [kps])["loss_keypoint"]
    flat = target.flatten(2) / target.flatten(2).sum(-1, keepdim=True)
    entropy = -(flat * flat.clamp(min=1e-30).log()).sum(-1).mean()
    assert at_target.item() == pytest.approx(entropy.item(), rel=1e-4) and shifted > at_target + 1.0
    assert round_trip_error_in_cells(KeypointCodec(loss="ce_soft", use_offsets=True), rois, kps) < 0.05


def test_group_norm_heads_have_a_norm_per_conv():
    from poseseg.modeling.conv_tower import ConvTower

    tower = ConvTower(in_channels=16, dim=64, num_convs=3, norm="gn")
    assert len(tower.norms) == 3 and tower.norms[0].num_groups == 32
    out = tower(torch.randn(2, 16, 7, 7))
    assert out.shape == (2, 64, 7, 7) and (out >= 0).all()
    with pytest.raises(ValueError, match="gn"):
        ConvTower(in_channels=16, dim=64, num_convs=1, norm="bn")


def test_upsample_decoding_equals_torchvision_heatmaps_to_keypoints():
    """decode=upsample is Mask R-CNN's decoding: torchvision's heatmaps_to_keypoints, to the pixel."""
    from torchvision.models.detection.roi_heads import heatmaps_to_keypoints

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 17, 56, 56, generator=g)
    rois = torch.tensor([[10.0, 20.0, 110.5, 260.0], [0.0, 0.0, 0.6, 0.8], [5.0, 7.0, 45.2, 30.9], [3, 3, 300, 90]])
    codec = KeypointCodec(heatmap_size=56, loss="ce", use_offsets=True, decode_mode="upsample")
    zero_offsets = torch.zeros(4, 34, 56, 56)
    got = codec.decode(logits, zero_offsets, rois)
    want, _ = heatmaps_to_keypoints(logits, rois)
    torch.testing.assert_close(got.keypoints[..., :2], want[..., :2], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.peaks, want[..., :2], atol=1e-4, rtol=0)
    # offsets move the upsampled peak by offset x cell size
    shifted = codec.decode(logits, torch.full((4, 34, 56, 56), 0.5), rois)
    cell = (rois[:, 2:] - rois[:, :2]) / 56
    torch.testing.assert_close(shifted.keypoints[..., :2], want[..., :2] + 0.5 * cell[:, None], atol=1e-4, rtol=0)
