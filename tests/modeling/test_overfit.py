"""The tiny model overfits a few synthetic pictures: every loss falls and the boxes come out right."""
import numpy as np
import torch
from torchvision.ops import box_iou

import poseseg
from poseseg.data.synth import render_image

SIZE = 160


def synthetic_batch(n=2, seed=0):
    images, targets = [], []
    rng = np.random.default_rng(seed)
    while len(images) < n:
        img, people = render_image(rng, (SIZE, SIZE), max_people=2, max_distractors=1, p_occluder=0.0)
        people = [p for p in people if p["bbox"][2] >= 12 and p["bbox"][3] >= 12]
        if not people:
            continue
        boxes = torch.tensor([[p["bbox"][0], p["bbox"][1], p["bbox"][0] + p["bbox"][2], p["bbox"][1] + p["bbox"][3]]
                              for p in people], dtype=torch.float32)
        images.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": boxes, "labels": torch.ones(len(people), dtype=torch.int64),
                        "masks": torch.from_numpy(np.stack([p["mask"] for p in people])).to(torch.uint8),
                        "keypoints": torch.from_numpy(np.stack([p["keypoints"] for p in people])).float()})
    return images, targets


def test_tiny_overfits_a_few_synthetic_images():
    torch.manual_seed(0)
    cfg = poseseg.load_config("tiny", [f"model.input.test_size={SIZE}"])
    model = poseseg.build_model(cfg).train()
    images, targets = synthetic_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, 0.05 + i / 20))
    history = []
    for _ in range(200):
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        sched.step()
        history.append({k: v.item() for k, v in losses.items()})
    # box regression starts near 0 (the only positives are the ground-truth boxes themselves) and
    # rises once proposals get close: "initial" is the worst of the first 20 steps
    first = {k: max(h[k] for h in history[:20]) for k in history[0]}
    last = {k: np.mean([h[k] for h in history[-10:]]) for k in history[0]}
    # the offset loss has a floor: proposals are re-sampled every step, so each cell's target moves a
    # little; instead of a ratio it must reach sub-cell precision (smooth-L1 ~ mean |error| in cells)
    offset_error_cells = last.pop("loss_keypoint_offset") / cfg.model.keypoint.offset_loss_weight
    assert offset_error_cells < 0.3, f"keypoint offsets are {offset_error_cells:.3f} cells off on average"
    slow = {k: f"{first[k]:.4f} -> {last[k]:.4f}" for k in last if last[k] * 5 > first[k]}
    assert not slow, f"losses that fell less than 5x: {slow}"
    model.eval()
    with torch.no_grad():
        out = model(images)
    for pred, target in zip(out, targets):
        confident = pred["boxes"][pred["scores"] > 0.5]
        iou = box_iou(target["boxes"], confident)
        assert iou.shape[1] > 0 and (iou.max(dim=1).values > 0.7).all(), iou
        # keypoints of the best detection of each person: visible ones within a few pixels
        best = box_iou(target["boxes"], pred["boxes"]).argmax(dim=1)
        visible = target["keypoints"][..., 2] > 0
        error = (pred["keypoints"][best, :, :2] - target["keypoints"][..., :2]).norm(dim=-1)[visible]
        assert error.median() < 3.0, f"median keypoint error {error.median():.2f} px"
