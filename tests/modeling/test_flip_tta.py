"""Flip test-time augmentation: mirrored outputs swap left and right through the schema."""
from collections import OrderedDict

import pytest
import torch

import poseseg
from poseseg.keypoint_schema import coco_person_schema
from poseseg.modeling.flip_tta import mirror_boxes, unflip_keypoints

WIDTH = 320


def _model(test_flip: bool):
    torch.manual_seed(0)
    model = poseseg.build_model(poseseg.load_config("tiny", [f"model.test_flip={test_flip}"])).eval()
    model.keypoint_schema = coco_person_schema().to_dict()
    return model


def _heads(model, image: torch.Tensor, boxes: torch.Tensor) -> dict:
    """The mask and keypoint heads on given boxes of one (3, H, W) image of a padded-exact size."""
    pixels = model.transform.normalize(image)[None]
    features = OrderedDict((k, v.contiguous()) for k, v in model.fpn(model.backbone(pixels)).items())
    mirrored = None
    if model.test_flip:
        mirrored = OrderedDict((k, v.contiguous()) for k, v in model.fpn(model.backbone(pixels.flip(-1))).items())
    detections = [{"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}]
    with torch.no_grad():
        return model.heads_on_boxes(features, detections, [tuple(image.shape[-2:])], mirrored, image.shape[-1])[0]


def _symmetric_image() -> torch.Tensor:
    torch.manual_seed(1)
    half = torch.rand(3, 256, WIDTH // 2)
    return torch.cat([half, half.flip(-1)], dim=-1)  # (3, 256, 320), mirror-symmetric


def test_flip_tta_on_a_symmetric_input_gives_mirrored_left_right_keypoints():
    schema = coco_person_schema()
    box = torch.tensor([[100.0, 40.0, 220.0, 230.0]])  # centred: its own mirror image
    out = _heads(_model(True), _symmetric_image(), box)
    kps = out["keypoints"][0]  # (17, 3)
    for left, right in (("left_wrist", "right_wrist"), ("left_ankle", "right_ankle"), ("left_eye", "right_eye"),
                        ("left_shoulder", "right_shoulder")):
        li, ri = schema.names.index(left), schema.names.index(right)
        assert kps[li, 0].item() == pytest.approx(WIDTH - kps[ri, 0].item(), abs=1e-3), (left, kps[li], kps[ri])
        assert kps[li, 1].item() == pytest.approx(kps[ri, 1].item(), abs=1e-3)
    assert out["keypoint_scores"][0, schema.names.index("left_wrist")] == pytest.approx(
        out["keypoint_scores"][0, schema.names.index("right_wrist")].item(), rel=1e-5)
    masks = out["mask_probs"][0, 0]  # (M, M) in the box's frame: symmetric too
    assert torch.allclose(masks, masks.flip(-1), atol=1e-6)


def test_without_flip_a_random_model_is_not_symmetric():
    """The property above comes from the augmentation, not from the input alone."""
    schema = coco_person_schema()
    box = torch.tensor([[100.0, 40.0, 220.0, 230.0]])
    out = _heads(_model(False), _symmetric_image(), box)
    kps = out["keypoints"][0]
    li, ri = schema.names.index("left_wrist"), schema.names.index("right_wrist")
    gaps = [abs(kps[schema.names.index(f"left_{j}"), 0].item() - (WIDTH - kps[schema.names.index(f"right_{j}"), 0].item()))
            for j in ("wrist", "ankle", "eye", "shoulder", "knee", "elbow")]
    assert max(gaps) > 1.0 or not torch.equal(out["keypoint_scores"][0, li], out["keypoint_scores"][0, ri])


def test_unflip_swaps_channels_and_negates_x_offsets():
    perm = coco_person_schema().flip_permutation()
    heatmaps = torch.randn(2, 17, 8, 8)
    offsets = torch.randn(2, 34, 8, 8)
    h, o = unflip_keypoints(heatmaps, offsets, perm)
    k, p = 9, perm[9]  # left_wrist <- right_wrist
    assert torch.equal(h[:, k], heatmaps[:, p].flip(-1))
    assert torch.equal(o[:, 2 * k], -offsets[:, 2 * p].flip(-1))
    assert torch.equal(o[:, 2 * k + 1], offsets[:, 2 * p + 1].flip(-1))
    assert torch.equal(mirror_boxes(torch.tensor([[10.0, 1.0, 30.0, 5.0]]), 100), torch.tensor([[70.0, 1.0, 90.0, 5.0]]))


def test_flip_tta_runs_through_the_whole_model_and_needs_a_schema():
    model = _model(True)
    image = torch.rand(3, 200, 260)
    with torch.no_grad():
        out = model([image])[0]
    assert out["keypoints"].shape[1:] == (17, 3) and out["masks"].shape[-2:] == (200, 260)
    model.keypoint_schema = None
    model.box_head.score_thresh = 0.0  # random weights: make sure some box reaches the heads
    with pytest.raises(ValueError, match="schema"):
        with torch.no_grad():
            model([image])


def test_flip_for_keypoints_only_leaves_masks_as_the_plain_pass():
    box = torch.tensor([[60.0, 30.0, 200.0, 240.0]])
    image = torch.rand(3, 256, WIDTH)
    plain = _heads(_model(False), image, box)
    model = _model(True)
    model.test_flip_masks = False
    flipped = _heads(model, image, box)
    assert torch.equal(flipped["mask_probs"], plain["mask_probs"])
    assert not torch.equal(flipped["keypoints"], plain["keypoints"])
