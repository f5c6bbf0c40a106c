"""`actionlab data synth|check|prepare|convert-flow`: generate the synthetic benchmark, list every bad
entry of a data set, transcode a data set for fast clip sampling, or turn a .npy flow cache into
per-field images."""
import argparse

HELP = ("Generate the synthetic benchmark (synth), check a data set for bad videos (check), transcode it for fast "
        "clip sampling (prepare), or convert a .npy flow cache to JPEG/PNG (convert-flow).")

SHOWN_PROBLEMS = 5  # annotation problems printed in full; the rest are counted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orchestrator.data.annotations import DATASETS

    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    from orchestrator.data.synth import CODECS, PRESETS

    # Every option defaults to None (unset), so that only what is given overrides the preset.
    synth = sub.add_parser("synth", help="Write the seeded synthetic data set (UCF-101 layout, .avi videos).")
    synth.add_argument("--out", default="data/synth", help="output folder (default: %(default)s)")
    synth.add_argument("--preset", choices=list(PRESETS), default="colour",
                       help="named variant, one per claim (see orchestrator/data/synth.py; default: %(default)s); "
                            "the options below override its fields")
    synth.add_argument("--seed", type=int)
    synth.add_argument("--appearances", nargs="+", help="colour names, e.g. Red Green, or shape names, e.g. "
                                                        "TopHalf BottomHalf")
    synth.add_argument("--motions", nargs="+", help="motion names, e.g. Left Right")
    synth.add_argument("--groups", type=int, help="UCF-style groups per class")
    synth.add_argument("--clips-per-group", type=int)
    synth.add_argument("--num-frames", type=int, help="frames per video")
    synth.add_argument("--camera-motion", type=float, help="background pan speed (pixels/frame)")
    synth.add_argument("--partial-action", action="store_true", default=None,
                       help="the action fills only part of each video")
    synth.add_argument("--action-fraction", nargs=2, type=float, metavar=("LOW", "HIGH"),
                       help="with --partial-action: the action's share of the video, drawn from LOW..HIGH")
    synth.add_argument("--clutter", type=int, help="number of distractor objects")
    synth.add_argument("--noise-std", type=float, help="Gaussian pixel noise (grey levels)")
    synth.add_argument("--texture", type=float, help="background texture contrast (grey levels)")
    synth.add_argument("--codec", choices=list(CODECS), help="h264 (default) or mpeg4 (MPEG-4 Part 2, as UCF-101)")

    check = sub.add_parser("check", help="Report every bad entry (path and reason) of a data set split.")
    check.add_argument("--dataset", required=True, choices=list(DATASETS))
    check.add_argument("--root", required=True, help="folder holding the videos")
    check.add_argument("--annotations", required=True, help="split folder (UCF/HMDB) or CSV (Kinetics, csv)")
    check.add_argument("--split", type=int, default=1)
    check.add_argument("--subset", default="all", choices=("train", "val", "test", "all"),
                       help="which videos of the split (default: all of them)")
    check.add_argument("--min-frames", type=int, default=1, help="frames a clip needs (shorter videos are bad)")

    from orchestrator.data.prepare import FORMATS, PrepareParams

    default = PrepareParams()
    prepare = sub.add_parser("prepare", help="Transcode a data set (layout, video ids and split files kept) into "
                                             "short-GOP H.264 or JPEG frame folders, as Ray tasks; resumable.")
    prepare.add_argument("--dataset", required=True, choices=list(DATASETS))
    prepare.add_argument("--root", required=True, help="folder holding the videos")
    prepare.add_argument("--annotations", required=True, help="split folder (UCF/HMDB) or CSV (Kinetics, csv)")
    prepare.add_argument("--split", type=int, default=None,
                         help="only the videos of this split number (default: of every split)")
    prepare.add_argument("--out", required=True,
                         help="folder of the copy: <root's name>/, <annotations' name>, manifest.json")
    prepare.add_argument("--format", choices=FORMATS, default=default.format,
                         help="h264: .mp4 with short key frame intervals (default); frames: a folder of JPEGs per "
                              "video (fastest to sample, ~15x the bytes)")
    prepare.add_argument("--short-side", type=int, default=default.short_side,
                         help="scale larger videos down to this short side (default %(default)s; smaller ones keep "
                              "their size)")
    prepare.add_argument("--keyframe-interval", type=int, default=default.keyframe_interval,
                         help="h264: at most this many frames between key frames (default %(default)s)")
    prepare.add_argument("--crf", type=int, default=default.crf, help="h264: x264 quality, lower is better "
                                                                      "(default %(default)s)")
    prepare.add_argument("--jpeg-quality", type=int, default=default.jpeg_quality,
                         help="frames: JPEG quality (default %(default)s)")
    prepare.add_argument("--no-ray", action="store_true", help="process videos in this process, one after another")
    prepare.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")

    convert = sub.add_parser("convert-flow", help="Rewrite a .npy flow cache as per-field images, in place.")
    convert.add_argument("--flow-dir", required=True, help="the cache folder (with manifest.json)")
    convert.add_argument("--format", choices=("jpg", "png"), default="jpg",
                         help="jpg: quality 95, TSN's format (default); png: lossless")


def run(args: argparse.Namespace) -> int:
    if args.action == "synth":
        return _synth(args)
    if args.action == "prepare":
        return _prepare(args)
    if args.action == "convert-flow":
        from orchestrator.data.flow import convert_flow_cache

        print(f"converted {convert_flow_cache(args.flow_dir, args.format)} videos in {args.flow_dir} to {args.format}")
        return 0
    return _check(args)


def _synth(args: argparse.Namespace) -> int:
    import dataclasses

    from orchestrator.data.synth import SynthSpec, accuracy_bounds, spec_from_options, write_synthetic_ucf
    from orchestrator.errors import UserError

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(SynthSpec)
               if getattr(args, f.name, None) is not None}
    try:
        spec = spec_from_options({"preset": args.preset, **options})
        out = write_synthetic_ucf(args.out, spec)
    except (ValueError, FileExistsError) as err:
        raise UserError(f"data synth: {err}") from None
    bounds = accuracy_bounds(spec)
    print(f"wrote {out} (videos under {out}/UCF101, splits under {out}/ucfTrainTestlist)")
    print("best reachable accuracy: " + ", ".join(f"{k} {v:.0%}" for k, v in bounds.items()))
    if spec.partial_action:
        print(f"the action fills part of each video: TSN ceilings per segment count in {out}/README.md")
    return 0


def _check(args: argparse.Namespace) -> int:
    from orchestrator.data.annotations import read_all_subsets, read_split
    from orchestrator.data.check import check_split, format_problems

    if args.subset == "all":
        split = read_all_subsets(args.dataset, root=args.root, annotations=args.annotations, split=args.split)
    else:
        split = read_split(args.dataset, root=args.root, annotations=args.annotations,
                           split=args.split, subset=args.subset)
    problems = check_split(split, min_frames=args.min_frames)
    print(f"{len(split.records)} videos listed, {len(split.class_names)} classes")
    if problems:
        print(format_problems(problems))
        return 1
    print("no problems found")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from orchestrator.data.check import one_line
    from orchestrator.data.prepare import PrepareParams, prepare_dataset

    params = PrepareParams(format=args.format, short_side=args.short_side, keyframe_interval=args.keyframe_interval,
                           crf=args.crf, jpeg_quality=args.jpeg_quality)
    summary = prepare_dataset(args.dataset, root=args.root, annotations=args.annotations, out=args.out, params=params,
                              split=args.split, use_ray=not args.no_ray, address=args.address)
    for path, reason in summary.problems[:SHOWN_PROBLEMS]:
        print(one_line(f"warning: {path}: {reason}"))
    if len(summary.problems) > SHOWN_PROBLEMS:
        print(f"warning: ... and {len(summary.problems) - SHOWN_PROBLEMS} more annotation problems")
    for path, reason in summary.failed:
        print(one_line(f"failed: {path}: {reason}"))
    print(summary.describe())
    print(f"train on it with data.root={summary.root} data.annotations={summary.annotations}")
    return 1 if summary.failed else 0
