"""Arguments and steps shared by the commands that run experiments (train, sweep, ablate)."""
import argparse

import yaml


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML, e.g. experiments/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field, e.g. --set optim.epochs=2 (repeatable)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to attach to (e.g. auto, ray://head:10001); default: start a local one")


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


def connect_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address)
