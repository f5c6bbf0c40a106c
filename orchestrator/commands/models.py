"""`actionlab models`: the registered architectures, their modalities, and their size and cost."""
import argparse

HELP = "List the registered architectures and their modalities; --summary adds parameters and FLOPs."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary", action="store_true",
                        help="parameters and multiply-adds per clip at each paper's input size, "
                             "beside the paper's parameter count")
    parser.add_argument("--name", metavar="NAME", help="only this architecture")


def run(args: argparse.Namespace) -> int:
    from models import MODEL_INPUTS, MODELS
    from orchestrator.model_summary import format_table, summarize
    from orchestrator.errors import UserError

    if args.name is not None and args.name not in MODELS:
        raise UserError(f"--name {args.name!r} is not a registered architecture; "
                        f"registered: {', '.join(sorted(MODELS))}")
    names = [args.name] if args.name else sorted(MODELS)
    if args.summary:
        print(format_table([summarize(name) for name in names]))
        return 0
    width = max(len(name) for name in names)
    print(f"{'model':<{width}}  {'modalities':<24}  time axis")
    for name in names:
        contract = MODEL_INPUTS[name]
        layout = "K segments x L frames (tsn sampler)" if contract.layout == "segments" else "one clip of T frames"
        print(f"{name:<{width}}  {', '.join(contract.modalities):<24}  {layout}")
    return 0
