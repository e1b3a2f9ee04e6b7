"""Named weights: time of the first `torchvision-coco` use (convert + cache) vs the second (cached).

Uses torchvision's two detectors with random weights saved under the enums' cache names in a temporary
TORCH_HOME (no download here); the conversion cost is the same as with the real files.

    PYTHONPATH=src taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/named_weights.py
"""
import os
import tempfile
import time
from pathlib import Path

import torch
from torchvision.models.detection import (KeypointRCNN_ResNet50_FPN_Weights, MaskRCNN_ResNet50_FPN_Weights,
                                          keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn)


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["TORCH_HOME"] = home
        os.environ["POSESEG_OFFLINE"] = "1"
        cache = Path(home) / "hub" / "checkpoints"
        cache.mkdir(parents=True)
        for build, enum, kwargs in ((keypointrcnn_resnet50_fpn, KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
                                     {"num_classes": 2}), (maskrcnn_resnet50_fpn, MaskRCNN_ResNet50_FPN_Weights.COCO_V1, {})):
            model = build(weights=None, weights_backbone=None, **kwargs)
            torch.save(model.state_dict(), cache / enum.url.rsplit("/", 1)[-1])
        from poseseg.weights.load import load_model
        from poseseg.weights import resolve_named

        start = time.perf_counter()
        path = resolve_named("torchvision-coco")
        first = time.perf_counter() - start
        start = time.perf_counter()
        resolve_named("torchvision-coco")
        second = time.perf_counter() - start
        start = time.perf_counter()
        load_model("torchvision-coco")
        load = time.perf_counter() - start
        print(f"first use (load 2 files, convert, save {path.stat().st_size / 2**20:.0f} MiB): {first:.2f} s; "
              f"second use (cached): {second * 1000:.1f} ms; load_model('torchvision-coco') from the cache: {load:.2f} s")


if __name__ == "__main__":
    main()
