"""Metrics on hand-computed examples, the comparison table, its MLflow round trip, plots and commands."""
import argparse

import numpy as np
import pytest

from orchestrator import metrics as M
from orchestrator import plots
from orchestrator.errors import UserError
from orchestrator.report import ResultRow, SummaryRow, summarize, to_markdown, write_report

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


def test_classification_metrics_names_and_clipped_top5():
    result = M.classification_metrics(LABELS[:3], SCORES[:3, :3], prefix="test/video_")
    assert result == {"test/video_top1": pytest.approx(1 / 3), "test/video_top5": 1.0,
                      "test/video_mean_class_acc": pytest.approx(1 / 3)}


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
    assert summary[1] == SummaryRow("flow", "ucf101", 1, 0.70, 0.0, 0.95, 0.0)


def test_to_markdown_exact_text():
    expected = (
        "## Two-stream ablation\n"
        "\n"
        "| Variant | ucf101 top-1 (%) | ucf101 top-5 (%) | hmdb51 top-1 (%) | hmdb51 top-5 (%) |\n"
        "|---|---:|---:|---:|---:|\n"
        "| rgb | 62.0 ± 2.0 | 92.0 ± 2.0 | 30.0 | 60.0 |\n"
        "| flow | 70.0 | 95.0 | – | – |\n"
        "\n"
        "Video-level test accuracy; mean ± sample std over seeds (runs per cell: 1, 3).\n")
    assert to_markdown(summarize(RESULTS), title="Two-stream ablation") == expected


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
                "actionlab.dataset": "ucf101", "actionlab.seed": str(seed)}
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
    assert "| rgb | 55.0 ± 7.1 | 80.0 ± 7.1 |" in out and "| flow | 70.0 | 95.0 |" in out
    assert is_png(tmp_path / "comparison.png")
    assert (tmp_path / "comparison.md").read_text() in out


def test_report_command_reads_tracking_settings_from_the_yaml(study_store, tmp_path, capsys):
    pytest.importorskip("orchestrator.config")
    yaml_path = tmp_path / "abl.yaml"
    yaml_path.write_text(f"name: abl\ndescription: RGB vs flow\ndata:\n  synth: true\n"
                         f"tracking:\n  tracking_uri: {study_store['uri']}\n  experiment: abl\n")
    assert run_report_command([str(yaml_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## RGB vs flow\n") and "| flow | 70.0 | 95.0 |" in out


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
