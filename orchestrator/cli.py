"""`actionlab` command line: one sub-command per module in orchestrator/commands/.

Each command module defines HELP (one line), `add_arguments(parser)` and `run(args) -> int`;
heavy imports (torch, ray, mlflow) happen inside `run`, so `actionlab --help` stays instant.
"""
import argparse
import importlib
import sys

from orchestrator.errors import user_errors

COMMANDS = ["data", "flow", "train", "sweep", "ablate", "report", "models", "bench", "rehearse", "ui", "server", "schema"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionlab",
        description="Train, sweep and compare action-recognition architectures on Ray, tracked in MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"orchestrator.commands.{name}")
        # argparse %-formats help strings (not descriptions): a literal % ("95% CI") must be doubled
        p = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except user_errors() as err:  # evaluated once an error is raised: the model zoo's is known by then
        print(f"actionlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
