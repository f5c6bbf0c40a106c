"""`actionlab models`: modalities, parameter counts and multiply-adds at the papers' input sizes."""
import argparse

import pytest
import torch
from torch import nn

from models import MODELS, build_model
from orchestrator.commands import models as models_command
from orchestrator.model_summary import PAPER_SETTINGS, PaperSetting, count_macs, summarize
from orchestrator.errors import UserError


def test_every_registered_model_has_paper_settings():
    assert set(MODELS) <= set(PAPER_SETTINGS)


def test_summary_row_counts_parameters_exactly():
    setting = PaperSetting(5, {"sampler": "dense", "clip_len": 32, "crop_size": 32},
                           {"modality": "flow", "width": 0.125, "options": {"block_config": [1, 1, 1, 1]}}, None, "tiny")
    row = summarize("t3d", setting)
    model = build_model("t3d", num_classes=5, modality="flow", width=0.125, block_config=(1, 1, 1, 1))
    assert row.params == sum(p.numel() for p in model.parameters())
    assert row.macs > 0
    assert row.macs == count_macs(model, torch.randn(1, 2, 32, 32, 32))  # meta and CPU counts agree
    assert row.inputs == "2x32x32x32"


def test_count_macs_is_multiply_adds():
    conv = nn.Conv3d(2, 4, kernel_size=3, padding=1, bias=False)
    # every one of the 4 x (4 x 8 x 8) outputs takes 2 x 3 x 3 x 3 multiply-adds
    assert count_macs(conv, torch.randn(1, 2, 4, 8, 8)) == 4 * 4 * 8 * 8 * 2 * 27


@pytest.mark.parametrize("name", ["i3d", "t3d"])
def test_paper_size_summary(name):
    row = summarize(name)
    assert row.macs > 1e9
    if name == "i3d":  # the paper: 25M for the two streams (12M each)
        assert 24e6 < row.params < 26e6


@pytest.mark.parametrize("name,inputs", [
    ("tsn", "3x3x224x224"),  # K = 3 segments of one frame
    ("two_stream", "3x10x224x224 + 2x10x224x224"),  # RGB read at the 10 flow fields' instants
    ("c3d", "3x16x112x112"),
])
def test_paper_inputs_come_from_the_data_section(name, inputs):
    assert summarize(name).inputs == inputs


def _run(argv):
    parser = argparse.ArgumentParser()
    models_command.add_arguments(parser)
    return models_command.run(parser.parse_args(argv))


def test_models_command_lists_and_summarizes(capsys):
    assert _run([]) == 0
    listing = capsys.readouterr().out
    assert "i3d" in listing and "rgb, flow, rgb+flow" in listing
    assert "K segments x L frames" in listing and "one clip of T frames" in listing
    assert _run(["--summary", "--name", "t3d"]) == 0
    table = capsys.readouterr().out
    assert "t3d" in table and "i3d" not in table and "GMACs" in table
    with pytest.raises(UserError, match="not a registered architecture"):
        _run(["--name", "no_such_model"])
