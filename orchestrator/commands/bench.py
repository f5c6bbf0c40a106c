"""`actionlab bench decode|train|input|flow|gpu`: throughput figures measured side by side in one run."""
import argparse
from pathlib import Path

HELP = ("Benchmarks: video decoding (dataset vs raw decord vs naive PyAV), the Ray Train step overhead, the "
        "input pipeline (raw vs prepared videos, DataLoader vs Ray Data), the flow cache formats, and one GPU's "
        "training, loader and RAFT throughput.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    decode = sub.add_parser("decode", help="clips/s: dataset path vs raw decord.get_batch vs naive PyAV seek")
    decode.add_argument("--videos", type=int, default=6)
    decode.add_argument("--frames", type=int, default=150, help="frames per video (UCF-101 averages ~180)")
    decode.add_argument("--segments", type=int, default=8, help="TSN segments sampled per clip")
    decode.add_argument("--rounds", type=int, default=3)
    train = sub.add_parser("train", help="per-step time: one Ray Train worker vs a plain PyTorch loop")
    train.add_argument("--architecture", default="tsn", choices=("tsn", "lrcn", "actionvlad"),
                       help="a 2D-backbone architecture fed TSN-shaped clips (default: the quickstart's TSN)")
    train.add_argument("--width", type=float, default=0.25)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--steps", type=int, default=30)
    train.add_argument("--threads", type=int, default=1, help="torch threads in both loops")
    inputs = sub.add_parser("input", help="input pipeline clips/s: raw vs prepared videos vs frames vs flow, per core; "
                                          "DataLoader 0..N workers; Ray Data vs DataLoader; cores per GPU")
    inputs.add_argument("--videos", type=int, default=4)
    inputs.add_argument("--frames", type=int, default=300, help="frames per video (Kinetics: 10 s at 30 fps)")
    inputs.add_argument("--clips", type=int, default=24, help="clips per case and round (one core)")
    inputs.add_argument("--rounds", type=int, default=3)
    inputs.add_argument("--workers", type=int, default=None, help="most DataLoader processes (default: every core)")
    inputs.add_argument("--model-rate", type=float, default=1000.0,
                        help="clips/s one GPU trains at, for the cores-per-GPU line (default: %(default)s)")
    flow = sub.add_parser("flow", help="flow cache formats: bytes per field and clips/s read, npy vs jpg vs png")
    flow.add_argument("--videos", type=int, default=4)
    flow.add_argument("--frames", type=int, default=60)
    flow.add_argument("--rounds", type=int, default=3)
    gpu = sub.add_parser("gpu", help="what a lent GPU machine runs, in under 8 minutes: facts, the training loop "
                                     "and DDP on the GPU, training clips/s and TFLOP/s of the papers' models per "
                                     "precision, the real loader end to end, RAFT-small pairs/s (a smoke run "
                                     "without CUDA); each section in its own process, killed at its budget")
    add_gpu_arguments(gpu)


def add_gpu_arguments(parser: argparse.ArgumentParser) -> None:
    """`bench gpu`'s options; `python -m orchestrator.bench_gpu` takes the same (its docstring lists the
    sections and their default budgets; not imported here: it imports torch)."""
    parser.add_argument("--smoke", action="store_true", help="the tiny version (always, without CUDA)")
    parser.add_argument("--only", default=None, help="sections to run, comma-separated (default: all of them)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds in all, split over the sections in proportion to their default budgets "
                             "(under 8 minutes in all); a section is killed at its share, and its rows that would "
                             "start too close to it are skipped")
    parser.add_argument("--section-budget", action="append", metavar="NAME=SECONDS",
                        help="one section's seconds, taken out of --budget-s first (repeatable)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 TFLOP/s, for the peak column (default: from its name)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the sections in this process, one after another, none killed (what each "
                             "child process runs; for debugging)")
    parser.add_argument("--rows-file", type=Path, default=None,
                        help="with --in-process: also append each table row there as a JSON line")


def run(args: argparse.Namespace) -> int:
    from orchestrator import bench

    if args.what == "gpu":
        from orchestrator import bench_gpu

        return bench_gpu.run_from_args(args)
    if args.what == "decode":
        bench.bench_decode(videos=args.videos, num_frames=args.frames, num_segments=args.segments, rounds=args.rounds)
    elif args.what == "input":
        bench.bench_input(videos=args.videos, num_frames=args.frames, clips=args.clips, rounds=args.rounds,
                          workers=args.workers, model_rate=args.model_rate)
    elif args.what == "flow":
        bench.bench_flow(videos=args.videos, num_frames=args.frames, rounds=args.rounds)
    else:
        bench.bench_train(architecture=args.architecture, width=args.width, batch_size=args.batch_size,
                          steps=args.steps, threads=args.threads)
    return 0
