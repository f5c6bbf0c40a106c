"""`actionlab train`: one training run of an experiment with Ray Train, tracked in MLflow."""
import argparse

from orchestrator.commands._common import add_experiment_arguments, connect_ray, load_config

HELP = "Train one experiment (its data/model/optim sections) data-parallel with Ray Train."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from orchestrator import tracking
    from orchestrator.plan import plan
    from orchestrator.preflight import preflight
    from orchestrator.progress import console, train_rows
    from orchestrator.training.driver import check_decode_device, train_run
    from orchestrator.training.prepare import prepare_data

    planned = preflight(plan(load_config(args), kind="train"))  # the base run alone
    (cfg,) = (run.config for run in planned.runs.values())
    with console(cfg.scaling.storage_path, "train", verbose=args.verbose) as rows, connect_ray(args.address):
        check_decode_device(cfg)
        tracking.reap_stale_runs(cfg.tracking.tracking_uri, cfg.experiment_name)
        with rows.uncaptured():  # our own data preparation, on screen; Ray's output in the log
            prepare_data(planned)
        with train_rows(rows, cfg.name, cfg.optim.epochs) as report_epochs:
            outcome = train_run(cfg, callbacks=[report_epochs])
    print(f"MLflow run {outcome.run_id} ({cfg.experiment_name})")
    print(tracking.ui_line(cfg.tracking.tracking_uri, cfg.experiment_name))
    for key in sorted(k for k in outcome.metrics if k.startswith("test/")):
        print(f"  {key:24s} {outcome.metrics[key]:.4f}")
    return 0
