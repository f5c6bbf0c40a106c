"""Runs on Ray Tune: one trial per run of a study stage, or Tune's samples of a sweep; their outcomes.

    run_trials(plan, name=..., stage=...)     (Ray Train V2 / Tune interop)
        Tuner(trial_driver, param_space=...)
            study trial:  the run's config and tags, planned on the driver -> train_run(...) -> TorchTrainer.fit()
            sweep trial:  with_overrides(base, sampled overrides) -> train_run(...)
        -> TrialOutcome per trial (finished / stopped early / failed, with the reason)

Every trial is an MLflow child run of the parent run the caller opened (orchestrator/study.py, which
also chains the stages, fuses and reports). A trial the scheduler stops ends KILLED with that reason.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from orchestrator.config import ExperimentConfig, with_overrides
from orchestrator.errors import UserError
from orchestrator.plan import Plan, RunSpec
from orchestrator.training.results import TrialOutcome

STOPPED_EARLY = "stopped early by the trial scheduler"
STOPS_FILE = "stopped_trials.json"  # the trials the scheduler stopped, beside Tune's experiment state


def search_space(plan: Plan) -> dict:
    """The plan's `sweep.parameters` as a Tune search space. Listed values are taken as the planned,
    checked runs hold them (relative paths made absolute), so they mean the same in a trial's directory."""
    from ray import tune

    def held(run: RunSpec):
        (dotted, _), = run.overrides.items()
        node = run.config
        for part in dotted.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return dotted, node

    listed: dict[str, list] = {}
    for run in plan.runs.values():
        dotted, value = held(run)
        listed.setdefault(dotted, []).append(value)
    makers = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
              "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    return {dotted: makers[spec.kind](listed[dotted] if spec.kind in ("grid", "choice") else spec.values)
            for dotted, spec in plan.config.sweep.parameters.items()}


def max_concurrent_trials(cfg: ExperimentConfig) -> int:
    """How many Train runs fit at once: the limiting resource over what one run's workers ask for."""
    import ray

    from orchestrator.training.driver import use_gpu

    resources = ray.cluster_resources()
    s = cfg.scaling
    if use_gpu(cfg):
        return max(1, int(resources.get("GPU", 0) // s.max_workers))
    return max(1, int(resources.get("CPU", 1) // (s.max_workers * s.cpus_per_worker)))


def trial_driver(config: dict, *, base: ExperimentConfig, runs: dict[str, RunSpec], parent_run_id: str, kind: str,
                 source: dict[str, str], train: Callable | None = None) -> None:
    """One Tune trial: its config (a planned run's, or the base with the sampled overrides), one
    Ray Train run, and a final report that says it finished. `source`: the driver's MLflow source
    tags (its command line; this process's is a Ray worker's). `train`: `driver.train_run` (a test
    passes a fake with its signature)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    if train is None:
        from orchestrator.training.driver import train_run as train

    class EpochReports(TuneReportCallback):
        """Epoch reports only: a mid-epoch checkpoint's has none of the metrics Tune schedules on."""

        def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
            if metrics and metrics[0].get("report", "epoch") == "epoch":
                super().after_report(run_context, metrics, checkpoint)

    if "label" in config:  # a planned run, built and checked on the driver
        label = config["label"]
        cfg, tags = runs[label].config, runs[label].tags
    else:  # a sweep point: name it by its sampled values
        overrides = config["overrides"]
        label = _sweep_label(overrides)
        cfg, tags = with_overrides(base, overrides, where=f"trial {label}"), {}
    trial_id = ray.tune.get_context().get_trial_id()  # stable across `--resume`
    outcome = train(cfg, kind=kind, variant=label, parent_run_id=parent_run_id, extra_tags={**source, **tags},
                    callbacks=[EpochReports()], resume_key=_resume_key(parent_run_id, trial_id),
                    stopped_by=_stopped_by_tune)
    final = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    ray.tune.report({**final, "mlflow_run_id": outcome.run_id, "outcome": "finished"})


def _sweep_label(overrides: dict) -> str:
    return ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in overrides.items())


def _describe_trial(config: dict, *, base: ExperimentConfig, runs: dict[str, RunSpec]) -> tuple[str, int | None]:
    """A trial's name on screen (its run's label or sampled values) and its number of epochs (None
    with optim.iterations: its reports say)."""
    if "label" in config:
        return config["label"], runs[config["label"]].config.optim.epochs
    overrides = config.get("overrides", {})
    return _sweep_label(overrides), overrides.get("optim.epochs", base.optim.epochs)


def _resume_key(parent_run_id: str, trial_id: str) -> str:
    return f"{parent_run_id[:8]}-{trial_id}"


def _stopped_by_tune(err: BaseException) -> str | None:
    """Tune stops a trial (ASHA) by ending its actor and removing its placement group, in which the
    trial's TrainController runs: `fit()` may then raise ActorDiedError before the process exits."""
    from ray.exceptions import ActorDiedError

    return STOPPED_EARLY if isinstance(err, ActorDiedError) and "placement group was removed" in str(err) else None


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


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


def require_state_api(what: str) -> None:
    """ASHA stops trials by ending their actors; Ray Train then frees the stopped run's workers
    (its placement group) through the state API. Without it (Ray started without the dashboard)
    every stopped trial keeps its CPUs/GPUs reserved and later trials wait for ever: refuse."""
    import ray
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    # Ray Train's placement-group cleaner (Ray 2.60) asks the state API without an address, so with a
    # second Ray instance on this node it fails ("Found multiple active Ray instances") and the stopped
    # trial's workers are never freed: the sweep would hang
    if len(servers := local_ray_instances()) > 1:
        raise UserError(f"{what}: {len(servers)} Ray instances run on this machine ({', '.join(servers)}); Ray Train "
                        "frees an ASHA-stopped trial's workers only when it finds one, so later trials would wait for "
                        "ever: stop the other one, run this sweep on it (--address <its address>), or use "
                        "sweep.scheduler 'fifo'")
    # this session's cluster: with no address the state API looks for one and refuses when it finds two
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    try:
        list_actors(address=address, limit=1, timeout=10)
    except RayStateApiException as err:
        raise UserError(f"{what} needs Ray's state API, which this Ray cluster does not serve ({err.__class__.__name__}):"
                        " start Ray with its dashboard (`ray start --head` and `ray.init()` do by default; not"
                        " include_dashboard=False), or use sweep.scheduler 'fifo'") from None


def local_ray_instances() -> list[str]:
    """The session folder of every Ray instance running on this machine (its gcs_server processes)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "gcs_server" and proc.status() != psutil.STATUS_ZOMBIE:
                logs = next((a.split("=", 1)[1] for a in proc.info["cmdline"] or [] if a.startswith("--log_dir=")), "")
                found.append(str(Path(logs).parent) if logs else f"pid {proc.pid}")
    return found


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




def saved(plan: Plan, name: str) -> bool:
    """Whether Tune saved the state of experiment `name` (an interrupted stage or sweep) to restore."""
    from ray import tune

    return tune.Tuner.can_restore(str(Path(plan.config.scaling.storage_path) / name))


def run_trials(plan: Plan, *, name: str, parent_run_id: str, resume: bool, stage: dict[str, RunSpec] | None = None,
               train: Callable | None = None):
    """Run `stage`'s runs, one trial each, or (no stage) the plan's sweep: Tune samples `sweep.parameters`,
    with FIFO or a recording ASHA. `name`: the Tune experiment under scaling.storage_path; `resume`
    restores it (Tuner.restore). Ctrl-C interrupts it like any command (the caller's parent run ends
    KILLED and `--resume` continues from Tune's saved state). Trials the scheduler stopped end KILLED
    with that reason, whatever their drivers managed to record. Every trial failing is an error;
    some failing is reported. Returns (ResultGrid, [TrialOutcome]).
    """
    from ray import tune

    from orchestrator import progress
    from orchestrator import tracking

    from orchestrator.training.driver import check_decode_device

    cfg = plan.config
    for run_cfg in [cfg, *(run.config for run in (stage or {}).values())]:
        check_decode_device(run_cfg)
    path = Path(cfg.scaling.storage_path) / name
    stops_file = path / STOPS_FILE
    base = cfg.model_copy(update={"sweep": None, "study": None})  # a trial is one run; the parent has the rest
    runs = stage or {}
    trainable = tune.with_parameters(trial_driver, base=base, runs=runs, parent_run_id=parent_run_id,
                                     kind="variant" if stage else "trial", source=tracking.source_tags(), train=train)
    # A trial only drives its TorchTrainer: it asks for a little memory and no CPU, so the
    # training workers can hold every CPU/GPU (Tune refuses an entirely empty request).
    trainable = tune.with_resources(trainable, tune.PlacementGroupFactory([{"CPU": 0, "memory": 100 * 2**20}]))
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise UserError(f"--resume: nothing to resume at {path}; run without --resume to start the sweep")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        if stage:
            space, options = {"label": tune.grid_search(list(stage))}, {}
        else:
            sw = cfg.sweep
            scheduler = None
            if sw.scheduler == "asha":
                require_state_api(f"{cfg.source}: sweep.scheduler 'asha'")
                scheduler = recording_asha(stops_file, time_attr="epoch", max_t=cfg.optim.epochs, grace_period=1,
                                           reduction_factor=2)
            space = {"overrides": search_space(plan)}
            options = {"num_samples": sw.num_samples, "scheduler": scheduler, "metric": sw.metric, "mode": sw.mode,
                       "max_concurrent_trials": sw.max_concurrent_trials}
        options["max_concurrent_trials"] = options.get("max_concurrent_trials") or max_concurrent_trials(cfg)
        tuner = tune.Tuner(
            trainable, param_space=space, tune_config=tune.TuneConfig(**options),
            # a row per trial on the screen `progress.console` opened (saved with the Tuner: `--resume` has it too)
            run_config=tune.RunConfig(name=name, storage_path=str(cfg.scaling.storage_path),
                                      callbacks=[progress.tune_callback(
                                          functools.partial(_describe_trial, base=base, runs=runs))]),
        )
    # Tune's own SIGINT handler would turn Ctrl-C into an ordinary-looking return.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    results = tuner.fit()
    stopped = set(json.loads(stops_file.read_text())) if stops_file.exists() else set()
    outcomes = trial_outcomes(results, stopped)
    tracking.end_stopped_runs(cfg.tracking.tracking_uri, parent_run_id,
                              {_resume_key(parent_run_id, o.metrics["trial_id"]) for o in outcomes
                               if o.status == "stopped early"}, reason=STOPPED_EARLY)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and len(failed) == len(outcomes):
        raise RuntimeError(f"all {len(outcomes)} trials failed; first error: {failed[0].reason}")
    if failed:
        print(f"warning: {len(failed)} of {len(outcomes)} trials failed (FAILED runs in MLflow); "
              f"first error: {failed[0].label}: {failed[0].reason}")
    return results, outcomes
