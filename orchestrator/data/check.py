"""`actionlab data check`: find every video of a split that training would have to skip.

A probe is cheap (no full decode) and names one reason per bad file, in this order:

- 'missing file', 'zero-byte file';
- 'truncated: ...' when the container's own size fields (MP4 boxes, the AVI RIFF header) claim
  more bytes than the file has (an interrupted download or copy; an MP4 whose index box was never
  written cannot even be opened, so this check comes before opening);
- 'not a video or cannot be opened: <decord's message>';
- 'truncated: the last frame ... cannot be decoded' (it opens, but the frames the container
  claims are not all there);
- 'hangs: ...' when opening or decoding the last frame runs past the time limit (decord loops
  forever on a container that lists more frames than decode; the decode process is killed);
- 'decord cannot decode this frame size' (a decord 0.6 bug at a few small widths, e.g. 48 px);
- 'too short: N frames, the clip needs M'.

A JPEG frame folder (`actionlab data prepare --format frames`) is bad when it is empty, has a gap
in its numbering, its last image cannot be read, or it is too short.
"""
import os
import re
import struct
from pathlib import Path

import numpy as np
from tqdm import tqdm

from orchestrator.data.annotations import Problem, Split

MAX_MESSAGE_CHARS = 160
DECODE_TIMEOUT_S = 60.0  # as data.decode_timeout_s: the slowest good video measured took 6 s


def _short_message(err: Exception) -> str:
    """First line of a decord error without its '[12:00:00] /src/file.cc:42: ' prefix."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    line = re.sub(r"^(\[[0-9:]+\] \S+:\d+: )+", "", lines[0]).strip()
    return line[:MAX_MESSAGE_CHARS]


def _mp4_truncation(f, size_bytes: int) -> str | None:
    """Walk the top-level boxes (size, type): a box running past the end means missing bytes."""
    offset, box_types = 0, []
    while offset + 8 <= size_bytes:
        f.seek(offset)
        box_bytes, box_type = struct.unpack(">I4s", f.read(8))
        if box_bytes == 1:  # 64-bit size follows the type
            box_bytes = struct.unpack(">Q", f.read(8))[0]
        elif box_bytes == 0:  # the box runs to the end of the file by definition
            return None
        if box_bytes < 8:
            return None  # not a box structure we understand; leave it to the decoder
        name = box_type.decode("latin-1")
        if offset + box_bytes > size_bytes:
            return (f"truncated: the MP4 '{name}' box at byte {offset} needs {box_bytes} bytes "
                    f"but the file ends after {size_bytes - offset}")
        box_types.append(name)
        offset += box_bytes
    if "moov" not in box_types:
        return "truncated: the MP4 has no 'moov' index box (it is written last, so an interrupted write loses it)"
    return None


def _container_truncation(path: Path, size_bytes: int) -> str | None:
    """Reason if the container header promises more bytes than the file holds, else None."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            claimed_bytes = struct.unpack("<I", head[4:8])[0] + 8
            # Only a shortfall counts: an OpenDML AVI (> 1 GB) has further RIFF chunks after the first.
            if claimed_bytes > size_bytes:
                return f"truncated: the AVI header claims {claimed_bytes} bytes but the file has {size_bytes}"
        elif len(head) >= 8 and head[4:8] == b"ftyp":
            return _mp4_truncation(f, size_bytes)
    return None


def _probe_frame_folder(folder: Path, min_frames: int) -> str | None:
    """Why a frame folder cannot give a clip of `min_frames` frames, or None if it can. Lists its
    images and reads only the last one."""
    from orchestrator.data.video_io import FRAME_PREFIX, frame_image, read_frame_folder

    names = {name for name in os.listdir(folder) if name.startswith(FRAME_PREFIX) and name.endswith(".jpg")}
    if not names:
        return "empty frame folder (no img_00001.jpg, ...)"
    gap = next((i for i in range(len(names)) if frame_image(folder, i).name not in names), None)
    if gap is not None:
        return f"frame folder of {len(names)} images without {frame_image(folder, gap).name} (a gap in the numbering)"
    try:
        read_frame_folder(folder, [len(names) - 1])
    except OSError as err:
        return f"the last frame, {frame_image(folder, len(names) - 1).name}, cannot be read ({_short_message(err)})"
    if len(names) < min_frames:
        return f"too short: {len(names)} frames, the clip needs {min_frames}"
    return None


def probe_video(path: Path, *, min_frames: int = 1, decode_timeout_s: float = DECODE_TIMEOUT_S) -> str | None:
    """Why a video (or JPEG frame folder) cannot give a clip of `min_frames` frames, or None if it can.

    Decodes only the last frame (a seek to the last key frame), never the whole video, in a decode
    process killed after `decode_timeout_s` (decord can hang; see orchestrator/data/decode_guard.py).
    """
    import decord

    from orchestrator.data.decode_guard import DecodeGuard, DecodeTimeout

    path = Path(path)
    if path.is_dir():
        return _probe_frame_folder(path, min_frames)
    if not path.is_file():
        return "missing file"
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        return "zero-byte file"
    reason = _container_truncation(path, size_bytes)
    if reason:
        return reason
    try:
        reader = DecodeGuard(decode_timeout_s).open(path)
        num_frames = len(reader)
    except DecodeTimeout as err:
        return f"hangs: {err}"
    except (decord.DECORDError, RuntimeError) as err:
        return f"not a video or cannot be opened: {_short_message(err)}"
    if num_frames == 0:
        return "not a video or cannot be opened: no video frames"
    try:
        # Only the last frame: seeking there decodes from the last key frame on. (Decoding frame 0
        # as well would not tell corrupt from cut: decord's decoder thread reads packets ahead, so a
        # broken last packet can fail a request for frame 0 of a short video.)
        reader.read(np.array([[num_frames - 1]]))
    except DecodeTimeout as err:  # e.g. a container that lists more frames than decode
        return (f"hangs: the last frame ({num_frames - 1} of the {num_frames} the container claims) does not "
                f"decode; {err}")
    except (decord.DECORDError, RuntimeError) as err:
        if "size must exactly match" in str(err):  # not a bad file: decord 0.6 fails at some widths
            return f"decord cannot decode this frame size (seen at widths 16, 24, 48, 72): {_short_message(err)}"
        return (f"truncated: the last frame ({num_frames - 1} of the {num_frames} the container claims) "
                f"cannot be decoded ({_short_message(err)})")
    if num_frames < min_frames:
        return f"too short: {num_frames} frames, the clip needs {min_frames}"
    return None


def check_split(split: Split, *, min_frames: int = 1, progress: bool = True) -> list[Problem]:
    """The split's reading problems followed by one Problem per record whose video fails `probe_video`."""
    problems = list(split.problems)
    for record in tqdm(split.records, desc="checking videos", unit="video", disable=not progress):
        reason = probe_video(record.path, min_frames=min_frames)
        if reason is not None:
            problems.append(Problem(record.path, reason))
    return problems


def format_problems(problems: list[Problem]) -> str:
    """One '<path>: <reason>' line per problem, then a count line."""
    count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
    return "\n".join([f"{p.path}: {p.reason}" for p in problems] + [count])
