"""How a training step uses the GPU's tensor cores: the autocast dtype and the channels-last layout.

Plain torch, no config object, so that the training loop and `actionlab bench gpu` (which runs on
machines without pydantic or Ray) share them.
"""
import torch

PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `optim.precision` asks for on `device`; None: fp32, no autocast."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        # bf16 only where the tensor cores run it (Ampere and later): the default check also counts
        # emulation, which would pick a slow bf16 on a V100 or T4 instead of fp16 with a GradScaler.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Convolution weights in channels-last layout (4D: NHWC, 5D: NDHWC), where GPUs' tensor cores
    run them fastest; the clips are laid out to match (`loop.prepare_inputs`)."""
    for p in model.parameters():
        if p.dim() in (4, 5):
            p.data = p.data.contiguous(memory_format=torch.channels_last if p.dim() == 4 else torch.channels_last_3d)
    return model
