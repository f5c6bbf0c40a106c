"""Size and cost of every registered architecture at its paper's input, beside the paper's figure.

`PAPER_SETTINGS` says, per registered name, how the paper runs the model, in the experiment
file's own terms: its data set's class count, the data section (sampler, segments or clip length,
crop) and the model section (modality, options). `summarize` derives the input from them with
`config.input_spec` (the architecture's declared input), builds the model on the meta device (no
memory, no weights, no compute: building a 25M-parameter I3D takes milliseconds) and counts its
parameters and the multiply-adds of one forward pass with `torch.utils.flop_counter.FlopCounterMode`
(`count_macs`, which `actionlab bench gpu` uses too for its achieved TFLOP/s).

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

from models import build_model
from orchestrator.inputs import example_input


class PaperSetting(NamedTuple):
    num_classes: int  # the paper's data set
    data: dict  # data-section fields: sampler, num_segments / frames_per_segment or clip_len, crop_size
    model: dict  # model-section fields: modality, options
    paper_params_m: float | None  # parameters the paper reports, millions; None = not stated
    citation: str


def _dense(clip_len: int, crop: int) -> dict:
    return {"sampler": "dense", "clip_len": clip_len, "crop_size": crop}


def _tsn(segments: int, frames_per_segment: int, crop: int) -> dict:
    return {"sampler": "tsn", "num_segments": segments, "frames_per_segment": frames_per_segment, "crop_size": crop}


PAPER_SETTINGS: dict[str, PaperSetting] = {
    "single_frame": PaperSetting(
        487, _dense(10, 170), {"options": {"fusion": "slow"}}, None,
        "Karpathy et al., CVPR 2014 (Sports-1M, slow fusion, 10 frames of 170x170)"),
    "lrcn": PaperSetting(
        101, _dense(16, 224), {}, 9.0,
        "Donahue et al., CVPR 2015 (16-frame clips; ResNet-18 stands in for CaffeNet); 9M is the "
        "ConvNet+LSTM (Inception-v1) of Carreira & Zisserman 2017, Table 1"),
    "c3d": PaperSetting(
        487, _dense(16, 112), {}, 79.0,
        "Tran et al., ICCV 2015 (Sports-1M, 16x112x112 clips); 79M: Carreira & Zisserman 2017, Table 1"),
    "r2plus1d": PaperSetting(
        400, _dense(8, 112), {"options": {"depth": 18}}, 33.3,
        "Tran et al., CVPR 2018, Table 2 (R(2+1)D-18, 8x112x112 clips)"),
    "two_stream": PaperSetting(
        101, _tsn(1, 10, 224), {"modality": "rgb+flow"}, 12.0,
        "Simonyan & Zisserman, NeurIPS 2014 (1 frame + L=10 flow fields; ResNet-18 for CNN-M-2048); "
        "12M: the Inception-v1 Two-Stream of Carreira & Zisserman 2017, Table 1"),
    "two_stream_fusion": PaperSetting(
        101, _tsn(5, 10, 224), {"modality": "rgb+flow"}, 39.0,
        "Feichtenhofer et al., CVPR 2016 (T=5 steps of 1 frame + 10 flow fields; ResNet-18 for VGG-16); "
        "39M: the Inception-v1 3D-Fused of Carreira & Zisserman 2017, Table 1"),
    "tsn": PaperSetting(
        101, _tsn(3, 1, 224), {}, None,
        "Wang et al., ECCV 2016 (K=3 segments of 224x224; ResNet-50 for BN-Inception)"),
    "actionvlad": PaperSetting(
        101, _tsn(25, 1, 224), {}, None,
        "Girdhar et al., CVPR 2017 (25 frames, K=64 words; ResNet-18 for VGG-16)"),
    "hidden_two_stream": PaperSetting(
        101, _dense(11, 224), {"options": {"num_flows": 10}}, None,
        "Zhu et al., ACCV 2018 (11 frames -> 10 predicted flows; ResNet-50 streams)"),
    "i3d": PaperSetting(
        400, _dense(64, 224), {"modality": "rgb+flow"}, 25.0,
        "Carreira & Zisserman, CVPR 2017, Table 1 (Two-Stream I3D, 12M per stream; 64x224x224)"),
    "t3d": PaperSetting(
        101, _dense(32, 224), {}, None,
        "Diba et al., arXiv:1711.08200 (T3D-121, 32x224x224 clips)"),
}


class SummaryRow(NamedTuple):
    name: str
    inputs: str  # e.g. "3x64x224x224 + 2x64x224x224"
    params: int
    macs: int  # multiply-adds of one clip's forward pass
    paper_params_m: float | None
    citation: str


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
    # config (pydantic) only here: `actionlab bench gpu` imports PAPER_SETTINGS and count_macs on
    # GPU machines that have no pydantic
    from orchestrator.config import input_spec, parse_experiment

    setting = setting or PAPER_SETTINGS[name]
    data = {**setting.data, "short_side": setting.data["crop_size"]}
    spec = input_spec(parse_experiment({"data": data, "model": {**setting.model, "architecture": name}},
                                       source=f"PAPER_SETTINGS[{name!r}]"))
    with torch.device("meta"):
        model = build_model(name, num_classes=setting.num_classes, **spec.builder_kwargs)
        inputs = example_input(spec)
    return SummaryRow(
        name=name,
        inputs=" + ".join("x".join(map(str, shape)) for shape in spec.shapes.values()),
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
