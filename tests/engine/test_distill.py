"""poseseg distill: a two-trunk teacher folded into one trunk on unlabelled pictures."""
from __future__ import annotations

import shutil

import pytest
import torch

import poseseg
from poseseg.cli import main
from poseseg.engine.distill import DistillOptions, distill
from poseseg.keypoint_schema import coco_person_schema
from poseseg.weights.checkpoint_file import load_checkpoint, save_checkpoint
from poseseg.weights.load import load_model
from synth_helpers import SIZE

SMALL = [f"model.input.test_size={SIZE}", f"model.input.max_size={SIZE}", "model.box.score_thresh=0.0",
         "model.box.detections_per_image=4"]


def _checkpoint(path, *extra: str):
    """A tiny model with random weights whose mask head gives masks far from 0.5 everywhere."""
    torch.manual_seed(0)
    cfg = poseseg.load_config("tiny", SMALL + list(extra))
    model = poseseg.build_model(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
        if model.mask_head is not None:
            for p in model.mask_head.parameters():
                p.normal_(0, 0.3)
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(),
                           "keypoint_schema": coco_person_schema().to_dict()})
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("teacher") / "two_trunks.pt", "model.mask.trunk=own")


@pytest.fixture(scope="module")
def pictures(synth_data):
    return synth_data / "train"


def _options(tmp_path, **kw):
    return DistillOptions(**{"iters": 4, "batch_size": 2, "checkpoint_every": 2, "roi_score": 0.0,
                             "output_dir": str(tmp_path / "runs"), **kw})


def test_distill_writes_a_one_trunk_model_with_the_teachers_boxes_and_keypoints(teacher, pictures, tmp_path):
    result = distill(teacher, pictures, tmp_path / "one.pt", options=_options(tmp_path), quiet=True)
    assert result.iterations == 4 and result.held_out == 1 and result.mask_iou is not None
    assert 0.0 <= result.mask_iou <= 1.0
    student, cfg = load_model(tmp_path / "one.pt")
    assert cfg.model.mask.trunk == "shared" and student.mask_trunk is None
    assert "mask IoU against the teacher" in (tmp_path / "one.pt.report.txt").read_text()
    two, _ = load_model(teacher)
    image = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    got, want = student.predict_rois([image]).detections[0], two.predict_rois([image]).detections[0]
    for key in ("boxes", "scores", "keypoints"):
        assert torch.equal(got[key], want[key]), key
    # the mask head learnt: it moved from the teacher's towards the teacher's masks on the shared trunk
    assert not torch.equal(student.mask_head.predictor.weight, two.mask_head.predictor.weight)


def test_resume_continues_exactly(teacher, pictures, tmp_path):
    straight = distill(teacher, pictures, tmp_path / "a.pt", options=_options(tmp_path / "a"), quiet=True)
    interrupted = distill(teacher, pictures, tmp_path / "b.pt", options=_options(tmp_path / "b"), quiet=True)
    # as if it died after its checkpoint at iteration 2: the last checkpoint and the output are gone
    (interrupted.run_dir / "model_0000004.pt").unlink()
    (tmp_path / "b.pt").unlink()
    resumed = distill(resume=interrupted.run_dir, quiet=True)
    assert resumed.iterations == 4
    want, got = load_checkpoint(tmp_path / "a.pt")["model"], load_checkpoint(tmp_path / "b.pt")["model"]
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert straight.mask_iou == resumed.mask_iou


def test_bad_inputs_are_clear_errors_and_nothing_is_overwritten(teacher, pictures, tmp_path):
    options = _options(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        distill(teacher, tmp_path / "missing", tmp_path / "o.pt", options=options)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no pictures in it"):
        distill(teacher, tmp_path / "empty", tmp_path / "o.pt", options=options)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for i in range(3):
        (corrupt / f"{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="none of the 2 pictures to learn from could be read"):
        distill(teacher, corrupt, tmp_path / "o.pt", options=options, quiet=True)
    one_trunk = _checkpoint(tmp_path / "shared.pt")
    with pytest.raises(ValueError, match="already reads one trunk"):
        distill(one_trunk, pictures, tmp_path / "o.pt", options=options)
    no_masks = _checkpoint(tmp_path / "kps.pt", "model.heads=[box,keypoint]")
    with pytest.raises(ValueError, match="has no mask head"):
        distill(no_masks, pictures, tmp_path / "o.pt", options=options)
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="nothing is overwritten"):
        distill(teacher, pictures, taken, options=options)
    assert taken.read_bytes() == b"precious"


def test_cli_distill(teacher, pictures, tmp_path, capsys):
    shutil.copytree(pictures, tmp_path / "pics")
    args = ["distill", "--teacher", str(teacher), "--images", str(tmp_path / "pics"), "--out", str(tmp_path / "c.pt"),
            "--iters", "2", "--batch-size", "1", "--output-dir", str(tmp_path / "runs")]
    assert main(args) == 0
    assert "mask IoU against the teacher" in capsys.readouterr().out
    assert main(args) == 2  # the output exists now
    assert "nothing is overwritten" in capsys.readouterr().err
