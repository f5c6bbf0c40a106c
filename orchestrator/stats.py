"""Statistics for comparison tables (pure numpy): a t-interval over seeds, a paired bootstrap over videos.

    mean_ci                ->  MeanCI: mean, sample std and 95% t-interval of one variant's runs (seeds)
    paired_bootstrap_diff  ->  Difference: accuracy of a minus b, with a 95% percentile bootstrap CI that
                               resamples the test videos and the seeds both variants share
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Student's t 0.975 quantile for 1..30 degrees of freedom (any statistics table); beyond 30 the
# Cornish-Fisher expansion below is within 1e-4 of it.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.959964
BOOTSTRAP_RESAMPLES = 10_000


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


class MeanCI(NamedTuple):
    mean: float
    std: float  # sample std (ddof=1); 0 when n == 1
    low: float  # 95% t-interval of the mean; NaN when n == 1 (one run says nothing about the spread)
    high: float


def mean_ci(values) -> MeanCI:
    """Mean, sample std and 95% confidence interval of the mean (Student's t) of a few runs.

    Args:
        values: (n,) one value per run (seed), n >= 1.
    Returns:
        MeanCI; low/high are NaN when n == 1.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"expected a non-empty (n,) array, got shape {values.shape}")
    mean = float(values.mean())
    if len(values) == 1:
        return MeanCI(mean, 0.0, math.nan, math.nan)
    std = float(values.std(ddof=1))
    half = t_975(len(values) - 1) * std / math.sqrt(len(values))
    return MeanCI(mean, std, mean - half, mean + half)


class Difference(NamedTuple):
    diff: float  # mean accuracy of a minus that of b, over the shared seeds and videos, in [-1, 1]
    low: float  # 95% percentile bootstrap interval
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap_diff(correct_a, correct_b, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                          chunk: int = 500) -> Difference:
    """Accuracy difference of two variants on the same test videos and seeds, with a paired bootstrap CI.

    Each resample draws the seeds and, independently, the videos with replacement, and keeps
    every drawn (seed, video) pair: a and b are judged on the same draw, so what both find hard
    (or easy) cancels. The CI is the 2.5th and 97.5th percentile of the resampled differences.

    Args:
        correct_a, correct_b: (S, N) bool, whether variant a / b got video n right with seed s,
            same seeds and videos in the same order.
        resamples: bootstrap draws.
        seed: of the random generator (the same inputs give the same CI).
        chunk: draws computed at once ((chunk, N) weights in memory).
    Returns:
        Difference(diff, low, high) as fractions (multiply by 100 for points).
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 2 or a.shape != b.shape or 0 in a.shape:
        raise ValueError(f"expected two non-empty (seeds, videos) arrays of one shape, got {a.shape} and {b.shape}")
    d = a.astype(np.float64) - b.astype(np.float64)  # (S, N) per-run per-video difference in {-1, 0, 1}
    n_seeds, n_videos = d.shape
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        # how often each seed / video is drawn: the resampled mean is w_seeds @ d @ w_videos
        w_seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=r) / n_seeds  # (r, S)
        w_videos = rng.multinomial(n_videos, np.full(n_videos, 1 / n_videos), size=r) / n_videos  # (r, N)
        draws.append(((w_seeds @ d) * w_videos).sum(axis=1))  # (r,)
    low, high = np.percentile(np.concatenate(draws), [2.5, 97.5])
    return Difference(float(d.mean()), float(low), float(high))
