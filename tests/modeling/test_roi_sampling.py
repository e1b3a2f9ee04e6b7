"""Ground-truth RoIs with jittered copies for the mask and keypoint heads."""
import torch
from torchvision.ops import box_iou

from poseseg.modeling.roi_sampling import jittered_gt_rois


def test_jittered_rois_keep_each_person_and_move_sides_within_the_jitter():
    boxes = torch.tensor([[10.0, 20.0, 60.0, 120.0], [100.0, 5.0, 150.0, 45.0]])
    target = {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64)}
    rois = jittered_gt_rois([target, {"boxes": boxes[:0], "labels": torch.ones(0, dtype=torch.int64)}],
                            copies=3, jitter=0.1, image_sizes=[(130, 155), (130, 155)])
    props, idxs = rois.proposals[0], rois.matched_idxs[0]
    assert props.shape == (8, 4) and rois.proposals[1].shape == (0, 4)
    assert torch.equal(props[:2], boxes) and idxs.tolist() == [0, 1] * 4
    assert rois.labels[0].tolist() == [1] * 8
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)[idxs]
    moved = (props - boxes[idxs]).abs()
    assert (moved <= 0.1 * size + 1e-4).all() and (moved[2:] > 0).any()
    assert (props[:, 0::2] <= 155).all() and (props[:, 1::2] <= 130).all() and (props >= 0).all()
    assert (box_iou(props, boxes).gather(1, idxs[:, None]) > 0.6).all()
