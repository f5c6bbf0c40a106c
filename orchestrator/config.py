"""Experiments as files: a YAML file loaded into a frozen, typed config and validated completely.

An experiment YAML has the sections below (every key optional except where a default cannot
exist); `load_experiment` checks unknown keys, types and cross-field rules before anything is
launched, and every error names the file, the field and the fix. Studies (`study:`) and sweeps
(`sweep:`) address fields by dotted name, e.g. `model.modality` or `data.num_segments`, and each
of their variants is validated as a whole config too.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import UserError

MODALITIES = ("rgb", "flow", "rgbdiff", "rgb+flow")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "ucf101"  # ucf101 | hmdb51 | kinetics | csv: which annotation reader
    root: str = "data/synth/UCF101"  # folder holding the videos
    annotations: str = "data/synth/ucfTrainTestlist"  # split folder (UCF/HMDB) or CSV file
    test_annotations: str | None = None  # csv data sets: the held-out `path,label` list (others have splits)
    split: int = 1  # official split number (1-3)
    synth: bool | dict = False  # generate the synthetic benchmark into root's parent when missing; a dict sets SynthSpec fields
    flow_dir: str | None = None  # flow cache; default <root>_flow/<flow_method>
    flow_method: str = "farneback"  # farneback (fast CPU) | tvl1 (accurate, slow) | raft (GPU)
    flow_bound: float = 20.0  # flow is clipped to +-bound pixels and quantised to uint8
    sampler: str = "tsn"  # tsn: K segments (TSN, two-stream) | dense: T frames at stride s (C3D, I3D)
    num_segments: int = 3  # TSN's K
    frames_per_segment: int = 1  # 1 RGB frame, L flow fields, or L+1 frames for RGB difference
    clip_len: int = 16  # dense sampler: frames per clip
    stride: int = 1  # dense sampler: frame stride
    short_side: int = 64  # resize the shorter side first (TSN used 256)
    crop_size: int = 56  # network input size (TSN used 224)
    train_crop: str = "multiscale"  # random | multiscale
    test_crop: str = "center"  # center | three | ten (views multiply)
    flip: bool = True  # random horizontal flips in training; off when classes are left/right mirror images
    test_clips: int = 1  # clips per video at test time; scores are averaged per video
    loader_workers: int = 1  # DataLoader processes per training worker

    def resolved_flow_dir(self) -> Path:
        if self.flow_dir:
            return Path(self.flow_dir).resolve()
        root = Path(self.root).resolve()
        return root.parent / f"{root.name}_flow" / self.flow_method


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "tsn"  # a name from `actionlab models`
    modality: str = "rgb"  # rgb | flow | rgbdiff | rgb+flow (two-stream architectures)
    width: float = 1.0  # channel multiplier; 1.0 is the published network
    dropout: float = 0.5
    pretrained: str | None = None  # 2D backbone weights: a file, or a torchvision name in the torch cache
    init_checkpoint: str | None = None  # fine-tune from an earlier run: its model.pt, mlflow:<run_id>, or (studies) variant:<name>
    options: dict = field(default_factory=dict)  # architecture keywords, e.g. {consensus: avg}


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 10
    batch_size: int = 8  # per training worker
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01  # for the whole batch (batch_size x workers); not rescaled silently
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay
    grad_clip: float = 40.0  # TSN clips the gradient norm at 40; 0 disables
    amp: bool = True  # mixed precision on GPU (ignored on CPU)
    eval_every: int = 1  # epochs between validation passes


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: int = 1  # Ray Train workers (data-parallel replicas)
    use_gpu: bool | str = "auto"  # auto (GPUs when the cluster has them) | true | false
    cpus_per_worker: float = 1.0
    storage_path: str = "actionlab_runs"  # checkpoints and Ray results; shared storage on clusters
    max_failures: int = 0  # worker-group restarts from the last checkpoint


@dataclass(frozen=True)
class SweepConfig:
    parameters: dict = field(default_factory=dict)  # dotted field -> {grid|choice: [...]} or {uniform|loguniform: [lo, hi]}
    num_samples: int = 1  # repeats of the grid (or random samples)
    scheduler: str = "fifo"  # fifo | asha
    metric: str = "val/video_top1"  # measured on the split's test list (see README: no official val split)
    mode: str = "max"
    max_concurrent_trials: int | None = None  # default: what the cluster's CPUs/GPUs allow


@dataclass(frozen=True)
class StudyConfig:
    variants: dict = field(default_factory=dict)  # name -> {dotted field: value}
    late_fusion: dict = field(default_factory=dict)  # name -> {streams: [a, b], weight: 0.5, mode: softmax}
    datasets: dict = field(default_factory=dict)  # name -> {dotted data field: value}; default: the data section
    seeds: list = field(default_factory=lambda: [0])


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str | None = None  # None: SQLite store ./mlflow.db (made absolute); a server URL on clusters
    experiment: str | None = None  # MLflow experiment; default: the experiment's name


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    description: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig | None = None
    study: StudyConfig | None = None
    source: str = ""  # the YAML file this came from (for error messages and artifacts)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Building a config from nested dicts, with errors that name the field and the fix.


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0] if len(errors) == 1 else
                        f"{where}: expected one of {', '.join(_type_name(o) for o in options)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = origin or tp
    if expected is bool and not isinstance(value, bool):
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"{where}: expected a whole number, got {value!r}")
    if not isinstance(value, expected):
        raise UserError(f"{where}: expected {_type_name(expected)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping of {cls.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
            raise UserError(f"{where}.{key}: unknown key; {fix}".lstrip("."))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}".lstrip("."))
    return cls(**kwargs)


def _split_dotted(overrides: dict) -> dict:
    nested: dict = {}
    for dotted, value in overrides.items():
        *parents, leaf = str(dotted).split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and key == "options" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def with_overrides(cfg: ExperimentConfig, overrides: dict, *, where: str = "",
                   check_paths: bool = True) -> ExperimentConfig:
    """A copy of `cfg` with dotted-field overrides applied (e.g. {'model.modality': 'flow'}), checked."""
    where = where or cfg.source
    raw = _merge(cfg.to_dict(), _split_dotted(overrides))
    return from_dict(raw, source=cfg.source, where=where, check_paths=check_paths)


def resolved_overrides(cfg: ExperimentConfig, overrides: dict) -> dict:
    """`overrides` with each value as the validated config holds it (relative paths made absolute), so
    they mean the same thing in a Ray worker's working directory."""
    full = with_overrides(cfg, overrides, check_paths=False)

    def value(dotted: str):
        node = full
        for part in dotted.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return node

    return {dotted: value(dotted) for dotted in overrides}


def from_dict(raw: dict, *, source: str = "", where: str = "", check_paths: bool = True) -> ExperimentConfig:
    """Build and validate an ExperimentConfig from plain dicts (YAML, or a Ray worker's copy)."""
    raw = {**raw, "source": source or raw.get("source", "")}
    prefix = where or source or "config"
    try:
        cfg = _absolute_paths(_build(ExperimentConfig, raw, ""))
    except UserError as err:
        raise UserError(f"{prefix}: {err}") from None
    validate(cfg, where=prefix, check_paths=check_paths)
    return cfg


def _absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Relative paths are relative to the directory the command runs in; they are made absolute once,
    here, because Ray workers and trial drivers run in other directories."""

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    def checkpoint(spec: str | None) -> str | None:  # a run or study-variant reference stays a reference
        return spec if spec and spec.startswith((MLFLOW_RUN_PREFIX, VARIANT_PREFIX)) else absolute(spec)

    def weights(spec: str | None) -> str | None:  # a torchvision weights name stays a name
        return spec if spec and "_Weights." in spec and not Path(spec).exists() else absolute(spec)

    from orchestrator.tracking import resolve_tracking_uri

    d, m, s = cfg.data, cfg.model, cfg.scaling
    return dataclasses.replace(
        cfg,
        tracking=dataclasses.replace(cfg.tracking, tracking_uri=resolve_tracking_uri(cfg.tracking.tracking_uri)),
        data=dataclasses.replace(d, root=absolute(d.root), annotations=absolute(d.annotations),
                                 test_annotations=absolute(d.test_annotations), flow_dir=absolute(d.flow_dir)),
        model=dataclasses.replace(m, pretrained=weights(m.pretrained), init_checkpoint=checkpoint(m.init_checkpoint)),
        scaling=dataclasses.replace(s, storage_path=absolute(s.storage_path)),
    )


def load_experiment(path: str | Path, *, check_paths: bool = True) -> ExperimentConfig:
    """Read and validate an experiment YAML (its variants and sweep included); check_paths=False
    skips the data/checkpoint existence checks (for commands that only read MLflow)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such experiment file; the shipped ones are in experiments/")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    raw.setdefault("name", path.stem)
    cfg = from_dict(raw, source=str(path), check_paths=check_paths)
    for name, overrides in expand_study(cfg).items():
        with_overrides(cfg, overrides, where=f"{path}: study variant '{name}'", check_paths=check_paths)
    return cfg


# ---------------------------------------------------------------------------------------------
# Cross-field rules.

def _choice(value, options, where: str, fix: str = "") -> None:
    if value not in options:
        raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, options))}{fix}")


def _positive(cfg, names: list[str], where: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise UserError(f"{where}.{name}: must be > 0, got {getattr(cfg, name)}")


def _non_negative(cfg, names: list[str], where: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise UserError(f"{where}.{name}: must be >= 0, got {getattr(cfg, name)}")


def clip_frames(data: DataConfig) -> int:
    """Frames (or flow fields) per clip the sampler produces: the model input's T."""
    return data.num_segments * data.frames_per_segment if data.sampler == "tsn" else data.clip_len


def model_kwargs(cfg: ExperimentConfig) -> dict:
    """Keywords for the architecture's builder. `num_segments` and `frames_per_segment` come from
    the data section when the builder takes them, so the sampler and the model never disagree;
    `model.options` pass through untouched (a misspelt option is the builder's TypeError)."""
    import inspect

    from models import MODELS

    m, d = cfg.model, cfg.data
    params = inspect.signature(MODELS[m.architecture]).parameters
    kwargs = {"modality": m.modality, "width": m.width, "dropout": m.dropout, "pretrained": m.pretrained}
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    if d.sampler == "tsn":
        derived = {"num_segments": d.num_segments,
                   # RGB difference: L + 1 frames read per segment give L differences
                   "frames_per_segment": d.frames_per_segment - (m.modality == "rgbdiff")}
        kwargs.update({k: v for k, v in derived.items() if k in params})
    return {**kwargs, **m.options}


def validate(cfg: ExperimentConfig, *, where: str, check_paths: bool = True) -> None:
    from models import MODELS
    from orchestrator.data.annotations import DATASETS
    from orchestrator.data.flow import FLOW_METHODS
    from orchestrator.data.sampling import SAMPLERS

    d, m, o, s = cfg.data, cfg.model, cfg.optim, cfg.scaling
    _choice(d.dataset, list(DATASETS), f"{where}: data.dataset")
    _choice(d.sampler, SAMPLERS, f"{where}: data.sampler")
    _choice(d.flow_method, FLOW_METHODS, f"{where}: data.flow_method")
    _choice(d.train_crop, ("random", "multiscale"), f"{where}: data.train_crop")
    _choice(d.test_crop, ("center", "three", "ten"), f"{where}: data.test_crop")
    _positive(d, ["num_segments", "frames_per_segment", "clip_len", "stride", "short_side", "crop_size",
                  "test_clips", "flow_bound"], f"{where}: data")
    if d.crop_size > d.short_side:
        raise UserError(f"{where}: data.crop_size ({d.crop_size}) is larger than data.short_side "
                        f"({d.short_side}); lower crop_size or raise short_side")
    if d.dataset == "csv" and not d.test_annotations:
        raise UserError(f"{where}: data.test_annotations: a csv data set is one list; give a second "
                        "`path,label` CSV of held-out videos to test on (testing on the training list "
                        "would report training accuracy)")
    if d.split not in (1, 2, 3):
        raise UserError(f"{where}: data.split: {d.split} is not an official split; use 1, 2 or 3")
    _choice(m.architecture, sorted(MODELS), f"{where}: model.architecture", "; see `actionlab models`")
    _choice(m.modality, MODALITIES, f"{where}: model.modality")
    if m.modality == "rgbdiff" and d.frames_per_segment < 2 and d.sampler == "tsn":
        raise UserError(f"{where}: data.frames_per_segment must be >= 2 for model.modality rgbdiff "
                        "(L+1 frames give L differences); TSN used 6")
    _positive(o, ["epochs", "batch_size", "lr", "eval_every"], f"{where}: optim")
    _non_negative(o, ["warmup_epochs", "grad_clip", "weight_decay", "momentum"], f"{where}: optim")
    _non_negative(s, ["max_failures"], f"{where}: scaling")
    _non_negative(d, ["loader_workers"], f"{where}: data")
    _choice(o.optimizer, ("sgd", "adamw"), f"{where}: optim.optimizer")
    _positive(s, ["num_workers", "cpus_per_worker"], f"{where}: scaling")
    _choice(str(s.use_gpu).lower(), ("auto", "true", "false"), f"{where}: scaling.use_gpu")
    _check_model_builds(cfg, where)
    synth_spec(d, where)
    if check_paths:
        _check_paths(cfg, where)
    if cfg.sweep:
        _check_sweep(cfg, where)
    if cfg.study:
        _check_study(cfg, where)


def _check_model_builds(cfg: ExperimentConfig, where: str) -> None:
    """Build the model on the meta device (no memory, no time) to catch a wrong modality or option."""
    import torch

    from models import build_model

    m, d = cfg.model, cfg.data
    kwargs = model_kwargs(cfg)
    kwargs.pop("pretrained", None)
    try:
        with torch.device("meta"), torch.no_grad():
            model = build_model(m.architecture, num_classes=2, **kwargs)
            # the clip the sampler and crop will feed it: a wrong length fails here, not on a worker
            model(example_input(cfg))
    except (ValueError, TypeError) as err:
        raise UserError(f"{where}: model ({m.architecture}, modality {m.modality}, options {m.options}) with "
                        f"data.sampler {d.sampler}: {err}") from None


def example_input(cfg: ExperimentConfig):
    """A batch of one clip shaped as the training loop feeds the model (on the current device):
    (1, C, T, crop, crop), or {"rgb": ..., "flow": ...} for two-stream models."""
    import torch

    d, modality = cfg.data, cfg.model.modality
    frames = clip_frames(d)
    if modality == "rgbdiff":  # L + 1 frames per segment (or clip) give L differences
        frames -= d.num_segments if d.sampler == "tsn" else 1
    shape = {"rgb": (1, 3, frames, d.crop_size, d.crop_size), "flow": (1, 2, frames, d.crop_size, d.crop_size)}
    if modality == "rgb+flow":
        return {k: torch.zeros(v) for k, v in shape.items()}
    return torch.zeros(shape["flow" if modality == "flow" else "rgb"])


def synth_spec(data: DataConfig, where: str = "config"):
    """The SynthSpec that `data.synth` asks for (None when it asks for none)."""
    from orchestrator.data.synth import SynthSpec, validate_spec

    if data.synth is False:
        return None
    fields = {f.name for f in dataclasses.fields(SynthSpec)}
    options = {} if data.synth is True else dict(data.synth)
    for key in options:
        if key not in fields:
            raise UserError(f"{where}: data.synth.{key}: unknown key; valid keys: {', '.join(sorted(fields))}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    try:
        spec = SynthSpec(**options)
        validate_spec(spec)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: data.synth: {err}") from None
    return spec


def _check_paths(cfg: ExperimentConfig, where: str) -> None:
    d, m = cfg.data, cfg.model
    if not d.synth:
        for name in ("root", "annotations", "test_annotations"):
            if getattr(d, name) and not Path(getattr(d, name)).exists():
                raise UserError(f"{where}: data.{name}: {getattr(d, name)} does not exist; fix the path, or "
                                "set data.synth: true to generate the synthetic benchmark there")
    if m.pretrained:
        from models.pretrained import resolve_weights

        try:
            resolve_weights(m.pretrained)
        except UserError as err:
            raise UserError(f"{where}: model.pretrained: {err}") from None
    if m.init_checkpoint and m.init_checkpoint.startswith(VARIANT_PREFIX):
        source = m.init_checkpoint[len(VARIANT_PREFIX):]
        variants = cfg.study.variants if cfg.study else {}
        sources = [name for name, o in variants.items()  # one level: a source is not fine-tuned itself
                   if not str(o.get("model.init_checkpoint", "")).startswith(VARIANT_PREFIX)]
        if source not in sources:
            raise UserError(f"{where}: model.init_checkpoint: {m.init_checkpoint}: inside a study, name a variant "
                            f"trained from scratch ({', '.join(sources) or 'none'}); "
                            "outside one, give a model.pt path or mlflow:<run_id>")
    elif m.init_checkpoint:
        try:
            checkpoint_path(cfg, download=False)
        except UserError as err:
            raise UserError(f"{where}: model.init_checkpoint: {err}") from None


MLFLOW_RUN_PREFIX = "mlflow:"
VARIANT_PREFIX = "variant:"  # in a study: fine-tune from another variant's run (same dataset and seed)


def checkpoint_path(cfg: ExperimentConfig, *, download: bool = True) -> Path | None:
    """The local file of `model.init_checkpoint`: a path as given, or for `mlflow:<run_id>` that run's
    model.pt artifact, fetched from the tracking store (checked, not fetched, when download=False)."""
    spec = cfg.model.init_checkpoint
    if not spec:
        return None
    if not spec.startswith(MLFLOW_RUN_PREFIX):
        if not Path(spec).is_file():
            raise UserError(f"{spec} is not a file; give the model.pt of an earlier actionlab run "
                            "(<storage_path>/scores/<run_id>/model.pt) or mlflow:<run_id>")
        return Path(spec)
    import mlflow

    run_id = spec[len(MLFLOW_RUN_PREFIX):]
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    try:
        names = [a.path for a in client.list_artifacts(run_id)]
    except mlflow.exceptions.MlflowException as err:
        raise UserError(f"{spec}: no such run in {cfg.tracking.tracking_uri} ({err.message})") from None
    if "model.pt" not in names:
        raise UserError(f"{spec}: that run logged no model.pt (did it finish?); artifacts: {', '.join(names) or 'none'}")
    return Path(client.download_artifacts(run_id, "model.pt")) if download else None


def _check_sweep(cfg: ExperimentConfig, where: str) -> None:
    sw = cfg.sweep
    _choice(sw.scheduler, ("fifo", "asha"), f"{where}: sweep.scheduler")
    _choice(sw.mode, ("max", "min"), f"{where}: sweep.mode")
    _positive(sw, ["num_samples"], f"{where}: sweep")
    if not sw.parameters:
        raise UserError(f"{where}: sweep.parameters is empty; name at least one field, e.g. "
                        "'model.options.consensus: {grid: [avg, max]}'")
    for dotted, spec in sw.parameters.items():
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SEARCH_SPACES):
            raise UserError(f"{where}: sweep.parameters.{dotted}: expected one of "
                            f"{', '.join('{' + k + ': ...}' for k in SEARCH_SPACES)}, got {spec!r}")
        kind, values = next(iter(spec.items()))
        ranged = kind in ("uniform", "loguniform", "randint")
        if not isinstance(values, list) or not values or (ranged and len(values) != 2):
            raise UserError(f"{where}: sweep.parameters.{dotted}.{kind}: expected "
                            f"{'[low, high]' if ranged else 'a non-empty list of values'}, got {values!r}")
        samples = values if kind in ("grid", "choice") else values[:1]
        for value in samples:  # every grid value must make a valid config
            with_overrides(dataclasses.replace(cfg, sweep=None), {dotted: value}, where=f"{where}: sweep.parameters.{dotted}={value!r}")


def _check_study(cfg: ExperimentConfig, where: str) -> None:
    st = cfg.study
    if not st.variants:
        raise UserError(f"{where}: study.variants is empty; name at least one, e.g. 'rgb: {{model.modality: rgb}}'")
    for name, fusion in st.late_fusion.items():
        streams = fusion.get("streams", []) if isinstance(fusion, dict) else []
        unknown = [v for v in streams if v not in st.variants]
        if len(streams) != 2 or unknown:
            raise UserError(f"{where}: study.late_fusion.{name}.streams must name two study variants "
                            f"(have: {', '.join(st.variants)}), got {streams!r}")
        extra = set(fusion) - {"streams", "weight", "mode"}
        if extra:
            raise UserError(f"{where}: study.late_fusion.{name}: unknown key {sorted(extra)[0]!r}; "
                            "valid keys: streams, weight, mode")
        from models.late_fusion import FUSION_MODES

        _choice(fusion.get("mode", "softmax"), FUSION_MODES, f"{where}: study.late_fusion.{name}.mode")
        weight = fusion.get("weight", 0.5)
        if not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise UserError(f"{where}: study.late_fusion.{name}.weight: expected a number in [0, 1] "
                            f"(the first stream's share), got {weight!r}")
    if not st.seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in st.seeds):
        raise UserError(f"{where}: study.seeds: expected a non-empty list of whole numbers, got {st.seeds!r}")


SEARCH_SPACES = ("grid", "choice", "uniform", "loguniform", "randint")


def expand_study(cfg: ExperimentConfig) -> dict[str, dict]:
    """Trained variants of a study as {name: overrides}: variant x dataset x seed (names joined by '/')."""
    if not cfg.study:
        return {}
    datasets = cfg.study.datasets or {"": {}}
    out = {}
    for vname, voverrides in cfg.study.variants.items():
        for dname, doverrides in datasets.items():
            for seed in cfg.study.seeds:
                key = "/".join(p for p in (vname, dname, f"seed{seed}") if p)
                out[key] = {**{f"data.{k}" if not k.startswith("data.") else k: v for k, v in doverrides.items()},
                            **voverrides, "seed": seed}
    return out
