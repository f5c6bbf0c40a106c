"""Metrics on hand-computed examples, the comparison table, its MLflow round trip, plots and commands."""
import argparse
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator import metrics as M
from orchestrator import plots
from orchestrator.errors import UserError
from orchestrator import stats
from orchestrator.report import Comparison, ResultRow, SummaryRow, compare_runs, summarize, to_markdown, write_report

# 4 samples, 4 classes; the true class ranks 1st, 2nd, 3rd and 4th
LABELS = np.array([0, 1, 2, 3])
SCORES = np.array([[0.7, 0.1, 0.1, 0.1],
                   [0.5, 0.3, 0.1, 0.1],
                   [0.4, 0.3, 0.2, 0.1],
                   [0.4, 0.3, 0.2, 0.1]])


@pytest.mark.parametrize("k, expected", [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (5, 1.0)])
def test_topk_accuracy(k, expected):
    assert M.topk_accuracy(LABELS, SCORES, k) == expected


def test_topk_ties_go_to_the_lower_index_like_argmax():
    scores = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert M.topk_accuracy(np.array([0, 1]), scores, 1) == 0.5


def test_mean_class_accuracy_differs_from_top1_when_classes_are_imbalanced():
    # 8 samples of class 0 (all right), 2 of class 1 (one right): top-1 9/10, class mean (1 + 0.5) / 2
    labels = np.array([0] * 8 + [1] * 2)
    scores = np.zeros((10, 3))
    scores[np.arange(10), [0] * 8 + [1, 0]] = 1.0
    assert M.topk_accuracy(labels, scores, 1) == pytest.approx(0.9)
    assert M.mean_class_accuracy(labels, scores) == pytest.approx(0.75)  # class 2 is absent: not averaged


@pytest.mark.parametrize("labels, predictions, num_classes, expected", [
    ([0, 0, 1, 1], [0, 0, 1, 1], 2, 1.0),
    ([0, 0, 0, 1], [0, 0, 0, 0], 2, (1 + 0) / 2),  # top-1 would say 0.75
    ([0, 0, 0, 1], [0, 1, 1, 1], 2, (1 / 3 + 1) / 2),  # top-1 would say 0.5
    ([0, 1, 1, 3, 3, 3], [0, 1, 0, 3, 3, 0], 5, (1 + 1 / 2 + 2 / 3) / 3),  # classes 2 and 4: no test video, left out
    ([2, 2], [1, 1], 3, 0.0),  # predicting a class with no video does not add it to the mean
])
def test_mean_class_accuracy_is_the_mean_recall_over_classes_with_test_videos(labels, predictions, num_classes,
                                                                                expected):
    """TSN's figures (tools/eval_net.py, eval_scores.py): per-class hits over per-class counts, averaged."""
    scores = np.eye(num_classes)[predictions]  # (N, K): one-hot on the prediction
    assert M.mean_class_accuracy(np.array(labels), scores) == pytest.approx(expected)
    logged = M.classification_metrics(np.array(labels), scores, prefix="test/video_")
    assert logged["test/video_mean_class_acc"] == pytest.approx(expected)


def test_confusion_matrix_rows_are_true_classes():
    cm = M.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        M.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


@pytest.mark.parametrize("num_classes, logged", [(3, {"test/video_top1": 1 / 3, "test/video_mean_class_acc": 1 / 3}),
                                                  (20, {"test/video_top1": 1 / 20, "test/video_top5": 5 / 20,
                                                        "test/video_mean_class_acc": 1 / 20})])
def test_classification_metrics_names_and_top5_only_on_enough_classes(num_classes, logged):
    """Top-5 of 3 classes is 100 % by construction: not logged; of 20 it is."""
    scores = np.tile(np.arange(num_classes, 0, -1), (num_classes, 1))  # every video ranks class 0 first, 1 next...
    result = M.classification_metrics(np.arange(num_classes), scores, prefix="test/video_")
    assert result == pytest.approx(logged)


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="expected labels"):
        M.topk_accuracy(np.array([0, 1]), np.zeros((3, 4)))


def row(variant, dataset, seed, top1, top5, study="s"):
    return ResultRow(study, variant, dataset, seed, top1, top5, f"{variant}-{dataset}-{seed}")


RESULTS = [row("rgb", "ucf101", 0, 0.60, 0.90), row("rgb", "ucf101", 1, 0.62, 0.92),
           row("rgb", "ucf101", 2, 0.64, 0.94), row("flow", "ucf101", 0, 0.70, 0.95),
           row("rgb", "hmdb51", 0, 0.30, 0.60)]


def test_summarize_mean_and_sample_std_in_order_of_first_appearance():
    summary = summarize(RESULTS)
    assert [(s.variant, s.dataset, s.n) for s in summary] == [("rgb", "ucf101", 3), ("flow", "ucf101", 1),
                                                               ("rgb", "hmdb51", 1)]
    rgb = summary[0]
    assert rgb.top1_mean == pytest.approx(0.62) and rgb.top1_std == pytest.approx(0.02)  # ddof=1
    assert rgb.top5_mean == pytest.approx(0.92) and rgb.top5_std == pytest.approx(0.02)
    half = 4.302653 * 0.02 / 3 ** 0.5  # t(0.975, df=2) * std / sqrt(n)
    assert (rgb.top1_low, rgb.top1_high) == (pytest.approx(0.62 - half, abs=1e-8), pytest.approx(0.62 + half, abs=1e-8))
    assert summary[1][:7] == SummaryRow("flow", "ucf101", 1, 0.70, 0.0, 0.95, 0.0)[:7]
    assert np.isnan(summary[1].top1_low) and np.isnan(summary[1].top1_high)  # one seed: no interval
    assert rgb.n_videos == 0 and np.isnan(rgb.top1_test_low)  # test videos not logged: no test-list interval


def test_the_test_list_interval_holds_its_sampling_where_the_seed_interval_is_empty():
    """Two seeds that both score 85% on 40 videos: the seed CI is [85, 85] (the README's quickstart
    printed that); the test list's sampling alone is Wilson's [70.9, 92.9], and with a seed spread the
    two add in quadrature."""
    same = summarize([row("avg", "synth", s, 0.85, 1.0)._replace(n_videos=40) for s in (0, 1)])[0]
    assert (same.top1_low, same.top1_high) == (pytest.approx(0.85), pytest.approx(0.85))
    assert (same.top1_test_low, same.top1_test_high) == (pytest.approx(0.7093, abs=1e-4),
                                                         pytest.approx(0.9294, abs=1e-4))
    spread = summarize([row("v", "synth", s, top1, 1.0)._replace(n_videos=40) for s, top1 in enumerate((0.8, 0.9))])[0]
    seed_half, (low, high) = spread.top1_high - 0.85, stats.wilson_ci(0.85, 40)
    assert spread.top1_test_low == pytest.approx(0.85 - np.hypot(0.85 - low, seed_half))
    assert spread.top1_test_high == pytest.approx(0.85 + np.hypot(high - 0.85, seed_half))
    assert spread.top1_test_low < spread.top1_low and spread.top1_test_high > spread.top1_high
    text = to_markdown([same], title="t")
    assert "| avg | 85.0 ± 0.0 | [85.0, 85.0] | [70.9, 92.9] | 100.0 ± 0.0 |" in text
    assert "**Fewer than 5 seeds**" in text and "t = 12.71 with 2 seeds" in text


def test_to_markdown_exact_text():
    expected = (
        "## Two-stream ablation\n"
        "\n"
        "| Variant | ucf101 top-1 (%) | ucf101 top-1 seed 95% CI | ucf101 top-1 95% CI (seeds + test list) "
        "| ucf101 top-5 (%) | hmdb51 top-1 (%) | hmdb51 top-1 seed 95% CI | hmdb51 top-1 95% CI (seeds + test list) "
        "| hmdb51 top-5 (%) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        "| rgb | 62.0 ± 2.0 | [57.0, 67.0] | – | 92.0 ± 2.0 | 30.0 | – | – | 60.0 |\n"
        "| flow | 70.0 | – | – | 95.0 | – | – | – | – |\n"
        "\n"
        "Video-level test accuracy of what each run selected on its val list (data.val; the test list is scored "
        "once, at the end); mean ± sample std over seeds (runs per cell: 1, 3). Seed 95% CI: Student's t over the "
        "seeds, on this one test list: what other seeds could give on these videos, not how sure the accuracy is. "
        "95% CI (seeds + test list): what another test list of as many videos (not logged) could give too: a "
        "Wilson interval on the test videos, widened in quadrature by the seed CI's half-width. Both clipped to "
        "0–100; – for one seed (or test videos not logged).\n"
        "\n"
        "**Fewer than 5 seeds**: the seeds' part of an interval is Student's t with S − 1 degrees of freedom "
        "(t = 4.30 with 3 seeds; 1.96 would be the normal's), so it is wide: a spread measured on so few seeds is "
        "itself uncertain. 5 seeds or more narrow it; a verdict on fewer is indicative at best.\n")
    assert to_markdown(summarize(RESULTS), title="Two-stream ablation") == expected


def test_runs_selected_on_test_fusion_rules_and_paper_figures_are_shown():
    """A run without a val list is marked; a late fusion lists its rule per seed; study.expected is a column."""
    from orchestrator.config import Expected

    rows = [row("rgb", "ucf101", 0, 0.60, 0.90)._replace(selection="test"),
            row("two_stream", "ucf101", 0, 0.80, 1.0)._replace(rule="0.45 logits (val)"),
            row("two_stream", "ucf101", 1, 0.90, 1.0)._replace(rule="0.50 softmax (val)")]
    text = to_markdown(summarize(rows), title="t", expected={"two_stream": Expected(top1=92.0, source="TSN, Table 4")})
    assert "| rgb † | 60.0 | – | – | 90.0 | – |" in text and "| two_stream | 85.0 ± 7.1 |" in text
    assert "| paper top-1 (%) |" in text and "| 92.0 |" in text
    assert "† **selected on test**" in text
    assert "- two_stream fusion rule (weight of the first stream, mode), per seed: 0.45 logits (val); " \
           "0.50 softmax (val)" in text
    assert "- paper, two_stream: 92.0% video top-1 (TSN, Table 4)" in text and "‡" not in text
    mean_class = Expected(top1=94.0, source="TSN, Table 4", metric="test/video_mean_class_acc")
    text = to_markdown(summarize(rows), title="t", expected={"two_stream": mean_class})
    assert "| 94.0 ‡ |" in text and "- paper, two_stream: 94.0% mean class accuracy (TSN, Table 4)" in text
    assert "‡ the paper's figure is mean class accuracy" in text


def test_variants_each_on_their_own_data_set_get_one_row_each():
    """A claims study: every variant on its own synthetic variant, a data-set column instead of empty groups.
    Their 4 classes are too few for top-5 (no run logs it, see metrics.reports_top_k): no top-5 column."""
    nan = float("nan")
    rows = [row("k3", "long", 0, 0.5, nan), row("k8", "long", 0, 0.7, nan), row("flow", "camera", 0, 0.4, nan)]
    text = to_markdown(summarize(rows), title="claims")
    assert ("| Variant | Data set | top-1 (%) | top-1 seed 95% CI | top-1 95% CI (seeds + test list) |\n"
            "|---|---|---:|---:|---:|\n") in text
    assert "| k8 | long | 70.0 | – | – |\n" in text and "| flow | camera | 40.0 | – | – |\n" in text
    assert "top-5" not in text
    # with a data set of enough classes among them, the column is back; the 4-class rows have no figure in it
    text = to_markdown(summarize(rows + [row("rgb", "ucf101", 0, 0.6, 0.9)]), title="claims")
    assert "| Variant | Data set | top-1 (%) | top-1 seed 95% CI | top-1 95% CI (seeds + test list) | top-5 (%) |\n" \
        in text
    assert "| k8 | long | 70.0 | – | – | – |" in text and "| rgb | ucf101 | 60.0 | – | – | 90.0 |" in text


@pytest.mark.parametrize("low,high,verdict", [(0.01, 0.2, "holds"), (-0.2, -0.01, "reversed"),
                                              (-0.1, 0.1, "not shown")])
def test_a_claim_holds_is_reversed_or_not_shown_by_its_ci(low, high, verdict):
    from orchestrator.report import Comparison

    assert Comparison("a", "b", "d", 3, 40, (low + high) / 2, low, high).verdict == verdict


@pytest.mark.parametrize("low,p_holm,verdict,holm_verdict", [(0.01, 0.04, "holds", "holds"),
                                                               (0.01, 0.06, "holds", "not shown"),
                                                               (-0.01, 0.01, "not shown", "not shown"),
                                                               (float("nan"), float("nan"), "not shown", "not shown")])
def test_the_verdict_with_holm_stands_only_below_005_and_never_beyond_the_raw_one(low, p_holm, verdict, holm_verdict):
    c = Comparison("a", "b", "d", 3, 40, 0.1, low, 0.2, 0.01, p_holm)
    assert (c.verdict, c.holm_verdict) == (verdict, holm_verdict)


# --- statistics: closed-form cases ------------------------------------------------------------


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423),
                                   (60, 2.0003), (1000, 1.9623)])
def test_t_quantile_is_students(df, t):
    """Any statistics table's 0.975 quantiles (to 4 decimals), now from scipy rather than typed in."""
    assert stats.t_975(df) == pytest.approx(t, abs=1e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-t, abs=1e-4)
    with pytest.raises(ValueError, match=">= 1"):
        stats.t_975(0)


@pytest.mark.parametrize("values, mean, std, half", [
    ([0.5, 0.7], 0.6, 0.1414214, 12.706 * 0.1414214 / 2 ** 0.5),  # df 1: t = 12.706
    ([1.0, 2.0, 3.0], 2.0, 1.0, 4.302653 / 3 ** 0.5),  # df 2: t = 4.302653
    ([0.6, 0.6, 0.6, 0.6], 0.6, 0.0, 0.0),  # no spread, no width
    # 0..n-1: sample std sqrt(n (n + 1) / 12)
    (list(range(31)), 15.0, (31 * 32 / 12) ** 0.5, 2.042272 * (32 / 12) ** 0.5),  # df 30: t = 2.042272
    (list(range(61)), 30.0, (61 * 62 / 12) ** 0.5, 2.0003 * (62 / 12) ** 0.5),  # df 60: t = 2.0003 (expansion)
])
def test_mean_ci_is_the_t_interval(values, mean, std, half):
    got = stats.mean_ci(values)
    assert (got.mean, got.std) == (pytest.approx(mean), pytest.approx(std))
    assert (got.low, got.high) == (pytest.approx(mean - half, abs=1e-4), pytest.approx(mean + half, abs=1e-4))


def test_mean_ci_of_one_run_has_no_interval():
    got = stats.mean_ci([0.4])
    assert got[:2] == (0.4, 0.0) and np.isnan(got.low) and np.isnan(got.high)


@pytest.mark.parametrize("accuracy, n_videos, low, high", [
    (0.85, 40, 0.7093, 0.9294),  # the quickstart's two_stream_avg: 34 of 40
    (0.5, 40, 0.3520, 0.6480),
    (1.0, 40, 0.9124, 1.0),  # all right: still an interval, unlike p ± 1.96 sqrt(p (1 - p) / N)
    (0.0, 24, 0.0, 0.1380),
    (0.3, 1000, 0.2724, 0.3291),
])
def test_wilson_interval_closed_form(accuracy, n_videos, low, high):
    assert stats.wilson_ci(accuracy, n_videos) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


@pytest.mark.parametrize("p_values, adjusted", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),  # 4 x 0.005, 3 x 0.01, 2 x 0.03, then 0.04 raised to 0.06
    ([0.2, 0.01], [0.2, 0.02]),
    ([0.5, 0.6], [1.0, 1.0]),  # capped at 1, and never below an earlier rank's
    ([0.01, float("nan"), 0.02], [0.02, float("nan"), 0.02]),  # a comparison without interval: not counted
    ([], []),
])
def test_holm_adjusted_p_values(p_values, adjusted):
    assert stats.holm(p_values) == pytest.approx(adjusted, nan_ok=True)


@pytest.mark.parametrize("n_videos, p", [(40, 0.5), (200, 0.3), (1000, 0.9)])
def test_paired_bootstrap_matches_the_binomial_closed_form(n_videos, p):
    """Three seeds that agree, b always wrong, a right on a share p of N videos: the seeds add nothing
    and each resampled difference is Binomial(N, p) / N, whose 95% interval is about
    p ± 1.96 sqrt(p (1 - p) / N)."""
    a = np.zeros((3, n_videos), bool)
    a[:, :round(p * n_videos)] = True
    b = np.zeros((3, n_videos), bool)
    got = stats.paired_bootstrap_diff(a, b, resamples=20_000)
    half = 1.96 * (p * (1 - p) / n_videos) ** 0.5
    assert got.diff == pytest.approx(p)
    assert (got.low, got.high) == (pytest.approx(p - half, abs=0.25 * half + 1 / n_videos),
                                   pytest.approx(p + half, abs=0.25 * half + 1 / n_videos))
    assert got.excludes_zero and got.p < 0.05
    swapped = stats.paired_bootstrap_diff(b, a, resamples=20_000)  # same draws: exactly the mirror image
    assert (swapped.diff, swapped.low, swapped.high, swapped.p) == pytest.approx((-got.diff, -got.high, -got.low,
                                                                                  got.p))


def test_the_seeds_part_is_students_t_with_s_minus_1_degrees_of_freedom():
    """Every video alike, a ahead by 0.6 with one seed and 0.4 with the other: the test videos add
    nothing, and the interval is the t-interval of two per-seed differences (t(1) = 12.71), not a
    bootstrap over two seeds (which could never leave [0.4, 0.6])."""
    a = np.zeros((2, 50), bool)
    a[0, :30], a[1, :20] = True, True
    b = np.zeros((2, 50), bool)
    order = np.random.default_rng(0).permutation(50)  # which videos does not matter
    got = stats.paired_bootstrap_diff(a[:, order], b, resamples=2000)
    half = stats.t_975(1) * 0.1  # per-seed differences 0.6, 0.4: std 0.1414, / sqrt(2)
    assert got.diff == pytest.approx(0.5)
    assert (got.low, got.high) == (pytest.approx(0.5 - half, abs=0.02), pytest.approx(0.5 + half, abs=0.02))
    assert not got.excludes_zero and got.p > 0.05


def test_one_seed_gives_no_interval():
    a = np.ones((1, 40), bool)
    got = stats.paired_bootstrap_diff(a, ~a)
    assert got.diff == 1.0 and np.isnan(got.low) and np.isnan(got.high) and np.isnan(got.p)
    assert not got.excludes_zero


@pytest.mark.parametrize("case", range(12))
def test_p_is_below_005_exactly_where_the_interval_excludes_0(case):
    """p inverts the interval: it is the level at which the same construction first excludes 0."""
    rng = np.random.default_rng(case)
    n_seeds, n_videos, edge = 2 + case % 4, 24 + 8 * (case % 3), rng.uniform(-0.3, 0.3)
    a = rng.random((n_seeds, n_videos)) < 0.6 + edge / 2
    b = rng.random((n_seeds, n_videos)) < 0.6 - edge / 2
    got = stats.paired_bootstrap_diff(a, b, resamples=2000, seed=case)
    assert 0 < got.p <= 1
    assert (got.p < 0.05) == got.excludes_zero


def test_paired_bootstrap_cancels_what_both_get_right():
    """Identical variants differ by exactly 0, however noisy each is; disagreeing on 1 video of 100
    in each direction is no evidence either way."""
    rng = np.random.default_rng(0)
    a = rng.random((3, 100)) < 0.5
    assert stats.paired_bootstrap_diff(a, a)[:3] == (0.0, 0.0, 0.0)
    b = a.copy()
    b[0, 0], b[1, 1] = ~b[0, 0], ~b[1, 1]
    assert not stats.paired_bootstrap_diff(a, b).excludes_zero
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_bootstrap_diff(a, b[:, :50])


def test_two_seeds_with_equal_gains_on_different_videos_keep_the_test_lists_interval():
    """The quickstart's two_stream - rgb: both seeds gained exactly 18 of 40 videos, on different videos.
    The seeds' spread is then 0; the bootstrap over videos used to give up the interaction's share of
    its variance to the seeds' part all the same, and the interval was [45.0, 45.0]."""
    rng = np.random.default_rng(1)
    a, b = np.ones((2, 40), bool), np.ones((2, 40), bool)
    for seed in (0, 1):
        b[seed, rng.choice(40, 18, replace=False)] = False
    got = stats.paired_bootstrap_diff(a, b, resamples=2000)
    assert got.diff == pytest.approx(0.45)
    plain = np.sort(stats._video_draws((a.astype(float) - b).mean(axis=0), 2000, 0, 500))  # the videos alone
    assert got.low <= plain[50] and got.high >= plain[1949]


# --- statistics: coverage in simulation ------------------------------------------------------------

CLAIMS_SEEDS = len(yaml.safe_load((Path(__file__).parents[1] / "experiments" / "claims.yaml").read_text())
                   ["study"]["seeds"])
CLAIMS_VIDEOS = (40, 36)  # test videos of each claim's synthetic variant, and of the pretraining target, shape_small


def _simulated_runs(rng, n_seeds: int, n_videos: int, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, N) right/wrong of variants a and b on a fresh test list: video n is right when
    mu + z_n + u_n + g_s + e > 0, with z_n the video's difficulty for both variants, u_n (sd 0.5) what
    one variant finds hard that the other does not, g_s (sd tau) the luck of seed s and e (sd 1) the
    rest. a: mu 0.8, b: mu 0 (about 63% and 50% right)."""
    z = rng.normal(size=n_videos)
    u = rng.normal(scale=0.5, size=(2, n_videos))
    g = rng.normal(scale=tau, size=(2, n_seeds, 1))
    e = rng.normal(size=(2, n_seeds, n_videos))
    return (0.8 + z + u[0] + g[0] + e[0] > 0), (0.0 + z + u[1] + g[1] + e[1] > 0)


@pytest.mark.parametrize("n_seeds, n_videos, tau", [(CLAIMS_SEEDS, CLAIMS_VIDEOS[0], 0.1),
                                                    (CLAIMS_SEEDS, CLAIMS_VIDEOS[0], 0.3),
                                                    (CLAIMS_SEEDS, CLAIMS_VIDEOS[0], 0.6),
                                                    (CLAIMS_SEEDS, CLAIMS_VIDEOS[0], 1.0),
                                                    (CLAIMS_SEEDS, CLAIMS_VIDEOS[1], 0.6),
                                                    (2, CLAIMS_VIDEOS[0], 1.0), (5, CLAIMS_VIDEOS[0], 1.0)])
def test_the_difference_interval_covers_the_true_difference_at_least_90_percent(n_seeds, n_videos, tau):
    """1000 replications of a claim, each with new seeds and a new test list; the true difference is a's
    minus b's accuracy over all videos and seeds, Phi(0.8 / sd) - Phi(0), sd the latent's total. A seed
    sd (tau) of 0.1 moves one run's accuracy by ~2 points, 0.3 by ~7 (the README's claims spread 1-8
    points over 3 seeds), 0.6 by ~14, 1.0 by ~20. The interval before Student's t (a bootstrap over
    the seeds as well as the videos) covered 87% and 82% with 3 seeds at tau 0.6 and 1.0, and 73% with
    2 seeds; this one covers 94.7-98.8% in every row."""
    from statistics import NormalDist

    truth = NormalDist().cdf(0.8 / (1 + 1 + 0.25 + tau ** 2) ** 0.5) - 0.5
    rng = np.random.default_rng(20240)
    replications = 1000
    covered = 0
    for r in range(replications):
        got = stats.paired_bootstrap_diff(*_simulated_runs(rng, n_seeds, n_videos, tau), resamples=1000, seed=r)
        covered += got.low <= truth <= got.high
    assert covered / replications >= 0.90


def video_scores(right: list[bool], ids: list[str]):
    """Two-class VideoScores, label 0 everywhere, right where `right` says."""
    from orchestrator.runs import VideoScores

    scores = np.array([[1.0, 0.0] if r else [0.0, 1.0] for r in right], dtype=np.float32)
    return VideoScores(np.array(ids), np.zeros(len(ids), np.int64), scores, ("a", "b"))


def test_compare_runs_pairs_seeds_and_videos_by_id_and_writes_the_section():
    ids = [f"v{i:02d}" for i in range(40)]
    results = [row("two_stream", "ucf101", s, 0.9, 1.0) for s in (0, 1)] + [row("rgb", "ucf101", s, 0.5, 1.0)
                                                                            for s in (0, 1, 2)]
    scores = {f"two_stream-ucf101-{s}": video_scores([i % 10 != 0 for i in range(40)], ids) for s in (0, 1)}
    # rgb's file lists the videos in reverse order: pairing goes by id, not position
    scores.update({f"rgb-ucf101-{s}": video_scores([i % 2 == 0 for i in range(40)][::-1], ids[::-1])
                   for s in (0, 1, 2)})
    comparisons, notes = compare_runs(results, [("two_stream", "rgb"), ("rgb", "flow"), ("rgb", "two_stream")],
                                      scores.get)
    assert notes == []  # rgb - flow: flow never ran, nothing to say
    (ts_rgb, rgb_ts) = comparisons
    assert ts_rgb[:5] == ("two_stream", "rgb", "ucf101", 2, 40)  # seed 2: only rgb ran it
    assert ts_rgb.diff == pytest.approx(0.9 - 0.5) and ts_rgb.excludes_zero
    assert (rgb_ts.diff, rgb_ts.low, rgb_ts.high) == pytest.approx((-ts_rgb.diff, -ts_rgb.high, -ts_rgb.low))
    assert ts_rgb.p == pytest.approx(rgb_ts.p) and ts_rgb.p_holm == pytest.approx(min(1.0, 2 * ts_rgb.p))  # m = 2
    _, notes = compare_runs(results, [("two_stream", "rgb")], lambda run_id: scores.get(run_id) if "rgb" in run_id
                            else None)
    assert notes == ["two_stream − rgb: not compared, no per-video scores for two_stream seed 0, two_stream seed 1"]

    nan = float("nan")
    table = to_markdown(summarize(results), title="t", comparisons=[
        Comparison("two_stream", "rgb", "ucf101", 2, 40, 0.4131, 0.35, 0.475, 0.0004, 0.0012),
        Comparison("k8", "k3", "ucf101", 3, 40, 0.1, 0.01, 0.19, 0.04, 0.08),
        Comparison("flow", "rgb", "ucf101", 1, 40, 0.05, nan, nan)], notes=notes)
    assert table.endswith(
        "\n### Comparisons\n\n"
        "- two_stream − rgb: +41.3 points [35.0, 47.5] * (2 seeds × 40 videos; p < 0.001, Holm 0.001): "
        "two_stream > rgb holds, with Holm holds\n"
        "- k8 − k3: +10.0 points [1.0, 19.0] * (3 seeds × 40 videos; p 0.040, Holm 0.080): k8 > k3 holds, "
        "with Holm not shown\n"
        "- flow − rgb: +5.0 points no CI (one seed: the seeds' spread is unknown) (1 seed × 40 videos; p –, "
        "Holm –): flow > rgb not shown, with Holm not shown\n"
        "- two_stream − rgb: not compared, no per-video scores for two_stream seed 0, two_stream seed 1\n"
        "\nDifference in video-level top-1 over the seeds both ran. 95% CI: a paired bootstrap over the test "
        "videos (10000 resamples: what another test list could give) and Student's t over the seeds' differences "
        "(what other seeds could give), added in quadrature; * the CI excludes 0. p: the smallest level whose "
        "interval, built the same way, excludes 0. A claim a > b holds when the CI lies above 0, is reversed "
        "below it, and is not shown when it holds 0. The comparisons are a family of 2 claims: Holm's p "
        "(Holm–Bonferroni) is the p adjusted for testing them all, and the verdict with Holm stands only where it "
        "is below 0.05.\n"
        "\n**Fewer than 5 seeds**: the seeds' part of an interval is Student's t with S − 1 degrees of freedom "
        "(t = 12.71 with 2 seeds, t = 4.30 with 3 seeds; 1.96 would be the normal's), so it is wide: a spread "
        "measured on so few seeds is itself uncertain. 5 seeds or more narrow it; a verdict on fewer is indicative "
        "at best.\n")


def is_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_plots_write_pngs(tmp_path):
    cm = M.confusion_matrix(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), 3)
    assert is_png(plots.plot_confusion_matrix(cm, ["Red", "Green", "Blue"], tmp_path / "a" / "cm.png",
                                              title="confusion"))
    history = [{"epoch": 0, "train/loss": 2.0, "train/clip_top1": 0.2},
               {"epoch": 1, "train/loss": 1.2, "train/clip_top1": 0.5, "val/clip_top1": 0.4, "val/video_top1": 0.5}]
    assert is_png(plots.plot_learning_curves(history, tmp_path / "curves.png"))
    paths = write_report(RESULTS, tmp_path / "report", title="ablation")
    assert paths == {"markdown": tmp_path / "report" / "comparison.md", "plot": tmp_path / "report" / "comparison.png"}
    assert paths["markdown"].read_text() == to_markdown(summarize(RESULTS), title="ablation")
    assert is_png(paths["plot"])


# --- MLflow round trip ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    """A store with an old study, the latest study (children finished, failed, running) and their truth."""
    mlflow = pytest.importorskip("mlflow")
    from orchestrator import tracking
    from orchestrator.config import resolve_tracking_uri

    uri = resolve_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
    client = mlflow.MlflowClient(uri)

    def child(parent, variant, seed, top1, status="FINISHED", kind="variant", n_videos=20):
        tags = {"actionlab.kind": kind, "actionlab.study": "abl", "actionlab.variant": variant,
                "actionlab.dataset": "ucf101", "actionlab.seed": str(seed), "actionlab.selection": "val"}
        run_id = tracking.start_run(tracking_uri=uri, experiment="abl", run_name=variant, tags=tags,
                                    parent_run_id=parent)
        if n_videos:  # as training logs its lists (tracking.log_dataset_inputs): the report reads N from it
            tracking.log_dataset_inputs(uri, run_id, [tracking.DatasetSplit("synth split 1", "test", "0" * 16,
                                                                            n_videos, 4, "synth")])
        client.log_metric(run_id, "test/video_top1", top1)
        client.log_metric(run_id, "test/video_top5", min(1.0, top1 + 0.25))
        client.set_terminated(run_id, status=status)
        return run_id

    def study():
        return tracking.start_run(tracking_uri=uri, experiment="abl", run_name="study",
                                  tags={"actionlab.kind": "study", "actionlab.study": "abl"})

    old = study()
    old_rows = [ResultRow("abl", "rgb", "ucf101", 0, 0.1, 0.35, child(old, "rgb", 0, 0.1, n_videos=0))]
    latest = study()
    rows = [ResultRow("abl", v, "ucf101", s, t, t + 0.25, child(latest, v, s, t), n_videos=20)
            for v, s, t in [("rgb", 0, 0.5), ("rgb", 1, 0.6), ("flow", 0, 0.7)]]
    child(latest, "rgb", 2, 0.0, status="FAILED")
    child(latest, "rgb", 3, 0.0, status="KILLED")
    child(latest, "rgb", 4, 0.0, status="RUNNING")
    child(latest, "rgb", 5, 0.0, kind="train")  # not a study variant
    tracking.start_run(tracking_uri=uri, experiment="empty", run_name="x", tags={"actionlab.kind": "train"})
    return {"uri": uri, "old": old, "old_rows": old_rows, "rows": rows}


def test_results_from_mlflow_round_trip_ignores_unfinished_runs(study_store):
    from orchestrator.report import results_from_mlflow

    uri = study_store["uri"]
    assert sorted(results_from_mlflow(uri, "abl")) == sorted(study_store["rows"])  # latest study by default
    assert results_from_mlflow(uri, "abl", parent_run_id=study_store["old"]) == study_store["old_rows"]
    assert results_from_mlflow(uri, "empty") == []
    with pytest.raises(UserError, match="no MLflow experiment 'nope'.*existing: .*abl"):
        results_from_mlflow(uri, "nope")


def run_report_command(argv: list[str]) -> int:
    from orchestrator.commands import report as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_report_command_by_experiment_name(study_store, tmp_path, capsys):
    assert run_report_command(["abl", "--tracking-uri", study_store["uri"], "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # rgb: 50 and 60% on 20 videos, two seeds: t(1) stretches both intervals past 0-100
    assert "| rgb | 55.0 ± 7.1 | [0.0, 100.0] | [0.0, 100.0] | 80.0 ± 7.1 |" in out
    assert "| flow | 70.0 | – | – | 95.0 |" in out and "of as many videos (20)" in out
    assert is_png(tmp_path / "comparison.png")
    assert (tmp_path / "comparison.md").read_text() in out


def test_report_command_reads_tracking_settings_from_the_yaml(study_store, tmp_path, capsys):
    pytest.importorskip("orchestrator.config")
    yaml_path = tmp_path / "abl.yaml"
    yaml_path.write_text(f"name: abl\ndescription: RGB vs flow\ndata:\n  synth: true\n"
                         f"tracking:\n  tracking_uri: {study_store['uri']}\n  experiment: abl\n")
    assert run_report_command([str(yaml_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## RGB vs flow\n") and "| flow | 70.0 | – | – | 95.0 |" in out


def test_report_command_compares_from_run_files_or_artifacts(study_store, tmp_path, capsys):
    """study.compare from the YAML; rgb's scores from its run folder, flow's from its MLflow artifact."""
    import mlflow

    from orchestrator.runs import run_output_dir, save_scores

    rgb, flow = (next(r.run_id for r in study_store["rows"] if (r.variant, r.seed) == (v, 0)) for v in ("rgb", "flow"))
    ids = [f"v{i}" for i in range(20)]
    local = run_output_dir(tmp_path / "runs", rgb)
    local.mkdir(parents=True)
    save_scores(local / "scores.npz", video_scores([i < 10 for i in range(20)], ids))
    save_scores(tmp_path / "scores.npz", video_scores([True] * 20, ids))
    mlflow.MlflowClient(study_store["uri"]).log_artifact(flow, str(tmp_path / "scores.npz"))
    yaml_path = tmp_path / "abl.yaml"
    yaml_path.write_text(f"name: abl\ndata:\n  synth: true\nscaling:\n  storage_path: {tmp_path / 'runs'}\n"
                         f"tracking:\n  tracking_uri: {study_store['uri']}\n  experiment: abl\n"
                         "study: {variants: {rgb: {}, flow: {model.modality: flow}}, compare: [[flow, rgb]]}\n")
    assert run_report_command([str(yaml_path)]) == 0
    # seed 0 only (rgb seed 1 has no partner): how far another seed could move the difference is unknown
    assert "- flow − rgb: +50.0 points no CI (one seed" in capsys.readouterr().out


@pytest.mark.parametrize("experiment, message", [("nope", "no MLflow experiment 'nope'"),
                                                 ("empty", "no finished variant runs")])
def test_report_command_errors(study_store, experiment, message):
    with pytest.raises(UserError, match=message):
        run_report_command([experiment, "--tracking-uri", study_store["uri"]])


def test_ui_command_serves_the_store_on_localhost_only():
    from orchestrator.commands.ui import ui_command

    cmd = ui_command("sqlite:////data/mlflow.db", 5001)
    assert cmd[1:] == ["-m", "mlflow", "ui", "--backend-store-uri", "sqlite:////data/mlflow.db",
                       "--host", "127.0.0.1", "--port", "5001"]


def test_comparisons_become_parent_run_metrics_in_points():
    from orchestrator.report import Comparison, comparison_metrics

    one = [Comparison("two_stream", "rgb", "ucf101", 2, 40, 0.4125, 0.35, 0.475, 0.01, 0.06)]
    assert comparison_metrics(one) == pytest.approx({"compare/two_stream-rgb/diff": 41.25,
                                                     "compare/two_stream-rgb/ci_low": 35.0,
                                                     "compare/two_stream-rgb/ci_high": 47.5,
                                                     "compare/two_stream-rgb/p": 0.01,
                                                     "compare/two_stream-rgb/p_holm": 0.06,
                                                     "compare/two_stream-rgb/holds": 1.0,
                                                     "compare/two_stream-rgb/holds_holm": 0.0})
    two = [one[0], Comparison("k8", "k3", "long", 3, 80, -0.02, -0.1, 0.06)]
    assert set(comparison_metrics(two)) >= {"compare/two_stream-rgb/ucf101/diff", "compare/k8-k3/long/holds"}
    assert comparison_metrics(two)["compare/k8-k3/long/holds"] == 0.0


def test_a_fine_tuned_variant_shows_its_source_runs_own_accuracy():
    """A source that did not learn its own task transfers nothing: the report puts the source runs' own
    accuracy beside the fine-tuned variant's."""
    results = [row("source", "big", s, top1, 1.0) for s, top1 in ((0, 0.98), (1, 1.0))]
    results += [row("scratch", "small", s, 0.6, 1.0) for s in (0, 1)]
    results += [row("pretrained", "small", s, 0.9, 1.0)._replace(source="source") for s in (0, 1)]
    text = to_markdown(summarize(results), title="t")
    assert "- pretrained (small) is fine-tuned from source, whose own runs scored 99.0 ± 1.4 % on big" in text
    assert "scratch (small) is fine-tuned" not in text
