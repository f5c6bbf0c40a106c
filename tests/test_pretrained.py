"""Initialisation from other weights: inflation, cross-modality init, torchvision files, checkpoints."""
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from models import build_model
from models.backbones import resnet_features
from models.pretrained import (
    WeightsError,
    cross_modality_init,
    inflate_conv_weight,
    inflate_state_dict,
    load_checkpoint,
    resolve_weights,
)
from orchestrator.errors import UserError


class Tiny2d(nn.Module):
    """conv-BN-ReLU-conv-pool-linear on (B, 3, H, W)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, kernel_size=3, padding=1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class Tiny3d(nn.Module):
    """Tiny2d inflated: 3x3x3 and 2x3x3 kernels, no temporal padding, pooled over (T, H, W)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 4, kernel_size=3, padding=(0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(4)
        self.conv2 = nn.Conv3d(4, 6, kernel_size=(2, 3, 3), padding=(0, 1, 1))
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_inflate_conv_weight_repeats_and_divides():
    w = torch.randn(4, 3, 3, 3)
    w3 = inflate_conv_weight(w, 5)
    assert w3.shape == (4, 3, 5, 3, 3)
    for t in range(5):
        torch.testing.assert_close(w3[:, :, t], w / 5)
    torch.testing.assert_close(w3.sum(dim=2), w)


def test_inflated_net_reproduces_2d_net_on_a_constant_clip():
    torch.manual_seed(0)
    net2d = Tiny2d()
    with torch.no_grad():  # non-trivial BN statistics, so copying them is checked too
        net2d.bn1.running_mean.uniform_(-1, 1)
        net2d.bn1.running_var.uniform_(0.5, 2)
        net2d.bn1.weight.uniform_(0.5, 1.5)
    net3d = Tiny3d()
    state = inflate_state_dict(net2d.state_dict(), net3d, skip=())
    assert set(state) == set(net3d.state_dict())
    net3d.load_state_dict(state)
    net2d.eval(), net3d.eval()

    frame = torch.randn(2, 3, 12, 12)  # (B, C, H, W)
    clip = frame.unsqueeze(2).repeat(1, 1, 6, 1, 1)  # (B, C, T, H, W): the "boring video"
    torch.testing.assert_close(net3d(clip), net2d(frame), rtol=1e-4, atol=1e-5)


def test_inflate_state_dict_names_mismatched_layers():
    wrong = Tiny2d().state_dict()
    wrong["conv2.weight"] = torch.randn(7, 4, 3, 3)
    del wrong["bn1.running_mean"]
    with pytest.raises(WeightsError, match=r"missing: bn1\.running_mean; shape mismatch: conv2\.weight"):
        inflate_state_dict(wrong, Tiny3d(), skip=())


def test_cross_modality_init_shape_and_values():
    w = torch.randn(8, 3, 7, 7)
    flow = cross_modality_init(w, 10)
    assert flow.shape == (8, 10, 7, 7)
    for c in range(10):
        torch.testing.assert_close(flow[:, c], w.mean(dim=1))
    w3d = torch.randn(8, 3, 3, 7, 7)  # also for an already inflated (O, 3, kT, kH, kW) kernel
    assert cross_modality_init(w3d, 2).shape == (8, 2, 3, 7, 7)


def test_load_2d_weights_into_a_flow_backbone(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)

    net = resnet_features("resnet18", in_channels=10, weights=path)
    expected_conv1 = source.conv1.weight.mean(dim=1, keepdim=True).repeat(1, 10, 1, 1)
    torch.testing.assert_close(net.conv1.weight, expected_conv1)
    torch.testing.assert_close(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.testing.assert_close(net.bn1.running_var, source.bn1.running_var)

    with pytest.raises(WeightsError, match=r"shape mismatch: conv1\.weight \(64, 3, 7, 7\) vs \(32, 3, 7, 7\).*width"):
        resnet_features("resnet18", width=0.5, weights=path)
    with pytest.raises(WeightsError, match="no such weights file"):
        resnet_features("resnet18", weights=tmp_path / "missing.pth")


def test_load_checkpoint_round_trip_and_new_head(tmp_path):
    torch.manual_seed(0)
    source = build_model("i3d", num_classes=7, modality="rgb", width=0.125)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)

    same = build_model("i3d", num_classes=7, modality="rgb", width=0.125)
    assert load_checkpoint(same, path) == []
    for key, value in source.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value)

    fewer_classes = build_model("i3d", num_classes=3, modality="rgb", width=0.125)
    fresh_head = fewer_classes.streams.rgb.fc.weight.clone()
    assert load_checkpoint(fewer_classes, path) == ["streams.rgb.fc.bias", "streams.rgb.fc.weight"]
    torch.testing.assert_close(fewer_classes.streams.rgb.fc.weight, fresh_head)
    torch.testing.assert_close(fewer_classes.streams.rgb.conv1.conv.weight, source.streams.rgb.conv1.conv.weight)

    torch.save(source.state_dict(), tmp_path / "bare.pt")  # a bare state dict loads too
    with pytest.raises(WeightsError, match="fc.weight"):
        load_checkpoint(fewer_classes, tmp_path / "bare.pt", skip_head=False)


def test_a_head_of_as_many_other_classes_is_not_kept(tmp_path):
    """A source of 4 classes fine-tuned on a target of 4 others: its head would map them arbitrarily.
    The checkpoint's class names (actionlab's model.pt keeps them) decide, not the count."""
    torch.manual_seed(0)
    source = build_model("i3d", num_classes=4, modality="rgb", width=0.125)
    path = tmp_path / "model.pt"
    torch.save({"model": source.state_dict(), "class_names": ["Band", "Pillar", "Dot", "Ring"]}, path)
    target = build_model("i3d", num_classes=4, modality="rgb", width=0.125)
    fresh_head = target.streams.rgb.fc.weight.clone()
    head = ["streams.rgb.fc.bias", "streams.rgb.fc.weight"]
    assert load_checkpoint(target, path, class_names=["TopHalf", "BottomHalf", "LeftHalf", "RightHalf"]) == head
    torch.testing.assert_close(target.streams.rgb.fc.weight, fresh_head)
    torch.testing.assert_close(target.streams.rgb.conv1.conv.weight, source.streams.rgb.conv1.conv.weight)
    assert load_checkpoint(target, path, class_names=["Band", "Pillar", "Dot", "Ring"]) == []  # its own classes
    torch.testing.assert_close(target.streams.rgb.fc.weight, source.streams.rgb.fc.weight)


def test_load_checkpoint_of_another_architecture_names_layers(tmp_path):
    path = tmp_path / "t3d.pt"
    torch.save({"model": build_model("t3d", num_classes=5, width=0.125, block_config=(1, 1, 1, 1)).state_dict()}, path)
    wider = build_model("t3d", num_classes=5, width=0.25, block_config=(1, 1, 1, 1))
    with pytest.raises(WeightsError, match=r"shape mismatch: features\.conv0\.weight.*in all.*width"):
        load_checkpoint(wider, path)
    other = build_model("i3d", num_classes=5, width=0.125)
    with pytest.raises(WeightsError, match=r"missing: streams\.rgb\.conv1\.conv\.weight.*unexpected: features\."):
        load_checkpoint(other, path)


def test_i3d_inflates_torchvision_googlenet(tmp_path):
    torch.manual_seed(0)
    googlenet = torchvision.models.googlenet(aux_logits=True, init_weights=False)  # as downloaded: with aux heads
    path = tmp_path / "googlenet.pth"
    torch.save(googlenet.state_dict(), path)

    model = build_model("i3d", num_classes=5, modality="rgb+flow", pretrained=str(path))
    rgb, flow = model.streams["rgb"], model.streams["flow"]
    torch.testing.assert_close(rgb.conv1.conv.weight, inflate_conv_weight(googlenet.conv1.conv.weight, 7))
    torch.testing.assert_close(flow.conv1.conv.weight,
                               cross_modality_init(inflate_conv_weight(googlenet.conv1.conv.weight, 7), 2))
    torch.testing.assert_close(rgb.inception4e.branch3[1].conv.weight,
                               inflate_conv_weight(googlenet.inception4e.branch3[1].conv.weight, 3))
    torch.testing.assert_close(flow.inception5b.branch1.bn.running_var, googlenet.inception5b.branch1.bn.running_var)
    assert rgb.transform_input and not flow.transform_input
    assert rgb.fc.weight.shape == (5, 1024)

    with pytest.raises(WeightsError, match="width"):
        build_model("i3d", num_classes=5, width=0.5, pretrained=str(path))


def test_t3d_inflates_a_torchvision_densenet_of_the_same_layout(tmp_path):
    torch.manual_seed(0)
    densenet = torchvision.models.DenseNet(growth_rate=4, block_config=(1, 1, 1, 1), num_init_features=8)
    path = tmp_path / "densenet.pth"
    torch.save(densenet.state_dict(), path)

    model = build_model("t3d", num_classes=5, modality="flow", width=0.125, block_config=(1, 1, 1, 1),
                        pretrained=str(path))
    conv0 = model.features.conv0.weight  # (8, 2, 3, 7, 7): inflated over 3 frames, then cross-modality
    torch.testing.assert_close(conv0, cross_modality_init(inflate_conv_weight(densenet.features.conv0.weight, 3), 2))
    torch.testing.assert_close(model.features.denseblock4.denselayer1.conv2.weight,
                               inflate_conv_weight(densenet.features.denseblock4.denselayer1.conv2.weight, 3))
    torch.testing.assert_close(model.features.norm5.running_mean, densenet.features.norm5.running_mean)


@pytest.fixture
def offline_torch_cache(tmp_path, monkeypatch):
    """An empty torch cache in tmp_path, and no network: every download fails as offline."""
    import urllib.error

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "checkpoints"


def cache_file(cache: Path, weights) -> Path:
    return cache / weights.url.rsplit("/", 1)[1]


def test_torchvision_weights_come_from_the_cache_and_offline_name_the_file_and_folder(offline_torch_cache):
    name = "ResNet18_Weights.IMAGENET1K_V1"
    cached = cache_file(offline_torch_cache, torchvision.models.get_weight(name))
    with pytest.raises(WeightsError, match=f"{cached.name} is not in the torch cache and could not be downloaded "
                                        rf"\(.*offline.*\).* put it in {offline_torch_cache}"):
        resolve_weights(name)
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes(b"x")
    assert resolve_weights(name) == cached
    with pytest.raises(WeightsError, match="no such weights file"):
        resolve_weights(offline_torch_cache / "missing.pth")


def test_imagenet_resolves_to_the_networks_imagenet1k_v1_through_torchvisions_download(tmp_path, monkeypatch):
    """Online: torchvision's own loader fetches the file into the cache (faked here: no network)."""
    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    fetched = []

    def fake_download(url, *args, **kwargs):  # what load_state_dict_from_url leaves behind
        fetched.append(url)
        (tmp_path / "checkpoints").mkdir(exist_ok=True)
        torch.save({}, tmp_path / "checkpoints" / url.rsplit("/", 1)[1])
        return {}

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake_download)
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    assert resolve_weights("imagenet", network="resnet50") == cache_file(tmp_path / "checkpoints", weights)
    assert fetched == [weights.url]
    assert resolve_weights("imagenet", network="resnet50") and len(fetched) == 1  # cached: no second fetch


def test_pretrained_imagenet_loads_into_each_architectures_2d_network(offline_torch_cache):
    """TSN's ResNet, I3D's GoogLeNet (inflated); C3D has no ImageNet network and says so."""
    offline_torch_cache.mkdir(exist_ok=True)
    for network, weights in (("resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
                             ("googlenet", torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1)):
        net = getattr(torchvision.models, network)(weights=None, **({"init_weights": False} if network == "googlenet"
                                                                   else {}))
        torch.save(net.state_dict(), cache_file(offline_torch_cache, weights))
    resnet = torch.load(cache_file(offline_torch_cache, torchvision.models.ResNet18_Weights.IMAGENET1K_V1))
    tsn = build_model("tsn", num_classes=3, num_segments=2, pretrained="imagenet", backbone="resnet18")
    assert torch.equal(tsn.state_dict()["backbone.conv1.weight"], resnet["conv1.weight"])
    build_model("i3d", num_classes=3, modality="flow", pretrained="imagenet")  # inflated without a mismatch
    with pytest.raises(WeightsError, match="no 2D network that ImageNet weights exist for"):
        build_model("c3d", num_classes=3, pretrained="imagenet")


def test_preflight_names_the_missing_imagenet_file(offline_torch_cache, tmp_path):
    from orchestrator.config import parse_experiment
    from orchestrator.plan import plan
    from orchestrator.preflight import preflight

    cfg = parse_experiment({"data": {"synth": True, "root": str(tmp_path / "d" / "UCF101"),
                                     "annotations": str(tmp_path / "d" / "ucfTrainTestlist")},
                            "model": {"pretrained": "imagenet", "options": {"backbone": "resnet18"}}}, source="x.yaml")
    assert cfg.model.pretrained == "imagenet"
    with pytest.raises(UserError, match=r"model.pretrained: imagenet \(resnet18: .*resnet18-\w+.pth "
                                        f"is not in the torch cache.*{offline_torch_cache}"):
        preflight(plan(cfg))


def test_the_cli_prints_a_weights_error_as_it_prints_a_user_error(monkeypatch, capsys, tmp_path):
    """The zoo raises its own error (it imports nothing from the orchestrator); the user reads one line."""
    from orchestrator import cli

    monkeypatch.chdir(tmp_path)  # no missing.pth here
    def run(args):
        resolve_weights("missing.pth")

    monkeypatch.setattr("orchestrator.commands.schema.run", run)
    assert cli.main(["schema"]) == 2
    assert capsys.readouterr().err == ("actionlab schema: error: missing.pth: no such weights file; give a local "
                                       "checkpoint path, `imagenet`, or a torchvision weights name such as "
                                       "ResNet50_Weights.IMAGENET1K_V2\n")
