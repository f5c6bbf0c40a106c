"""What a run leaves behind, as files it owns, and what a trial tells its sweep, as values.

    <storage_path>/scores/<run_id>/     written by rank 0 of the last epoch, read by the driver
        scores.npz     per-video test scores with the class names (models.late_fusion.VideoScores)
        model.pt       the final weights, architecture, modality and class names (an init_checkpoint)
        history.json   every epoch's report

The Ray checkpoint holds only what resuming needs (orchestrator/training/loop.py STATE_FILE).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

MODEL_FILE = "model.pt"
SCORES_FILE = "scores.npz"
HISTORY_FILE = "history.json"


def run_output_dir(storage_path: str | Path, run_id: str) -> Path:
    """A run's result files: <storage_path>/scores/<run_id>/ (shared storage on clusters)."""
    return Path(storage_path) / "scores" / run_id


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
