"""Faults from outside a training run: preemption signals, a full disk, a killed data worker, a NaN
before the first checkpoint. Each stops the run cleanly, says how to resume, and the resumed run
ends with exactly the weights of the run left alone."""
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from poseseg.engine import checkpoint as ckpt
from poseseg.engine.faults import EXIT_PREEMPTED, PreemptionWatch, dead_ranks
from poseseg.engine.train import train
from poseseg.safe_write import WriteFailed, write_text_atomic
from poseseg.weights.checkpoint_file import load_checkpoint

from synth_helpers import engine_overrides, tiny_config
from test_resume import assert_same_weights


@pytest.fixture(scope="module")
def straight_weights(synth_data, tmp_path_factory) -> dict:
    """The final weights of the 6-iteration run nothing interrupts."""
    run = train(tiny_config(synth_data, tmp_path_factory.mktemp("straight")), quiet=True)
    return load_checkpoint(run.final_checkpoint)["model"]


def _train_cmd(synth_data: Path, out: Path, **extra) -> list[str]:
    return [sys.executable, "-m", "poseseg", "train", "--config", "tiny",
            *engine_overrides(synth_data, out, **{"train.name": "run", **extra})]


def _logged_iterations(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line).get("iter", 0) for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def test_sigterm_finishes_the_step_saves_and_resumes_exactly(synth_data, tmp_path, straight_weights):
    stop_after = random.Random(7).randint(1, 4)  # a "random" step, the same on every run of the suite
    proc = subprocess.Popen(_train_cmd(synth_data, tmp_path, **{"train.checkpoint_every": 100}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "run"
    _wait_for(lambda: _logged_iterations(run_dir) >= stop_after, proc)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == EXIT_PREEMPTED, err
    assert "SIGTERM received" in err and f"--resume {run_dir}" in err
    saved = ckpt.latest_checkpoint(run_dir)
    assert saved is not None and not (run_dir / "model_final.pt").exists()
    assert stop_after <= load_checkpoint(saved)["iteration"] < 6

    resumed = train(tiny_config(synth_data, tmp_path), resume=run_dir, quiet=True)
    assert_same_weights(straight_weights, load_checkpoint(resumed.final_checkpoint)["model"])


def test_a_full_disk_keeps_the_last_checkpoint_and_says_where(synth_data, tmp_path, straight_weights):
    first = train(tiny_config(synth_data, tmp_path, **{"train.iters": 2, "train.name": "run"}), quiet=True)
    run_dir = first.run_dir
    good = run_dir / "model_0000002.pt"
    before = good.read_bytes()
    limit = len(before) // 2  # the next checkpoint cannot be written; config.yaml and the log can

    def small_files_only():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    cmd = [sys.executable, "-m", "poseseg", "train", "--resume", str(run_dir),
           *engine_overrides(synth_data, tmp_path, **{"train.iters": 6})]
    done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files_only, timeout=300)

    assert done.returncode == 74, done.stderr
    assert f"could not write {run_dir / 'model_0000004.pt'}" in done.stderr and "free" in done.stderr
    assert "Traceback" not in done.stderr
    assert good.read_bytes() == before  # the previous checkpoint is whole and unchanged
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "model_0000004.pt").exists()

    resumed = train(tiny_config(synth_data, tmp_path), resume=run_dir, quiet=True)
    assert_same_weights(straight_weights, load_checkpoint(resumed.final_checkpoint)["model"])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_data_worker_names_the_fix_and_the_run_resumes(synth_data, tmp_path, straight_weights):
    proc = subprocess.Popen(_train_cmd(synth_data, tmp_path, **{"data.num_workers": 1}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "run"
    _wait_for(lambda: ckpt.latest_checkpoint(run_dir) is not None, proc)
    workers = _children(proc.pid)
    assert proc.poll() is None and workers, "the run ended before its data worker could be killed"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)  # what the out-of-memory killer does
    _, err = proc.communicate(timeout=120)

    assert proc.returncode not in (0, None), err
    assert "data-loading worker died" in err and "data.num_workers=0" in err and f"--resume {run_dir}" in err
    resumed = train(tiny_config(synth_data, tmp_path), resume=run_dir, quiet=True)  # 0 workers: same batches
    assert_same_weights(straight_weights, load_checkpoint(resumed.final_checkpoint)["model"])


def test_a_nan_before_the_first_checkpoint_leaves_no_run_folder(synth_data, tmp_path):
    cfg = tiny_config(synth_data, tmp_path, **{"train.base_lr": 1e30, "train.clip_grad_norm": 0,
                                               "train.optimizer": "sgd", "train.checkpoint_every": 100})
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(cfg, quiet=True)
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_preemption_watch_catches_the_first_signal_only(tmp_path):
    with PreemptionWatch(["SIGUSR1"], grace_s=5) as watch:
        assert not watch.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        assert watch.received == "SIGUSR1"
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # a second one would end the process
    assert watch.budget_warning(step_s=1.0, save_s=2.0) is None
    assert "train.preempt_grace_s=5" in watch.budget_warning(step_s=4.0, save_s=2.0)
    assert watch.budget_warning(step_s=4.0, save_s=2.0) is None  # once


def test_preemption_watch_outside_the_main_thread_installs_nothing():
    before = signal.getsignal(signal.SIGUSR2)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(PreemptionWatch(["SIGUSR2"]).__enter__()._previous))
    thread.start()
    thread.join()
    assert seen == [{}] and signal.getsignal(signal.SIGUSR2) is before


def test_dead_ranks_names_the_process_that_is_gone():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    import socket

    peers = [(socket.gethostname(), os.getpid()), (socket.gethostname(), gone.pid), ("elsewhere", 1)]
    assert dead_ranks(peers) == [1]


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old")
    script = (f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (10, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
              f"from poseseg.safe_write import write_text_atomic; write_text_atomic({str(target)!r}, 'x' * 100)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode != 0 and "WriteFailed" in done.stderr
    assert f"could not write {target}" in done.stderr and "the previous metrics.json is unchanged" in done.stderr
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "plain").write_text("")
    with pytest.raises(WriteFailed, match="folder exists and is writable"):
        write_text_atomic(tmp_path / "plain" / "x.json", "x")  # a file where a folder should be
