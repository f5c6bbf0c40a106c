"""Figures for MLflow artifacts and reports: confusion matrix, learning curves, comparison bars.

Each function draws on a bare `matplotlib.figure.Figure` rendered by the Agg canvas: no pyplot,
so nothing global (backend, open figures) changes and it works on headless Ray nodes.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np


def _figure(width_in: float, height_in: float, ncols: int = 1):
    """A Figure with an Agg canvas and its axes (one per column)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_confusion_matrix(cm: np.ndarray, class_names: list[str], path: Path, *, title: str) -> Path:
    """Row-normalised confusion matrix (colour = share of the true class), counts written in small ones.

    Args:
        cm: (K, K) counts, rows = true class (see `metrics.confusion_matrix`).
        class_names: K names, in class-index order.
        path: PNG to write (parent folders are created).
        title: figure title.
    Returns:
        path.
    """
    cm = np.asarray(cm)
    k = len(class_names)
    recall = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # (K, K); empty rows stay 0
    side = min(4.0 + 0.3 * k, 40.0)  # ~0.3 inch per class keeps 101 UCF names legible
    fig, (ax,) = _figure(side + 1.5, side)
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of true class", shrink=0.8)
    fontsize = max(4.0, min(10.0, 200.0 / k))
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(k), class_names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= 20:  # beyond that the numbers overlap
        for i, j in np.ndindex(cm.shape):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if recall[i, j] > 0.5 else "black")
    return _save(fig, path)


def _curve(ax, history: list[dict], key: str, label: str, style: str) -> None:
    """Plot `key` against epoch for the epochs that have it (validation may run every n epochs)."""
    points = [(h["epoch"], h[key]) for h in history if key in h]
    if points:
        epochs, values = zip(*points)
        ax.plot(epochs, values, style, label=label)


def plot_learning_curves(history: list[dict], path: Path) -> Path:
    """Training loss, and top-1 accuracy train vs validation, per epoch.

    Args:
        history: one dict per epoch with 'epoch' and any of 'train/loss', 'train/clip_top1',
            'val/clip_top1', 'val/video_top1' (the curves the training loop logs).
        path: PNG to write.
    Returns:
        path.
    """
    fig, (loss_ax, acc_ax) = _figure(10.0, 4.0, ncols=2)
    _curve(loss_ax, history, "train/loss", "train", "o-")
    loss_ax.set(title="Training loss", xlabel="epoch", ylabel="cross-entropy")
    _curve(acc_ax, history, "train/clip_top1", "train (clip)", "o-")
    _curve(acc_ax, history, "val/clip_top1", "validation (clip)", "s--")
    _curve(acc_ax, history, "val/video_top1", "validation (video)", "^--")
    acc_ax.set(title="Top-1 accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0.0, 1.0))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)


def plot_comparison(rows: list, path: Path, *, metric: str = "top1", title: str | None = None) -> Path:
    """Grouped bars: one group per variant, one bar per dataset, error bars = the seed 95% CI (Student's t
    over seeds, on the one test list: `report.summarize`; the test list's sampling is in the table only).

    Args:
        rows: `report.SummaryRow`s (fields variant, dataset, {metric}_mean, {metric}_low, {metric}_high;
            low/high NaN, hence no error bar, for a single seed).
        path: PNG to write.
        metric: 'top1' or 'top5'.
        title: figure title; default names the metric.
    Returns:
        path.
    """
    variants = list(dict.fromkeys(r.variant for r in rows))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    cells = {(r.variant, r.dataset): r for r in rows}
    # each variant on its own data set (a claims study): one bar per variant, coloured by data set
    one_each = len(rows) == len(variants)
    width = 0.6 if one_each else 0.8 / max(len(datasets), 1)
    fig, (ax,) = _figure(max(6.0, 1.2 * len(variants) * max(len(datasets), 1) ** 0.5 + 2.0), 4.5)
    for d, dataset in enumerate(datasets):
        offset = 0 if one_each else (d - (len(datasets) - 1) / 2) * width
        x = [v + offset for v, variant in enumerate(variants) if (variant, dataset) in cells]
        present = [cells[(variant, dataset)] for variant in variants if (variant, dataset) in cells]
        means = np.array([100 * getattr(r, f"{metric}_mean") for r in present])
        # a t-interval over 2-3 seeds can pass 0 or 100%: drawn clipped to what accuracy can be
        lows = np.clip([100 * getattr(r, f"{metric}_low") for r in present], 0, 100)
        highs = np.clip([100 * getattr(r, f"{metric}_high") for r in present], 0, 100)
        errors = np.nan_to_num([means - lows, highs - means])  # (2, bars) below / above the mean; none for 1 seed
        bars = ax.bar(x, means, width, yerr=errors, capsize=3, label=dataset)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    crowded = len(variants) > 4  # long variant names overlap unless slanted
    ax.set_xticks(range(len(variants)), variants, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    label = f"video {metric.replace('top', 'top-')} accuracy (%)"
    ax.set_ylabel(label)
    ax.set_ylim(0, 105)
    heading = f"{title or 'Comparison'}: {label}, mean over seeds with its seed 95% CI (same test videos)"
    ax.set_title(textwrap.fill(heading, 70), fontsize=10)  # long study descriptions wrap, not clip
    ax.grid(axis="y", alpha=0.3)
    if datasets:
        ax.legend(title="dataset")
    return _save(fig, path)
