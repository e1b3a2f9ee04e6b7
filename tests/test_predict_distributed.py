"""`torchrun -m poseseg predict` on 2 Gloo processes writes what one process writes: the same predictions.json
(records, order, image ids), the same overlays and --save-format file, one report; and the pieces it is
made of (who predicts what, output names, image ids) on their own."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poseseg.cli import main
from poseseg.predict_shard import FRAME_ID_STRIDE, Part, RankFailed, from_rank0, gather_parts, number_parts, owners, \
    unique_names

from video_helpers import write_mjpeg_clip


@pytest.fixture
def photos(synth_data, tmp_path) -> Path:
    """7 pictures (two called p03), a corrupt p01x.jpg and a 3-frame video p04b.mkv, in this name order:
    p01 p01x p02 p03.jpg p03.png p04 p04b.mkv p05 p06."""
    folder = tmp_path / "photos"
    folder.mkdir()
    pictures = sorted((synth_data / "val").glob("*.jpg")) + sorted((synth_data / "train").glob("*.jpg"))[:2]
    for name, src in zip(("p01.jpg", "p02.jpg", "p03.jpg", "p04.jpg", "p05.jpg", "p06.jpg"), pictures):
        (folder / name).write_bytes(src.read_bytes())
    Image.open(pictures[-1]).save(folder / "p03.png")  # a second picture called p03
    (folder / "p01x.jpg").write_bytes(pictures[0].read_bytes()[:300])  # cut short: unreadable
    write_mjpeg_clip(folder / "p04b.mkv", [np.asarray(Image.open(pictures[1]).convert("RGB"))] * 3, fps=5)
    return folder


def _torchrun(args: list[str], log_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--log-dir", str(log_dir), "--redirects", "3", "-m", "poseseg", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


def _rank_log(log_dir: Path, rank: int, stream: str) -> str:
    (path,) = log_dir.glob(f"**/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def _assert_same_records(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) and want
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in w:
            if isinstance(w[key], (float, list)) and key != "segmentation":
                np.testing.assert_allclose(g[key], w[key], atol=1e-5, err_msg=key)
            else:
                assert g[key] == w[key], key


def _assert_same_csv(got: Path, want: Path) -> None:
    rows = [list(csv.reader(p.open())) for p in (got, want)]
    assert len(rows[0]) == len(rows[1]) > 1
    for g, w in zip(*rows):
        for a, b in zip(g, w):
            try:
                assert abs(float(a) - float(b)) <= 1e-3, (a, b)
            except ValueError:
                assert a == b


def test_two_processes_write_what_one_process_writes(trained_checkpoint, photos, tmp_path, capsys):
    args = ["predict", "--weights", str(trained_checkpoint), str(photos), "--score-thresh", "0", "--device", "cpu",
            "--save-format", "csv"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one)]) == 0
    single_err = capsys.readouterr().err
    logs = tmp_path / "logs"
    done = _torchrun([*args, "--out", str(two)], logs)
    assert done.returncode == 0, done.stderr[-3000:]

    _assert_same_records(json.loads((two / "predictions.json").read_text()),
                         json.loads((one / "predictions.json").read_text()))
    ids = {r["image_id"] for r in json.loads((two / "predictions.json").read_text())}
    assert {6 * FRAME_ID_STRIDE + f for f in range(3)} <= ids  # the video comes after 5 pictures of both ranks
    _assert_same_csv(two / "keypoints.csv", one / "keypoints.csv")
    overlays = {p.name for p in two.iterdir()}
    assert overlays == {p.name for p in one.iterdir()}
    assert {"p03_pred.jpg", "p03_2_pred.jpg", "p04b_pred.mp4"} <= overlays and len(overlays) == 7 + 1 + 2

    out = [_rank_log(logs, r, "stdout") for r in (0, 1)]
    err = [_rank_log(logs, r, "stderr") for r in (0, 1)]
    assert "7 images and 3 video frames" in out[0] and "(2 processes)" in out[0] and not out[1].strip()
    assert "1 file(s) could not be read" in err[0] and "could not be read" not in err[1]
    # p01x is the second input: rank 1 met it (its warning), rank 0 reported it once
    assert "warning: skipping" in err[1] and f"{photos / 'p01x.jpg'}" in err[1]
    assert sum(e.count("p01x.jpg") for e in err) == single_err.count("p01x.jpg") == 2


def test_every_input_has_one_rank_and_streams_go_to_rank_0():
    streams = [True, False, False, True, False, False, False]
    for world in (1, 2, 3, 8):
        owner = owners(streams, world)
        assert all(owner[i] == 0 for i, s in enumerate(streams) if s)
        counts = np.bincount([o for o, s in zip(owner, streams) if not s], minlength=world)
        assert counts.max() - counts.min() <= 1  # the files spread evenly
    assert owners(streams, 2) == [0, 0, 1, 0, 0, 1, 0]


def test_output_names_never_collide_case_or_suffix():
    assert unique_names(["x", "X", "x_2", "y", "x"]) == ["x", "X_3", "x_2", "y", "x_4"]
    assert unique_names(["a", "b"]) == ["a", "b"]


def test_image_ids_follow_the_input_order():
    """Pictures are numbered 1, 2, ... as read; a video after p pictures and f frames is video p + f + 1."""
    picture = lambda i: Part(i, records=[{"image_id": 0}], info={"file_name": f"{i}.jpg"})
    video = Part(2, records=[{"image_id": 0, "frame": 0}, {"image_id": 4, "frame": 4}], frames=2)
    unreadable = Part(3, failed=["3.jpg (broken)"])
    later_video = Part(5, records=[{"image_id": 1, "frame": 1}], frames=1)
    records, infos = number_parts([picture(0), picture(1), video, unreadable, picture(4), later_video])
    assert [r["image_id"] for r in records] == [1, 2, 3 * FRAME_ID_STRIDE, 3 * FRAME_ID_STRIDE + 4, 3,
                                                 (3 + 2 + 1) * FRAME_ID_STRIDE + 1]
    assert [i["id"] for i in infos] == [1, 2, 3] and infos[2]["file_name"] == "4.jpg"



def test_a_rank_that_stops_stops_every_rank_instead_of_leaving_them_waiting(monkeypatch):
    """What each rank does when one stops, with the collectives answering as 2 ranks would (the collectives
    themselves run in the torchrun test above)."""
    from poseseg.engine import distributed as dist

    monkeypatch.setattr(dist, "all_gather_objects", lambda obj: [None, "OSError: disk gone"])
    monkeypatch.setattr(dist, "gather_objects", lambda obj: pytest.fail("gathered after a rank stopped"))
    with pytest.raises(RankFailed, match=r"rank 1 stopped \(OSError: disk gone\).*no predictions.json"):
        gather_parts([Part(0)], None, 2)  # rank 0: rank 1 stopped
    with pytest.raises(OSError, match="disk gone"):
        gather_parts([Part(1)], OSError("disk gone"), 2)  # rank 1: its own error, after telling the others

    monkeypatch.setattr(dist, "is_main", lambda: False)
    monkeypatch.setattr(dist, "broadcast_object", lambda obj: (None, "ValueError: bad merge"))
    with pytest.raises(RankFailed, match="rank 0 stopped while merging the results .ValueError: bad merge"):
        from_rank0(None, None)
    monkeypatch.setattr(dist, "broadcast_object", lambda obj: ("totals", None))
    assert from_rank0(None, None) == "totals"


def test_a_lost_or_doubled_input_is_an_error(monkeypatch):
    from poseseg.engine import distributed as dist

    monkeypatch.setattr(dist, "gather_objects", lambda parts: [parts, [Part(1), Part(1)]])
    with pytest.raises(RuntimeError, match="3 parts for 2 inputs"):
        gather_parts([Part(0)], None, 2)
