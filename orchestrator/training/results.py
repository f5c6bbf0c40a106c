"""What a run leaves behind, as files it owns, and what a trial tells its sweep, as values.

    <storage_path>/scores/<run_id>/     written by rank 0 of the last epoch, read by the driver
        scores.npz     per-video test scores with the class names (models.late_fusion.VideoScores)
        val_scores.npz the same for the val list (data.val), of the weights kept: late_fusion weight auto
        model.pt       the final weights, architecture, modality and class names (an init_checkpoint)
        history.json   every epoch's report

The Ray checkpoint holds only what resuming needs (orchestrator/training/loop.py STATE_FILE).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

from orchestrator.config import MLFLOW_RUN_PREFIX, ExperimentConfig
from orchestrator.errors import UserError

MODEL_FILE = "model.pt"
SCORES_FILE = "scores.npz"
VAL_SCORES_FILE = "val_scores.npz"
HISTORY_FILE = "history.json"


def run_output_dir(storage_path: str | Path, run_id: str) -> Path:
    """A run's result files: <storage_path>/scores/<run_id>/ (shared storage on clusters)."""
    return Path(storage_path) / "scores" / run_id


def init_weights(cfg: ExperimentConfig, *, download: bool = True) -> Path | None:
    """The local file of `model.init_checkpoint`: a path as given; for `mlflow:<run_id>` that run's
    final weights, read where the run wrote them (`<storage_path>/scores/<run_id>/model.pt`) or
    else fetched from the tracking store into that folder (only checked when download=False)."""
    from orchestrator.tracking import fetch_artifact

    spec = cfg.model.init_checkpoint
    if not spec:
        return None
    if not spec.startswith(MLFLOW_RUN_PREFIX):
        if not Path(spec).is_file():
            raise UserError(f"{spec} is not a file; give the model.pt of an earlier actionlab run "
                            "(<storage_path>/scores/<run_id>/model.pt) or mlflow:<run_id>")
        return Path(spec)
    run_id = spec[len(MLFLOW_RUN_PREFIX):]
    local = run_output_dir(cfg.scaling.storage_path, run_id) / MODEL_FILE
    if local.is_file():
        return local
    return fetch_artifact(cfg.tracking.tracking_uri, run_id, MODEL_FILE, local.parent if download else None)


class RunOutcome(NamedTuple):
    """What `driver.train_run` returns."""
    run_id: str
    metrics: dict  # the last epoch's report and the final test metrics (test/...)
    output_dir: Path  # run_output_dir: scores.npz, model.pt, history.json


class TrialOutcome(NamedTuple):
    """How one Tune trial of a sweep or study ended, as the sweep reads it."""
    label: str  # the study variant label, or the sweep trial's sampled values
    status: Literal["finished", "stopped early", "failed"]
    reason: str  # why it stopped or failed ("" when finished)
    run_id: str | None  # its MLflow run (None if it failed before starting one)
    metrics: dict  # its final report
