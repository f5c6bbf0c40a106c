"""MotionNet's unsupervised flow loss and its path into the hidden two-stream model."""
import pytest
import torch

from models import build_model
from models.hidden_two_stream import photometric_loss, resize_flow, unsupervised_flow_loss

H = W = 32
DX, DY = 2, 1  # the known translation, in pixels


def smooth_image() -> torch.Tensor:
    """(1, 3, H, W) smooth texture: bilinear sampling is informative and no region is flat."""
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    channels = [torch.sin(x / 3 + c) + torch.cos(y / 4 - c) + 0.3 * torch.sin((x + y) / 5) for c in range(3)]
    return torch.stack(channels)[None]


def translated_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """first, second = first moved by (DX, DY), and the true flow (1, 2, H, W) first -> second."""
    first = smooth_image()
    second = torch.roll(first, shifts=(DY, DX), dims=(2, 3))  # second[y + DY, x + DX] = first[y, x]
    flow = torch.tensor([DX, DY], dtype=torch.float32)[None, :, None, None].expand(1, 2, H, W)
    return first, second, flow


def test_photometric_loss_is_near_zero_for_the_true_flow():
    first, second, flow = translated_pair()
    true_loss = photometric_loss(first, second, flow)
    zero_loss = photometric_loss(first, second, torch.zeros_like(flow))
    wrong_loss = photometric_loss(first, second, -flow)
    assert true_loss < 1e-2  # only the Charbonnier epsilon is left: (eps^2)^0.45 ~ 2e-3
    assert zero_loss > 0.1 and wrong_loss > 0.1
    assert zero_loss > 20 * true_loss


def test_multi_scale_loss_prefers_the_true_flow():
    first, second, flow = translated_pair()
    clip = torch.stack([first, second], dim=2)  # (1, 3, T=2, H, W)
    true_flows = [flow, resize_flow(flow, (H // 2, W // 2))]  # (DX, DY) px at full scale = half at 1/2
    zero_flows = [torch.zeros_like(f) for f in true_flows]
    assert (unsupervised_flow_loss(clip, true_flows, smoothness_weight=0.01)
            < 0.5 * unsupervised_flow_loss(clip, zero_flows, smoothness_weight=0.01))


def test_resize_flow_rescales_pixel_units():
    flow = torch.tensor([2.0, 1.0, -4.0, 3.0])[None, :, None, None].expand(1, 4, 8, 8)  # two (x, y) fields
    up = resize_flow(flow, (16, 32))  # y doubles, x quadruples
    torch.testing.assert_close(up[0, :, 5, 7], torch.tensor([8.0, 2.0, -16.0, 6.0]))


def test_auxiliary_loss_trains_the_motion_net():
    torch.manual_seed(0)
    model = build_model("hidden_two_stream", num_classes=3, width=0.125, num_flows=2, backbone="resnet18")
    with pytest.raises(RuntimeError, match="forward"):
        model.auxiliary_loss()
    model(torch.randn(2, 3, 3, H, W))
    aux = model.auxiliary_loss()
    assert aux.ndim == 0 and aux > 0
    aux.backward()
    first_conv = model.motion_net.encoder[0][0][0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    # The unsupervised loss reaches only MotionNet, not the classifier.
    assert model.temporal_fc.weight.grad is None


def test_motion_loss_weight_scales_the_auxiliary_loss():
    x = torch.randn(2, 3, 3, H, W)
    losses = []
    for weight in (1.0, 0.25):
        torch.manual_seed(0)
        model = build_model("hidden_two_stream", num_classes=3, width=0.125, num_flows=2,
                            backbone="resnet18", motion_loss_weight=weight)
        model(x)
        losses.append(model.auxiliary_loss())
    torch.testing.assert_close(losses[1], 0.25 * losses[0])


def test_rejects_flow_modality_and_wrong_clip_length():
    with pytest.raises(ValueError, match="rgb"):
        build_model("hidden_two_stream", num_classes=3, modality="flow")
    model = build_model("hidden_two_stream", num_classes=3, width=0.125, num_flows=2, backbone="resnet18")
    with pytest.raises(ValueError, match="3, 3, H, W"):
        model(torch.randn(1, 3, 4, H, W))
