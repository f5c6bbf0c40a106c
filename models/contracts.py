"""What each architecture eats, one row per registered name (as torchvision keeps `Weights.meta`
beside its builders): plain values, importing no torch.

This table is the one statement of every architecture's name and input. The config
(`orchestrator.config`: its `Architecture` choices and cross-field rules) and the derivation of
input shapes and time keywords (`orchestrator.inputs.model_input_spec`) read it without importing a
model; `models._api.register_model` refuses a builder whose name has no row, and tests/test_models.py
checks that every row has a builder that takes its keywords and accepts exactly its modalities.
"""
from typing import Literal, NamedTuple


class InputContract(NamedTuple):
    modalities: tuple[str, ...]  # values of `modality` the builder accepts ("rgb+flow": a dict of both)
    # "segments": the time axis is K segments x L frames, as the tsn sampler lays it out;
    # "clip": one clip of T frames, whichever sampler read it
    layout: Literal["segments", "clip"]
    segments_kw: str | None = None  # the builder keyword that receives K (None: read off the input)
    snippet_kw: str | None = None  # the builder keyword that receives L, frames (or flow fields) per segment


MODEL_INPUTS: dict[str, InputContract] = {  # name -> input; the builder is registered in models/<file>.py
    "single_frame": InputContract(("rgb", "rgbdiff", "flow"), "clip"),  # single_frame.py
    "lrcn": InputContract(("rgb", "rgbdiff", "flow"), "clip"),  # lrcn.py
    "c3d": InputContract(("rgb", "rgbdiff", "flow"), "clip"),  # c3d.py
    "r2plus1d": InputContract(("rgb", "rgbdiff", "flow"), "clip"),  # c3d.py
    "two_stream": InputContract(("rgb", "flow", "rgb+flow"), "segments", snippet_kw="flow_frames"),  # two_stream.py
    "two_stream_fusion": InputContract(("rgb+flow",), "segments", snippet_kw="flow_frames"),  # two_stream_fusion.py
    "tsn": InputContract(("rgb", "flow", "rgbdiff"), "segments",  # tsn.py
                         segments_kw="num_segments", snippet_kw="frames_per_segment"),
    "actionvlad": InputContract(("rgb", "flow"), "segments", snippet_kw="frames_per_sample"),  # actionvlad.py
    "hidden_two_stream": InputContract(("rgb",), "clip"),  # hidden_two_stream.py
    "i3d": InputContract(("rgb", "flow", "rgb+flow"), "clip"),  # i3d.py
    "t3d": InputContract(("rgb", "flow"), "clip"),  # t3d.py
}
