"""Bounded soak of ``poseseg serve`` on 127.0.0.1: faults survived, load held, nothing lost (issue 26).

    python benchmarks/serve_soak.py                                   # 3 minutes, random-weight tiny
    python benchmarks/serve_soak.py --minutes 0.1 --max-requests 40 --json soak.json

Starts ``poseseg serve`` (benchmarks/serve_load.py's ``Server``: a subprocess on a free 127.0.0.1 port,
never another address; ``--threads`` torch threads; an API key) and warms it up with one request of
each kind, then three per client of the mix below. Then ``--clients`` concurrent clients send requests until ``--minutes`` have passed or
``--max-requests`` have been sent, whichever comes first. Each request is drawn (seeded) from this mix:

  good       the COCO photo (640x425 JPEG), as a multipart file or as the raw body: 200, and the same
             people as the warm-up answer for that photo
  big        a 12-megapixel (4000x3000) JPEG of the same photo: 200, the same people as at warm-up
  text       a text file:                          4xx (415)
  truncated  the photo cut to its first third:     4xx (400)
  empty      an empty body:                        4xx (400)
  wrong_key  the photo with a wrong API key:       4xx (401)
  cut        headers and half the photo, then the connection is closed: no answer to wait for; the
             server must go on serving

Reported: good answered correctly / not, bad answered 4xx, 5xx answers (goal 0), failed
connections, server log lines at ERROR (goal 0), the server's resident memory (VmRSS from
/proc) after the warm-up and at the end (goal: growth < 10 %) and its peak, p50/p99 latency of the
good photo (the 12 MP photo apart). Last, the drain: ``--clients`` good requests are sent, SIGTERM
arrives while the server holds them, and every one must still get its correct 200, and the process
exit with code 0. ``--json F`` writes good_ok, good_failed, bad_4xx, server_errors, rss_growth (a
fraction), p50_ms, p99_ms and more. The exit status is 1 when any goal is missed.

Without ``--weights`` a ``tiny`` checkpoint with random weights (seed 0) is written to a temporary
folder: 30 detections per image, boxes, masks and keypoints for each.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from serve_load import PHOTO, Server, random_tiny_checkpoint, rss_mb

KEY = "soak-key"
QUERY = "/predict?score_thresh=0"  # every detection, with its mask (RLE) and keypoints
MIX = {"good": 50, "big": 8, "text": 8, "truncated": 8, "empty": 6, "wrong_key": 10, "cut": 10}  # weights
BAD = {"text": 415, "truncated": 400, "empty": 400, "wrong_key": 401}  # the answer each bad kind must get
GOALS = "0 good failed, every bad one a 4xx, 0 5xx, 0 failed connections, 0 server errors logged, drain ok"


def payloads() -> dict[str, bytes]:
    """The bytes each kind of request sends."""
    photo = PHOTO.read_bytes()
    big = io.BytesIO()
    Image.open(PHOTO).convert("RGB").resize((4000, 3000), Image.BILINEAR).save(big, format="JPEG", quality=90)
    return {"good": photo, "big": big.getvalue(), "text": b"a shopping list, not a photo\n" * 20,
            "truncated": photo[: len(photo) // 3], "empty": b"", "wrong_key": photo, "cut": photo}


@dataclass
class Answer:
    """What a /predict answer says about the people, in a form two answers can be compared in."""

    numbers: np.ndarray  # (N, 4 + 1 + 3K): box, score and keypoints of every person
    masks: list[str]  # the COCO RLE counts of every person's mask

    @classmethod
    def of(cls, body: dict) -> "Answer":
        return cls(np.array([p["box"] + [p["score"]] + sum(p.get("keypoints", []), []) for p in body["people"]]),
                   [p["mask"]["counts"] for p in body["people"] if "mask" in p])

    def same_as(self, other: "Answer") -> bool:
        return (self.numbers.shape == other.numbers.shape and np.allclose(self.numbers, other.numbers, rtol=0,
                                                                          atol=1e-3) and self.masks == other.masks)


@dataclass
class Tally:
    good_ok: int = 0
    good_failed: int = 0
    bad_4xx: int = 0
    bad_other: int = 0  # a bad request answered with anything but its 4xx
    server_errors: int = 0  # 5xx answers
    connection_errors: int = 0  # requests (not the cut ones) that got no answer
    cut: int = 0
    sent: int = 0
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {"good": [], "big": []})
    samples: list[str] = field(default_factory=list)  # the first failures, for the report

    def fail(self, what: str) -> None:
        if len(self.samples) < 10:
            self.samples.append(what)


class Soak:
    def __init__(self, server: Server, client, data: dict[str, bytes], tally: Tally) -> None:
        self.server, self.client, self.data, self.tally = server, client, data, tally
        self.expected: dict[str, Answer] = {}  # the warm-up answer for "good" and "big"

    async def post(self, kind: str, *, multipart: bool = False, key: str = KEY):
        """One request of ``kind``: (status or None when the connection failed, JSON body, seconds)."""
        start = time.perf_counter()
        kwargs = {"files": {"image": (f"{kind}.jpg", self.data[kind], "image/jpeg")}} if multipart else \
            {"content": self.data[kind], "headers": {"content-type": "image/jpeg"}}
        kwargs.setdefault("headers", {})["X-API-Key"] = key
        try:
            response = await self.client.post(self.server.url + QUERY, **kwargs)
        except Exception as e:  # noqa: BLE001 - counted, the soak goes on
            return None, repr(e), time.perf_counter() - start
        try:
            body = response.json()
        except ValueError:
            body = response.text[:200]
        return response.status_code, body, time.perf_counter() - start

    async def warm_up(self, clients: int) -> None:
        """One request of each kind (the good ones' answers become the expected ones), then 3 per client of
        the mix, so that the memory measured next already holds what ``clients`` at once need."""
        for kind in ("good", "big"):
            status, body, _ = await self.post(kind)
            if status != 200:
                raise RuntimeError(f"warm-up {kind}: {status} {body}")
            self.expected[kind] = Answer.of(body)
        for kind in BAD:
            if not await self.one(kind):
                raise RuntimeError(f"warm-up {kind}: {self.tally.samples[-1]}")
        await self.cut()
        await self.run(clients, 3 * clients, seconds=600, seed=-1)
        if self.tally.samples:
            raise RuntimeError(f"the warm-up failed: {'; '.join(self.tally.samples)}")

    async def one(self, kind: str, multipart: bool = False) -> bool:
        """Send one request of ``kind`` and count its answer; True when it was as it must be."""
        if kind == "cut":
            await self.cut()
            return True
        t = self.tally
        status, body, seconds = await self.post(kind, multipart=multipart, key="wrong" if kind == "wrong_key" else KEY)
        if status is None:
            t.connection_errors += 1
            t.fail(f"{kind}: no answer ({body})")
            return False
        if status >= 500:
            t.server_errors += 1
            t.fail(f"{kind}: {status} {body}")
        if kind in BAD:
            ok = status == BAD[kind]
            t.bad_4xx += ok
            t.bad_other += not ok
            if not ok:
                t.fail(f"{kind}: {status}, expected {BAD[kind]}: {body}")
            return ok
        ok = status == 200 and Answer.of(body).same_as(self.expected[kind])
        t.good_ok += ok
        t.good_failed += not ok
        if ok:
            t.latency_ms[kind].append(seconds * 1000)
        else:
            t.fail(f"{kind}: {status}, {'a different answer' if status == 200 else body}")
        return ok

    async def cut(self) -> None:
        """A client that sends the headers and half the photo, then closes the connection."""
        body = self.data["cut"]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
            writer.write(f"POST {QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\nContent-Type: "
                         f"image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)  # let the server start reading the body
            writer.close()
            await writer.wait_closed()
        except OSError as e:
            self.tally.connection_errors += 1
            self.tally.fail(f"cut: could not even connect ({e!r})")
        self.tally.cut += 1

    async def run(self, clients: int, max_requests: int, seconds: float, seed: int) -> float:
        """The mixed load; returns its wall time."""
        kinds, weights = list(MIX), list(MIX.values())
        stop_at = time.monotonic() + seconds

        async def client(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            while self.tally.sent < max_requests and time.monotonic() < stop_at:
                self.tally.sent += 1
                await self.one(rng.choices(kinds, weights)[0], multipart=rng.random() < 0.5)

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return time.perf_counter() - start

    async def drain(self, clients: int, timeout: float = 120) -> dict:
        """``clients`` good requests; SIGTERM once the server holds at least half of them; all must be answered
        correctly and the server exit with code 0. Counted apart (``self.tally`` is a fresh one)."""
        self.tally = Tally()
        tasks = [asyncio.create_task(self.one("good")) for _ in range(clients)]
        held, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline and not all(t.done() for t in tasks):
            health = (await self.client.get(self.server.url + "/healthz")).json()
            held = health["in_model"] + health["queued"]
            if held >= max(1, clients // 2):
                break
            await asyncio.sleep(0.01)
        self.server.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        answered = sum(await asyncio.gather(*tasks))
        try:
            exit_code = await asyncio.to_thread(self.server.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            exit_code = None  # still running: the drain failed (the server is killed on the way out)
        return {"requests": clients, "held_at_sigterm": held, "answered_correctly": answered,
                "exit_code": exit_code, "seconds": time.monotonic() - start,
                "ok": answered == clients and exit_code == 0 and held > 0, "failures": self.tally.samples}


async def soak(weights: Path, args) -> dict:
    import httpx2

    data = payloads()
    server = Server(weights, max_batch=args.max_batch, threads=args.threads, extra_args=("--api-key", KEY))
    try:
        async with httpx2.AsyncClient(timeout=args.request_timeout,
                                      limits=httpx2.Limits(max_connections=args.clients + 2)) as client:
            await server.wait_ready(client)
            run = Soak(server, client, data, Tally())
            await run.warm_up(args.clients)
            run.tally = tally = Tally()  # the warm-up is not counted
            rss_start = rss_mb(server.proc.pid)
            series = [(0.0, rss_start)]  # (seconds into the load, RSS MB), every second

            async def watch_memory():
                start = time.monotonic()
                while True:
                    await asyncio.sleep(1.0)
                    series.append((time.monotonic() - start, rss_mb(server.proc.pid)))

            watcher = asyncio.create_task(watch_memory())
            wall = await run.run(args.clients, args.max_requests, args.minutes * 60, args.seed)
            watcher.cancel()
            rss_end = rss_mb(server.proc.pid)
            healthy = (await client.get(server.url + "/healthz")).status_code == 200
            drain = await run.drain(args.clients)
    finally:
        output = server.output()
        if server.proc.poll() is None:
            server.stop()
    good = np.array(tally.latency_ms["good"] or [np.nan])
    big = np.array(tally.latency_ms["big"] or [np.nan])
    log_errors = [line for line in output.splitlines() if re.search(r"\bERROR\b|Traceback", line)]
    return {"good_ok": tally.good_ok, "good_failed": tally.good_failed, "bad_4xx": tally.bad_4xx,
            "server_errors": tally.server_errors, "rss_growth": rss_end / rss_start - 1,
            "p50_ms": float(np.percentile(good, 50)), "p99_ms": float(np.percentile(good, 99)),
            "bad_other": tally.bad_other, "connection_errors": tally.connection_errors, "cut": tally.cut,
            "requests": tally.sent, "seconds": wall, "big_p50_ms": float(np.percentile(big, 50)),
            "big_p99_ms": float(np.percentile(big, 99)), "big_ok": len(tally.latency_ms["big"]),
            "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_peak_mb": max(mb for _, mb in series),
            "rss_mb_every_10s": [round(mb) for mb in {int(t // 10): mb for t, mb in series}.values()],
            "server_log_errors": len(log_errors), "server_log_error_samples": log_errors[:5],
            "healthy_after_load": healthy, "drain": drain, "failure_samples": tally.samples}


def missed_goals(r: dict, rss_goal: float) -> list[str]:
    checks = [(r["good_failed"] == 0, f"{r['good_failed']} good requests failed"),
              (r["bad_other"] == 0, f"{r['bad_other']} bad requests not answered with their 4xx"),
              (r["server_errors"] == 0, f"{r['server_errors']} 5xx answers"),
              (r["connection_errors"] == 0, f"{r['connection_errors']} requests got no answer"),
              (r["server_log_errors"] == 0, f"{r['server_log_errors']} ERROR lines in the server log"),
              (r["healthy_after_load"], "/healthz failed after the load"),
              (r["drain"]["ok"], f"drain failed: {r['drain']}"),
              (r["rss_growth"] < rss_goal, f"RSS grew {r['rss_growth']:.1%} (goal < {rss_goal:.0%})")]
    return [message for ok, message in checks if not ok]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="a poseseg checkpoint or .onnx file (default: random-weight tiny)")
    parser.add_argument("--minutes", type=float, default=3.0, help="the load stops after this long (default 3)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="... or after this many requests")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--max-batch", type=int, default=1, help="the server's --max-batch (1: the CPU default)")
    parser.add_argument("--request-timeout", type=float, default=300, help="seconds a client waits for an answer")
    parser.add_argument("--rss-goal", type=float, default=0.10, help="largest allowed RSS growth, a fraction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or random_tiny_checkpoint(Path(tmp))
        r = asyncio.run(soak(weights, args))
    print(f"{r['requests']} requests in {r['seconds']:.0f} s from {args.clients} clients ({r['cut']} cut "
          f"mid-upload), weights {'random tiny' if args.weights is None else args.weights}")
    print("| good ok | good failed | bad 4xx | bad other | 5xx | no answer | ERROR logged | RSS MB start -> end "
          "(peak) | growth | p50 ms | p99 ms | 12 MP p50 ms | drain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    d = r["drain"]
    print(f"| {r['good_ok']} | {r['good_failed']} | {r['bad_4xx']} | {r['bad_other']} | {r['server_errors']} | "
          f"{r['connection_errors']} | {r['server_log_errors']} | {r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} "
          f"({r['rss_peak_mb']:.0f}) | {r['rss_growth']:+.1%} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
          f"{r['big_p50_ms']:.0f} | {d['answered_correctly']}/{d['requests']} answered, exit {d['exit_code']} |")
    if args.json:
        args.json.write_text(json.dumps({**r, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    missed = missed_goals(r, args.rss_goal)
    for line in r["failure_samples"] + r["server_log_error_samples"]:
        print("  ", line)
    print("goals met: " + GOALS if not missed else "goals missed: " + "; ".join(missed))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
