"""The keypoint visibility head: trained against the data's flags, decoded as 0 / 1 / 2, written as v."""
import numpy as np
import torch

import poseseg
from poseseg.modeling.keypoint_head import KeypointHead
from poseseg.modeling.postprocess import coco_records, postprocess
from poseseg.visualize import draw


def test_the_classifier_learns_the_flags_it_is_given():
    torch.manual_seed(0)
    head = KeypointHead(in_channels=8, num_keypoints=5, num_convs=1, conv_dim=16, heatmap_size=8, loss="ce",
                        visibility=True)
    pooled = torch.randn(6, 8, 4, 4)  # (R, C, S, S)
    rois = torch.tensor([[0.0, 0.0, 40.0, 40.0]]).repeat(6, 1)
    flags = torch.randint(0, 3, (6, 5))  # (R, K)
    kps = torch.cat([torch.rand(6, 5, 2) * 40, flags[..., None].float()], dim=-1)  # (R, K, 3)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(300):
        heatmaps, offsets, visibility = head(pooled)
        loss = head.loss(heatmaps, offsets, visibility, [rois], [torch.arange(6)], [kps])["loss_keypoint_visibility"]
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 3
    with torch.no_grad():
        decoded = head.inference(*head(pooled), [rois[:4], rois[4:]])
    assert torch.equal(torch.cat([d.visibility for d in decoded]), flags)


def test_results_and_coco_records_carry_the_flags_and_a_model_without_the_head_does_not():
    torch.manual_seed(0)
    images = [torch.rand(3, 96, 128)]
    on = poseseg.build_model(poseseg.load_config("tiny", ["model.keypoint.visibility=true",
                                                          "model.box.score_thresh=0.0"])).eval()
    with torch.no_grad():
        result = postprocess(on.predict_rois(images))[0]
    n, k = result["keypoints"].shape[:2]
    assert n > 0 and result["keypoint_visibility"].shape == (n, k)
    assert set(result["keypoint_visibility"].unique().tolist()) <= {0, 1, 2}
    records = coco_records(result, image_id=1)
    got = np.array([r["keypoints"] for r in records]).reshape(n, k, 3)[..., 2]
    np.testing.assert_array_equal(got, result["keypoint_visibility"].numpy())

    off = poseseg.build_model(poseseg.load_config("tiny", ["model.box.score_thresh=0.0"])).eval()
    with torch.no_grad():
        plain = postprocess(off.predict_rois(images))[0]
    assert "keypoint_visibility" not in plain  # no made-up flags: the results convention's v = 1
    assert all(v == 1 for r in coco_records(plain, image_id=1) for v in r["keypoints"][2::3])


def test_flip_tta_swaps_the_left_and_right_flags():
    torch.manual_seed(0)
    cfg = poseseg.load_config("tiny", ["model.keypoint.visibility=true", "model.test_flip=true"])
    model = poseseg.build_model(cfg).eval()
    from poseseg.keypoint_schema import coco_person_schema

    model.keypoint_schema = coco_person_schema().to_dict()
    perm = torch.as_tensor(coco_person_schema().flip_permutation())
    head = model.keypoint_head
    pooled = torch.randn(3, cfg.model.fpn.channels, cfg.model.keypoint.pooled_size, cfg.model.keypoint.pooled_size)
    with torch.no_grad():
        h, o, v = head(pooled)
        _, _, averaged = model._average_with_flipped(h, o, v, pooled)  # the "mirrored" features are the same
    torch.testing.assert_close(averaged, (v + v[:, perm]) / 2)


def test_occluded_keypoints_are_drawn_hollow_and_unlabelled_ones_hidden():
    image = np.zeros((60, 60, 3), np.uint8)
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, :, 0], kps[0, :, 1], kps[0, :, 2] = 50, 8, 1
    kps[0, 1, :2] = (15, 15)
    kps[0, 16, :2] = (45, 45)
    result = {"boxes": np.array([[5.0, 5.0, 55.0, 55.0]]), "scores": np.array([0.9]), "keypoints": kps,
              "keypoint_scores": np.ones((1, 17)), "keypoint_visibility": np.zeros((1, 17), np.int64)}
    result["keypoint_visibility"][0, 1] = 2  # left eye: visible, filled
    result["keypoint_visibility"][0, 16] = 1  # right ankle: occluded, a ring (no limb joins the two)
    picture, stats = draw(image, result, show_boxes=False, show_labels=False, show_masks=False, return_stats=True)
    pixels = np.asarray(picture)
    assert stats["keypoints"] == 2  # the 15 keypoints flagged 0 are not drawn
    assert pixels[15, 15].any() and not pixels[8, 50].any()
    assert not pixels[45, 45].any() and pixels[45, 47].any()  # hollow centre, drawn ring


def test_the_probe_leaves_the_tower_to_the_heatmaps_unless_asked():
    pooled = torch.randn(2, 8, 4, 4)
    for trains_tower in (False, True):
        torch.manual_seed(0)
        head = KeypointHead(in_channels=8, num_keypoints=3, num_convs=1, conv_dim=8, heatmap_size=8, loss="ce",
                            visibility=True, visibility_trains_tower=trains_tower)
        head(pooled)[2].sum().backward()
        tower_grad = sum(float(p.grad.abs().sum()) for p in head.tower.parameters() if p.grad is not None)
        assert (tower_grad > 0) == trains_tower
        assert head.visibility_fc.weight.grad is not None


def test_a_calibrated_head_ranks_people_for_keypoint_ap_by_their_keypoints():
    from poseseg.modeling.postprocess import records_by_iou_type

    torch.manual_seed(0)
    model = poseseg.build_model(poseseg.load_config("tiny", ["model.box.score_thresh=0.0"])).eval()
    images = [torch.rand(3, 96, 128)]
    with torch.no_grad():
        assert "keypoint_instance_scores" not in model.predict_rois(images).detections[0]  # uncalibrated
        model.keypoint_head.score_calibration.set_knots(torch.linspace(0, 1, 33), torch.linspace(0, 1, 33))
        result = postprocess(model.predict_rois(images))[0]
    want = result["scores"] * result["keypoint_scores"].mean(-1)
    torch.testing.assert_close(result["keypoint_instance_scores"], want)
    split = records_by_iou_type(coco_records(result, image_id=1))
    assert [r["score"] for r in split["keypoints"]] == [float(v) for v in want]
    assert [r["score"] for r in split["bbox"]] == [float(v) for v in result["scores"]]  # boxes keep theirs
