"""The per-run driver: one MLflow run around one `TorchTrainer.fit()`.

    train_run(cfg)  ->  MLflow run (params, tags, its train/test lists as dataset inputs)
                    ->  TorchTrainer(train_loop_per_worker).fit()
                    ->  per-epoch metrics logged live by the controller callback
                    ->  test metrics, confusion matrix, learning curves, per-video scores, model

Sweeps and studies (orchestrator/study.py, through training/tune.py) call `train_run` from each Tune trial.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from orchestrator import tracking
from orchestrator.config import DataConfig, ExperimentConfig
from orchestrator.runs import HISTORY_FILE, MODEL_FILE, SCORES_FILE, VAL_SCORES_FILE, load_scores, run_output_dir
from orchestrator.training.results import RunOutcome, init_weights

RUN_ID_FILE = "mlflow_run_id"  # in <storage_path>/<Ray Train run>/: the MLflow run its restarts log to


def run_tags(cfg: ExperimentConfig, *, kind: str, variant: str = "", extra: dict | None = None) -> dict:
    m = cfg.model
    pretrained = "checkpoint" if m.init_checkpoint else "weights" if m.pretrained else "none"
    tags = {"actionlab.kind": kind, "actionlab.study": cfg.name, "actionlab.variant": variant or cfg.name,
            "actionlab.dataset": Path(cfg.data.root).name or cfg.data.dataset, "actionlab.seed": str(cfg.seed),
            "actionlab.architecture": m.architecture, "actionlab.modality": m.modality,
            "actionlab.pretrained": pretrained,
            # what val/* metrics, sweeps and optim.keep select on: a val list carved from training, or the test list
            "actionlab.selection": "val" if cfg.data.val else "test"}
    return {**tags, **(extra or {})}


def run_name(tags: dict) -> str:
    """What the UI lists a run as, from its tags: 'rgb / synth/UCF101 / seed0' (variant / dataset / seed).

    Args:
        tags: with actionlab.variant, actionlab.dataset and actionlab.seed (`run_tags`).
    """
    return f"{tags['actionlab.variant']} / {tags['actionlab.dataset']} / seed{tags['actionlab.seed']}"


def dataset_splits(data: DataConfig, label: str, contexts: tuple[str, ...] = ("train", "validation", "test"),
                   ) -> list[tracking.DatasetSplit]:
    """The lists a run trains, selects and tests on, read as its workers read them (`read_run_splits`).

    Args:
        data: the run's data section.
        label: the data set's name in the run's tags (actionlab.dataset).
        contexts: which of 'train', 'validation' (left out without data.val) and 'test' to describe.
    Returns:
        One DatasetSplit per context; its digest covers each listed video id and its class name.
    """
    from orchestrator.data.annotations import read_run_splits

    run = read_run_splits(data.dataset, root=data.root, annotations=data.annotations, split=data.split,
                          test_annotations=data.test_annotations, val=data.val)
    name = label if data.dataset == "csv" else f"{label} split {data.split}"
    lists = {"train": (run.train, data.annotations), "validation": (run.val, data.annotations),
             "test": (run.test, data.test_annotations or data.annotations)}
    splits = []
    for context in contexts:
        part, listed = lists[context]
        if part is None:
            continue
        lines = [f"{r.video_id}\t{part.class_names[r.label] if r.label >= 0 else ''}" for r in part.records]
        splits.append(tracking.DatasetSplit(name, context, tracking.list_digest(lines), len(part.records),
                                            len(part.class_names), f"{data.root} ({listed})"))
    return splits


def log_datasets(uri: str, run_id: str, data: DataConfig, label: str,
                 contexts: tuple[str, ...] = ("train", "validation", "test")) -> None:
    """`dataset_splits` as the run's dataset inputs; a list this process cannot read (a node without
    the data mount) is a warning: the run itself reads its data on the training workers."""
    from orchestrator.errors import UserError

    try:
        splits = dataset_splits(data, label, contexts)
    except (UserError, OSError) as err:
        print(f"warning: run {run_id}: data set not logged as an MLflow input: {err}", file=sys.stderr)
        return
    tracking.log_dataset_inputs(uri, run_id, splits)


def use_gpu(cfg: ExperimentConfig) -> bool:
    setting = str(cfg.scaling.use_gpu).lower()
    if setting != "auto":
        return setting == "true"
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def check_decode_device(cfg: ExperimentConfig) -> None:
    """`data.decode_device: cuda` refused, before anything starts, where the workers would get no GPU."""
    if cfg.data.decode_device == "cuda" and not use_gpu(cfg):
        from orchestrator.errors import UserError

        raise UserError(f"{cfg.source or 'config'}: data.decode_device 'cuda' decodes on the training GPUs, but this "
                        "Ray cluster has none: set data.decode_device: cpu")


def make_trainer(cfg: ExperimentConfig, *, name: str, run_id: str, callbacks: list):
    """The TorchTrainer for one run: scaling, storage, failure handling and checkpoints from cfg.
    The workers receive the frozen config as it is, and the fine-tuning weights as a file."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from orchestrator.training.loop import train_loop_per_worker

    gpu, s = use_gpu(cfg), cfg.scaling
    # Ray Train hands this variable from the driver to its controller (ENV_VARS_TO_PROPAGATE)
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(s.start_timeout_s)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": cfg, "run_id": run_id, "init_weights": init_weights(cfg)},
        # num_workers [min, max]: an elastic group (orchestrator/training/elastic.py says what a resize does)
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=gpu,
                                     elastic_resize_monitor_interval_s=s.resize_interval_s,
                                     resources_per_worker={"CPU": s.cpus_per_worker, **({"GPU": 1} if gpu else {}),
                                                           **s.worker_resources}),
        # a node lost with a drain notice (spot reclaim) counts against max_preemption_failures, not
        # max_failures; the workers checkpoint on the notice (loop._train_epochs)
        run_config=RunConfig(name=name, storage_path=str(Path(s.storage_path).resolve()),
                             failure_config=FailureConfig(max_failures=s.max_failures,
                                                          max_preemption_failures=s.max_preemption_failures,
                                                          preemption_grace_s=s.preemption_grace_s),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks),
        # the backend is gloo on CPU workers and NCCL on GPU workers (TorchConfig's default)
    )


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def train_run(cfg: ExperimentConfig, *, kind: str = "train", variant: str = "", parent_run_id: str | None = None,
              extra_tags: dict | None = None, callbacks: list | None = None,
              resume_key: str | None = None,
              stopped_by: Callable[[BaseException], str | None] | None = None) -> RunOutcome:
    """Train one configuration with Ray Train inside its own MLflow run; returns the outcome.

    The MLflow run ends FINISHED, FAILED (exception) or KILLED (Ctrl-C / SIGTERM).
    `resume_key` (a Tune trial's id) names the Ray Train run and is recorded on the MLflow run, so
    a restored trial reopens the same MLflow run and Ray Train resumes from its checkpoints.
    `stopped_by` tells a stop from outside from a failure (see `tracking.run_status`).
    """
    uri = cfg.tracking.tracking_uri
    name = safe_name(f"{cfg.name}-{variant}" if variant else cfg.name)
    run_id = _unfinished_run(uri, cfg.experiment_name, resume_key) if resume_key else None
    if run_id:
        tracking.reopen_run(uri, run_id)
    else:
        tags = run_tags(cfg, kind=kind, variant=variant, extra=extra_tags)
        if resume_key:
            tags[tracking.RESUME_KEY_TAG] = resume_key
        run_id = tracking.start_run(tracking_uri=uri, experiment=cfg.experiment_name, run_name=run_name(tags),
                                    tags=tags, params=tracking.flatten_params(cfg.to_dict()),
                                    parent_run_id=parent_run_id)
        log_datasets(uri, run_id, cfg.data, tags["actionlab.dataset"])
    with tracking.run_status(uri, run_id, stopped_by=stopped_by):
        name = f"{name}-{resume_key or run_id[:8]}"
        # the Ray Train run's folder names its MLflow run (its checkpoints do too: loop.save_state)
        folder = Path(cfg.scaling.storage_path) / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_ID_FILE).write_text(run_id + "\n")
        trainer = make_trainer(cfg, name=name, run_id=run_id,
                               callbacks=[tracking.mlflow_metrics_callback(uri, run_id), *(callbacks or [])])
        trainer.fit()
        return _log_outcome(cfg, uri, run_id)


def _unfinished_run(uri: str, experiment: str, resume_key: str) -> str | None:
    """The MLflow run an interrupted attempt of this Tune trial left behind (not FINISHED), if any."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], f"tags.`{tracking.RESUME_KEY_TAG}` = '{resume_key}'")
    return next((r.info.run_id for r in runs if r.info.status != "FINISHED"), None)


def _log_outcome(cfg: ExperimentConfig, uri: str, run_id: str) -> RunOutcome:
    """Test metrics and artifacts from the files rank 0 wrote in the last epoch (runs.run_output_dir)."""
    import mlflow
    import numpy as np

    from orchestrator import metrics as M
    from orchestrator import plots

    out_dir = run_output_dir(cfg.scaling.storage_path, run_id)
    history = json.loads((out_dir / HISTORY_FILE).read_text())
    final = dict(history[-1])
    mlflow.MlflowClient(uri).log_param(run_id, "optim.precision_used", final["precision"])  # what "auto" became
    artifacts = [out_dir / MODEL_FILE, out_dir / HISTORY_FILE]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "experiment.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        artifacts += [tmp / "experiment.yaml", plots.plot_learning_curves(history, tmp / "learning_curves.png")]
        if (out_dir / SCORES_FILE).exists():
            scores = load_scores(out_dir / SCORES_FILE)
            test = M.classification_metrics(scores.labels, scores.scores, prefix="test/video_")
            test["test/clip_top1"] = final.get("test/clip_top1", float("nan"))
            final.update(test)
            now_ms = int(time.time() * 1000)
            mlflow.MlflowClient(uri).log_batch(run_id, metrics=[
                mlflow.entities.Metric(k, float(v), now_ms, final["epoch"]) for k, v in test.items() if np.isfinite(v)])
            cm = M.confusion_matrix(scores.labels, scores.scores.argmax(1), len(scores.class_names))
            artifacts += [p for p in (out_dir / VAL_SCORES_FILE,) if p.exists()]
            artifacts += [out_dir / SCORES_FILE,
                          plots.plot_confusion_matrix(cm, list(scores.class_names), tmp / "confusion_matrix.png",
                                                      title=f"{cfg.name}: video-level confusion")]
        tracking.log_artifacts(uri, run_id, artifacts)
    return RunOutcome(run_id, final, out_dir)
