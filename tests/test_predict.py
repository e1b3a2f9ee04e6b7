"""poseseg predict and the Predictor API."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

import poseseg
from poseseg.cli import main


@pytest.fixture
def mixed_folder(synth_data, tmp_path) -> Path:
    """Two good images, a corrupt JPEG and a 4-frame video."""
    cv2 = pytest.importorskip("cv2")
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("000001.jpg", "000002.jpg"):
        (folder / name).write_bytes((synth_data / "val" / name).read_bytes())
    (folder / "broken.jpg").write_bytes((synth_data / "val" / "000003.jpg").read_bytes()[:300])
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 160))
    frame = np.asarray(Image.open(synth_data / "val" / "000004.jpg").convert("RGB"))[:, :, ::-1]
    for _ in range(4):
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return folder


def test_predict_on_a_mixed_folder(trained_checkpoint, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", "--weights", str(trained_checkpoint), str(mixed_folder), "--out", str(out),
                 "--score-thresh", "0.0", "--show-offsets"])
    assert code == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err  # a warning names the unreadable file
    assert (out / "000001_pred.jpg").exists() and (out / "000002_pred.jpg").exists()
    assert (out / "clip_pred.mp4").stat().st_size > 0
    results = json.loads((out / "predictions.json").read_text())
    assert results, "no detections at score 0: the overlay and JSON paths went untested"
    frames = {r["frame"] for r in results if "frame" in r}
    assert frames <= {0, 1, 2, 3} and frames
    gt = {"images": [{"id": i, "width": 160, "height": 160} for i in {r["image_id"] for r in results}],
          "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        loaded = coco.loadRes([{k: v for k, v in r.items() if k in ("image_id", "category_id", "bbox", "score",
                                                                       "segmentation", "keypoints")}
                               for r in results])
    assert len(loaded.anns) == len(results)


def test_predict_fails_when_nothing_can_be_read(trained_checkpoint, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert main(["predict", "--weights", str(trained_checkpoint), str(tmp_path / "bad.jpg"),
                 "--out", str(tmp_path / "o")]) == 1


def test_predictor_gives_the_same_result_for_path_pil_and_array(trained_checkpoint, synth_data):
    predictor = poseseg.Predictor(trained_checkpoint, score_thresh=0.0)
    path = synth_data / "val" / "000001.jpg"
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    a, b, c = predictor.predict(path), predictor.predict(pil), predictor.predict(array)
    assert a.keys() == b.keys() == c.keys() >= {"boxes", "scores", "masks", "keypoints", "keypoint_scores"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    assert a["masks"].dtype == bool and a["masks"].shape[1:] == array.shape[:2]
    assert a["keypoints"].shape[1:] == (17, 3)
    batch = predictor.predict_batch([path, array])  # batched convolutions round differently
    np.testing.assert_allclose(batch[1]["boxes"], c["boxes"], atol=1e-3)


def test_predictor_rejects_bad_arrays_clearly(trained_checkpoint):
    predictor = poseseg.Predictor(trained_checkpoint)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        predictor.predict(np.zeros((10, 10), np.float32))


def test_checkpoint_carries_the_schema(trained_checkpoint):
    predictor = poseseg.Predictor(trained_checkpoint)
    assert predictor.schema["names"][9] == "left_wrist" and len(predictor.schema["sigmas"]) == 17


def test_keypoint_threshold_draws_fewer_keypoints_and_rejects_non_probabilities(trained_checkpoint, synth_data,
                                                                              tmp_path, capsys):
    picture = next((synth_data / "val").iterdir())
    args = ["predict", "--weights", str(trained_checkpoint), str(picture), "--score-thresh", "0"]
    assert main([*args, "--out", str(tmp_path / "all"), "--threshold", "0"]) == 0
    assert main([*args, "--out", str(tmp_path / "none"), "--keypoint-thresh", "1"]) == 0
    drawn = [np.asarray(Image.open(tmp_path / name / f"{picture.stem}_pred.jpg"), dtype=np.int16)
             for name in ("all", "none")]
    assert np.abs(drawn[0] - drawn[1]).max() > 50  # the skeletons drawn at 0 are gone at 1
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--keypoint-thresh", "1.5"]) == 2
    assert "--keypoint-thresh 1.5" in capsys.readouterr().err and not (tmp_path / "bad").exists()
