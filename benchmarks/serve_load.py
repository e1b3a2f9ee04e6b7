"""Bounded load test of ``poseseg serve`` on 127.0.0.1: throughput and latency with and without batching.

    python benchmarks/serve_load.py                          # 8 clients, 200 requests per mode, tiny weights
    python benchmarks/serve_load.py --weights runs/train/exp/model_final.pt --max-batch 8 --json load.json

For each mode (``--max-batch 1``, i.e. no batching, then ``--max-batch B``) a fresh
``poseseg serve`` process is started on a free 127.0.0.1 port (never another address) with
``--threads`` intra-op threads. After 4 warm-up requests, ``--clients`` concurrent clients
POST the COCO sample photo (tests/fixtures, 640 x 425 JPEG) to ``/predict`` until
``--requests`` answers are in or ``--time-limit`` seconds have passed (the run stops by itself
either way). Reported: requests/s, p50/p95/p99 latency, errors (any non-200 answer or failed
connection; must be 0), the mean batch size the server ran (from ``/info``), and the server's
resident memory (VmRSS) after the warm-up and after each of ``--runs`` equal loads on the same
server, so growth from run to run would show.

Without ``--weights`` a ``tiny`` checkpoint with random weights (seed 0) is written to a
temporary folder: random weights give the full 30 detections per image (boxes, masks and
keypoints for each), the most work per image ``tiny`` can do.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "fixtures" / "coco_sample" / "000000000785.jpg"


def random_tiny_checkpoint(folder: Path) -> Path:
    import torch

    import poseseg
    from poseseg.keypoint_schema import coco_person_schema

    torch.manual_seed(0)
    cfg = poseseg.load_config("tiny")
    model = poseseg.build_model(cfg)
    path = folder / "tiny_random.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(),
                "keypoint_schema": coco_person_schema().to_dict()}, path)
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``poseseg serve`` in a subprocess on 127.0.0.1; ``extra_args`` go to its command line. Its output goes
    to a temporary file (``output()``), not a pipe nobody reads, which would stall it once full."""

    def __init__(self, weights: Path, max_batch: int, threads: int, extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "poseseg", "serve", "--weights", str(weights),
                                      "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
                                      "--max-batch", str(max_batch), *extra_args],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    async def wait_ready(self, client, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.output()}")
            try:
                if (await client.get(self.url + "/healthz")).status_code == 200:
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                await asyncio.sleep(0.2)
        raise RuntimeError("the server did not answer /healthz in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def load(client, url: str, body: bytes, *, clients: int, requests: int, time_limit: float) -> dict:
    """``clients`` concurrent loops POSTing until ``requests`` answers or ``time_limit`` seconds."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    stop_at = time.monotonic() + time_limit

    async def one_client():
        nonlocal sent
        while sent < requests and time.monotonic() < stop_at:
            sent += 1
            start = time.perf_counter()
            try:
                response = await client.post(url + "/predict", content=body, headers={"content-type": "image/jpeg"})
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
            except Exception as e:  # noqa: BLE001 - counted, the run goes on
                errors.append(repr(e))
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": len(errors), "error_samples": errors[:3], "seconds": wall,
            "requests_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
            "timed_out": time.monotonic() >= stop_at}


async def run_mode(weights: Path, body: bytes, max_batch: int, args, repeats: int) -> dict:
    import httpx2

    server = Server(weights, max_batch, args.threads)
    try:
        async with httpx2.AsyncClient(timeout=120, limits=httpx2.Limits(max_connections=args.clients)) as client:
            await server.wait_ready(client)
            for _ in range(4):  # warm-up
                (await client.post(server.url + "/predict", content=body)).raise_for_status()
            result = {"max_batch": max_batch, "rss_mb_after_warmup": rss_mb(server.proc.pid), "runs": []}
            for _ in range(repeats):
                run = await load(client, server.url, body, clients=args.clients, requests=args.requests,
                                 time_limit=args.time_limit)
                run["rss_mb_after"] = rss_mb(server.proc.pid)
                result["runs"].append(run)
            stats = (await client.get(server.url + "/info")).json()["stats"]
            result["mean_batch"] = stats["images"] / max(stats["batches"], 1)
            result["largest_batch"] = stats["largest_batch"]
            return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="a poseseg checkpoint (default: random-weight tiny)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="answers per run")
    parser.add_argument("--max-batch", type=int, default=8, help="the batched mode's --max-batch")
    parser.add_argument("--threads", type=int, default=1, help="the server's intra-op threads")
    parser.add_argument("--time-limit", type=float, default=300, help="seconds per run at most")
    parser.add_argument("--runs", type=int, default=2, help="loads per mode on the same server (memory growth)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    body = PHOTO.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or random_tiny_checkpoint(Path(tmp))
        results = [asyncio.run(run_mode(weights, body, 1, args, repeats=args.runs)),
                   asyncio.run(run_mode(weights, body, args.max_batch, args, repeats=args.runs))]
    print(f"{args.clients} clients, {args.requests} requests per run, {args.threads} server thread(s), "
          f"weights {'random tiny' if args.weights is None else args.weights}")
    print("| --max-batch | mean batch | requests | errors | req/s | p50 ms | p95 ms | p99 ms | RSS MB warm -> after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in results:
        for i, run in enumerate(mode["runs"]):
            rss = f"{mode['rss_mb_after_warmup']:.0f} -> {run['rss_mb_after']:.0f}"
            label = f"{mode['max_batch']} (run {i + 1})"
            print(f"| {label} | {mode['mean_batch']:.2f} | {run['requests']}{' (time limit)' if run['timed_out'] else ''}"
                  f" | {run['errors']} | {run['requests_per_s']:.2f} | {run['p50_ms']:.0f} | {run['p95_ms']:.0f} | "
                  f"{run['p99_ms']:.0f} | {rss} |")
    base, batched = results[0]["runs"][0], results[1]["runs"][0]
    print(f"throughput ratio batched / unbatched: {batched['requests_per_s'] / base['requests_per_s']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=1))
    errors = sum(run["errors"] for mode in results for run in mode["runs"])
    if errors:
        print(f"{errors} errors: {[s for m in results for r in m['runs'] for s in r['error_samples']]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
