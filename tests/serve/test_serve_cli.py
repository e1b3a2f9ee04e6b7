"""`poseseg serve` from the command line: a real uvicorn process, the API key from the environment, the warnings,
and the app factory that each process of `--workers N` calls."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from poseseg.cli import main
from poseseg.serve.server import exposure_warnings

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: bytes | None = None, key: str | None = None) -> tuple[int, dict]:
    headers = {"X-API-Key": key} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_command_with_an_api_key_from_the_environment(trained_checkpoint, photo_bytes):
    port = free_port()
    env = {**os.environ, "POSESEG_API_KEY": "from-env", "PYTHONPATH": f"{SRC}{os.pathsep}"
           + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "poseseg", "serve", "--weights", str(trained_checkpoint),
                               "--port", str(port), "--max-batch", "2"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if request(base + "/healthz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert request(base + "/info")[0] == 401
        code, info = request(base + "/info", key="from-env")
        assert code == 200 and info["max_batch"] == 2 and info["weights"] == trained_checkpoint.name
        code, body = request(base + "/predict?score_thresh=0", photo_bytes, key="from-env")
        assert code == 200 and body["people"] and body["image"]["width"] == 640
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/" in output and "1 process(es)" in output
    assert "warning" not in output.lower()  # loopback: nothing to warn about


def test_exposed_host_warns_and_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert exposure_warnings("127.0.0.1", None) == [] and exposure_warnings("::1", None) == []
    assert len(exposure_warnings("0.0.0.0", "key")) == 1 and len(exposure_warnings("0.0.0.0", None)) == 2
    code = main(["serve", "--weights", str(tmp_path / "missing.pt"), "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.pt: no such file" in err
    assert "warning: --host 0.0.0.0" in err and "no API key" in err


def test_worker_processes_build_their_app_from_the_environment(trained_checkpoint, monkeypatch):
    from dataclasses import asdict

    from fastapi.testclient import TestClient

    from poseseg.serve.server import SPEC_ENV, ServerSpec, app_from_env
    from poseseg.serve.settings import ServeSettings

    spec = ServerSpec(weights=str(trained_checkpoint), device="cpu",
                      settings=ServeSettings(max_batch=3, api_key="k", weights=str(trained_checkpoint)))
    monkeypatch.setenv(SPEC_ENV, json.dumps({**asdict(spec), "settings": asdict(spec.settings)}))
    with TestClient(app_from_env()) as client:  # what `--workers N` runs in each process
        info = client.get("/info", headers={"X-API-Key": "k"}).json()
    assert info["max_batch"] == 3 and info["min_score_thresh"] == 0.0 and info["device"] == "cpu"
