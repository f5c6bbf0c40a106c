"""`actionlab bench decode|train|input|flow|gpu`: throughput figures measured side by side in one run
(the benchmarks themselves: orchestrator/bench/)."""
import argparse

from orchestrator.bench import gpu  # its options; it imports no torch until it runs

HELP = ("Benchmarks: video decoding (the dataset path per data.decoder vs raw decord vs naive PyAV), the Ray Train "
        "step overhead, the input pipeline (raw vs prepared videos per decoder, frames decoded vs bytes only, "
        "DataLoader vs Ray Data), the flow cache formats, and one GPU's training, loader and RAFT throughput.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    decode = sub.add_parser("decode", help="clips/s: the dataset path with each data.decoder (decord, torchcodec, "
                                           "pyav) vs raw decord.get_batch vs naive PyAV seek, .mp4 and .avi")
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
    inputs = sub.add_parser("input", help="input pipeline clips/s per core: raw vs prepared videos by data.decoder, "
                                          "frames decoded vs bytes only (decode_device cuda), flow; DataLoader 0..N "
                                          "workers; Ray Data vs DataLoader; cores per GPU")
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
    gpu_parser = sub.add_parser("gpu", help="what a lent GPU machine runs, in under 8 minutes: facts, the training "
                                            "loop and DDP on the GPU, clips/s and TFLOP/s of the loop's step on the "
                                            "papers' models per precision, the real loader end to end, RAFT-small "
                                            "pairs/s (a smoke run without CUDA); each section in its own process, "
                                            "killed at its budget")
    gpu.add_arguments(gpu_parser)


def run(args: argparse.Namespace) -> int:
    if args.what == "gpu":
        return gpu.run_from_args(args)
    from orchestrator.bench import cpu as bench

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
