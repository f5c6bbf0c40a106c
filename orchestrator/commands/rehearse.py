"""`actionlab rehearse`: a recipe run as written on N processes, at its real shapes, on a small generated set."""
import argparse

HELP = ("Rehearse a recipe as launched (DDP on N gloo processes, its crop, views, batch, loader workers, "
        "resume, late fusion) on a small set generated in its layout; print time, host memory and device memory.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", metavar="RECIPE", help="experiment YAML, e.g. experiments/recipes/tsn_ucf101.yaml")
    parser.add_argument("--workers", type=int, default=2, help="DDP processes (default: 2)")
    parser.add_argument("--steps", type=int, default=2,
                        help="full training batches per worker and epoch; each epoch also ends on a partial batch, "
                             "dropped (default: 2: DDP faults show at the second step)")
    parser.add_argument("--width", type=float, default=1 / 16,
                        help="model.width rehearsed: the only size change (default: 0.0625)")
    parser.add_argument("--variant", dest="variants", action="append", metavar="NAME",
                        help="only this study variant (repeatable; default: every variant)")
    parser.add_argument("--out", default=None, help="work folder (default: ./rehearsal_<name>; its data is reused)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field first, e.g. --set optim.eval_batch_size=32 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from orchestrator.commands._common import load_config
    from orchestrator.rehearse import rehearse

    rehearse(load_config(args), workers=args.workers, steps=args.steps, width=args.width, out=args.out,
             variants=args.variants)
    return 0
