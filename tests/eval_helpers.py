"""Predictions made from a ground truth by jittering it (plus false positives): AP strictly between 0 and 1,
so two COCO evaluators can be compared on numbers that exercise every matching rule.
Used by tests/engine/test_coco_backend.py and benchmarks/coco_eval_speed.py."""
import numpy as np
import pycocotools.mask as mask_utils


def _rle_of(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _mask_of(segm, h: int, w: int) -> np.ndarray:
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(bool)


def noisy_predictions(data: dict, seed: int = 0, *, false_positive_rate: float = 0.3,
                      category_id: int = 1) -> dict[str, list]:
    """COCO results {bbox, segm, keypoints} for every non-crowd person of ``data`` (a loaded JSON)."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    out = {"bbox": [], "segm": [], "keypoints": []}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or ann["category_id"] != category_id:
            continue
        h, w = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        jitter = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
        box = [x + jitter[0], y + jitter[1], max(bw + jitter[2], 1.0), max(bh + jitter[3], 1.0)]
        base = {"image_id": ann["image_id"], "category_id": category_id, "score": float(rng.uniform(0.05, 1.0))}
        out["bbox"].append({**base, "bbox": [float(v) for v in box]})
        mask = _mask_of(ann["segmentation"], h, w)
        dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
        out["segm"].append({**base, "segmentation": _rle_of(np.roll(mask, (dy, dx), axis=(0, 1)))})
        kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        scale = np.sqrt(max(ann.get("area") or bw * bh, 1.0)) * 0.06
        xy = kps[:, :2] + rng.normal(0, scale, (len(kps), 2))
        out["keypoints"].append({**base, "keypoints": np.concatenate([xy, np.ones((len(kps), 1))], 1).ravel().tolist()})
        if rng.random() < false_positive_rate:  # a false positive: a random box in the same image
            fw, fh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
            fx, fy = rng.uniform(0, w - fw), rng.uniform(0, h - fh)
            fp = {"image_id": ann["image_id"], "category_id": category_id, "score": float(rng.uniform(0.0, 0.8))}
            out["bbox"].append({**fp, "bbox": [fx, fy, fw, fh]})
            m = np.zeros((h, w), bool)
            m[int(fy):int(fy + fh), int(fx):int(fx + fw)] = True
            out["segm"].append({**fp, "segmentation": _rle_of(m)})
            fk = np.stack([rng.uniform(fx, fx + fw, len(kps)), rng.uniform(fy, fy + fh, len(kps)),
                           np.ones(len(kps))], 1)
            out["keypoints"].append({**fp, "keypoints": fk.ravel().tolist()})
    return out
