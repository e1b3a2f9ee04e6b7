"""OpenVINO (issue 25): an exported .onnx file run by OpenVINO on the CPU gives ONNX Runtime's results, and
``--runtime`` picks what runs the weights (predict, eval, serve, Predictor)."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from export_helpers import SMALL, assert_parity, build, exported_dcn_layer, rotten_copy, without_checksum

from poseseg.cli import main
from poseseg.export.deform_symbolic import ExportError
from poseseg.predictor import Predictor, load_runner, resolve_runtime

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="OpenVINO is not installed: pip install 'poseseg[openvino]'")
needs_export = pytest.mark.skipif(importlib.util.find_spec("onnx") is None or
                                  importlib.util.find_spec("onnxruntime") is None,
                                  reason="ONNX export needs the export extra: pip install 'poseseg[export]'")
pytestmark = needs_export


@pytest.fixture(scope="module")
def deformable(tmp_path_factory):
    """A tiny model with every deformable part (DCN v2 in res4-res5 and the keypoint head, deformable RoI
    pooling, non-zero offsets) and a visibility head, exported with any image size."""
    from poseseg.export.onnx_export import export_onnx

    model, cfg = build("tiny", SMALL + ["model.backbone.deform_stages=[4,5]", "model.keypoint.deform=true",
                                        "model.roi.deform_pool=[mask,keypoint]", "model.keypoint.visibility=true"],
                       offsets=True)
    report = export_onnx(model, tmp_path_factory.mktemp("deformable") / "tiny.onnx", config=cfg.to_dict())
    assert report.op_counts["DeformConv"] == 8 + 4  # res4, res5 (2 blocks x 2 convs) + 4 in the keypoint head
    return report.path


@pytest.fixture(scope="module")
def checkpoint_17(tmp_path_factory):
    """A tiny COCO-17 checkpoint with fixed random weights and its export."""
    from poseseg.export.onnx_export import export_checkpoint
    from poseseg.keypoint_schema import coco_person_schema
    from poseseg.weights.checkpoint_file import save_checkpoint

    model, cfg = build("tiny", SMALL)
    folder = tmp_path_factory.mktemp("ckpt17")
    save_checkpoint(folder / "k17.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                        "keypoint_schema": coco_person_schema().to_dict()})
    return folder / "k17.pt", export_checkpoint(folder / "k17.pt", folder / "k17.onnx").path


# ----------------------------------------------------------------------------- the graph in OpenVINO


@needs_openvino
@pytest.mark.parametrize("modulated,stride,offset_groups,bias", [(True, 1, 1, False), (False, 2, 2, True)])
def test_deform_conv_maps_onto_openvino_as_torchvision_computes_it(tmp_path, modulated, stride, offset_groups,
                                                                   bias):
    """ONNX DeformConv -> OpenVINO DeformableConvolution, against torchvision, with offsets that sample up to a
    few pixels outside the input (where a clamped border would differ from the zeros ONNX reads there)."""
    import onnx
    import openvino as ov
    import torchvision

    from poseseg.export.openvino_model import read_onnx

    layer, x, path = exported_dcn_layer(tmp_path, modulated=modulated, stride=stride, offset_groups=offset_groups,
                                        bias=bias)
    compiled = ov.Core().compile_model(read_onnx(onnx.load(str(path))), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = torch.from_numpy(compiled({"x": x.numpy()})[0])
    with torch.no_grad():
        offset, mask = layer.offsets(x)
        assert offset.abs().mean() > 0.3
        theirs = torchvision.ops.deform_conv2d(x, offset, layer.weight, layer.bias, stride=stride, padding=1,
                                               mask=mask)
    torch.testing.assert_close(got, theirs, atol=1e-4, rtol=1e-4)


@needs_openvino
def test_an_empty_constant_stays_empty():
    """The NMS branch for "no boxes left" returns an empty constant, which OpenVINO's ONNX frontend reads as [0]."""
    import onnxruntime
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    from poseseg.export.openvino_model import empty_constants_as_shapes, read_onnx

    empty = helper.make_node("Constant", [], ["none"], value=numpy_helper.from_array(np.zeros((0, 4), np.float32)))
    then = helper.make_graph([empty], "then", [], [helper.make_tensor_value_info("none", TensorProto.FLOAT, [0, 4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["same"])], "else", [],
                              [helper.make_tensor_value_info("same", TensorProto.FLOAT, ["n", 4])])
    nodes = [helper.make_node("Size", ["x"], ["size"]),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Equal", ["size", "zero"], ["is_empty"]),
             helper.make_node("If", ["is_empty"], ["y"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = onnxruntime.InferenceSession(proto.SerializeToString())
    compiled = ov.Core().compile_model(read_onnx(proto), "CPU")
    assert empty_constants_as_shapes(proto.graph) == 0  # read_onnx rewrote the one in the branch
    for x in (np.zeros((0, 4), np.float32), np.arange(8, dtype=np.float32).reshape(2, 4)):
        reference = session.run(None, {"x": x})[0]
        np.testing.assert_array_equal(compiled({"x": x})[0], reference)
        assert compiled({"x": x})[0].shape == reference.shape == x.shape


@needs_openvino
def test_openvino_equals_onnx_runtime_on_every_deformable_part_and_any_size(deformable, coco_images):
    from poseseg.export.openvino_model import OpenVinoModel
    from poseseg.export.ort_model import OrtModel

    ort, ov = OrtModel(deformable), OpenVinoModel(deformable, threads=1)
    assert ov.heads == ort.heads == ["box", "mask", "keypoint"] and ov.config_dict == ort.config_dict
    assert ov.device_name == "openvino CPU" and ov.input_size is None
    raw_ort, raw_ov = ort._run_one(coco_images[0]), ov._run_one(coco_images[0])  # each output, as the graph gives it
    assert list(raw_ov) == list(raw_ort) == ort.output_names
    for name, value in raw_ort.items():
        assert raw_ov[name].dtype == value.dtype and raw_ov[name].shape == value.shape, name
    assert_parity(ort, ov, coco_images)  # 4 different image sizes, one compiled model


@needs_openvino
def test_no_detections_and_a_fixed_size(tmp_path):
    from poseseg.export.onnx_export import export_onnx
    from poseseg.export.openvino_model import OpenVinoModel

    model, _ = build("tiny", ["model.box.score_thresh=0.999"])
    pred = OpenVinoModel(export_onnx(model, tmp_path / "none.onnx").path)([torch.rand(3, 200, 260)])[0]
    assert pred["boxes"].shape == (0, 4) and pred["masks"].shape == (0, 1, 200, 260)
    assert pred["keypoints"].shape == (0, 17, 3)

    model, _ = build("tiny", [])
    runner = OpenVinoModel(export_onnx(model, tmp_path / "fixed.onnx", size=(240, 320)).path)
    assert runner.input_size == (240, 320)
    image = torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model([image])[0]
    torch.testing.assert_close(runner([image])[0]["boxes"], ref["boxes"], atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match=r"exported for 240x320 images, got 200x300.*export without --size"):
        runner([torch.rand(3, 200, 300)])


@needs_openvino
def test_damaged_foreign_and_older_files_are_refused_by_name(checkpoint_17, tmp_path):
    import onnx

    from poseseg.export.onnx_trace import trace_to_onnx
    from poseseg.export.openvino_model import OpenVinoModel

    good = checkpoint_17[1]
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x40
    (tmp_path / "bitrot.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"bitrot\.onnx is corrupt: its bytes changed after .*re-export"):
        OpenVinoModel(tmp_path / "bitrot.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    with pytest.raises(ExportError, match=r"broken\.onnx is not a loadable ONNX model.*poseseg export"):
        OpenVinoModel(tmp_path / "broken.onnx")
    foreign = tmp_path / "conv.onnx"
    trace_to_onnx(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),), foreign, opset=17, input_names=["x"])
    with pytest.raises(ExportError, match="not a poseseg export"):
        OpenVinoModel(foreign)
    proto = onnx.load(str(good))
    next(p for p in proto.metadata_props if p.key == "poseseg_format").value = "poseseg-onnx-1"
    without_checksum(proto)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(ExportError, match=r"old\.onnx was exported by another poseseg version.*re-export"):
        OpenVinoModel(tmp_path / "old.onnx")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OpenVinoModel(tmp_path / "missing.onnx")


@needs_openvino
def test_a_run_that_fails_names_the_file_and_openvinos_reason(checkpoint_17, tmp_path):
    from poseseg.export.exported_model import ModelRunError
    from poseseg.export.openvino_model import OpenVinoModel

    runner = OpenVinoModel(rotten_copy(checkpoint_17[1], tmp_path / "rotten.onnx"))
    assert runner([torch.rand(3, 200, 260)])[0]["boxes"].shape[1] == 4  # this size still runs
    with pytest.raises(ModelRunError) as failure:
        runner([torch.rand(3, 425, 640)])
    message = str(failure.value)
    assert message.startswith(f"{tmp_path / 'rotten.onnx'} could not be run on a 425x640 picture (")
    assert "re-export" in message
    assert "Exception from" not in message and ".cpp:" not in message  # OpenVINO's reason, not its C++ locations


# ----------------------------------------------------------------------------- --runtime


def test_a_runtime_that_cannot_run_the_weights_says_what_to_do(checkpoint_17, monkeypatch):
    ckpt, exported = checkpoint_17
    assert resolve_runtime(ckpt) == "torch" and resolve_runtime(exported) == "onnxruntime"
    assert resolve_runtime("torchvision-coco") == "torch" and resolve_runtime(exported, "openvino") == "openvino"
    with pytest.raises(ValueError, match=rf"--runtime openvino runs an exported \.onnx file.*`poseseg export "
                                         rf"--weights {ckpt} --out k17\.onnx`"):
        Predictor(ckpt, runtime="openvino")
    with pytest.raises(ValueError, match=r"--runtime torch runs checkpoints.*--runtime onnxruntime or openvino"):
        load_runner(exported, runtime="torch")
    with pytest.raises(ValueError, match="--runtime tensorrt: unknown runtime; choose one of auto, torch"):
        load_runner(exported, runtime="tensorrt")
    with pytest.raises(ValueError, match="--runtime openvino runs on the CPU, not --device cuda.*--device cpu"):
        load_runner(exported, runtime="openvino", device="cuda")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as without the package: import openvino fails
    with pytest.raises(ExportError, match=r"needs the openvino package: pip install 'poseseg\[openvino\]'"):
        Predictor(exported, runtime="openvino")


@needs_openvino
def test_cli_predict_and_eval_with_openvino_match_onnx_runtime(checkpoint_17, coco_sample, tmp_path, capsys):
    ckpt, exported = checkpoint_17
    image = coco_sample / "000000000785.jpg"
    results = {}
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / runtime
        assert main(["predict", "--weights", str(exported), "--runtime", runtime, str(image), "--out", str(out),
                     "--score-thresh", "0"]) == 0
        results[runtime] = json.loads((out / "predictions.json").read_text())
    assert len(results["openvino"]) == len(results["onnxruntime"]) > 0
    for a, b in zip(results["openvino"], results["onnxruntime"]):
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-2)
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=0.1)
        assert abs(a["score"] - b["score"]) < 1e-3 and a["segmentation"] == b["segmentation"]

    data = ["--data", str(coco_sample / "person_keypoints_sample.json"), "--images", str(coco_sample),
            "--backend", "pycocotools"]
    metrics = {}
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / f"eval_{runtime}"
        assert main(["eval", "--weights", str(exported), "--runtime", runtime, *data, "--out", str(out)]) == 0
        metrics[runtime] = json.loads((out / "metrics.json").read_text())
    for iou_type in ("bbox", "segm", "keypoints"):
        for name, value in metrics["onnxruntime"][iou_type].items():
            assert metrics["openvino"][iou_type][name] == pytest.approx(value, abs=1e-3), (iou_type, name)

    capsys.readouterr()
    assert main(["predict", "--weights", str(ckpt), "--runtime", "openvino", str(image), "--out",
                 str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert f"poseseg export --weights {ckpt}" in err and "Traceback" not in err
    assert not (tmp_path / "refused").exists()
