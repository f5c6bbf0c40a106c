"""The model registry: a plain dict from architecture name to a keyword-only builder.

Every builder takes `num_classes`, `modality`, `width`, `dropout` and `pretrained` as keywords
(plus its own options) and returns an `nn.Module` whose forward takes the clip tensor documented
in its file. What it eats is its row of `models.contracts.MODEL_INPUTS` (torch-free, so the config
reads it without importing a model): `orchestrator.inputs.model_input_spec` derives every input
shape and the time keywords from that row; nothing else restates them.
"""
from typing import Callable

from torch import nn

from models.contracts import MODEL_INPUTS

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name not in MODEL_INPUTS:
            raise ValueError(f"model {name!r} has no input contract; add its row to models/contracts.py")
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder

    return wrap


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
