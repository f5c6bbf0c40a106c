"""Small data sets in the real data sets' own layouts, read by the real annotation readers.

    write_layout(dataset, folder, train_per_class=..., test_per_class=..., height, width, num_frames)
        -> Layout(root, annotations, test_annotations)

`actionlab rehearse` runs a recipe on one of these in place of the release it names: the same
folders, file names and annotation files, videos of the real frame size, fewer of them.

    ucf101    `data synth`'s UCF101/<Class>/v_<Class>_gXX_cYY.avi + ucfTrainTestlist/ (classInd,
              trainlist0N, testlist0N); splits hold out whole groups, of which each testlist keeps
              the first `test_per_class` clips per class
    hmdb51    hmdb51_org/<class>/<source>_<class>_u_nm_np1_fr_med_0.avi + testTrainMulti_7030_splits/
              <class>_test_split{1,2,3}.txt with tags 1 train, 2 test, 0 unused (one per class)
    kinetics  kinetics400/<split>/<label>/<youtube_id>_000004_000014.mp4 + annotations/kinetics.csv
              (label,youtube_id,time_start,time_end,split): train, val (a quarter of train), labelled
              test rows and one unlabelled test row, as in the first official test.csv
    csv       videos/<label>/<name>.mp4 + train.csv (path,label,group) and test.csv (path,label)

The videos are `data synth`'s moving discs (class i of a layout shows synth class i), H.264.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from orchestrator.data.synth import SynthSpec, class_names, fold_groups, render_video, write_synthetic_ucf
from orchestrator.data.video_io import write_video

LAYOUTS = ("ucf101", "hmdb51", "kinetics", "csv")  # orchestrator.data.annotations.DATASETS
CLASSES = {  # four real class names per layout (UCF-101's come from `data synth`)
    "hmdb51": ("brush_hair", "cartwheel", "catch", "chew"),
    "kinetics": ("abseiling", "air drumming", "answering questions", "applauding"),
    "csv": ("jump", "run", "walk", "wave"),
}
UCF_CLIPS_PER_GROUP = 2
KINETICS_SUFFIX = "_000004_000014.mp4"  # <youtube_id>_<time_start:06d>_<time_end:06d>.mp4


class Layout(NamedTuple):
    root: Path  # data.root
    annotations: Path  # data.annotations
    test_annotations: Path | None  # data.test_annotations (csv only)


# Where write_layout puts each layout's videos and lists under its folder.
LAYOUT_PATHS = {
    "ucf101": lambda folder: Layout(folder / "UCF101", folder / "ucfTrainTestlist", None),
    "hmdb51": lambda folder: Layout(folder / "hmdb51_org", folder / "testTrainMulti_7030_splits", None),
    "kinetics": lambda folder: Layout(folder / "kinetics400", folder / "annotations" / "kinetics.csv", None),
    "csv": lambda folder: Layout(folder / "videos", folder / "train.csv", folder / "test.csv"),
}


def write_layout(dataset: str, folder: str | Path, *, train_per_class: int, test_per_class: int, height: int = 240,
                 width: int = 320, num_frames: int = 32, progress: bool = True) -> Layout:
    """Write a four-class data set in `dataset`'s layout under `folder` (created; must not hold one).

    Args:
        train_per_class: training-list videos per class (ucf101: at least this many, whole groups).
        test_per_class: test-list videos per class (ucf101: what its held-out groups hold).
        height, width: frame size (UCF-101 and HMDB-51 are 320x240; keep the width off 16, 24, 48, 72,
            which decord 0.6 garbles).
        num_frames: per video.
    """
    if dataset not in LAYOUTS:
        raise ValueError(f"dataset must be one of {', '.join(LAYOUTS)}, got {dataset!r}")
    folder = Path(folder)
    layout = LAYOUT_PATHS[dataset](folder)
    spec = SynthSpec(height=height, width=width, num_frames=num_frames)
    if dataset == "ucf101":
        groups = _ucf_groups(train_per_class)
        write_synthetic_ucf(folder, SynthSpec(groups=groups, clips_per_group=UCF_CLIPS_PER_GROUP, height=height,
                                              width=width, num_frames=num_frames), progress=progress)
        for testlist in layout.annotations.glob("testlist0*.txt"):  # the first test_per_class clips per class
            by_class: dict[str, list[str]] = {}
            for line in testlist.read_text().splitlines():
                by_class.setdefault(line.split("/")[0], []).append(line)
            testlist.write_text("".join(line + "\n" for lines in by_class.values() for line in lines[:test_per_class]))
        return layout
    synth_names = class_names(spec)
    videos = []  # (relative path under root, class index (-1: unlabelled), list name, group)
    for c, name in enumerate(CLASSES[dataset]):
        counts = {"train": train_per_class, "test": test_per_class}
        if dataset == "kinetics":
            counts["val"] = max(1, train_per_class // 4)
        if dataset == "hmdb51":
            counts["unused"] = 1
        for subset, count in counts.items():
            for v in range(count):
                videos.append((_relpath(dataset, name, subset, v), c, subset, f"g{v // 2:02d}"))
    if dataset == "kinetics":  # the first official test.csv had no labels: such a row is read, not tested on
        videos.append((f"test/unlabelled0000{KINETICS_SUFFIX}", -1, "test", ""))
    if layout.root.exists():
        raise FileExistsError(f"{layout.root} already exists; choose another folder")
    for i, (rel, c, _, _) in enumerate(tqdm(videos, desc=f"{dataset} videos", unit="video", disable=not progress)):
        frames = render_video(spec, synth_names[max(c, 0)], i + 1, 1)
        write_video(layout.root / rel, frames, fps=spec.fps, deterministic=True)
    _write_lists(dataset, layout, videos)
    return layout


def _ucf_groups(train_per_class: int) -> int:
    """The fewest groups whose training groups (those outside split 1's test fold) hold enough clips."""
    groups = 3
    while (groups - len(fold_groups(groups, 1))) * UCF_CLIPS_PER_GROUP < train_per_class:
        groups += 1
    return groups


def _relpath(dataset: str, name: str, subset: str, v: int) -> str:
    if dataset == "hmdb51":  # one clip per source video: a source never spans train and test
        return f"{name}/Rehearsal{subset.title()}{v:03d}_{name}_u_nm_np1_fr_med_0.avi"
    if dataset == "kinetics":
        return f"{subset}/{name}/{subset[:2]}{name[:3]}{v:04d}{KINETICS_SUFFIX}"
    return f"{name}/{subset}_{v:03d}.mp4"


def _write_lists(dataset: str, layout: Layout, videos: list[tuple[str, int, str, str]]) -> None:
    names = CLASSES[dataset]
    if dataset == "hmdb51":
        lists = layout.annotations
        lists.mkdir(parents=True)
        tags = {"train": 1, "test": 2, "unused": 0}
        for c, name in enumerate(names):
            mine = [(Path(rel).name, tags[subset]) for rel, label, subset, _ in videos if label == c]
            for split in (1, 2, 3):  # splits 2 and 3 shift the tags by one video each, as the real ones differ
                shift = (split - 1) % len(mine)
                shifted = [(file, mine[(i + shift) % len(mine)][1]) for i, (file, _) in enumerate(mine)]
                (lists / f"{name}_test_split{split}.txt").write_text("".join(f"{f} {t} \n" for f, t in shifted))
    elif dataset == "kinetics":
        csv = layout.annotations
        csv.parent.mkdir(parents=True)
        rows = [(names[label] if label >= 0 else "", Path(rel).name.removesuffix(KINETICS_SUFFIX), subset)
                for rel, label, subset, _ in videos]
        csv.write_text("label,youtube_id,time_start,time_end,split\n"
                       + "".join(f"{label},{yid},4,14,{subset}\n" for label, yid, subset in rows))
    else:
        _write_csv_lists(layout, names, videos)


def _write_csv_lists(layout: Layout, names: tuple[str, ...], videos: list[tuple[str, int, str, str]]) -> None:
    train, test = layout.annotations, layout.test_annotations
    train.write_text("path,label,group\n" + "".join(f"{rel},{names[label]},{group}\n"
                                                    for rel, label, subset, group in videos if subset == "train"))
    test.write_text("path,label\n" + "".join(f"{rel},{names[label]}\n"
                                             for rel, label, subset, _ in videos if subset == "test"))

