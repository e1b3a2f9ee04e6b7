"""Helpers of the serve tests: JSON compared with the Predictor's arrays, and `poseseg serve` as a real process."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

SRC = Path(__file__).resolve().parents[2] / "src"


def decode_rle(rle: dict) -> np.ndarray:
    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def assert_matches(people: list[dict], expected: dict) -> None:
    """The simple-format JSON holds exactly the Predictor's arrays."""
    assert len(people) == len(expected["scores"]) > 0
    np.testing.assert_allclose([p["box"] for p in people], expected["boxes"], rtol=0, atol=1e-4)
    np.testing.assert_allclose([p["score"] for p in people], expected["scores"], rtol=0, atol=1e-6)
    kps = np.array([p["keypoints"] for p in people])  # (N, K, 3): x, y, score
    np.testing.assert_allclose(kps[:, :, :2], expected["keypoints"][:, :, :2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(kps[:, :, 2], expected["keypoint_scores"], rtol=0, atol=1e-5)
    masks = np.stack([decode_rle(p["mask"]) for p in people])
    assert (masks != expected["masks"]).mean() < 1e-4


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: bytes | None = None, key: str | None = None, timeout: float = 60) -> tuple[int, dict]:
    """(status, JSON body) of a GET, or of a POST of ``data`` as the raw body."""
    headers = {"X-API-Key": key} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class ServerProcess:
    """``python -m poseseg serve ARGS`` on a free 127.0.0.1 port with one torch thread, its output in a file."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}" + os.environ.get("PYTHONPATH", ""),
               "OMP_NUM_THREADS": "1", **(env or {})}
        self._log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would stall the server
        self.proc = subprocess.Popen([sys.executable, "-m", "poseseg", "serve", *args, "--port", str(self.port)],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def wait_until_healthy(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.proc.poll() is None, f"the server exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"the server did not come up:\n{self.output()}"
            try:
                if request(self.url + "/healthz", timeout=5)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM, wait for the exit (killed if it takes longer than ``timeout``); the whole output."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.output()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()
