"""Seconds per training step of a preset on a batch of synthetic people (CPU, fixed threads).

    python benchmarks/train_step.py --config tiny --batch-size 4 --size 320 --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import poseseg


def person_batch(batch_size: int, size: int, num_keypoints: int, seed: int = 0):
    """Random images with 3 box/mask/keypoint people each: enough for the cost of a real step."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch_size):
        xy = torch.rand(3, 2, generator=g) * size * 0.5
        wh = size * (0.15 + torch.rand(3, 2, generator=g) * 0.35)
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        masks = torch.zeros(3, size, size, dtype=torch.uint8)
        for j, b in enumerate(boxes.long()):
            masks[j, b[1]:b[3], b[0]:b[2]] = 1
        frac = torch.rand(3, num_keypoints, 2, generator=g)
        kps = torch.cat([boxes[:, None, :2] + frac * (boxes[:, None, 2:] - boxes[:, None, :2]),
                         torch.full((3, num_keypoints, 1), 2.0)], dim=-1)
        images.append(torch.rand(3, size, size, generator=g))
        targets.append({"boxes": boxes, "labels": torch.ones(3, dtype=torch.int64), "masks": masks, "keypoints": kps})
    return images, targets


def time_steps(cfg, batch_size: int, size: int, steps: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = poseseg.build_model(cfg).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    images, targets = person_batch(batch_size, size, cfg.model.keypoint.num_keypoints)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default="")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = poseseg.load_config(args.config, args.overrides)
    times = time_steps(cfg, args.batch_size, args.size, args.steps, args.warmup)
    result = {"config": args.config, "overrides": args.overrides, "batch_size": args.batch_size, "size": args.size,
              "threads": args.threads, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
    print(f"{args.config} {' '.join(args.overrides)}: batch {args.batch_size} x {args.size}px, {args.threads} threads: "
          f"median {result['median_s']:.3f} s/step (min {result['min_s']:.3f}, max {result['max_s']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
