"""`poseseg serve` from the command line: a real uvicorn process, the API key from the environment, the warnings,
and the app factory that each process of `--workers N` calls."""
import concurrent.futures
import json
import signal
import time

from poseseg.cli import main
from poseseg.serve.server import exposure_warnings

from serve_helpers import ServerProcess, request


def test_serve_command_with_an_api_key_from_the_environment(trained_checkpoint, photo_bytes):
    with ServerProcess("--weights", str(trained_checkpoint), "--max-batch", "2",
                       env={"POSESEG_API_KEY": "from-env"}) as server:
        server.wait_until_healthy()
        assert request(server.url + "/info")[0] == 401
        code, info = request(server.url + "/info", key="from-env")
        assert code == 200 and info["max_batch"] == 2 and info["weights"] == trained_checkpoint.name
        code, body = request(server.url + "/predict?score_thresh=0", photo_bytes, key="from-env")
        assert code == 200 and body["people"] and body["image"]["width"] == 640
        output = server.stop()
    assert f"http://127.0.0.1:{server.port}/" in output and "1 process(es)" in output
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


def test_sigterm_answers_every_request_in_flight_then_exits_0(trained_checkpoint, photo_bytes):
    """SIGTERM while 8 requests are accepted (one in the model, the rest queued): all 8 get their 200 with the
    same body as before, then the server exits with code 0."""
    clients = 8
    url = "/predict?score_thresh=0"
    with ServerProcess("--weights", str(trained_checkpoint), "--max-batch", "1") as server:
        server.wait_until_healthy()
        code, reference = request(server.url + url, photo_bytes)
        assert code == 200 and reference["people"]
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            answers = [pool.submit(request, server.url + url, photo_bytes) for _ in range(clients)]
            deadline = time.monotonic() + 60
            while True:  # wait until the server holds at least 4 of them unanswered
                health = request(server.url + "/healthz")[1]
                if health["in_model"] + health["queued"] >= 4:
                    break
                assert time.monotonic() < deadline, health
                time.sleep(0.01)
            server.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            results = [a.result(timeout=120) for a in answers]
        exit_code = server.proc.wait(timeout=60)
        output = server.output()
    assert [code for code, _ in results] == [200] * clients, output
    assert all(body == reference for _, body in results)
    assert exit_code == 0, output
    assert time.monotonic() - started < 60
    assert "Waiting for connections to close" in output and "stopped by SIGTERM" in output
