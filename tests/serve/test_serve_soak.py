"""benchmarks/serve_soak.py, bounded to a few seconds of load: the real server under good photos, 12-megapixel
photos, non-images, truncated JPEGs, empty bodies, wrong API keys and uploads cut short, then SIGTERM."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("httpx2", reason="the soak's clients use httpx2 (dev extra)")


def test_a_short_soak_loses_nothing(trained_checkpoint, tmp_path):
    """Goals of the script (its exit status) and the JSON's keys; the serve tests' checkpoint saves making one."""
    out = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}" + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_soak.py"), "--minutes", "0.1",
                          "--max-requests", "40", "--rss-goal", "0.5", "--weights", str(trained_checkpoint),
                          "--json", str(out)],
                         env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr  # every goal met (RSS loosely: 40 requests show no leak)
    result = json.loads(out.read_text())
    assert {"good_ok", "good_failed", "bad_4xx", "server_errors", "rss_growth", "p50_ms", "p99_ms"} <= set(result)
    assert result["server_errors"] == 0 and result["good_failed"] == 0 and result["server_log_errors"] == 0
    assert result["good_ok"] > 0 and result["bad_4xx"] > 0 and result["cut"] > 0 and result["bad_other"] == 0
    assert 0 < result["requests"] <= 40 and result["p50_ms"] <= result["p99_ms"]
    drain = result["drain"]
    assert drain["ok"] and drain["exit_code"] == 0 and drain["answered_correctly"] == drain["requests"] > 0
    assert "goals met" in run.stdout and "| good ok |" in run.stdout
