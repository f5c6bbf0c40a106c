"""Experiment files: every shipped one loads; every kind of mistake stops with the field and the fix."""
from pathlib import Path

import pytest
import yaml

from orchestrator.config import expand_study, load_experiment, with_overrides
from orchestrator.errors import UserError

EXPERIMENTS = sorted(Path(__file__).parents[1].joinpath("experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiments_validate(path):
    cfg = load_experiment(path)
    assert cfg.name == yaml.safe_load(path.read_text()).get("name", path.stem)
    assert cfg.study or cfg.sweep, "every shipped experiment is a study or a sweep"


def write(tmp_path, text: str) -> Path:
    root = tmp_path / "videos"
    root.mkdir(exist_ok=True)
    (tmp_path / "splits").mkdir(exist_ok=True)
    path = tmp_path / "exp.yaml"
    path.write_text(f"data: {{root: {root}, annotations: {tmp_path / 'splits'}}}\n" + text)
    return path


@pytest.mark.parametrize("text,message", [
    ("model: {modalty: rgb}\n", "model.modalty: unknown key; did you mean 'modality'?"),
    ("optim: {epochs: ten}\n", "optim.epochs: expected a whole number, got 'ten'"),
    ("optim: {lr: fast}\n", "optim.lr: expected float"),
    ("model: {architecture: resnet}\n", "model.architecture: 'resnet' is not one of"),
    ("model: {architecture: two_stream_fusion, modality: rgb}\n", "model (two_stream_fusion, modality rgb"),
    ("model: {architecture: tsn, modality: rgb+flow}\n", "model (tsn, modality rgb+flow"),
    ("data: {crop_size: 300, short_side: 128}\n", "data.crop_size (300) is larger than data.short_side (128)"),
    ("scaling: {num_workers: 0}\n", "scaling.num_workers: must be > 0"),
    ("optim: {warmup_epochs: -1}\n", "optim.warmup_epochs: must be >= 0"),
    ("data: {sampler: dense, clip_len: 16}\n", "model (tsn, modality rgb, options {}) with data.sampler dense"),
    ("model: {architecture: two_stream, modality: flow, options: {flow_frames: 10}}\ndata: {frames_per_segment: 5}\n",
     "model (two_stream, modality flow"),
    ("data: {dataset: csv}\n", "data.test_annotations: a csv data set is one list"),
    ("study: {variants: {rgb: {}, flow: {model.modality: flow}}, late_fusion: {ts: {streams: [rgb, flow], "
     "mode: sofmax}}}\n", "study.late_fusion.ts.mode: 'sofmax' is not one of"),
    ("study: {variants: {rgb: {}}, seeds: []}\n", "study.seeds: expected a non-empty list"),
    ("study: {variants: {rgb: {}, ft: {model.init_checkpoint: 'variant:rbg'}}}\n",
     "model.init_checkpoint: variant:rbg: inside a study, name a variant trained from scratch (rgb)"),
    ("sweep: {parameters: {optim.lr: {uniform: 0.1}}}\n", "sweep.parameters.optim.lr.uniform: expected [low, high]"),
    ("model: {pretrained: /nope/resnet50.pth}\n", "model.pretrained: /nope/resnet50.pth: no such weights file"),
    ("study: {variants: {flow: {model.modalty: flow}}}\n", "study variant 'flow/seed0': model.modalty: unknown key"),
    ("study: {variants: {rgb: {}}, late_fusion: {ts: {streams: [rgb, flow]}}}\n",
     "study.late_fusion.ts.streams must name two study variants"),
    ("sweep: {parameters: {data.num_segments: [3, 5]}}\n", "sweep.parameters.data.num_segments: expected one of"),
    ("sweep: {parameters: {model.options.consensus: {grid: [avg, median]}}}\n", "consensus"),
])
def test_invalid_experiments_name_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    # data paths given twice in YAML would be a YAML error; merge the data section instead
    raw = yaml.safe_load(path.read_text().split("\n", 1)[1]) or {}
    base = yaml.safe_load(path.read_text().split("\n", 1)[0])
    raw["data"] = {**base["data"], **raw.get("data", {})}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as err:
        load_experiment(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_dataset_path_names_field_and_fix(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"data: {{root: {tmp_path / 'UCF101'}, annotations: {tmp_path}}}\n")
    with pytest.raises(UserError, match=r"data.root: .*UCF101 does not exist; .*data.synth: true"):
        load_experiment(path)


def test_overrides_and_study_expansion(tmp_path):
    path = write(tmp_path, "study: {variants: {rgb: {model.modality: rgb}, flow: {model.modality: flow}}, "
                           "seeds: [0, 1]}\n")
    cfg = load_experiment(path)
    variants = expand_study(cfg)
    assert sorted(variants) == ["flow/seed0", "flow/seed1", "rgb/seed0", "rgb/seed1"]
    flow = with_overrides(cfg, variants["flow/seed1"])
    assert with_overrides(cfg, {"scaling.use_gpu": True}).scaling.use_gpu is True
    assert (flow.model.modality, flow.seed, cfg.model.modality) == ("flow", 1, "rgb")
    with pytest.raises(Exception):  # frozen: a config is never changed in place
        cfg.model.modality = "flow"


def test_init_checkpoint_from_an_mlflow_run(tmp_path):
    import torch

    from orchestrator import tracking
    from orchestrator.config import checkpoint_path

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_run(tracking_uri=uri, experiment="source", run_name="pretrain", tags={})
    torch.save({"model": {"w": torch.arange(3.0)}}, tmp_path / "model.pt")
    tracking.log_artifacts(uri, run_id, [tmp_path / "model.pt"])

    path = write(tmp_path, f"model: {{init_checkpoint: 'mlflow:{run_id}'}}\ntracking: {{tracking_uri: '{uri}'}}\n")
    cfg = load_experiment(path)
    local = checkpoint_path(cfg)
    assert torch.equal(torch.load(local, weights_only=True)["model"]["w"], torch.arange(3.0))

    path.write_text(path.read_text().replace(run_id, "0" * 32))
    with pytest.raises(UserError, match="model.init_checkpoint: mlflow:0+: no such run"):
        load_experiment(path)
