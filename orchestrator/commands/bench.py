"""`actionlab bench decode|train`: throughput figures measured side by side in one run."""
import argparse

HELP = ("Benchmarks: video decoding (dataset vs raw decord vs naive PyAV), the Ray Train step overhead, and the "
        "flow cache formats.")


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
    flow = sub.add_parser("flow", help="flow cache formats: bytes per field and clips/s read, npy vs jpg vs png")
    flow.add_argument("--videos", type=int, default=4)
    flow.add_argument("--frames", type=int, default=60)
    flow.add_argument("--rounds", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    from orchestrator import bench

    if args.what == "decode":
        bench.bench_decode(videos=args.videos, num_frames=args.frames, num_segments=args.segments, rounds=args.rounds)
    elif args.what == "flow":
        bench.bench_flow(videos=args.videos, num_frames=args.frames, rounds=args.rounds)
    else:
        bench.bench_train(architecture=args.architecture, width=args.width, batch_size=args.batch_size,
                          steps=args.steps, threads=args.threads)
    return 0
