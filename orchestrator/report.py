"""The papers' comparison table, rebuilt from MLflow alone.

    results_from_mlflow  ->  one ResultRow per finished variant run (video-level test accuracy, test videos)
    summarize            ->  one SummaryRow per (variant, dataset): mean, sample std, the seed 95% CI (Student's
                             t over seeds, on one fixed test list) and a 95% CI with the test list's sampling too
    compare_runs         ->  one Comparison per study.compare pair and dataset: a - b with a 95% CI over test
                             videos (paired bootstrap) and seeds (Student's t), its p, and Holm's p over the family
    to_markdown / write_report  ->  variant x dataset table ("62.3 ± 1.2", "[58.1, 66.5]"), the
                             comparisons, and a bar chart with seed 95% CI error bars

Which interval says what (orchestrator/stats.py):
- seed 95% CI: what other seeds could give on these same test videos. On 40 videos two seeds that
  both score 85.0 get [85.0, 85.0]: that is not how sure 85.0 is.
- 95% CI (seeds + test list): what another test list of as many videos, and other seeds, could give.
- a comparison's CI holds both as well, and its claim is judged twice: alone, and with Holm's
  correction for testing several claims at once (5 independent claims at 95% each would show a false
  one 1 - 0.95^5 = 23% of the time).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from orchestrator.errors import UserError
from orchestrator.runs import SCORES_FILE, VideoScores, load_scores, run_output_dir
from orchestrator.stats import BOOTSTRAP_RESAMPLES, holm, mean_ci, paired_bootstrap_diff, t_975, widen, wilson_ci

PARENT_KINDS = ("study", "sweep")  # runs whose children form a table
CHILD_KINDS = ("variant", "trial")  # runs that are rows of it
TOP1, TOP5 = "test/video_top1", "test/video_top5"
FEW_SEEDS = 5  # below this, the seed part of an interval is wide (Student's t with S - 1 df): the report says so


class ResultRow(NamedTuple):
    study: str
    variant: str
    dataset: str
    seed: int
    top1: float  # video-level test accuracy in [0, 1]
    top5: float  # NaN where the run logged none: too few classes for it to mean anything (metrics.reports_top_k)
    run_id: str
    selection: str = "val"  # what it selected on (tag actionlab.selection): val, or test (no data.val)
    rule: str = ""  # a late fusion's rule, e.g. "0.45 softmax (val)"
    n_videos: int = 0  # test videos scored (its MLflow test dataset input); 0: not logged
    source: str = ""  # the study variant it was fine-tuned from (tag actionlab.source_variant); '' from scratch


class SummaryRow(NamedTuple):
    variant: str
    dataset: str
    n: int  # runs (seeds) averaged
    top1_mean: float
    top1_std: float  # sample std (ddof=1); 0 when n == 1
    top5_mean: float
    top5_std: float
    top1_low: float = math.nan  # seed 95% CI: of the mean over seeds (Student's t), one test list; NaN when n == 1
    top1_high: float = math.nan
    top5_low: float = math.nan
    top5_high: float = math.nan
    selected_on_test: bool = False  # some run had no val list: selection (and fusion weights) saw test
    rules: tuple[str, ...] = ()  # late fusion: the rule of each seed's run
    n_videos: int = 0  # test videos of each run (the fewest, if they differ); 0: some run did not log it
    # 95% CI with the test list's sampling too: Wilson on n_videos, widened by the seed CI's half-width;
    # NaN when n == 1 (the seeds' spread is unknown) or n_videos is 0
    top1_test_low: float = math.nan
    top1_test_high: float = math.nan
    source: str = ""  # the study variant its runs were fine-tuned from ('' from scratch)


class Comparison(NamedTuple):
    """Variant a minus variant b on one data set, over the seeds both ran (fractions; x100 for points)."""
    a: str
    b: str
    dataset: str
    n_seeds: int
    n_videos: int
    diff: float
    low: float  # 95% CI over test videos (paired bootstrap) and seeds (Student's t); NaN with one seed
    high: float
    p: float = math.nan  # two-sided p of that CI (stats.paired_bootstrap_diff); NaN with one seed
    p_holm: float = math.nan  # p adjusted by Holm-Bonferroni over the report's comparisons (compare_runs)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def verdict(self) -> str:
        """The claim "a beats b": holds (CI above 0), reversed (below 0) or not shown (CI holds 0, or none)."""
        return "holds" if self.low > 0 else "reversed" if self.high < 0 else "not shown"

    @property
    def holm_verdict(self) -> str:
        """The verdict with the family in mind: as `verdict` where Holm's p is below 0.05, else not shown."""
        return self.verdict if self.p_holm < 0.05 else "not shown"


def summarize(results: list[ResultRow]) -> list[SummaryRow]:
    """Mean, sample std, seed 95% CI and the 95% CI with the test list of each (variant, dataset), in order
    of first appearance.

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
        top1, top5 = mean_ci([r.top1 for r in rows]), mean_ci([r.top5 for r in rows])
        n_videos = min(r.n_videos for r in rows)
        test_low = test_high = math.nan
        if len(rows) > 1 and n_videos > 0 and 0 <= top1.mean <= 1:  # the test list's, widened by the seeds'
            test_low, test_high = widen(top1.mean, *wilson_ci(top1.mean, n_videos), top1.high - top1.mean)
        summary.append(SummaryRow(variant, dataset, len(rows), top1.mean, top1.std, top5.mean, top5.std,
                                  top1.low, top1.high, top5.low, top5.high,
                                  any(r.selection == "test" for r in rows), tuple(r.rule for r in rows if r.rule),
                                  n_videos, test_low, test_high, rows[0].source))
    return summary


def _correct(scores: VideoScores) -> dict[str, bool]:
    """{video id: top-1 right} of one run's per-video scores."""
    right = np.asarray(scores.scores).argmax(axis=1) == np.asarray(scores.labels)
    return dict(zip(np.asarray(scores.video_ids).tolist(), right.tolist()))


def compare_runs(results: list[ResultRow], pairs, scores_of: Callable[[str], VideoScores | None], *,
                 resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[list[Comparison], list[str]]:
    """Each pair's top-1 difference per data set, with its 95% CI and p (`stats.paired_bootstrap_diff`),
    and Holm's p over all the comparisons returned: they are one family of claims.

    The two variants are paired on the seeds both ran and on their test videos (by video id).

    Args:
        results: one row per run.
        pairs: (a, b) variant names, e.g. `study.compare`.
        scores_of: run id -> its per-video `VideoScores`, or None when they cannot be had.
        resamples: bootstrap draws.
    Returns:
        (one Comparison per pair and data set both variants ran on,
         a sentence for each pair and data set that could not be compared, saying why).
    """
    runs = {(r.variant, r.dataset, r.seed): r.run_id for r in results}  # a study has one run per key
    datasets = list(dict.fromkeys(r.dataset for r in results))
    comparisons, notes = [], []
    for a, b in pairs:
        for dataset in datasets:
            seeds = sorted({s for v, d, s in runs if v == a and d == dataset}
                           & {s for v, d, s in runs if v == b and d == dataset})
            if not seeds:
                continue
            where = f"{a} − {b}" + (f" ({dataset})" if len(datasets) > 1 else "")
            correct = {(v, s): scores_of(runs[(v, dataset, s)]) for v in (a, b) for s in seeds}
            missing = [f"{v} seed {s}" for (v, s), scores in correct.items() if scores is None]
            if missing:
                notes.append(f"{where}: not compared, no per-video scores for {', '.join(missing)}")
                continue
            correct = {key: _correct(scores) for key, scores in correct.items()}
            videos = sorted(correct[(a, seeds[0])])
            if any(sorted(c) != videos for c in correct.values()):
                notes.append(f"{where}: not compared, the runs scored different test videos")
                continue
            a_right, b_right = (np.array([[correct[(v, s)][video] for video in videos] for s in seeds])
                                for v in (a, b))  # (S, N) each
            d = paired_bootstrap_diff(a_right, b_right, resamples=resamples)
            comparisons.append(Comparison(a, b, dataset, len(seeds), len(videos), d.diff, d.low, d.high, d.p))
    adjusted = holm([c.p for c in comparisons])
    return [c._replace(p_holm=p) for c, p in zip(comparisons, adjusted)], notes


def comparison_metrics(comparisons: list[Comparison]) -> dict[str, float]:
    """Each comparison as the study's parent-run metrics: compare/<a>-<b>[/<dataset>]/diff, .../ci_low,
    .../ci_high (points; NaN with one seed), .../p, .../p_holm and .../holds, .../holds_holm (1 holds,
    -1 reversed, 0 not shown)."""
    several = len({c.dataset for c in comparisons}) > 1
    code = {"holds": 1.0, "reversed": -1.0}
    out = {}
    for c in comparisons:
        key = f"compare/{c.a}-{c.b}" + (f"/{c.dataset}" if several else "")
        out.update({f"{key}/diff": 100 * c.diff, f"{key}/ci_low": 100 * c.low, f"{key}/ci_high": 100 * c.high,
                    f"{key}/p": c.p, f"{key}/p_holm": c.p_holm,
                    f"{key}/holds": code.get(c.verdict, 0.0), f"{key}/holds_holm": code.get(c.holm_verdict, 0.0)})
    return out


def _cell(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):  # a top-5 its runs did not log
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def _ci_cell(low: float, high: float) -> str:
    """An interval of an accuracy, clipped to what one can be (2-3 seeds give wide ones)."""
    return "–" if math.isnan(low) else f"[{100 * max(low, 0.0):.1f}, {100 * min(high, 1.0):.1f}]"


def _p_cell(p: float) -> str:
    return "–" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _few_seeds_note(seed_counts) -> list[str]:
    """A line saying how wide Student's t makes the seed part with fewer than FEW_SEEDS seeds, if any."""
    few = sorted({n for n in seed_counts if 1 < n < FEW_SEEDS})
    if not few:
        return []
    quantiles = ", ".join(f"t = {t_975(n - 1):.2f} with {n} seeds" for n in few)
    return ["", f"**Fewer than {FEW_SEEDS} seeds**: the seeds' part of an interval is Student's t with S − 1 degrees "
                f"of freedom ({quantiles}; 1.96 would be the normal's), so it is wide: a spread measured on so "
                f"few seeds is itself uncertain. {FEW_SEEDS} seeds or more narrow it; a verdict on fewer is "
                "indicative at best."]


def _comparison_lines(comparisons: list[Comparison], notes: list[str], resamples: int) -> list[str]:
    several = len({c.dataset for c in comparisons}) > 1
    lines = ["", "### Comparisons", ""]
    for c in comparisons:
        where = f" ({c.dataset})" if several else ""
        seeds = f"{c.n_seeds} seed{'s' * (c.n_seeds > 1)}"
        # a difference of accuracies lies in [-100, 100] points; t with 1-2 df can reach past that
        interval = (f"[{100 * max(c.low, -1.0):.1f}, {100 * min(c.high, 1.0):.1f}]{' *' if c.excludes_zero else ''}"
                    if not math.isnan(c.low) else "no CI (one seed: the seeds' spread is unknown)")
        lines.append(f"- {c.a} − {c.b}{where}: {100 * c.diff:+.1f} points {interval} ({seeds} × {c.n_videos} "
                     f"videos; p {_p_cell(c.p)}, Holm {_p_cell(c.p_holm)}): {c.a} > {c.b} {c.verdict}, "
                     f"with Holm {c.holm_verdict}")
    lines += [f"- {note}" for note in notes]
    family = sum(not math.isnan(c.p) for c in comparisons)
    lines += ["", "Difference in video-level top-1 over the seeds both ran. 95% CI: a paired bootstrap over the "
                  f"test videos ({resamples} resamples: what another test list could give) and Student's t over "
                  "the seeds' differences (what other seeds could give), added in quadrature; * the CI excludes 0. "
                  "p: the smallest level whose interval, built the same way, excludes 0. A claim a > b holds when "
                  "the CI lies above 0, is reversed below it, and is not shown when it holds 0. The comparisons "
                  f"are a family of {family} claim{'s' * (family != 1)}: Holm's p (Holm–Bonferroni) is the p "
                  "adjusted for testing them all, and the verdict with Holm stands only where it is below 0.05."]
    return lines


_METRIC_NAMES = {"test/video_top1": "video top-1", "test/video_mean_class_acc": "mean class accuracy"}


def to_markdown(rows: list[SummaryRow], *, title: str, comparisons: list[Comparison] = (),
                notes: list[str] = (), resamples: int = BOOTSTRAP_RESAMPLES, expected: dict | None = None) -> str:
    """A variant x dataset table of video-level top-1 (with its seed 95% CI and its 95% CI with the test
    list) and top-5 accuracy (%), like the papers', then the comparisons when there are any. A data set
    gets a top-5 column only where its runs logged top-5, which they do on enough classes only
    (`metrics.reports_top_k`).

    Args:
        rows: from `summarize`.
        title: heading of the table.
        comparisons, notes: from `compare_runs`.
        resamples: the bootstrap draws the comparisons used (for the caption).
        expected: variant -> the paper's figure (`study.expected`: .top1 in %, .source), a column beside
            the measured one.
    Returns:
        Markdown text ending in a newline; a missing (variant, dataset) cell is '–'; a variant
        selected on the test list (no data.val) is marked † and says so below.
    """
    expected = expected or {}
    variants = list(dict.fromkeys(r.variant for r in rows))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    cells = {(r.variant, r.dataset): r for r in rows}
    # each variant on its own data set (a claims study): one row per variant with a data-set column,
    # instead of a column group per data set that every other row leaves empty
    long = len(datasets) > 1 and len(rows) == len(variants)
    groups = [""] if long else datasets
    # top-5 only for a data set whose runs logged it (enough classes: metrics.reports_top_k); the long
    # form's one group serves every data set
    columns = {g: ("top-1 (%)", "top-1 seed 95% CI", "top-1 95% CI (seeds + test list)")
               + ("top-5 (%)",) * any(not math.isnan(r.top5_mean) for r in rows if long or r.dataset == g)
               for g in groups}
    header = (["Variant"] + (["Data set"] if long else [])
              + [f"{g} {h}".strip() for g in groups for h in columns[g]]
              + (["paper top-1 (%)"] if expected else []))
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |",
             "|---" + "|---" * long + "|---:" * (len(header) - 1 - long) + "|"]
    for variant in variants:
        on_test = any(r.selected_on_test for r in rows if r.variant == variant)
        values = [variant + (" †" if on_test else "")]
        for dataset in ([next(r.dataset for r in rows if r.variant == variant)] if long else datasets):
            r = cells.get((variant, dataset))
            shown = {"top-1 (%)": _cell(r.top1_mean, r.top1_std, r.n),
                     "top-1 seed 95% CI": _ci_cell(r.top1_low, r.top1_high),
                     "top-1 95% CI (seeds + test list)": _ci_cell(r.top1_test_low, r.top1_test_high),
                     "top-5 (%)": _cell(r.top5_mean, r.top5_std, r.n)} if r else {}
            values += ([dataset] if long else []) + [shown.get(h, "–") for h in columns["" if long else dataset]]
        if expected:
            figure = expected.get(variant)
            values.append("–" if figure is None else f"{figure.top1:.1f}" + " ‡" * (figure.metric != "test/video_top1"))
        lines.append("| " + " | ".join(values) + " |")
    runs = ", ".join(str(n) for n in sorted({r.n for r in rows}))
    videos = ", ".join(str(n) for n in sorted({r.n_videos for r in rows if r.n_videos}))
    lines += ["", f"Video-level test accuracy of what each run selected on its val list (data.val; the test list "
                  f"is scored once, at the end); mean ± sample std over seeds (runs per cell: {runs}). "
                  "Seed 95% CI: Student's t over the seeds, on this one test list: what other seeds could give on "
                  "these videos, not how sure the accuracy is. 95% CI (seeds + test list): what another test list "
                  f"of as many videos ({videos or 'not logged'}) could give too: a Wilson interval on the test "
                  "videos, widened in quadrature by the seed CI's half-width. Both clipped to 0–100; – for one "
                  "seed (or test videos not logged)."]
    if any(r.selected_on_test for r in rows):
        lines += ["", "† **selected on test**: these runs had no val list (data.val: null), so their per-epoch "
                      "scores, any sweep and any late-fusion weight chosen for them saw the test list: optimistic."]
    for r in rows:
        if r.rules:
            where = f" ({r.dataset})" if len(datasets) > 1 else ""
            lines.append(f"- {r.variant}{where} fusion rule (weight of the first stream, mode), per seed: "
                         + "; ".join(r.rules))
    for r in rows:  # a source that did not learn its own task transfers nothing: its accuracy goes beside
        if r.source:
            where = f" ({r.dataset})" if len(datasets) > 1 else ""
            scored = "; ".join(f"{_cell(s.top1_mean, s.top1_std, s.n)} % on {s.dataset}"
                               for s in rows if s.variant == r.source) or "not in this table"
            lines.append(f"- {r.variant}{where} is fine-tuned from {r.source}, whose own runs scored {scored}")
    lines += [f"- paper, {variant}: {figure.top1:.1f}% {_METRIC_NAMES[figure.metric]} ({figure.source})"
              for variant, figure in expected.items()]
    if any(figure.metric != "test/video_top1" for figure in expected.values()):
        lines.append("- ‡ the paper's figure is mean class accuracy; the runs log theirs as "
                     "test/video_mean_class_acc (MLflow), beside the video top-1 above")
    if comparisons or notes:
        lines += _comparison_lines(list(comparisons), list(notes), resamples)
    lines += _few_seeds_note([r.n for r in rows] + [c.n_seeds for c in comparisons])
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
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    if TOP1 not in metrics:
        return None
    rule = (f"{float(params['weight']):.2f} {params['mode']} ({tags.get('actionlab.fusion_chosen_on', 'fixed')})"
            if tags.get("actionlab.fusion") == "late" and "weight" in params else "")
    return ResultRow(study=tags.get("actionlab.study", ""), variant=tags["actionlab.variant"],
                     dataset=tags["actionlab.dataset"], seed=int(tags["actionlab.seed"]),
                     top1=metrics[TOP1], top5=metrics.get(TOP5, float("nan")), run_id=run.info.run_id,
                     selection=tags.get("actionlab.selection", "test"), rule=rule, n_videos=_test_videos(run),
                     source=tags.get("actionlab.source_variant", ""))


def _test_videos(run) -> int:
    """The number of test videos a run logged with its test dataset input (tracking.log_dataset_inputs);
    0 when it logged none."""
    from orchestrator.tracking import DATASET_CONTEXT_TAG

    for found in (run.inputs.dataset_inputs if run.inputs else []):
        if any(tag.key == DATASET_CONTEXT_TAG and tag.value == "test" for tag in found.tags):
            try:
                return int(json.loads(found.dataset.profile or "{}").get("num_videos", 0))
            except (ValueError, TypeError, AttributeError):  # not a profile of ours
                return 0
    return 0


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

    from orchestrator.tracking import PARENT_TAG, hide_password, search_all_runs

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments()]
        raise UserError(f"no MLflow experiment '{experiment}' in {hide_password(tracking_uri)}; "
                        f"existing: {', '.join(names) or 'none'}")
    parent_run_id = parent_run_id or _latest_parent(client, found.experiment_id)
    if parent_run_id is None:
        return []
    runs = search_all_runs(client, [found.experiment_id],
                           f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'FINISHED'",
                           order_by=["attributes.start_time ASC"])
    rows = [_result_row(r) for r in runs if r.data.tags.get("actionlab.kind") in CHILD_KINDS]
    return [row for row in rows if row is not None]


def scores_reader(storage_path: str | Path, tracking_uri: str | None = None,
                  cache_dir: Path | None = None) -> Callable[[str], VideoScores | None]:
    """run id -> its per-video VideoScores: the run's own file (runs.run_output_dir), else
    (with tracking_uri and cache_dir) its logged scores.npz artifact; None when neither exists."""
    def read(run_id: str):
        local = run_output_dir(storage_path, run_id) / SCORES_FILE
        if local.is_file():
            return load_scores(local)
        if tracking_uri is None or cache_dir is None:
            return None
        from orchestrator.tracking import fetch_artifact
        try:
            return load_scores(fetch_artifact(tracking_uri, run_id, SCORES_FILE, Path(cache_dir) / run_id))
        except UserError:
            return None

    return read


def write_report(results: list[ResultRow], out_dir: Path, *, title: str, comparisons: list[Comparison] = (),
                 notes: list[str] = (), expected: dict | None = None) -> dict[str, Path]:
    """Write the comparison table (with the comparisons, if any) and its bar chart.

    Args:
        results: one row per run.
        out_dir: created if missing.
        title: table and chart heading.
        comparisons, notes: from `compare_runs`.
        expected: `study.expected` (see `to_markdown`).
    Returns:
        {'markdown': out_dir/comparison.md, 'plot': out_dir/comparison.png}.
    """
    from orchestrator.plots import plot_comparison

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    markdown = out_dir / "comparison.md"
    markdown.write_text(to_markdown(rows, title=title, comparisons=comparisons, notes=notes, expected=expected))
    return {"markdown": markdown, "plot": plot_comparison(rows, out_dir / "comparison.png", title=title)}
