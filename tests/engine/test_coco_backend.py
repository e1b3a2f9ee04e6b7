"""faster-coco-eval and pycocotools give the same AP tables (1e-4) for boxes, masks and keypoints."""
import json

import numpy as np
import pytest

from eval_helpers import noisy_predictions
from poseseg.engine.coco_backend import resolve_backend
from poseseg.engine.evaluate import score_results

pytest.importorskip("faster_coco_eval")

IOU_TYPES = ["bbox", "segm", "keypoints"]


@pytest.mark.parametrize("which", ["coco_sample", "synth_val"])
def test_backends_agree_with_custom_sigmas(which, coco_sample, synth_data):
    path = coco_sample / "person_keypoints_sample.json" if which == "coco_sample" else synth_data / "val.json"
    data = json.loads(path.read_text())
    results = noisy_predictions(data, seed=3)
    sigmas = np.linspace(0.03, 0.11, 17).tolist()  # not COCO's: the sigmas must reach the evaluator
    tables = {b: score_results(data, results, category_id=1, iou_types=IOU_TYPES, sigmas=sigmas, backend=b)
              for b in ("pycocotools", "faster-coco-eval")}
    ref, fast = tables["pycocotools"].metrics, tables["faster-coco-eval"].metrics
    assert tables["faster-coco-eval"].backend == "faster-coco-eval"
    for iou_type in IOU_TYPES:
        assert 0.05 < ref[iou_type]["AP"] < 0.99, (iou_type, ref[iou_type])  # a number that can differ
        for name, value in ref[iou_type].items():
            if value is None:
                assert fast[iou_type][name] is None, (iou_type, name)
            else:
                assert fast[iou_type][name] == pytest.approx(value, abs=1e-4), (iou_type, name)
    coco_sigmas = score_results(data, results, category_id=1, iou_types=["keypoints"], backend="faster-coco-eval",
                                sigmas=[0.026] * 17).metrics
    assert coco_sigmas["keypoints"]["AP"] != pytest.approx(fast["keypoints"]["AP"], abs=1e-3)


def test_backend_names():
    assert resolve_backend("auto") == "faster-coco-eval"  # installed: the default
    assert resolve_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="choose auto"):
        resolve_backend("detectron2")
