"""What a command will run, worked out once: `plan(cfg) -> Plan`, a value every later step takes.

    plan(cfg)
        study:  variant x dataset x seed -> RunSpec (label, frozen config, input spec, MLflow tags)
                stage 1: the runs trained from scratch
                stage 2: the runs fine-tuned from a stage-1 variant (model.init_checkpoint: variant:<name>)
                late fusions: the two stream runs of each dataset and seed; study.compare's pairs
        sweep:  one RunSpec per listed value of sweep.parameters (ranges at their low end): what a
                preflight can check; Tune samples the rest from cfg.sweep (training/tune.search_space)
        train:  the experiment itself
    -> preflight(plan)          files, model and splits of every run, before anything starts
    -> prepare_data(plan)       synthetic data and flow caches the runs read
    -> study.run_study(plan)    the stages on Tune (training/tune.run_trials), fusions, the report
       study.run_sweep(plan)

Every run's config is checked here as a whole config (`with_overrides`), and the study's own
rules (a fine-tuned variant names a scratch one; `auto` fusion needs val scores) are enforced here:
an invalid plan is a UserError naming the file, the run and the field, before any work starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.config import (VARIANT_PREFIX, ExperimentConfig, LateFusion, input_spec, quote, sweep_points,
                                 with_overrides)
from orchestrator.errors import UserError
from orchestrator.inputs import InputSpec


class RunSpec(NamedTuple):
    """One training run a command will launch."""
    label: str  # how Tune and the screen name it: 'rgb/seed0' (variant / study dataset / seed)
    where: str  # where it comes from in the experiment file, for error messages
    config: ExperimentConfig  # checked and frozen; no sweep or study of its own
    inputs: InputSpec  # what its sampler reads and its model eats (orchestrator/inputs.py)
    tags: dict[str, str]  # MLflow tags that place it in its study (variant, dataset, seed, source variant)
    variant: str = ""  # study.variants key
    dataset: str = ""  # study.datasets key ("" = the data section)
    seed: int = 0
    source: str | None = None  # the scratch variant it fine-tunes from, trained in the stage before
    overrides: dict[str, Any] = {}  # dotted fields set over the experiment's base (a variant's, a sweep value)


class Fusion(NamedTuple):
    """Score-level fusion of two trained runs of one dataset and seed (computed offline, study.late_fusion)."""
    name: str  # study.late_fusion key: the fused run's variant name
    spec: LateFusion
    streams: tuple[str, str]  # the two runs' labels
    dataset: str  # the fused run's actionlab.dataset tag (its first stream's)
    seed: int


class Plan(NamedTuple):
    kind: str  # 'train' | 'sweep' | 'study'
    name: str  # its Tune experiment and MLflow parent run: 'study-<name>', 'sweep-<name>', or the run's name
    config: ExperimentConfig  # the experiment as parsed (sweep and study sections included)
    stages: tuple[dict[str, RunSpec], ...]  # run in order: a stage's runs may start from an earlier stage's
    fusions: tuple[Fusion, ...] = ()
    compare: tuple[tuple[str, str], ...] = ()  # study.compare: pairs of variant or fusion names

    @property
    def runs(self) -> dict[str, RunSpec]:
        """Every run of every stage, {label: RunSpec}."""
        return {label: run for stage in self.stages for label, run in stage.items()}


def plan(cfg: ExperimentConfig, *, kind: str | None = None) -> Plan:
    """The runs `cfg` launches: a study's stages, a sweep's listed points, or the run itself.

    `kind` 'train' plans the base run alone (`actionlab train` on a file with a study or sweep).
    Raises UserError naming the file, the run and the field.
    """
    kind = kind or ("study" if cfg.study else "sweep" if cfg.sweep else "train")
    where = cfg.source or "config"
    base = cfg.model_copy(update={"sweep": None, "study": None})  # a run is one run; the parent has the rest
    if kind == "study":
        return _study_plan(cfg, base, where)
    if source_variant(base) is not None:  # only a study trains the variant it would start from
        raise UserError(f"{where}: model.init_checkpoint: {base.model.init_checkpoint} names a study variant, but "
                        f"this {kind} runs no study; give a model.pt path or mlflow:<run_id>")
    if kind == "sweep":
        runs = {}
        for dotted, value in sweep_points(cfg):
            label = f"{dotted}.{sum(r.overrides.keys() == {dotted} for r in runs.values())}"  # its index in the list
            run_where = f"sweep.parameters.{dotted}={quote(value)}"
            run_cfg = with_overrides(base, {dotted: value}, where=f"{where}: {run_where}")
            runs[label] = RunSpec(label, run_where, run_cfg, input_spec(run_cfg), {}, overrides={dotted: value})
        return Plan("sweep", f"sweep-{cfg.name}", cfg, (runs,))
    return Plan("train", cfg.name, cfg, ({cfg.name: RunSpec(cfg.name, "", base, input_spec(base), {})},))


def source_variant(cfg: ExperimentConfig) -> str | None:
    """The study variant `model.init_checkpoint` fine-tunes from ("variant:<name>"), if it names one."""
    spec = cfg.model.init_checkpoint or ""
    return spec[len(VARIANT_PREFIX):] if spec.startswith(VARIANT_PREFIX) else None


def dataset_tag(cfg: ExperimentConfig, dataset: str) -> str:
    """A run's actionlab.dataset tag in a study: the study.datasets key, else '<parent>/<root>' of data.root."""
    root = Path(cfg.data.root)
    return dataset or f"{root.parent.name}/{root.name}"


def _study_plan(cfg: ExperimentConfig, base: ExperimentConfig, where: str) -> Plan:
    study = cfg.study
    runs: dict[str, RunSpec] = {}
    for vname, voverrides in study.variants.items():
        for dname, doverrides in (study.datasets or {"": {}}).items():
            for seed in study.seeds:
                label = "/".join(p for p in (vname, dname, f"seed{seed}") if p)
                overrides: dict[str, Any] = {**{k if k.startswith("data.") else f"data.{k}": v
                                                for k, v in doverrides.items()}, **voverrides, "seed": seed}
                run_where = f"study variant '{label}'"
                run_cfg = with_overrides(base, overrides, where=f"{where}: {run_where}")
                source = source_variant(run_cfg)
                tags = {"actionlab.variant": vname, "actionlab.dataset": dataset_tag(run_cfg, dname),
                        "actionlab.study_dataset": dname, "actionlab.seed": str(seed)}
                if source:
                    tags["actionlab.source_variant"] = source
                runs[label] = RunSpec(label, run_where, run_cfg, input_spec(run_cfg), tags, vname, dname, seed, source,
                                      overrides)
    scratch = {label: r for label, r in runs.items() if r.source is None}
    sources = sorted({r.variant for r in scratch.values()})
    for label, r in runs.items():
        if r.source is not None and r.source not in sources:
            raise UserError(f"{where}: study variant '{label}': model.init_checkpoint: {VARIANT_PREFIX}{r.source}: "
                            f"inside a study, name a variant trained from scratch ({', '.join(sources) or 'none'}); "
                            "outside one, give a model.pt path or mlflow:<run_id>")
    fine_tuned = {label: r for label, r in runs.items() if r.source is not None}
    return Plan("study", f"study-{cfg.name}", cfg, tuple(s for s in (scratch, fine_tuned) if s),
                _fusions(study.late_fusion, runs, where), tuple(map(tuple, study.compare)))


def _fusions(late_fusion: dict[str, LateFusion], runs: dict[str, RunSpec], where: str) -> tuple[Fusion, ...]:
    """Each fusion's stream pairs: its two variants' runs of the same study dataset and seed."""
    by_key = {(r.variant, r.dataset, r.seed): label for label, r in runs.items()}
    fusions = []
    for name, spec in late_fusion.items():
        a_name, b_name = spec.streams
        if "auto" in (spec.weight, spec.resolved_mode):
            if off := [r.variant for r in runs.values() if r.variant in spec.streams and not r.config.data.val]:
                raise UserError(f"{where}: study.late_fusion.{name}: weight/mode auto is chosen on the streams' val "
                                f"scores, but variant '{off[0]}' has data.val: null; give a fixed weight and mode, "
                                "or keep data.val")
        for (variant, dataset, seed), label_a in sorted(by_key.items()):
            label_b = by_key.get((b_name, dataset, seed))
            if variant == a_name and label_b is not None:
                fusions.append(Fusion(name, spec, (label_a, label_b), runs[label_a].tags["actionlab.dataset"], seed))
    return tuple(fusions)
