"""Shared by the export tests: models with fixed random weights, and RoI-level parity between two runners."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import poseseg
from poseseg.modeling.postprocess import postprocess
from poseseg.ops import DeformConv2d

SMALL = ["model.input.test_size=320", "model.input.max_size=512", "model.box.detections_per_image=5"]


def build(preset: str, overrides: list[str], *, offsets: bool = False):
    """A model with fixed random weights; ``offsets``: every learned-offset branch made non-zero."""
    torch.manual_seed(0)
    cfg = poseseg.load_config(preset, overrides)
    model = poseseg.build_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # spread the person scores so that detection order never hangs on a rounding difference
        model.box_head.cls_score.weight.normal_(0, 0.2, generator=g)
        if offsets:
            for module in model.modules():
                if isinstance(module, DeformConv2d):
                    module.offset_conv.weight.normal_(0, 0.01, generator=g)
                    module.offset_conv.bias.normal_(0, 0.5, generator=g)
                if hasattr(module, "offset_fc"):  # deformable RoI pooling
                    module.offset_fc.weight.normal_(0, 1e-3, generator=g)
                    module.offset_fc.bias.normal_(0, 0.3, generator=g)
    return model, cfg


def without_checksum(proto) -> None:
    """As a file exported before poseseg wrote checksums."""
    kept = [p for p in proto.metadata_props if p.key != "poseseg_sha256"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)


def rotten_copy(path: Path, out: Path) -> Path:
    """``path`` with one shape constant rotted ([-1, 2] -> [-1, 3]) and no checksum, as an older export damaged
    on disk: it loads, runs on a 200x260 picture and fails on a 425x640 one."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    constants = {n.output[0]: n.attribute[0].t for n in proto.graph.node if n.op_type == "Constant"}
    shape = next(constants[n.input[1]] for n in proto.graph.node if n.op_type == "Reshape"
                 and n.input[1] in constants and numpy_helper.to_array(constants[n.input[1]]).tolist() == [-1, 2])
    shape.raw_data = np.array([-1, 3], np.int64).tobytes()
    without_checksum(proto)
    onnx.save(proto, str(out))
    return out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a >= 0.5, b >= 0.5
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def assert_parity(model, runner, images: list[torch.Tensor]) -> None:
    """``runner``'s results equal ``model``'s (anything with ``predict_rois``: a PoseSegModel or a runtime)."""
    total = 0
    for img in images:
        ref = postprocess(model.predict_rois([img]), keypoint_peaks=True)[0]
        got = postprocess(runner.predict_rois([img]), keypoint_peaks=True)[0]
        assert set(got) == set(ref)
        n = ref["boxes"].shape[0]
        assert got["boxes"].shape[0] == n
        total += n
        torch.testing.assert_close(got["boxes"], ref["boxes"], atol=1e-2, rtol=0)
        torch.testing.assert_close(got["scores"], ref["scores"], atol=1e-3, rtol=0)
        assert torch.equal(got["labels"], ref["labels"])
        if "masks" in ref:
            assert got["masks"].shape == ref["masks"].shape
            ious = [mask_iou(a, b) for a, b in zip(got["masks"], ref["masks"])]
            assert min(ious, default=1.0) > 0.99
        if "keypoints" in ref:
            torch.testing.assert_close(got["keypoints"], ref["keypoints"], atol=0.1, rtol=0)
            torch.testing.assert_close(got["keypoint_scores"], ref["keypoint_scores"], atol=1e-3, rtol=0)
            torch.testing.assert_close(got["keypoint_peaks"], ref["keypoint_peaks"], atol=0.1, rtol=0)
        if "keypoint_visibility" in ref:
            assert torch.equal(got["keypoint_visibility"], ref["keypoint_visibility"])
    assert total > 0, "no detections: the heads' parity went untested"


def exported_dcn_layer(tmp_path: Path, *, modulated: bool, stride: int, offset_groups: int, bias: bool):
    """One DeformConv2d with offsets that sample a few pixels off the grid (some outside the input), an
    input and its ONNX file: ``(layer, x, path)``."""
    from poseseg.export.onnx_trace import trace_to_onnx
    from poseseg.ops import DeformConv2d

    layer = DeformConv2d(8, 6, 3, stride=stride, padding=1, offset_groups=offset_groups, modulated=modulated,
                         bias=bias).eval()
    with torch.no_grad():
        layer.offset_conv.weight.normal_(0, 0.3)
        layer.offset_conv.bias.normal_(0, 1.0)
    x = torch.randn(2, 8, 11, 13)
    path = tmp_path / "dcn.onnx"
    trace_to_onnx(layer, (x,), path, opset=19, input_names=["x"])
    return layer, x, path
