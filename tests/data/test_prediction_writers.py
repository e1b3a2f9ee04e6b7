"""predict --save-format: predictions written for Label Studio, CVAT, YOLO-pose and CSV come back through
`poseseg convert-data` (the importers) as the same people: boxes and keypoints within 0.5 px, the same
visibility 0/1/2, masks at IoU >= 0.95. The people are the COCO sample's 14 real ones (real mask shapes,
real visibility mixes) written as prediction records, and a tiny model's real predictions."""
import csv
import json
from pathlib import Path, PurePath

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from poseseg.cli import main
from poseseg.data.convert import convert
from poseseg.data.convert.writers import SAVE_FORMATS, person_category, write_predictions
from poseseg.data.convert.writers.cvat_xml import write_cvat_xml
from poseseg.data.convert.writers.label_studio import write_label_studio

SAMPLE_JSON = "person_keypoints_sample.json"


def sample_predictions(coco_sample: Path) -> tuple[list[dict], list[dict], dict]:
    """The sample's ground truth as prediction records (RLE masks, keypoint scores) + its images + category."""
    gt = json.loads((coco_sample / SAMPLE_JSON).read_text())
    images = [{**im, "file_name": str(coco_sample / im["file_name"])} for im in gt["images"]]
    size = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    rng = np.random.default_rng(0)
    records = []
    for a in gt["annotations"]:
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], *size[a["image_id"]]))
        rle["counts"] = rle["counts"].decode("ascii")
        records.append({"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9,
                        "segmentation": rle, "keypoints": a["keypoints"],
                        "keypoint_scores": rng.random(17).round(3).tolist()})
    cat = gt["categories"][0]
    category = person_category(cat["keypoints"], [(a - 1, b - 1) for a, b in cat["skeleton"]])
    return records, images, category


def decoded(segm, h: int, w: int) -> np.ndarray:
    if not segm:  # an empty predicted mask is written as no mask and read back as []
        return np.zeros((h, w), bool)
    if isinstance(segm, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segm, h, w))).astype(bool)
    counts = segm["counts"]
    return mask_utils.decode({"size": segm["size"], "counts": counts.encode() if isinstance(counts, str)
                              else counts}).astype(bool)


def round_trip(records: list[dict], images: list[dict], back: dict, *, masks: bool = True) -> dict:
    """Compare the records with the COCO dataset an importer made of them; the worst errors over all people."""
    by_name = {PurePath(im["file_name"]).name: im for im in back["images"]}
    worst = {"box_px": 0.0, "keypoint_px": 0.0, "mask_iou": 1.0, "people": 0, "visibility": set()}
    for im in images:
        mine = [r for r in records if r["image_id"] == im["id"]]
        got = [a for a in back["annotations"] if a["image_id"] == by_name[PurePath(im["file_name"]).name]["id"]]
        assert len(got) == len(mine), f"{im['file_name']}: {len(mine)} people written, {len(got)} read back"
        for r, a in zip(mine, got):
            worst["box_px"] = max(worst["box_px"], float(np.abs(np.subtract(r["bbox"], a["bbox"])).max()))
            kr, ka = np.asarray(r["keypoints"]).reshape(-1, 3), np.asarray(a["keypoints"]).reshape(-1, 3)
            assert kr[:, 2].tolist() == ka[:, 2].tolist(), f"visibility changed in {im['file_name']}"
            labelled = kr[:, 2] > 0
            if labelled.any():
                error = float(np.abs(kr[labelled, :2] - ka[labelled, :2]).max())
                worst["keypoint_px"] = max(worst["keypoint_px"], error)
            worst["visibility"] |= set(kr[:, 2].astype(int).tolist())
            if masks:
                m1, m2 = decoded(r["segmentation"], im["height"], im["width"]), decoded(a["segmentation"], im["height"],
                                                                                      im["width"])
                union = (m1 | m2).sum()
                iou = (m1 & m2).sum() / union if union else 1.0  # both empty: the same mask
                worst["mask_iou"] = min(worst["mask_iou"], iou)
            worst["people"] += 1
    return worst


def assert_faithful(worst: dict, people: int, masks: bool = True) -> None:
    assert worst["people"] == people
    assert worst["box_px"] <= 0.5 and worst["keypoint_px"] <= 0.5, worst
    if masks:
        assert worst["mask_iou"] >= 0.95, worst


@pytest.fixture
def sample(coco_sample):
    records, images, category = sample_predictions(coco_sample)
    assert {v for r in records for v in r["keypoints"][2::3]} == {0, 1, 2}  # the sample mixes all three
    return records, images, category


@pytest.mark.parametrize("masks", ["brush", "polygon"])
def test_label_studio_round_trip(sample, tmp_path, masks):
    records, images, category = sample
    tasks, config = write_label_studio(records, images, tmp_path / "tasks.json", category=category, masks=masks)
    assert "<KeyPointLabels" in config.read_text() and 'perRegion="true"' in config.read_text()
    written = json.loads(tasks.read_text())
    assert len(written) == 4 and all("predictions" in t and "annotations" not in t for t in written)
    out, notes = convert("label-studio", tasks, tmp_path / "back.json")
    assert not notes[1:], notes  # only the summary line: nothing ignored or dropped
    assert_faithful(round_trip(records, images, json.loads(out.read_text())), people=14)


@pytest.mark.parametrize("masks", ["polygon", "mask"])
def test_cvat_round_trip(sample, tmp_path, masks):
    records, images, category = sample
    xml = write_cvat_xml(records, images, tmp_path / "cvat.xml", category=category, masks=masks)
    assert xml.read_text().count("<skeleton ") == 14 and 'outside="1"' in xml.read_text()  # v=0: outside
    back = tmp_path / "back.json"
    assert main(["convert-data", "cvat-xml", str(xml), "--out", str(back)]) == 0
    data = json.loads(back.read_text())
    assert data["categories"][0]["skeleton"] == category["skeleton"]  # edges survive the <svg>
    assert_faithful(round_trip(records, images, data), people=14)


def test_yolo_pose_round_trip(sample, tmp_path):
    records, images, category = sample
    [data_yaml] = write_predictions("yolo-pose", records, images, tmp_path / "out", category=category)
    back = tmp_path / "back.json"
    assert main(["convert-data", "yolo-pose", str(data_yaml), "--out", str(back)]) == 0
    data = json.loads(back.read_text())
    assert data["categories"][0]["keypoints"] == category["keypoints"]
    assert_faithful(round_trip(records, images, data, masks=False), people=14, masks=False)  # YOLO-pose: no masks


def test_csv_has_a_row_per_keypoint(sample, tmp_path):
    records, images, category = sample
    [path] = write_predictions("csv", records, images, tmp_path, category=category)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 14 * 17
    for r, (person, name) in zip(rows, [(p, n) for p in records for n in category["keypoints"]]):
        k = category["keypoints"].index(name)
        x, y, v = person["keypoints"][3 * k:3 * k + 3]
        assert r["keypoint"] == name and int(r["visibility"]) == v
        assert float(r["keypoint_score"]) == pytest.approx(person["keypoint_scores"][k], abs=1e-4)
        assert np.allclose([float(r[c]) for c in ("box_x", "box_y", "box_w", "box_h")], person["bbox"], atol=5e-3)
        if v:
            assert abs(float(r["x"]) - x) <= 5e-3 and abs(float(r["y"]) - y) <= 5e-3
        else:
            assert r["x"] == r["y"] == ""  # not labelled: no position
    assert {r["person"] for r in rows if r["image_id"] == "197388"} == {"0", "1", "2", "3", "4"}


def test_csv_takes_video_frames_from_their_records(tmp_path):
    """Video frames have no image entry: the record's file_name, frame and track_id fill the row."""
    frame = {"image_id": 100_003, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, "file_name": "clip.mp4",
             "frame": 3, "track_id": 7, "keypoints": [5, 6, 1, 0, 0, 0], "keypoint_scores": [0.8, 0.1]}
    path = write_predictions("csv", [frame], [], tmp_path, category=person_category(["head", "tail"]))[0]
    rows = [dict(r) for r in csv.DictReader(path.open())]
    assert [(r["image"], r["frame"], r["track_id"], r["keypoint"], r["x"], r["visibility"]) for r in rows] == [
        ("clip.mp4", "3", "7", "head", "5.000", "1"), ("clip.mp4", "3", "7", "tail", "", "0")]


def test_writers_never_overwrite(sample, tmp_path):
    records, images, category = sample
    for fmt in SAVE_FORMATS:
        write_predictions(fmt, records, images, tmp_path, category=category)
        with pytest.raises(FileExistsError, match="does not overwrite"):
            write_predictions(fmt, records, images, tmp_path, category=category)


def test_predict_save_format_round_trips_a_models_predictions(trained_checkpoint, synth_data, tmp_path, capsys):
    """The test model's real predictions through predict --save-format and back through
    convert-data, per format; predict's --out convention (a used folder -> a numbered new one) holds. After 4
    training steps its masks are all empty, so this checks the empty-mask path (no region written, none read
    back); mask shapes are measured on the COCO sample above."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("000001.jpg", "000002.jpg"):
        (folder / name).write_bytes((synth_data / "val" / name).read_bytes())
    importer = {"labelstudio": ("label-studio", "labelstudio_tasks.json"), "cvat": ("cvat-xml", "cvat_annotations.xml"),
                "yolo-pose": ("yolo-pose", "yolo_pose/data.yaml")}
    for fmt, (reader, name) in importer.items():
        out = tmp_path / fmt
        args = ["predict", "--weights", str(trained_checkpoint), str(folder), "--out", str(out), "--score-thresh",
                "0.3", "--save-format", fmt]
        assert main(args) == 0
        records = json.loads((out / "predictions.json").read_text())
        assert records, "no people at score 0.3: the round trip would test nothing"
        # a model without a visibility head: predictions.json keeps the results convention (v = 1), the tool
        # gets plain visible points and the user a note, never a made-up "occluded" on every keypoint
        assert all(v == 1 for r in records for v in r["keypoints"][2::3])
        assert "predicts no keypoint visibility" in capsys.readouterr().err
        records = [{**r, "keypoints": [v if i % 3 != 2 else 2 for i, v in enumerate(r["keypoints"])]}
                   for r in records]
        back = tmp_path / f"{fmt}.json"
        assert main(["convert-data", reader, str(out / name), "--out", str(back)]) == 0
        images = [{"id": i + 1, "file_name": str(folder / n), "width": 160, "height": 160}
                  for i, n in enumerate(("000001.jpg", "000002.jpg"))]
        assert_faithful(round_trip(records, images, json.loads(back.read_text()), masks=fmt != "yolo-pose"),
                        people=len(records), masks=fmt != "yolo-pose")
    assert main(args) == 0  # the same --out again: a new folder, the first one's files untouched
    assert (tmp_path / "yolo-pose2" / "yolo_pose" / "data.yaml").is_file()


def test_predict_save_format_refuses_what_it_cannot_write(trained_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--weights", str(trained_checkpoint), "x.jpg", "--save-format", "via"])
    err = capsys.readouterr().err
    assert "invalid choice: 'via'" in err and all(f in err for f in SAVE_FORMATS)
    (tmp_path / "clip.mp4").write_bytes(b"")
    code = main(["predict", "--weights", str(trained_checkpoint), str(tmp_path / "clip.mp4"), "--save-format", "cvat",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "clip.mp4 is a video" in err and "coco or csv" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before the model loaded and the folder was made
