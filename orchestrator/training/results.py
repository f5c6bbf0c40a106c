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
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from orchestrator.errors import UserError

if TYPE_CHECKING:  # imported by the training loop, which imports no pydantic
    from orchestrator.config import ExperimentConfig

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


class Fused(NamedTuple):
    """Two runs' test scores fused late (`fuse_run_outputs`)."""
    scores: Any  # models.late_fusion.VideoScores of the test list
    weight: float  # the first stream's share
    mode: str  # softmax | logits
    choice: Any  # models.late_fusion.FusionChoice made on the val scores; None without them


def fuse_run_outputs(spec, folders: list[Path], *, name: str) -> Fused:
    """Fuse two runs' test scores (their `SCORES_FILE`s in `folders`) by `spec`
    (`orchestrator.config.LateFusion`); a weight or mode `auto` is chosen on their val scores.

    The fused val score is recorded whatever the rule, whenever both runs wrote `VAL_SCORES_FILE`.
    """
    from models.late_fusion import FUSION_MODES, WEIGHT_GRID, choose_fusion, fuse_scores, load_scores

    scores = [load_scores(folder / SCORES_FILE) for folder in folders]
    val = [load_scores(f / VAL_SCORES_FILE) for f in folders] if all(
        (f / VAL_SCORES_FILE).is_file() for f in folders) else None
    mode, choice = spec.resolved_mode, None
    if val is not None:
        choice = choose_fusion(*val, weights=WEIGHT_GRID if spec.weight == "auto" else (spec.weight,),
                               modes=FUSION_MODES if mode == "auto" else (mode,))
    elif "auto" in (spec.weight, mode):
        raise RuntimeError(f"study.late_fusion.{name}: weight/mode auto needs both streams' "
                           f"{VAL_SCORES_FILE} (their runs had no data.val)")
    weight, mode = (choice.weight, choice.mode) if choice else (spec.weight, mode)
    return Fused(fuse_scores(*scores, weight=weight, mode=mode), weight, mode, choice)
