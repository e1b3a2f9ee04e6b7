"""poseseg synth --video: the sequence, its COCO JSON with track_id, and the tracker on its ground truth."""
import contextlib
import io
import json
from collections import defaultdict

import numpy as np
import pytest
from pycocotools.coco import COCO

from poseseg.cli import main
from poseseg.data.synth_video import generate_video
from poseseg.track import Tracker, open_source


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_video")
    info = generate_video(out, frames=36, people=2, seed=3, size=(192, 144), fps=15, write_frames=True)
    return out, info


def _tracks(coco: dict) -> dict[int, dict[int, dict]]:
    """track_id -> frame -> annotation."""
    frame_of = {im["id"]: im["frame"] for im in coco["images"]}
    out = defaultdict(dict)
    for a in coco["annotations"]:
        out[a["track_id"]][frame_of[a["image_id"]]] = a
    return out


def test_the_sequence_is_coco_with_track_ids_and_readable_video(clip):
    out, info = clip
    data = json.loads((out / "video.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "video.json"))
    assert len(coco.imgs) == 36 and [im["frame"] for im in data["images"]] == list(range(36))
    assert {a["track_id"] for a in data["annotations"]} == {1, 2}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        kps = np.asarray(a["keypoints"]).reshape(17, 3)
        on = kps[:, 2] == 2  # visible keypoints lie on the visible mask, so inside its box
        assert (kps[on, 0] >= x - 1).all() and (kps[on, 0] <= x + w + 1).all()
        assert (kps[on, 1] >= y - 1).all() and (kps[on, 1] <= y + h + 1).all()
    with open_source(out / "video.mp4") as source:
        frames = list(source)
    assert len(frames) == 36 and frames[0].image.shape == (144, 192, 3) and source.fps == 15
    assert len(list(open_source(out / "frames"))) == 36


def test_the_figures_cross_and_the_tracker_keeps_both_ids(clip):
    """Ground truth (with pixel noise) as detections: the two figures swap sides, each keeps one ID."""
    out, _ = clip
    coco = json.loads((out / "video.json").read_text())
    tracks = _tracks(coco)
    x = {tid: {f: a["bbox"][0] + a["bbox"][2] / 2 for f, a in per.items()} for tid, per in tracks.items()}
    both = sorted(set(x[1]) & set(x[2]))
    order = np.sign([x[1][f] - x[2][f] for f in both])
    assert order[0] != order[-1], "the figures do not cross in this clip"

    rng = np.random.default_rng(0)
    tracker = Tracker(frame_rate=15)
    given = defaultdict(set)
    for frame in range(36):
        anns = [per[frame] for per in tracks.values() if frame in per]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns]).reshape(-1, 4) + rng.normal(0, 1.0, (len(anns), 4))
        kps = np.array([np.asarray(a["keypoints"], float).reshape(17, 3) for a in anns]).reshape(-1, 17, 3)
        ids = tracker.update(boxes, np.full(len(anns), 0.9), kps + rng.normal(0, 1.0, kps.shape) * [1, 1, 0],
                             (kps[..., 2] > 0).astype(float))
        for a, tid in zip(anns, ids):
            given[a["track_id"]].add(int(tid))
    assert all(len(v - {-1}) == 1 for v in given.values()), dict(given)
    assert given[1] - {-1} != given[2] - {-1}


def test_cli_writes_the_sequence(tmp_path, capsys):
    assert main(["synth", "--video", "--out", str(tmp_path), "--frames", "3", "--people", "2", "--size", "96"]) == 0
    assert "3 frames" in capsys.readouterr().out
    assert (tmp_path / "video.mp4").stat().st_size > 0 and len(list((tmp_path / "frames").glob("*.jpg"))) == 3
    assert json.loads((tmp_path / "video.json").read_text())["images"][0]["width"] == 96
