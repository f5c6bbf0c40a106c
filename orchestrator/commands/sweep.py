"""`actionlab sweep`: a Ray Tune sweep (grid / random / ASHA) over an experiment's `sweep:` section."""
import argparse

from orchestrator.commands._common import add_experiment_arguments, connect_ray, load_config
from orchestrator.tracking import ui_line

HELP = "Sweep hyperparameters (e.g. fusion x segments) with Ray Tune; one MLflow child run per trial."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep (Tuner.restore)")


def run(args: argparse.Namespace) -> int:
    from orchestrator.errors import UserError
    from orchestrator.progress import console
    from orchestrator.preflight import preflight
    from orchestrator.training.prepare import prepare_data
    from orchestrator.plan import plan
    from orchestrator.study import run_sweep

    cfg = load_config(args)
    if not cfg.sweep:
        raise UserError(f"{args.experiment}: has no 'sweep:' section; add one (see "
                        "experiments/sweep_fusion_segments.yaml), or use `actionlab train`")
    planned = preflight(plan(cfg))  # every run, checked before anything starts
    with console(cfg.scaling.storage_path, "sweep", verbose=args.verbose) as rows, connect_ray(args.address):
        with rows.uncaptured():  # our own data preparation, on screen; Ray's output in the log
            prepare_data(planned)
        results, _ = run_sweep(planned, resume=args.resume)
    frame = results.get_dataframe()
    columns = [c for c in frame.columns if c.startswith("config/") or c in (cfg.sweep.metric, "epoch")]
    print(frame[columns].sort_values(cfg.sweep.metric, ascending=cfg.sweep.mode == "min").to_string(index=False))
    best = results.get_best_result()
    print(f"best: {best.metrics.get(cfg.sweep.metric)} with {best.config}")
    print(ui_line(cfg.tracking.tracking_uri, cfg.experiment_name))
    return 0
