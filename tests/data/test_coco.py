"""COCO people datasets: the real val2017 sample, and every bad input we could think of."""
import contextlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from poseseg.data.check import format_report, summarize_dataset
from poseseg.data.coco import CocoPeopleDataset, DatasetError, check_schema
from poseseg.data.image_io import ImageReadError
from poseseg.keypoint_schema import COCO_SIGMAS, coco_person_category
from poseseg.data.transforms import RandomHorizontalFlip

# pycocotools' annToMask (the reference) trips numpy 2's `__array__(copy=)` deprecation notice
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


# ----------------------------------------------------------------------------- the real sample


def test_real_sample_loads_4_images_14_people(coco_sample):
    sample_json = coco_sample / "person_keypoints_sample.json"
    ds = CocoPeopleDataset(sample_json, coco_sample)
    assert len(ds) == 4
    assert ds.stats["people"] == 14 and ds.stats["images"] == 4 and ds.stats["crowd"] == 0
    assert ds.schema.num_keypoints == 17 and ds.schema.sigmas == COCO_SIGMAS
    total = 0
    for i in range(len(ds)):
        image, target = ds[i]
        info = ds.image_info(i)
        assert image.dtype == torch.float32 and image.shape == (3, info["height"], info["width"])
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        n = target["boxes"].shape[0]
        total += n
        assert target["labels"].tolist() == [1] * n and target["iscrowd"].tolist() == [0] * n
        assert target["keypoints"].shape == (n, 17, 3) and target["keypoints"].dtype == torch.float32
        assert target["masks"].shape == (n, info["height"], info["width"]) and target["masks"].dtype == torch.uint8
        assert target["image_id"] == info["id"] and target["file_name"] == info["file_name"]
        unlabeled = target["keypoints"][..., 2] == 0
        assert (target["keypoints"][unlabeled][:, :2] == 0).all()
    assert total == 14
    assert ds.bad_images == []


def test_real_sample_masks_equal_pycocotools_annToMask(coco_sample):
    sample_json = coco_sample / "person_keypoints_sample.json"
    ds = CocoPeopleDataset(sample_json, coco_sample)
    coco = _coco(sample_json)
    checked = 0
    for i in range(len(ds)):
        target = ds.get_target(i)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[target["image_id"]], catIds=[1]))
        by_id = {a["id"]: a for a in anns}
        for row, aid in enumerate(ds.annotation_ids(i)):
            ann = by_id[int(aid)]
            np.testing.assert_array_equal(target["masks"][row].numpy(), coco.annToMask(ann))
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose(target["boxes"][row].numpy(), [x, y, x + w, y + h], atol=1e-3)
            np.testing.assert_allclose(target["keypoints"][row].numpy().reshape(-1), ann["keypoints"])
            checked += 1
    assert checked == 14


def test_real_sample_flip_moves_left_wrist_to_mirrored_right_wrist(coco_sample):
    sample_json = coco_sample / "person_keypoints_sample.json"
    ds = CocoPeopleDataset(sample_json, coco_sample)
    names = ds.schema.names
    lw, rw = names.index("left_wrist"), names.index("right_wrist")
    flip = RandomHorizontalFlip(1.0, ds.schema.flip_permutation())
    seen = 0
    for i in range(len(ds)):
        image, target = ds[i]
        width = image.shape[-1]
        fimage, ft = flip(image, target)
        assert torch.equal(fimage, image.flip(-1))
        before, after = target["keypoints"], ft["keypoints"]
        for p in range(before.shape[0]):
            if before[p, rw, 2] > 0:
                assert after[p, lw, 2] == before[p, rw, 2]
                assert float(after[p, lw, 0]) == pytest.approx(width - float(before[p, rw, 0]))
                assert float(after[p, lw, 1]) == pytest.approx(float(before[p, rw, 1]))
                seen += 1
            else:
                assert after[p, lw].tolist() == [0.0, 0.0, 0.0]
        # masks and boxes mirror together
        assert torch.equal(ft["masks"], target["masks"].flip(-1))
        np.testing.assert_allclose(ft["boxes"][:, 0].numpy(), width - target["boxes"][:, 2].numpy(), atol=1e-4)
    assert seen >= 8


def test_dataset_is_stored_in_compact_arrays_and_pickles(coco_sample):
    sample_json = coco_sample / "person_keypoints_sample.json"
    ds = CocoPeopleDataset(sample_json, coco_sample)
    for name, value in vars(ds._s).items():
        assert isinstance(value, np.ndarray) or hasattr(value, "blob"), name
    assert ds._s.keypoints.shape == (14, 17, 3) and ds._s.ann_start.tolist()[-1] == 14
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 4 and torch.equal(clone.get_target(2)["masks"], ds.get_target(2)["masks"])


# ----------------------------------------------------------------------------- a synthetic bad dataset


def _poly(x, y, w, h):
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def _write_dataset(root: Path, *, keypoint_names=None, bad=True) -> Path:
    """Images: good.jpg (2 people: polygon + compressed RLE, 1 crowd with uncompressed RLE, 1 degenerate
    box), crowd.png (only a crowd region), empty.png (nobody), portrait.png (1 person), and, with
    ``bad``, cut.jpg (truncated) and gone.jpg (missing)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cat = coco_person_category()
    if keypoint_names is not None:
        cat = {"id": 1, "name": "person", "keypoints": keypoint_names, "skeleton": [[1, 2]]}
    k = len(cat["keypoints"])
    images, anns = [], []

    def add_image(iid, name, w, h, write=True, truncate=False):
        images.append({"id": iid, "file_name": name, "width": w, "height": h})
        if not write:
            return
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG" if name.endswith(".jpg") else "PNG")
        data = buf.getvalue()
        (root / name).write_bytes(data[: len(data) // 2] if truncate else data)

    def kps(points):
        out = [0] * (3 * k)
        for j, (x, y, v) in points.items():
            out[3 * j: 3 * j + 3] = [x, y, v]
        return out

    add_image(1, "good.jpg", 64, 48)
    rle_mask = np.zeros((48, 64), np.uint8, order="F")
    rle_mask[5:30, 40:60] = 1
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    crowd = mask_utils.encode(np.asfortranarray(np.pad(np.ones((10, 10), np.uint8), ((30, 8), (2, 52)))))
    crowd_uncompressed = {"size": [48, 64], "counts": _uncompressed_counts(mask_utils.decode(crowd))}
    anns += [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [4, 4, 20, 30],
         "segmentation": [_poly(4, 4, 20, 30)], "area": 600, "keypoints": kps({0: (10, 8, 2), 1: (12, 20, 1)})},
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [40, 5, 20, 25],
         "segmentation": rle, "area": 500, "keypoints": kps({1: (50, 10, 2)})},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [2, 30, 10, 10],
         "segmentation": crowd_uncompressed, "area": 100, "keypoints": [0] * (3 * k)},
        {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [30, 30, 0.5, 10],
         "segmentation": [_poly(30, 30, 0.5, 10)], "area": 5, "keypoints": [0] * (3 * k)},
        {"id": 14, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [1, 1, 30, 30],
         "segmentation": [_poly(1, 1, 30, 30)], "area": 900},  # another category: ignored
    ]
    add_image(2, "crowd.png", 40, 30)
    anns.append({"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 20, 20],
                 "segmentation": [_poly(0, 0, 20, 20)], "area": 400, "keypoints": [0] * (3 * k)})
    add_image(3, "empty.png", 40, 30)
    add_image(4, "portrait.png", 30, 50)
    anns.append({"id": 40, "image_id": 4, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 10, 30],
                 "segmentation": [_poly(5, 5, 10, 30)], "area": 300, "keypoints": kps({0: (8, 9, 2)})})
    if bad:
        add_image(5, "cut.jpg", 64, 48, truncate=True)
        anns.append({"id": 50, "image_id": 5, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 10, 10],
                     "segmentation": [_poly(5, 5, 10, 10)], "area": 100, "keypoints": kps({0: (8, 9, 2)})})
        add_image(6, "gone.jpg", 64, 48, write=False)
        anns.append({"id": 60, "image_id": 6, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 10, 10],
                     "segmentation": [_poly(5, 5, 10, 10)], "area": 100, "keypoints": kps({0: (8, 9, 2)})})
    data = {"images": images, "annotations": anns,
            "categories": [cat, {"id": 2, "name": "dog", "supercategory": "animal"}]}
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _uncompressed_counts(mask):
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def test_synthetic_masks_match_annToMask_for_polygon_rle_and_uncompressed_rle(tmp_path):
    path = _write_dataset(tmp_path)
    ds = CocoPeopleDataset(path, tmp_path)
    coco = _coco(path)
    target = ds.get_target(0)
    assert target["file_name"] == "good.jpg"
    assert target["iscrowd"].tolist() == [0, 0, 1]  # degenerate box (id 13) dropped, dog ignored
    for row, aid in enumerate([10, 11, 12]):
        np.testing.assert_array_equal(target["masks"][row].numpy(), coco.annToMask(coco.anns[aid]))
    assert target["masks"][1].sum() == 25 * 20


def test_crowd_kept_but_not_counted_as_people_and_keep_empty(tmp_path):
    path = _write_dataset(tmp_path, bad=False)
    ds = CocoPeopleDataset(path, tmp_path)
    assert len(ds) == 4
    s = ds.stats
    assert s["people"] == 3 and s["crowd"] == 2 and s["dropped_boxes"] == 1
    assert s["negative_images"] == 2 and s["crowd_only_images"] == 1 and s["skipped_images"] == 0
    assert s["keypoints_labeled"] == 4 and s["keypoints_visible"] == 3
    crowd_img = [ds.image_info(i)["file_name"] for i in range(len(ds))].index("crowd.png")
    t = ds.get_target(crowd_img)
    assert t["iscrowd"].tolist() == [1] and (t["keypoints"] == 0).all()

    only_people = CocoPeopleDataset(path, tmp_path, keep_empty=False)
    names = [only_people.image_info(i)["file_name"] for i in range(len(only_people))]
    assert names == ["good.jpg", "portrait.png"]  # crowd-only and empty images skipped
    assert only_people.stats["skipped_images"] == 2 and only_people.stats["images"] == 2


def test_visibility_zero_keypoints_are_zeroed(tmp_path):
    path = _write_dataset(tmp_path, bad=False)
    data = json.loads(path.read_text())
    data["annotations"][0]["keypoints"][3 * 5: 3 * 5 + 3] = [33, 44, 0]  # coordinates with v = 0
    path.write_text(json.dumps(data))
    t = CocoPeopleDataset(path, tmp_path).get_target(0)
    assert t["keypoints"][0, 5].tolist() == [0.0, 0.0, 0.0]
    assert t["keypoints"][0, 0].tolist() == [10.0, 8.0, 2.0]


def _skip_none(batch):
    """A DataLoader collate_fn for on_bad_image="skip": (images, targets) without the unreadable ones."""
    kept = [sample for sample in batch if sample is not None]
    return [image for image, _ in kept], [target for _, target in kept]


def test_truncated_and_missing_images_are_skipped_and_counted(tmp_path):
    path = _write_dataset(tmp_path)
    ds = CocoPeopleDataset(path, tmp_path)
    assert len(ds) == 6
    loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=0, collate_fn=_skip_none)
    sizes = []
    for images, targets in loader:
        assert len(images) == len(targets)
        sizes.append(len(images))
    assert sizes == [3, 1]  # the second batch lost cut.jpg and gone.jpg
    assert sorted(ds.bad_images) == ["cut.jpg", "gone.jpg"]
    assert ds.bad_image_reasons == {"cut.jpg": "unreadable or corrupt image", "gone.jpg": "missing file"}
    for _ in loader:  # a second epoch does not count them twice
        pass
    assert ds.num_bad_images == 2


def test_bad_images_are_counted_across_dataloader_workers(tmp_path):
    path = _write_dataset(tmp_path)
    ds = CocoPeopleDataset(path, tmp_path)
    loader = DataLoader(ds, batch_size=1, shuffle=False, num_workers=2, collate_fn=_skip_none)
    n = sum(len(images) for images, _ in loader)
    assert n == 4
    assert sorted(ds.bad_images) == ["cut.jpg", "gone.jpg"]  # seen by workers, read in the main process


def test_resample_and_raise_modes(tmp_path):
    path = _write_dataset(tmp_path)
    names = [json.loads(path.read_text())["images"][i]["file_name"] for i in range(6)]
    cut = names.index("cut.jpg")
    ds = CocoPeopleDataset(path, tmp_path, on_bad_image="resample")
    image, target = ds[cut]  # cut.jpg and gone.jpg are bad: wraps around to good.jpg
    assert target["file_name"] == "good.jpg"
    assert sorted(ds.bad_images) == ["cut.jpg", "gone.jpg"]
    strict = CocoPeopleDataset(path, tmp_path, on_bad_image="raise")
    with pytest.raises(ImageReadError, match="cut.jpg"):
        strict[cut]
    assert strict.bad_images == ["cut.jpg"]  # recorded in raise mode too
    assert CocoPeopleDataset(path, tmp_path)[cut] is None


def test_image_size_mismatch_is_a_bad_image(tmp_path):
    path = _write_dataset(tmp_path, bad=False)
    data = json.loads(path.read_text())
    data["images"][3]["width"], data["images"][3]["height"] = 50, 30  # portrait.png is 30x50 on disk
    path.write_text(json.dumps(data))
    ds = CocoPeopleDataset(path, tmp_path)
    assert ds[3] is None
    assert ds.bad_image_reasons == {"portrait.png": "image size differs from the JSON"}


def test_keypoint_count_disagreeing_with_model_fails_at_startup(tmp_path):
    names = [f"{side}_{part}" for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
             for side in ("left", "right")] + ["head", "neck"]
    path = _write_dataset(tmp_path, keypoint_names=names, bad=False)
    with pytest.raises(DatasetError) as e:
        CocoPeopleDataset(path, tmp_path, num_keypoints=17, oks_sigmas=[0.05] * 14)
    msg = str(e.value)
    assert str(path) in msg and "14 keypoints" in msg and "17" in msg
    assert "model.keypoint.num_keypoints" in msg and "left_shoulder" in msg
    # non-COCO-17 without sigmas: the error names the config key
    with pytest.raises(DatasetError, match=r"data\.oks_sigmas"):
        CocoPeopleDataset(path, tmp_path)
    ds = CocoPeopleDataset(path, tmp_path, num_keypoints=14, oks_sigmas=[0.05] * 14)
    assert ds.schema.num_keypoints == 14 and len(ds.schema.flip_pairs) == 6
    perm = ds.schema.flip_permutation()
    assert names[perm[names.index("left_wrist")]] == "right_wrist" and perm[12] == 12
    with pytest.raises(DatasetError, match=r"data\.oks_sigmas has 3 values"):
        CocoPeopleDataset(path, tmp_path, oks_sigmas=[0.1] * 3)
    with pytest.raises(DatasetError, match="model.keypoint.num_keypoints"):
        check_schema(None, 17, source="x.json")


def test_annotation_with_wrong_keypoint_length_and_unknown_category(tmp_path):
    path = _write_dataset(tmp_path, bad=False)
    data = json.loads(path.read_text())
    data["annotations"][1]["keypoints"] = [1, 2, 2] * 5
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"annotation 11 .* 5 keypoints but category 'person' has 17"):
        CocoPeopleDataset(path, tmp_path)
    with pytest.raises(DatasetError, match=r"no category 'cyclist'.*'dog'"):
        CocoPeopleDataset(path, tmp_path, category="cyclist")
    dogs = CocoPeopleDataset(path, tmp_path, category=2)  # by id; no keypoints in that category
    assert dogs.schema is None and dogs.stats["people"] == 1 and "keypoints" not in dogs.get_target(0)
    with pytest.raises(DatasetError, match="no keypoints"):
        dogs.check_schema(17)


def test_summarize_dataset_reports_everything(tmp_path):
    path = _write_dataset(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    data = json.loads(path.read_text())
    data["images"].append({"id": 7, "file_name": "junk.png", "width": 10, "height": 10})
    path.write_text(json.dumps(data))
    quick = summarize_dataset(path, tmp_path, num_keypoints=17)
    assert quick["missing_files"] == ["gone.jpg"] and quick["num_unreadable_images"] == 0
    assert not quick["ok"]
    report = summarize_dataset(path, tmp_path, check_images=True, num_keypoints=17)
    c = report["counts"]
    assert (c["images"], c["people"], c["crowd"], c["dropped_boxes"]) == (7, 5, 2, 1)
    assert c["crowd_only_images"] == 1 and c["negative_images"] == 3
    assert sorted(u["file_name"] for u in report["unreadable_images"]) == ["cut.jpg", "junk.png"]
    assert report["bad_boxes"][0]["annotation_id"] == 13
    assert report["schema"]["num_keypoints"] == 17 and report["schema"]["sigmas"] == "coco"
    json.dumps(report)  # serialisable for --json output
    text = format_report(report)
    assert "missing: gone.jpg" in text and "unreadable: cut.jpg" in text and "NOT OK" in text
    assert "5 people, 2 crowd regions" in text

    wrong_k = summarize_dataset(path, tmp_path, num_keypoints=14)
    assert any("model.keypoint.num_keypoints" in e for e in wrong_k["errors"])
    broken = summarize_dataset(tmp_path / "nope.json", tmp_path)
    assert not broken["ok"] and "does not exist" in broken["errors"][0]


def test_summarize_real_sample_is_ok(coco_sample):
    sample_json = coco_sample / "person_keypoints_sample.json"
    report = summarize_dataset(sample_json, coco_sample, check_images=True, num_keypoints=17)
    assert report["ok"], format_report(report)
    assert report["counts"]["people"] == 14 and report["counts"]["images"] == 4
