"""What a run leaves behind: its folder, the files in it, and the per-video score file's format.

    <storage_path>/scores/<run_id>/     run_output_dir; written by rank 0 of the last epoch
        scores.npz     per-video test scores with the class names (VideoScores: save_scores / load_scores)
        val_scores.npz the same for the val list (data.val), of the weights kept: late_fusion weight auto
        model.pt       the final weights, architecture, modality and class names (an init_checkpoint)
        history.json   every epoch's report

The training loop writes these files; the driver logs them to MLflow, late fusion
(orchestrator/late_fusion.py) and the report's comparisons read the scores, and a later run's
`model.init_checkpoint` reads model.pt. So this module sits at the bottom of the orchestrator: it
imports numpy and nothing else, no torch and nothing of training or the report.
The Ray checkpoint holds only what resuming needs (orchestrator/training/loop.py STATE_FILE).
"""
from pathlib import Path
from typing import NamedTuple

import numpy as np

MODEL_FILE = "model.pt"
SCORES_FILE = "scores.npz"
VAL_SCORES_FILE = "val_scores.npz"
HISTORY_FILE = "history.json"


def run_output_dir(storage_path: str | Path, run_id: str) -> Path:
    """A run's result files: <storage_path>/scores/<run_id>/ (shared storage on clusters)."""
    return Path(storage_path) / "scores" / run_id


class VideoScores(NamedTuple):
    """What SCORES_FILE and VAL_SCORES_FILE hold: one row per video."""
    video_ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N, K) float32: per-video logits, averaged over the test views
    class_names: tuple[str, ...] = ()  # (K,) the label names, in label order


def save_scores(path: str | Path, scores: VideoScores) -> None:
    """Write `scores` to an .npz file (plain arrays, loadable without pickle)."""
    np.savez(path, video_ids=np.asarray(scores.video_ids, dtype=str),
             labels=np.asarray(scores.labels, dtype=np.int64),
             scores=np.asarray(scores.scores, dtype=np.float32), class_names=np.asarray(scores.class_names, dtype=str))


def load_scores(path: str | Path) -> VideoScores:
    """Read a file written by `save_scores`."""
    with np.load(path, allow_pickle=False) as data:
        names = tuple(data["class_names"].tolist()) if "class_names" in data else ()  # older files have none
        return VideoScores(data["video_ids"], data["labels"], data["scores"], names)
