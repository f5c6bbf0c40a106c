"""`actionlab ablate`: run a study's variants on the cluster and write the papers' comparison table."""
import argparse

from orchestrator.commands._common import add_experiment_arguments, connect_ray, load_config
from orchestrator.tracking import ui_line

HELP = "Run an ablation study (RGB / flow / two-stream, +-pretraining, seeds) and write its table."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study")
    parser.add_argument("--out", default=None, help="folder for comparison.md/.png (default: under storage)")


def run(args: argparse.Namespace) -> int:
    from orchestrator.errors import UserError
    from orchestrator.progress import console
    from orchestrator.preflight import preflight
    from orchestrator.training.prepare import prepare_data
    from orchestrator.plan import plan
    from orchestrator.study import run_study

    cfg = load_config(args)
    if not cfg.study:
        raise UserError(f"{args.experiment}: has no 'study:' section; add variants (see experiments/quickstart.yaml), "
                        "or use `actionlab train`")
    planned = preflight(plan(cfg))  # every run, checked before anything starts
    with console(cfg.scaling.storage_path, "ablate", verbose=args.verbose) as rows, connect_ray(args.address):
        with rows.uncaptured():  # our own data preparation, on screen; Ray's output in the log
            prepare_data(planned)
        outcome = run_study(planned, resume=args.resume, out_dir=args.out)
    print(outcome["markdown"])
    print(f"table: {outcome['paths']['markdown']}  chart: {outcome['paths']['plot']}")
    print(f"MLflow parent run {outcome['parent_run_id']}; `actionlab ui` to browse, "
          f"`actionlab report {args.experiment}` to rebuild the table")
    print(ui_line(cfg.tracking.tracking_uri, cfg.experiment_name))
    return 0
