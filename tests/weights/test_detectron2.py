"""Detectron2 model-zoo .pkl and MSRA's caffe2 ImageNet R-50.pkl -> poseseg, with fixtures written in the
sources' real key names and shapes.

Names, from Detectron2's public code (detectron2/checkpoint/c2_model_loading.py, modeling/backbone/resnet.py,
modeling/backbone/fpn.py, proposal_generator/rpn.py, roi_heads/{box_head,fast_rcnn,mask_head,keypoint_head}.py):
  MSRA R-50.pkl (caffe2 blobs; Detectron2 renames them with convert_basic_c2_names):
    conv1_w (64,3,7,7); res_conv1_bn_{s,b} (64,)  - BN folded into an AffineChannel: scale s and shift b only
    res{2..5}_{i}_branch2{a,b,c}_w, ..._bn_{s,b}; res{s}_0_branch1_w/_bn_{s,b} (the projection shortcut)
    stride in branch2a (the 1x1) of the first block of res3..res5; fc1000_{w,b}; optional *_momentum buffers
  Detectron2 model zoo ({"model": {name: ndarray}, "__author__": ...}):
    backbone.bottom_up.stem.conv1.weight / .norm.{weight,bias,running_mean,running_var}
    backbone.bottom_up.res{2..5}.{i}.conv{1,2,3}[.norm].*, .shortcut[.norm].*
    backbone.fpn_lateral{2..5}.{weight,bias} (256,C,1,1); backbone.fpn_output{2..5}.* (256,256,3,3)
    proposal_generator.rpn_head.conv.* (256,256,3,3); .objectness_logits.* (3,256,1,1); .anchor_deltas.* (12,..)
    roi_heads.box_head.fc1.* (1024,12544), fc2.* (1024,1024)
    roi_heads.box_predictor.cls_score.* (C+1,1024) background LAST; bbox_pred.* (4C,1024) no background
    roi_heads.mask_head.mask_fcn{1..4}.* (256,256,3,3), deconv.* (256,256,2,2), predictor.* (C,256,1,1)
    roi_heads.keypoint_head.conv_fcn{1..8}.* (512,in,3,3), score_lowres.* (512,17,4,4)
"""
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poseseg.weights.load import load_model
from poseseg.weights import convert_files

BLOCKS = [3, 4, 6, 3]
MEAN_BGR = [103.53, 116.28, 123.675]


def _rand(rng, *shape, std=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    scale = std if std is not None else np.sqrt(2.0 / fan_in)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


def _resnet_blobs(rng, norm_keys):
    """(name, array) of a caffe2 ResNet-50 trunk, norms named by ``norm_keys(prefix, channels)``."""
    out = {"conv1_w": _rand(rng, 64, 3, 7, 7)}
    out.update(norm_keys("res_conv1_bn", 64))
    in_ch = 64
    for stage, blocks in zip(range(2, 6), BLOCKS):
        width = 64 * 2 ** (stage - 2)
        for i in range(blocks):
            p = f"res{stage}_{i}_"
            for branch, shape in (("branch2a", (width, in_ch, 1, 1)), ("branch2b", (width, width, 3, 3)),
                                  ("branch2c", (4 * width, width, 1, 1))):
                out[p + branch + "_w"] = _rand(rng, *shape)
                out.update(norm_keys(p + branch + "_bn", shape[0]))
            if i == 0:
                out[p + "branch1_w"] = _rand(rng, 4 * width, in_ch, 1, 1)
                out.update(norm_keys(p + "branch1_bn", 4 * width))
            in_ch = 4 * width
    return out


def _affine(rng):
    def keys(prefix, c):
        return {prefix + "_s": rng.uniform(0.3, 0.7, c).astype(np.float32),
                prefix + "_b": rng.uniform(-0.1, 0.1, c).astype(np.float32)}
    return keys


def _msra_r50(rng):
    blobs = _resnet_blobs(rng, _affine(rng))
    blobs["fc1000_w"] = _rand(rng, 1000, 2048)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    blobs["conv1_w_momentum"] = np.zeros((64, 3, 7, 7), np.float32)
    return blobs


def _caffe2_resnet_reference(blobs, image_rgb01):
    """A plain caffe2-style ResNet-50 (stride in the 1x1, AffineChannel norms) on BGR 0..255 - mean."""
    x = image_rgb01.flip(0)[None] * 255 - torch.tensor(MEAN_BGR)[None, :, None, None]
    t = {k: torch.from_numpy(v) for k, v in blobs.items()}

    def affine(y, p):
        return y * t[p + "_s"][None, :, None, None] + t[p + "_b"][None, :, None, None]

    x = F.relu(affine(F.conv2d(x, t["conv1_w"], stride=2, padding=3), "res_conv1_bn"))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = {}
    for stage, blocks in zip(range(2, 6), BLOCKS):
        for i in range(blocks):
            p = f"res{stage}_{i}_"
            stride = 2 if (i == 0 and stage > 2) else 1
            y = F.relu(affine(F.conv2d(x, t[p + "branch2a_w"], stride=stride), p + "branch2a_bn"))
            y = F.relu(affine(F.conv2d(y, t[p + "branch2b_w"], padding=1), p + "branch2b_bn"))
            y = affine(F.conv2d(y, t[p + "branch2c_w"]), p + "branch2c_bn")
            short = affine(F.conv2d(x, t[p + "branch1_w"], stride=stride), p + "branch1_bn") if i == 0 else x
            x = F.relu(y + short)
        outs[f"res{stage}"] = x
    return outs


def test_msra_r50_converts_every_key_and_matches_a_plain_caffe2_resnet(tmp_path):
    blobs = _msra_r50(np.random.default_rng(0))
    src = tmp_path / "R-50.pkl"
    src.write_bytes(pickle.dumps(blobs, protocol=2))
    # the trunk is what this file holds: slim heads keep the test fast
    report = convert_files([src], tmp_path / "r50.pt", preset="paper_regular",
                           overrides=["model.input.test_size=64", "model.input.max_size=64", "model.heads=[box]",
                                      "model.fpn.channels=16", "model.box.fc_dim=16"])
    consumed = {s.split(": ", 1)[1] for s, _ in report.used if "AffineChannel" not in s} | \
        {s.split(": ", 1)[1] for s, _ in report.skipped}
    assert consumed == set(blobs)  # every key used or skipped with a reason
    assert {why for _, why in report.skipped} == {"SGD momentum buffer (optimizer state)",
                                                   "ImageNet classifier layer (detection needs only the trunk)"}
    assert not [k for k in report.left_at_init if k.startswith("backbone.")]  # the whole trunk came from the file
    assert (tmp_path / "r50.pt.report.txt").read_text().startswith(report.summary())

    model, cfg = load_model(tmp_path / "r50.pt")
    assert cfg.model.input.channel_order == "bgr" and cfg.model.backbone.stride_in_1x1
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch, _ = model.transform([image])
        ours = model.backbone(batch.tensors)
        want = _caffe2_resnet_reference(blobs, image)
    for name, value in want.items():
        scale = value.abs().max()
        assert scale > 0
        torch.testing.assert_close(ours[name] / scale, value / scale, atol=1e-5, rtol=0)


def _d2_norm(rng):
    def keys(prefix, c):
        return {prefix + ".weight": rng.uniform(0.5, 1.5, c).astype(np.float32),
                prefix + ".bias": rng.uniform(-0.1, 0.1, c).astype(np.float32),
                prefix + ".running_mean": rng.uniform(-0.1, 0.1, c).astype(np.float32),
                prefix + ".running_var": rng.uniform(0.5, 1.5, c).astype(np.float32)}
    return keys


def _d2_trunk(rng):
    """Detectron2 names for the same trunk, FPN, RPN and box head."""
    c2 = _resnet_blobs(rng, lambda prefix, c: {prefix + "_norm_marker": c})
    out = {}
    norm = _d2_norm(rng)
    for name, value in c2.items():
        if name.endswith("_norm_marker"):
            base = name[: -len("_bn_norm_marker")]
            out.update(norm(_d2_block_name(base) + ".norm", value))
        else:
            out[_d2_block_name(name[: -len("_w")]) + ".weight"] = value
    m = {"backbone.bottom_up." + k: v for k, v in out.items()}
    for level, ch in zip(range(2, 6), (256, 512, 1024, 2048)):
        m[f"backbone.fpn_lateral{level}.weight"] = _rand(rng, 256, ch, 1, 1)
        m[f"backbone.fpn_lateral{level}.bias"] = _rand(rng, 256, std=0.01)
        m[f"backbone.fpn_output{level}.weight"] = _rand(rng, 256, 256, 3, 3)
        m[f"backbone.fpn_output{level}.bias"] = _rand(rng, 256, std=0.01)
    for name, shape in (("conv", (256, 256, 3, 3)), ("objectness_logits", (3, 256, 1, 1)),
                        ("anchor_deltas", (12, 256, 1, 1))):
        m[f"proposal_generator.rpn_head.{name}.weight"] = _rand(rng, *shape)
        m[f"proposal_generator.rpn_head.{name}.bias"] = _rand(rng, shape[0], std=0.01)
    m["roi_heads.box_head.fc1.weight"] = _rand(rng, 1024, 256 * 7 * 7)
    m["roi_heads.box_head.fc2.weight"] = _rand(rng, 1024, 1024)
    m["roi_heads.box_head.fc1.bias"] = m["roi_heads.box_head.fc2.bias"] = np.zeros(1024, np.float32)
    return m


def _d2_block_name(c2_base):
    """res2_0_branch2a -> res2.0.conv1; conv1 -> stem.conv1; res_conv1 -> stem.conv1."""
    if c2_base in ("conv1", "res_conv1"):
        return "stem.conv1"
    stage, block, branch = c2_base.split("_")
    return f"{stage}.{block}." + {"branch1": "shortcut", "branch2a": "conv1", "branch2b": "conv2",
                                  "branch2c": "conv3"}[branch]


def _d2_keypoint_model(rng, trunk):
    m = dict(trunk)
    m["roi_heads.box_predictor.cls_score.weight"] = _rand(rng, 2, 1024)  # [person, background]
    m["roi_heads.box_predictor.cls_score.bias"] = _rand(rng, 2, std=0.1)
    m["roi_heads.box_predictor.bbox_pred.weight"] = _rand(rng, 4, 1024)
    m["roi_heads.box_predictor.bbox_pred.bias"] = _rand(rng, 4, std=0.1)
    for i in range(1, 9):
        m[f"roi_heads.keypoint_head.conv_fcn{i}.weight"] = _rand(rng, 512, 256 if i == 1 else 512, 3, 3)
        m[f"roi_heads.keypoint_head.conv_fcn{i}.bias"] = np.zeros(512, np.float32)
    m["roi_heads.keypoint_head.score_lowres.weight"] = _rand(rng, 512, 17, 4, 4)
    m["roi_heads.keypoint_head.score_lowres.bias"] = np.zeros(17, np.float32)
    return m


def _d2_mask_model(rng, trunk):
    m = dict(trunk)
    m["roi_heads.box_predictor.cls_score.weight"] = _rand(rng, 81, 1024)  # 80 COCO classes + background
    m["roi_heads.box_predictor.cls_score.bias"] = _rand(rng, 81, std=0.1)
    m["roi_heads.box_predictor.bbox_pred.weight"] = _rand(rng, 320, 1024)
    m["roi_heads.box_predictor.bbox_pred.bias"] = _rand(rng, 320, std=0.1)
    for i in range(1, 5):
        m[f"roi_heads.mask_head.mask_fcn{i}.weight"] = _rand(rng, 256, 256, 3, 3)
        m[f"roi_heads.mask_head.mask_fcn{i}.bias"] = np.zeros(256, np.float32)
    m["roi_heads.mask_head.deconv.weight"] = _rand(rng, 256, 256, 2, 2)
    m["roi_heads.mask_head.deconv.bias"] = np.zeros(256, np.float32)
    m["roi_heads.mask_head.predictor.weight"] = _rand(rng, 80, 256, 1, 1)
    m["roi_heads.mask_head.predictor.bias"] = _rand(rng, 80, std=0.1)
    return m


def test_detectron2_keypoint_and_mask_models_merge(tmp_path):
    rng = np.random.default_rng(1)
    # two detectors trained apart: different trunks (the mask head must keep the mask model's)
    kp, mk = _d2_keypoint_model(rng, _d2_trunk(rng)), _d2_mask_model(rng, _d2_trunk(rng))
    paths = []
    for name, model in (("model_final_a6e10b.pkl", kp), ("model_final_f10217.pkl", mk)):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(pickle.dumps({"model": model, "__author__": "Detectron2 Model Zoo"}))
    report = convert_files(paths, tmp_path / "d2.pt")
    used = {s for s, _ in report.used}
    skipped = {s for s, _ in report.skipped}
    assert used | skipped == {f"{p.name}: {k}" for p, m in zip(paths, (kp, mk)) for k in m}
    assert not used & skipped and not report.unexpected
    # only the mask model's RPN and box head are skipped; its ResNet and FPN are the mask head's trunk
    assert {k.split(": ")[1].split(".")[0] for k in skipped} == {"proposal_generator", "roi_heads"}
    assert all("taken from the keypoint model" in why for _, why in report.skipped)
    assert all("offset" in k or "score_calibration" in k for k in report.left_at_init)  # ours only
    assert any("mask head reads the mask model's own ResNet + FPN" in n for n in report.notes)
    assert "mask head reads the mask model's own" in (tmp_path / "d2.pt.report.txt").read_text()

    state = torch.load(tmp_path / "d2.pt", weights_only=True)
    ours, cfg = state["model"], state["config"]["model"]
    assert cfg["input"]["channel_order"] == "bgr" and cfg["input"]["pixel_scale"] == 255.0
    assert cfg["backbone"]["stride_in_1x1"] and cfg["keypoint"]["decode"] == "upsample"
    assert cfg["roi"]["aligned"] and not cfg["rpn"]["round_anchors"]  # ROIAlignV2, Detectron2's exact anchors

    def t(x):
        return torch.from_numpy(x)

    # background is last in Detectron2, first in ours; person is Detectron2's class 0
    assert torch.equal(ours["box_head.cls_score.weight"], t(kp["roi_heads.box_predictor.cls_score.weight"])[[1, 0]])
    assert torch.equal(ours["box_head.bbox_pred.weight"][4:], t(kp["roi_heads.box_predictor.bbox_pred.weight"]))
    assert not ours["box_head.bbox_pred.weight"][:4].any()
    assert torch.equal(ours["mask_head.predictor.weight"][1], t(mk["roi_heads.mask_head.predictor.weight"])[0])
    assert torch.equal(ours["mask_head.tower.convs.3.weight"], t(mk["roi_heads.mask_head.mask_fcn4.weight"]))
    assert torch.equal(ours["keypoint_head.tower.convs.7.weight"], t(kp["roi_heads.keypoint_head.conv_fcn8.weight"]))
    assert torch.equal(ours["keypoint_head.heatmap_deconv.weight"], t(kp["roi_heads.keypoint_head.score_lowres.weight"]))
    assert torch.equal(ours["fpn.inner_blocks.0.0.weight"], t(kp["backbone.fpn_lateral2.weight"]))
    assert torch.equal(ours["fpn.layer_blocks.3.0.bias"], t(kp["backbone.fpn_output5.bias"]))
    assert torch.equal(ours["rpn.head.bbox_pred.weight"], t(kp["proposal_generator.rpn_head.anchor_deltas.weight"]))
    assert torch.equal(ours["backbone.layer3.0.downsample.1.running_var"],
                       t(kp["backbone.bottom_up.res4.0.shortcut.norm.running_var"]))
    assert torch.equal(ours["backbone.layer1.2.bn3.weight"], t(kp["backbone.bottom_up.res2.2.conv3.norm.weight"]))
    assert torch.equal(ours["box_head.fc7.weight"], t(kp["roi_heads.box_head.fc2.weight"]))
    assert cfg["mask"]["trunk"] == "own"
    assert torch.equal(ours["mask_trunk.backbone.layer1.2.bn3.weight"], t(mk["backbone.bottom_up.res2.2.conv3.norm.weight"]))
    assert torch.equal(ours["mask_trunk.fpn.inner_blocks.0.0.weight"], t(mk["backbone.fpn_lateral2.weight"]))
    assert not torch.equal(ours["mask_trunk.fpn.inner_blocks.0.0.weight"], ours["fpn.inner_blocks.0.0.weight"])

    # folded into one trunk on request: the mask model's trunk is skipped, and the report says what that costs
    shared = convert_files(paths, tmp_path / "d2_shared.pt", overrides=["model.mask.trunk=shared"])
    assert not [k for _, k in shared.used if k.startswith("mask_trunk.")]
    assert any("its masks are off" in n for n in shared.notes)


def test_shape_mismatch_names_both_keys(tmp_path):
    model = {"roi_heads.keypoint_head.conv_fcn1.weight": np.zeros((64, 64, 3, 3), np.float32),
             "roi_heads.keypoint_head.conv_fcn3.weight": np.zeros((64, 64, 1, 1), np.float32)}
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"model": model, "__author__": "test"}))
    with pytest.raises(ValueError, match=r"conv_fcn3\.weight' has shape \(64, 64, 1, 1\) but our "
                                         r"'keypoint_head\.tower\.convs\.2\.weight' has shape \(64, 64, 3, 3\)"):
        convert_files([path], tmp_path / "bad.pt", preset="tiny", overrides=["model.keypoint.conv_dim=64"])
