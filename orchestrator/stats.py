"""Statistics for comparison tables: intervals over seeds, over test videos, and over both.

    mean_ci                ->  MeanCI: mean, sample std and 95% t-interval of one variant's runs (seeds): the
                               spread of training on one fixed test list (the "seed 95% CI")
    wilson_ci              ->  (low, high): 95% Wilson interval of an accuracy on N test videos: what another
                               test list of N videos could give
    widen                  ->  an interval widened, in quadrature, by a symmetric half-width (e.g. the seeds')
    paired_bootstrap_diff  ->  Difference: accuracy of a minus b, with a 95% interval that holds both what
                               other test videos (a paired bootstrap over them) and what other seeds (Student's
                               t with S - 1 degrees of freedom) could give, and the p-value of that interval
    holm                   ->  Holm–Bonferroni adjusted p-values of a family of claims

Why t for the seeds: a study runs 2-5 seeds, and a spread estimated from so few is itself uncertain.
A bootstrap that resamples 3 seeds treats their spread as known: in simulation (40 test videos, a
seed spread of ~20 points per run: tests/test_metrics_report.py) its nominal 95% covered the true
difference in 73% of replications with 2 seeds, 82% with 3 and 91% with 5. Student's t with S - 1
degrees of freedom pays for the uncertain spread (t = 12.71 with 2 seeds, 4.30 with 3, 2.78 with 5):
coverage 93-97% with 2, 3 or 5 seeds and small or large seed spreads, at the price of wide intervals
with 2-3 seeds (the report says so below 5).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

Z_975 = 1.959964  # the standard normal's 0.975 quantile
BOOTSTRAP_RESAMPLES = 10_000
P_FLOOR = 1e-6  # p-values below this are reported as this (the bootstrap's tails cannot say more)


def t_quantile(q: float, df: int) -> float:
    """The `q` quantile of Student's t with `df` >= 1 degrees of freedom.

    scipy's `stdtrit`, which `scipy.stats.t.ppf` calls, without the 0.1 ms of argument checks per
    call (a p-value's bisection makes ~40), imported here: scipy takes a fifth of a second to import.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom: a two-sided 95% interval's."""
    return t_quantile(0.975, df)


class MeanCI(NamedTuple):
    mean: float
    std: float  # sample std (ddof=1); 0 when n == 1
    low: float  # 95% t-interval of the mean; NaN when n == 1 (one run says nothing about the spread)
    high: float


def mean_ci(values) -> MeanCI:
    """Mean, sample std and 95% confidence interval of the mean (Student's t) of a few runs.

    On one fixed test list this is the seeds' interval only: what other seeds could give on these
    videos, not what other test videos could (`wilson_ci`).

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


def wilson_ci(accuracy: float, n_videos: int) -> tuple[float, float]:
    """95% Wilson score interval (Wilson 1927) of an accuracy measured on `n_videos` test videos.

    Unlike accuracy ± 1.96 sqrt(p (1 - p) / N) it stays inside [0, 1] and keeps its width at 0 % and
    100 % (a model right on all 40 videos gets [91.2, 100]).

    Args:
        accuracy: share of the videos right, in [0, 1] (a mean over seeds is fine: the count need not
            be whole).
        n_videos: N >= 1.
    Returns:
        (low, high) in [0, 1].
    """
    if n_videos < 1 or not 0 <= accuracy <= 1:
        raise ValueError(f"expected an accuracy in [0, 1] on N >= 1 videos, got {accuracy} on {n_videos}")
    z2 = Z_975 ** 2
    centre = (accuracy + z2 / (2 * n_videos)) / (1 + z2 / n_videos)
    half = Z_975 / (1 + z2 / n_videos) * math.sqrt(accuracy * (1 - accuracy) / n_videos + z2 / (4 * n_videos ** 2))
    return max(0.0, centre - half), min(1.0, centre + half)


def widen(value: float, low: float, high: float, half: float) -> tuple[float, float]:
    """(low, high) around `value` with each side's distance to it added in quadrature to `half`: two
    independent sources of error (the test list's, the seeds') each with its own interval."""
    return value - math.hypot(value - low, half), value + math.hypot(high - value, half)


class Difference(NamedTuple):
    diff: float  # mean accuracy of a minus that of b, over the shared seeds and videos, in [-1, 1]
    low: float  # 95% interval (see paired_bootstrap_diff); NaN with one seed: its spread is unknown
    high: float
    p: float = math.nan  # two-sided: the smallest level whose interval, built the same way, excludes 0

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _video_draws(per_video: np.ndarray, resamples: int, seed: int, chunk: int) -> np.ndarray:
    """(resamples,) means of `per_video` (N,) over N videos drawn with replacement."""
    n_videos = len(per_video)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, chunk):
        drawn = rng.integers(0, n_videos, size=(min(chunk, resamples - start), n_videos))  # (r, N) video indices
        draws.append(per_video[drawn].mean(axis=1))  # (r,)
    return np.concatenate(draws)


def _sorted_quantile(values: np.ndarray, q: float) -> float:
    """The `q` quantile of sorted `values` as np.quantile's default (linear) method gives it, without
    sorting them again: the p-value's bisection asks for ~40 of them."""
    position = q * (len(values) - 1)
    below = min(int(position), len(values) - 1)
    above = min(below + 1, len(values) - 1)
    return float(values[below] + (position - below) * (values[above] - values[below]))


def paired_bootstrap_diff(correct_a, correct_b, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                          chunk: int = 500) -> Difference:
    """Accuracy difference of two variants on the same test videos and seeds, with a 95% interval that
    holds both sources of error, and its p-value.

    d[s, n] = a right - b right on video n with seed s. Its mean D has two sources of error:
    - the test videos: a paired percentile bootstrap over them, of the seed-averaged d[:, n] (a and b
      are judged on the same draw, so what both find hard, or easy, cancels). That also carries the
      seed x video interaction, which the seeds' part below also holds: the bootstrap's half-widths
      are shrunk by the share of that interaction in its variance (two-way ANOVA residual mean square),
      as far as the seeds' part carries it, so it is not counted twice;
    - the seeds: Student's t with S - 1 degrees of freedom over the per-seed differences d[s, :].mean().
    The interval adds the two half-widths in quadrature on each side (`widen`). p is found by bisection:
    the level at which the same construction, at (1 - p), first excludes 0.

    Args:
        correct_a, correct_b: (S, N) bool, whether variant a / b got video n right with seed s,
            same seeds and videos in the same order.
        resamples: bootstrap draws.
        seed: of the random generator (the same inputs give the same interval).
        chunk: draws computed at once ((chunk, N) video indices in memory).
    Returns:
        Difference(diff, low, high, p) as fractions (multiply by 100 for points); low, high and p are
        NaN with one seed (S == 1): how much another seed could move the difference is unknown.
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 2 or a.shape != b.shape or 0 in a.shape:
        raise ValueError(f"expected two non-empty (seeds, videos) arrays of one shape, got {a.shape} and {b.shape}")
    d = a.astype(np.float64) - b.astype(np.float64)  # (S, N) per-run per-video difference in {-1, 0, 1}
    n_seeds, n_videos = d.shape
    diff = float(d.mean())
    if n_seeds < 2:
        return Difference(diff, math.nan, math.nan, math.nan)
    per_seed, per_video = d.mean(axis=1), d.mean(axis=0)  # (S,), (N,)
    se_seeds = float(per_seed.std(ddof=1)) / math.sqrt(n_seeds)
    draws = np.sort(_video_draws(per_video, resamples, seed, chunk))
    shrink = 1.0
    video_var = float(per_video.var(ddof=1)) if n_videos > 1 else 0.0
    if video_var > 0:
        residual = d - per_seed[:, None] - per_video[None, :] + diff  # (S, N) seed x video interaction
        interaction = float((residual ** 2).sum()) / ((n_seeds - 1) * (n_videos - 1))
        # the bootstrap gives up only the interaction variance the seeds' term carries: with few seeds
        # their spread may come out smaller than the interaction alone implies (two seeds that gained the
        # same number of videos, on different videos, have none), and the interval would then hold neither
        carried = min(interaction / (n_seeds * n_videos), se_seeds ** 2)
        shrink = math.sqrt(max(0.0, 1 - carried / (video_var / n_videos)))

    def interval(alpha: float) -> tuple[float, float]:
        low, high = _sorted_quantile(draws, alpha / 2), _sorted_quantile(draws, 1 - alpha / 2)
        low, high = diff - shrink * (diff - low), diff + shrink * (high - diff)
        return widen(diff, low, high, t_quantile(1 - alpha / 2, n_seeds - 1) * se_seeds)

    low, high = interval(0.05)
    return Difference(diff, low, high, _inverted_p(interval))


def _inverted_p(interval) -> float:
    """The smallest alpha whose `interval(alpha)` excludes 0 (the intervals narrow as alpha grows), by
    bisection; 1 when none does, P_FLOOR when even `interval(P_FLOOR)` does."""
    def excludes(alpha: float) -> bool:
        low, high = interval(alpha)
        return low > 0 or high < 0

    if excludes(P_FLOOR):
        return P_FLOOR
    if not excludes(1 - 1e-9):
        return 1.0
    inside, outside = P_FLOOR, 1 - 1e-9
    for _ in range(40):  # 2^-40 of the range: far below the bootstrap's own resolution
        middle = (inside + outside) / 2
        inside, outside = (inside, middle) if excludes(middle) else (middle, outside)
    return outside


def holm(p_values) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the order given.

    With m claims, the i-th smallest p is multiplied by m - i + 1 (i from 1), the results made
    non-decreasing in that order and capped at 1: a claim whose adjusted p is below 0.05 holds with
    the chance of any false claim in the family at most 5%. A NaN (a comparison with no interval) is
    no claim: it stays NaN and does not count in m.
    """
    p_values = [float(p) for p in p_values]
    ranked = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * p))
        adjusted[i] = running
    return adjusted
