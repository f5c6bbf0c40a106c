"""The model registry: a plain dict from architecture name to a keyword-only builder, and beside
it what each architecture eats (as torchvision keeps `Weights.meta` beside each builder).

Every builder takes `num_classes`, `modality`, `width`, `dropout` and `pretrained` as keywords
(plus its own options) and returns an `nn.Module` whose forward takes the clip tensor documented
in its file. `orchestrator.inputs.model_input_spec` derives every input shape and the time
keywords from `MODEL_INPUTS` (for `orchestrator.config.input_spec` and `actionlab bench gpu`);
nothing else restates them.
"""
from typing import Callable, Literal, NamedTuple

from torch import nn


class InputContract(NamedTuple):
    modalities: tuple[str, ...]  # values of `modality` the builder accepts ("rgb+flow": a dict of both)
    # "segments": the time axis is K segments x L frames, as the tsn sampler lays it out;
    # "clip": one clip of T frames, whichever sampler read it
    layout: Literal["segments", "clip"]
    segments_kw: str | None = None  # the builder keyword that receives K (None: read off the input)
    snippet_kw: str | None = None  # the builder keyword that receives L, frames (or flow fields) per segment


MODELS: dict[str, Callable[..., nn.Module]] = {}
MODEL_INPUTS: dict[str, InputContract] = {}


def register_model(name: str, inputs: InputContract) -> Callable:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name], MODEL_INPUTS[name] = builder, inputs
        return builder

    return wrap


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
