"""Between an experiment file and a launch: read the file, then check it against the world once.

    load_experiment(path)  ->  ExperimentConfig (orchestrator.config: parsed and checked, no I/O)
    preflight(cfg)         ->  data paths, pretrained weights, init checkpoints (files or MLflow
                               runs), the synthetic spec, and a meta-device forward of every model
                               the command will train, fed the input `config.input_spec` derives

Commands run both on the driver before anything is launched; trials and workers receive the
frozen config and check nothing again.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.config import (ExperimentConfig, example_input, expand_study, input_spec, parse_experiment,
                                 source_variant, sweep_points, with_overrides)
from orchestrator.errors import UserError
from orchestrator.training.results import init_weights


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and parse an experiment YAML (its study variants and sweep grid included)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such experiment file; the shipped ones are in experiments/")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, model, optim, ...), got {raw!r}")
    return parse_experiment({"name": path.stem, **raw}, source=str(path))


def launch_configs(cfg: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """{label: config} of every run the command will start: a study's variants, a sweep's listed
    values (ranges at their low end), or the experiment itself."""
    if cfg.study:
        return {f"study variant '{label}'": v.config for label, v in expand_study(cfg).items()}
    if cfg.sweep:
        base = cfg.model_copy(update={"sweep": None})
        return {f"sweep.parameters.{k}={v!r}": with_overrides(base, {k: v}) for k, v in sweep_points(cfg)}
    return {"": cfg}


def preflight(cfg: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """Check every run the command will launch against files, MLflow and the model zoo.

    Returns `launch_configs(cfg)`. Raises UserError naming the file, the run, the field and the fix.
    """
    configs = launch_configs(cfg)
    for label, run_cfg in configs.items():
        where = f"{cfg.source or 'config'}: {label}".rstrip(": ")
        try:
            _check_files(run_cfg)
            check_model(run_cfg)
            _check_val(run_cfg)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    return configs


def _check_files(cfg: ExperimentConfig) -> None:
    from orchestrator.data.synth import spec_from_options

    d, m = cfg.data, cfg.model
    try:
        spec_from_options(d.synth)
    except ValueError as err:
        raise UserError(f"data.synth: {err}") from None
    if not d.synth:
        for name in ("root", "annotations", "test_annotations"):
            if getattr(d, name) and not Path(getattr(d, name)).exists():
                raise UserError(f"data.{name}: {getattr(d, name)} does not exist; fix the path, or "
                                "set data.synth: true to generate the synthetic benchmark there")
    if m.pretrained:  # loaded into a real (CPU) model: fetches torchvision's weights, checks they fit
        import torch

        from models import build_model

        try:
            with torch.device("cpu"):
                build_model(m.architecture, num_classes=2, **input_spec(cfg).builder_kwargs)
        except UserError as err:
            raise UserError(f"model.pretrained: {err}") from None
    if m.init_checkpoint and source_variant(cfg) is None:  # a study's source variant is trained first
        try:
            init_weights(cfg, download=False)
        except UserError as err:
            raise UserError(f"model.init_checkpoint: {err}") from None


def check_model(cfg: ExperimentConfig) -> None:
    """Build the model on the meta device (no memory, no time) and feed it the clip the sampler and
    crop will make: a wrong option or clip length fails here, not on a worker."""
    import torch

    from models import build_model

    m = cfg.model
    spec = input_spec(cfg)
    kwargs = {**spec.builder_kwargs, "pretrained": None}  # weights were loaded above; meta holds none
    try:
        with torch.device("meta"), torch.no_grad():
            build_model(m.architecture, num_classes=2, **kwargs)(example_input(spec))
    except (ValueError, TypeError) as err:
        shapes = ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in spec.shapes.items())
        raise UserError(f"model ({m.architecture}, modality {m.modality}, options {m.options}) fed {shapes} "
                        f"(C x T x H x W, from the data section): {err}") from None


def _check_val(cfg: ExperimentConfig) -> None:
    """Carve the val list as the workers will, when the data is there: too few groups fails here."""
    from orchestrator.data.annotations import read_run_splits

    d = cfg.data
    if d.val and Path(d.root).exists():
        read_run_splits(d.dataset, root=d.root, annotations=d.annotations, split=d.split,
                        test_annotations=d.test_annotations, val=d.val)
