"""`actionlab data prepare`: every layout reads back with the same ids and labels, decodes to the same
frames; reruns are free, other parameters refused, bad videos reported, interruptions harmless."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import decode_all_pyav, make_frames, write_layout
from orchestrator.cli import main
from orchestrator.data.annotations import SPLIT_NUMBERS, SUBSETS, read_split
from orchestrator.data.check import check_split, probe_video
from orchestrator.data.dataset import VideoDataset
from orchestrator.data.prepare import PrepareParams, output_size, prepare_dataset, prepare_video, prepared_name
from orchestrator.data.tasks import HOST_TAG
from orchestrator.data.video_io import (frame_folder_length, frame_image, read_frame_folder, write_frame_folder,
                                        write_video)
from orchestrator.errors import UserError

NUM_FRAMES, HEIGHT, WIDTH = 12, 32, 64  # 64 px wide: decord 0.6 garbles a few small widths (16, 24, 48, 72)
LAYOUTS = ("ucf101", "hmdb51", "kinetics", "csv")


def _video(path: Path, seed: int) -> Path:
    return write_video(path, make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=seed))


def _dead_pid() -> int:
    """The id of a process that has exited (a killed run's, as its temporaries name it)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


@pytest.fixture(scope="module", params=LAYOUTS)
def layout(request, tmp_path_factory):
    """(dataset, root, annotations) of a tiny data set in each official layout."""
    return (request.param, *write_layout(request.param, tmp_path_factory.mktemp(request.param)))


def every_split(dataset: str, root: Path, annotations: Path):
    """(split, subset, Split) of every list of a data set."""
    splits = SPLIT_NUMBERS if dataset in ("ucf101", "hmdb51") else (1,)
    for split in splits:
        for subset in SUBSETS[dataset]:
            yield split, subset, read_split(dataset, root=root, annotations=annotations, split=split, subset=subset)


def all_frames(record) -> np.ndarray:
    """Every frame of a record as VideoDataset reads it, uint8 (T, H, W, 3)."""
    item = VideoDataset([record], sampler=lambda n, rng: np.arange(n)[None])[0]
    assert item is not None, record.path
    return item["inputs"]["rgb"][0].permute(1, 2, 3, 0).numpy()


# --- the copy reads back ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["h264", "frames"])
def test_prepared_copy_reads_back_with_the_same_ids_labels_and_frames(layout, fmt, tmp_path):
    dataset, root, annotations = layout
    summary = prepare_dataset(dataset, root=root, annotations=annotations, out=tmp_path / "out",
                              params=PrepareParams(format=fmt), use_ray=False, progress=False)
    assert summary.root == tmp_path / "out" / root.name and summary.annotations == tmp_path / "out" / annotations.name
    assert (summary.failed, summary.problems, summary.done_before) == ([], [], 0)
    assert summary.bytes_before > 0 and summary.bytes_after > 0
    videos = set()
    for (split, subset, raw), (_, _, prepared) in zip(every_split(dataset, root, annotations),
                                                      every_split(dataset, summary.root, summary.annotations)):
        assert prepared.problems == [], (split, subset)
        assert prepared.class_names == raw.class_names
        assert [(r.video_id, r.label) for r in prepared.records] == [(r.video_id, r.label) for r in raw.records]
        for before, after in zip(raw.records, prepared.records):
            assert after.path.is_dir() if fmt == "frames" else after.path.suffix == ".mp4"
            if after.path not in videos:
                videos.add(after.path)
                expected, got = all_frames(before), all_frames(after)
                assert got.shape == expected.shape  # same frame count and size
                assert np.abs(got.astype(int) - expected.astype(int)).mean() < 3.0, after.path
        assert check_split(prepared, min_frames=NUM_FRAMES, progress=False) == prepared.problems
    assert summary.prepared == len(videos)


def test_csv_train_and_test_lists_share_one_copy(tmp_path):
    root, train_csv = write_layout("csv", tmp_path / "src")
    test_csv = _write(tmp_path / "src" / "test.csv", "path,label\nclips/a.mp4,walk\nmore/c.mp4,run\n")
    for csv in (train_csv, test_csv):  # a second list into the same --out: only its new videos are done
        summary = prepare_dataset("csv", root=root, annotations=csv, out=tmp_path / "out", use_ray=False,
                                  progress=False)
    assert (summary.prepared, summary.done_before) == (0, 2)
    test = read_split("csv", root=summary.root, annotations=summary.annotations)
    assert [(r.video_id, r.label) for r in test.records] == [("clips/a", 1), ("more/c", 0)]


# --- resumable, idempotent, refused --------------------------------------------------------

@pytest.fixture()
def csv_set(tmp_path):
    root, csv = write_layout("csv", tmp_path / "src")
    return root, csv, tmp_path / "out"


def test_rerun_does_nothing_and_other_parameters_are_refused(csv_set):
    root, csv, out = csv_set
    first = prepare_dataset("csv", root=root, annotations=csv, out=out, use_ray=False, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    again = prepare_dataset("csv", root=root, annotations=csv, out=out, use_ray=False, progress=False,
                            params=PrepareParams(jpeg_quality=80))  # not used by h264: not a difference
    assert (first.prepared, again.prepared, again.done_before, again.bytes_after) == (4, 0, 4, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == stamps
    with pytest.raises(UserError, match=r"manifest\.json.*keyframe_interval is 16 there but 8 now.*another --out"):
        prepare_dataset("csv", root=root, annotations=csv, out=out, params=PrepareParams(keyframe_interval=8),
                        use_ray=False, progress=False)
    with pytest.raises(UserError, match=r"format is 'h264' there but 'frames' now"):
        prepare_dataset("csv", root=root, annotations=csv, out=out, params=PrepareParams(format="frames"),
                        use_ray=False, progress=False)


@pytest.mark.parametrize("fmt", ["h264", "frames"])
def test_an_interrupted_video_is_not_done_and_is_redone(csv_set, fmt, monkeypatch):
    root, csv, out = csv_set
    params = PrepareParams(format=fmt)
    prepare_dataset("csv", root=root, annotations=csv, out=out, params=params, use_ray=False, progress=False)
    victim = out / root.name / prepared_name("clips/b.avi", fmt)
    expected = all_frames(read_split("csv", root=out / root.name, annotations=out / csv.name).records[1])

    # Killed while writing: the rename never happened, and the process could not clean up.
    leftover = victim.with_name(f".{victim.name}.{HOST_TAG}-{_dead_pid()}-deadbeef.tmp{victim.suffix}")
    live = victim.with_name(f".{victim.name}.{HOST_TAG}-{os.getpid()}-0badcafe.tmp{victim.suffix}")  # running
    if fmt == "frames":
        write_frame_folder(leftover, make_frames(3, HEIGHT, WIDTH))
        shutil.rmtree(victim)
    else:
        leftover.write_bytes(victim.read_bytes()[:500])
        victim.unlink()
    live.write_bytes(b"a live process's half-written file")
    resumed = prepare_dataset("csv", root=root, annotations=csv, out=out, params=params, use_ray=False,
                              progress=False)
    assert (resumed.prepared, resumed.done_before, resumed.failed) == (1, 3, [])
    assert not leftover.exists() and live.exists()  # the dead run's temporary is cleaned, a live one's kept
    live.unlink()
    np.testing.assert_array_equal(all_frames(read_split("csv", root=out / root.name,
                                                        annotations=out / csv.name).records[1]), expected)

    # Interrupted (Ctrl-C) inside a video: its temporary copy goes, nothing is renamed.
    import orchestrator.data.video_io as video_io

    def interrupted(path, frames, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True) if fmt == "frames" else Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(video_io, "write_frame_folder" if fmt == "frames" else "write_video", interrupted)
    if fmt == "frames":
        shutil.rmtree(victim)
    else:
        victim.unlink()
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("csv", root=root, annotations=csv, out=out, params=params, use_ray=False, progress=False)
    assert not victim.exists()
    assert [p.name for p in victim.parent.iterdir() if ".tmp" in p.name] == []


def test_bad_videos_are_reported_by_path_and_the_rest_done(csv_set, capsys):
    root, csv, out = csv_set
    text = _write(root / "clips" / "text.mp4", "not a video")
    cut = root / "clips" / "cut.avi"
    whole = (root / "clips" / "b.avi").read_bytes()
    cut.write_bytes(whole[:whole.rindex(b"idx1") - 200])  # the index and the last frame's end are gone
    _write(csv, csv.read_text() + "clips/text.mp4,walk\nclips/cut.avi,run\nclips/absent.mp4,run\n")
    args = ["data", "prepare", "--dataset", "csv", "--root", str(root), "--annotations", str(csv), "--out", str(out),
            "--no-ray"]
    assert main(args) == 1
    report = capsys.readouterr().out
    assert f"failed: {text}: InvalidDataError" in report
    assert re.search(rf"failed: {cut}: ValueError: truncated: \d+ of the {NUM_FRAMES} frames the container claims",
                     report)
    assert f"warning: {root / 'clips' / 'absent.mp4'}: video file not found" in report
    assert "4 prepared, 0 already done, 2 failed" in report and "MiB ->" in report
    assert f"data.root={out / root.name} data.annotations={out / csv.name}" in report
    assert not list(out.rglob("*.tmp*"))
    prepared = read_split("csv", root=out / root.name, annotations=out / csv.name)
    assert len(prepared.records) == 4  # the failed two are missing from the copy, and said so
    assert sorted(p.path.name for p in prepared.problems) == ["absent.mp4", "cut.mp4", "text.mp4"]

    assert main(args + ["--format", "frames"]) == 2
    assert "format is 'h264' there but 'frames' now" in capsys.readouterr().err


# --- one video ------------------------------------------------------------------------------

def test_keyframe_interval_is_applied(tmp_path):
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(HEIGHT, 2 * WIDTH, 3), dtype=np.uint8)
    pan = np.stack([np.roll(texture, t, axis=1)[:, :WIDTH] for t in range(40)])  # a smooth pan: no scene cut
    raw = write_video(tmp_path / "raw.mp4", pan)

    def keyframes(path):
        with av.open(str(path)) as container:
            return [i for i, packet in enumerate(container.demux(video=0)) if packet.is_keyframe]

    assert keyframes(raw) == [0]  # x264's default interval (250) is longer than the video
    prepare_video(raw, tmp_path / "short_gop.mp4", PrepareParams(keyframe_interval=8))
    assert keyframes(tmp_path / "short_gop.mp4") == [0, 8, 16, 24, 32]


@pytest.mark.parametrize("width, height, short_side, expected", [
    (340, 256, 256, (340, 256)),  # already at the short side
    (320, 240, 256, (320, 240)),  # smaller: never scaled up
    (1280, 720, 256, (456, 256)),  # 455.1 -> the nearest even width
    (720, 1280, 256, (256, 456)),  # portrait
    (64, 32, 16, (32, 16)),
    (63, 33, 256, (64, 34)),  # odd sizes become even (yuv420p)
])
def test_output_size(width, height, short_side, expected):
    assert output_size(width, height, short_side) == expected


def test_scaled_down_frames_keep_the_aspect(tmp_path):
    src = _video(tmp_path / "v.mp4", seed=0)
    prepare_video(src, tmp_path / "small.mp4", PrepareParams(short_side=16))
    prepare_video(src, tmp_path / "small", PrepareParams(format="frames", short_side=16))
    assert decode_all_pyav(tmp_path / "small.mp4").shape == (NUM_FRAMES, 16, 32, 3)
    assert read_frame_folder(tmp_path / "small", [0, NUM_FRAMES - 1]).shape == (2, 16, 32, 3)


@pytest.mark.parametrize("name, fmt, expected", [
    ("Class/v_Class_g01_c01.avi", "h264", "Class/v_Class_g01_c01.mp4"),
    ("Class/v_Class_g01_c01.avi", "frames", "Class/v_Class_g01_c01"),
    ("train/air drumming/d1_000004_000014.mp4", "h264", "train/air drumming/d1_000004_000014.mp4"),
    ("clips/take.2.mp4", "frames", "clips/take.2"),  # only the last suffix goes: the video id stays 'clips/take.2'
])
def test_prepared_name(name, fmt, expected):
    assert prepared_name(name, fmt) == expected


# --- frame folders --------------------------------------------------------------------------

def test_frame_folder_reads_only_the_sampled_frames_and_bad_folders_are_named(tmp_path):
    frames = make_frames(6, HEIGHT, WIDTH)
    assert write_frame_folder(tmp_path / "v", frames, quality=95) == 6
    assert frame_image(tmp_path / "v", 0).name == "img_00001.jpg" and frame_folder_length(tmp_path / "v") == 6
    out = read_frame_folder(tmp_path / "v", [5, 0, 5])
    assert out.dtype == np.uint8 and out.shape == (3, HEIGHT, WIDTH, 3)
    assert np.abs(out.astype(int) - frames[[5, 0, 5]].astype(int)).mean() < 2.0
    assert probe_video(tmp_path / "v", min_frames=6) is None
    assert probe_video(tmp_path / "v", min_frames=7) == "too short: 6 frames, the clip needs 7"

    frame_image(tmp_path / "v", 2).unlink()
    with pytest.raises(FileNotFoundError, match="img_00003.jpg"):
        read_frame_folder(tmp_path / "v", [2])
    assert probe_video(tmp_path / "v") == "frame folder of 5 images without img_00003.jpg (a gap in the numbering)"
    frame_image(tmp_path / "v", 5).rename(frame_image(tmp_path / "v", 2))
    frame_image(tmp_path / "v", 4).write_bytes(b"\xff\xd8 cut short")
    assert probe_video(tmp_path / "v").startswith("the last frame, img_00005.jpg, cannot be read")
    (tmp_path / "empty").mkdir()
    assert probe_video(tmp_path / "empty").startswith("empty frame folder")


@pytest.mark.ray
def test_ray_tasks_write_what_the_loop_writes(csv_set, ray_session):
    root, csv, out = csv_set
    _write(root / "clips" / "text.mp4", "not a video")
    _write(csv, csv.read_text() + "clips/text.mp4,walk\n")
    params = PrepareParams(format="frames")
    by_ray = prepare_dataset("csv", root=root, annotations=csv, out=out, params=params, progress=False)
    in_process = prepare_dataset("csv", root=root, annotations=csv, out=out.parent / "local", params=params,
                                 use_ray=False, progress=False)
    assert (by_ray.prepared, [p for p, _ in by_ray.failed]) == (4, [root / "clips" / "text.mp4"])
    for a, b in zip(read_split("csv", root=by_ray.root, annotations=by_ray.annotations).records,
                    read_split("csv", root=in_process.root, annotations=in_process.annotations).records):
        np.testing.assert_array_equal(all_frames(a), all_frames(b))
