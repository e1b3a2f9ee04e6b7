"""Which torch.onnx exporter poseseg uses (issue 25), and why: README.md, "Deploy: ONNX, ONNX Runtime and OpenVINO".

The TorchScript-based exporter stays until torch.export can carry torchvision's detection steps on a
data-dependent number of boxes. The last two tests pin exactly what it refuses today (PyTorch 2.14.1,
torchvision 0.29.1): when one of them fails, that construct has become exportable; revisit the note.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
from torchvision.ops import MultiScaleRoIAlign, batched_nms

pytest.importorskip("onnx")

from poseseg.export.deform_symbolic import ExportError  # noqa: E402
from poseseg.export.onnx_trace import trace_to_onnx  # noqa: E402
from poseseg.ops import DeformConv2d  # noqa: E402


def _deprecations(seen: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in seen if issubclass(w.category, DeprecationWarning)]


def test_the_legacy_exporters_deprecation_is_filtered_in_its_one_call_only(tmp_path):
    conv, x = nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trace_to_onnx(conv, (x,), tmp_path / "ours.onnx", opset=17, input_names=["x"])
        inside = _deprecations(seen)
        torch.onnx.export(conv, (x,), str(tmp_path / "direct.onnx"), dynamo=False, opset_version=17)
        outside = _deprecations(seen)[len(inside):]
    assert inside == []
    assert any("legacy TorchScript-based ONNX export" in m for m in outside)  # the same exporter, unfiltered
    assert warnings.filters == filters_before
    assert (tmp_path / "ours.onnx").stat().st_size > 0


def test_what_the_exporter_refuses_is_an_export_error_naming_the_operator(tmp_path):
    layer = DeformConv2d(4, 4, 3, padding=1).eval()  # DeformConv exists from opset 19 only
    with pytest.raises(ExportError, match=r"could not export this model at opset 17: .*torchvision::deform_conv2d"):
        trace_to_onnx(layer, (torch.randn(1, 4, 8, 8),), tmp_path / "dcn.onnx", opset=17, input_names=["x"])


class NmsAfterThreshold(nn.Module):
    """As RPN.filter_proposals and BoxHead.inference: score threshold, then torchvision's batched NMS."""

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # (R, 4), (R,)
        keep = torch.where(scores > 0.5)[0]  # (u,) a data-dependent count
        return batched_nms(boxes[keep], scores[keep], torch.zeros_like(keep), 0.5)


class PoolAfterThreshold(nn.Module):
    """As the mask and keypoint poolers: torchvision's multi-level RoIAlign on the boxes NMS kept."""

    def __init__(self):
        super().__init__()
        self.pool = MultiScaleRoIAlign(["p2", "p3"], 7, 2)

    def forward(self, p2, p3, boxes, scores):  # (1, C, 32, 32), (1, C, 16, 16), (R, 4), (R,)
        keep = torch.where(scores > 0.5)[0]
        return self.pool({"p2": p2, "p3": p3}, [boxes[keep]], [(128, 128)])  # (u, C, 7, 7)


def _boxes(n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=torch.Generator().manual_seed(0)) * 100
    return torch.cat([xy, xy + 20], dim=1)  # (n, 4) xyxy


@pytest.mark.parametrize("module,args,refusal", [
    (NmsAfterThreshold(), (_boxes(1200), torch.linspace(0, 1, 1200)), r"data-dependent expression 4\*u\d+ > 4000"),
    (PoolAfterThreshold(), (torch.rand(1, 4, 32, 32), torch.rand(1, 4, 16, 16), _boxes(50), torch.linspace(0, 1, 50)),
     r"specialized integer from data-dependent expression u\d+"),
], ids=["batched_nms", "MultiScaleRoIAlign"])
def test_torch_export_cannot_carry_torchvision_detection_steps_yet(module, args, refusal):
    """torch.export (under ``torch.onnx.export(dynamo=True)``) refuses a guard on the number of boxes
    (batched_nms: ``boxes.numel() > 4000``; the pooler: ``len(rois)``); the TorchScript tracer records them."""
    with torch.no_grad():
        module(*args)  # eager runs
        with pytest.raises(GuardOnDataDependentSymNode, match=refusal):
            torch.export.export(module, args, strict=False)
