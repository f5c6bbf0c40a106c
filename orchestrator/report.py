"""The papers' comparison table, rebuilt from MLflow alone.

    results_from_mlflow  ->  one ResultRow per finished variant run (video-level test accuracy)
    summarize            ->  one SummaryRow per (variant, dataset): mean and sample std over seeds
    to_markdown / write_report  ->  variant x dataset table ("62.3 ± 1.2") and a bar chart
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

from orchestrator.errors import UserError

PARENT_KINDS = ("study", "sweep")  # runs whose children form a table
CHILD_KINDS = ("variant", "trial")  # runs that are rows of it
TOP1, TOP5 = "test/video_top1", "test/video_top5"


class ResultRow(NamedTuple):
    study: str
    variant: str
    dataset: str
    seed: int
    top1: float  # video-level test accuracy in [0, 1]
    top5: float
    run_id: str


class SummaryRow(NamedTuple):
    variant: str
    dataset: str
    n: int  # runs (seeds) averaged
    top1_mean: float
    top1_std: float  # sample std (ddof=1); 0 when n == 1
    top5_mean: float
    top5_std: float


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(results: list[ResultRow]) -> list[SummaryRow]:
    """Mean and sample std over seeds of each (variant, dataset), in order of first appearance.

    Args:
        results: one row per run.
    Returns:
        One SummaryRow per (variant, dataset).
    """
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in results:
        groups.setdefault((row.variant, row.dataset), []).append(row)
    summary = []
    for (variant, dataset), rows in groups.items():
        top1 = _mean_std([r.top1 for r in rows])
        top5 = _mean_std([r.top5 for r in rows])
        summary.append(SummaryRow(variant, dataset, len(rows), *top1, *top5))
    return summary


def _cell(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def to_markdown(rows: list[SummaryRow], *, title: str) -> str:
    """A variant x dataset table of video-level top-1 and top-5 accuracy (%), like the papers'.

    Args:
        rows: from `summarize`.
        title: heading of the table.
    Returns:
        Markdown text ending in a newline; a missing (variant, dataset) cell is '–'.
    """
    variants = list(dict.fromkeys(r.variant for r in rows))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    cells = {(r.variant, r.dataset): r for r in rows}
    header = ["Variant"] + [f"{d} {m} (%)" for d in datasets for m in ("top-1", "top-5")]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |",
             "|---" + "|---:" * (len(header) - 1) + "|"]
    for variant in variants:
        values = [variant]
        for dataset in datasets:
            r = cells.get((variant, dataset))
            values += ([_cell(r.top1_mean, r.top1_std, r.n), _cell(r.top5_mean, r.top5_std, r.n)]
                       if r else ["–", "–"])
        lines.append("| " + " | ".join(values) + " |")
    runs = ", ".join(str(n) for n in sorted({r.n for r in rows}))
    lines += ["", f"Video-level test accuracy; mean ± sample std over seeds (runs per cell: {runs})."]
    return "\n".join(lines) + "\n"


def _latest_parent(client, experiment_id: str) -> str | None:
    """The most recently started study or sweep run (MLflow's filter has no IN for tags)."""
    latest = []
    for kind in PARENT_KINDS:
        latest += client.search_runs([experiment_id], filter_string=f"tags.`actionlab.kind` = '{kind}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
    return max(latest, key=lambda r: r.info.start_time).info.run_id if latest else None


def _result_row(run) -> ResultRow | None:
    """A finished child run as a row; None when it logged no test accuracy."""
    tags, metrics = run.data.tags, run.data.metrics
    if TOP1 not in metrics:
        return None
    return ResultRow(study=tags.get("actionlab.study", ""), variant=tags["actionlab.variant"],
                     dataset=tags["actionlab.dataset"], seed=int(tags["actionlab.seed"]),
                     top1=metrics[TOP1], top5=metrics.get(TOP5, float("nan")), run_id=run.info.run_id)


def results_from_mlflow(tracking_uri: str, experiment: str, *, parent_run_id: str | None = None) -> list[ResultRow]:
    """The finished variant/trial runs under one study (or sweep) run, oldest first.

    Args:
        tracking_uri: from `config.resolve_tracking_uri`.
        experiment: MLflow experiment name.
        parent_run_id: the study run; None: the latest study or sweep run of the experiment.
    Returns:
        One ResultRow per FINISHED child run with test/video_top1 (FAILED/KILLED/RUNNING
        runs are left out); [] when there is no parent run or no such child.
    Raises:
        UserError: the experiment does not exist.
    """
    import mlflow

    from orchestrator.tracking import PARENT_TAG, search_all_runs

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise UserError(f"no MLflow experiment '{experiment}' in {tracking_uri}; "
                        f"existing: {', '.join(names) or 'none'}")
    parent_run_id = parent_run_id or _latest_parent(client, found.experiment_id)
    if parent_run_id is None:
        return []
    runs = search_all_runs(client, [found.experiment_id],
                           f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'FINISHED'",
                           order_by=["attributes.start_time ASC"])
    rows = [_result_row(r) for r in runs if r.data.tags.get("actionlab.kind") in CHILD_KINDS]
    return [row for row in rows if row is not None]


def write_report(results: list[ResultRow], out_dir: Path, *, title: str) -> dict[str, Path]:
    """Write the comparison table and its bar chart.

    Args:
        results: one row per run.
        out_dir: created if missing.
        title: table and chart heading.
    Returns:
        {'markdown': out_dir/comparison.md, 'plot': out_dir/comparison.png}.
    """
    from orchestrator.plots import plot_comparison

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    markdown = out_dir / "comparison.md"
    markdown.write_text(to_markdown(rows, title=title))
    return {"markdown": markdown, "plot": plot_comparison(rows, out_dir / "comparison.png", title=title)}
