"""The per-worker loop's pieces, without Ray: schedule, input preparation, an epoch with a bad video."""
import logging

import pytest
import torch
from torch.utils.data import DataLoader

from orchestrator.config import from_dict, model_kwargs
from orchestrator.data.annotations import read_split
from orchestrator.data.dataset import collate_skip_bad
from orchestrator.data.synth import SynthSpec, write_synthetic_ucf
from orchestrator.training.loop import build_dataset, build_optimizer, lr_lambda, prepare_inputs, train_one_epoch


def config(**sections):
    raw = {"data": {"num_segments": 2, "short_side": 32, "crop_size": 32, "loader_workers": 0},
           "model": {"architecture": "tsn", "width": 0.125, "options": {"backbone": "resnet18"}},
           "optim": {"epochs": 4, "warmup_epochs": 1, "batch_size": 4}}
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return from_dict(raw, check_paths=False)


@pytest.mark.parametrize("step,factor", [(0, 0.25), (3, 1.0), (4, 1.0), (10, 0.5), (16, 0.0)])
def test_warmup_then_cosine(step, factor):
    # 4 steps per epoch: 1 warm-up epoch = 4 steps (0.25 .. 1.0), cosine to 0 at step 16
    assert lr_lambda(config(), steps_per_epoch=4)(step) == pytest.approx(factor, abs=1e-6)


def test_rgbdiff_inputs_difference_within_segments():
    cfg = config(model={"modality": "rgbdiff"}, data={"frames_per_segment": 3})
    clip = torch.randint(0, 256, (2, 1, 3, 6, 32, 32), dtype=torch.uint8)  # (B, V, C, K*(L+1), H, W)
    x, views = prepare_inputs({"rgb": clip}, cfg, torch.device("cpu"))
    assert views == 1 and x.shape == (2, 3, 4, 32, 32)  # K=2 segments x L=2 differences
    assert model_kwargs(cfg)["frames_per_segment"] == 2


def test_an_epoch_skips_a_bad_video_with_a_warning_and_a_count(tmp_path, caplog):
    write_synthetic_ucf(tmp_path, SynthSpec(groups=3, clips_per_group=1, num_frames=16), progress=False)
    cfg = config(data={"root": str(tmp_path / "UCF101"), "annotations": str(tmp_path / "ucfTrainTestlist")})
    split = read_split("ucf101", root=cfg.data.root, annotations=cfg.data.annotations, subset="train")
    split.records[0].path.write_text("this is not a video")
    dataset = build_dataset(cfg, split.records, train=True)
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_skip_bad)
    torch.manual_seed(0)
    from models import build_model

    model = build_model("tsn", num_classes=len(split.class_names), **model_kwargs(cfg))
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, len(loader)))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        stats = train_one_epoch(model, loader, optimizer, scheduler, scaler, cfg, torch.device("cpu"))
    assert stats["skipped"] == 1
    assert stats["seen"] == len(split.records) - 1
    assert torch.isfinite(torch.tensor(stats["loss_sum"]))
    assert str(split.records[0].path) in caplog.text
