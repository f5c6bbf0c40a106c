"""Decoding under a time limit: a video on which decord hangs is killed, skipped with its path and
reason, and the next video gets a fresh decode process; items are bit-identical with the guard on
or off; no decode process outlives its parent."""
import logging
import os
import pickle
import signal
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_frames
from orchestrator.data.annotations import VideoRecord
from orchestrator.data.dataset import VideoDataset, collate_skip_bad
from orchestrator.data.decode_guard import DecodeGuard, close_decode_process, decode_process_pid
from orchestrator.data.transforms import ClipTransform
from orchestrator.data.video_io import write_video

LISTED, HIDDEN = 200, 150  # samples the moov lists; of those, hidden by the edit list (> 128: decord hangs)
LIMIT_S = 2.0  # the good videos here decode in milliseconds


def write_overreporting_mp4(path: Path) -> Path:
    """An H.264 mp4 whose moov lists LISTED samples while only LISTED - HIDDEN frames decode.

    One key frame (x264 keyint 1000, no scene cuts), moov before mdat; then the edit list's
    media_time is moved HIDDEN frames later. FFmpeg still demuxes all LISTED packets, flagging the
    first HIDDEN as discard, so their frames are decoded and dropped: decord 0.6 counts packets
    (`len()` = LISTED) and, asked for a frame past the last that decodes, waits forever once more
    than 128 frames are missing (its drain pushes 128 placeholder frames, then `SkipFramesImpl`
    spins at 100 % CPU; dmlc/decord#373).
    """
    import av

    frames = make_frames(LISTED, 32, 64)
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "keyint=1000:scenecut=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    elst, mdat = data.find(b"elst"), data.find(b"mdat")
    # elst (version 0): size, 'elst', version+flags, entry count, segment_duration, media_time
    assert 0 < elst < mdat and data[elst + 4] == 0, "expected a version-0 edit list in a leading moov"
    ticks_per_frame = 512  # stream time base 1/12800 at 25 fps
    media_time = struct.unpack_from(">I", data, elst + 16)[0]
    struct.pack_into(">I", data, elst + 16, media_time + HIDDEN * ticks_per_frame)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decode_guard")
    return {"good.mp4": write_video(folder / "good.mp4", make_frames(24, 32, 64, seed=1)),
            "good.avi": write_video(folder / "good.avi", make_frames(24, 32, 64, seed=2)),
            "hangs.mp4": write_overreporting_mp4(folder / "hangs.mp4")}


def record(videos, name: str, label: int = 0) -> VideoRecord:
    return VideoRecord(videos[name], label, Path(name).stem)


def first_and_last(num_frames: int, rng) -> np.ndarray:
    return np.array([[0, num_frames - 1]])  # the last listed frame: past the last that decodes in hangs.mp4


def random_clip_and_end(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(V=2, T=4): 4 frames from a random start among the first 8, and the last 4. On hangs.mp4
    decord hangs whenever a batch starts among the hidden frames and ends past the decodable ones."""
    starts = np.array([rng.integers(0, 8), num_frames - 4])
    return starts[:, None] + np.arange(4)[None, :]


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a zombie is a child nobody reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_crafted_file_lists_more_frames_than_decode(videos):
    import av

    with av.open(str(videos["hangs.mp4"])) as container:
        packets = sum(1 for p in container.demux(video=0) if p.size)
    with av.open(str(videos["hangs.mp4"])) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert (packets, decoded) == (LISTED, LISTED - HIDDEN)


def test_a_hanging_decode_is_killed_skipped_with_its_reason_and_replaced(videos, caplog):
    names = ["good.mp4", "hangs.mp4", "good.avi"]
    guarded = VideoDataset([record(videos, n) for n in names], sampler=first_and_last, decode_timeout_s=LIMIT_S)
    plain = VideoDataset([record(videos, "good.mp4"), record(videos, "good.avi")], sampler=first_and_last)
    assert torch.equal(guarded[0]["inputs"]["rgb"], plain[0]["inputs"]["rgb"])
    first_child = decode_process_pid()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        assert guarded[1] is None
    assert LIMIT_S <= time.monotonic() - start < LIMIT_S + 5  # decord hung (an error would come at once)
    [message] = [r.getMessage() for r in caplog.records if r.name == "actionlab.data"]
    assert message == f"skipping {videos['hangs.mp4']}: decode took longer than 2 s (killed; data.decode_timeout_s)"
    assert decode_process_pid() is None and not alive(first_child)  # killed and reaped
    assert torch.equal(guarded[2]["inputs"]["rgb"], plain[1]["inputs"]["rgb"])  # a fresh child reads the next
    assert decode_process_pid() not in (None, first_child)
    close_decode_process()


def test_a_decode_process_that_dies_mid_video_skips_that_video_only(videos, caplog):
    dataset = VideoDataset([record(videos, "hangs.mp4"), record(videos, "good.mp4")], sampler=first_and_last,
                           decode_timeout_s=60)
    dataset[1]
    pid = decode_process_pid()
    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()  # a crash while decord spins
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        assert dataset[0] is None
    assert f"skipping {videos['hangs.mp4']}: the decode process died (exit status -9)" in caplog.text
    assert not alive(pid)
    caplog.clear()
    assert dataset[1] is not None
    pid = decode_process_pid()
    os.kill(pid, signal.SIGKILL)  # and between videos (say, the OOM killer): the next video is not blamed
    # until waitpid reports it (all its threads gone; the /proc state says Z before that), the
    # dying child cannot be told from a live one
    assert wait_until(lambda: os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None)
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        assert dataset[1] is not None
    assert caplog.text == "" and decode_process_pid() != pid
    close_decode_process()


@pytest.mark.parametrize("name", ["good.mp4", "good.avi"])  # .avi: decoded in order, in the child too
def test_items_are_bit_identical_with_and_without_the_guard(videos, name):
    transform = ClipTransform(train=True, short_side=32, crop_size=24, crop="multiscale", flip=True)
    kwargs = dict(sampler=random_clip_and_end, transform=transform, seed=11)
    records = [record(videos, name, label=i) for i in range(3)]
    plain, guarded = VideoDataset(records, **kwargs), VideoDataset(records, **kwargs, decode_timeout_s=LIMIT_S)
    for epoch in range(3):
        for index in range(3):
            a, b = plain[(epoch, index)], guarded[(epoch, index)]
            assert torch.equal(a["inputs"]["rgb"], b["inputs"]["rgb"]) and a["label"] == b["label"]
    close_decode_process()


def decode_children_of(pids: set[int]) -> set[int]:
    """Decode processes whose parent is one of `pids`."""
    children = set()
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError, ValueError, IndexError):
            continue
        if b"decode_guard import serve" in cmdline and ppid in pids:
            children.add(int(entry.name))
    return children


def test_dataloader_workers_skip_a_hanging_video_and_leave_no_decode_process(videos):
    names = ["good.mp4", "hangs.mp4", "good.avi", "good.mp4", "good.avi"]
    records = [record(videos, n, label=i) for i, n in enumerate(names)]
    dataset = VideoDataset(records, sampler=random_clip_and_end, seed=5, decode_timeout_s=LIMIT_S)
    plain = VideoDataset(records, sampler=random_clip_and_end, seed=5)
    class Keys:  # (epoch, index) keys, two a batch, in order: the epoch reaches the persistent workers
        epoch = 0

        def __iter__(self):
            return iter([[(self.epoch, i) for i in range(j, min(j + 2, len(names)))] for j in range(0, len(names), 2)])

        def __len__(self):
            return 3

    batches = Keys()
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=2, collate_fn=collate_skip_bad,
                        persistent_workers=True)
    for epoch in range(2):  # the same workers both epochs: the hung one's worker got a new child
        batches.epoch = epoch
        got = list(loader)
        assert sum(b["num_skipped"] for b in got) == 1
        assert torch.cat([b["index"] for b in got]).tolist() == [0, 2, 3, 4]
        for index, clip in zip([0, 2, 3, 4], torch.cat([b["inputs"]["rgb"] for b in got])):
            assert torch.equal(clip, plain[(epoch, index)]["inputs"]["rgb"])
    workers = {w.pid for w in loader._iterator._workers}
    children = decode_children_of(workers)
    assert len(children) == 2  # one per worker
    del loader, batches  # persistent workers shut down with their iterator
    assert wait_until(lambda: not any(alive(pid) for pid in workers | children))


def test_the_decode_process_never_imports_from_the_working_folder(videos, tmp_path, monkeypatch):
    """`python -c` puts the folder it runs in first on sys.path: a decord.py there used to run in the child."""
    (tmp_path / "decord.py").write_text("import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n"
                                        "raise ImportError('the working folder decord.py')\n")
    monkeypatch.chdir(tmp_path)
    close_decode_process()  # the next video starts a fresh child, in tmp_path
    try:
        assert len(DecodeGuard(LIMIT_S).open(videos["good.mp4"])) == 24
    finally:
        close_decode_process()
    assert not (tmp_path / "ran").exists()


def test_the_guard_pickles_without_its_process():
    guard = pickle.loads(pickle.dumps(DecodeGuard(7.5)))
    assert guard.timeout_s == 7.5
    with pytest.raises(ValueError, match="timeout_s"):
        DecodeGuard(0)


def test_build_dataset_takes_the_limit_from_the_config(tmp_path):
    from orchestrator.config import parse_experiment
    from orchestrator.data.dataset import build_dataset

    on = build_dataset(parse_experiment({}), [], train=True)
    off = build_dataset(parse_experiment({"data": {"decode_timeout_s": 0}}), [], train=True)
    assert on.decode_guard.timeout_s == 60 and off.decode_guard is None


def test_data_check_reports_the_hanging_video_and_goes_on(videos):
    from orchestrator.data.check import probe_video

    reason = probe_video(videos["hangs.mp4"], decode_timeout_s=2)
    assert reason.startswith("hangs: the last frame (199 of the 200") and "killed" in reason
    assert probe_video(videos["good.mp4"], decode_timeout_s=2) is None  # a fresh decode process took over
