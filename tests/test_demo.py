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
