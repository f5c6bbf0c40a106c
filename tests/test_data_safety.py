"""What the data layer guarantees before training reads it (issue 17, items 1-5): labels as the lists
mean them, lists that stay inside their root, copies that are complete, temporaries cleaned, frames
upright as decord shows them. The command-line side is tests/test_hostile_paths.py."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import make_frames, write_layout
from orchestrator.data import video_io
from orchestrator.data.annotations import LabelConflict, read_run_splits, read_split, require_finished
from orchestrator.data.flow import extract_flow, flow_path
from orchestrator.data.paths import resolved
from orchestrator.data.prepare import PrepareParams, prepare_dataset, prepare_video
from orchestrator.data.synth import SynthSpec, write_synthetic_ucf
from orchestrator.data.tasks import HOST_TAG
from orchestrator.errors import UserError

NUM_FRAMES, HEIGHT, WIDTH = 8, 32, 64  # decord 0.6 garbles widths 16, 24, 48, 72


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --- item 3: labels --------------------------------------------------------------------------

def test_classind_numbers_are_the_labels_whatever_their_order(tmp_path):
    """An out-of-order classInd.txt: train labels (its numbers) and test labels (the folders) agree."""
    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    classes = {1: "ApplyEyeMakeup", 2: "Basketball", 3: "YoYo"}
    for name in classes.values():
        for group in (1, 2):
            _touch(root / name / f"v_{name}_g{group:02d}_c01.avi")
    _write(lists / "classInd.txt", "3 YoYo\r\n1 ApplyEyeMakeup\r\n2 Basketball\r\n")
    _write(lists / "trainlist01.txt", "".join(f"{n}/v_{n}_g02_c01.avi {i}\n" for i, n in classes.items()))
    _write(lists / "testlist01.txt", "".join(f"{n}/v_{n}_g01_c01.avi\n" for n in classes.values()))
    run = read_run_splits("ucf101", root=root, annotations=lists)
    for split in (run.train, run.test):
        assert split.class_names == ["ApplyEyeMakeup", "Basketball", "YoYo"]
        assert [split.class_names[r.label] for r in split.records] == [r.video_id.split("/")[0] for r in split.records]

    _write(lists / "classInd.txt", "1 ApplyEyeMakeup\n3 YoYo\n4 Basketball\n")
    with pytest.raises(UserError, match=r"classInd\.txt: the class numbers must run 1\.\.3, each once; 2 is missing"):
        read_split("ucf101", root=root, annotations=lists)


def _csv_set(tmp_path: Path, train: str, test: str):
    root = tmp_path / "videos"
    for name in ("a.mp4", "a.avi", "b.mp4", "c.mp4", "d/e.mp4", "f.mp4"):
        _touch(root / name)
    train_csv = _write(tmp_path / "train.csv", "path,label\n" + train)
    return root, train_csv, _write(tmp_path / "test.csv", "path,label\n" + test)


@pytest.mark.parametrize("train, test, message", [
    ("a.mp4,walk\nb.mp4,run\na.mp4,run\n", "c.mp4,walk\n",
     r"a\.mp4: listed with two labels, 'walk' \(train\.csv line 2\) and 'run' \(train\.csv line 4\); delete the wrong"),
    ("a.mp4,walk\nb.mp4,run\n", "c.mp4,walk\nb.mp4,run\n",
     r"b\.mp4: in both the train list and the test list: .*take it out of one"),
    ("a.mp4,walk\nb.mp4,run\na.avi,walk\n", "c.mp4,walk\n",
     r"a\.avi: same video id 'a' as .*a\.mp4 \(train\.csv line 2\): .*rename one of them \(train\.csv line 4\)"),
    ("a.mp4,walk\nb.mp4,run\n", "a.avi,walk\n",
     r"a\.avi: same video id 'a' as .*a\.mp4 \(in the train list; this one in the test list\).*rename one"),
    ("d.mp4,walk\nd/e.mp4,run\n", "c.mp4,walk\n",
     r"d/e\.mp4: video id 'd/e' \(train\.csv line 3\) lies in the folder of video 'd' .*rename one of them"),
])
def test_training_refuses_label_conflicts_naming_the_line_and_the_fix(tmp_path, train, test, message):
    _touch(tmp_path / "videos" / "d.mp4")
    root, train_csv, test_csv = _csv_set(tmp_path, train, test)
    with pytest.raises(UserError, match=message):  # what preflight's _check_splits and every worker call
        read_run_splits("csv", root=root, annotations=train_csv, test_annotations=test_csv)
    problems = read_split("csv", root=root, annotations=train_csv).problems  # `data check` lists them instead
    assert all(isinstance(p, LabelConflict) for p in problems)


def test_a_ucf_label_that_is_not_its_folder_is_refused(tmp_path):
    root, lists = write_layout("ucf101", tmp_path, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH)
    with open(lists / "trainlist01.txt", "a") as f:
        f.write("GreenLeft/v_GreenLeft_g01_c01.avi 3\n")
    with pytest.raises(UserError, match=r"label 3 is 'RedLeft' in classInd\.txt, but the video is in the folder "
                                        r"'GreenLeft' \(trainlist01\.txt line \d+\); correct the label"):
        read_run_splits("ucf101", root=root, annotations=lists)


# --- item 4: unfinished copies, temporaries ---------------------------------------------------

def _interrupt_after(monkeypatch, name: str, calls: int) -> None:
    """video_io.<name> raises KeyboardInterrupt on its `calls`-th call (as a kill would stop it)."""
    real, seen = getattr(video_io, name), []

    def writer(path, frames, **kwargs):
        seen.append(path)
        if len(seen) == calls:
            raise KeyboardInterrupt
        return real(path, frames, **kwargs)

    monkeypatch.setattr(video_io, name, writer)


def test_a_half_prepared_copy_is_refused_until_a_rerun_finishes_it(tmp_path, monkeypatch):
    root, csv = write_layout("csv", tmp_path / "src", num_frames=NUM_FRAMES)
    video_io.write_video(root / "held" / "d.mp4", make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=9))
    test_csv = _write(tmp_path / "src" / "test.csv", "path,label\nheld/d.mp4,run\n")
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "write_video", 2)
        with pytest.raises(KeyboardInterrupt):
            prepare_dataset("csv", root=root, annotations=csv, out=out, use_ray=False, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["written_by"], manifest["complete"]) == ("actionlab data prepare", False)
    assert not (out / "train.csv").exists()  # the lists come last
    with pytest.raises(UserError, match=rf"{out / 'manifest.json'}: `actionlab data prepare` has not finished "
                                        rf"writing {out / 'videos'} .*run the same command again"):
        read_run_splits("csv", root=out / "videos", annotations=out / "train.csv", test_annotations=test_csv)

    summary = prepare_dataset("csv", root=root, annotations=csv, out=out, use_ray=False, progress=False)
    assert (summary.prepared, summary.done_before) == (3, 1)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    prepare_dataset("csv", root=root, annotations=test_csv, out=out, use_ray=False, progress=False)
    run = read_run_splits("csv", root=out / "videos", annotations=out / "train.csv",
                          test_annotations=out / "test.csv")
    assert (len(run.train.records), len(run.test.records)) == (4, 1)


def test_a_legacy_or_foreign_manifest_beside_the_root_is_not_read_as_unfinished(tmp_path):
    (tmp_path / "videos").mkdir()
    for text in ('{"dataset": "csv", "source": "/x", "format": "h264"}', '{"complete": false}', "not json"):
        _write(tmp_path / "manifest.json", text)
        require_finished(tmp_path / "videos")


def test_an_interrupted_synth_is_refused_then_finished_by_the_same_command(tmp_path, monkeypatch):
    spec = SynthSpec(groups=3, clips_per_group=1, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH)
    out = tmp_path / "synth"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, "write_video", 3)
        with pytest.raises(KeyboardInterrupt):
            write_synthetic_ucf(out, spec, progress=False)
    with pytest.raises(UserError, match="`actionlab data synth` has not finished writing"):
        read_split("ucf101", root=out / "UCF101", annotations=out / "ucfTrainTestlist")
    with pytest.raises(FileExistsError, match="UCF101 already exists"):  # another spec: stale videos would mix in
        write_synthetic_ucf(out, SynthSpec(groups=4, clips_per_group=1, num_frames=NUM_FRAMES), progress=False)
    write_synthetic_ucf(out, spec, progress=False)
    assert len(read_split("ucf101", root=out / "UCF101", annotations=out / "ucfTrainTestlist").records) == 8
    with pytest.raises(FileExistsError, match="UCF101 already exists"):
        write_synthetic_ucf(out, spec, progress=False)

    marked = tmp_path / "rehearsal"  # a folder holding only a tool's hidden marker counts as empty
    _write(marked / ".rehearsal", "")
    write_synthetic_ucf(marked, spec, progress=False)


def test_a_flow_rerun_removes_a_killed_runs_temporaries_only(tmp_path):
    root, csv = write_layout("csv", tmp_path, num_frames=NUM_FRAMES)
    records = read_split("csv", root=root, annotations=csv).records[:2]
    flow_dir = tmp_path / "flow"
    extract_flow(records, flow_dir=flow_dir, use_ray=False, progress=False)
    cache = flow_path(flow_dir, records[0].video_id, "jpg")
    dead = cache.with_name(f".{cache.name}.{HOST_TAG}-{_dead_pid()}-deadbeef.tmp")
    live = cache.with_name(f".{cache.name}.{HOST_TAG}-{os.getpid()}-0badcafe.tmp")
    other_host = cache.with_name(f".{cache.name}.00000000-{_dead_pid()}-0badcafe.tmp")
    for folder in (dead, live, other_host):
        (folder / "x_00001.jpg").parent.mkdir()
        (folder / "x_00001.jpg").write_bytes(b"half")
    summary = extract_flow(records, flow_dir=flow_dir, use_ray=False, progress=False)
    assert (summary.computed, summary.cached) == (0, 2)
    assert (dead.exists(), live.exists(), other_host.exists()) == (False, True, True)


def test_flow_refuses_caches_that_would_nest(tmp_path):
    from orchestrator.data.annotations import VideoRecord

    video = video_io.write_video(tmp_path / "v.mp4", make_frames(NUM_FRAMES, HEIGHT, WIDTH))
    records = [VideoRecord(video, 0, "a"), VideoRecord(video.with_name("w.mp4"), 0, "a/b")]
    with pytest.raises(UserError, match=r"flow cache of .*w\.mp4 .* would lie inside that of .*v\.mp4"):
        extract_flow(records, flow_dir=tmp_path / "flow", use_ray=False, progress=False)
    assert not (tmp_path / "flow" / "a").exists()


# --- item 5: rotation ------------------------------------------------------------------------

def _rotated_video(path: Path, frames: np.ndarray, degrees: int) -> Path:
    """H.264 .mp4 with a display matrix turning it `degrees` counter-clockwise (PyAV's
    `VideoStream.set_display_rotation`; decord applies it when decoding)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}
        stream.set_display_rotation(degrees)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _decord_frames(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    return reader.get_batch(list(range(len(reader)))).asnumpy()  # (T, H, W, 3)


@pytest.mark.parametrize("degrees", [90, 180, 270])
@pytest.mark.parametrize("fmt", ["h264", "frames"])
def test_prepared_frames_are_turned_as_decord_turns_the_raw_video(tmp_path, degrees, fmt):
    frames = make_frames(NUM_FRAMES, HEIGHT, WIDTH)
    raw = _rotated_video(tmp_path / "raw.mp4", frames, degrees)
    seen = _decord_frames(raw)  # what training on the raw video sees
    assert seen.shape[1:3] == ((WIDTH, HEIGHT) if degrees % 180 else (HEIGHT, WIDTH))  # decord applies it
    assert np.abs(seen.astype(int) - np.rot90(frames, degrees // 90, axes=(1, 2)).astype(int)).mean() < 3
    np.testing.assert_array_equal(video_io.read_frames_pyav(raw, [0, NUM_FRAMES - 1]), seen[[0, -1]])

    prepare_video(raw, tmp_path / "copy.mp4" if fmt == "h264" else tmp_path / "copy", PrepareParams(format=fmt))
    copy = (_decord_frames(tmp_path / "copy.mp4") if fmt == "h264"
            else video_io.read_frame_folder(tmp_path / "copy", range(NUM_FRAMES)))
    assert copy.shape == seen.shape
    assert np.abs(copy.astype(int) - seen.astype(int)).mean() < 3.0


# --- item 1: a seeded search over hostile names (hypothesis is not installed) ----------------

PIECES = ["..", ".", "", "clips", "a.mp4", "b.avi", "link", "inside", "é", " ", "\\", "~", "x" * 40, "a.mp4/.."]


def _hostile_name(rng: np.random.Generator) -> str:
    name = "/".join(rng.choice(PIECES, size=int(rng.integers(1, 6))).tolist())
    return ("/" + name) if rng.random() < 0.15 else name


@pytest.fixture(scope="module")
def hostile_tree(tmp_path_factory):
    """root with real (empty) files, a symlink out (link -> ../outside) and one in (inside -> clips)."""
    tmp = tmp_path_factory.mktemp("hostile")
    root = tmp / "data" / "root"
    for name in ("a.mp4", "b.avi", "clips/a.mp4", "clips/b.avi", "clips/clips/a.mp4"):
        _touch(root / name)
    for name in ("a.mp4", "b.avi", "clips/a.mp4", "root/a.mp4"):
        _touch(tmp / "outside" / name)
        _touch(tmp / "data" / name)
    os.symlink(tmp / "outside", root / "link")
    os.symlink("clips", root / "inside")
    return tmp, root


@pytest.mark.parametrize("dataset", ["csv", "ucf101", "hmdb51", "kinetics"])
def test_no_listed_name_leads_out_of_the_root(hostile_tree, dataset, tmp_path):
    """Every name either is refused in one line or gives records that resolve inside the root, with
    video ids that are plain relative paths (the keys every output path is built from)."""
    tmp, root = hostile_tree
    rng = np.random.default_rng(17 + len(dataset))
    for _ in range(150):
        name = _hostile_name(rng)
        if "\n" in name or "," in name:
            continue
        if dataset == "csv":
            annotations = _write(tmp_path / "list.csv", f"path,label\n\"{name}\",walk\n")
        elif dataset == "ucf101":
            annotations = tmp_path / "ucf"
            _write(annotations / "classInd.txt", "1 clips\n")
            _write(annotations / "trainlist01.txt", f"{name.replace(' ', '_')} 1\n")
        elif dataset == "hmdb51":
            annotations = tmp_path / "hmdb"
            _write(annotations / "clips_test_split1.txt", f"{name} 1\n")
        else:
            annotations = _write(tmp_path / "k.csv", "label,youtube_id,time_start,time_end,split\n"
                                                     f"\"{name}\",\"{name}\",4,14,train\n")
        try:
            split = read_split(dataset, root=root, annotations=annotations)
        except UserError as err:
            assert "\n" not in str(err) and str(annotations if dataset in ("csv", "kinetics") else "") in str(err)
            continue
        for record in split.records:
            assert resolved(record.path).is_relative_to(resolved(root)), (name, record)
            parts = record.video_id.split("/")
            assert ".." not in parts and "" not in parts and not record.video_id.startswith("/"), (name, record)
