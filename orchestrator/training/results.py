"""What a run hands back as values (a run's files and their layout are orchestrator/runs.py), and the
weights a fine-tuned run starts from.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from orchestrator.errors import UserError
from orchestrator.runs import MODEL_FILE, run_output_dir

if TYPE_CHECKING:  # imported by the training loop, which imports no pydantic
    from orchestrator.config import ExperimentConfig


def init_weights(cfg: ExperimentConfig, *, download: bool = True) -> Path | None:
    """The local file of `model.init_checkpoint`: a path as given; for `mlflow:<run_id>` that run's
    final weights, read where the run wrote them (`<storage_path>/scores/<run_id>/model.pt`) or
    else fetched from the tracking store into that folder (only checked when download=False)."""
    from orchestrator.config import MLFLOW_RUN_PREFIX
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
