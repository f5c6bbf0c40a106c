"""One parametrized test over every registered model, at tiny sizes on CPU."""
import pytest
import torch

from models import MODELS, build_model

# name -> (builder kwargs, {modality: input shape (B, C, T, H, W)} per supported modality).
# A model registered without a row here fails `test_every_model_has_a_tiny_config`.
TINY = {
    # --- single_frame, lrcn, c3d, r2plus1d, two_stream, two_stream_fusion (rows below) ---
    # single_frame: slow fusion needs its 10-frame clip (other fusions: tests/test_fusion.py)
    "single_frame": (dict(width=0.125, fusion="slow"),
                     {"rgb": (2, 3, 10, 32, 32), "flow": (2, 2, 10, 32, 32), "rgbdiff": (2, 3, 10, 32, 32)}),
    # lrcn: with Sharma et al.'s attention, so auxiliary_loss is exercised too
    "lrcn": (dict(width=0.125, attention=True),
             {"rgb": (2, 3, 4, 32, 32), "flow": (2, 2, 4, 32, 32), "rgbdiff": (2, 3, 4, 32, 32)}),
    "c3d": (dict(width=0.125),
            {"rgb": (2, 3, 8, 32, 32), "flow": (2, 2, 8, 32, 32), "rgbdiff": (2, 3, 8, 32, 32)}),
    "r2plus1d": (dict(width=0.125),
                 {"rgb": (2, 3, 8, 32, 32), "flow": (2, 2, 8, 32, 32), "rgbdiff": (2, 3, 8, 32, 32)}),
    # two_stream: L = 4 stacked flow fields
    "two_stream": (dict(width=0.125, flow_frames=4),
                   {"rgb": (2, 3, 4, 32, 32), "flow": (2, 2, 4, 32, 32),
                    "rgb+flow": {"rgb": (2, 3, 4, 32, 32), "flow": (2, 2, 4, 32, 32)}}),
    # two_stream_fusion: T = 2 steps of 1 rgb frame + L = 2 flow fields, default conv3d_pool3d fusion
    "two_stream_fusion": (dict(width=0.125, flow_frames=2),
                          {"rgb+flow": {"rgb": (2, 3, 2, 32, 32), "flow": (2, 2, 4, 32, 32)}}),
    # --- tsn, actionvlad, hidden_two_stream (rows below) ---
    # tsn: K = 2 segments of 1 rgb frame, or of 5 flow fields / rgb differences (the defaults)
    "tsn": (dict(width=0.125, num_segments=2, backbone="resnet18", consensus="learnable"),
            {"rgb": (2, 3, 2, 32, 32), "flow": (2, 2, 10, 32, 32), "rgbdiff": (2, 3, 10, 32, 32)}),
    # actionvlad: 2 rgb frames, or 2 samples of 10 stacked flow fields (the default)
    "actionvlad": (dict(width=0.125, num_clusters=4, backbone="resnet18"),
                   {"rgb": (2, 3, 2, 32, 32), "flow": (2, 2, 20, 32, 32)}),
    # hidden_two_stream: 3 frames -> 2 predicted flows, both streams
    "hidden_two_stream": (dict(width=0.125, num_flows=2, backbone="resnet18", with_spatial=True),
                          {"rgb": (2, 3, 3, 32, 32)}),
    # --- i3d, t3d (rows below) ---
    # i3d: 8-frame clips; time is halved three times (conv1, maxpool3, maxpool4)
    "i3d": (dict(width=0.125),
            {"rgb": (2, 3, 8, 32, 32), "flow": (2, 2, 8, 32, 32),
             "rgb+flow": {"rgb": (2, 3, 8, 32, 32), "flow": (2, 2, 8, 32, 32)}}),
    # t3d: one layer per dense block; five halvings need 32 frames of 32x32
    "t3d": (dict(width=0.125, block_config=(1, 1, 1, 1)),
            {"rgb": (2, 3, 32, 32, 32), "flow": (2, 2, 32, 32, 32)}),
}

NUM_CLASSES = 5
CASES = [(name, modality) for name, (_, inputs) in sorted(TINY.items()) for modality in inputs]


def make_input(shape_or_shapes):
    """A random clip (B, C, T, H, W), or a dict of them for two-stream ("rgb+flow") models."""
    if isinstance(shape_or_shapes, dict):
        return {k: torch.randn(*s) for k, s in shape_or_shapes.items()}
    return torch.randn(*shape_or_shapes)


def test_every_model_has_a_tiny_config():
    assert set(MODELS) == set(TINY)


@pytest.mark.parametrize("name,modality", CASES)
def test_model_forward_backward(name, modality):
    torch.manual_seed(0)
    kwargs, inputs = TINY[name]
    model = build_model(name, num_classes=NUM_CLASSES, modality=modality, **kwargs)
    x = make_input(inputs[modality])
    batch = next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0]

    logits = model(x)
    assert logits.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(logits).all()

    loss = logits.logsumexp(1).mean() - logits[:, 0].mean()
    if hasattr(model, "auxiliary_loss"):
        loss = loss + model.auxiliary_loss()
    loss.backward()
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0, "gradient does not reach the first layer"
