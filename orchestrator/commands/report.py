"""`actionlab report`: rebuild a study's comparison table from MLflow alone."""
import argparse
from pathlib import Path

HELP = "Rebuild a study's comparison table (mean ± std over seeds) from its MLflow runs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="study YAML (e.g. experiments/quickstart.yaml) or an MLflow experiment name")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: the YAML's tracking.tracking_uri, else sqlite:///mlflow.db)")
    parser.add_argument("--parent-run-id", default=None,
                        help="the study/sweep run to report (default: the experiment's latest one)")
    parser.add_argument("--out", default=None, help="also write comparison.md and comparison.png to this folder")


def resolve_experiment(experiment: str, tracking_uri: str | None) -> tuple[str, str, str]:
    """(tracking URI, MLflow experiment name, title) from a YAML path or an experiment name.

    A --tracking-uri given on the command line wins over the YAML's.
    """
    from orchestrator.config import resolve_tracking_uri

    if experiment.endswith((".yaml", ".yml")) or Path(experiment).is_file():
        from orchestrator.preflight import load_experiment

        cfg = load_experiment(experiment)  # no preflight: the data need not be here, MLflow is
        uri = tracking_uri or cfg.tracking.tracking_uri
        return resolve_tracking_uri(uri), cfg.experiment_name, cfg.description or cfg.name
    return resolve_tracking_uri(tracking_uri), experiment, experiment


def run(args: argparse.Namespace) -> int:
    from orchestrator.errors import UserError
    from orchestrator.report import results_from_mlflow, summarize, to_markdown, write_report

    uri, experiment, title = resolve_experiment(args.experiment, args.tracking_uri)
    results = results_from_mlflow(uri, experiment, parent_run_id=args.parent_run_id)
    if not results:
        which = f"run {args.parent_run_id}" if args.parent_run_id else "the latest study or sweep run"
        raise UserError(f"experiment '{experiment}' ({uri}): {which} has no finished variant runs with "
                        "test/video_top1; run `actionlab ablate` first, or wait for its variants to finish")
    print(to_markdown(summarize(results), title=title), end="")
    if args.out:
        paths = write_report(results, Path(args.out), title=title)
        print(f"wrote {paths['markdown']} and {paths['plot']}")
    return 0
