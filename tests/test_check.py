"""`probe_video` on real broken files: each way a video goes bad gives its own reason."""
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from orchestrator.data.annotations import Problem, Split, VideoRecord
from orchestrator.data.check import check_split, format_problems, probe_video
from orchestrator.data.video_io import write_video
from conftest import make_frames

NUM_FRAMES = 16


def _noise(num_frames: int) -> np.ndarray:
    # Noise compresses badly, so most of the file is frame data and a cut lands inside it.
    return np.random.default_rng(0).integers(0, 256, (num_frames, 32, 32, 3), dtype=np.uint8)


def _truncated_copy(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _mp4_with_last_frames_cut(path: Path, cut_bytes: int = 50) -> Path:
    """A faststart MP4 (index box first) with its last bytes cut and the 'mdat' size fixed to match:
    the container looks whole and opens, but the last frames' data is gone."""
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"threads": "1"}
        for frame in _noise(NUM_FRAMES):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes()[:-cut_bytes])
    offset = 0
    while data[offset + 4:offset + 8] != b"mdat":
        offset += struct.unpack(">I", data[offset:offset + 4])[0]
    data[offset:offset + 4] = struct.pack(">I", len(data) - offset)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("check")
    good_mp4 = write_video(folder / "good.mp4", make_frames(NUM_FRAMES, 32, 64))
    good_avi = write_video(folder / "good.avi", _noise(NUM_FRAMES))
    noisy_mp4 = write_video(folder / "noisy.mp4", _noise(NUM_FRAMES))
    (folder / "zero.mp4").touch()
    (folder / "text.mp4").write_text("this is not a video\n")
    return {
        "good_mp4": good_mp4,
        "good_avi": good_avi,
        "short": write_video(folder / "short.mp4", make_frames(8, 32, 64)),
        "zero": folder / "zero.mp4",
        "text": folder / "text.mp4",
        "missing": folder / "missing.mp4",
        "cut_mp4": _truncated_copy(noisy_mp4, folder / "cut.mp4", 0.6),
        "cut_avi": _truncated_copy(good_avi, folder / "cut.avi", 0.6),
        "cut_mp4_small": _truncated_copy(noisy_mp4, folder / "cut_small.mp4", 0.999),
        "last_frames_cut": _mp4_with_last_frames_cut(folder / "last_cut.mp4"),
    }


@pytest.mark.parametrize("name, min_frames, expected", [
    ("good_mp4", 1, None),
    ("good_mp4", NUM_FRAMES, None),
    ("good_avi", NUM_FRAMES, None),
    ("missing", 1, "missing file"),
    ("zero", 1, "zero-byte file"),
    ("short", 9, "too short: 8 frames, the clip needs 9"),
    ("good_mp4", NUM_FRAMES + 1, f"too short: {NUM_FRAMES} frames, the clip needs {NUM_FRAMES + 1}"),
])
def test_probe_exact_reasons(videos, name, min_frames, expected):
    assert probe_video(videos[name], min_frames=min_frames) == expected


@pytest.mark.parametrize("name, prefix", [
    ("text", "not a video or cannot be opened: Error reading"),  # decord's own words follow the colon
    ("cut_mp4", "truncated: the MP4 'mdat' box at byte"),
    ("cut_mp4_small", "truncated: the MP4 'moov' box at byte"),  # the index is written last
    ("cut_avi", "truncated: the AVI header claims"),
    ("last_frames_cut",
     f"truncated: the last frame ({NUM_FRAMES - 1} of the {NUM_FRAMES} the container claims) cannot be decoded ("),
])
def test_probe_reason_kinds(videos, name, prefix):
    reason = probe_video(videos[name])
    assert reason is not None and reason.startswith(prefix), reason


def test_decord_frame_size_bug_is_not_called_truncation(tmp_path):
    # a fine file 48 px wide, a width decord 0.6 cannot copy frames out of
    path = write_video(tmp_path / "w48.mp4", make_frames(4, 32, 48))
    reason = probe_video(path)
    assert reason is not None and reason.startswith("decord cannot decode this frame size"), reason


def test_truncation_reason_gives_the_sizes(videos):
    size_bytes = videos["cut_avi"].stat().st_size
    full_bytes = videos["good_avi"].stat().st_size
    expected = f"truncated: the AVI header claims {full_bytes} bytes but the file has {size_bytes}"
    assert probe_video(videos["cut_avi"]) == expected


def test_check_split_keeps_reading_problems_then_probes_every_record(videos, tmp_path):
    list_file = tmp_path / "trainlist01.txt"
    split = Split(
        records=[VideoRecord(videos[n], 0, n) for n in ("good_mp4", "zero", "short", "good_avi")],
        class_names=["a"],
        problems=[Problem(list_file, "line 3: expected '<Class>/<video>.avi <label>', got 'x'")],
    )
    problems = check_split(split, min_frames=9, progress=False)
    assert problems == [
        split.problems[0],
        Problem(videos["zero"], "zero-byte file"),
        Problem(videos["short"], "too short: 8 frames, the clip needs 9"),
    ]
    assert format_problems(problems).splitlines() == [
        f"{list_file}: line 3: expected '<Class>/<video>.avi <label>', got 'x'",
        f"{videos['zero']}: zero-byte file",
        f"{videos['short']}: too short: 8 frames, the clip needs 9",
        "3 problems",
    ]
    assert check_split(Split(split.records[:1], ["a"], []), progress=False) == []
    assert format_problems([]) == "0 problems"
