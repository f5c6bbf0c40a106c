"""`actionlab report`: rebuild a study's comparison table from MLflow alone."""
import argparse
import sys
from pathlib import Path

HELP = ("Rebuild a study's comparison table (mean ± std, seed 95% CI and 95% CI with the test list; "
        "study.compare differences with their CI, p and Holm's p) from MLflow.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="study YAML (e.g. experiments/quickstart.yaml) or an MLflow experiment name")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: the YAML's tracking.tracking_uri, else sqlite:///mlflow.db)")
    parser.add_argument("--parent-run-id", default=None,
                        help="the study/sweep run to report (default: the experiment's latest one)")
    parser.add_argument("--out", default=None, help="also write comparison.md and comparison.png to this folder")


def resolve_experiment(experiment: str, tracking_uri: str | None) -> tuple[str, str, str, object | None]:
    """(tracking URI, MLflow experiment name, title, the checked config or None) from a YAML path or
    an experiment name.

    A --tracking-uri given on the command line wins over the YAML's.
    """
    from orchestrator.config import resolve_tracking_uri

    if experiment.endswith((".yaml", ".yml")) or Path(experiment).is_file():
        from orchestrator.preflight import load_experiment

        cfg = load_experiment(experiment)  # no preflight: the data need not be here, MLflow is
        uri = tracking_uri or cfg.tracking.tracking_uri
        return resolve_tracking_uri(uri), cfg.experiment_name, cfg.description or cfg.name, cfg
    return resolve_tracking_uri(tracking_uri), experiment, experiment, None


def run(args: argparse.Namespace) -> int:
    import tempfile

    from orchestrator.errors import UserError
    from orchestrator.tracking import hide_password
    from orchestrator.report import (compare_runs, results_from_mlflow, scores_reader, summarize, to_markdown,
                                     write_report)

    uri, experiment, title, cfg = resolve_experiment(args.experiment, args.tracking_uri)
    results = results_from_mlflow(uri, experiment, parent_run_id=args.parent_run_id)
    if not results:
        which = f"run {args.parent_run_id}" if args.parent_run_id else "the latest study or sweep run"
        raise UserError(f"experiment '{experiment}' ({hide_password(uri)}): {which} has no finished variant runs with "
                        "test/video_top1; run `actionlab ablate` first, or wait for its variants to finish")
    # study.compare comes from the YAML; each run's per-video scores from its folder, else its artifact
    compare = cfg.study.compare if cfg is not None and cfg.study else []
    comparisons, notes = [], []
    if compare:
        with tempfile.TemporaryDirectory() as cache:
            scores_of = scores_reader(cfg.scaling.storage_path, uri, Path(cache))
            comparisons, notes = compare_runs(results, compare, scores_of)
    expected = cfg.study.expected if cfg is not None and cfg.study else {}
    print(to_markdown(summarize(results), title=title, comparisons=comparisons, notes=notes, expected=expected),
          end="")
    if cfg is None:
        print("(no comparisons: they are read from the study YAML's study.compare; give its path)", file=sys.stderr)
    if args.out:
        paths = write_report(results, Path(args.out), title=title, comparisons=comparisons, notes=notes,
                             expected=expected)
        print(f"wrote {paths['markdown']} and {paths['plot']}")
    return 0
