"""The assembled model: head sets, losses, outputs, empty batches and input errors."""
import pytest
import torch

import poseseg

HEAD_SETS = {
    "[box]": ({"loss_rpn_objectness", "loss_rpn_box", "loss_box_cls", "loss_box_reg"}, set()),
    "[box,mask]": ({"loss_mask"}, {"masks"}),
    "[box,keypoint]": ({"loss_keypoint", "loss_keypoint_offset"}, {"keypoints", "keypoint_scores"}),
    "[box,mask,keypoint]": ({"loss_mask", "loss_keypoint", "loss_keypoint_offset"},
                            {"masks", "keypoints", "keypoint_scores"}),
}
BASE_LOSSES = HEAD_SETS["[box]"][0]
BASE_OUTPUTS = {"boxes", "scores", "labels"}


def tiny(*overrides):
    cfg = poseseg.load_config("tiny", overrides=["model.input.test_size=128", *overrides])
    return poseseg.build_model(cfg)


def person_batch(n_images=2, size=128, visible=True, people=True):
    images, targets = [], []
    for _ in range(n_images):
        boxes = torch.tensor([[10.0, 12.0, 60.0, 110.0], [70.0, 20.0, 120.0, 120.0]]) if people else torch.zeros(0, 4)
        n = boxes.shape[0]
        masks = torch.zeros(n, size, size, dtype=torch.uint8)
        for j, b in enumerate(boxes.long()):
            masks[j, b[1]:b[3], b[0]:b[2]] = 1
        kps = torch.zeros(n, 17, 3)
        if visible and n:
            kps[..., 0] = boxes[:, None, 0] + torch.rand(n, 17) * 40
            kps[..., 1] = boxes[:, None, 1] + torch.rand(n, 17) * 80
            kps[..., 2] = 2
        images.append(torch.rand(3, size, size))
        targets.append({"boxes": boxes, "labels": torch.ones(n, dtype=torch.int64), "masks": masks, "keypoints": kps})
    return images, targets


@pytest.mark.parametrize("heads", list(HEAD_SETS))
def test_each_head_set_returns_exactly_its_losses_and_outputs(heads):
    model = tiny(f"model.heads={heads}")
    images, targets = person_batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == BASE_LOSSES | HEAD_SETS[heads][0]
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    assert set(out[0]) == BASE_OUTPUTS | HEAD_SETS[heads][1]
    n = out[0]["boxes"].shape[0]
    if "masks" in out[0]:
        assert out[0]["masks"].shape == (n, 1, 128, 128)
    if "keypoints" in out[0]:
        assert out[0]["keypoints"].shape == (n, 17, 3) and out[0]["keypoint_scores"].shape == (n, 17)


def test_offsets_off_drops_the_offset_loss():
    model = tiny("model.keypoint.offsets=false").train()
    losses = model(*person_batch())
    assert "loss_keypoint_offset" not in losses and "loss_keypoint" in losses


@pytest.mark.parametrize("case", ["no_people", "no_visible_keypoints"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_degenerate_batches_train_and_every_parameter_gets_a_gradient(case, loss):
    model = tiny(f"model.keypoint.loss={loss}").train()
    images, targets = person_batch(people=case != "no_people", visible=False)
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total = sum(losses.values())
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient (DDP would hang): {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if case == "no_people":
        assert losses["loss_mask"].item() == 0 and losses["loss_keypoint_offset"].item() == 0
    else:
        assert losses["loss_keypoint_offset"].item() == 0


def test_crowd_regions_are_not_positives():
    model = tiny().train()
    images, targets = person_batch(n_images=1)
    targets[0]["iscrowd"] = torch.tensor([0, 1])
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_empty_image_in_eval_gives_empty_arrays_of_the_right_shape():
    model = tiny().eval()
    model.box_head.score_thresh = 1.1  # nothing can pass
    with torch.no_grad():
        out = model([torch.rand(3, 100, 90)])[0]
    assert out["boxes"].shape == (0, 4)
    assert out["masks"].shape == (0, 1, 100, 90)
    assert out["keypoints"].shape == (0, 17, 3) and out["keypoint_scores"].shape == (0, 17)


def test_keypoint_count_comes_from_config():
    model = tiny("model.keypoint.num_keypoints=14").train()
    images, targets = person_batch()
    for t in targets:
        t["keypoints"] = t["keypoints"][:, :14]
    assert torch.isfinite(sum(model(images, targets).values()))
    model.eval()
    with torch.no_grad():
        assert model(images)[0]["keypoints"].shape[1] == 14


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.pop("masks"), "no 'masks'"),
    (lambda t: t.__setitem__("boxes", torch.tensor([[10.0, 10.0, 5.0, 50.0], [1.0, 1.0, 9.0, 9.0]])), "x2 > x1"),
    (lambda t: t.__setitem__("keypoints", torch.zeros(2, 17)), "'keypoints' must be"),
    (lambda t: t.__setitem__("masks", torch.zeros(2, 10, 10)), "'masks' must be"),
])
def test_bad_targets_are_clear_errors(mutate, message):
    model = tiny().train()
    images, targets = person_batch(n_images=1)
    mutate(targets[0])
    with pytest.raises(ValueError, match=message):
        model(images, targets)


def test_bad_images_are_clear_errors():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model(torch.rand(1, 3, 64, 64))
    model.train()
    with pytest.raises(ValueError, match="one target dict per image"):
        model([torch.rand(3, 64, 64)])


@pytest.mark.parametrize("caps, fine, pooled_by_keypoint_pooler",
                         [((12, 12), False, False), ((12, 6), False, True), ((12, 12), True, True)])
def test_mask_and_keypoint_heads_share_pooled_positives_when_caps_match(caps, fine, pooled_by_keypoint_pooler):
    """Equal caps and levels: the keypoint head trains on the mask head's RoIs and pooled features (one
    RoIAlign fewer); different caps, or masks from their own finer level: each head pools its own."""
    mask_cap, kp_cap = caps
    model = tiny(f"model.mask.max_rois_per_image={mask_cap}", f"model.keypoint.max_rois_per_image={kp_cap}",
                 f"model.mask.fine_level={str(fine).lower()}").train()
    calls = []
    model.keypoint_pooler.register_forward_hook(lambda *a: calls.append("keypoint"))
    seen = {}
    model.mask_head.register_forward_hook(lambda m, inp, out: seen.__setitem__("mask", inp[0]))
    model.keypoint_head.register_forward_hook(lambda m, inp, out: seen.__setitem__("keypoint", inp[0]))
    losses = model(*person_batch())
    sum(losses.values()).backward()
    assert bool(calls) == pooled_by_keypoint_pooler
    assert (seen["keypoint"] is seen["mask"]) != pooled_by_keypoint_pooler
    assert all(p.grad is not None for p in model.keypoint_head.parameters())
