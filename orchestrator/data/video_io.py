"""Writing and reading real video files.

Decoding in actionlab goes through decord (`VideoReader.get_batch` on exactly the sampled frame
indices). PyAV is used to *write* H.264 files (synthetic data, test fixtures) and as the naive
seek-and-decode reference that tests and `actionlab bench decode` compare decord against.
"""
from pathlib import Path

import numpy as np


def write_video(
    path: str | Path, frames: np.ndarray, *, fps: int = 25, crf: int = 18, deterministic: bool = False
) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) as an H.264 video (container chosen by the suffix).

    H and W must be even (yuv420p). `crf` 18 is visually lossless; synthetic data uses it so that
    colours survive compression. `deterministic` runs x264 single-threaded without SIMD
    (threads=1, asm=0) so the same frames always give the same bytes; otherwise a few bytes vary
    between runs (decoding to the same frames). Synthetic data sets use it; it costs ~15 %.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_frames, height, width, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {"crf": str(crf), "preset": "veryfast"}
        if deterministic:
            options.update({"threads": "1", "x264-params": "asm=0"})
        stream.options = options
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


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
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
            else:
                raise IndexError(f"{path}: frame {index} is past the end of the video")
    return np.stack(out)
