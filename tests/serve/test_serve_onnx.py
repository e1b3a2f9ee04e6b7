"""`poseseg serve --weights model.onnx` (issue 26): an exported file is served through ONNX Runtime, and what it
cannot do is refused before the server prints its URL."""
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from poseseg import Predictor
from poseseg.cli import main
from poseseg.data.image_io import load_image_rgb
from poseseg.keypoint_schema import COCO_KEYPOINT_NAMES
from poseseg.serve import create_app

from serve_helpers import assert_matches, png_bytes

pytest.importorskip("onnx", reason="ONNX export needs the export extra: pip install -e '.[export]'")
pytest.importorskip("onnxruntime", reason="running an .onnx file needs the export extra: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def exported(trained_checkpoint, tmp_path_factory):
    """The serve tests' trained checkpoint, exported as `poseseg export` does (any image size)."""
    from poseseg.export.onnx_export import export_checkpoint

    return export_checkpoint(trained_checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx").path


def test_the_app_serves_an_exported_onnx_file(exported, photo_bytes, photo_path):
    predictor = Predictor(exported, device="cpu", score_thresh=0.0)  # what `poseseg serve` builds
    with TestClient(create_app(predictor)) as client:
        info = client.get("/info").json()
        assert info["model"]["format"] == "onnx" and info["model"]["heads"] == ["box", "mask", "keypoint"]
        assert info["model"]["input_size"] is None and info["device"] == "onnxruntime CPUExecutionProvider"
        assert info["outputs"] == ["boxes", "masks", "keypoints"]
        assert info["keypoint_schema"]["names"] == COCO_KEYPOINT_NAMES
        assert info["model"]["backbone"].startswith("ResNet-")  # the page shows it: the config came with the file

        body = client.post("/predict?score_thresh=0", files={"image": ("785.jpg", photo_bytes, "image/jpeg")}).json()
        assert body["image"] == {"name": "785.jpg", "width": 640, "height": 425}
        assert_matches(body["people"], predictor.predict(load_image_rgb(photo_path)))
        coco = client.post("/predict?score_thresh=0&format=coco", content=photo_bytes).json()
        assert len(coco["results"]) == len(body["people"]) and coco["categories"][0]["keypoints"]
        overlay = client.post("/predict/overlay", content=photo_bytes)
        assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"


def test_a_fixed_size_export_answers_other_sizes_with_a_400(trained_checkpoint, photo_bytes, tmp_path):
    from poseseg.export.onnx_export import export_checkpoint

    fixed = export_checkpoint(trained_checkpoint, tmp_path / "fixed.onnx", size=(425, 640)).path
    with TestClient(create_app(Predictor(fixed, device="cpu", score_thresh=0.0))) as client:
        assert client.get("/info").json()["model"]["input_size"] == [425, 640]
        assert client.post("/predict?score_thresh=0", content=photo_bytes).status_code == 200  # 640x425: its size
        small = png_bytes(Image.new("RGB", (320, 240), "white"))
        response = client.post("/predict", files={"image": ("small.png", small, "image/png")})
        assert response.status_code == 400 and response.json()["error"] == "wrong_size"
        assert "small.png" in response.json()["message"] and "640x425" in response.json()["message"]


@pytest.mark.parametrize("flags, words", [
    (["--config", "tiny"], ["exported ONNX graph", "--config"]),
    (["--device", "cuda"], ["no CUDA provider", "--device cpu"]),
], ids=["config", "cuda"])
def test_what_an_onnx_file_cannot_do_is_refused_before_the_url(exported, capsys, flags, words):
    import onnxruntime

    if "cuda" in flags and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: --device cuda is servable here")
    assert main(["serve", "--weights", str(exported), *flags]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert "http://" not in err  # no banner: the user never sees a URL that does not serve


def test_the_app_serves_it_through_openvino(exported, trained_checkpoint, photo_bytes, photo_path, capsys):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'poseseg[openvino]'")
    predictor = Predictor(exported, device="cpu", score_thresh=0.0, runtime="openvino")
    with TestClient(create_app(predictor)) as client:
        info = client.get("/info").json()
        assert info["model"]["format"] == "onnx" and info["device"] == "openvino CPU"
        body = client.post("/predict?score_thresh=0", files={"image": ("785.jpg", photo_bytes, "image/jpeg")}).json()
        assert_matches(body["people"], predictor.predict(load_image_rgb(photo_path)))
    # a checkpoint is not an .onnx file: refused with the export command, before the URL
    assert main(["serve", "--weights", str(trained_checkpoint), "--runtime", "openvino"]) == 2
    err = capsys.readouterr().err
    assert "poseseg export --weights" in err and "http://" not in err

