"""Frame sources: videos through PyAV, folders in order, unreadable frames skipped and counted; MOT lines."""
import numpy as np
import pytest
from PIL import Image
from video_helpers import write_mjpeg_clip

from poseseg.data.video_io import VideoWriter
from poseseg.track import mot_lines, open_source, write_mot
from poseseg.track.sources import SourceError


def _frames(n: int, size=(48, 64)) -> list[np.ndarray]:
    return [np.full((*size, 3), 20 * i, np.uint8) for i in range(n)]


def test_a_corrupt_frame_in_the_middle_is_skipped_with_a_warning(tmp_path, capsys):
    clip = write_mjpeg_clip(tmp_path / "clip.mkv", _frames(8), corrupt=(4,))
    with open_source(clip) as source:
        got = [(f.index, int(f.image.mean())) for f in source]
    assert got == [(i, 20 * i) for i in range(8) if i != 4]  # the rest of the video is still read
    assert len(source.skipped) == 1 and "frame 4" in source.skipped[0]
    assert "frame 4" in capsys.readouterr().err


def test_stride_and_max_frames(tmp_path):
    clip = write_mjpeg_clip(tmp_path / "clip.mkv", _frames(10), fps=20)
    source = open_source(clip, stride=3, max_frames=3)
    frames = list(source)
    assert [f.index for f in frames] == [0, 3, 6] and source.fps == 20
    assert frames[1].time == pytest.approx(3 / 20)


def test_a_folder_is_read_in_natural_order_and_bad_images_are_skipped(tmp_path, capsys):
    for i in (1, 2, 10):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"f{i}.png")
    (tmp_path / "f5.png").write_bytes(b"not a png")
    source = open_source(tmp_path, fps=12)
    frames = list(source)
    assert [f.name for f in frames] == ["f1.png", "f2.png", "f10.png"] and [f.index for f in frames] == [0, 1, 3]
    assert source.fps == 12 and len(source.skipped) == 1 and "f5.png" in capsys.readouterr().err


def test_a_folder_takes_every_image_suffix_in_image_io(tmp_path):
    # one list of image suffixes (data.image_io.IMAGE_EXTS), .gif included; other files are left out
    for i, suffix in enumerate((".jpg", ".GIF", ".webp")):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"f{i}{suffix}")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [f.name for f in open_source(tmp_path)] == ["f0.jpg", "f1.GIF", "f2.webp"]


def test_sources_that_cannot_be_opened_say_why(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("hello")
    with pytest.raises(SourceError, match="cannot open as a video"):
        open_source(tmp_path / "text.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        open_source(tmp_path / "empty")
    with pytest.raises(SourceError, match="stride"):
        open_source(tmp_path, stride=0)
    with pytest.raises(SourceError, match="rtsp://127.0.0.1:1/cam: cannot open"):  # a stream nobody serves
        open_source("rtsp://127.0.0.1:1/cam")


def test_a_video_cut_short_says_how_many_frames_it_lacks(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clip = write_mjpeg_clip(tmp_path / "clip.mkv", [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(32)])
    assert len(list(open_source(clip))) == 32 and "cut short" not in capsys.readouterr().err
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 45 // 100])  # an interrupted copy
    read = len(list(open_source(cut)))
    assert 0 < read < 32
    err = capsys.readouterr().err
    assert f"{cut}: only {read} of the 32 frames its header announces" in err and "cut short" in err
    assert len(list(open_source(cut, max_frames=3))) == 3  # stopping early on purpose is no cut
    assert "cut short" not in capsys.readouterr().err


def test_a_folder_of_pictures_of_different_sizes_is_not_one_sequence(tmp_path):
    for name, (h, w) in (("a.png", (48, 64)), ("b.png", (48, 64)), ("c.png", (60, 80)), ("d.png", (30, 30))):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "0_broken.png").write_bytes(b"not a png")  # unreadable: skipped when read, not a size
    with pytest.raises(SourceError, match=r"c\.png is 80x60 but a\.png is 64x48.*without --track"):
        open_source(tmp_path)


def test_the_writer_makes_a_video_the_reader_reads_back(tmp_path):
    with VideoWriter(tmp_path / "out.mp4", fps=12.5) as writer:
        for frame in _frames(5, size=(33, 47)):  # odd sides are padded to even for yuv420p
            writer.write(frame)
    with VideoWriter(tmp_path / "none" / "empty.mp4", fps=12.5):
        pass  # no frame: no file (nor folder)
    assert not (tmp_path / "none").exists()
    source = open_source(tmp_path / "out.mp4")
    frames = list(source)
    assert len(frames) == 5 and frames[0].image.shape == (34, 48, 3) and source.fps == pytest.approx(12.5)
    assert abs(int(frames[3].image.mean()) - 60) <= 3


def test_mot_lines_are_read_by_motmetrics(tmp_path):
    mm = pytest.importorskip("motmetrics")
    lines = mot_lines(0, np.array([[10, 20, 50, 120], [0, 0, 5, 5]]), np.array([3, -1]), np.array([0.9, 0.2]))
    lines += mot_lines(1, np.array([[12, 20, 52, 120]]), np.array([3]))
    assert lines[0] == "1,3,10.00,20.00,40.00,100.00,0.9000,-1,-1,-1"
    df = mm.io.loadtxt(str(write_mot(tmp_path / "seq.txt", lines)), fmt="mot15-2D")
    assert len(df) == 2 and list(df.index.get_level_values("FrameId")) == [1, 2]
    assert df.iloc[1]["Width"] == 40.0
