"""The model registry: a plain dict from architecture name to a keyword-only builder.

Every builder takes `num_classes`, `modality`, `width` and `dropout` as keywords (plus its own
options) and returns an `nn.Module` whose forward takes the clip tensor documented in its file.
"""
from typing import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder

    return wrap


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
