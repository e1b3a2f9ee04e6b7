"""Deformable conv on CPU: ours vs torchvision's kernel vs a plain conv of the same shape.

    python benchmarks/deform_conv.py --threads 2 --json deform_conv.json

Forward and forward+backward (gradients for every input) of a 3x3 conv, padding 1, on the
ResNet-50 res3-res5 shapes of an 800x1216 image (batch 1; res3-s2 is the stride-2 conv that
opens res3) and the keypoint-head shape (20 RoIs of 512ch 14x14). Offsets ~ N(0, 2^2) pixels,
mask = 2 * sigmoid(N(0, 1)) for v2. Implementations are interleaved in every repetition
(other jobs may share the CPU); the table shows medians and ratios to the plain conv.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import torch
import torch.nn.functional as F

from poseseg.ops import deform_conv2d
from machine import cpu_model  # benchmarks/machine.py

SHAPES = {  # name: (batch, channels, height, width, stride)
    "res3": (1, 128, 100, 152, 1),
    "res4": (1, 256, 50, 76, 1),
    "res5": (1, 512, 25, 38, 1),
    "kp": (20, 512, 14, 14, 1),
    "res3-s2": (1, 128, 200, 304, 2),
}


def make_case(name: str, modulated: bool, seed: int = 0):
    n, c, h, w, s = SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(c, c, 3, 3, generator=g) * (2.0 / (9 * c)) ** 0.5
    bias = torch.randn(c, generator=g)
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    offset = torch.randn(n, 18, ho, wo, generator=g) * 2.0
    mask = 2 * torch.sigmoid(torch.randn(n, 9, ho, wo, generator=g)) if modulated else None
    return dict(x=x, weight=weight, bias=bias, offset=offset, mask=mask, stride=s)


def runners(case):
    s = case["stride"]

    def conv(x, offset, weight, bias, mask):
        return F.conv2d(x, weight, bias, stride=s, padding=1)

    def ours(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, stride=s, padding=1, mask=mask)

    def tv(x, offset, weight, bias, mask):
        import torchvision

        return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=s, padding=1, mask=mask)

    return {"conv": conv, "ours": ours, "torchvision": tv}


def time_once(fn, case, backward: bool) -> float:
    args = [case["x"], case["offset"], case["weight"], case["bias"], case["mask"]]
    if backward:
        args = [a.detach().requires_grad_() if a is not None else None for a in args]
    start = time.perf_counter()
    if backward:
        out = fn(*args)
        out.backward(torch.ones_like(out))
    else:
        with torch.no_grad():
            fn(*args)
    return (time.perf_counter() - start) * 1e3


def bench(names, variants, impls, repeats: int, warmup: int):
    rows = []
    for name in names:
        for variant in variants:
            case = make_case(name, modulated=(variant == "v2"))
            fns = {k: v for k, v in runners(case).items() if k in impls}
            times = {(k, mode): [] for k in fns for mode in ("fwd", "fwdbwd")}
            for rep in range(warmup + repeats):
                for mode in ("fwd", "fwdbwd"):
                    for k, fn in fns.items():  # interleaved: same load for all
                        t = time_once(fn, case, backward=(mode == "fwdbwd"))
                        if rep >= warmup:
                            times[(k, mode)].append(t)
            row = {"shape": name, "variant": variant, "size": list(SHAPES[name])}
            for (k, mode), ts in times.items():
                row[f"{k}_{mode}_ms"] = statistics.median(ts)
                row[f"{k}_{mode}_min_ms"] = min(ts)
                row[f"{k}_{mode}_all_ms"] = [round(t, 3) for t in ts]
            for mode in ("fwd", "fwdbwd"):
                for k in fns:
                    if k != "conv":
                        row[f"{k}_{mode}_ratio"] = row[f"{k}_{mode}_ms"] / row[f"conv_{mode}_ms"]
            rows.append(row)
            print(format_row(row, list(fns)), flush=True)
    return rows


def header(impls) -> str:
    cols = ["shape", "var"]
    for mode in ("fwd", "f+b"):
        cols += [f"{k[:5]} {mode} ms" for k in impls]
        cols += [f"{k[:5]}/conv {mode}" for k in impls if k != "conv"]
    return " | ".join(cols)


def format_row(row, impls) -> str:
    vals = [row["shape"], row["variant"]]
    for mode in ("fwd", "fwdbwd"):
        vals += [f"{row[f'{k}_{mode}_ms']:.1f}" for k in impls]
        vals += [f"{row[f'{k}_{mode}_ratio']:.2f}x" for k in impls if k != "conv"]
    return " | ".join(vals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {list(SHAPES)}")
    p.add_argument("--variants", default="v2,v1", help="v2 (modulated) and/or v1")
    p.add_argument("--impls", default="conv,ours,torchvision", help="conv must be included")
    p.add_argument("--json", default=None, help="write the numbers here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    impls = [k for k in a.impls.split(",") if k]
    if "conv" not in impls:
        raise SystemExit("--impls must include conv (the reference for the ratios)")
    names = [s for s in a.shapes.split(",") if s]
    variants = [v for v in a.variants.split(",") if v]
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "threads": a.threads,
        "torch": torch.__version__,
        "repeats": a.repeats,
        "warmup": a.warmup,
    }
    print(f"# {meta['date']}  {meta['cpu']}  threads={a.threads}  torch {torch.__version__}  "
          f"median of {a.repeats} (after {a.warmup} warm-up), ms")
    print(header(impls))
    rows = bench(names, variants, impls, a.repeats, a.warmup)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
