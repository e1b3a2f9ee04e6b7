"""The assembled multi-task model: backbone -> FPN -> RPN -> RoI pooling -> box / mask / keypoint heads.

``model(images, targets)`` in training mode returns the loss terms; ``model(images)`` in eval
mode returns one Prediction per image (the contract is in ``poseseg.types``): ``predict_rois``
runs the network, :func:`poseseg.modeling.postprocess.postprocess` maps its RoI-level outputs into
the pictures' pixels.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from poseseg.config import Config, ModelConfig
from poseseg.keypoint_schema import KeypointSchema
from poseseg.modeling.backbone import ResNet
from poseseg.modeling.box_head import BoxHead
from poseseg.modeling.conv_tower import zero_loss
from poseseg.modeling.flip_tta import mirror_boxes, unflip_keypoints, unflip_mask_logits
from poseseg.modeling.fpn import FPN
from poseseg.modeling.input_transform import InputTransform
from poseseg.modeling.keypoint_head import KeypointHead
from poseseg.modeling.mask_head import MaskHead
from poseseg.modeling.pooler import RoIPooler
from poseseg.modeling.postprocess import RoIOutputs, postprocess
from poseseg.modeling.roi_sampling import ProposalSampler, SampledRoIs, jittered_gt_rois
from poseseg.modeling.rpn import build_rpn
from poseseg.modeling.trunk import Trunk
from poseseg.types import Target


class PoseSegModel(nn.Module):
    def __init__(self, *, transform: GeneralizedRCNNTransform, backbone: ResNet, fpn: FPN, rpn: nn.Module,
                 sampler: ProposalSampler, box_pooler: RoIPooler, box_head: BoxHead,
                 mask_pooler: RoIPooler | None = None, mask_head: MaskHead | None = None,
                 keypoint_pooler: RoIPooler | None = None, keypoint_head: KeypointHead | None = None,
                 mask_max_rois: int = 128, keypoint_max_rois: int = 128, head_rois: str = "proposals",
                 gt_jitter_copies: int = 2, gt_jitter: float = 0.1, test_flip: bool = False,
                 test_flip_masks: bool = True, mask_trunk: Trunk | None = None,
                 loss_weights: dict[str, float] | None = None):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.fpn = fpn
        self.rpn = rpn
        self.sampler = sampler
        self.box_pooler, self.box_head = box_pooler, box_head
        self.mask_pooler, self.mask_head = mask_pooler, mask_head
        self.mask_trunk = mask_trunk  # None: the mask head reads the model's trunk (backbone + fpn)
        self.keypoint_pooler, self.keypoint_head = keypoint_pooler, keypoint_head
        self.mask_max_rois = mask_max_rois
        self.keypoint_max_rois = keypoint_max_rois
        self.head_rois, self.gt_jitter_copies, self.gt_jitter = head_rois, gt_jitter_copies, gt_jitter
        self.loss_weights = loss_weights or {}
        self.keypoint_schema: dict | None = None  # names, skeleton, flip pairs, sigmas; set by training
        self.frozen_parts: set[str] = set()  # submodules held fixed (train.freeze)
        self.test_flip = test_flip  # keypoint (and mask) heads also on the mirrored image, averaged
        self.test_flip_masks = test_flip_masks

    def train(self, mode: bool = True) -> "PoseSegModel":
        """The batch norms of frozen parts stay in eval mode: they keep their running statistics."""
        super().train(mode)
        for name in self.frozen_parts:
            for module in getattr(self, name).modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @property
    def heads(self) -> list[str]:
        return ["box"] + [n for n in ("mask", "keypoint") if getattr(self, f"{n}_head") is not None]

    def forward(self, images: list[torch.Tensor], targets: list[Target] | None = None):
        """Training: a dict of loss terms. Eval: one Prediction per image, masks pasted into full planes
        (``postprocess(model.predict_rois(images), ...)`` chooses other forms)."""
        if not self.training:
            return postprocess(self.predict_rois(images))
        _check_inputs(images, targets, True, self.heads)
        plain_targets, crowd_boxes = _split_crowd(targets)
        batch, plain_targets = self.transform(images, plain_targets)
        features = self.fpn(self.backbone(batch.tensors))  # p{l}: (B, C, H/2**l, W/2**l)
        proposals, rpn_losses = self.rpn(batch, features, [{"boxes": t["boxes"]} for t in plain_targets])
        for t, crowd in zip(plain_targets, crowd_boxes):
            t["crowd_boxes"] = crowd
        mask_features = features if self.mask_trunk is None else self.mask_trunk(batch.tensors)
        losses = {"loss_rpn_objectness": rpn_losses["loss_objectness"], "loss_rpn_box": rpn_losses["loss_rpn_box_reg"]}
        losses.update(self._head_losses(features, proposals, batch.image_sizes, plain_targets, mask_features))
        return {k: v * self.loss_weights.get(k, 1.0) for k, v in losses.items()}

    @torch.no_grad()
    def predict_rois(self, images: list[torch.Tensor], *, keep_features: bool = False) -> RoIOutputs:
        """The network at inference, up to RoI-level outputs in the resized pictures' pixels (the keys are
        in ``poseseg.modeling.postprocess``); eval mode only. ``keep_features``: also return the trunk's
        FPN levels (distillation pools its student's mask features from them)."""
        if self.training:
            raise RuntimeError("predict_rois runs the inference path: call model.eval() first")
        _check_inputs(images, None, False, self.heads)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, _ = self.transform(images)
        # The trunk, FPN and RPN convs run in channels-last layout: oneDNN's CPU convolutions are faster
        # on it (much faster for the RPN's few-channel 1x1 convs); the same values up to float rounding.
        pixels = batch.tensors.contiguous(memory_format=torch.channels_last)
        features = self.fpn(self.backbone(pixels))  # p{l}: (B, C, H/2**l, W/2**l)
        proposals, _ = self.rpn(batch, features)  # each (P_i, 4)
        # RoIAlign reads NCHW (it would convert the level on every call): convert once
        features = _nchw(features)
        mirrored = mask_features = mask_mirrored = None
        if self.test_flip and (self.mask_head is not None or self.keypoint_head is not None):
            mirrored = _nchw(self.fpn(self.backbone(pixels.flip(-1))))
        if self.mask_trunk is not None:
            mask_features = _nchw(self.mask_trunk(pixels))
            if mirrored is not None and self.test_flip_masks:
                mask_mirrored = _nchw(self.mask_trunk(pixels.flip(-1)))
        detections = self._detect(features, proposals, batch.image_sizes, mirrored, pixels.shape[-1],
                                  mask_features=mask_features, mask_mirrored=mask_mirrored)
        return RoIOutputs(detections, list(batch.image_sizes), original_sizes, features if keep_features else None)

    def _head_losses(self, features, proposals, image_sizes, targets, mask_features) -> dict[str, torch.Tensor]:
        """Box, mask and keypoint losses; the mask head pools from ``mask_features`` (its trunk's)."""
        rois = self.sampler(proposals, targets)
        class_logits, box_deltas = self.box_head(self.box_pooler(features, rois.proposals, image_sizes))
        matched_boxes = [t["boxes"][i] if t["boxes"].numel() else torch.zeros_like(p)
                         for t, i, p in zip(targets, rois.matched_idxs, rois.proposals)]
        losses = self.box_head.loss(class_logits, box_deltas, rois.labels, rois.proposals, matched_boxes)
        sampled = rois
        if self.head_rois == "gt_jitter":
            rois = jittered_gt_rois(targets, copies=self.gt_jitter_copies, jitter=self.gt_jitter,
                                    image_sizes=image_sizes)
        mask_pos = mask_pooled = None
        if self.mask_head is not None:
            mask_pos = rois.positives(self.mask_max_rois)
            if mask_pos.num_rois() == 0:
                losses.update(self._idle_head_losses("mask", mask_features, sampled, image_sizes))
            else:
                mask_pooled = self.mask_pooler(mask_features, mask_pos.proposals, image_sizes)  # (P, C, S, S)
                logits = self.mask_head(mask_pooled)
                losses.update(self.mask_head.loss(logits, mask_pos.proposals, mask_pos.labels,
                                                  mask_pos.matched_idxs, [t["masks"] for t in targets]))
        if self.keypoint_head is not None:
            # shared RoI features: with equal caps and identical poolers the keypoint head trains on the
            # mask head's positives and pooled features (one RoIAlign forward and backward fewer)
            share = (mask_pooled is not None and self.mask_trunk is None and self.keypoint_max_rois == self.mask_max_rois
                     and same_pooling(self.mask_pooler, self.keypoint_pooler))
            pos = mask_pos if share else rois.positives(self.keypoint_max_rois)
            if pos.num_rois() == 0:
                losses.update(self._idle_head_losses("keypoint", features, sampled, image_sizes))
            else:
                pooled = mask_pooled if share else self.keypoint_pooler(features, pos.proposals, image_sizes)
                heatmaps, offsets, visibility = self.keypoint_head(pooled)
                losses.update(self.keypoint_head.loss(heatmaps, offsets, visibility, pos.proposals,
                                                      pos.matched_idxs, [t["keypoints"] for t in targets]))
        return losses

    def _idle_head_losses(self, name: str, features, rois: SampledRoIs, image_sizes) -> dict[str, torch.Tensor]:
        """No foreground RoI in the batch: run the head on one RoI and return zero losses tied to its
        outputs, so every parameter still gets a (zero) gradient and DDP never waits for it."""
        head, pooler = getattr(self, f"{name}_head"), getattr(self, f"{name}_pooler")
        one = [p[:1] if i == 0 else p[:0] for i, p in enumerate(rois.proposals)]
        outputs = head(pooler(features, one, image_sizes))
        outputs = [o for o in (outputs if isinstance(outputs, tuple) else (outputs,)) if o is not None]
        return {n: zero_loss(*outputs) for n in head.loss_names}

    def _detect(self, features, proposals, image_sizes, mirrored=None, padded_width: int = 0, **mask_trunk_features):
        """Boxes, then the mask and keypoint heads on them. ``mirrored``: the features of the
        horizontally flipped batch (``padded_width`` wide) for flip test-time augmentation."""
        class_logits, box_deltas = self.box_head(self.box_pooler(features, proposals, image_sizes))
        detections = self.box_head.inference(class_logits, box_deltas, proposals, image_sizes)
        return self.heads_on_boxes(features, detections, image_sizes, mirrored, padded_width, **mask_trunk_features)

    def heads_on_boxes(self, features, detections, image_sizes, mirrored=None, padded_width: int = 0, *,
                       mask_features=None, mask_mirrored=None):
        """Add the mask and keypoint heads' outputs (``mask_probs``, ``keypoints``, ``keypoint_scores``,
        ``keypoint_peaks``) to per-image dicts of ``boxes`` and ``labels`` (in the batch's resized pixels).
        ``mask_features`` / ``mask_mirrored``: the mask trunk's features (``model.mask.trunk=own``)."""
        boxes = [d["boxes"] for d in detections]
        num_boxes = sum(b.shape[0] for b in boxes)
        flip_boxes = [mirror_boxes(b, padded_width) for b in boxes] if mirrored is not None else None
        own_trunk = mask_features is not None
        if not own_trunk:
            mask_features, mask_mirrored = features, mirrored
        mask_pooled = flip_pooled = None
        if self.mask_head is not None:
            if num_boxes:
                mask_pooled = self.mask_pooler(mask_features, boxes, image_sizes)
                logits = self.mask_head(mask_pooled)
                if mask_mirrored is not None and self.test_flip_masks:
                    flip_pooled = self.mask_pooler(mask_mirrored, flip_boxes, image_sizes)
                    logits = (logits + unflip_mask_logits(self.mask_head(flip_pooled))) / 2
                probs = self.mask_head.inference(logits, [d["labels"] for d in detections])
            else:
                size = 2 * self.mask_pooler.output_size
                probs = [b.new_zeros((0, 1, size, size)) for b in boxes]
            for d, p in zip(detections, probs):
                d["mask_probs"] = p  # (N, 1, M, M) over each box: pasted by postprocess
        if self.keypoint_head is not None:
            k = self.keypoint_head.num_keypoints
            if num_boxes:
                # the same boxes through an identical pooler give the mask head's input: reuse it
                same = (mask_pooled is not None and not own_trunk
                        and same_pooling(self.mask_pooler, self.keypoint_pooler))
                pooled = mask_pooled if same else self.keypoint_pooler(features, boxes, image_sizes)
                heatmaps, offsets, visibility = self.keypoint_head(pooled)
                if mirrored is not None:
                    if not (same and flip_pooled is not None):
                        flip_pooled = self.keypoint_pooler(mirrored, flip_boxes, image_sizes)
                    heatmaps, offsets, visibility = self._average_with_flipped(heatmaps, offsets, visibility,
                                                                               flip_pooled)
                decoded = self.keypoint_head.inference(heatmaps, offsets, visibility, boxes)
            else:
                decoded = None
            for i, d in enumerate(detections):
                n = boxes[i].shape[0]
                d["keypoints"] = decoded[i].keypoints if decoded else boxes[i].new_zeros((n, k, 3))
                d["keypoint_scores"] = decoded[i].scores if decoded else boxes[i].new_zeros((n, k))
                d["keypoint_peaks"] = decoded[i].peaks if decoded else boxes[i].new_zeros((n, k, 2))
                if "scores" in d and self.keypoint_head.ranks_by_keypoints:
                    d["keypoint_instance_scores"] = self.keypoint_head.instance_scores(d["scores"],
                                                                                       d["keypoint_scores"])
                if self.keypoint_head.visibility_fc is not None:
                    d["keypoint_visibility"] = (decoded[i].visibility if decoded
                                                else boxes[i].new_zeros((n, k), dtype=torch.int64))
        return detections


    def _average_with_flipped(self, heatmaps, offsets, visibility, flip_pooled):
        """Average the keypoint head's outputs with those on the mirrored boxes, mirrored back."""
        if not self.keypoint_schema:
            raise ValueError("model.test_flip needs the keypoint schema's left/right pairs: load a trained "
                             "checkpoint (it carries the schema) or set model.keypoint_schema")
        perm = KeypointSchema.from_dict(self.keypoint_schema).flip_permutation()
        flip_heatmaps, flip_offsets, flip_visibility = self.keypoint_head(flip_pooled)
        flip_heatmaps, flip_offsets = unflip_keypoints(flip_heatmaps, flip_offsets, perm)
        heatmaps = (heatmaps + flip_heatmaps) / 2
        if offsets is not None:
            offsets = (offsets + flip_offsets) / 2
        if visibility is not None:  # a person's left wrist is the mirrored person's right wrist
            visibility = (visibility + flip_visibility[:, torch.as_tensor(perm, device=visibility.device)]) / 2
        return heatmaps, offsets, visibility


def _nchw(features: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.contiguous()) for k, v in features.items())


def same_pooling(a: RoIPooler, b: RoIPooler) -> bool:
    """Whether two poolers compute the same features for the same boxes (plain RoIAlign, same settings)."""
    if type(a) is not RoIPooler or type(b) is not RoIPooler:
        return False  # e.g. deformable RoI pooling has its own learned offsets
    keys = ("featmap_names", "output_size", "sampling_ratio", "canonical_scale", "canonical_level", "aligned")
    return all(getattr(a.align, k, None) == getattr(b.align, k, None) for k in keys)


def _split_crowd(targets: list[Target]) -> tuple[list[dict], list[torch.Tensor]]:
    """Drop crowd annotations from the targets; return their boxes separately (ignore regions)."""
    plain, crowd = [], []
    for t in targets:
        is_crowd = t.get("iscrowd")
        keep = slice(None) if is_crowd is None else (is_crowd == 0)
        plain.append({k: (v[keep] if isinstance(v, torch.Tensor) and v.ndim > 0 and k != "image_id" else v)
                      for k, v in t.items() if k != "iscrowd"})
        crowd.append(t["boxes"][is_crowd != 0] if is_crowd is not None else t["boxes"][:0])
    return plain, crowd


def _check_inputs(images, targets, training: bool, heads: list[str]) -> None:
    """Clear errors for the mistakes users make with detection models, before torch raises deep inside."""
    if not isinstance(images, (list, tuple)) or not all(isinstance(i, torch.Tensor) and i.ndim == 3 and
                                                         i.shape[0] == 3 for i in images):
        raise ValueError("images must be a list of (3, H, W) float tensors in [0, 1]")
    if not training:
        return
    if targets is None or len(targets) != len(images):
        raise ValueError(f"training needs one target dict per image; got {len(images)} images and "
                         f"{'no' if targets is None else len(targets)} targets")
    needed = {"box": "boxes", "mask": "masks", "keypoint": "keypoints"}
    for i, (img, t) in enumerate(zip(images, targets)):
        for head in heads:
            if needed[head] not in t:
                raise ValueError(f"target {i} has no '{needed[head]}' but the model has a {head} head "
                                 f"(model.heads={heads}); add it or drop the head")
        n = t["boxes"].shape[0]
        if t["boxes"].ndim != 2 or t["boxes"].shape[-1] != 4:
            raise ValueError(f"target {i}: 'boxes' must be (N, 4) xyxy, got shape {tuple(t['boxes'].shape)}")
        if n and not (t["boxes"][:, 2:] > t["boxes"][:, :2]).all():
            raise ValueError(f"target {i}: every box needs x2 > x1 and y2 > y1 (xyxy pixels); drop degenerate boxes")
        if "masks" in t and "mask" in heads and tuple(t["masks"].shape) != (n, *img.shape[-2:]):
            raise ValueError(f"target {i}: 'masks' must be (N, H, W) = {(n, *img.shape[-2:])}, "
                             f"got {tuple(t['masks'].shape)}")
        if "keypoints" in t and "keypoint" in heads:
            kps = t["keypoints"]
            if kps.ndim != 3 or kps.shape[0] != n or kps.shape[2] != 3:
                raise ValueError(f"target {i}: 'keypoints' must be (N, K, 3), got {tuple(kps.shape)}")


def build_model(cfg: Config | ModelConfig) -> PoseSegModel:
    """Build the model a config describes (``cfg.model`` of a full Config, or a ModelConfig)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    transform = InputTransform(m.input.test_size, m.input.max_size, m.input.pixel_mean, m.input.pixel_std,
                               size_divisible=m.input.size_divisible, channel_order=m.input.channel_order,
                               pixel_scale=m.input.pixel_scale)
    b = m.backbone

    def trunk() -> Trunk:
        backbone = ResNet(depth=b.depth, width=b.width, norm=b.norm, deform_stages=b.deform_stages,
                          deform_modulated=b.deform_modulated, freeze_at=b.freeze_at, stride_in_1x1=b.stride_in_1x1)
        return Trunk(backbone=backbone, fpn=FPN(in_channels=backbone.out_channels, in_stages=m.fpn.in_stages,
                                                out_channels=m.fpn.channels, extra_pool=m.fpn.extra_pool,
                                                fine_level=fine_level))

    fine_level = "mask" in m.heads and m.mask.fine_level

    main_trunk = trunk()
    backbone, fpn = main_trunk.backbone, main_trunk.fpn
    r = m.rpn
    rpn = build_rpn(level_names=fpn.level_names, in_channels=m.fpn.channels, anchor_sizes=r.anchor_sizes,
                    aspect_ratios=r.aspect_ratios, conv_depth=r.conv_depth, fg_iou=r.fg_iou, bg_iou=r.bg_iou,
                    batch_size_per_image=r.batch_size_per_image, positive_fraction=r.positive_fraction,
                    pre_nms_top_n_train=r.pre_nms_top_n_train, post_nms_top_n_train=r.post_nms_top_n_train,
                    pre_nms_top_n_test=r.pre_nms_top_n_test, post_nms_top_n_test=r.post_nms_top_n_test,
                    nms_thresh=r.nms_thresh, score_thresh=r.score_thresh, round_anchors=r.round_anchors)
    roi_levels = [f"p{s}" for s in m.fpn.in_stages]

    def pooler(head: str, size: int, levels: list[str] = roi_levels) -> RoIPooler:
        if head in m.roi.deform_pool:
            from poseseg.modeling.deform_pooler import DeformRoIPooler

            return DeformRoIPooler(level_names=levels, output_size=size, sampling_ratio=m.roi.sampling_ratio,
                                   channels=m.fpn.channels)
        return RoIPooler(level_names=levels, output_size=size, sampling_ratio=m.roi.sampling_ratio,
                         aligned=m.roi.aligned)

    sampler = ProposalSampler(fg_iou=m.roi.fg_iou, bg_iou=m.roi.bg_iou,
                              batch_size_per_image=m.roi.batch_size_per_image,
                              positive_fraction=m.roi.positive_fraction)
    box_head = BoxHead(in_channels=m.fpn.channels, pooled_size=m.box.pooled_size, fc_dim=m.box.fc_dim,
                       num_classes=m.num_classes, bbox_reg_weights=m.box.bbox_reg_weights,
                       score_thresh=m.box.score_thresh, nms_thresh=m.box.nms_thresh,
                       detections_per_image=m.box.detections_per_image, nested_thresh=m.box.nested_thresh)
    parts: dict = {}
    if "mask" in m.heads:
        # with the finer level, every mask RoI pools from it, whatever its size
        parts["mask_pooler"] = pooler("mask", m.mask.pooled_size, [fpn.fine_name] if fine_level else roi_levels)
        if m.mask.trunk == "own":
            parts["mask_trunk"] = trunk()
        parts["mask_head"] = MaskHead(in_channels=m.fpn.channels, num_convs=m.mask.num_convs,
                                      conv_dim=m.mask.conv_dim, num_classes=m.num_classes, norm=m.mask.norm,
                                      boundary_weight=m.mask.boundary_weight)
    if "keypoint" in m.heads:
        k = m.keypoint
        parts["keypoint_pooler"] = pooler("keypoint", k.pooled_size)
        parts["keypoint_head"] = KeypointHead(
            in_channels=m.fpn.channels, num_keypoints=k.num_keypoints, num_convs=k.num_convs, conv_dim=k.conv_dim,
            heatmap_size=k.heatmap_size, offsets=k.offsets, loss=k.loss, sigma=k.sigma,
            offset_radius=k.offset_radius, deform=k.deform, deform_modulated=k.deform_modulated, norm=k.norm,
            decode=k.decode, visibility=k.visibility, visibility_loss_weight=k.visibility_loss_weight,
            visibility_trains_tower=k.visibility_trains_tower)
    loss_weights = {"loss_rpn_objectness": r.loss_weight, "loss_rpn_box": r.loss_weight,
                    "loss_box_cls": m.box.loss_weight, "loss_box_reg": m.box.loss_weight,
                    "loss_mask": m.mask.loss_weight, "loss_keypoint": m.keypoint.loss_weight,
                    "loss_keypoint_offset": m.keypoint.offset_loss_weight}
    return PoseSegModel(transform=transform, backbone=backbone, fpn=fpn, rpn=rpn, sampler=sampler,
                        box_pooler=pooler("box", m.box.pooled_size), box_head=box_head,
                        mask_max_rois=m.mask.max_rois_per_image, keypoint_max_rois=m.keypoint.max_rois_per_image,
                        head_rois=m.roi.head_rois, gt_jitter_copies=m.roi.gt_jitter_copies, gt_jitter=m.roi.gt_jitter,
                        test_flip=m.test_flip, test_flip_masks=m.test_flip_masks,
                        loss_weights=loss_weights, **parts)
