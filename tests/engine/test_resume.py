"""A run killed with SIGKILL and resumed ends with exactly the weights of the run left alone."""
import os
import signal
import subprocess
import sys
import time

import torch

from poseseg.engine import checkpoint as ckpt
from poseseg.weights.checkpoint_file import load_checkpoint
from poseseg.engine.train import train

from synth_helpers import engine_overrides, tiny_config


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_killed_and_resumed_run_matches_the_straight_run(synth_data, tmp_path):
    straight = train(tiny_config(synth_data, tmp_path / "a"), quiet=True)
    want = load_checkpoint(straight.final_checkpoint)["model"]

    # the same run in a subprocess, killed as soon as its first checkpoint is on disk
    cmd = [sys.executable, "-m", "poseseg", "train", "--config", "tiny",
           *engine_overrides(synth_data, tmp_path / "b", **{"train.name": "run"})]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "b" / "run"
    deadline = time.time() + 300
    while ckpt.latest_checkpoint(run_dir) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.latest_checkpoint(run_dir) is not None, proc.stderr.read()
    assert not (run_dir / "model_final.pt").exists() or proc.returncode == 0

    resumed = train(tiny_config(synth_data, tmp_path / "b"), resume=run_dir, quiet=True)
    assert resumed.run_dir == run_dir
    assert_same_weights(want, load_checkpoint(resumed.final_checkpoint)["model"])


def test_resume_from_a_checkpoint_in_process(synth_data, tmp_path):
    straight = train(tiny_config(synth_data, tmp_path / "a"), quiet=True)
    run = train(tiny_config(synth_data, tmp_path / "b", **{"train.iters": 2}), quiet=True)
    # extend the stopped run to the full length: same schedule as the straight run
    cfg = tiny_config(synth_data, tmp_path / "b")
    resumed = train(cfg, resume=run.run_dir / "model_0000002.pt", quiet=True)
    assert_same_weights(load_checkpoint(straight.final_checkpoint)["model"],
                        load_checkpoint(resumed.final_checkpoint)["model"])


def test_half_written_checkpoints_are_never_picked_up(tmp_path):
    (tmp_path / "model_0000002.pt").write_bytes(b"x")
    (tmp_path / ".model_0000004.pt.abc.tmp").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path).name == "model_0000002.pt"


def test_time_limit_stops_saves_evaluates_and_resumes(synth_data, tmp_path):
    # 0.0001 minutes: the limit is reached after the first iteration
    run = train(tiny_config(synth_data, tmp_path, **{"train.iters": 50, "train.time_limit_minutes": 0.0001}),
                quiet=True)
    assert run.iterations == 1
    state = load_checkpoint(run.final_checkpoint)
    assert state["iteration"] == 1
    assert run.metrics is not None and set(run.metrics) == {"bbox", "segm", "keypoints"}
    # the stopped run resumes where the limit cut it
    resumed = train(tiny_config(synth_data, tmp_path, **{"train.iters": 3}), resume=run.run_dir, quiet=True)
    assert resumed.iterations == 3 and load_checkpoint(resumed.final_checkpoint)["iteration"] == 3


def test_skipped_non_finite_steps_still_count_as_done(synth_data, tmp_path):
    # an absurd learning rate makes every loss after the first step non-finite; with nonfinite=skip the
    # run still ends at train.iters, and its checkpoints say so (a resume must not redo those steps)
    cfg = tiny_config(synth_data, tmp_path, **{"train.iters": 3, "train.base_lr": 1e30, "train.clip_grad_norm": 0,
                                               "train.nonfinite": "skip", "train.optimizer": "sgd"})
    run = train(cfg, quiet=True)
    assert run.skipped_steps >= 1
    assert run.iterations == 3 and load_checkpoint(run.final_checkpoint)["iteration"] == 3
