"""Experiment files: every shipped one loads; every kind of mistake stops with the field and the fix."""
from pathlib import Path

import pytest
import yaml

from orchestrator.config import input_spec, parse_experiment, with_overrides
from orchestrator.plan import plan
from orchestrator.errors import UserError
from orchestrator.preflight import load_experiment, preflight

EXPERIMENTS = sorted(Path(__file__).parents[1].joinpath("experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiments_validate(path):
    cfg = load_experiment(path)
    preflight(plan(cfg))
    assert cfg.name == yaml.safe_load(path.read_text()).get("name", path.stem)
    assert cfg.study or cfg.sweep, "every shipped experiment is a study or a sweep"


def write(tmp_path, text: str) -> Path:
    """exp.yaml over a UCF-101 layout of empty files: 2 classes x 3 groups, split 1 testing group 1."""
    root, splits = tmp_path / "videos", tmp_path / "splits"
    splits.mkdir(exist_ok=True)
    names = {c: [f"{c}/v_{c}_g{g:02d}_c01.avi" for g in (1, 2, 3)] for c in ("A", "B")}
    for name in sum(names.values(), []):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    (splits / "classInd.txt").write_text("1 A\n2 B\n")
    (splits / "trainlist01.txt").write_text("".join(f"{n} {i + 1}\n" for i, c in enumerate(names) for n in names[c][1:]))
    (splits / "testlist01.txt").write_text("".join(f"{names[c][0]}\n" for c in names))
    path = tmp_path / "exp.yaml"
    optim = "" if "optim:" in text else "optim: {batch_size: 2}\n"  # 2 training videos after data.val
    path.write_text(f"data: {{root: {root}, annotations: {tmp_path / 'splits'}}}\n" + optim + text)
    return path


@pytest.mark.parametrize("text,message", [
    ("model: {modalty: rgb}\n", "model.modalty: unknown key; did you mean 'modality'?"),
    ("optim: {epochs: ten}\n", "optim.epochs: expected a whole number, got 'ten'"),
    ("optim: {lr: fast}\n", "optim.lr: expected float"),
    ("model: {architecture: resnet}\n", "model.architecture: 'resnet' is not one of"),
    ("model: {architecture: two_stream_fusion, modality: rgb}\n",
     "model.modality 'rgb' does not fit model.architecture two_stream_fusion, which takes rgb+flow"),
    ("model: {architecture: tsn, modality: rgb+flow}\n", "model.modality 'rgb+flow' does not fit model.architecture tsn"),
    ("data: {crop_size: 300, short_side: 128}\n", "data.crop_size (300) is larger than data.short_side (128)"),
    ("scaling: {num_workers: 0}\n", "scaling.num_workers: expected a number of workers > 0 or [min, max] of them, got 0"),
    ("scaling: {num_workers: [4, 2]}\n", "scaling.num_workers: expected [min, max] with min <= max, got [4, 2]"),
    ("optim: {warmup_epochs: -1}\n", "optim.warmup_epochs: must be >= 0"),
    ("optim: {batch_size: 2, epochs: 5, iterations: 4500}\n",
     "optim.epochs and optim.iterations both given: the schedule is one of them; remove one"),
    ("optim: {batch_size: 2, epochs: null}\n", "optim.epochs: null needs optim.iterations"),
    ("optim: {batch_size: 2, iterations: 4500}\nsweep: {parameters: {optim.lr: {grid: [0.1, 0.01]}}, scheduler: asha}\n",
     "sweep.scheduler 'asha' stops trials at epoch rungs up to optim.epochs"),
    ("data: {sampler: dense, clip_len: 16}\n", "data.sampler 'dense' does not fit model.architecture tsn, which takes K "
     "segments x L frames: set data.sampler: tsn"),
    ("model: {architecture: two_stream, modality: flow, options: {flow_frames: 10}}\ndata: {frames_per_segment: 5}\n",
     "model.options.flow_frames (10) duplicates data.frames_per_segment (5): two_stream takes it from "
     "data.frames_per_segment; remove model.options.flow_frames"),
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
    ("study: {variants: {rgb: {}, flow: {model.modality: flow}}, late_fusion: {ts: {streams: [rgb, flow]}}, "
     "compare: [[ts, rgb], [ts, flwo]]}\n", "study.compare.1 must name two different study variants or late_fusion "
     "entries (have: flow, rgb, ts), got ['ts', 'flwo']"),
    ("sweep: {parameters: {data.num_segments: [3, 5]}}\n", "sweep.parameters.data.num_segments: expected one of"),
    ("sweep: {parameters: {model.options.consensus: {grid: [avg, median]}}}\n", "consensus"),
    ("model: {architecture: tsn, modality: rgbdiff}\n", "data.frames_per_segment must be >= 2 for model.modality rgbdiff"),
    ("optim: {optimiser: adam}\n", "optim.optimiser: unknown key; did you mean 'optimizer'?"),
    ("data: {sampler: tns}\n", "data.sampler: 'tns' is not one of tsn, dense; did you mean 'tsn'?"),
    ("data: {synth: {groups: 2, colours: [Red]}}\n", "data.synth: colours: unknown key"),
    ("model: {architecture: hidden_two_stream, options: {num_flows: 10}}\ndata: {sampler: dense, clip_len: 8}\n",
     "fed rgb 3x8x56x56 (C x T x H x W, from the data section)"),
    ("data: {fps: 0}\n", "data.fps: must be > 0"),
    ("data: {fps: 25000}\n", "data.fps: must be <= 1000"),
    ("study: {variants: {rgb: {}}, expected: {rgb: {top1: 85.7, source: TSN, metric: test/video_top5}}}\n",
     "study.expected.rgb.metric: 'test/video_top5' is not one of test/video_top1, test/video_mean_class_acc"),
])
def test_invalid_experiments_name_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    # data paths given twice in YAML would be a YAML error; merge the data section instead
    raw = yaml.safe_load(path.read_text().split("\n", 1)[1]) or {}
    base = yaml.safe_load(path.read_text().split("\n", 1)[0])
    raw["data"] = {**base["data"], **raw.get("data", {})}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as err:
        preflight(plan(load_experiment(path)))
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_dataset_path_names_field_and_fix(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"data: {{root: {tmp_path / 'UCF101'}, annotations: {tmp_path}}}\n")
    cfg = load_experiment(path)  # parsing reads no file system
    with pytest.raises(UserError, match=r"data.root: .*UCF101 does not exist; .*data.synth: true"):
        preflight(plan(cfg))


def test_overrides_and_study_expansion(tmp_path):
    path = write(tmp_path, "study: {variants: {rgb: {model.modality: rgb}, flow: {model.modality: flow}}, "
                           "seeds: [0, 1]}\n")
    cfg = load_experiment(path)
    variants = plan(cfg).runs
    assert sorted(variants) == ["flow/seed0", "flow/seed1", "rgb/seed0", "rgb/seed1"]
    flow = variants["flow/seed1"].config
    assert (variants["flow/seed1"].variant, variants["flow/seed1"].seed) == ("flow", 1)
    assert flow.study is None and flow.data == cfg.data
    assert with_overrides(cfg, {"scaling.use_gpu": True}).scaling.use_gpu is True
    assert (flow.model.modality, flow.seed, cfg.model.modality) == ("flow", 1, "rgb")
    with pytest.raises(Exception):  # frozen: a config is never changed in place
        cfg.model.modality = "flow"


def test_init_checkpoint_from_an_mlflow_run(tmp_path):
    import torch

    from orchestrator import tracking
    from orchestrator.training.results import init_weights

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_run(tracking_uri=uri, experiment="source", run_name="pretrain", tags={})
    torch.save({"model": {"w": torch.arange(3.0)}}, tmp_path / "model.pt")
    tracking.log_artifacts(uri, run_id, [tmp_path / "model.pt"])

    path = write(tmp_path, f"model: {{init_checkpoint: 'mlflow:{run_id}'}}\ntracking: {{tracking_uri: '{uri}'}}\n"
                           f"scaling: {{storage_path: {tmp_path / 'runs'}}}\n")
    cfg = load_experiment(path)
    preflight(plan(cfg))  # checks the run's model.pt exists, fetches nothing
    assert not (tmp_path / "runs").exists()
    local = init_weights(cfg)  # fetched into the run's output folder, where the next call finds it
    assert local == tmp_path / "runs" / "scores" / run_id / "model.pt"
    assert torch.equal(torch.load(local, weights_only=True)["model"]["w"], torch.arange(3.0))

    path.write_text(path.read_text().replace(run_id, "0" * 32))
    with pytest.raises(UserError, match="model.init_checkpoint: mlflow:0+: no such run"):
        preflight(plan(load_experiment(path)))


def test_choices_match_the_registries():
    from typing import get_args

    from orchestrator.late_fusion import FUSION_MODES
    from orchestrator import config
    from orchestrator.data.annotations import DATASETS
    from orchestrator.data.flow import FLOW_FORMATS, FLOW_METHODS
    from orchestrator.data.sampling import SAMPLERS

    assert set(get_args(config.Dataset)) == set(DATASETS)
    assert set(get_args(config.Sampler)) == set(SAMPLERS)
    assert set(get_args(config.FlowMethod)) == set(FLOW_METHODS)
    assert set(get_args(config.FlowFormat)) == set(FLOW_FORMATS)
    assert set(get_args(config.FusionMode)) == set(FUSION_MODES)


def _spec(model: dict, data: dict):
    return input_spec(parse_experiment({"model": model, "data": {"crop_size": 32, "short_side": 32, **data}}))


@pytest.mark.parametrize("model,data,shapes,keywords", [
    # TSN: K segments x L frames; K and L reach the builder under its declared keywords
    ({"architecture": "tsn", "modality": "rgb"}, {"num_segments": 3, "frames_per_segment": 1},
     {"rgb": (3, 3, 32, 32)}, {"num_segments": 3, "frames_per_segment": 1}),
    ({"architecture": "tsn", "modality": "flow"}, {"num_segments": 3, "frames_per_segment": 5},
     {"flow": (2, 15, 32, 32)}, {"num_segments": 3, "frames_per_segment": 5}),
    # RGB difference: L + 1 frames read per segment give L differences
    ({"architecture": "tsn", "modality": "rgbdiff"}, {"num_segments": 2, "frames_per_segment": 6},
     {"rgbdiff": (3, 10, 32, 32)}, {"num_segments": 2, "frames_per_segment": 5}),
    # two-stream fusion: K steps of L flow fields, RGB read at the same instants; L is its flow_frames
    ({"architecture": "two_stream_fusion", "modality": "rgb+flow"}, {"num_segments": 5, "frames_per_segment": 2},
     {"rgb": (3, 10, 32, 32), "flow": (2, 10, 32, 32)}, {"flow_frames": 2}),
    ({"architecture": "actionvlad", "modality": "flow"}, {"num_segments": 2, "frames_per_segment": 10},
     {"flow": (2, 20, 32, 32)}, {"frames_per_sample": 10}),
    # a dense clip is one group of T frames; clip models take no time keyword
    ({"architecture": "i3d", "modality": "rgb+flow"}, {"sampler": "dense", "clip_len": 8},
     {"rgb": (3, 8, 32, 32), "flow": (2, 8, 32, 32)}, {}),
    ({"architecture": "lrcn", "modality": "rgb"}, {"sampler": "tsn", "num_segments": 4},
     {"rgb": (3, 4, 32, 32)}, {}),
])
def test_input_spec_from_the_declared_contract(model, data, shapes, keywords):
    spec = _spec(model, data)
    assert spec.shapes == shapes
    time_keywords = {k: v for k, v in spec.builder_kwargs.items()
                     if k in ("num_segments", "frames_per_segment", "flow_frames", "frames_per_sample")}
    assert time_keywords == keywords
    assert spec.builder_kwargs["modality"] == model["modality"]


def test_schema_command_prints_the_experiment_schema(capsys):
    import json

    from orchestrator.cli import main

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"data", "model", "optim", "scaling", "tracking", "sweep", "study"} <= set(schema["properties"])
    assert "source" not in schema["properties"]
    data = schema["$defs"]["DataConfig"]
    assert data["additionalProperties"] is False
    assert data["properties"]["sampler"]["enum"] == ["tsn", "dense"]
    assert data["properties"]["num_segments"]["exclusiveMinimum"] == 0


def test_parsing_does_no_io(tmp_path, monkeypatch):
    """Relative paths become absolute without touching the file system; nothing is created."""
    monkeypatch.chdir(tmp_path)
    cfg = parse_experiment({"data": {"root": "videos/UCF101"}, "scaling": {"storage_path": "runs"}})
    assert cfg.data.root == str(tmp_path / "videos" / "UCF101")
    assert cfg.scaling.storage_path == str(tmp_path / "runs")
    assert cfg.tracking.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert list(tmp_path.iterdir()) == []


def test_preflight_carves_the_val_list_and_refuses_one_group(tmp_path):
    """The val list is carved before launch, as the workers will: a training list of one group cannot give one."""
    path = write(tmp_path, "")
    preflight(plan(load_experiment(path)))  # 2 training groups: one trains, one validates
    train = tmp_path / "splits" / "trainlist01.txt"
    train.write_text("".join(line + "\n" for line in train.read_text().splitlines() if "_g02_" in line))
    with pytest.raises(UserError, match=r"exp.yaml: data.val.by 'group': the training list has 1 group\(s\)"):
        preflight(plan(load_experiment(path)))
    with pytest.raises(UserError, match=r"data.val: the training list \(2 videos\) is too small .* data.val: null"):
        preflight(plan(with_overrides(load_experiment(path), {"data.val.by": "video"})))  # one video per class


def test_preflight_feeds_the_model_a_batch_batchnorm_accepts():
    """T3D's last BatchNorm sees 1 x 1 x 1 per clip: a meta batch of one clip failed a valid config."""
    from orchestrator.preflight import check_model

    cfg = parse_experiment({"data": {"sampler": "dense", "clip_len": 32, "short_side": 64, "crop_size": 56},
                            "model": {"architecture": "t3d"}})
    check_model(cfg, input_spec(cfg))


def test_preflight_refuses_fewer_training_videos_than_one_batch_per_worker(tmp_path):
    path = write(tmp_path, "optim: {batch_size: 4}\nscaling: {num_workers: 2}\n")
    with pytest.raises(UserError, match=r"optim.batch_size \(4\) x scaling.num_workers \(2\) = 8 videos, but the "
                                        r"training list holds \d+ after data.val"):
        preflight(plan(load_experiment(path)))


def test_a_schedule_length_given_alone_replaces_the_other():
    """A study variant or --set giving optim.iterations over an epochs base (or the reverse) changes the
    schedule's length; both in one file is an error (test_invalid_experiments_name_the_field)."""
    by_epochs = parse_experiment({"optim": {"epochs": 3}})
    by_steps = with_overrides(by_epochs, {"optim.iterations": 4500})
    assert (by_steps.optim.epochs, by_steps.optim.iterations) == (None, 4500)
    other = with_overrides(by_steps, {"optim.lr": 0.1}).optim
    assert (other.epochs, other.iterations) == (None, 4500)
    back = with_overrides(by_steps, {"optim.epochs": 7}).optim
    assert (back.epochs, back.iterations) == (7, None)
