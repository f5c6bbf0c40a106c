"""Facts about C3D, R(2+1)D and LRCN that the shared forward/backward test cannot see."""
import pytest
import torch

from models import build_model
from models.c3d import C3D
from models.pretrained import WeightsError


def test_c3d_pool5_is_the_papers_grid_at_the_papers_clip_size():
    model = C3D(num_classes=5, width=0.125).eval()
    x = torch.randn(1, 3, 16, 112, 112)
    for name in ["conv1", "pool1", "conv2", "pool2", "conv3a", "conv3b", "pool3",
                 "conv4a", "conv4b", "pool4", "conv5a", "conv5b", "pool5"]:
        x = getattr(model, name)(x)
    assert x.shape[2:] == C3D.GRID == (1, 4, 4)  # so the grid pool before fc6 is the identity there


def test_r2plus1d_has_torchvision_module_names_and_shapes():
    tv = pytest.importorskip("torchvision.models.video").r2plus1d_18(num_classes=400)
    ours = build_model("r2plus1d", num_classes=400)
    theirs, mine = tv.state_dict(), ours.state_dict()
    assert list(theirs) == list(mine)
    assert all(theirs[k].shape == mine[k].shape for k in theirs)


def test_r2plus1d_loads_a_local_checkpoint_except_the_classifier(tmp_path):
    torch.manual_seed(0)
    source = build_model("r2plus1d", num_classes=7, width=0.125)
    path = tmp_path / "r2plus1d.pth"
    torch.save(source.state_dict(), path)
    loaded = build_model("r2plus1d", num_classes=5, width=0.125, pretrained=str(path))
    for key, value in loaded.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, source.state_dict()[key]), key
    assert loaded.fc.out_features == 5


def test_a_checkpoint_of_another_width_is_refused(tmp_path):
    path = tmp_path / "c3d.pth"
    torch.save(build_model("c3d", num_classes=5, width=0.125).state_dict(), path)
    with pytest.raises(WeightsError, match="conv1.weight"):
        build_model("c3d", num_classes=5, width=0.25, pretrained=str(path))


@pytest.mark.parametrize("name", ["c3d", "r2plus1d", "lrcn"])
def test_unsupported_modality_names_the_supported_ones(name):
    with pytest.raises(ValueError, match="flow"):
        build_model(name, num_classes=5, modality="rgb+flow")


def test_lrcn_attention_is_a_distribution_over_locations_per_step():
    torch.manual_seed(0)
    model = build_model("lrcn", num_classes=5, width=0.125, attention=True)
    model(torch.randn(2, 3, 4, 32, 32))
    weights = model._attention_weights  # (B, T, K*K)
    assert weights.shape == (2, 4, 49)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 4), atol=1e-6)
    expected = ((1 - weights.sum(dim=1)) ** 2).sum(dim=1).mean()
    assert torch.allclose(model.auxiliary_loss(), expected)


def test_lrcn_without_attention_has_no_auxiliary_loss():
    model = build_model("lrcn", num_classes=5, width=0.125)
    model(torch.randn(2, 3, 4, 32, 32))
    assert model.auxiliary_loss().item() == 0.0


@pytest.mark.parametrize("attention", [False, True])
def test_lrcn_feature_dropout_is_off_by_default_and_drops_what_the_lstm_reads(attention):
    """LRCN's drop6 (0.9 after fc6): an option that adds no parameter and, at its default 0, changes nothing."""
    torch.manual_seed(0)
    plain = build_model("lrcn", num_classes=5, width=0.125, attention=attention)
    assert plain.feature_dropout.p == 0.0
    dropped = build_model("lrcn", num_classes=5, width=0.125, attention=attention, feature_dropout=0.9)
    dropped.load_state_dict(plain.state_dict())  # strict: the same parameters and buffers
    x = torch.randn(2, 3, 4, 32, 32)
    assert torch.equal(plain.eval()(x), dropped.eval()(x))  # evaluation: dropout is the identity
    read = []
    dropped.lstm.register_forward_hook(lambda module, inputs, output: read.append(inputs[0]))
    dropped.train()(x)
    assert torch.cat([r.flatten() for r in read]).eq(0).float().mean() > 0.8  # ~90 % of the features zeroed
