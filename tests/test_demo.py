"""The demo runs end to end on a tiny budget (a smoke test: its accuracy is in the README)."""
import json

from poseseg.cli import main


def test_demo_end_to_end_then_resume(tmp_path, capsys):
    args = ["demo", "--minutes", "0.1", "--out", str(tmp_path / "runs" / "demo"), "--data-dir",
            str(tmp_path / "synth"), "--train-images", "12", "--val-images", "4", "data.num_workers=0",
            "data.train_sizes=[160]", "model.input.test_size=160", "train.log_every=5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "demo"
    assert "keypoints" in out and "bbox" in out
    assert (run / "model_final.pt").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"bbox", "segm", "keypoints"} <= set(metrics)
    assert len(list((run / "overlays").glob("*.png"))) == 4
    # a second run reuses the dataset and, with --resume, the run's checkpoint
    assert main(args + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "using the synthetic dataset" in out and "resuming" in out
    assert not (tmp_path / "runs" / "demo2").exists()


def test_demo_trains_a_fixed_number_of_iterations(tmp_path, capsys):
    args = ["demo", "--iters", "3", "--out", str(tmp_path / "runs" / "demo"), "--data-dir", str(tmp_path / "synth"),
            "--train-images", "6", "--val-images", "2", "data.num_workers=0", "data.train_sizes=[160]",
            "model.input.test_size=160", "train.log_every=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training tiny for 3 iterations" in out and "[3/3]" in out
    assert "the README's numbers are for" in out  # 3 iterations are not the README's run: no comparison
    assert main(args[:3] + ["--minutes", "1"] + args[3:]) == 2  # one or the other


def test_the_verdict_compares_only_the_readmes_iteration_count():
    from poseseg.demo import DEMO_ITERS, README_AP, verdict

    metrics = {task: {"AP": mean} for task, (mean, _) in README_AP.items()}
    assert all("as expected" in line for line in verdict(metrics, DEMO_ITERS))
    low = {task: {"AP": 0.0} for task in README_AP}
    assert all("below the README" in line for line in verdict(low, DEMO_ITERS))
    assert "do not compare" in verdict(metrics, DEMO_ITERS // 2)[0]


def test_demo_data_of_another_version_or_seed_is_made_anew(tmp_path, capsys):
    from poseseg.data.synth import SYNTH_VERSION
    from poseseg.demo import ensure_dataset

    root = tmp_path / "synth"
    ensure_dataset(root, num_train=2, num_val=1, seed=0, size=96)
    assert json.loads((root / "val.json").read_text())["info"]["version"] == SYNTH_VERSION
    ensure_dataset(root, num_train=2, num_val=1, seed=0, size=96)
    assert "using the synthetic dataset" in capsys.readouterr().out
    ensure_dataset(root, num_train=2, num_val=1, seed=1, size=96)
    assert "making version" in capsys.readouterr().out
    assert json.loads((root / "val.json").read_text())["info"]["seed"] == 1
