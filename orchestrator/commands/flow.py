"""`actionlab flow`: compute and cache the optical flow of a dataset's videos, one Ray task per video."""
from pathlib import Path

HELP = "Compute optical flow (Farneback, TV-L1 or RAFT) for a dataset and cache it (JPEG per field by default)."

SHOWN_PROBLEMS = 5  # annotation problems printed in full; the rest are counted


def add_arguments(parser) -> None:
    from orchestrator.data.annotations import DATASETS
    from orchestrator.data.flow import FLOW_FORMATS, FLOW_METHODS

    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
    parser.add_argument("--root", required=True, type=Path, help="folder holding the videos")
    parser.add_argument("--annotations", required=True, type=Path, help="split files folder (or CSV file)")
    parser.add_argument("--split", type=int, default=1, help="official split number (default 1)")
    parser.add_argument("--subset", choices=("train", "val", "test", "all"), default="all",
                        help="which videos of the split (default all)")
    parser.add_argument("--flow-dir", required=True, type=Path,
                        help="cache folder: <video_id>/x_00001.jpg, y_00001.jpg, ... (or <video_id>.npy) + manifest.json")
    parser.add_argument("--format", choices=FLOW_FORMATS, default="jpg",
                        help="jpg: TSN's per-field JPEGs, quality 95 (default); png: lossless; npy: one uint8 array")
    parser.add_argument("--method", choices=FLOW_METHODS, default="farneback")
    parser.add_argument("--bound", type=float, default=20.0, help="flow clipped to +-bound px for uint8 (default 20)")
    parser.add_argument("--short-side", type=int, default=None, help="resize frames to this short side first")
    parser.add_argument("--warp", action="store_true", help="subtract camera motion (TSN warped flow)")
    parser.add_argument("--raft-weights", type=Path, default=None, help="local raft_small/raft_large state dict")
    parser.add_argument("--device", default="cpu", help="torch device for RAFT (cpu, cuda)")
    parser.add_argument("--gpus-per-task", type=float, default=1.0,
                        help="GPU share of each video's Ray task with --device cuda; 0.25 overlaps 4 videos' decoding "
                             "and RAFT on one GPU (default 1)")
    parser.add_argument("--raft-batch", type=int, default=8, help="frame pairs per RAFT forward pass (default 8)")
    parser.add_argument("--decode-timeout-s", type=float, default=60.0,
                        help="a video whose decoding takes longer fails, listed with the others (default 60)")
    parser.add_argument("--no-ray", action="store_true", help="process videos in this process, one after another")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")


def run(args) -> int:
    from orchestrator.data.annotations import read_all_subsets, read_split, require_consistent
    from orchestrator.data.check import one_line
    from orchestrator.data.flow import extract_flow

    if args.subset == "all":
        split = read_all_subsets(args.dataset, root=args.root, annotations=args.annotations, split=args.split)
    else:
        split = read_split(args.dataset, root=args.root, annotations=args.annotations, split=args.split,
                           subset=args.subset)
    require_consistent(split)  # e.g. x.avi and x.mp4 would share one cache
    for path, reason in split.problems[:SHOWN_PROBLEMS]:
        print(one_line(f"warning: {path}: {reason}"))
    if len(split.problems) > SHOWN_PROBLEMS:
        print(f"warning: ... and {len(split.problems) - SHOWN_PROBLEMS} more annotation problems")
    summary = extract_flow(split.records, flow_dir=args.flow_dir, method=args.method, bound=args.bound,
                           short_side=args.short_side, warp=args.warp, fmt=args.format, raft_weights=args.raft_weights,
                           device=args.device, use_ray=not args.no_ray, address=args.address,
                           gpus_per_task=args.gpus_per_task, raft_batch=args.raft_batch,
                           sources={"--root": args.root, "--annotations": args.annotations},
                           decode_timeout_s=args.decode_timeout_s)
    for path, reason in summary.failed:
        print(one_line(f"failed: {path}: {reason}"))
    print(summary.describe())
    return 1 if summary.failed else 0
