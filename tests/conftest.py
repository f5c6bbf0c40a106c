"""Shared fixtures: tiny real H.264 videos written on the fly (nothing is downloaded)."""
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from orchestrator.data.video_io import write_video


class TinyVideo(NamedTuple):
    path: Path
    frames: np.ndarray  # uint8 (T, H, W, 3), exactly as PyAV decodes the file


def decode_all_pyav(path: str | Path) -> np.ndarray:
    """Every frame of a video, uint8 (T, H, W, 3), decoded sequentially with PyAV: the reference
    that decord's frames are compared against."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def make_frames(num_frames: int = 24, height: int = 32, width: int = 64, seed: int = 0) -> np.ndarray:
    """A moving bright square on a smooth, frame-dependent background: every frame differs.

    (decord 0.6.0 garbles H.264 frames 16, 24, 48 or 72 pixels wide: keep test widths off those.)
    """
    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    base = rng.integers(30, 200, size=3)
    for t in range(num_frames):
        frames[t] = (base + 2 * t) % 256
        x = (3 * t) % (width - 8)
        frames[t, 8:16, x:x + 8] = 255
    return frames


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory) -> TinyVideo:
    path = write_video(tmp_path_factory.mktemp("video") / "tiny.mp4", make_frames())
    return TinyVideo(path, decode_all_pyav(path))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session for the whole test run (Ray start-up costs seconds; share it). With the
    dashboard, as `actionlab` starts Ray: Train frees an ASHA-stopped trial's workers through it."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


def write_layout(dataset: str, folder: Path, *, num_frames: int = 12, height: int = 32, width: int = 64,
                 per_class: int = 3, kinetics_test_per_class: int = 0) -> tuple[Path, Path]:
    """A tiny data set of real videos in `dataset`'s official layout; returns (root, annotations).

    The defaults make test_prepare.py's sets (its `write_layout` can become this one). Per class:
    ucf101 `per_class` groups of one clip (split k tests on its own groups, as UCF's lists do);
    hmdb51 `per_class` videos tagged 1, 2, 0 in turn (train, test, unused), shifted by one per split,
    with CRLF and trailing blanks as shipped; kinetics `per_class - 1` train and one val clip in
    `<subset>/<label>/`, the label's space kept in the folder name, `kinetics_test_per_class`
    labelled test clips, and one unlabelled test row (as in the first official test.csv); csv four
    paths with a dot inside a name and mixed containers. (decord 0.6 garbles a few small widths:
    keep `width` off 16, 24, 48, 72.)
    """
    from orchestrator.data.synth import SynthSpec, write_synthetic_ucf

    def video(path: Path, seed: int) -> Path:
        return write_video(path, make_frames(num_frames, height, width, seed=seed))

    if dataset == "ucf101":  # .avi with B-frames
        write_synthetic_ucf(folder, SynthSpec(groups=per_class, clips_per_group=1, num_frames=num_frames,
                                              height=height, width=width), progress=False)
        return folder / "UCF101", folder / "ucfTrainTestlist"
    if dataset == "hmdb51":
        root, lists = folder / "hmdb51_org", folder / "testTrainMulti_7030_splits"
        for c, name in enumerate(["brush_hair", "cartwheel"]):
            files = [f"source{v}_{name}_u_nm_np1_fr_med_0.avi" for v in range(per_class)]  # HMDB-51's naming
            for v, file in enumerate(files):
                video(root / name / file, seed=per_class * c + v)
            for split in (1, 2, 3):
                tags = np.roll(np.resize([1, 2, 0], per_class), split - 1)
                _write_text(lists / f"{name}_test_split{split}.txt",
                            "".join(f"{file} {tag} \r\n" for file, tag in zip(files, tags)))
        return root, lists
    if dataset == "kinetics":
        root, csv = folder / "kinetics400", folder / "annotations" / "kinetics.csv"
        classes = {"abseiling": "a", "air drumming": "d"}  # label -> youtube_id prefix
        rows = [(label, f"{c}{i + 1}", "val" if i == per_class - 1 else "train")
                for label, c in classes.items() for i in range(per_class)]
        rows += [(label, f"{c}t{i + 1}", "test") for label, c in classes.items() for i in range(kinetics_test_per_class)]
        rows.append(("", "t1", "test"))
        for i, (label, youtube_id, subset) in enumerate(rows):
            video(root / subset / label / f"{youtube_id}_000004_000014.mp4", seed=i)
        _write_text(csv, "label,youtube_id,time_start,time_end,split\n"
                         + "".join(f"{label},{youtube_id},4,14,{subset}\n" for label, youtube_id, subset in rows))
        return root, csv
    root, csv = folder / "videos", folder / "train.csv"  # csv: any paths, a dot inside a name, mixed containers
    rows = [("clips/a.mp4", "walk"), ("clips/b.avi", "run"), ("clips/take.2.mp4", "walk"), ("more/c.mp4", "run")]
    for i, (path, _) in enumerate(rows):
        video(root / path, seed=i)
    _write_text(csv, "path,label\n" + "".join(f"{path},{label}\n" for path, label in rows))
    return root, csv
