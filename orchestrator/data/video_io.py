"""Writing and reading real video files and JPEG frame folders.

Decoding in actionlab goes through decord (`VideoReader.get_batch` on exactly the sampled frame
indices). PyAV is used to *write* H.264 files (synthetic data, test fixtures, `actionlab data
prepare`; MPEG-4 Part 2 for the synthetic `mpeg4` preset) and as the naive seek-and-decode
reference that tests and `actionlab bench decode` compare decord against.

A frame folder (`actionlab data prepare --format frames`) holds one JPEG per frame,
`<folder>/img_00001.jpg, img_00002.jpg, ...`, 1-based: the rawframe layout of TSN and MMAction2.
Its images go through Pillow, not OpenCV: once decord is imported, OpenCV's image codecs can pick
up decord's zlib and fail (see orchestrator/data/flow.py).
"""
import itertools
import os
import stat
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np


VIDEO_CODECS = ("h264", "mpeg4")  # what `write_video` encodes


def write_video(
    path: str | Path, frames: np.ndarray | Iterable[np.ndarray], *, fps: int | Fraction = 25, crf: int = 18,
    deterministic: bool = False, keyframe_interval: int | None = None, threads: int | None = None,
    codec: str = "h264",
) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) as an H.264 or MPEG-4 Part 2 video (container chosen by the suffix).

    `frames` may also be any iterable of (H, W, 3) frames, encoded as they come (a long video
    never sits in memory). H and W must be even (yuv420p). `crf` 18 is visually lossless;
    synthetic data uses it so that colours survive compression. `deterministic` runs x264
    single-threaded without SIMD (threads=1, asm=0) so the same frames always give the same
    bytes; otherwise a few bytes vary between runs (decoding to the same frames). Synthetic data
    sets use it; it costs ~15 %. `keyframe_interval`: at most this many frames from one key frame
    to the next (x264's keyint; None: x264's 250). A seek decodes from the key frame before the
    wanted frame, so a short interval makes random access cheap. `threads`: x264's threads
    (None: x264's choice, about 1.5 per core).

    `codec` "mpeg4" writes MPEG-4 Part 2 instead (FFmpeg's encoder, fourcc XVID), the codec of the
    real UCF-101 .avi files: quantiser 2 on every frame (`crf` is x264's and is ignored), no
    B-frames (FFmpeg's default), always single-threaded, so its bytes are always reproducible.
    """
    import av

    if codec not in VIDEO_CODECS:
        raise ValueError(f"codec must be one of {VIDEO_CODECS}, got {codec!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width, _ = first.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if codec == "h264" else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if keyframe_interval is not None:
            stream.codec_context.gop_size = keyframe_interval
        if codec == "h264":
            options = {"crf": str(crf), "preset": "veryfast"}
            if threads is not None:
                options["threads"] = str(threads)
            if deterministic:
                options.update({"threads": "1", "x264-params": "asm=0"})
        else:
            stream.codec_context.codec_tag = "XVID"
            options = {"qmin": "2", "qmax": "2", "threads": "1"}  # qmin = qmax pins the quantiser (-q:v 2)
        stream.options = options
        for frame in itertools.chain([first], frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """A decoded frame (H, W, C) turned as decord turns it: by the container's display-matrix rotation
    (PyAV's `VideoFrame.rotation`, degrees counter-clockwise), in quarter turns; decord ignores any
    other angle (and flips), so this does too. Returns (H, W, C), or (W, H, C) after a quarter turn."""
    turns = rotation / 90
    if turns != int(turns) or int(turns) % 4 == 0:
        return frame
    return np.ascontiguousarray(np.rot90(frame, k=int(turns) % 4))


FRAME_PREFIX = "img_"  # frame i (0-based) of a frame folder is img_{i + 1:05d}.jpg


def frame_image(folder: str | Path, index: int) -> Path:
    """The JPEG of frame `index` (0-based) in a frame folder."""
    return Path(folder) / f"{FRAME_PREFIX}{index + 1:05d}.jpg"


def write_frame_folder(folder: str | Path, frames: Iterable[np.ndarray], *, quality: int = 95) -> int:
    """Write uint8 RGB frames (H, W, 3), as they come, as `folder/img_00001.jpg, ...`; returns the count."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, frame in enumerate(frames, start=1):
        Image.fromarray(np.ascontiguousarray(frame)).save(frame_image(folder, count - 1), quality=quality)
    return count


def frame_folder_length(folder: str | Path) -> int:
    """Frames in a frame folder: its number of img_*.jpg files."""
    return sum(1 for name in os.listdir(folder) if name.startswith(FRAME_PREFIX) and name.endswith(".jpg"))


def _regular_frame(folder: str | Path, index: int) -> Path:
    """Frame `index`'s JPEG; FileNotFoundError naming a missing one, OSError for one that is not a regular
    file (a FIFO would block the open for ever)."""
    path = frame_image(folder, index)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path}: not a regular file")
    return path


def read_frame_folder(folder: str | Path, indices) -> np.ndarray:
    """The frames at `indices` (0-based) of a frame folder, uint8 (len(indices), H, W, 3).

    Opens only those frames' files; a missing one raises FileNotFoundError naming it, one that is not
    a regular file OSError, one whose header claims more pixels than Pillow's decompression-bomb limit
    (e.g. 20000x20000) OSError: a bad video, as the loader counts it.
    """
    from PIL import Image

    out = []
    for index in np.asarray(indices, np.int64).tolist():
        path = _regular_frame(folder, index)
        try:
            with Image.open(path) as image:
                out.append(np.asarray(image.convert("RGB")))  # (H, W, 3)
        except Image.DecompressionBombError as err:
            raise OSError(f"{path}: {err}") from None
    return np.stack(out)


def read_frame_bytes(folder: str | Path, indices) -> tuple[list[bytes], tuple[int, int]]:
    """The JPEG files of the frames at `indices` (0-based) of a frame folder, undecoded, and their (H, W).

    Only the headers are parsed (Pillow reads no pixels): the files' bytes go to the GPU's decoder
    (data.decode_device). The same files are refused as by `read_frame_folder`, and frames of
    different sizes (ValueError), which that one's stacking refuses.
    """
    import io

    from PIL import Image

    out, sizes = [], set()
    for index in np.asarray(indices, np.int64).tolist():
        path = _regular_frame(folder, index)
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "JPEG":
                    raise OSError(f"{path}: a {image.format} image, not a JPEG")
                sizes.add(image.size[::-1])
        except Image.DecompressionBombError as err:
            raise OSError(f"{path}: {err}") from None
        out.append(data)
    if len(sizes) != 1:
        raise ValueError(f"{folder}: frames of different sizes {sorted(sizes)}")
    return out, sizes.pop()


def read_frames_pyav(path: str | Path, indices) -> np.ndarray:
    """Naive reference decoder: for each wanted index, seek to the start and decode up to it.

    Returns uint8 (len(indices), H, W, 3). Deliberately simple (one seek per index), the way
    hand-written loaders often do it; it is the baseline of `actionlab bench decode`.
    """
    import av

    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index in indices:
            container.seek(0, stream=stream)
            for i, frame in enumerate(container.decode(stream)):
                if i == index:
                    out.append(upright(frame.to_ndarray(format="rgb24"), frame.rotation))  # as decord shows it
                    break
            else:
                raise IndexError(f"{path}: frame {index} is past the end of the video")
    return np.stack(out)
