"""A tiny synthetic data set with flow, and a config for it, shared by the Ray tests."""
from pathlib import Path

from orchestrator.config import parse_experiment


def write_tiny_benchmark(out: Path) -> Path:
    """4 classes x 6 videos (16 frames, 64x64) in the UCF-101 layout, plus Farneback flow."""
    from orchestrator.data.annotations import read_split
    from orchestrator.data.flow import extract_flow
    from orchestrator.data.synth import SynthSpec, write_synthetic_ucf

    write_synthetic_ucf(out, SynthSpec(groups=3, clips_per_group=2, num_frames=16), progress=False)
    records = []
    for subset in ("train", "test"):
        records += read_split("ucf101", root=out / "UCF101", annotations=out / "ucfTrainTestlist", subset=subset).records
    extract_flow(records, flow_dir=out / "UCF101_flow" / "farneback", use_ray=False, progress=False)
    return out


def tiny_config(data_dir: Path, tmp: Path, **sections) -> dict:
    """Raw config dict: TSN at width 1/8 on 32x32 crops, 1 worker, 1 epoch, storage and MLflow in tmp."""
    raw = {
        "name": "tiny",
        "data": {"root": str(data_dir / "UCF101"), "annotations": str(data_dir / "ucfTrainTestlist"),
                 "num_segments": 2, "short_side": 32, "crop_size": 32, "flip": False, "loader_workers": 0},
        "model": {"architecture": "tsn", "width": 0.125, "options": {"backbone": "resnet18"}},
        "optim": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0.5},
        "scaling": {"num_workers": 1, "storage_path": str(tmp / "runs")},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return raw


def tiny_experiment(data_dir: Path, tmp: Path, **sections):
    return parse_experiment(tiny_config(data_dir, tmp, **sections), source="tiny")
