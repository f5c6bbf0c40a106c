"""One parametrized test over every registered model, at tiny sizes on CPU."""
import inspect

import pytest
import torch

from models import MODEL_INPUTS, MODELS, build_model, register_model
from orchestrator.config import input_spec, parse_experiment


def dense(clip_len: int) -> dict:
    return {"sampler": "dense", "clip_len": clip_len}


def tsn(segments: int, frames_per_segment: int) -> dict:
    return {"sampler": "tsn", "num_segments": segments, "frames_per_segment": frames_per_segment}


# name -> (model section, data section or {modality: data section}) at tiny sizes: 32x32 crops.
# Input shapes and the builders' time keywords come from `config.input_spec`, i.e. from each
# architecture's row of models/contracts.py; every declared modality is tested. A model
# registered without a row here fails `test_every_model_has_a_tiny_config`.
TINY = {
    # single_frame: slow fusion needs its 10-frame clip (11 frames give 10 rgb differences; other
    # fusions: tests/test_fusion.py)
    "single_frame": ({"options": {"fusion": "slow"}}, {"rgb": dense(10), "flow": dense(10), "rgbdiff": dense(11)}),
    # lrcn: with Sharma et al.'s attention, so auxiliary_loss is exercised too
    "lrcn": ({"options": {"attention": True}}, dense(4)),
    "c3d": ({}, dense(8)),
    "r2plus1d": ({}, dense(8)),
    # two_stream: one snippet of L = 4 stacked flow fields
    "two_stream": ({}, tsn(1, 4)),
    # two_stream_fusion: T = 2 steps of 1 rgb frame + L = 2 flow fields, default conv3d_pool3d fusion
    "two_stream_fusion": ({}, tsn(2, 2)),
    # tsn: K = 2 segments of 1 rgb frame, of 5 flow fields, or of 6 frames (5 rgb differences)
    "tsn": ({"options": {"backbone": "resnet18", "consensus": "learnable"}},
            {"rgb": tsn(2, 1), "flow": tsn(2, 5), "rgbdiff": tsn(2, 6)}),
    # actionvlad: 2 rgb frames, or 2 samples of 10 stacked flow fields
    "actionvlad": ({"options": {"num_clusters": 4, "backbone": "resnet18"}}, {"rgb": tsn(2, 1), "flow": tsn(2, 10)}),
    # hidden_two_stream: 3 frames -> 2 predicted flows, both streams
    "hidden_two_stream": ({"options": {"num_flows": 2, "backbone": "resnet18", "with_spatial": True}}, dense(3)),
    # i3d: 8-frame clips; time is halved three times (conv1, maxpool3, maxpool4)
    "i3d": ({}, dense(8)),
    # t3d: one layer per dense block; five halvings need 32 frames of 32x32
    "t3d": ({"options": {"block_config": [1, 1, 1, 1]}}, dense(32)),
}

NUM_CLASSES = 5
CASES = [(name, modality) for name in sorted(TINY) for modality in MODEL_INPUTS[name].modalities]


def tiny_spec(name: str, modality: str):
    model, data = TINY[name]
    data = data if "sampler" in data else data[modality]
    return input_spec(parse_experiment({
        "model": {"architecture": name, "modality": modality, "width": 0.125, **model},
        "data": {"crop_size": 32, "short_side": 32, **data}}))


def test_every_model_has_a_tiny_config():
    assert set(MODELS) == set(TINY)


def test_every_declared_architecture_has_a_builder_and_no_builder_goes_undeclared():
    assert set(MODELS) == set(MODEL_INPUTS)
    with pytest.raises(ValueError, match="no input contract; add its row to models/contracts.py"):
        register_model("undeclared")(lambda **kwargs: None)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declared_time_keywords_are_the_builders_keywords(name):
    contract = MODEL_INPUTS[name]
    params = inspect.signature(MODELS[name]).parameters
    for keyword in filter(None, (contract.segments_kw, contract.snippet_kw)):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY, keyword


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declared_modalities_are_what_the_builder_accepts(name):
    for modality in ("rgb", "flow", "rgbdiff", "rgb+flow"):
        try:
            with torch.device("meta"):
                MODELS[name](num_classes=2, modality=modality)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == (modality in MODEL_INPUTS[name].modalities), modality


@pytest.mark.parametrize("name,modality", CASES)
def test_model_forward_backward(name, modality):
    torch.manual_seed(0)
    spec = tiny_spec(name, modality)
    model = build_model(name, num_classes=NUM_CLASSES, **spec.builder_kwargs)
    batch = 2
    clips = {stream: torch.randn(batch, *shape) for stream, shape in spec.shapes.items()}
    x = clips if len(clips) > 1 else next(iter(clips.values()))

    logits = model(x)
    assert logits.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(logits).all()

    loss = logits.logsumexp(1).mean() - logits[:, 0].mean()
    if hasattr(model, "auxiliary_loss"):
        loss = loss + model.auxiliary_loss()
    loss.backward()
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0, "gradient does not reach the first layer"
