"""convert-data: CVAT (XML 1.1 and COCO Keypoints 1.0), Label Studio and YOLO-pose exports become COCO that
check-data passes, with each person's keypoints and mask kept together; COCO -> YOLO-pose -> COCO round-trips."""
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from poseseg.cli import main
from poseseg.data.check import summarize_dataset
from poseseg.data.convert import ConvertError, convert
from poseseg.data.convert.cvat_xml import cvat_mask_to_rle

FIXTURES = Path(__file__).parents[1] / "fixtures" / "convert"
FIVE = ["data.oks_sigmas=[0.026,0.079,0.079,0.107,0.107]", "model.keypoint.num_keypoints=5"]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (200, 160), (90, 90, 90)).save(folder / "people1.jpg")
    return folder


def passes_check_data(json_path, images, capsys):
    assert main(["check-data", "--data", str(json_path), "--images", str(images), *FIVE]) == 0, capsys.readouterr().out
    report = summarize_dataset(json_path, images, oks_sigmas=[0.026, 0.079, 0.079, 0.107, 0.107])
    # a person without a mask (keypoints or a box only) means the mask AP will be skipped, and check-data says so
    unmasked = any(not a.get("segmentation") for a in json.loads(Path(json_path).read_text())["annotations"])
    assert {w["code"] for w in report["eval_warnings"]} == ({"no_segmentation"} if unmasked else set())


def mask_holds(ann, h, w, points) -> bool:
    segm = ann["segmentation"]
    rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w)) if isinstance(segm, list) else \
        {"size": segm["size"], "counts": segm["counts"].encode("ascii")}
    m = mask_utils.decode(rle)
    return all(m[int(y), int(x)] for x, y in points)


def test_cvat_mask_runs_follow_the_documented_example():
    # the docs' example mask: 13 x 15 pixels, runs starting with the background, row by row
    runs = "3, 5, 7, 7, 5, 9, 3, 11, 2, 11, 2, 12, 1, 12, 1, 26, 1, 12, 1, 12, 2, 11, 3, 9, 5, 7, 7, 5, 3"
    rle = cvat_mask_to_rle(runs, 707, 888, 13, 15, 1200, 1600)
    m = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    box = m[888:903, 707:720]
    ones = sum(int(v) for v in runs.split(",")[1::2])
    assert box[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0] and m.sum() == box.sum() == ones
    assert all(np.count_nonzero(np.diff(np.r_[0, row, 0])) == 2 for row in box)  # one brush blob: a run per row
    with pytest.raises(ConvertError, match="cover"):
        cvat_mask_to_rle("3, 5", 0, 0, 13, 15, 100, 100)


def test_cvat_xml(images, tmp_path, capsys):
    out, _ = convert("cvat-xml", FIXTURES / "cvat_images_1_1.xml", tmp_path / "coco.json")
    data = json.loads(out.read_text())
    cat = data["categories"][0]
    assert cat["keypoints"] == ["nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    assert sorted(cat["skeleton"]) == [[1, 2], [1, 3], [2, 4], [3, 5]]
    first, second = data["annotations"]
    assert first["keypoints"][6:9] == [32.0, 45.0, 1] and first["keypoints"][12:15] == [0, 0, 0]  # occluded, outside
    assert first["num_keypoints"] == 4 and isinstance(first["segmentation"], list)  # grouped with its polygon
    assert isinstance(second["segmentation"], dict) and second["area"] == 3200  # the mask that holds its points
    assert mask_holds(second, 160, 200, [(140.5, 30.5), (148, 90)])
    passes_check_data(out, images, capsys)


def test_cvat_coco_keypoints(images, tmp_path, capsys):
    out, notes = convert("cvat-coco", FIXTURES / "cvat_coco_keypoints.json", tmp_path / "coco.json")
    data = json.loads(out.read_text())
    assert [a["id"] for a in data["annotations"]] == [1, 2] and len(data["categories"]) == 1  # the bag is gone
    assert data["annotations"][0]["area"] == pytest.approx(7150, rel=0.05)  # 0 -> the polygon's area
    assert data["annotations"][0]["num_keypoints"] == 4 and data["annotations"][1]["area"] == pytest.approx(1190)
    passes_check_data(out, images, capsys)


def test_label_studio(images, tmp_path, capsys):
    out, notes = convert("label-studio", FIXTURES / "label_studio_export.json", tmp_path / "coco.json")
    data = json.loads(out.read_text())
    assert data["images"][0]["file_name"] == "people1.jpg" and data["images"][0]["width"] == 200
    names = data["categories"][0]["keypoints"]
    assert names == ["nose", "left_shoulder", "right_shoulder", "left_hip"]
    first, second = data["annotations"]
    kp1 = np.asarray(first["keypoints"]).reshape(-1, 3)
    assert kp1[:3, 2].tolist() == [2, 2, 2] and kp1[3, 2] == 0  # parentID, parentID, relation
    assert mask_holds(first, 160, 200, kp1[:3, :2])
    kp2 = np.asarray(second["keypoints"]).reshape(-1, 3)
    assert kp2[0].tolist() == pytest.approx([140, 30, 2]) and kp2[3].tolist() == pytest.approx([148, 88, 2])
    assert second["bbox"] == pytest.approx([120, 20, 40, 80])
    sigmas = ["data.oks_sigmas=[0.026,0.079,0.079,0.107]", "model.keypoint.num_keypoints=4"]
    assert main(["check-data", "--data", str(out), "--images", str(images), *sigmas]) == 0


def test_coco_to_yolo_pose_and_back(coco_sample, tmp_path, capsys):
    coco_json = coco_sample / "person_keypoints_sample.json"
    assert main(["convert-data", "to-yolo-pose", str(coco_json), "--images", str(coco_sample),
                 "--out", str(tmp_path / "yolo"), "--split", "val"]) == 0
    spec = (tmp_path / "yolo" / "data.yaml").read_text()
    assert "kpt_shape:\n- 17\n- 3" in spec and "flip_idx" in spec
    label = next((tmp_path / "yolo" / "labels" / "val").glob("*.txt")).read_text().splitlines()[0].split()
    assert len(label) == 5 + 17 * 3 and all(0 <= float(v) <= 2 for v in label[1:])
    back = tmp_path / "back.json"
    assert main(["convert-data", "yolo-pose", str(tmp_path / "yolo" / "data.yaml"), "--split", "val",
                 "--out", str(back)]) == 0
    original, again = json.loads(coco_json.read_text()), json.loads(back.read_text())
    want = {im["file_name"]: [a for a in original["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"]]
            for im in original["images"]}
    for im in again["images"]:
        got = [a for a in again["annotations"] if a["image_id"] == im["id"]]
        assert len(got) == len(want[im["file_name"]])
        for a, b in zip(got, want[im["file_name"]]):
            assert a["bbox"] == pytest.approx(b["bbox"], abs=0.01)
            ka, kb = np.asarray(a["keypoints"]).reshape(-1, 3), np.asarray(b["keypoints"]).reshape(-1, 3)
            assert np.array_equal(ka[:, 2], kb[:, 2]) and np.allclose(ka[:, :2], kb[:, :2], atol=0.01)
    report = summarize_dataset(back, tmp_path / "yolo" / "images" / "val")
    codes = {w["code"] for w in report["eval_warnings"]}  # YOLO-pose carries no masks
    assert report["ok"] and "no_segmentation" in codes and codes <= {"area_inconsistent", "no_segmentation"}


def test_yolo_pose_polygons_join_their_person(tmp_path):
    root = tmp_path / "ds"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (100, 50), 0).save(root / "images" / "train" / "a.jpg")
    kps = " ".join(["0.5 0.5 2"] * 17)
    (root / "labels" / "train" / "a.txt").write_text(f"0 0.5 0.5 0.2 0.8 {kps}\n0 0.1 0.5 0.1 0.2 {' '.join(['0 0 0'] * 17)}\n")
    (root / "segments").mkdir()
    (root / "segments" / "a.txt").write_text("0 0.4 0.1 0.6 0.1 0.6 0.9 0.4 0.9\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nkpt_shape: [17, 3]\nnames: {0: person}\n")
    out, _ = convert("yolo-pose", root / "data.yaml", tmp_path / "c.json", segments=root / "segments")
    first, second = json.loads(out.read_text())["annotations"]
    assert first["segmentation"] == [[40.0, 5.0, 60.0, 5.0, 60.0, 45.0, 40.0, 45.0]] and first["area"] == 800
    assert second["segmentation"] == [] and second["num_keypoints"] == 0
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.8 1 2 3\n")
    with pytest.raises(ConvertError, match="a.txt:1 has 8 numbers"):
        convert("yolo-pose", root / "data.yaml", tmp_path / "c.json")


def test_label_studio_brush_masks_are_person_regions(tmp_path, capsys):
    from poseseg.data.convert.brush_rle import decode_brush_rle, encode_brush_rle

    h, w = 40, 60
    mask = np.zeros((h, w), bool)
    mask[8:30, 20:35] = True
    mask[12, 21] = False  # a hole
    rle = encode_brush_rle(mask, color=(255, 0, 0, 255))  # red: runs and one-value literals alternate
    assert np.array_equal(decode_brush_rle(rle, h, w), mask)
    assert rle[:4] == [0, 0, 37, 128] and len(rle) < h * w  # 9600 values (32-bit count), run-length packed
    with pytest.raises(ValueError, match="original_width"):
        decode_brush_rle(rle, h + 1, w)
    size = {"original_width": w, "original_height": h, "image_rotation": 0}
    task = [{"id": 1, "data": {"image": "/data/upload/1/x-brush.jpg"}, "annotations": [{"result": [
        {"id": "b1", "type": "brushlabels", **size, "value": {"format": "rle", "rle": rle, "brushlabels": ["person"]}},
        {"id": "k1", "type": "keypointlabels", **size, "value": {"x": 45.0, "y": 50.0, "keypointlabels": ["nose"]}},
        {"id": "k2", "type": "keypointlabels", **size, "value": {"x": 5.0, "y": 5.0, "keypointlabels": ["neck"]}},
    ]}]}]
    src = tmp_path / "ls.json"
    src.write_text(json.dumps(task))
    out, notes = convert("label-studio", src, tmp_path / "coco.json")
    ann = json.loads(out.read_text())["annotations"]
    assert len(ann) == 1 and ann[0]["area"] == mask.sum()
    assert np.array_equal(mask_utils.decode(ann[0]["segmentation"]).astype(bool), mask)
    kps = np.asarray(ann[0]["keypoints"]).reshape(-1, 3)
    assert kps[0].tolist() == pytest.approx([27.0, 20.0, 2])  # the nose, inside the brushed person
    assert any("outside every person region" in n for n in notes)  # the neck point is not on the person


# --------------------------------------------------------------------- what used to pass silently (issue 26)


def test_yolo_coordinates_outside_0_1_are_refused_with_file_and_line(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (100, 50), 0).save(root / "images" / "train" / "a.jpg")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nkpt_shape: [17, 3]\nnames: {0: person}\n")
    good = " ".join(["0.5 0.5 2"] * 17)
    label = root / "labels" / "train" / "a.txt"
    label.write_text(f"0 0.5 0.5 0.2 0.8 {good}\n0 0.5 0.5 0.2 0.8 {' '.join(['0.5 0.5 2'] * 16)} 37 12 2\n")
    with pytest.raises(ConvertError, match=r"a.txt:2: keypoint 17 \(right_ankle\) x = 37 is outside 0..1: YOLO "
                                           r"coordinates are normalised to 0..1"):
        convert("yolo-pose", root / "data.yaml", tmp_path / "c.json")
    label.write_text(f"0 1.2 0.5 0.2 0.8 {good}\n")  # a box centre past the right border
    assert main(["convert-data", "yolo-pose", str(root / "data.yaml"), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert "a.txt:1: box cx = 1.2 is outside 0..1" in err and "divide pixel coordinates" in err
    assert "Traceback" not in err and not (tmp_path / "c.json").exists()
    label.write_text(f"0 0.5 0.5 0.2 0.8 {good}\n")
    (root / "segments").mkdir()
    (root / "segments" / "a.txt").write_text("0 0.4 0.1 0.6 0.1 0.6 -0.2\n")
    with pytest.raises(ConvertError, match=r"segments/a.txt:1: point 3 y = -0.2 is outside 0..1"):
        convert("yolo-pose", root / "data.yaml", tmp_path / "c.json", segments=root / "segments")


def test_label_studio_unsupported_results_are_counted_and_no_0x0_person_is_written(tmp_path, capsys):
    size = {"original_width": 200, "original_height": 160, "image_rotation": 0}
    results = [
        {"id": "e1", "type": "ellipselabels", **size,
         "value": {"x": 50, "y": 50, "radiusX": 10, "radiusY": 20, "ellipselabels": ["person"]}},
        {"id": "c1", "type": "choices", "from_name": "quality", "to_name": "image", "value": {"choices": ["blurry"]}},
        {"id": "k1", "type": "keypointlabels", **size, "value": {"x": 50, "y": 40, "keypointlabels": ["nose"]}},
    ]
    src = tmp_path / "ls.json"
    src.write_text(json.dumps([{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": results}]}]))
    assert main(["convert-data", "label-studio", str(src), "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["annotations"] == []  # was: one person with a 0x0 box
    assert "1 people dropped: their box is 0 px wide or high (first in a.jpg)" in out
    assert "ls.json: results ignored by type: 1 ellipselabels, 1 choices; supported: people as polygonlabels, " \
           "rectanglelabels, brushlabels" in out


def test_label_studio_keypoint_visibility_choices_and_parts_of_one_person(tmp_path):
    """Per-keypoint 'choices' give v=1/2, a missing point is v=0, and a polygon whose parentID is a rectangle is the
    mask of the rectangle's person (not a second person); a task without annotations is read from its prediction."""
    size = {"original_width": 200, "original_height": 100, "image_rotation": 0}
    point = {"x": 25.0, "y": 30.0, "width": 0.5}
    results = [
        {"id": "r", "type": "rectanglelabels", **size,
         "value": {"x": 10, "y": 10, "width": 30, "height": 80, "rectanglelabels": ["person"]}},
        {"id": "o", "parentID": "r", "type": "polygonlabels", **size,
         "value": {"points": [[12, 12], [38, 12], [38, 88], [12, 88]], "polygonlabels": ["person"]}},
        {"id": "k1", "parentID": "r", "type": "keypointlabels", **size, "value": {**point, "keypointlabels": ["nose"]}},
        {"id": "k1", "type": "choices", "from_name": "visibility", **size, "value": {**point, "choices": ["occluded"]}},
        {"id": "k2", "parentID": "r", "type": "keypointlabels", **size,
         "value": {"x": 30.0, "y": 50.0, "keypointlabels": ["neck"]}},
        {"id": "k2", "type": "choices", "from_name": "visibility", **size, "value": {"choices": ["visible"]}},
        {"id": "k3", "type": "keypointlabels", **size, "value": {"x": 90.0, "y": 50.0, "keypointlabels": ["tail"]}},
    ]
    src = tmp_path / "ls.json"
    src.write_text(json.dumps([{"id": 1, "data": {"image": "a.jpg"}, "predictions": [{"result": results}]}]))
    out, notes = convert("label-studio", src, tmp_path / "c.json")
    data = json.loads(out.read_text())
    assert data["categories"][0]["keypoints"] == ["nose", "neck", "tail"]
    [person] = data["annotations"]
    assert person["bbox"] == pytest.approx([20, 10, 60, 80])  # the rectangle's box
    assert person["area"] == pytest.approx(52 * 76, rel=0.05)  # the polygon's mask
    assert person["keypoints"][2::3] == [1, 2, 0]  # occluded, visible, not labelled (outside the person)
    assert any("1 keypoints outside every person region" in n for n in notes)


def test_negative_coordinates_are_counted_and_the_first_is_named(tmp_path, capsys):
    data = json.loads((FIXTURES / "cvat_coco_keypoints.json").read_text())
    first = next(a for a in data["annotations"] if a["category_id"] == 1)
    first["bbox"][0] = -3.5
    second = [a for a in data["annotations"] if a["category_id"] == 1][1]
    second["keypoints"][1] = -2.0  # the first keypoint's y (its v is 2)
    second["keypoints"][2] = 2
    src = tmp_path / "neg.json"
    src.write_text(json.dumps(data))
    out, notes = convert("cvat-coco", src, tmp_path / "coco.json")
    name = json.loads(out.read_text())["images"][0]["file_name"]
    want = f"2 annotation(s) have negative coordinates, first: annotation {first['id']} in {name}: bbox x = -3.5"
    assert any(n.startswith(want) and "fix the points in the annotation tool" in n for n in notes), notes
    assert main(["check-data", "--data", str(out), "--images", str(tmp_path), "--fast", *FIVE]) == 1  # images missing
    assert f"WARNING  {want}" in capsys.readouterr().out


@pytest.mark.parametrize("images", [[], [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}]])
def test_check_data_calls_an_empty_dataset_an_error_in_trains_words(images, tmp_path, capsys):
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    (tmp_path / "d.json").write_text(json.dumps({"images": images, "annotations": [], "categories": [
        {"id": 1, "name": "person", "keypoints": ["nose", "neck"], "skeleton": []}]}))
    args = ["--data", str(tmp_path / "d.json"), "--images", str(tmp_path)]
    assert main(["check-data", *args, "data.oks_sigmas=[0.026,0.079]", "model.keypoint.num_keypoints=2"]) == 1
    out = capsys.readouterr().out
    error = next(line for line in out.splitlines() if line.startswith("ERROR"))[len("ERROR    "):]
    assert ("has no images: nothing to train on" if not images else
            "has no images with people of category 'person': nothing to train on") in error
    assert out.rstrip().endswith("NOT OK (1 errors)")
    assert main(["train", *args, "--iters", "1", "--output-dir", str(tmp_path / "runs"),
                 "data.oks_sigmas=[0.026,0.079]", "model.keypoint.num_keypoints=2"]) == 2
    assert error in capsys.readouterr().err  # train refuses it with the same sentence
    assert not (tmp_path / "runs").exists()
