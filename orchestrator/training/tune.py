"""Sweeps and ablation studies: a Ray Tune `Tuner` over a per-trial driver that builds a TorchTrainer.

    Tuner(trial_driver, param_space={'overrides': ...})      (Ray Train V2 / Tune interop)
        trial_driver(config) -> with_overrides(base, overrides) -> train_run(...) -> TorchTrainer.fit()

One MLflow parent run per sweep or study; every trial/variant is a child run (mlflow.parentRunId).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from orchestrator.config import (MLFLOW_RUN_PREFIX, VARIANT_PREFIX, ExperimentConfig, expand_study, from_dict,
                                 resolved_overrides, with_overrides)
from orchestrator.errors import UserError

PARENT_FILE = "actionlab_parent_run.json"  # lets `--resume` continue under the same MLflow parent
STOPPED_EARLY = "stopped early by the trial scheduler"


def search_space(parameters: dict) -> dict:
    """{dotted field: {grid|choice|uniform|loguniform|randint: values}} -> Tune search space."""
    from ray import tune

    makers = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
              "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    return {dotted: makers[kind](values) for dotted, spec in parameters.items() for kind, values in spec.items()}


def max_concurrent_trials(cfg: ExperimentConfig) -> int:
    """How many Train runs fit at once: the limiting resource over what one run's workers ask for."""
    import ray

    from orchestrator.training.driver import use_gpu

    resources = ray.cluster_resources()
    s = cfg.scaling
    if use_gpu(cfg):
        return max(1, int(resources.get("GPU", 0) // s.num_workers))
    return max(1, int(resources.get("CPU", 1) // (s.num_workers * s.cpus_per_worker)))


def trial_driver(config: dict, *, base: dict, parent_run_id: str, kind: str) -> None:
    """One Tune trial: apply this trial's overrides, train with Ray Train, report the final metrics."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.training.driver import train_run

    cfg = from_dict(base, check_paths=False)
    trial = config.get("trial", config)  # a study trial carries its label and tags; a sweep's only overrides
    overrides, label, tags = trial["overrides"], trial.get("label", ""), trial.get("tags", {})
    if not label:  # sweep trial: name it by its sampled values
        label = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in overrides.items())
    cfg = with_overrides(cfg, overrides, where=f"trial {label}")
    trial_id = ray.tune.get_context().get_trial_id()  # stable across `--resume`
    outcome = train_run(cfg, kind=kind, variant=label, parent_run_id=parent_run_id, extra_tags=tags,
                        callbacks=[TuneReportCallback()], resume_key=_resume_key(parent_run_id, trial_id),
                        stopped_by=_stopped_by_tune)
    final = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    ray.tune.report({**final, "mlflow_run_id": outcome.run_id})


def _resume_key(parent_run_id: str, trial_id: str) -> str:
    return f"{parent_run_id[:8]}-{trial_id}"


def _stopped_by_tune(err: BaseException) -> str | None:
    """Tune stops a trial (ASHA) by ending its actor and removing its placement group, in which the
    trial's TrainController runs: `fit()` may then raise ActorDiedError before the process exits."""
    from ray.exceptions import ActorDiedError

    return STOPPED_EARLY if isinstance(err, ActorDiedError) and "placement group was removed" in str(err) else None


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _tuner(cfg: ExperimentConfig, *, name: str, param_space: dict, parent_run_id: str, kind: str,
           resume: bool, num_samples: int = 1, scheduler=None, metric: str | None = None, mode: str = "max",
           max_concurrent: int | None = None):
    from ray import tune

    storage = Path(cfg.scaling.storage_path).resolve()
    base = dataclasses.replace(cfg, sweep=None, study=None).to_dict()  # a trial is one run; the parent has the rest
    trainable = tune.with_parameters(trial_driver, base=base, parent_run_id=parent_run_id, kind=kind)
    # A trial only drives its TorchTrainer: it asks for a little memory and no CPU, so the
    # training workers can hold every CPU/GPU (Tune refuses an entirely empty request).
    trainable = tune.with_resources(trainable, tune.PlacementGroupFactory([{"CPU": 0, "memory": 100 * 2**20}]))
    path = storage / name
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise UserError(f"--resume: nothing to resume at {path}; run without --resume to start the sweep")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=num_samples, scheduler=scheduler, metric=metric, mode=mode,
                                    max_concurrent_trials=max_concurrent or max_concurrent_trials(cfg)),
        run_config=tune.RunConfig(name=name, storage_path=str(storage)),
    )


def _parent_run(cfg: ExperimentConfig, *, kind: str, name: str, resume: bool) -> tuple[str, str]:
    from orchestrator import tracking

    uri = tracking.resolve_tracking_uri(cfg.tracking.tracking_uri)
    tracking.reap_stale_runs(uri, cfg.experiment_name)
    marker = Path(cfg.scaling.storage_path).resolve() / name / PARENT_FILE
    if resume and marker.exists():
        run_id = json.loads(marker.read_text())["run_id"]
        tracking.reopen_run(uri, run_id)  # it ended KILLED when interrupted
        return uri, run_id
    run_id = tracking.start_run(tracking_uri=uri, experiment=cfg.experiment_name, run_name=name,
                                tags={"actionlab.kind": kind, "actionlab.study": cfg.name},
                                params=tracking.flatten_params(cfg.to_dict()))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": run_id}))
    return uri, run_id


def run_sweep(cfg: ExperimentConfig, *, resume: bool = False):
    """Sweep `cfg.sweep.parameters` (grid / random, FIFO or ASHA); returns Tune's ResultGrid."""
    from ray import tune

    from orchestrator import tracking

    if not cfg.sweep:
        raise UserError(f"{cfg.source}: has no 'sweep:' section; add one, or use `actionlab train`")
    sw = cfg.sweep
    name = f"sweep-{cfg.name}"
    uri, parent = _parent_run(cfg, kind="sweep", name=name, resume=resume)
    scheduler = None
    if sw.scheduler == "asha":
        require_state_api(f"{cfg.source}: sweep.scheduler 'asha'")
        scheduler = tune.schedulers.ASHAScheduler(time_attr="epoch", max_t=cfg.optim.epochs,
                                                  grace_period=1, reduction_factor=2)
    tuner = _tuner(cfg, name=name, param_space={"overrides": search_space(sw.parameters)}, parent_run_id=parent,
                   kind="trial", resume=resume, num_samples=sw.num_samples, scheduler=scheduler,
                   metric=sw.metric, mode=sw.mode, max_concurrent=sw.max_concurrent_trials)
    with tracking.run_status(uri, parent):
        return _fit(tuner, uri, parent)


def require_state_api(what: str) -> None:
    """ASHA stops trials by ending their actors; Ray Train then frees the stopped run's workers
    (its placement group) through the state API. Without it (Ray started without the dashboard)
    every stopped trial keeps its CPUs/GPUs reserved and later trials wait for ever: refuse."""
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    try:
        list_actors(limit=1, timeout=10)
    except RayStateApiException as err:
        raise UserError(f"{what} needs Ray's state API, which this Ray cluster does not serve ({err.__class__.__name__}):"
                        " start Ray with its dashboard (`ray start --head` and `ray.init()` do by default; not"
                        " include_dashboard=False), or use sweep.scheduler 'fifo'") from None


def _fit(tuner, uri: str, parent: str):
    """Run the Tuner; Ctrl-C interrupts it like any command (the parent run ends KILLED and
    `--resume` continues from Tune's saved state). A trial that ends without an error and without
    its driver's final report was stopped by the scheduler (ASHA): its run ends KILLED with that
    reason, whatever its driver managed to record. Every trial failing is a FAILED sweep; some
    failing is reported."""
    from orchestrator import tracking

    # Tune's own SIGINT handler would turn Ctrl-C into an ordinary-looking return.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    results = tuner.fit()
    stopped = {_resume_key(parent, r.metrics["trial_id"]) for r in results
               if r.error is None and r.metrics and "mlflow_run_id" not in r.metrics}
    tracking.end_stopped_runs(uri, parent, stopped, reason=STOPPED_EARLY)
    if results.errors and len(results.errors) == len(results):
        raise RuntimeError(f"all {len(results)} trials failed; first error: {results.errors[0]}")
    if results.errors:
        print(f"warning: {len(results.errors)} of {len(results)} trials failed (FAILED runs in MLflow); "
              f"first error: {results.errors[0]}")
    return results


def run_study(cfg: ExperimentConfig, *, resume: bool = False, out_dir: Path | None = None) -> dict:
    """Train every variant x dataset x seed of `cfg.study`, add offline late fusion, write the table.

    Returns {'parent_run_id', 'markdown', 'paths'}.
    """
    from ray import tune

    from orchestrator import report, tracking

    if not cfg.study:
        raise UserError(f"{cfg.source}: has no 'study:' section; add variants, or use `actionlab train`")
    name = f"study-{cfg.name}"
    uri, parent = _parent_run(cfg, kind="study", name=name, resume=resume)
    trials = []
    for key, overrides in expand_study(cfg).items():
        variant, *rest = key.split("/")
        overrides = resolved_overrides(cfg, overrides)
        root = Path(overrides.get("data.root", cfg.data.root))
        dataset = rest[0] if len(rest) == 2 else f"{root.parent.name}/{root.name}"
        trials.append({"overrides": overrides, "label": key,
                       "tags": {"actionlab.variant": variant, "actionlab.dataset": dataset,
                                "actionlab.study_dataset": rest[0] if len(rest) == 2 else "",
                                "actionlab.seed": str(overrides["seed"])}})
    # Variants fine-tuned from another variant ("variant:<name>") run once their sources have finished.
    stages = [[t for t in trials if not _source_variant(t)], [t for t in trials if _source_variant(t)]]
    with tracking.run_status(uri, parent):
        for stage, stage_trials in enumerate(s for s in stages if s):
            if stage:
                stage_trials = _resolve_sources(stage_trials, uri, cfg.experiment_name, parent)
            stage_name = name if stage == 0 else f"{name}-finetune"
            stage_resume = resume and tune.Tuner.can_restore(str(Path(cfg.scaling.storage_path) / stage_name))
            tuner = _tuner(cfg, name=stage_name, param_space={"trial": tune.grid_search(stage_trials)},
                           parent_run_id=parent, kind="variant", resume=stage_resume)
            results = _fit(tuner, uri, parent)
            if results.errors:  # a table with holes would misreport the study
                raise RuntimeError(f"{len(results.errors)} study variant(s) failed; first error: {results.errors[0]}")
        _late_fusion_runs(cfg, uri, parent)
        rows = report.results_from_mlflow(uri, cfg.experiment_name, parent_run_id=parent)
        out_dir = Path(out_dir or Path(cfg.scaling.storage_path).resolve() / name / "report")
        paths = report.write_report(rows, out_dir, title=cfg.description or cfg.name)
        tracking.log_artifacts(uri, parent, list(paths.values()))
        markdown = paths["markdown"].read_text()
    return {"parent_run_id": parent, "markdown": markdown, "paths": paths}


def _source_variant(trial: dict) -> str | None:
    spec = trial["overrides"].get("model.init_checkpoint") or ""
    return spec[len(VARIANT_PREFIX):] if spec.startswith(VARIANT_PREFIX) else None


def _resolve_sources(trials: list[dict], uri: str, experiment: str, parent: str) -> list[dict]:
    """Point each "variant:<name>" at the finished run of that variant with the same seed (and the same
    study.datasets entry) as mlflow:<run_id>, whose model.pt the worker loads. The source may have
    trained on other data (a larger source set): that is the point of pretraining."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'FINISHED'")
    finished = {(r.data.tags.get("actionlab.variant"), r.data.tags.get("actionlab.study_dataset"),
                 r.data.tags.get("actionlab.seed")): r.info.run_id for r in runs}
    resolved = []
    for trial in trials:
        tags = trial["tags"]
        source = (_source_variant(trial), tags["actionlab.study_dataset"], tags["actionlab.seed"])
        if source not in finished:
            raise RuntimeError(f"study variant {trial['label']}: its source variant {source[0]} has no finished run")
        overrides = {**trial["overrides"], "model.init_checkpoint": f"{MLFLOW_RUN_PREFIX}{finished[source]}"}
        resolved.append({**trial, "overrides": overrides, "tags": {**tags, "actionlab.source_variant": source[0]}})
    return resolved


def _late_fusion_runs(cfg: ExperimentConfig, uri: str, parent: str) -> None:
    """Score-level fusion of two trained variants, computed offline from their per-video scores."""
    import mlflow

    from models.late_fusion import fuse_scores, load_scores
    from orchestrator import metrics as M
    from orchestrator import tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one tiny file per run
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}' and "
                                                "tags.`actionlab.kind` = 'variant' and attributes.status = 'FINISHED'")

    def run_key(run) -> tuple[str, str, str]:
        return run.data.tags["actionlab.variant"], run.data.tags["actionlab.dataset"], run.data.tags["actionlab.seed"]

    by_key = {run_key(r): r for r in children if "actionlab.fusion" not in r.data.tags}
    done = {run_key(r) for r in children if "actionlab.fusion" in r.data.tags}  # a resumed study has them
    for fusion_name, spec in cfg.study.late_fusion.items():
        a_name, b_name = spec["streams"]
        params = {"weight": spec.get("weight", 0.5), "mode": spec.get("mode", "softmax")}
        for (variant, dataset, seed), run_a in sorted(by_key.items()):
            run_b = by_key.get((b_name, dataset, seed))
            if variant != a_name or run_b is None or (fusion_name, dataset, seed) in done:
                continue
            scores = [load_scores(client.download_artifacts(r.info.run_id, "scores.npz")) for r in (run_a, run_b)]
            fused = fuse_scores(*scores, **params)
            tags = {"actionlab.kind": "variant", "actionlab.study": cfg.name, "actionlab.variant": fusion_name,
                    "actionlab.dataset": dataset, "actionlab.seed": seed, "actionlab.fusion": "late",
                    "actionlab.streams": f"{a_name}+{b_name}",
                    "actionlab.modality": "+".join(r.data.tags.get("actionlab.modality", "?") for r in (run_a, run_b)),
                    "actionlab.architecture": run_a.data.tags.get("actionlab.architecture", "")}
            run_id = tracking.start_run(tracking_uri=uri, experiment=cfg.experiment_name, run_name=fusion_name,
                                        tags=tags, params=params, parent_run_id=parent)
            with tracking.run_status(uri, run_id):
                for key, value in M.classification_metrics(fused.labels, fused.scores, prefix="test/video_").items():
                    client.log_metric(run_id, key, float(value))
