"""The data contract, written down once: what flows into the model and what comes out.

Images: a list of float tensors (3, H, W) with values in [0, 1], RGB, any sizes.

``Target`` (one per training image, torchvision's detection convention):
    boxes      (N, 4) float32, absolute xyxy pixels
    labels     (N,)   int64, 1 = person (0 is background, never a label)
    masks      (N, H, W) uint8 {0, 1}, same H, W as the image
    keypoints  (N, K, 3) float32: x, y in pixels, visibility 0 (not labeled), 1 (labeled,
               hidden), 2 (labeled, visible); x = y = 0 where visibility is 0
    (optional) iscrowd (N,) int64: crowd regions, never used as positives
    (optional) image_id int, file_name str: carried through for evaluation

``Prediction`` (one per image, eval mode, in the coordinates of the input image):
    boxes            (N, 4) float32 xyxy
    scores           (N,)   float32 in [0, 1]
    labels           (N,)   int64
    masks            (N, 1, H, W) float32 in [0, 1]           (when the mask head is on)
    keypoints        (N, K, 3) float32: x, y, 1 (visibility)    (when the keypoint head is on)
    keypoint_scores  (N, K) float32 in [0, 1]                   (when the keypoint head is on; after
                     ``poseseg calibrate``: the probability of lying within OKS-ks 0.5 of the truth)
    keypoint_visibility (N, K) int64: 0 not labelled, 1 occluded, 2 visible (model.keypoint.visibility)
Keys of heads that are not in the model are absent. The training-mode output is a dict of
scalar loss tensors whose names start with ``loss_``.
"""
from __future__ import annotations

from typing import TypedDict

import torch


class Target(TypedDict, total=False):
    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    keypoints: torch.Tensor
    iscrowd: torch.Tensor
    image_id: int
    file_name: str


class Prediction(TypedDict, total=False):
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    keypoints: torch.Tensor
    keypoint_scores: torch.Tensor
    keypoint_visibility: torch.Tensor
