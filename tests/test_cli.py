"""The poseseg command: train, eval, check-data, show-data, synth, demo and their error messages."""
import json


from poseseg.cli import main
from synth_helpers import engine_overrides


def test_eval_writes_metrics_and_results(trained_checkpoint, synth_data, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--weights", str(trained_checkpoint), "--data", str(synth_data / "val.json"),
                 "--images", str(synth_data / "val"), "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm", "keypoints", "warnings", "backend"}
    metrics = {k: metrics[k] for k in ("bbox", "segm", "keypoints")}
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert all(v is None or 0.0 <= v <= 1.0 for s in metrics.values() for v in s.values())
    for t in ("bbox", "segm", "keypoints"):
        assert isinstance(json.loads((out / f"results_{t}.json").read_text()), list)
    assert "keypoints" in capsys.readouterr().out


def test_train_runs_are_numbered_and_keep_their_config(synth_data, tmp_path):
    args = ["train", "--config", "tiny", *engine_overrides(synth_data, tmp_path, **{"train.iters": 1,
                                                                                      "data.val_json": ""})]
    assert main(args) == 0 and main(args) == 0
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert runs == ["exp", "exp2"]
    assert "iters: 1" in (tmp_path / "exp" / "config.yaml").read_text()
    assert (tmp_path / "exp" / "metrics.jsonl").read_text().count("loss_box_cls") == 1


def test_train_with_a_misspelt_key_is_a_one_line_error(capsys):
    assert main(["train", "--config", "tiny", "model.keypoint.sigam=2"]) == 2
    err = capsys.readouterr().err
    assert "model.keypoint.sigma" in err and "Traceback" not in err


def test_train_without_data_says_which_flags(capsys):
    assert main(["train", "--config", "tiny"]) == 2
    assert "--data" in capsys.readouterr().err


def test_nan_loss_stops_with_every_term(synth_data, tmp_path, capsys):
    args = ["train", "--config", "tiny", *engine_overrides(synth_data, tmp_path, **{"train.base_lr": 1e30,
                                                                                      "train.warmup_iters": 0})]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at iteration" in err and "loss_box_cls" in err


def test_check_data_flags_a_missing_image(synth_data, tmp_path, capsys):
    data = json.loads((synth_data / "train.json").read_text())
    data["images"][0]["file_name"] = "nope.jpg"
    (tmp_path / "t.json").write_text(json.dumps(data))
    assert main(["check-data", "--data", str(tmp_path / "t.json"), "--images", str(synth_data / "train")]) == 1
    assert "nope.jpg" in capsys.readouterr().out


def test_show_data_draws_images(synth_data, tmp_path):
    assert main(["show-data", "--data", str(synth_data / "val.json"), "--images", str(synth_data / "val"),
                 "--out", str(tmp_path), "--num", "2"]) == 0
    assert len(list(tmp_path.glob("*_gt.jpg"))) == 2


def test_synth_is_deterministic(tmp_path):
    assert main(["synth", "--out", str(tmp_path / "a"), "--train", "2", "--val", "1", "--size", "96"]) == 0
    assert main(["synth", "--out", str(tmp_path / "b"), "--train", "2", "--val", "1", "--size", "96"]) == 0
    assert (tmp_path / "a" / "train.json").read_bytes() == (tmp_path / "b" / "train.json").read_bytes()
