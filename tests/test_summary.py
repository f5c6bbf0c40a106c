"""`actionlab models`: modalities, parameter counts and multiply-adds at the papers' input sizes."""
import argparse

import pytest
import torch
from torch import nn

from models import MODELS, build_model
from models.summary import PAPER_SETTINGS, PaperSetting, count_macs, summarize, supported_modalities
from orchestrator.commands import models as models_command
from orchestrator.errors import UserError


def test_every_registered_model_has_paper_settings():
    assert set(MODELS) <= set(PAPER_SETTINGS)


def test_summary_row_counts_parameters_exactly():
    kwargs = dict(num_classes=5, modality="flow", width=0.125, block_config=(1, 1, 1, 1))
    row = summarize("t3d", PaperSetting(kwargs, (1, 2, 32, 32, 32), None, "tiny"))
    model = build_model("t3d", **kwargs)
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


def test_supported_modalities_probe_the_builder():
    assert supported_modalities("i3d") == ["rgb", "flow", "rgb+flow"]
    assert supported_modalities("t3d") == ["rgb", "flow"]


def _run(argv):
    parser = argparse.ArgumentParser()
    models_command.add_arguments(parser)
    return models_command.run(parser.parse_args(argv))


def test_models_command_lists_and_summarizes(capsys):
    assert _run([]) == 0
    listing = capsys.readouterr().out
    assert "i3d" in listing and "rgb, flow, rgb+flow" in listing
    assert _run(["--summary", "--name", "t3d"]) == 0
    table = capsys.readouterr().out
    assert "t3d" in table and "i3d" not in table and "GMACs" in table
    with pytest.raises(UserError, match="not a registered architecture"):
        _run(["--name", "no_such_model"])
