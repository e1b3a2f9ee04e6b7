"""Faults under torchrun (2 Gloo processes on CPU): a preemption signal to the launcher, and a rank
killed with SIGKILL. Both leave a whole checkpoint, and `--resume` under torchrun ends with exactly
the weights of the 2-process run nothing interrupted."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poseseg.engine import checkpoint as ckpt
from poseseg.weights.checkpoint_file import load_checkpoint

from synth_helpers import engine_overrides
from test_faults import _children, _logged_iterations, _wait_for
from test_resume import assert_same_weights


def _torchrun(synth_data: Path, out: Path, *args: str, **extra) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "poseseg", "train", *args,
            *engine_overrides(synth_data, out, **{"train.name": "run", "train.batch_size": 1, **extra})]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)


@pytest.fixture(scope="module")
def straight_two_ranks(synth_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("straight2")
    done = _run(_torchrun(synth_data, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(out / "run" / "model_final.pt")["model"]


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def test_preempting_torchrun_saves_one_checkpoint_and_resumes_exactly(synth_data, tmp_path, straight_two_ranks):
    proc = subprocess.Popen(_torchrun(synth_data, tmp_path, **{"train.checkpoint_every": 100}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    run_dir = tmp_path / "run"
    _wait_for(lambda: _logged_iterations(run_dir) >= 2, proc)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to every worker's process group
    _, err = proc.communicate(timeout=120)

    assert "SIGTERM received" in err and f"--resume {run_dir}" in err, err[-3000:]
    saved = ckpt.latest_checkpoint(run_dir)
    assert saved is not None and not (run_dir / "model_final.pt").exists()
    state = load_checkpoint(saved)
    assert 2 <= state["iteration"] < 6 and len(state["rng"]) == 2  # both ranks stopped after the same step

    resumed = _run(_torchrun(synth_data, tmp_path, "--resume", str(run_dir)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(straight_two_ranks, load_checkpoint(run_dir / "model_final.pt")["model"])


def test_a_rank_killed_stops_the_other_with_its_name_and_resumes_exactly(synth_data, tmp_path,
                                                                         straight_two_ranks):
    proc = subprocess.Popen(_torchrun(synth_data, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=_env())
    run_dir = tmp_path / "run"
    _wait_for(lambda: ckpt.latest_checkpoint(run_dir) is not None, proc)
    workers = {_rank_of(pid): pid for pid in _children(proc.pid)}
    assert proc.poll() is None and 1 in workers, "the run ended before a rank could be killed"
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.time()
    _, err = proc.communicate(timeout=120)

    assert time.time() - killed_at < 60  # the survivor does not wait for a collective timeout
    assert proc.returncode != 0
    assert "rank 1 died" in err and f"--resume {run_dir}" in err, err[-3000:]
    assert ckpt.is_complete(ckpt.latest_checkpoint(run_dir))

    resumed = _run(_torchrun(synth_data, tmp_path, "--resume", str(run_dir)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(straight_two_ranks, load_checkpoint(run_dir / "model_final.pt")["model"])
