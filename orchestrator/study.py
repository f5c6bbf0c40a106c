"""Studies and sweeps, run from their plan: one MLflow parent run around Tune's trials.

    run_study(plan)
        parent run (reopened on --resume)
        for each stage:  its runs, the fine-tuned ones pointed at their source's run -> tune.run_trials
        late fusions:    each Fusion's two runs' per-video scores -> a fused child run (offline)
        report:          the children's table + study.compare -> comparison.md/.png, the parent's description
    run_sweep(plan)
        parent run -> tune.run_trials (Tune samples sweep.parameters) -> the parent's description

It asks MLflow for earlier work only on `--resume` (the fused runs an interrupted attempt logged).
"""
from __future__ import annotations

import json
from pathlib import Path

from orchestrator.config import MLFLOW_RUN_PREFIX, with_overrides
from orchestrator.errors import UserError
from orchestrator.late_fusion import fuse_run_outputs
from orchestrator.plan import Fusion, Plan, RunSpec
from orchestrator.runs import SCORES_FILE, run_output_dir, save_scores
from orchestrator.training import tune
from orchestrator.training.results import TrialOutcome

PARENT_FILE = "actionlab_parent_run.json"  # lets `--resume` continue under the same MLflow parent


def run_study(plan: Plan, *, resume: bool = False, out_dir: Path | None = None, run_trials=tune.run_trials) -> dict:
    """Train every stage of a study's plan, add offline late fusion, write the table.

    `run_trials`: `tune.run_trials` (a test passes a fake with its signature).
    Returns {'parent_run_id', 'markdown', 'paths', 'outcomes'}.
    """
    from orchestrator import report, tracking

    cfg = plan.config
    if plan.kind != "study":
        raise UserError(f"{cfg.source}: has no 'study:' section; add variants, or use `actionlab train`")
    uri, parent = _parent_run(plan, resume=resume)
    with tracking.run_status(uri, parent):
        outcomes: list[TrialOutcome] = []
        for i, stage in enumerate(plan.stages):
            name = plan.name if i == 0 else f"{plan.name}-finetune"
            stage = _from_sources(stage, plan.runs, outcomes)
            stage_outcomes = run_trials(plan, name=name, parent_run_id=parent, stage=stage,
                                        resume=resume and tune.saved(plan, name))[1]
            failed = [o for o in stage_outcomes if o.status != "finished"]
            if failed:  # a table with holes would misreport the study
                raise RuntimeError(f"{len(failed)} study variant(s) did not finish; first: {failed[0].label}: "
                                   f"{failed[0].reason}")
            outcomes += stage_outcomes
        run_ids = {o.label: o.run_id for o in outcomes}
        for fusion in _fusions_to_run(plan, uri, parent, resume=resume):
            _late_fusion_run(plan, fusion, uri, parent, [run_output_dir(cfg.scaling.storage_path, run_ids[label])
                                                         for label in fusion.streams])
        rows = report.results_from_mlflow(uri, cfg.experiment_name, parent_run_id=parent)
        out_dir = Path(out_dir or Path(cfg.scaling.storage_path) / plan.name / "report")
        comparisons, notes = report.compare_runs(rows, plan.compare, report.scores_reader(cfg.scaling.storage_path))
        paths = report.write_report(rows, out_dir, title=cfg.description or cfg.name, comparisons=comparisons,
                                    notes=notes, expected=cfg.study.expected)
        tracking.log_artifacts(uri, parent, list(paths.values()))
        tracking.log_metrics(uri, parent, report.comparison_metrics(comparisons))
        markdown = paths["markdown"].read_text()
        tracking.set_description(uri, parent, markdown)
    return {"parent_run_id": parent, "markdown": markdown, "paths": paths, "outcomes": outcomes}


def run_sweep(plan: Plan, *, resume: bool = False, run_trials=tune.run_trials):
    """Sweep the plan's `sweep.parameters` (grid / random, FIFO or ASHA) under one parent run.

    Returns Tune's ResultGrid and a TrialOutcome per trial.
    """
    from orchestrator import tracking

    if plan.kind != "sweep":
        raise UserError(f"{plan.config.source}: has no 'sweep:' section; add one, or use `actionlab train`")
    uri, parent = _parent_run(plan, resume=resume)
    with tracking.run_status(uri, parent):
        results, outcomes = run_trials(plan, name=plan.name, parent_run_id=parent, resume=resume)
        _describe_parent(plan, uri, parent)
        return results, outcomes


def _parent_run(plan: Plan, *, resume: bool) -> tuple[str, str]:
    """(tracking URI, parent run id): the run an interrupted attempt left (reopened) on `resume`, else a new one."""
    from orchestrator import tracking

    cfg = plan.config
    uri = cfg.tracking.tracking_uri
    tracking.reap_stale_runs(uri, cfg.experiment_name)
    marker = Path(cfg.scaling.storage_path) / plan.name / PARENT_FILE
    if resume and marker.exists():
        run_id = json.loads(marker.read_text())["run_id"]
        tracking.reopen_run(uri, run_id)  # it ended KILLED when interrupted
        return uri, run_id
    run_id = tracking.start_run(tracking_uri=uri, experiment=cfg.experiment_name, run_name=plan.name,
                                tags={"actionlab.kind": plan.kind, "actionlab.study": cfg.name},
                                params=tracking.flatten_params(cfg.to_dict()))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": run_id}))
    return uri, run_id


def _describe_parent(plan: Plan, uri: str, parent: str) -> str:
    """The comparison table of the parent's finished children, as the parent run's description
    (the UI renders it on the run's page); returns the Markdown ('' when no child finished)."""
    from orchestrator import report, tracking

    cfg = plan.config
    rows = report.results_from_mlflow(uri, cfg.experiment_name, parent_run_id=parent)
    if not rows:
        return ""
    markdown = report.to_markdown(report.summarize(rows), title=cfg.description or cfg.name)
    tracking.set_description(uri, parent, markdown)
    return markdown


def _from_sources(stage: dict[str, RunSpec], runs: dict[str, RunSpec],
                  outcomes: list[TrialOutcome]) -> dict[str, RunSpec]:
    """The stage's runs, each fine-tuned one pointed at its source's run as mlflow:<run_id> (whose
    model.pt the driver finds in the run's output folder): the run of the source variant with the
    same study dataset and seed. The source may have trained on other data (a larger source set):
    that is the point of pretraining."""
    run_ids = {(runs[o.label].variant, runs[o.label].dataset, runs[o.label].seed): o.run_id for o in outcomes}
    return {label: r if r.source is None else r._replace(config=with_overrides(r.config, {
                "model.init_checkpoint": f"{MLFLOW_RUN_PREFIX}{run_ids[r.source, r.dataset, r.seed]}"}))
            for label, r in stage.items()}


def _fusions_to_run(plan: Plan, uri: str, parent: str, *, resume: bool) -> list[Fusion]:
    """The plan's fusions, less those an interrupted attempt already logged FINISHED (asked only on resume)."""
    if not resume:
        return list(plan.fusions)
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(plan.config.experiment_name).experiment_id],
                              f"tags.mlflow.parentRunId = '{parent}' and tags.`actionlab.fusion` = 'late'")
    done = {(r.data.tags["actionlab.variant"], r.data.tags["actionlab.dataset"], r.data.tags["actionlab.seed"])
            for r in runs if r.info.status == "FINISHED"}
    return [f for f in plan.fusions if (f.name, f.dataset, str(f.seed)) not in done]


def _late_fusion_run(plan: Plan, fusion: Fusion, uri: str, parent: str, folders: list[Path]) -> None:
    """Score-level fusion of two trained runs, computed offline from the per-video scores their runs
    wrote (results.run_output_dir); the fused run's scores go to its own run_output_dir (and its
    artifacts), so study.compare can pair it with other variants video by video. A weight or mode
    `auto` is chosen on the streams' val scores (`choose_fusion`), then applied to test."""
    from orchestrator import metrics as M
    from orchestrator import tracking
    from orchestrator.training.driver import log_datasets, run_name

    cfg, spec = plan.config, fusion.spec
    streams = [plan.runs[label] for label in fusion.streams]
    fused, weight, mode, choice = fuse_run_outputs(spec, folders, name=fusion.name)
    on_test = any(r.config.data.val is None for r in streams)
    tags = {"actionlab.kind": "variant", "actionlab.study": cfg.name, "actionlab.variant": fusion.name,
            "actionlab.dataset": fusion.dataset, "actionlab.seed": str(fusion.seed), "actionlab.fusion": "late",
            "actionlab.streams": "+".join(spec.streams),
            "actionlab.modality": "+".join(r.config.model.modality for r in streams),
            "actionlab.architecture": streams[0].config.model.architecture,
            "actionlab.selection": "test" if on_test else "val",
            "actionlab.fusion_chosen_on": "val" if "auto" in (spec.weight, spec.resolved_mode) else "fixed"}
    run_id = tracking.start_run(tracking_uri=uri, experiment=cfg.experiment_name, run_name=run_name(tags), tags=tags,
                                params={"weight": weight, "mode": mode, "weight_setting": spec.weight,
                                        "mode_setting": spec.resolved_mode},
                                parent_run_id=parent)
    with tracking.run_status(uri, run_id):
        log_datasets(uri, run_id, streams[0].config.data, fusion.dataset, contexts=("test",))  # scored, not trained
        metrics = M.classification_metrics(fused.labels, fused.scores, prefix="test/video_")
        if choice:  # each stream's and the fusion's val top-1: the fusion is never below the better stream
            metrics.update({"val/video_top1": choice.val_top1, "val/stream_a_video_top1": choice.val_top1_a,
                            "val/stream_b_video_top1": choice.val_top1_b})
        tracking.log_metrics(uri, run_id, metrics)
        out_dir = run_output_dir(cfg.scaling.storage_path, run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_scores(out_dir / SCORES_FILE, fused)
        tracking.log_artifacts(uri, run_id, [out_dir / SCORES_FILE])
