"""The model's inference path for one image, written so that tracing records all of it.

``InferenceGraph(model)(image)`` runs the trained model's own modules (transform, backbone, FPN,
RPN, poolers, heads, keypoint codec) in the order ``PoseSegModel`` runs them at inference, and
returns flat tensors instead of a list of dicts. What differs from the PyTorch path is only what
the tracer cannot follow or would record wrongly: the resized size is computed in float64 as
eager PyTorch does; the heads always run (on the detections plus one dropped placeholder box,
instead of a Python "no detections" branch). Deformable RoI pooling traces as it runs (its sampler
keeps the feature maps' sizes as tensors). Like ``PoseSegModel.predict_rois``
the graph stops at the RoI level, in the resized picture's pixels (plus that picture's size), and
``OrtModel`` hands its outputs to the same :func:`poseseg.modeling.postprocess.postprocess`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from poseseg.modeling.model import PoseSegModel, same_pooling

PLACEHOLDER_BOX = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # (1, 4) xyxy in the resized image


def output_names(model: PoseSegModel) -> list[str]:
    """The graph's outputs, in order, for the model's heads: ``postprocess``'s RoI-level keys, and
    ``resized_size`` (2,) int64, the (h, w) of the picture the network saw."""
    names = ["resized_size", "boxes", "scores", "labels"]
    if model.mask_head is not None:
        names.append("mask_probs")  # (N, 1, M, M) in box coordinates
    if model.keypoint_head is not None:
        names += ["keypoints", "keypoint_scores", "keypoint_peaks"]
        if model.keypoint_head.ranks_by_keypoints:
            names.append("keypoint_instance_scores")  # (N,) the ranking score for keypoint AP
        if model.keypoint_head.visibility_fc is not None:
            names.append("keypoint_visibility")  # (N, K) int64 flag 0 / 1 / 2
    return names


class InferenceGraph(nn.Module):
    """``forward(image (3, H, W) float in [0, 1])`` -> the tensors named by ``output_names(model)``, boxes
    and keypoints in the resized picture's pixels."""

    def __init__(self, model: PoseSegModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        batch = preprocess(m.transform, image)  # normalise, resize, pad to size_divisible: (1, 3, H', W')
        features = m.fpn(m.backbone(batch.tensors))  # p{l}: (1, C, H'/2**l, W'/2**l)
        proposals, _ = m.rpn(batch, features)  # [(P, 4)]
        image_sizes = batch.image_sizes
        class_logits, box_deltas = m.box_head(m.box_pooler(features, proposals, image_sizes))
        detections = m.box_head.inference(class_logits, box_deltas, proposals, image_sizes)[0]
        boxes = detections["boxes"]  # (N, 4) in the resized image
        resized_size = torch.stack([torch.as_tensor(v, dtype=torch.int64) for v in image_sizes[0]])  # (2,)
        outputs = [resized_size, boxes, detections["scores"], detections["labels"]]
        labels = detections["labels"]
        # The heads run on the N boxes plus one placeholder box whose results are dropped: with N = 0 the
        # runtime would otherwise meet zero-sized tensors that some ops reject (Reshape with -1). Every RoI
        # is computed independently of the others, so the N real rows are unchanged.
        boxes = torch.cat([boxes, PLACEHOLDER_BOX.to(boxes)])  # (N + 1, 4)
        labels = torch.cat([labels, labels.new_ones(1)])
        mask_pooled = None
        if m.mask_head is not None:
            mask_features = features if m.mask_trunk is None else m.mask_trunk(batch.tensors)  # model.mask.trunk
            mask_pooled = m.mask_pooler(mask_features, [boxes], image_sizes)  # (N + 1, C, S, S)
            logits = m.mask_head(mask_pooled)  # (N + 1, num_classes, M, M)
            size = logits.shape[-1]
            index = labels.view(-1, 1, 1, 1).expand(-1, 1, size, size)
            outputs.append(logits.gather(1, index).sigmoid()[:-1])  # (N, 1, M, M): the predicted class's mask
        if m.keypoint_head is not None:
            same = mask_pooled is not None and m.mask_trunk is None and same_pooling(m.mask_pooler, m.keypoint_pooler)
            pooled = mask_pooled if same else m.keypoint_pooler(features, [boxes], image_sizes)
            heatmaps, offsets, visibility = m.keypoint_head(pooled)  # (N + 1, K, H, H), (N + 1, 2K, H, H), (N + 1, K, 3)
            decoded = m.keypoint_head.decode(heatmaps, offsets, visibility, boxes)  # calibrated scores
            outputs += [decoded.keypoints[:-1], decoded.scores[:-1], decoded.peaks[:-1]]
            if m.keypoint_head.ranks_by_keypoints:
                outputs.append(m.keypoint_head.instance_scores(detections["scores"], decoded.scores[:-1]))
            if decoded.visibility is not None:
                outputs.append(decoded.visibility[:-1])
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

