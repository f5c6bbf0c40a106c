import pytest
import torch

from orchestrator.training.precision import autocast_dtype


@pytest.mark.parametrize("is_bf16_supported, expected", [
    (lambda including_emulation=True: including_emulation, torch.float16),  # V100 / T4: bf16 only emulated
    (lambda including_emulation=True: True, torch.bfloat16),  # Ampere and later: native bf16
])
def test_auto_precision_picks_bf16_only_where_native(monkeypatch, is_bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert autocast_dtype("auto", torch.device("cuda")) is expected
    assert autocast_dtype("auto", torch.device("cpu")) is None  # fp32 on CPU
