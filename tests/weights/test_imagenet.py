"""torchvision's ImageNet ResNet-50 as our trunk: through the named weights (torch.hub cache) and through
`poseseg convert-weights`; the converted trunk computes what torchvision's computes."""
import torch
from torchvision.models import ResNet50_Weights, resnet50

from poseseg import cli
from poseseg.weights.load import load_model
from poseseg.weights import resolve_named

SLIM = ["--set", "model.heads=[box]", "--set", "model.fpn.channels=16", "--set", "model.box.fc_dim=16"]


def _torchvision_trunk(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_named_and_converted_imagenet_trunk(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("POSESEG_OFFLINE", "1")
    torch.manual_seed(0)
    net = resnet50(weights=None).eval()
    cache = tmp_path / "home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    source = cache / ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    torch.save(net.state_dict(), source)

    out = tmp_path / "r50.pt"
    assert cli.main(["convert-weights", str(source), "--out", str(out)] + SLIM) == 0
    # 320 keys: the 265 trunk tensors, 53 BN step counters and the classifier (fc.weight, fc.bias)
    assert "265 source tensors used, 55 skipped" in capsys.readouterr().out
    report = (tmp_path / "r50.pt.report.txt").read_text()
    assert "fc.weight: ImageNet classifier layer" in report and "num_batches_tracked" in report

    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    for weights in (out, resolve_named("torchvision-resnet50-imagenet")):
        model, cfg = load_model(weights, overrides=["model.input.test_size=64", "model.input.max_size=64"])
        assert cfg.model.backbone.norm == "frozen_bn" and cfg.model.input.channel_order == "rgb"
        with torch.no_grad():
            batch, _ = model.transform([image])
            ours = model.backbone(batch.tensors)["res5"]
            want = _torchvision_trunk(net, batch.tensors)
        scale = want.abs().max()
        torch.testing.assert_close(ours / scale, want / scale, atol=1e-5, rtol=0)


def test_imagenet_start_on_a_new_schema_keeps_the_heads_own_init(tmp_path, monkeypatch):
    """The ImageNet checkpoint's heads were never trained: a 14-keypoint model keeps its own head init,
    takes the trunk, and the log does not claim any joint kept trained filters."""
    from poseseg.modeling.model import build_model
    from poseseg.weights import config_from_weights, init_from_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("POSESEG_OFFLINE", "1")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    net = resnet50(weights=None)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1])
    cfg = config_from_weights("torchvision-resnet50-imagenet", ["model.keypoint.num_keypoints=14"])
    model = build_model(cfg)
    model.keypoint_schema = {"names": [f"joint{i}" for i in range(14)]}
    head_before = model.keypoint_head.heatmap_deconv.weight.clone()
    log = init_from_weights(model, "torchvision-resnet50-imagenet")
    assert not any("schema change" in line for line in log) and "left at initialisation" in log[-1]
    assert torch.equal(model.keypoint_head.heatmap_deconv.weight, head_before)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, net.layer4[2].conv3.weight)
