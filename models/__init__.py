"""The architecture zoo: one file per architecture, each registering its builders in `MODELS`."""
from models._api import MODEL_INPUTS, MODELS, InputContract, build_model, register_model
from models import (  # noqa: F401  (each import registers that file's builders)
    single_frame,
    lrcn,
    c3d,
    two_stream,
    two_stream_fusion,
    tsn,
    actionvlad,
    hidden_two_stream,
    i3d,
    t3d,
)

__all__ = ["MODELS", "MODEL_INPUTS", "InputContract", "build_model", "register_model"]
