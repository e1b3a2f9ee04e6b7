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


def _rle_pack(values: np.ndarray, word: int = 8, run_bits=(2, 4, 8, 16)) -> list[int]:
    """thi.ng rle-pack's encoder, as Label Studio's brush tool writes ``rle``: runs of a repeated value as
    (1, size selector, length - 1, value), single values as literals (0, selector, 0, value)."""
    bits = [format(len(values), "032b"), format(word - 1, "05b")] + [format(b - 1, "04b") for b in run_bits]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i] and j + 1 - i < 2 ** run_bits[-1]:
            j += 1
        length = j - i + 1
        sel = next(k for k, b in enumerate(run_bits) if length - 1 < 2 ** b)
        bits.append(("1" if length > 1 else "0") + format(sel, "02b") + format(length - 1, f"0{run_bits[sel]}b")
                    + format(int(values[i]), f"0{word}b"))
        i = j + 1
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k:k + 8], 2) for k in range(0, len(stream), 8)]


def test_label_studio_brush_masks_are_person_regions(tmp_path, capsys):
    from poseseg.data.convert.brush_rle import decode_brush_rle

    h, w = 40, 60
    mask = np.zeros((h, w), bool)
    mask[8:30, 20:35] = True
    mask[12, 21] = False  # a hole: a literal value inside a run
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[mask] = (255, 0, 0, 255)
    rle = _rle_pack(rgba.reshape(-1))
    assert np.array_equal(decode_brush_rle(rle, h, w), mask)
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
