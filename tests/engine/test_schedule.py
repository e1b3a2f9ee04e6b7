"""The training clock and the lr schedule: by iterations or by time, and the finishing phase."""
import pytest
import torch

from poseseg.config import ConfigError, TrainConfig, load_config
from poseseg.engine import checkpoint as ckpt
from poseseg.weights.checkpoint_file import load_checkpoint
from poseseg.engine.schedule import LRSchedule, TrainingClock, in_finishing_phase, lr_factor
from poseseg.engine.train import train
from synth_helpers import tiny_config


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_time_schedule_drops_lr_at_fractions_of_the_budget():
    t = TrainConfig(schedule="time", time_limit_minutes=10, lr_step_fractions=[0.75, 0.9], warmup_fraction=0.05,
                    warmup_factor=0.001, iters=10**6)
    fake = FakeClock()
    clock = TrainingClock(t, clock=fake)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    schedule = LRSchedule(opt, t)
    seen = {}
    for second in (0, 15, 30, 100, 449, 450, 539, 540, 599):
        fake.now = 100.0 + second
        schedule.apply(clock.progress(iteration=7), iteration=7)  # the iteration count plays no part
        seen[second] = opt.param_groups[0]["lr"]
    assert seen[0] == pytest.approx(0.5 * 0.001)
    assert seen[15] == pytest.approx(0.5 * (0.001 * 0.5 + 0.5))  # half-way through the 30 s warm-up
    assert seen[30] == seen[100] == seen[449] == pytest.approx(0.5)
    assert seen[450] == seen[539] == pytest.approx(0.05)  # 75 % of 600 s
    assert seen[540] == seen[599] == pytest.approx(0.005)  # 90 %
    assert not clock.finished(10)
    fake.now = 100.0 + 600
    assert clock.finished(10) and clock.progress(10) == 1.0


def test_time_clock_carries_seconds_over_a_resume():
    t = TrainConfig(schedule="time", time_limit_minutes=1)
    fake = FakeClock()
    first = TrainingClock(t, clock=fake)
    fake.now += 42.0
    state = first.state_dict()
    second = TrainingClock(t, clock=fake)
    second.load_state_dict(state)
    fake.now += 3.0
    assert second.elapsed() == pytest.approx(45.0) and second.progress(0) == pytest.approx(0.75)


def test_iteration_schedule_is_the_step_schedule():
    t = TrainConfig(iters=100, lr_steps=[60, 80], warmup_iters=10, warmup_factor=0.1)
    factors = [lr_factor(t, i / 100, i) for i in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[5] == pytest.approx(0.55)
    assert factors[10] == factors[59] == 1.0
    assert factors[60] == pytest.approx(0.1) and factors[80] == pytest.approx(0.01)
    assert not in_finishing_phase(t, 0.99)
    t.finish_fraction = 0.2
    assert not in_finishing_phase(t, 0.79) and in_finishing_phase(t, 0.8)


def test_bad_schedule_values_name_the_key():
    with pytest.raises(ConfigError, match="time_limit_minutes"):
        load_config("tiny", ["train.schedule=time"])
    with pytest.raises(ConfigError, match="train.finish_fraction"):
        load_config("tiny", ["train.finish_fraction=1.5"])
    with pytest.raises(ConfigError, match="train.finish_freeze"):
        load_config("tiny", ["train.finish_freeze=heads"])


def test_finishing_phase_leaves_frozen_parameters_bit_identical(synth_data, tmp_path):
    """Iterations 3-4 of 4 freeze the trunk: backbone, FPN, RPN and box head (BN statistics included)
    stay exactly as they were after iteration 2; the keypoint and mask heads go on learning."""
    cfg = tiny_config(synth_data, tmp_path, **{"train.iters": 4, "train.checkpoint_every": 2,
                                                "train.finish_fraction": 0.5, "train.finish_freeze": "trunk"})
    run = train(cfg, quiet=True)
    before = load_checkpoint(run.run_dir / ckpt.checkpoint_name(2))["model"]
    after = load_checkpoint(run.final_checkpoint)["model"]
    frozen_prefixes = ("backbone.", "fpn.", "rpn.", "box_head.")
    frozen = [k for k in before if k.startswith(frozen_prefixes)]
    assert any("running_mean" in k for k in frozen)
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    for head in ("keypoint_head.", "mask_head."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(head)), head


def test_time_schedule_trains_until_the_budget_and_saves_the_clock(synth_data, tmp_path):
    cfg = tiny_config(synth_data, tmp_path, **{"train.iters": 10_000, "train.schedule": "time",
                                                "train.time_limit_minutes": 0.05})
    run = train(cfg, quiet=True)
    assert 0 < run.iterations < 10_000
    state = load_checkpoint(run.final_checkpoint)
    assert state["iteration"] == run.iterations and state["schedule"]["elapsed_seconds"] >= 3.0
