"""Throughput of the synthetic people generator (images per second, JPEG + COCO JSON included).

    python benchmarks/synth_speed.py --images 200 --size 320 --workers 1 2

Prints wall-clock images/s and CPU ms per image for each worker count; the CPU figure is the
one to compare across runs on a shared machine (wall time depends on what else is running).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

from poseseg.data.synth import generate_dataset


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(images: int, size: int, workers: int, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), _cpu_seconds()
        info = generate_dataset(tmp, num_train=images, num_val=0, seed=seed, image_size=(size, size), workers=workers)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"workers": workers, "images": images, "size": size, "wall_s": round(wall, 3),
            "images_per_s": round(images / wall, 1), "cpu_ms_per_image": round(1000 * cpu / images, 2),
            "people": info["train"]["annotations"], "sizes": info["train"]["sizes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    measure(10, args.size, 1, args.seed)  # warm-up (imports, caches)
    for w in args.workers:
        print(json.dumps(measure(args.images, args.size, w, args.seed)))


if __name__ == "__main__":
    main()
