"""The paper's protocol (issue 23): refinement fine-tuned from a trained Regular model. `train --init-weights`
puts each plain conv's weights into the deformable conv that replaces it and keeps the offset branch at zero,
so RB and RB+H compute what the Regular model computes at step 0; the start-up log names the new tensors."""
import pytest
import torch

from poseseg import cli
from poseseg.data.image_io import load_image_rgb, rgb_to_tensor
from poseseg.ops import DeformConv2d
from poseseg.weights.load import load_model

RB = ["model.backbone.deform_stages=[3,4,5]"]
RB_H = [*RB, "model.keypoint.deform=true"]
BACKBONE_DEFORM = 12  # tiny: ResNet-18 res3-res5, 2 BasicBlocks x 2 convs each
HEAD_DEFORM = 4  # the keypoint tower


def _start_from(checkpoint, synth_data, out, switches, capsys):
    """`poseseg train --init-weights checkpoint` with the switches and no step: the model training would start
    from, and the start-up log."""
    code = cli.main(["train", "--init-weights", str(checkpoint), "--data", str(synth_data / "train.json"),
                     "--images", str(synth_data / "train"), "--iters", "0", "--output-dir", str(out), *switches,
                     "data.val_json=", "data.num_workers=0"])
    assert code == 0
    model, _ = load_model(next(out.glob("*/model_final.pt")))
    return model, capsys.readouterr().out


@pytest.mark.parametrize("switches", [RB, RB_H], ids=["RB", "RB+H"])
def test_refinement_from_a_regular_checkpoint_equals_it_at_step_0(synth_data, trained_checkpoint, tmp_path, capsys,
                                                                   switches):
    refined, log = _start_from(trained_checkpoint, synth_data, tmp_path / "runs", switches, capsys)
    regular, _ = load_model(trained_checkpoint)
    source = torch.load(trained_checkpoint, weights_only=True)["model"]

    deform = {n: m for n, m in refined.named_modules() if isinstance(m, DeformConv2d)}
    expected = BACKBONE_DEFORM + (HEAD_DEFORM if switches == RB_H else 0)
    assert len(deform) == expected
    assert not any(isinstance(m, DeformConv2d) for m in regular.modules())
    for name, conv in deform.items():  # the plain conv's weights in the main weight, the offset branch zero
        assert torch.equal(conv.weight, source[f"{name}.weight"]), name
        if conv.bias is not None:
            assert torch.equal(conv.bias, source[f"{name}.bias"]), name
        assert not conv.offset_conv.weight.any() and not conv.offset_conv.bias.any(), name
    # the log counts the offset branches as new (2 tensors per conv), not as loaded, and names every conv
    total = len(refined.state_dict())
    stale_fit = sum(k.startswith("keypoint_head.score_calibration.") for k in source)  # never carried over
    assert f"{total - 2 * expected - stale_fit} of {total} tensors loaded" in log
    assert f"{expected} deformable convs take their main weight" in log and "start at zero" in log
    assert all(name in log for name in deform)

    images = [rgb_to_tensor(load_image_rgb(p)) for p in sorted((synth_data / "val").iterdir())]
    with torch.no_grad():
        want, got = regular(images), refined(images)
    assert sum(w["boxes"].shape[0] for w in want) > 0
    for w, g in zip(want, got):
        assert w.keys() == g.keys()
        for key in w:  # boxes, scores, labels, masks, keypoints, keypoint_scores
            torch.testing.assert_close(g[key], w[key], atol=1e-4, rtol=1e-4, msg=key)


def test_a_checkpoint_that_already_has_the_offsets_loads_them(synth_data, trained_checkpoint, tmp_path, capsys):
    """From an RB+H checkpoint with trained (here: non-zero) offsets, nothing is new and the offsets load."""
    rb_h, _ = _start_from(trained_checkpoint, synth_data, tmp_path / "a", RB_H, capsys)
    conv = rb_h.backbone.layer3[0].conv1
    with torch.no_grad():
        conv.offset_conv.bias.fill_(0.25)
    payload = torch.load(trained_checkpoint, weights_only=True)
    payload["model"] = rb_h.state_dict()
    payload["config"]["model"]["backbone"]["deform_stages"] = [3, 4, 5]
    payload["config"]["model"]["keypoint"]["deform"] = True
    torch.save(payload, tmp_path / "rb_h.pt")
    again, log = _start_from(tmp_path / "rb_h.pt", synth_data, tmp_path / "b", [], capsys)
    assert "deformable convs take their main weight" not in log
    assert torch.equal(again.backbone.layer3[0].conv1.offset_conv.bias, conv.offset_conv.bias)
