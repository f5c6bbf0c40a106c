"""Size and cost of every registered architecture at its paper's input, beside the paper's figure.

`PAPER_SETTINGS` says, per registered name, how the paper runs the model: builder keywords (the
paper's dataset fixes `num_classes`), one clip's input shape, and the parameter count the paper
reports. `summarize` builds the model on the meta device (no memory, no weights, no compute:
building a 25M-parameter I3D takes milliseconds) and counts its parameters and the multiply-adds
of one forward pass with `torch.utils.flop_counter.FlopCounterMode`.

Convention: FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matrix products
and nothing for pooling, normalisation or activations; we print its count / 2 as GMACs
(multiply-adds), the unit most of these papers call "FLOPs".

Several files stand a torchvision ResNet in for the paper's own backbone (their docstrings say
which), so a parameter count can differ from the paper's on purpose; the table shows both.
"""
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models._api import MODELS, build_model

ALL_MODALITIES = ("rgb", "flow", "rgbdiff", "rgb+flow")

Shape = tuple[int, ...]


class PaperSetting(NamedTuple):
    kwargs: dict  # builder keywords, `num_classes` included (the paper's dataset)
    inputs: Shape | dict[str, Shape]  # one clip (1, C, T, H, W), or {"rgb": ..., "flow": ...}
    paper_params_m: float | None  # parameters the paper reports, millions; None = not stated
    citation: str


PAPER_SETTINGS: dict[str, PaperSetting] = {
    "single_frame": PaperSetting(
        dict(num_classes=487, fusion="slow"), (1, 3, 10, 170, 170), None,
        "Karpathy et al., CVPR 2014 (Sports-1M, slow fusion, 10 frames of 170x170)"),
    "lrcn": PaperSetting(
        dict(num_classes=101), (1, 3, 16, 224, 224), 9.0,
        "Donahue et al., CVPR 2015 (16-frame clips; ResNet-18 stands in for CaffeNet); 9M is the "
        "ConvNet+LSTM (Inception-v1) of Carreira & Zisserman 2017, Table 1"),
    "c3d": PaperSetting(
        dict(num_classes=487), (1, 3, 16, 112, 112), 79.0,
        "Tran et al., ICCV 2015 (Sports-1M, 16x112x112 clips); 79M: Carreira & Zisserman 2017, Table 1"),
    "r2plus1d": PaperSetting(
        dict(num_classes=400, depth=18), (1, 3, 8, 112, 112), 33.3,
        "Tran et al., CVPR 2018, Table 2 (R(2+1)D-18, 8x112x112 clips)"),
    "two_stream": PaperSetting(
        dict(num_classes=101, modality="rgb+flow"), {"rgb": (1, 3, 1, 224, 224), "flow": (1, 2, 10, 224, 224)},
        12.0, "Simonyan & Zisserman, NeurIPS 2014 (1 frame + L=10 flow fields; ResNet-18 for CNN-M-2048); "
        "12M: the Inception-v1 Two-Stream of Carreira & Zisserman 2017, Table 1"),
    "two_stream_fusion": PaperSetting(
        dict(num_classes=101, modality="rgb+flow"), {"rgb": (1, 3, 5, 224, 224), "flow": (1, 2, 50, 224, 224)},
        39.0, "Feichtenhofer et al., CVPR 2016 (T=5 steps of 1 frame + 10 flow fields; ResNet-18 for VGG-16); "
        "39M: the Inception-v1 3D-Fused of Carreira & Zisserman 2017, Table 1"),
    "tsn": PaperSetting(
        dict(num_classes=101, num_segments=3), (1, 3, 3, 224, 224), None,
        "Wang et al., ECCV 2016 (K=3 segments of 224x224; ResNet-50 for BN-Inception)"),
    "actionvlad": PaperSetting(
        dict(num_classes=101), (1, 3, 25, 224, 224), None,
        "Girdhar et al., CVPR 2017 (25 frames, K=64 words; ResNet-18 for VGG-16)"),
    "hidden_two_stream": PaperSetting(
        dict(num_classes=101, num_flows=10), (1, 3, 11, 224, 224), None,
        "Zhu et al., ACCV 2018 (11 frames -> 10 predicted flows; ResNet-50 streams)"),
    "i3d": PaperSetting(
        dict(num_classes=400, modality="rgb+flow"), {"rgb": (1, 3, 64, 224, 224), "flow": (1, 2, 64, 224, 224)},
        25.0, "Carreira & Zisserman, CVPR 2017, Table 1 (Two-Stream I3D, 12M per stream; 64x224x224)"),
    "t3d": PaperSetting(
        dict(num_classes=101), (1, 3, 32, 224, 224), None,
        "Diba et al., arXiv:1711.08200 (T3D-121, 32x224x224 clips)"),
}


class SummaryRow(NamedTuple):
    name: str
    inputs: str  # e.g. "3x64x224x224 + 2x64x224x224"
    params: int
    macs: int  # multiply-adds of one clip's forward pass
    paper_params_m: float | None
    citation: str


def supported_modalities(name: str) -> list[str]:
    """The modalities `name`'s builder accepts: those for which it does not raise ValueError.

    Builds on the meta device, so probing even large models costs no memory.
    """
    supported = []
    for modality in ALL_MODALITIES:
        try:
            with torch.device("meta"):
                MODELS[name](num_classes=2, modality=modality)
        except ValueError:
            continue
        supported.append(modality)
    return supported


def count_macs(model: nn.Module, inputs: torch.Tensor | dict[str, torch.Tensor]) -> int:
    """Multiply-adds of one forward pass in eval mode (FlopCounterMode's FLOPs / 2)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    return counter.get_total_flops() // 2


def summarize(name: str, setting: PaperSetting | None = None) -> SummaryRow:
    """Parameters and per-clip multiply-adds of `name` built and fed as `setting` says.

    Args:
        name: a registered architecture.
        setting: defaults to PAPER_SETTINGS[name].

    Returns:
        A SummaryRow; counts are exact (shapes fix both), though nothing is computed.
    """
    setting = setting or PAPER_SETTINGS[name]
    with torch.device("meta"):
        model = build_model(name, **setting.kwargs)
        if isinstance(setting.inputs, dict):
            inputs = {k: torch.zeros(shape) for k, shape in setting.inputs.items()}
        else:
            inputs = torch.zeros(setting.inputs)
    shapes = setting.inputs.values() if isinstance(setting.inputs, dict) else [setting.inputs]
    return SummaryRow(
        name=name,
        inputs=" + ".join("x".join(map(str, shape[1:])) for shape in shapes),
        params=sum(p.numel() for p in model.parameters()),
        macs=count_macs(model, inputs),
        paper_params_m=setting.paper_params_m,
        citation=setting.citation,
    )


def format_table(rows: list[SummaryRow]) -> str:
    """A fixed-width text table, one line per row, then the FLOP convention."""
    header = f"{'model':<18} {'input (C x T x H x W)':<28} {'params':>8} {'paper':>7} {'GMACs':>8}  paper setting"
    lines = [header, "-" * len(header)]
    for r in rows:
        paper = f"{r.paper_params_m:.1f}M" if r.paper_params_m is not None else "-"
        lines.append(f"{r.name:<18} {r.inputs:<28} {r.params / 1e6:>7.1f}M {paper:>7} {r.macs / 1e9:>8.1f}  "
                     f"{r.citation}")
    lines.append("GMACs: multiply-adds per clip, batch 1 (FlopCounterMode FLOPs / 2; convolutions and "
                 "matrix products only). paper: parameters the paper reports ('-': not stated).")
    return "\n".join(lines)
