"""The model's inference path for one image, written so that tracing records all of it.

``InferenceGraph(model)(image)`` runs the trained model's own modules (transform, backbone, FPN,
RPN, poolers, heads, keypoint codec) in the order ``PoseSegModel`` runs them at inference, and
returns flat tensors instead of a list of dicts. What differs from the PyTorch path is only what
the tracer cannot follow or would record wrongly: the resized size is computed in float64 as
eager PyTorch does; the heads always run (on the detections plus one dropped placeholder box,
instead of a Python "no detections" branch); deformable RoI pooling's per-level Python loop
becomes "sample every level, keep the box's own" with ``where``. Masks leave the graph as the
per-detection M x M probabilities; ``OrtModel`` pastes them with torchvision's
``paste_masks_in_image``, the same function the PyTorch path's postprocess calls.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from poseseg.modeling.model import PoseSegModel, _same_pooling

PLACEHOLDER_BOX = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # (1, 4) xyxy in the resized image


def output_names(model: PoseSegModel) -> list[str]:
    """The graph's outputs, in order, for the model's heads."""
    names = ["boxes", "scores", "labels"]
    if model.mask_head is not None:
        names.append("mask_probs")  # (N, 1, M, M) in box coordinates
    if model.keypoint_head is not None:
        names += ["keypoints", "keypoint_scores", "keypoint_peaks"]
    return names


class InferenceGraph(nn.Module):
    """``forward(image (3, H, W) float in [0, 1])`` -> the tensors named by ``output_names(model)``."""

    def __init__(self, model: PoseSegModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        original_size = image.shape[-2:]
        batch = preprocess(m.transform, image)  # normalise, resize, pad to size_divisible: (1, 3, H', W')
        features = m.fpn(m.backbone(batch.tensors))  # p{l}: (1, C, H'/2**l, W'/2**l)
        proposals, _ = m.rpn(batch, features)  # [(P, 4)]
        image_sizes = batch.image_sizes
        class_logits, box_deltas = m.box_head(pool(m.box_pooler, features, proposals[0], image_sizes))
        detections = m.box_head.inference(class_logits, box_deltas, proposals, image_sizes)[0]
        boxes = detections["boxes"]  # (N, 4) in the resized image
        outputs = [resize_boxes(boxes, image_sizes[0], original_size), detections["scores"], detections["labels"]]
        labels = detections["labels"]
        # The heads run on the N boxes plus one placeholder box whose results are dropped: with N = 0 the
        # runtime would otherwise meet zero-sized tensors that some ops reject (Reshape with -1). Every RoI
        # is computed independently of the others, so the N real rows are unchanged.
        boxes = torch.cat([boxes, PLACEHOLDER_BOX.to(boxes)])  # (N + 1, 4)
        labels = torch.cat([labels, labels.new_ones(1)])
        mask_pooled = None
        if m.mask_head is not None:
            mask_pooled = pool(m.mask_pooler, features, boxes, image_sizes)  # (N + 1, C, S, S)
            logits = m.mask_head(mask_pooled)  # (N + 1, num_classes, M, M)
            size = logits.shape[-1]
            index = labels.view(-1, 1, 1, 1).expand(-1, 1, size, size)
            outputs.append(logits.gather(1, index).sigmoid()[:-1])  # (N, 1, M, M): the predicted class's mask
        if m.keypoint_head is not None:
            same = mask_pooled is not None and _same_pooling(m.mask_pooler, m.keypoint_pooler)
            pooled = mask_pooled if same else pool(m.keypoint_pooler, features, boxes, image_sizes)
            heatmaps, offsets = m.keypoint_head(pooled)  # (N + 1, K, H, H), (N + 1, 2K, H, H)
            decoded = m.keypoint_head.codec.decode(heatmaps, offsets, boxes)
            ratio = _xy_ratio(image_sizes[0], original_size, boxes)  # (2,) resized -> original, x then y
            keypoints = torch.cat([decoded.keypoints[..., :2] * ratio, decoded.keypoints[..., 2:]], dim=-1)
            outputs += [keypoints[:-1], decoded.scores[:-1], (decoded.peaks * ratio)[:-1]]
        return tuple(outputs)


def preprocess(transform: GeneralizedRCNNTransform, image: torch.Tensor) -> ImageList:
    """``transform([image])`` in eval mode, with the resized size computed as eager PyTorch computes it.

    torchvision's traced resize derives the scale in float32, which can land one pixel short of eager
    PyTorch's float64 ``floor(size * scale)`` (425 x 640 -> 319 rows instead of 320); a different
    input to the whole network. Here the size is computed in float64 and given to the resize.
    """
    image = transform.normalize(image)
    shape = torch._shape_as_tensor(image)[-2:].to(torch.float64)  # (2,) H, W
    # 1-D tensors throughout: the exporter types 0-d constants (and Python scalars) as float32
    limits = torch.tensor([transform.min_size[-1], transform.max_size], dtype=torch.float64)  # (2,) short, long
    scale = (limits / torch.stack([shape.min(), shape.max()])).min(dim=0, keepdim=True).values  # (1,)
    out_size = (shape * scale).floor().to(torch.int64)  # (2,) as F.interpolate(scale_factor, recompute=True)
    resized = F.interpolate(image[None], size=[out_size[0], out_size[1]], mode="bilinear", align_corners=False)[0]
    image_size = resized.shape[-2:]
    tensors = transform.batch_images([resized], size_divisible=transform.size_divisible)  # (1, 3, H', W')
    return ImageList(tensors, [(image_size[0], image_size[1])])


def _xy_ratio(resized_size, original_size, like: torch.Tensor) -> torch.Tensor:
    """(x, y) factors from resized to original pixels: the ratios ``resize_keypoints`` applies."""
    ratios = [torch.tensor(o, dtype=torch.float32, device=like.device) / torch.tensor(r, dtype=torch.float32,
                                                                                          device=like.device)
              for r, o in zip(resized_size, original_size)]
    return torch.stack([ratios[1], ratios[0]])


def pool(pooler: nn.Module, features: dict[str, torch.Tensor], boxes: torch.Tensor,
         image_sizes: list[tuple[int, int]]) -> torch.Tensor:
    """The pooler's (R, C, S, S) features for the boxes of one image (every pooler traces as it runs)."""
    return pooler(features, [boxes], image_sizes)
