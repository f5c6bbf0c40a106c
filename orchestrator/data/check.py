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
in its numbering, holds a frame that is not a regular file (a FIFO would block the read for ever; a
symlink could lead out of the data root), its first and last images differ in size (a header can
claim 20000x20000), its last image cannot be read, or it is too short.

A path that is not a regular file or folder (a FIFO, a socket, a device) is never opened.
"""
import os
import re
import struct
from pathlib import Path

import numpy as np
from tqdm import tqdm

from orchestrator.data.annotations import Problem, Split
from orchestrator.data.paths import file_kind

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


def _image_size(image: Path) -> tuple[int, int]:
    """(W, H) from an image's header alone; a size past Pillow's decompression-bomb limit raises."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning would print and go on
        with Image.open(image) as im:
            return im.size


def _probe_frame_folder(folder: Path, min_frames: int) -> str | None:
    """Why a frame folder cannot give a clip of `min_frames` frames, or None if it can. Lists its
    images, reads the first one's header and decodes only the last one."""
    import warnings

    from PIL import Image

    from orchestrator.data.video_io import FRAME_PREFIX, frame_image, read_frame_folder

    with os.scandir(folder) as entries:
        images = {entry.name: entry for entry in entries
                  if entry.name.startswith(FRAME_PREFIX) and entry.name.endswith(".jpg")}
    if not images:
        return "empty frame folder (no img_00001.jpg, ...)"
    gap = next((i for i in range(len(images)) if frame_image(folder, i).name not in images), None)
    if gap is not None:
        return f"frame folder of {len(images)} images without {frame_image(folder, gap).name} (a gap in the numbering)"
    odd = next((entry for _, entry in sorted(images.items()) if not entry.is_file(follow_symlinks=False)), None)
    if odd is not None:
        kind = "a symlink" if odd.is_symlink() else f"a {file_kind(Path(odd.path))}"
        return f"{odd.name} is {kind}, not a regular file (frame folders hold plain JPEG files)"
    first, last = frame_image(folder, 0), frame_image(folder, len(images) - 1)
    try:
        sizes = [_image_size(image) for image in (first, last)]
        if sizes[0] != sizes[1]:
            (w0, h0), (w1, h1) = sizes
            return f"{last.name} is {w1}x{h1} but {first.name} is {w0}x{h0}: frames of a video share one size"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            read_frame_folder(folder, [len(images) - 1])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return f"the last frame, {last.name}, cannot be read ({_short_message(err)})"
    if len(images) < min_frames:
        return f"too short: {len(images)} frames, the clip needs {min_frames}"
    return None


def probe_video(path: Path, *, min_frames: int = 1, decode_timeout_s: float = DECODE_TIMEOUT_S) -> str | None:
    """Why a video (or JPEG frame folder) cannot give a clip of `min_frames` frames, or None if it can.

    Decodes only the last frame (a seek to the last key frame), never the whole video, in a decode
    process killed after `decode_timeout_s` (decord can hang; see orchestrator/data/decode_guard.py).
    """
    import decord

    from orchestrator.data.decode_guard import DecodeGuard, DecodeTimeout

    path = Path(path)
    try:
        kind = file_kind(path)
    except OSError as err:
        return f"cannot be read: {err.strerror}"
    if kind == "folder":
        return _probe_frame_folder(path, min_frames)
    if kind is None:
        return "missing file"
    if kind != "file":
        return f"a {kind}, not a regular file"
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


def one_line(text: str) -> str:
    """`text` with control characters (a newline in a listed file name) written as escapes."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda match: repr(match[0])[1:-1], text)


def format_problems(problems: list[Problem]) -> str:
    """One '<path>: <reason>' line per problem, then a count line."""
    count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
    return "\n".join([one_line(f"{p.path}: {p.reason}") for p in problems] + [count])
