"""Arguments and steps shared by the commands that run experiments (train, sweep, ablate)."""
import argparse
from contextlib import contextmanager


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
    """The experiment with --set overrides applied, parsed and checked (not yet preflighted).

    Each VALUE is YAML, read as the experiment file is (`preflight.read_yaml`)."""
    from orchestrator.config import quote, with_overrides
    from orchestrator.errors import UserError
    from orchestrator.preflight import load_experiment, read_yaml

    cfg = load_experiment(args.experiment)
    overrides = {}
    for item in args.overrides:
        field, sep, value = item.partition("=")
        field = field.strip()
        if not sep or not field or "" in field.split("."):
            raise UserError(f"{args.experiment}: --set {quote(item)}: expected FIELD=VALUE with a dotted FIELD, "
                            "e.g. --set optim.epochs=2")
        where = f"{args.experiment}: --set {field}"
        overrides[field] = read_yaml(value, where, fix=f"give a YAML value, e.g. --set {field}=2, or quote a string: "
                                                       f"--set '{field}=\"...\"'")
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
