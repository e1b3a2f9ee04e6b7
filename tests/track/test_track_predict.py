"""poseseg predict --track end to end with a (briefly trained) tiny model, and Predictor.track."""
import json

import numpy as np
import pytest
from video_helpers import write_mjpeg_clip

import poseseg
from poseseg.cli import main
from poseseg.data.synth_video import generate_video


@pytest.fixture(scope="module")
def walking_clip(tmp_path_factory):
    """A 10-frame synthetic walk at 160 x 120 as MJPEG, frame 5 corrupt."""
    from poseseg.track import open_source

    out = tmp_path_factory.mktemp("walk")
    generate_video(out, frames=10, people=2, seed=1, size=(160, 120), fps=10, write_frames=True)
    frames = [f.image for f in open_source(out / "video.mp4")]
    return write_mjpeg_clip(out / "walk.mkv", frames, fps=10, corrupt=(5,))


def test_predict_track_writes_ids_frames_mot_and_a_video(trained_checkpoint, walking_clip, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", "--weights", str(trained_checkpoint), str(walking_clip), "--out", str(out),
                 "--track", "--smooth", "--save-mot", "--score-thresh", "0.0", "--batch-size", "2"])
    assert code == 0
    captured = capsys.readouterr()
    assert "frame 5" in captured.err and "1 unreadable frame(s) skipped" in captured.out
    results = json.loads((out / "predictions.json").read_text())
    assert results, "no tracked detections at score 0: the ID paths went untested"
    assert all(isinstance(r["track_id"], int) and r["track_id"] >= 1 for r in results)
    assert {r["frame"] for r in results} <= set(range(10)) - {5}
    mot = (out / "mot" / "walk.txt").read_text().splitlines()
    assert len(mot) == len(results)
    assert {int(line.split(",")[1]) for line in mot} == {r["track_id"] for r in results}
    assert (out / "walk_track.mp4").stat().st_size > 0


def test_predictor_track_yields_frames_with_track_ids(trained_checkpoint, walking_clip):
    predictor = poseseg.Predictor(trained_checkpoint, score_thresh=0.0)
    frames = list(predictor.track(walking_clip, max_frames=4, stride=2))
    assert [f["frame"] for f in frames] == [0, 2, 4, 6]
    for f in frames:
        assert f["track_ids"].shape == f["scores"].shape and f["image"].shape == (120, 160, 3)
        assert f["keypoints"].shape[1:] == (17, 3) and (f["track_ids"] >= 1).all()


def test_predict_stride_and_max_frames_without_tracking(trained_checkpoint, walking_clip, tmp_path):
    out = tmp_path / "plain"
    assert main(["predict", "--weights", str(trained_checkpoint), str(walking_clip), "--out", str(out),
                 "--max-frames", "2", "--stride", "3", "--score-thresh", "0.0"]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert {r["frame"] for r in results} <= {0, 3} and all("track_id" not in r for r in results)
    assert (out / "walk_pred.mp4").exists()


def test_predict_tracks_a_folder_of_frames(trained_checkpoint, walking_clip, tmp_path):
    out = tmp_path / "folder"
    frames_dir = walking_clip.parent / "frames"
    assert main(["predict", "--weights", str(trained_checkpoint), str(frames_dir), "--out", str(out), "--track",
                 "--stride", "2", "--score-thresh", "0.0", "--save-mot", "--set", "track.min_hits=1"]) == 0
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["frame"] for r in results} <= {0, 2, 4, 6, 8}
    assert all(r["file_name"] == str(frames_dir) and r["track_id"] >= 1 for r in results)
    assert (out / "frames_track.mp4").exists() and (out / "mot" / "frames.txt").exists()


def test_predict_rejects_a_bad_stride(trained_checkpoint, walking_clip, tmp_path, capsys):
    assert main(["predict", "--weights", str(trained_checkpoint), str(walking_clip), "--stride", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--stride" in capsys.readouterr().err
    assert main(["predict", "--weights", str(trained_checkpoint), str(walking_clip), "--track",
                 "--set", "track.min_hit=2", "--out", str(tmp_path / "y")]) == 2
    assert "track.min_hits" in capsys.readouterr().err  # a misspelt key names the right one


def test_tracked_overlays_colour_by_track_id():
    from poseseg.visualize import draw, person_color

    image = np.zeros((60, 60, 3), np.uint8)
    result = {"boxes": np.array([[5.0, 5.0, 50.0, 50.0]]), "scores": np.array([0.9]), "track_ids": np.array([4])}
    top_edge = np.asarray(draw(image, result, show_labels=False))[:12, 27]
    assert (top_edge == person_color(4)).all(-1).any()
    result["track_ids"] = np.array([5])
    top_edge = np.asarray(draw(image, result, show_labels=False))[:12, 27]
    assert not (top_edge == person_color(4)).all(-1).any()
