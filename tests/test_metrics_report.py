"""Metrics on hand-computed examples, the comparison table, its MLflow round trip, plots and commands."""
import argparse

import numpy as np
import pytest

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
    half = 4.303 * 0.02 / 3 ** 0.5  # t(0.975, df=2) * std / sqrt(n)
    assert (rgb.top1_low, rgb.top1_high) == (pytest.approx(0.62 - half, abs=1e-9), pytest.approx(0.62 + half, abs=1e-9))
    assert summary[1][:7] == SummaryRow("flow", "ucf101", 1, 0.70, 0.0, 0.95, 0.0)[:7]
    assert np.isnan(summary[1].top1_low) and np.isnan(summary[1].top1_high)  # one seed: no interval


def test_to_markdown_exact_text():
    expected = (
        "## Two-stream ablation\n"
        "\n"
        "| Variant | ucf101 top-1 (%) | ucf101 top-1 95% CI | ucf101 top-5 (%) | hmdb51 top-1 (%) "
        "| hmdb51 top-1 95% CI | hmdb51 top-5 (%) |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| rgb | 62.0 ± 2.0 | [57.0, 67.0] | 92.0 ± 2.0 | 30.0 | – | 60.0 |\n"
        "| flow | 70.0 | – | 95.0 | – | – | – |\n"
        "\n"
        "Video-level test accuracy of what each run selected on its val list (data.val; the test list is scored "
        "once, at the end); mean ± sample std over seeds (runs per cell: 1, 3); "
        "95% CI of the mean: Student's t over seeds, clipped to 0–100 (– for one seed).\n")
    assert to_markdown(summarize(RESULTS), title="Two-stream ablation") == expected


def test_runs_selected_on_test_fusion_rules_and_paper_figures_are_shown():
    """A run without a val list is marked; a late fusion lists its rule per seed; study.expected is a column."""
    from orchestrator.config import Expected

    rows = [row("rgb", "ucf101", 0, 0.60, 0.90)._replace(selection="test"),
            row("two_stream", "ucf101", 0, 0.80, 1.0)._replace(rule="0.45 logits (val)"),
            row("two_stream", "ucf101", 1, 0.90, 1.0)._replace(rule="0.50 softmax (val)")]
    text = to_markdown(summarize(rows), title="t", expected={"two_stream": Expected(top1=92.0, source="TSN, Table 4")})
    assert "| rgb † | 60.0 | – | 90.0 | – |" in text and "| two_stream | 85.0 ± 7.1 |" in text
    assert "| paper top-1 (%) |" in text and "| 92.0 |" in text
    assert "† **selected on test**" in text
    assert "- two_stream fusion rule (weight of the first stream, mode), per seed: 0.45 logits (val); " \
           "0.50 softmax (val)" in text
    assert "- paper, two_stream: 92.0% (TSN, Table 4)" in text


def test_variants_each_on_their_own_data_set_get_one_row_each():
    """A claims study: every variant on its own synthetic variant, a data-set column instead of empty groups.
    Their 4 classes are too few for top-5 (no run logs it, see metrics.reports_top_k): no top-5 column."""
    nan = float("nan")
    rows = [row("k3", "long", 0, 0.5, nan), row("k8", "long", 0, 0.7, nan), row("flow", "camera", 0, 0.4, nan)]
    text = to_markdown(summarize(rows), title="claims")
    assert "| Variant | Data set | top-1 (%) | top-1 95% CI |\n|---|---|---:|---:|\n" in text
    assert "| k8 | long | 70.0 | – |\n" in text and "| flow | camera | 40.0 | – |\n" in text
    assert "top-5" not in text
    # with a data set of enough classes among them, the column is back; the 4-class rows have no figure in it
    text = to_markdown(summarize(rows + [row("rgb", "ucf101", 0, 0.6, 0.9)]), title="claims")
    assert "| Variant | Data set | top-1 (%) | top-1 95% CI | top-5 (%) |\n" in text
    assert "| k8 | long | 70.0 | – | – |" in text and "| rgb | ucf101 | 60.0 | – | 90.0 |" in text


@pytest.mark.parametrize("low,high,verdict", [(0.01, 0.2, "holds"), (-0.2, -0.01, "reversed"),
                                              (-0.1, 0.1, "not shown")])
def test_a_claim_holds_is_reversed_or_not_shown_by_its_ci(low, high, verdict):
    from orchestrator.report import Comparison

    assert Comparison("a", "b", "d", 3, 40, (low + high) / 2, low, high).verdict == verdict


# --- statistics: closed-form cases ------------------------------------------------------------


@pytest.mark.parametrize("values, mean, std, half", [
    ([0.5, 0.7], 0.6, 0.1414214, 12.706 * 0.1414214 / 2 ** 0.5),  # df 1: t = 12.706
    ([1.0, 2.0, 3.0], 2.0, 1.0, 4.303 / 3 ** 0.5),  # df 2: t = 4.303
    ([0.6, 0.6, 0.6, 0.6], 0.6, 0.0, 0.0),  # no spread, no width
    # 0..n-1: sample std sqrt(n (n + 1) / 12)
    (list(range(31)), 15.0, (31 * 32 / 12) ** 0.5, 2.042 * (32 / 12) ** 0.5),  # df 30: t = 2.042
    (list(range(61)), 30.0, (61 * 62 / 12) ** 0.5, 2.0003 * (62 / 12) ** 0.5),  # df 60: t = 2.0003 (expansion)
])
def test_mean_ci_is_the_t_interval(values, mean, std, half):
    got = stats.mean_ci(values)
    assert (got.mean, got.std) == (pytest.approx(mean), pytest.approx(std))
    assert (got.low, got.high) == (pytest.approx(mean - half, abs=1e-4), pytest.approx(mean + half, abs=1e-4))


def test_mean_ci_of_one_run_has_no_interval():
    got = stats.mean_ci([0.4])
    assert got[:2] == (0.4, 0.0) and np.isnan(got.low) and np.isnan(got.high)


@pytest.mark.parametrize("n_videos, p", [(40, 0.5), (200, 0.3), (1000, 0.9)])
def test_paired_bootstrap_matches_the_binomial_closed_form(n_videos, p):
    """One seed, b always wrong, a right on a share p of N videos: each resampled difference is
    Binomial(N, p) / N, whose 95% interval is about p ± 1.96 sqrt(p (1 - p) / N)."""
    a = np.zeros((1, n_videos), bool)
    a[0, :round(p * n_videos)] = True
    b = np.zeros((1, n_videos), bool)
    got = stats.paired_bootstrap_diff(a, b, resamples=20_000)
    half = 1.96 * (p * (1 - p) / n_videos) ** 0.5
    assert got.diff == pytest.approx(p)
    assert (got.low, got.high) == (pytest.approx(p - half, abs=0.25 * half + 1 / n_videos),
                                   pytest.approx(p + half, abs=0.25 * half + 1 / n_videos))
    assert got.excludes_zero
    swapped = stats.paired_bootstrap_diff(b, a, resamples=20_000)  # same draws: exactly the mirror image
    assert (swapped.diff, swapped.low, swapped.high) == pytest.approx((-got.diff, -got.high, -got.low))


def test_paired_bootstrap_cancels_what_both_get_right():
    """Identical variants differ by exactly 0, however noisy each is; disagreeing on 1 video of 100
    in each direction is no evidence either way."""
    rng = np.random.default_rng(0)
    a = rng.random((3, 100)) < 0.5
    assert stats.paired_bootstrap_diff(a, a)[:] == (0.0, 0.0, 0.0)
    b = a.copy()
    b[0, 0], b[1, 1] = ~b[0, 0], ~b[1, 1]
    assert not stats.paired_bootstrap_diff(a, b).excludes_zero
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_bootstrap_diff(a, b[:, :50])


def video_scores(right: list[bool], ids: list[str]):
    """Two-class VideoScores, label 0 everywhere, right where `right` says."""
    from models.late_fusion import VideoScores

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
    _, notes = compare_runs(results, [("two_stream", "rgb")], lambda run_id: scores.get(run_id) if "rgb" in run_id
                            else None)
    assert notes == ["two_stream − rgb: not compared, no per-video scores for two_stream seed 0, two_stream seed 1"]

    table = to_markdown(summarize(results), title="t", comparisons=[Comparison("two_stream", "rgb", "ucf101", 2, 40,
                                                                                0.4131, 0.35, 0.475),
                                                                     Comparison("flow", "rgb", "ucf101", 1, 40,
                                                                                0.05, -0.02, 0.125)], notes=notes)
    assert table.endswith(
        "\n### Comparisons\n\n"
        "- two_stream − rgb: +41.3 points [35.0, 47.5] * (2 seeds × 40 videos): two_stream > rgb holds\n"
        "- flow − rgb: +5.0 points [-2.0, 12.5] (1 seed × 40 videos): flow > rgb not shown\n"
        "- two_stream − rgb: not compared, no per-video scores for two_stream seed 0, two_stream seed 1\n"
        "\nDifference in video-level top-1 over the seeds both ran; 95% CI from a paired bootstrap over test "
        "videos and seeds (10000 resamples); * the CI excludes 0. A claim a > b holds when the CI lies above 0, "
        "is reversed below it, and is not shown when it holds 0.\n")


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

    def child(parent, variant, seed, top1, status="FINISHED", kind="variant"):
        tags = {"actionlab.kind": kind, "actionlab.study": "abl", "actionlab.variant": variant,
                "actionlab.dataset": "ucf101", "actionlab.seed": str(seed), "actionlab.selection": "val"}
        run_id = tracking.start_run(tracking_uri=uri, experiment="abl", run_name=variant, tags=tags,
                                    parent_run_id=parent)
        client.log_metric(run_id, "test/video_top1", top1)
        client.log_metric(run_id, "test/video_top5", min(1.0, top1 + 0.25))
        client.set_terminated(run_id, status=status)
        return run_id

    def study():
        return tracking.start_run(tracking_uri=uri, experiment="abl", run_name="study",
                                  tags={"actionlab.kind": "study", "actionlab.study": "abl"})

    old = study()
    old_rows = [ResultRow("abl", "rgb", "ucf101", 0, 0.1, 0.35, child(old, "rgb", 0, 0.1))]
    latest = study()
    rows = [ResultRow("abl", v, "ucf101", s, t, t + 0.25, child(latest, v, s, t))
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
    assert "| rgb | 55.0 ± 7.1 | [0.0, 100.0] | 80.0 ± 7.1 |" in out and "| flow | 70.0 | – | 95.0 |" in out
    assert is_png(tmp_path / "comparison.png")
    assert (tmp_path / "comparison.md").read_text() in out


def test_report_command_reads_tracking_settings_from_the_yaml(study_store, tmp_path, capsys):
    pytest.importorskip("orchestrator.config")
    yaml_path = tmp_path / "abl.yaml"
    yaml_path.write_text(f"name: abl\ndescription: RGB vs flow\ndata:\n  synth: true\n"
                         f"tracking:\n  tracking_uri: {study_store['uri']}\n  experiment: abl\n")
    assert run_report_command([str(yaml_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## RGB vs flow\n") and "| flow | 70.0 | – | 95.0 |" in out


def test_report_command_compares_from_run_files_or_artifacts(study_store, tmp_path, capsys):
    """study.compare from the YAML; rgb's scores from its run folder, flow's from its MLflow artifact."""
    import mlflow

    from models.late_fusion import save_scores
    from orchestrator.training.results import run_output_dir

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
    assert "- flow − rgb: +50.0 points [" in capsys.readouterr().out  # seed 0 only: rgb seed 1 has no partner


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

    one = [Comparison("two_stream", "rgb", "ucf101", 2, 40, 0.4125, 0.35, 0.475)]
    assert comparison_metrics(one) == pytest.approx({"compare/two_stream-rgb/diff": 41.25,
                                                     "compare/two_stream-rgb/ci_low": 35.0,
                                                     "compare/two_stream-rgb/ci_high": 47.5,
                                                     "compare/two_stream-rgb/holds": 1.0})
    two = [one[0], Comparison("k8", "k3", "long", 3, 80, -0.02, -0.1, 0.06)]
    assert set(comparison_metrics(two)) >= {"compare/two_stream-rgb/ucf101/diff", "compare/k8-k3/long/holds"}
    assert comparison_metrics(two)["compare/k8-k3/long/holds"] == 0.0
