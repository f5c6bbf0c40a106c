"""What the sampler reads and what the model eats, derived from plain values: the one derivation.

`input_spec` calls `model_input_spec` with a checked config's data and model sections (read as plain
attributes, so that the training loop imports no pydantic); `actionlab bench gpu` calls it with a
paper's setting, on machines without pydantic. Both get the
time layout (K segments x L frames; T = K * L), each stream's (C, T, H, W) and the builder's
keywords from the architecture's declared input (`models.contracts.MODEL_INPUTS`: a table that imports
no torch, so importing this module costs none), never from a copy.
"""
from typing import NamedTuple

from models.contracts import MODEL_INPUTS


class ClipLayout(NamedTuple):
    segments: int  # K groups per clip: TSN segments, or 1 for a dense clip
    frames_per_segment: int  # L frames (or flow fields) read per group


class InputSpec(NamedTuple):
    layout: ClipLayout  # what the sampler reads per view
    shapes: dict[str, tuple[int, int, int, int]]  # model input per stream ("rgb", "flow"): (C, T, H, W)
    builder_kwargs: dict  # for models.build_model, num_classes aside


CHANNELS = {"rgb": 3, "flow": 2, "rgbdiff": 3}


def sampler_layout(sampler: str, *, num_segments: int, frames_per_segment: int, clip_len: int) -> ClipLayout:
    """The sampler's time layout: K x L for "tsn"; one group of `clip_len` frames for "dense"."""
    return ClipLayout(num_segments, frames_per_segment) if sampler == "tsn" else ClipLayout(1, clip_len)


def model_input_spec(architecture: str, *, modality: str, layout: ClipLayout, crop_size: int, width: float,
                     dropout: float, pretrained: str | None, options: dict) -> InputSpec:
    """Per stream (C, T, H, W) and the builder's keywords for `architecture` fed `layout` clips.

    T = K * L' with L' = L, or L - 1 for RGB difference (L + 1 frames read per segment give L
    differences). The architecture's `segments_kw` receives K and its `snippet_kw` receives L';
    `options` (the builder's other keywords) come last.
    """
    contract = MODEL_INPUTS[architecture]
    snippet = layout.frames_per_segment - (modality == "rgbdiff")
    frames = layout.segments * snippet
    shapes = {stream: (CHANNELS[stream], frames, crop_size, crop_size) for stream in modality.split("+")}
    kwargs = {"modality": modality, "width": width, "dropout": dropout, "pretrained": pretrained}
    derived = {contract.segments_kw: layout.segments, contract.snippet_kw: snippet}
    kwargs.update({k: v for k, v in derived.items() if k})
    return InputSpec(layout, shapes, {**kwargs, **options})


def example_input(spec: InputSpec, *, batch: int = 1, device=None):
    """Zeros shaped as the loop feeds the model: (B, C, T, H, W), or {stream: ...} for two streams."""
    import torch

    clips = {stream: torch.zeros((batch, *shape), device=device) for stream, shape in spec.shapes.items()}
    return clips if len(clips) > 1 else next(iter(clips.values()))


def clip_layout(data) -> ClipLayout:
    """The sampler's time layout of a config's data section (`orchestrator.config.DataConfig`)."""
    return sampler_layout(data.sampler, num_segments=data.num_segments, frames_per_segment=data.frames_per_segment,
                          clip_len=data.clip_len)


def input_spec(cfg) -> InputSpec:
    """Per stream (C, T, H, W) and the builder's keywords of an `orchestrator.config.ExperimentConfig`,
    from its data section and the architecture's declared input (`models.contracts.MODEL_INPUTS`)."""
    d, m = cfg.data, cfg.model
    return model_input_spec(m.architecture, modality=m.modality, layout=clip_layout(d), crop_size=d.crop_size,
                            width=m.width, dropout=m.dropout, pretrained=m.pretrained, options=m.options)
