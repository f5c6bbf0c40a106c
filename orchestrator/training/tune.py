"""Sweeps and ablation studies: a Ray Tune `Tuner` over a per-trial driver that builds a TorchTrainer.

    Tuner(trial_driver, param_space=...)      (Ray Train V2 / Tune interop)
        sweep trial:  with_overrides(base, sampled overrides) -> train_run(...) -> TorchTrainer.fit()
        study trial:  the variant's config, built and checked on the driver -> train_run(...)
    -> TrialOutcome per trial (finished / stopped early / failed, with the reason)

One MLflow parent run per sweep or study; every trial/variant is a child run (mlflow.parentRunId).
A study chains its stages and pairs its late-fusion streams from the outcomes it has just received;
it asks MLflow only on `--resume`, for the fused runs an earlier attempt already logged.
"""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

from orchestrator.config import (MLFLOW_RUN_PREFIX, ExperimentConfig, Variant, expand_study, source_variant,
                                 with_overrides)
from orchestrator.errors import UserError
from orchestrator.training.results import SCORES_FILE, TrialOutcome, fuse_run_outputs, run_output_dir

PARENT_FILE = "actionlab_parent_run.json"  # lets `--resume` continue under the same MLflow parent
STOPPED_EARLY = "stopped early by the trial scheduler"


def search_space(cfg: ExperimentConfig) -> dict:
    """`sweep.parameters` as a Tune search space. Listed values are taken as the checked config
    holds them (relative paths made absolute), so they mean the same in a trial's directory."""
    from ray import tune

    def held(dotted: str, value):
        node = with_overrides(cfg, {dotted: value})
        for part in dotted.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return node

    makers = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
              "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    space = {}
    for dotted, spec in cfg.sweep.parameters.items():
        values = [held(dotted, v) for v in spec.values] if spec.kind in ("grid", "choice") else spec.values
        space[dotted] = makers[spec.kind](values)
    return space


def max_concurrent_trials(cfg: ExperimentConfig) -> int:
    """How many Train runs fit at once: the limiting resource over what one run's workers ask for."""
    import ray

    from orchestrator.training.driver import use_gpu

    resources = ray.cluster_resources()
    s = cfg.scaling
    if use_gpu(cfg):
        return max(1, int(resources.get("GPU", 0) // s.max_workers))
    return max(1, int(resources.get("CPU", 1) // (s.max_workers * s.cpus_per_worker)))


def trial_driver(config: dict, *, base: ExperimentConfig, variants: dict[str, Variant], tags: dict[str, dict],
                 parent_run_id: str, kind: str, source: dict[str, str]) -> None:
    """One Tune trial: its config (a study variant's, or the base with the sampled overrides), one
    Ray Train run, and a final report that says it finished. `source`: the driver's MLflow source
    tags (its command line; this process's is a Ray worker's)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.training.driver import train_run

    class EpochReports(TuneReportCallback):
        """Epoch reports only: a mid-epoch checkpoint's has none of the metrics Tune schedules on."""

        def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
            if metrics and metrics[0].get("report", "epoch") == "epoch":
                super().after_report(run_context, metrics, checkpoint)

    if "label" in config:  # a study variant, built and checked on the driver
        label = config["label"]
        cfg = variants[label].config
    else:  # a sweep point: name it by its sampled values
        overrides = config["overrides"]
        label = _sweep_label(overrides)
        cfg = with_overrides(base, overrides, where=f"trial {label}")
    trial_id = ray.tune.get_context().get_trial_id()  # stable across `--resume`
    outcome = train_run(cfg, kind=kind, variant=label, parent_run_id=parent_run_id,
                        extra_tags={**source, **tags.get(label, {})},
                        callbacks=[EpochReports()], resume_key=_resume_key(parent_run_id, trial_id),
                        stopped_by=_stopped_by_tune)
    final = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    ray.tune.report({**final, "mlflow_run_id": outcome.run_id, "outcome": "finished"})


def _sweep_label(overrides: dict) -> str:
    return ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in overrides.items())


def _describe_trial(config: dict, *, base: ExperimentConfig, variants: dict[str, Variant]) -> tuple[str, int]:
    """A trial's name on screen (its variant label or sampled values) and its number of epochs."""
    if "label" in config:
        return config["label"], variants[config["label"]].config.optim.epochs
    overrides = config.get("overrides", {})
    return _sweep_label(overrides), int(overrides.get("optim.epochs", base.optim.epochs))


def _dataset_tag(v: Variant) -> str:
    root = Path(v.config.data.root)
    return v.dataset or f"{root.parent.name}/{root.name}"


def _variant_tags(v: Variant) -> dict:
    tags = {"actionlab.variant": v.variant, "actionlab.dataset": _dataset_tag(v),
            "actionlab.study_dataset": v.dataset, "actionlab.seed": str(v.seed)}
    if source := source_variant(v.config):
        tags["actionlab.source_variant"] = source
    return tags


def _resume_key(parent_run_id: str, trial_id: str) -> str:
    return f"{parent_run_id[:8]}-{trial_id}"


def _stopped_by_tune(err: BaseException) -> str | None:
    """Tune stops a trial (ASHA) by ending its actor and removing its placement group, in which the
    trial's TrainController runs: `fit()` may then raise ActorDiedError before the process exits."""
    from ray.exceptions import ActorDiedError

    return STOPPED_EARLY if isinstance(err, ActorDiedError) and "placement group was removed" in str(err) else None


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


STOPS_FILE = "stopped_trials.json"  # the trials the scheduler stopped, beside Tune's experiment state


def recording_asha(stops_file: Path, **kwargs):
    """ASHA that writes down each trial it stops, so the sweep reads the stop instead of inferring
    it (a restored sweep's scheduler keeps appending to the same file)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP:
                stopped = set(json.loads(stops_file.read_text())) if stops_file.exists() else set()
                stops_file.write_text(json.dumps(sorted(stopped | {trial.trial_id})))
            return decision

    return RecordingASHA(**kwargs)


def _tuner(cfg: ExperimentConfig, *, name: str, param_space: dict, parent_run_id: str, kind: str, resume: bool,
           variants: dict[str, Variant] | None = None, tags: dict[str, dict] | None = None,
           num_samples: int = 1, scheduler=None,
           metric: str | None = None, mode: str = "max", max_concurrent: int | None = None):
    from ray import tune

    from orchestrator import progress
    from orchestrator import tracking

    storage = Path(cfg.scaling.storage_path)
    base = cfg.model_copy(update={"sweep": None, "study": None})  # a trial is one run; the parent has the rest
    trainable = tune.with_parameters(trial_driver, base=base, variants=variants or {}, tags=tags or {},
                                     parent_run_id=parent_run_id, kind=kind, source=tracking.source_tags())
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
        # a row per trial on the screen `progress.console` opened (saved with the Tuner: `--resume` has it too)
        run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=[progress.tune_callback(
            functools.partial(_describe_trial, base=base, variants=variants or {}))]),
    )


def _parent_run(cfg: ExperimentConfig, *, kind: str, name: str, resume: bool) -> tuple[str, str]:
    from orchestrator import tracking

    uri = cfg.tracking.tracking_uri
    tracking.reap_stale_runs(uri, cfg.experiment_name)
    marker = Path(cfg.scaling.storage_path) / name / PARENT_FILE
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
    """Sweep `cfg.sweep.parameters` (grid / random, FIFO or ASHA).

    Returns Tune's ResultGrid and a TrialOutcome per trial.
    """
    from orchestrator import tracking

    if not cfg.sweep:
        raise UserError(f"{cfg.source}: has no 'sweep:' section; add one, or use `actionlab train`")
    sw = cfg.sweep
    name = f"sweep-{cfg.name}"
    uri, parent = _parent_run(cfg, kind="sweep", name=name, resume=resume)
    scheduler = None
    if sw.scheduler == "asha":
        require_state_api(f"{cfg.source}: sweep.scheduler 'asha'")
        scheduler = recording_asha(Path(cfg.scaling.storage_path) / name / STOPS_FILE, time_attr="epoch",
                                   max_t=cfg.optim.epochs, grace_period=1, reduction_factor=2)
    tuner = _tuner(cfg, name=name, param_space={"overrides": search_space(cfg)}, parent_run_id=parent,
                   kind="trial", resume=resume, num_samples=sw.num_samples, scheduler=scheduler,
                   metric=sw.metric, mode=sw.mode, max_concurrent=sw.max_concurrent_trials)
    with tracking.run_status(uri, parent):
        results, outcomes = _fit(tuner, cfg, name, uri, parent)
        _describe_parent(cfg, uri, parent)
        return results, outcomes


def _describe_parent(cfg: ExperimentConfig, uri: str, parent: str) -> str:
    """The comparison table of the parent's finished children, as the parent run's description
    (the UI renders it on the run's page); returns the Markdown ('' when no child finished)."""
    from orchestrator import report, tracking

    rows = report.results_from_mlflow(uri, cfg.experiment_name, parent_run_id=parent)
    if not rows:
        return ""
    markdown = report.to_markdown(report.summarize(rows), title=cfg.description or cfg.name)
    tracking.set_description(uri, parent, markdown)
    return markdown


def require_state_api(what: str) -> None:
    """ASHA stops trials by ending their actors; Ray Train then frees the stopped run's workers
    (its placement group) through the state API. Without it (Ray started without the dashboard)
    every stopped trial keeps its CPUs/GPUs reserved and later trials wait for ever: refuse."""
    import ray
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    # this session's cluster: with no address the state API looks for one and refuses when it finds two
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    try:
        list_actors(address=address, limit=1, timeout=10)
    except RayStateApiException as err:
        raise UserError(f"{what} needs Ray's state API, which this Ray cluster does not serve ({err.__class__.__name__}):"
                        " start Ray with its dashboard (`ray start --head` and `ray.init()` do by default; not"
                        " include_dashboard=False), or use sweep.scheduler 'fifo'") from None


def trial_outcomes(results, stopped: set[str]) -> list[TrialOutcome]:
    """How each trial ended: failed (Tune holds its error), finished (its driver's final report says
    so), or stopped early (the scheduler recorded the stop)."""
    from orchestrator.progress import error_reason

    outcomes = []
    for r in results:
        metrics, config = r.metrics or {}, r.config or {}
        label = config.get("label") or _sweep_label(config.get("overrides", {}))
        run_id = metrics.get("mlflow_run_id")
        if r.error is not None:
            outcomes.append(TrialOutcome(label, "failed", error_reason(r.error), run_id, metrics))
        elif metrics.get("outcome") == "finished":
            outcomes.append(TrialOutcome(label, "finished", "", run_id, metrics))
        elif metrics.get("trial_id") in stopped:
            outcomes.append(TrialOutcome(label, "stopped early", STOPPED_EARLY, run_id, metrics))
        else:
            outcomes.append(TrialOutcome(label, "failed", "ended without its final report", run_id, metrics))
    return outcomes


def _fit(tuner, cfg: ExperimentConfig, name: str, uri: str, parent: str):
    """Run the Tuner; Ctrl-C interrupts it like any command (the parent run ends KILLED and
    `--resume` continues from Tune's saved state). Trials the scheduler stopped end KILLED with
    that reason, whatever their drivers managed to record. Every trial failing is a FAILED sweep;
    some failing is reported. Returns (ResultGrid, [TrialOutcome])."""
    from orchestrator import tracking

    # Tune's own SIGINT handler would turn Ctrl-C into an ordinary-looking return.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    results = tuner.fit()
    stops_file = Path(cfg.scaling.storage_path) / name / STOPS_FILE
    stopped = set(json.loads(stops_file.read_text())) if stops_file.exists() else set()
    outcomes = trial_outcomes(results, stopped)
    tracking.end_stopped_runs(uri, parent, {_resume_key(parent, o.metrics["trial_id"]) for o in outcomes
                                            if o.status == "stopped early"}, reason=STOPPED_EARLY)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and len(failed) == len(outcomes):
        raise RuntimeError(f"all {len(outcomes)} trials failed; first error: {failed[0].reason}")
    if failed:
        print(f"warning: {len(failed)} of {len(outcomes)} trials failed (FAILED runs in MLflow); "
              f"first error: {failed[0].label}: {failed[0].reason}")
    return results, outcomes


def run_study(cfg: ExperimentConfig, *, resume: bool = False, out_dir: Path | None = None) -> dict:
    """Train every variant x dataset x seed of `cfg.study`, add offline late fusion, write the table.

    Variants fine-tuned from another variant ("variant:<name>") run in a second stage, from the
    first stage's finished runs of that variant with the same seed and study.datasets entry.
    Returns {'parent_run_id', 'markdown', 'paths', 'outcomes'}.
    """
    from ray import tune

    from orchestrator import report, tracking

    if not cfg.study:
        raise UserError(f"{cfg.source}: has no 'study:' section; add variants, or use `actionlab train`")
    name = f"study-{cfg.name}"
    uri, parent = _parent_run(cfg, kind="study", name=name, resume=resume)
    variants = expand_study(cfg)
    scratch = {label: v for label, v in variants.items() if not source_variant(v.config)}
    with tracking.run_status(uri, parent):
        outcomes = []
        stages = [(name, lambda: scratch), (f"{name}-finetune", lambda: _fine_tuned(variants, outcomes))]
        for stage_name, make_stage in stages:
            if not (stage := make_stage()):
                continue
            stage_resume = resume and tune.Tuner.can_restore(str(Path(cfg.scaling.storage_path) / stage_name))
            tuner = _tuner(cfg, name=stage_name, param_space={"label": tune.grid_search(list(stage))},
                           parent_run_id=parent, kind="variant", resume=stage_resume, variants=stage,
                           tags={label: _variant_tags(variants[label]) for label in stage})
            stage_outcomes = _fit(tuner, cfg, stage_name, uri, parent)[1]
            failed = [o for o in stage_outcomes if o.status != "finished"]
            if failed:  # a table with holes would misreport the study
                raise RuntimeError(f"{len(failed)} study variant(s) did not finish; first: {failed[0].label}: "
                                   f"{failed[0].reason}")
            outcomes += stage_outcomes
        _late_fusion_runs(cfg, uri, parent, variants, {o.label: o.run_id for o in outcomes}, resume=resume)
        rows = report.results_from_mlflow(uri, cfg.experiment_name, parent_run_id=parent)
        out_dir = Path(out_dir or Path(cfg.scaling.storage_path) / name / "report")
        comparisons, notes = report.compare_runs(rows, cfg.study.compare,
                                                 report.scores_reader(cfg.scaling.storage_path))
        paths = report.write_report(rows, out_dir, title=cfg.description or cfg.name, comparisons=comparisons,
                                    notes=notes, expected=cfg.study.expected)
        tracking.log_artifacts(uri, parent, list(paths.values()))
        tracking.log_metrics(uri, parent, report.comparison_metrics(comparisons))
        markdown = paths["markdown"].read_text()
        tracking.set_description(uri, parent, markdown)
    return {"parent_run_id": parent, "markdown": markdown, "paths": paths, "outcomes": outcomes}


def _fine_tuned(variants: dict[str, Variant], outcomes: list[TrialOutcome]) -> dict[str, Variant]:
    """The fine-tuned variants, each pointed at its source's run as mlflow:<run_id> (whose model.pt
    the driver finds in the run's output folder). The source may have trained on other data (a
    larger source set): that is the point of pretraining."""
    run_ids = {(variants[o.label].variant, variants[o.label].dataset, variants[o.label].seed): o.run_id
               for o in outcomes}
    resolved = {}
    for label, v in variants.items():
        if source := source_variant(v.config):
            run_id = run_ids[(source, v.dataset, v.seed)]
            resolved[label] = v._replace(config=with_overrides(v.config, {
                "model.init_checkpoint": f"{MLFLOW_RUN_PREFIX}{run_id}"}))
    return resolved


def _late_fusion_runs(cfg: ExperimentConfig, uri: str, parent: str, variants: dict[str, Variant],
                      run_ids: dict[str, str], *, resume: bool) -> None:
    """Score-level fusion of two trained variants, per study dataset and seed, computed offline from
    the per-video scores their runs wrote (results.run_output_dir); the fused run's scores go to its own
    run_output_dir (and its artifacts), so study.compare can pair it with other variants video by video.
    A weight or mode `auto` is chosen on the streams' val scores (`choose_fusion`), then applied to test."""
    import mlflow

    from models.late_fusion import save_scores
    from orchestrator import metrics as M
    from orchestrator import tracking
    from orchestrator.training.driver import log_datasets, run_name

    done = set()
    if resume:  # only an earlier attempt can have logged fused runs already
        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name(cfg.experiment_name).experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}' and tags.`actionlab.fusion` = 'late'")
        done = {(r.data.tags["actionlab.variant"], r.data.tags["actionlab.dataset"], r.data.tags["actionlab.seed"])
                for r in runs if r.info.status == "FINISHED"}
    by_key = {(v.variant, v.dataset, v.seed): label for label, v in variants.items()}
    for fusion_name, spec in cfg.study.late_fusion.items():
        a_name, b_name = spec.streams
        for (variant, dataset, seed), label_a in sorted(by_key.items()):
            label_b = by_key.get((b_name, dataset, seed))
            if variant != a_name or label_b is None:
                continue
            streams = (variants[label_a], variants[label_b])
            key = (fusion_name, _dataset_tag(streams[0]), str(seed))
            if key in done:
                continue
            folders = [run_output_dir(cfg.scaling.storage_path, run_ids[label]) for label in (label_a, label_b)]
            fused, weight, mode, choice = fuse_run_outputs(spec, folders, name=fusion_name)
            on_test = any(v.config.data.val is None for v in streams)
            tags = {"actionlab.kind": "variant", "actionlab.study": cfg.name, "actionlab.variant": fusion_name,
                    "actionlab.dataset": key[1], "actionlab.seed": key[2], "actionlab.fusion": "late",
                    "actionlab.streams": f"{a_name}+{b_name}",
                    "actionlab.modality": "+".join(v.config.model.modality for v in streams),
                    "actionlab.architecture": streams[0].config.model.architecture,
                    "actionlab.selection": "test" if on_test else "val",
                    "actionlab.fusion_chosen_on": "val" if "auto" in (spec.weight, spec.resolved_mode) else "fixed"}
            run_id = tracking.start_run(tracking_uri=uri, experiment=cfg.experiment_name, run_name=run_name(tags),
                                        tags=tags, params={"weight": weight, "mode": mode,
                                                           "weight_setting": spec.weight,
                                                           "mode_setting": spec.resolved_mode},
                                        parent_run_id=parent)
            with tracking.run_status(uri, run_id):
                log_datasets(uri, run_id, streams[0].config.data, key[1], contexts=("test",))  # scored, not trained
                metrics = M.classification_metrics(fused.labels, fused.scores, prefix="test/video_")
                if choice:  # each stream's and the fusion's val top-1: the fusion is never below the better stream
                    metrics.update({"val/video_top1": choice.val_top1, "val/stream_a_video_top1": choice.val_top1_a,
                                    "val/stream_b_video_top1": choice.val_top1_b})
                tracking.log_metrics(uri, run_id, metrics)
                out_dir = run_output_dir(cfg.scaling.storage_path, run_id)
                out_dir.mkdir(parents=True, exist_ok=True)
                save_scores(out_dir / SCORES_FILE, fused)
                tracking.log_artifacts(uri, run_id, [out_dir / SCORES_FILE])
