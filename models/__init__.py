"""The architecture zoo: one file per architecture, each registering its builders in `MODELS`.

What each architecture eats (`MODEL_INPUTS`, models/contracts.py) imports no torch; the registry
(`MODELS`, `build_model`) imports every model file, and with them torch and torchvision, on first
use, so that reading a config or a report costs no torch.
"""
import importlib

from models.contracts import MODEL_INPUTS, InputContract

ZOO = ("single_frame", "lrcn", "c3d", "two_stream", "two_stream_fusion", "tsn", "actionvlad", "hidden_two_stream",
       "i3d", "t3d")  # the files that register builders
_REGISTRY = ("MODELS", "build_model", "register_model")


def __getattr__(name: str):  # PEP 562: only names not bound above reach here
    if name not in _REGISTRY:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    for module in ZOO:  # each import registers that file's builders
        importlib.import_module(f"models.{module}")
    api = importlib.import_module("models._api")
    globals().update({n: getattr(api, n) for n in _REGISTRY})
    return globals()[name]


__all__ = ["MODELS", "MODEL_INPUTS", "InputContract", "build_model", "register_model"]
