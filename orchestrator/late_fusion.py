"""Offline late fusion of two streams' saved per-video scores.

Two-stream networks (and TSN, ActionVLAD, ...) train each modality separately and fuse the
class scores at test time. Saving every stream's per-video scores once (orchestrator/runs.py)
means the fusion weight can be swept afterwards with no retraining and no second pass over the videos.

Simonyan & Zisserman, "Two-Stream Convolutional Networks for Action Recognition in Videos",
NeurIPS 2014 (score averaging); Wang et al., TSN, ECCV 2016 (weighted fusion, RGB : flow = 1 : 1.5).
"""
from pathlib import Path
from typing import NamedTuple

import numpy as np

from orchestrator.runs import SCORES_FILE, VAL_SCORES_FILE, VideoScores, load_scores

FUSION_MODES = ("softmax", "logits")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # exp of large logits would overflow
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _align(a: VideoScores, b: VideoScores) -> VideoScores:
    """`b` reordered to `a`'s video order; ValueError if the videos or their labels differ."""
    for name, s in (("a", a), ("b", b)):
        ids, counts = np.unique(s.video_ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"stream {name} lists {int((counts > 1).sum())} videos more than once "
                             f"(e.g. {ids[counts > 1][:5].tolist()})")
    only_a = sorted(set(a.video_ids.tolist()) - set(b.video_ids.tolist()))
    only_b = sorted(set(b.video_ids.tolist()) - set(a.video_ids.tolist()))
    if only_a or only_b:
        raise ValueError(f"the streams score different videos: {len(only_a)} only in a "
                         f"(e.g. {only_a[:5]}), {len(only_b)} only in b (e.g. {only_b[:5]})")
    if a.scores.shape[1] != b.scores.shape[1]:
        raise ValueError(f"the streams have {a.scores.shape[1]} and {b.scores.shape[1]} classes")
    position_in_b = {video: i for i, video in enumerate(b.video_ids.tolist())}
    order = np.array([position_in_b[video] for video in a.video_ids.tolist()], dtype=np.int64)
    aligned = VideoScores(b.video_ids[order], b.labels[order], b.scores[order])
    differ = a.video_ids[a.labels != aligned.labels]
    if len(differ):
        raise ValueError(f"the streams disagree on the label of {len(differ)} videos "
                         f"(e.g. {differ[:5].tolist()})")
    return aligned


def fuse_scores(a: VideoScores, b: VideoScores, *, weight: float = 0.5, mode: str = "softmax") -> VideoScores:
    """weight * a + (1 - weight) * b, per video, in `a`'s video order.

    Args:
        a, b: the two streams' scores over the same videos, in any order.
        weight: of stream a, in [0, 1].
        mode: "softmax" fuses class probabilities (streams with differently scaled logits then
            count as their weights say); "logits" fuses the raw logits.
    Returns:
        VideoScores whose `scores` are the fused probabilities or logits, (N, K) float32.
    """
    if mode not in FUSION_MODES:
        raise ValueError(f"fusion mode must be one of {', '.join(FUSION_MODES)}, got {mode!r}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    b = _align(a, b)
    sa, sb = a.scores.astype(np.float64), b.scores.astype(np.float64)
    if mode == "softmax":
        sa, sb = _softmax(sa), _softmax(sb)
    fused = weight * sa + (1.0 - weight) * sb
    return VideoScores(a.video_ids, a.labels, fused.astype(np.float32), a.class_names)


WEIGHT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))  # steps of 0.05; 0 and 1 are the single streams


class FusionChoice(NamedTuple):
    """The fusion rule chosen on validation scores (`choose_fusion`)."""
    weight: float  # of stream a
    mode: str  # softmax or logits
    val_top1: float  # the fused val video top-1 it reached
    val_top1_a: float  # each stream's own val top-1, for the record
    val_top1_b: float


def _top1(scores: VideoScores) -> float:
    return float((scores.scores.argmax(1) == scores.labels).mean()) if len(scores.labels) else 0.0


def choose_fusion(a_val: VideoScores, b_val: VideoScores, *, weights=WEIGHT_GRID,
                  modes=FUSION_MODES) -> FusionChoice:
    """The weight (and mode) whose fusion of two streams' validation scores has the best video top-1.

    The grid holds weights 0 and 1, which are stream b and stream a alone, so the choice is never
    below the better single stream on val. Ties go to the weight nearest 0.5 (averaging is what
    the papers do, and a tie says val cannot tell), then to softmax.

    Args:
        a_val, b_val: the streams' per-video scores on the same validation videos.
        weights: candidate weights of stream a, in [0, 1].
        modes: candidate modes among FUSION_MODES.
    """
    best = None
    for mode in modes:
        for weight in weights:
            top1 = _top1(fuse_scores(a_val, b_val, weight=float(weight), mode=mode))
            key = (top1, -abs(float(weight) - 0.5), mode == "softmax")
            if best is None or key > best[0]:
                best = (key, float(weight), mode, top1)
    _, weight, mode, top1 = best
    return FusionChoice(weight, mode, top1, _top1(a_val), _top1(b_val))


class Fused(NamedTuple):
    """Two runs' test scores fused late (`fuse_run_outputs`)."""
    scores: VideoScores  # of the test list
    weight: float  # the first stream's share
    mode: str  # softmax | logits
    choice: FusionChoice | None  # made on the val scores; None without them


def fuse_run_outputs(spec, folders: list[Path], *, name: str) -> Fused:
    """Fuse two runs' test scores (their `SCORES_FILE`s in `folders`) by `spec`
    (`orchestrator.config.LateFusion`); a weight or mode `auto` is chosen on their val scores.

    The fused val score is recorded whatever the rule, whenever both runs wrote `VAL_SCORES_FILE`.
    """
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
