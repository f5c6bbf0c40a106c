"""Arguments and steps shared by the commands that run experiments (train, sweep, ablate)."""
import argparse
from contextlib import contextmanager

import yaml


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML, e.g. experiments/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field, e.g. --set optim.epochs=2 (repeatable)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to attach to (e.g. auto, ray://head:10001); default: start a local one")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's and Tune's own output live (default: one row per run on screen, "
                             "their output in <storage_path>/logs/<command>-<time>.log)")


def load_config(args: argparse.Namespace):
    """The experiment with --set overrides applied, parsed and checked (not yet preflighted)."""
    from orchestrator.config import with_overrides
    from orchestrator.errors import UserError
    from orchestrator.preflight import load_experiment

    cfg = load_experiment(args.experiment)
    overrides = {}
    for item in args.overrides:
        field, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected FIELD=VALUE, e.g. --set optim.epochs=2")
        overrides[field.strip()] = yaml.safe_load(value)
    return with_overrides(cfg, overrides, where=f"{args.experiment} (--set)") if overrides else cfg


@contextmanager
def connect_ray(address: str | None):
    """Ray for the command's duration; the connection it opened is closed at the end, inside the
    command's `progress.console`, so the workers' last forwarded lines land in its log too."""
    import ray

    opened = not ray.is_initialized()
    if opened:
        ray.init(address=address)
    try:
        yield
    finally:
        if opened:
            ray.shutdown()
