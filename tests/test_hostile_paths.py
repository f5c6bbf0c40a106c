"""Hostile input to the data commands, run as a user runs them (`orchestrator.cli.main` in-process).

`CASES` is the table: each builds a tiny data set in one layout, spoils it one way, and runs one
command. For every case: the exit status (2: refused, 1: problems listed, 0: fine), exactly one
output line naming the file / line / path and the fix, no traceback, and not one byte written or
changed outside the command's own output folder (the whole tree is snapshot before and after:
paths, kinds, sizes, modification times and hashes).

The table uses only the command line and the shared test helpers, so it runs on any version of the
code (`run_case` is what a before/after comparison calls).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import threading
import traceback
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import make_frames, write_layout
from orchestrator.cli import main
from orchestrator.data.annotations import read_split, read_train_test
from orchestrator.data.paths import resolved
from orchestrator.data.video_io import write_frame_folder, write_video
from orchestrator.errors import UserError

NUM_FRAMES, HEIGHT, WIDTH = 8, 32, 64  # decord 0.6 garbles widths 16, 24, 48, 72: keep 64
HANG_S = 60.0  # a command still running after this long is counted as hung (a FIFO opened for reading)

# Where write_layout puts each layout under <case>/data: (videos root, annotations).
LAYOUT = {
    "ucf101": ("UCF101", "ucfTrainTestlist"),
    "hmdb51": ("hmdb51_org", "testTrainMulti_7030_splits"),
    "kinetics": ("kinetics400", "annotations/kinetics.csv"),
    "csv": ("videos", "train.csv"),
}


class Case(NamedTuple):
    name: str
    dataset: str  # layout copied to <tmp>/data; its root and annotations go to `setup`
    setup: Callable  # (tmp, root, annotations) -> argv (or (argv, working folder)); spoils the data set
    status: int  # expected exit status
    line: str  # regex: the one line (stderr when refused, a problem line of stdout when listed)
    may_change: tuple[str, ...] = ()  # folders under tmp the command may write: its output


# --- building blocks -----------------------------------------------------------------------

def _append(path: Path, text: str) -> None:
    with open(path, "ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def _check(dataset: str, root: Path, annotations: Path, *extra: str) -> list[str]:
    return ["data", "check", "--dataset", dataset, "--root", str(root), "--annotations", str(annotations), *extra]


def _prepare(dataset: str, root: Path, annotations: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "prepare", "--dataset", dataset, "--root", str(root), "--annotations", str(annotations),
            "--out", str(out), "--no-ray", *extra]


def _flow(dataset: str, root: Path, annotations: Path, flow_dir: Path, *extra: str) -> list[str]:
    return ["flow", "--dataset", dataset, "--root", str(root), "--annotations", str(annotations),
            "--flow-dir", str(flow_dir), "--no-ray", "--format", "npy", *extra]


def _outside(tmp: Path) -> Path:
    """<tmp>/outside: a user's files next to the data set (a video, a flow array) that no command may touch."""
    folder = tmp / "outside"
    if not folder.exists():
        write_video(folder / "existing.mp4", make_frames(NUM_FRAMES, 48, 64, seed=7))  # not the data set's size
        write_video(folder / "existing.avi", make_frames(NUM_FRAMES, 48, 64, seed=8))
        np.save(folder / "user.npy", np.arange(10))
    return folder


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims width x height."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(make_frames(1, HEIGHT, WIDTH)[0]).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 7], data[sof + 7:sof + 9] = height.to_bytes(2, "big"), width.to_bytes(2, "big")
    return bytes(data)


def _frame_folder(root: Path, csv: Path, name: str = "clips/f") -> Path:
    """A 3-frame JPEG folder listed in the csv (as `data prepare --format frames` writes them)."""
    folder = root / name
    write_frame_folder(folder, make_frames(3, HEIGHT, WIDTH))
    _append(csv, f"{name},walk\n")
    return folder


def _npy_cache(flow_dir: Path, video_ids: list[str]) -> None:
    """An `actionlab flow --format npy` cache of these video ids, made by hand."""
    for video_id in video_ids:
        path = flow_dir / f"{video_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((3, 4, 6, 2), 128, np.uint8))
    (flow_dir / "manifest.json").write_text(json.dumps(
        {"method": "farneback", "bound": 20.0, "short_side": None, "warp": False, "format": "npy"}))


def _half_prepared(tmp: Path, root: Path, csv: Path) -> Path:
    """<tmp>/prep: `data prepare` killed after its first video (as by kill -9: nothing cleaned up)."""
    from orchestrator.data import video_io
    from orchestrator.data.prepare import prepare_dataset

    real, calls = video_io.write_video, []

    def dies_on_the_second(path, frames, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, frames, **kwargs)

    video_io.write_video = dies_on_the_second
    try:
        prepare_dataset("csv", root=root, annotations=csv, out=tmp / "prep", use_ray=False, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        video_io.write_video = real
    return tmp / "prep"


# --- the table -----------------------------------------------------------------------------

def _ucf_line(annotations: Path, name: str, line: str) -> Path:
    _append(annotations / name, line)
    return annotations / name


CASES = [
    # 1. listed paths leave the data root
    Case("ucf_dotdot_check", "ucf101",
         lambda tmp, root, ann: (_outside(tmp), _ucf_line(ann, "trainlist01.txt", "../../outside/existing.avi 1\n"),
                                 _check("ucf101", root, ann))[-1],
         2, r"trainlist01\.txt line \d+: path '\.\./\.\./outside/existing\.avi' holds '\.\.'; list paths relative"),
    Case("ucf_absolute_check", "ucf101",
         lambda tmp, root, ann: (_ucf_line(ann, "testlist01.txt", f"{_outside(tmp) / 'existing.avi'}\n"),
                                 _check("ucf101", root, ann))[-1],
         2, r"testlist01\.txt line \d+: path '/.*/outside/existing\.avi' is absolute; list paths relative"),
    Case("hmdb_dotdot_prepare", "hmdb51",
         lambda tmp, root, ann: (_outside(tmp), _append(ann / "brush_hair_test_split1.txt",
                                                        "../../../outside/existing.avi 1 \r\n"),
                                 _prepare("hmdb51", root, ann, tmp / "out"))[-1],
         2, r"brush_hair_test_split1\.txt line 4: path 'brush_hair/\.\./\.\./\.\./outside/existing\.avi' holds "
            r"'\.\.'"),
    Case("hmdb_absolute_check", "hmdb51",
         lambda tmp, root, ann: (_append(ann / "cartwheel_test_split1.txt",
                                         f"{_outside(tmp) / 'existing.avi'} 2 \r\n"),
                                 _check("hmdb51", root, ann))[-1],
         2, r"cartwheel_test_split1\.txt line 4: path 'cartwheel//.*/outside/existing\.avi' is absolute"),
    Case("kinetics_dotdot_label_prepare", "kinetics",
         lambda tmp, root, ann: (_outside(tmp), _append(ann, "../../outside,x,4,14,train\n"),
                                 _prepare("kinetics", root, ann, tmp / "out"))[-1],
         2, r"kinetics\.csv line 9: path 'train/\.\./\.\./outside/x_000004_000014\.mp4' holds '\.\.'"),
    Case("kinetics_absolute_id_check", "kinetics",
         lambda tmp, root, ann: (_append(ann, f"abseiling,{_outside(tmp)}/existing,4,14,val\n"),
                                 _check("kinetics", root, ann))[-1],
         2, r"kinetics\.csv line 9: path 'val/abseiling//.*outside/existing_000004_000014\.mp4' is absolute"),
    Case("csv_dotdot_prepare_overwrites_source", "csv",
         # the copy's path tmp/out/videos/clips/../../../outside/existing.mp4 is the source itself
         lambda tmp, root, ann: (_outside(tmp), _append(ann, "clips/../../../outside/existing.mp4,walk\n"),
                                 _prepare("csv", root, ann, tmp / "out"))[-1],
         2, r"train\.csv line 6: path 'clips/\.\./\.\./\.\./outside/existing\.mp4' holds '\.\.'"),
    Case("csv_absolute_check", "csv",
         lambda tmp, root, ann: (_append(ann, f"{_outside(tmp) / 'existing.mp4'},walk\n"),
                                 _check("csv", root, ann))[-1],
         2, r"train\.csv line 6: path '/.*/outside/existing\.mp4' is absolute; list paths relative"),
    Case("csv_symlink_out_check", "csv",
         lambda tmp, root, ann: (os.symlink(_outside(tmp) / "existing.mp4", root / "clips" / "link.mp4"),
                                 _append(ann, "clips/link.mp4,walk\n"), _check("csv", root, ann))[-1],
         2, r"train\.csv line 6: path 'clips/link\.mp4' resolves to .*/outside/existing\.mp4, outside the data root"),
    Case("csv_dotdot_flow_overwrites_npy", "csv",
         # the cache path tmp/flow/clips/../../outside/user.npy runs through a folder that does not exist yet
         lambda tmp, root, ann: (_outside(tmp), write_video(tmp / "data" / "outside" / "user.mp4",
                                                            make_frames(NUM_FRAMES, HEIGHT, WIDTH)),
                                 _append(ann, "clips/../../outside/user.mp4,walk\n"),
                                 _flow("csv", root, ann, tmp / "flow"))[-1],
         2, r"train\.csv line 6: path 'clips/\.\./\.\./outside/user\.mp4' holds '\.\.'"),
    # 2. outputs pointed at inputs
    Case("prepare_out_dot_inside_data_set", "csv",
         lambda tmp, root, ann: (_prepare("csv", root, ann, Path(".")), tmp / "data"),
         2, r"--out .*/data holds --root .*/data/videos: .*pass an --out outside the data set"),
    Case("prepare_out_inside_root", "csv",
         lambda tmp, root, ann: _prepare("csv", root, ann, root / "prepared"),
         2, r"--out .*/videos/prepared lies inside --root .*/videos"),
    Case("prepare_out_is_a_file", "csv",
         lambda tmp, root, ann: ((tmp / "a_file").write_text("mine"), _prepare("csv", root, ann, tmp / "a_file"))[-1],
         2, r"--out .*/a_file: not a folder; pass a new or empty folder"),
    Case("prepare_out_foreign_folder", "csv",
         lambda tmp, root, ann: ((tmp / "mine").mkdir(), (tmp / "mine" / "notes.txt").write_text("mine"),
                                 _prepare("csv", root, ann, tmp / "mine"))[-1],
         2, r"--out .*/mine: a folder that holds other files and no manifest\.json .*pass a new or empty folder"),
    Case("synth_over_real_release", "ucf101",
         # as unpacked from the official archives: UCF-101/ and ucfTrainTestlist/, plus a README of one's own
         lambda tmp, root, ann: (root.rename(root.with_name("UCF-101")),
                                 (tmp / "data" / "manifest.json").unlink(missing_ok=True),
                                 (tmp / "data" / "spec.json").unlink(missing_ok=True),
                                 (tmp / "data" / "README.md").write_text("x"),
                                 ["data", "synth", "--out", str(tmp / "data"), "--groups", "3",
                                  "--clips-per-group", "1", "--num-frames", "8"])[-1],
         2, r"data synth: .*/data holds files that `actionlab data synth` did not write .*choose a new or empty"),
    Case("synth_out_is_a_file", "",
         lambda tmp, root, ann: ((tmp / "a_file").write_text("mine"),
                                 ["data", "synth", "--out", str(tmp / "a_file"), "--num-frames", "8"])[-1],
         2, r"data synth: .*/a_file exists and is not a folder; choose another output folder"),
    Case("flow_dir_inside_root", "csv",
         lambda tmp, root, ann: _flow("csv", root, ann, root / "flow"),
         2, r"--flow-dir .*/videos/flow lies inside --root .*pass an --flow-dir outside the data set"),
    Case("flow_dir_foreign_folder", "csv",
         lambda tmp, root, ann: ((tmp / "mine").mkdir(), np.save(tmp / "mine" / "keep.npy", np.arange(3)),
                                 _flow("csv", root, ann, tmp / "mine"))[-1],
         2, r"--flow-dir .*/mine: a folder that holds other files and no manifest\.json of a flow cache"),
    Case("flow_manifest_not_json", "csv",
         lambda tmp, root, ann: ((tmp / "flow").mkdir(), (tmp / "flow" / "manifest.json").write_text("{oops"),
                                 _flow("csv", root, ann, tmp / "flow"))[-1],
         2, r"flow/manifest\.json: not the manifest of a flow cache made by `actionlab flow`; pass another"),
    # 3. silent label corruption
    Case("classind_repeated_number", "ucf101",
         lambda tmp, root, ann: (_append(ann / "classInd.txt", "2 Extra\n"), _check("ucf101", root, ann))[-1],
         2, r"classInd\.txt line 5: '2 Extra' repeats a class number or name of an earlier line; give each class"),
    Case("csv_duplicate_row_two_labels", "csv",
         lambda tmp, root, ann: (_append(ann, "clips/a.mp4,run\n"), _check("csv", root, ann))[-1],
         1, r"clips/a\.mp4: listed with two labels, 'walk' \(train\.csv line 2\) and 'run' \(train\.csv line 6\); "
            r"delete the wrong line"),
    Case("ucf_video_in_train_and_test", "ucf101",
         lambda tmp, root, ann: (_append(ann / "trainlist01.txt", "GreenLeft/v_GreenLeft_g01_c01.avi 1\n"),
                                 _check("ucf101", root, ann))[-1],
         1, r"v_GreenLeft_g01_c01\.avi: in both the train list and the test list: .*take it out of one"),
    Case("ucf_label_not_its_folder", "ucf101",
         lambda tmp, root, ann: (_append(ann / "trainlist01.txt", "GreenLeft/v_GreenLeft_g01_c01.avi 3\n"),
                                 _check("ucf101", root, ann, "--subset", "train"))[-1],
         1, r"v_GreenLeft_g01_c01\.avi: label 3 is 'RedLeft' in classInd\.txt, but the video is in the folder "
            r"'GreenLeft' \(trainlist01\.txt line \d+\); correct the label"),
    Case("csv_avi_and_mp4_one_id_check", "csv",
         lambda tmp, root, ann: (write_video(root / "clips" / "a.avi", make_frames(NUM_FRAMES, HEIGHT, WIDTH)),
                                 _append(ann, "clips/a.avi,walk\n"), _check("csv", root, ann))[-1],
         1, r"clips/a\.avi: same video id 'clips/a' as .*clips/a\.mp4 \(train\.csv line 2\).*rename one of them"),
    Case("csv_avi_and_mp4_one_id_prepare", "csv",
         lambda tmp, root, ann: (write_video(root / "clips" / "a.avi", make_frames(NUM_FRAMES, HEIGHT, WIDTH)),
                                 _append(ann, "clips/a.avi,walk\n"), _prepare("csv", root, ann, tmp / "out"))[-1],
         2, r"clips/a\.avi: same video id 'clips/a' as .*clips/a\.mp4 \(train\.csv line 2\).*rename one of them"),
    Case("csv_nested_ids_check", "csv",
         lambda tmp, root, ann: (write_video(root / "clips" / "a" / "b.mp4", make_frames(NUM_FRAMES, HEIGHT, WIDTH)),
                                 _append(ann, "clips/a/b.mp4,run\n"), _check("csv", root, ann))[-1],
         1, r"clips/a/b\.mp4: video id 'clips/a/b' \(train\.csv line 6\) lies in the folder of video 'clips/a' "
            r".*rename one of them"),
    Case("convert_flow_npy_beside_another_videos_folder", "",
         lambda tmp, root, ann: (_npy_cache(tmp / "flow", ["a", "a/b"]),
                                 ["data", "convert-flow", "--flow-dir", str(tmp / "flow")])[-1],
         2, r"flow/a\.npy: its images would go in .*flow/a, which holds something else .*nothing was converted"),
    # 4. a half-prepared copy
    Case("check_half_prepared_copy", "csv",
         lambda tmp, root, ann: (_half_prepared(tmp, root, ann),
                                 _check("csv", tmp / "prep" / "videos", tmp / "prep" / "train.csv"))[-1],
         2, r"prep/manifest\.json: `actionlab data prepare` has not finished writing .*/prep/videos .*run the same "
            r"command again to finish it"),
    # bad input gets one line, never a traceback
    Case("ucf_superscript_label", "ucf101",
         lambda tmp, root, ann: (_append(ann / "trainlist01.txt", "GreenLeft/v_GreenLeft_g02_c01.avi \u00b2\n"),
                                 _check("ucf101", root, ann, "--subset", "train"))[-1],
         1, r"trainlist01\.txt: line \d+: label '\u00b2' is not a class number of classInd\.txt \(1\.\.4\)"),
    Case("csv_non_ascii_label", "csv",
         lambda tmp, root, ann: (ann.write_text(ann.read_text().replace(",walk", ",caf\u00e9 \u6b69\u304f"),
                                                encoding="utf-8"), _check("csv", root, ann))[-1],
         0, r"no problems found"),
    Case("csv_not_utf8", "csv",
         lambda tmp, root, ann: (_append(ann, b"more/c.mp4,caf\xe9\n"), _check("csv", root, ann))[-1],
         2, r"train\.csv line 6: not UTF-8 text \(byte 0xe9\); save the list as UTF-8"),
    Case("csv_bom", "csv",
         lambda tmp, root, ann: (ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes()), _check("csv", root, ann))[-1],
         0, r"no problems found"),
    Case("ucf_classind_bom", "ucf101",
         lambda tmp, root, ann: ((ann / "classInd.txt").write_bytes(b"\xef\xbb\xbf"
                                                                    + (ann / "classInd.txt").read_bytes()),
                                 _check("ucf101", root, ann))[-1],
         0, r"no problems found"),
    Case("csv_nul_byte", "csv",
         lambda tmp, root, ann: (_append(ann, b"clips/\x00.mp4,walk\n"), _check("csv", root, ann))[-1],
         2, r"train\.csv line 6: path 'clips/\\x00\.mp4' holds a NUL byte; remove it from the list"),
    Case("csv_field_too_large", "csv",
         lambda tmp, root, ann: (_append(ann, "clips/a.mp4,walk,\"" + "x" * 200_000 + "\"\n"),
                                 _check("csv", root, ann))[-1],
         2, r"train\.csv line 6: not CSV \(field larger than field limit \(131072\)\); fix or remove that line"),
    Case("csv_name_too_long", "csv",
         lambda tmp, root, ann: (_append(ann, "clips/" + "x" * 300 + ".mp4,walk\n"), _check("csv", root, ann))[-1],
         1, r"clips/x+\.mp4: cannot be read \(File name too long; listed in train\.csv line 6\)"),
    Case("csv_symlink_loop", "csv",
         lambda tmp, root, ann: (os.symlink("loop.mp4", root / "clips" / "loop.mp4"),
                                 _append(ann, "clips/loop.mp4,walk\n"), _check("csv", root, ann))[-1],
         1, r"clips/loop\.mp4: a symlink loop, not a video file or frame folder \(listed in train\.csv line 6\)"),
    Case("csv_fifo_as_video", "csv",
         lambda tmp, root, ann: (os.mkfifo(root / "clips" / "pipe.mp4"), _append(ann, "clips/pipe.mp4,walk\n"),
                                 _check("csv", root, ann))[-1],
         1, r"clips/pipe\.mp4: a FIFO, not a video file or frame folder \(listed in train\.csv line 6\)"),
    Case("fifo_as_list", "csv",
         lambda tmp, root, ann: (ann.unlink(), os.mkfifo(ann), _check("csv", root, ann))[-1],
         2, r"train\.csv: a FIFO, not a regular file; expected a CSV with the header 'path,label'"),
    Case("fifo_frame_in_frame_folder", "csv",
         lambda tmp, root, ann: ((folder := _frame_folder(root, ann)), (folder / "img_00003.jpg").unlink(),
                                 os.mkfifo(folder / "img_00003.jpg"), _check("csv", root, ann))[-1],
         1, r"clips/f: img_00003\.jpg is a FIFO, not a regular file \(frame folders hold plain JPEG files\)"),
    Case("jpeg_claiming_20000x20000", "csv",
         lambda tmp, root, ann: ((folder := _frame_folder(root, ann)),
                                 (folder / "img_00003.jpg").write_bytes(_jpeg_claiming(20000, 20000)),
                                 _check("csv", root, ann))[-1],
         1, r"clips/f: the last frame, img_00003\.jpg, cannot be read \(Image size \(400000000 pixels\) exceeds"),
    Case("kinetics_row_without_youtube_id", "kinetics",
         lambda tmp, root, ann: (_append(ann, "abseiling,,4,14,val\n"), _check("kinetics", root, ann))[-1],
         1, r"kinetics\.csv: line 9: no youtube_id"),
]


# --- running a case ------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (symlinks not followed, special files never opened): relative
    path -> (kind, size, mtime_ns, sha256 of a regular file / a symlink's target)."""
    out = {}
    for parent, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            path = Path(parent) / name
            info = os.lstat(path)
            digest = ""
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                digest = os.readlink(path)
            if stat.S_ISDIR(info.st_mode):  # a folder changes with its entries, compared one by one
                out[str(path.relative_to(folder))] = (stat.S_IFDIR, 0, 0, "")
            else:
                out[str(path.relative_to(folder))] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns, digest)
    return out


def changes(before: dict, after: dict, may_change: tuple[str, ...]) -> list[str]:
    """'added/removed/changed <path>' for each entry that differs, outside the `may_change` folders."""
    def allowed(path: str) -> bool:
        return any(path == folder or path.startswith(folder + os.sep) for folder in may_change)

    out = []
    for path in sorted(set(before) | set(after)):
        if allowed(path) or before.get(path) == after.get(path):
            continue
        out.append(f"{'added' if path not in before else 'removed' if path not in after else 'changed'} {path}")
    return out


class Outcome(NamedTuple):
    status: int | str  # the exit status, 'hung' or 'traceback: <exception>'
    stdout: str
    stderr: str
    changed: list[str]  # what changed outside the command's output folder


def _unblock_fifos(folder: Path) -> None:
    """Open every FIFO under `folder` for writing and close it: a reader blocked on one sees its end."""
    for parent, _, files in os.walk(folder):
        for name in files:
            path = Path(parent) / name
            if stat.S_ISFIFO(os.lstat(path).st_mode):
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass


def build(case: Case, tmp: Path, pristine: dict[str, Path]) -> tuple[list[str], Path | None]:
    """Copy the case's layout into tmp/data, spoil it; returns (argv, working folder or None)."""
    root = annotations = None
    if case.dataset:
        shutil.copytree(pristine[case.dataset], tmp / "data", symlinks=True)
        root, annotations = (tmp / "data" / part for part in LAYOUT[case.dataset])
    made = case.setup(tmp, root, annotations)
    return made if isinstance(made, tuple) else (made, None)


def run_case(case: Case, tmp: Path, pristine: dict[str, Path], capture) -> Outcome:
    """Build the case under `tmp`, run its command in-process (in a thread, so a hang is seen), snapshot
    around it. `capture()` returns (stdout, stderr) written since its last call."""
    argv, cwd = build(case, tmp, pristine)
    before = snapshot(tmp)
    capture()
    result = {}

    def target():
        old = os.getcwd()
        try:
            if cwd is not None:
                os.chdir(cwd)
            result["status"] = main(argv)
        except SystemExit as err:
            result["status"] = err.code
        except BaseException as err:  # noqa: BLE001 - a traceback is what the table looks for
            result["status"] = f"traceback: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            result["traceback"] = traceback.format_exc()
        finally:
            os.chdir(old)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_S)
    if thread.is_alive():
        _unblock_fifos(tmp)
        thread.join(HANG_S)
        result.setdefault("status", "hung")
        result["status"] = f"hung (released by writing to its FIFO, then: {result['status']})"
    stdout, stderr = capture()
    return Outcome(result["status"], stdout, stderr + result.get("traceback", ""),
                   changes(before, snapshot(tmp), case.may_change))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """Each layout, written once (tiny real videos); cases copy it."""
    folders = {}
    for dataset in LAYOUT:
        folder = tmp_path_factory.mktemp(f"pristine_{dataset}")
        write_layout(dataset, folder, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH)
        folders[dataset] = folder
    return folders


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case, pristine, tmp_path, capsys):
    outcome = run_case(case, tmp_path, pristine, lambda: tuple(capsys.readouterr()))
    report = f"status {outcome.status}\nstdout:\n{outcome.stdout}\nstderr:\n{outcome.stderr}"
    assert outcome.status == case.status, report
    assert "Traceback" not in outcome.stdout + outcome.stderr, report
    if case.status == 2:
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("actionlab "), report
        assert re.search(case.line, lines[0]), report
    else:
        found = [line for line in outcome.stdout.splitlines() if re.search(case.line, line)]
        assert len(found) == 1, report
        if case.status == 1:  # the problem list: this one problem, then the count
            assert outcome.stdout.strip().splitlines()[-1] == "1 problem", report
    assert outcome.changed == [], report


# --- property: no listed path leads out of the root ---------------------------------------

# Pieces a hostile list is made of: real names inside and outside the root, what leaves it, what no
# file system takes (NUL, a 300-byte name), Windows separators, unicode, nothing.
_SEGMENTS = st.one_of(
    st.sampled_from(["a.mp4", "clips", "b.avi", "..", ".", "", "\\", "..\\a.mp4", "outside", "root", "~",
                     "x" * 300, "é.mp4", "ﾠ", "a\x00.mp4", " ", "a.mp4 "]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),  # any unicode but lone surrogates
)
_PATHS = st.builds(lambda lead, parts: lead + "/".join(parts),
                   st.sampled_from(["", "/", "//", "./", "../", "\\", "~/", "C:\\"]),
                   st.lists(_SEGMENTS, min_size=1, max_size=4))
_ROWS = st.lists(st.tuples(_PATHS, st.sampled_from(["walk", "run", "", " ", "wälk", "a\\b"])), min_size=1,
                 max_size=4)


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory) -> Path:
    """tmp/data/root holding a.mp4, b.avi, clips/a.mp4, é.mp4; the same names beside it and in tmp/outside."""
    tmp = tmp_path_factory.mktemp("property")
    for folder in (tmp / "data" / "root", tmp / "data", tmp / "outside"):
        for name in ("a.mp4", "b.avi", "clips/a.mp4", "é.mp4"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"")
    return tmp / "data" / "root"


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(train_rows=_ROWS, test_rows=_ROWS)
def test_no_generated_csv_path_leads_out_of_the_root(hostile_root, train_rows, test_rows):
    """read_split / read_train_test either return records that all resolve inside the root, or refuse
    with a UserError of one line; never another exception."""
    lists = hostile_root.parent.parent / "lists"  # beside data/, so a '..' path cannot name a list
    lists.mkdir(exist_ok=True)
    train, test = _write_csv(lists / "train.csv", train_rows), _write_csv(lists / "test.csv", test_rows)
    for read in (lambda: [read_split("csv", root=hostile_root, annotations=train)],
                 lambda: list(read_train_test("csv", root=hostile_root, annotations=train, test_annotations=test))):
        try:
            splits = read()
        except UserError as err:
            assert str(err) and "\n" not in str(err), repr(str(err))
            event("refused")
            continue
        event("read: records" if any(split.records for split in splits) else "read: no records")
        for split in splits:
            for record in split.records:
                assert resolved(record.path).is_relative_to(resolved(hostile_root)), record
