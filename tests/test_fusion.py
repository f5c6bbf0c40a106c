"""Where and how streams and frames are fused: Feichtenhofer's FUSIONS, the two-stream score
fusion, and Karpathy's fusion-in-time variants (each sees exactly the frames its definition says)."""
import pytest
import torch

from models import build_model
from models.single_frame import FUSION_IN_TIME
from models.two_stream_fusion import FUSIONS

B, C, T, H, W = 2, 8, 3, 4, 4

# fusion -> output shape for two (B, C, T, H, W) = (2, 8, 3, 4, 4) maps
FUSION_SHAPES = {
    "sum": (B, C, T, H, W),
    "max": (B, C, T, H, W),
    "concat": (B, 2 * C, T, H, W),
    "conv": (B, C, T, H, W),
    "bilinear": (B, C * C, T, 1, 1),  # one C x C outer product per time step, locations pooled
    "conv3d_pool3d": (B, C, 2, 2, 2),  # 2x2x2 max pool in ceil mode: 3 steps -> 2
}


def test_every_fusion_has_an_expected_shape():
    assert set(FUSION_SHAPES) == set(FUSIONS)


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusion_output_shape(name):
    torch.manual_seed(0)
    fusion = FUSIONS[name](C)
    y = fusion(torch.randn(B, C, T, H, W), torch.randn(B, C, T, H, W))
    assert y.shape == FUSION_SHAPES[name]
    assert fusion.out_channels == y.shape[1]


def test_sum_and_max_follow_their_definitions():
    torch.manual_seed(0)
    a, b = torch.randn(B, C, T, H, W), torch.randn(B, C, T, H, W)
    assert torch.equal(FUSIONS["sum"](C)(a, a), 2 * a)
    assert torch.equal(FUSIONS["max"](C)(a, a), a)
    y = FUSIONS["max"](C)(a, b)
    assert (y >= a).all() and (y >= b).all() and ((y == a) | (y == b)).all()


def test_conv_fusion_starts_as_sum():
    torch.manual_seed(0)
    a, b = torch.randn(B, C, T, H, W), torch.randn(B, C, T, H, W)
    assert torch.allclose(FUSIONS["conv"](C)(a, b), a + b, atol=1e-5)


def test_bilinear_fusion_is_normalised_and_symmetric_in_its_definition():
    torch.manual_seed(0)
    a, b = torch.randn(B, C, T, H, W), torch.randn(B, C, T, H, W)
    fusion = FUSIONS["bilinear"](C)
    y = fusion(a, b)
    assert torch.allclose(y.norm(dim=1), torch.ones(B, T, 1, 1), atol=1e-5)
    # swapping the towers transposes each C x C outer product
    y_ab = y[:, :, 0, 0, 0].reshape(B, C, C)
    y_ba = fusion(b, a)[:, :, 0, 0, 0].reshape(B, C, C)
    assert torch.allclose(y_ab, y_ba.transpose(1, 2), atol=1e-6)


def tiny_two_stream_inputs(steps: int = 2, flow_frames: int = 2):
    return {"rgb": torch.randn(2, 3, steps, 32, 32), "flow": torch.randn(2, 2, steps * flow_frames, 32, 32)}


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_two_stream_fusion_runs_with_every_fusion(fusion):
    torch.manual_seed(0)
    model = build_model("two_stream_fusion", num_classes=5, modality="rgb+flow", width=0.125,
                        flow_frames=2, fusion=fusion, fusion_layer=4)
    assert model(tiny_two_stream_inputs()).shape == (2, 5)


@pytest.mark.parametrize("fusion", ["sum", "max", "conv", "conv3d_pool3d"])
def test_channel_preserving_fusions_can_fuse_mid_network(fusion):
    torch.manual_seed(0)
    model = build_model("two_stream_fusion", num_classes=5, modality="rgb+flow", width=0.125,
                        flow_frames=2, fusion=fusion, fusion_layer=2)
    assert len(model.trunk) == 2  # layer3 and layer4 of the RGB tower follow the fusion
    assert model(tiny_two_stream_inputs()).shape == (2, 5)


@pytest.mark.parametrize("fusion", ["concat", "bilinear"])
def test_channel_changing_fusions_refuse_to_fuse_mid_network(fusion):
    with pytest.raises(ValueError, match="fusion_layer=4"):
        build_model("two_stream_fusion", num_classes=5, modality="rgb+flow", width=0.125,
                    fusion=fusion, fusion_layer=3)


def test_two_stream_fusion_drops_the_flow_towers_later_stages():
    model = build_model("two_stream_fusion", num_classes=5, modality="rgb+flow", width=0.125, fusion_layer=2)
    assert len(model.temporal_tower) == 3  # stem, layer1, layer2


def test_two_stream_fusion_checks_flow_length_and_modality():
    model = build_model("two_stream_fusion", num_classes=5, modality="rgb+flow", width=0.125, flow_frames=2)
    x = tiny_two_stream_inputs()
    x["flow"] = x["flow"][:, :, :3]
    with pytest.raises(ValueError, match="flow_frames=2"):
        model(x)
    with pytest.raises(ValueError, match="rgb\\+flow"):
        build_model("two_stream_fusion", num_classes=5, modality="rgb")


# --- Simonyan & Zisserman: late score fusion ---------------------------------------------------


def test_two_stream_softmax_mean_averages_the_stream_probabilities():
    torch.manual_seed(0)
    model = build_model("two_stream", num_classes=5, modality="rgb+flow", width=0.125, flow_frames=4).eval()
    x = {"rgb": torch.randn(2, 3, 3, 32, 32), "flow": torch.randn(2, 2, 4, 32, 32)}
    expected = (model.spatial(x["rgb"]).softmax(-1) + model.temporal(x["flow"]).softmax(-1)) / 2
    assert torch.allclose(model(x).softmax(-1), expected, atol=1e-6)


def test_two_stream_spatial_stream_sees_only_the_middle_frame():
    torch.manual_seed(0)
    model = build_model("two_stream", num_classes=5, modality="rgb", width=0.125).eval()
    x = torch.randn(1, 3, 5, 32, 32)
    changed = x.clone()
    changed[:, :, [0, 1, 3, 4]] = torch.randn(1, 3, 4, 32, 32)
    assert torch.equal(model(x), model(changed))
    changed[:, :, 2] += 1
    assert not torch.allclose(model(x), model(changed))


def test_two_stream_rejects_unsupported_modality():
    with pytest.raises(ValueError, match="rgb\\+flow"):
        build_model("two_stream", num_classes=5, modality="rgbdiff")


# --- Karpathy et al.: fusion in time -----------------------------------------------------------

# fusion -> (clip length, frame indices whose change must change the output)
FRAMES_SEEN = {
    "single": (5, [2]),  # the middle frame only
    "late": (15, [0, 14]),  # first and last frame only (15 apart, as in the paper)
    "early": (10, list(range(10))),  # every frame of the 10-frame clip
    "slow": (10, list(range(10))),  # every frame, by conv3
}


def test_every_karpathy_fusion_has_a_frames_seen_row():
    assert set(FRAMES_SEEN) == set(FUSION_IN_TIME)


@pytest.mark.parametrize("fusion", sorted(FRAMES_SEEN))
def test_karpathy_fusion_sees_exactly_its_frames(fusion):
    torch.manual_seed(0)
    num_frames, seen = FRAMES_SEEN[fusion]
    model = build_model("single_frame", num_classes=5, width=0.125, fusion=fusion).eval()
    x = torch.randn(1, 3, num_frames, 32, 32)
    reference = model(x)
    for t in range(num_frames):
        changed = x.clone()
        changed[:, :, t] = torch.randn(3, 32, 32)
        if t in seen:
            assert not torch.allclose(model(changed), reference), f"{fusion}: frame {t} is ignored"
        else:
            assert torch.equal(model(changed), reference), f"{fusion}: frame {t} leaks in"


@pytest.mark.parametrize("fusion", ["early", "slow"])
def test_clip_fusions_need_their_clip_length(fusion):
    model = build_model("single_frame", num_classes=5, width=0.125, fusion=fusion)
    with pytest.raises(ValueError, match="10 frames"):
        model(torch.randn(1, 3, 8, 32, 32))


def test_karpathy_conv_stacks_fuse_time_where_the_paper_says():
    temporal_extents = {name: [m.kernel_size[0] for m in build_model(
        "single_frame", num_classes=5, width=0.125, fusion=name).features if isinstance(m, torch.nn.Conv3d)]
        for name in FUSION_IN_TIME}
    assert temporal_extents == {
        "single": [1, 1, 1, 1, 1],
        "late": [1, 1, 1, 1, 1],
        "early": [10, 1, 1, 1, 1],
        "slow": [4, 2, 2, 1, 1],
    }


def test_two_stream_fusion_takes_centre_rgb_frames_from_aligned_clips():
    import torch

    from models import build_model

    torch.manual_seed(0)
    model = build_model("two_stream_fusion", num_classes=3, width=0.125, fusion="sum", flow_frames=2).eval()
    rgb, flow = torch.randn(1, 3, 4, 32, 32), torch.randn(1, 2, 4, 32, 32)  # 2 steps x L=2, read aligned
    aligned = model({"rgb": rgb, "flow": flow})
    centres = model({"rgb": rgb[:, :, 1::2], "flow": flow})  # the centre frame of each block of 2
    assert torch.allclose(aligned, centres)
    rgb_changed = rgb.clone()
    rgb_changed[:, :, 0] += 1  # a frame that is not a block centre
    assert torch.allclose(model({"rgb": rgb_changed, "flow": flow}), aligned)
