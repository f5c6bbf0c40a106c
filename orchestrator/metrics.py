"""Classification metrics on score arrays (pure numpy): top-k, mean class accuracy, confusion.

Ties between scores go to the lower class index, as with `argmax`, so top-1 here always agrees
with a confusion matrix built from `scores.argmax(1)`.
"""
from __future__ import annotations

import numpy as np


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 1 or scores.ndim != 2 or len(labels) != len(scores):
        raise ValueError(f"expected labels (N,) and scores (N, K), got {labels.shape} and {scores.shape}")
    return labels.astype(np.int64), scores


def topk_accuracy(labels: np.ndarray, scores: np.ndarray, k: int = 1) -> float:
    """Share of samples whose true class is among the k highest scores.

    Args:
        labels: (N,) true class indices.
        scores: (N, K) class scores (logits or probabilities).
        k: number of top classes that count; values above K count as K.
    Returns:
        Accuracy in [0, 1]; NaN when N == 0.
    """
    labels, scores = _check(labels, scores)
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, k); stable: ties -> lower index
    return float((top == labels[:, None]).any(axis=1).mean())


def mean_class_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Top-1 recall of each class present in `labels`, averaged over those classes.

    Unlike top-1, every class weighs the same, so a model that only predicts the frequent
    classes scores low on an imbalanced test set.

    Args:
        labels: (N,) true class indices.
        scores: (N, K) class scores.
    Returns:
        Mean per-class recall in [0, 1]; NaN when N == 0.
    """
    labels, scores = _check(labels, scores)
    if len(labels) == 0:
        return float("nan")
    correct = scores.argmax(axis=1) == labels  # (N,)
    return float(np.mean([correct[labels == c].mean() for c in np.unique(labels)]))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        labels: (N,) true class indices in [0, num_classes).
        predictions: (N,) predicted class indices in [0, num_classes).
        num_classes: K.
    Returns:
        (K, K) int64 matrix; row = true class, column = prediction.
    """
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"expected labels and predictions of the same (N,) shape, "
                         f"got {labels.shape} and {predictions.shape}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got {values.min()}..{values.max()}")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def reports_top_k(k: int, num_classes: int) -> bool:
    """Whether top-k accuracy says anything on `num_classes` classes.

    Top-5 of 4 classes is 100 % by construction, and of 10 classes chance alone is already 50 %;
    with at least 4k classes chance stays at or below 25 %, where a score still tells models apart.
    """
    return num_classes >= 4 * k


def classification_metrics(labels: np.ndarray, scores: np.ndarray, *, prefix: str) -> dict[str, float]:
    """The metrics a results table reports, named for MLflow.

    Args:
        labels: (N,) true class indices.
        scores: (N, K) class scores.
        prefix: e.g. 'test/video_'.
    Returns:
        {f'{prefix}top1', f'{prefix}mean_class_acc'}, and f'{prefix}top5' where `reports_top_k(5, K)`.
    """
    labels, scores = _check(labels, scores)
    metrics = {f"{prefix}top1": topk_accuracy(labels, scores, 1),
               f"{prefix}mean_class_acc": mean_class_accuracy(labels, scores)}
    if reports_top_k(5, scores.shape[1]):
        metrics[f"{prefix}top5"] = topk_accuracy(labels, scores, 5)
    return metrics
