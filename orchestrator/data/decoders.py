"""The video decoders a run can read its RGB frames with (`data.decoder`), behind one interface:
`len(video)` frames, `video.fps` (the stream's average rate as its header states it; 0 or nan where it
states none), `video.read(indices (V, T), sequential=) -> uint8 (V, T, H, W, 3)`.

    decord      (default) `VideoReader.get_batch` on exactly the sampled frames. No release since 2021.
    torchcodec  `VideoDecoder.get_frames_at` (seek_mode "exact": one scan of the packets at open). An
                optional extra (`pip install -e ".[torchcodec]"`) that needs FFmpeg's shared libraries.
    pyav        FFmpeg through PyAV, every frame decoded in order up to the last one sampled: exact on
                any container, slow on late frames of long videos.

`sequential=True` (the Dataset asks it for .avi, which carries no timestamps to seek by) decodes in order
from the first frame: decord's `next()`; PyAV otherwise. torchcodec has no in-order read that ignores
timestamps, and on H.264 AVI with B-frames its frames come 2 late and the last 2 fail to decode
(tests/test_decoders.py), so the torchcodec back-end hands AVI to PyAV's in-order decode.

All three turn a frame by the container's display-matrix rotation, as decord does. torchcodec can also
decode on the training GPU (`torchcodec_frames`, for `data.decode_device: cuda`). Each distinct frame
is decoded once; repeated indices are copies.

The frames of every back-end are compared with a sequential PyAV decode of the whole video, pixel for
pixel, on H.264 mp4, H.264 AVI with B-frames, MPEG-4 Part 2 AVI and a turned mp4: tests/test_decoders.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DECODERS = ("decord", "torchcodec", "pyav")
TORCHCODEC_MISSING = ("data.decoder: torchcodec cannot load here: pip install -e '.[torchcodec]' and FFmpeg's "
                      "shared libraries (Debian: apt-get install libavcodec59 libavformat59 libavdevice59 "
                      "libavfilter8), or use data.decoder: decord")


def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode here (not installed, or FFmpeg's libraries missing); None if it can."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  loads FFmpeg's libraries
    except (ImportError, OSError, RuntimeError) as err:
        return f"{TORCHCODEC_MISSING} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


def unique_frames(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U,) sorted distinct frame indices and the (V, T) positions of `indices` in them."""
    unique, inverse = np.unique(np.asarray(indices, np.int64), return_inverse=True)
    return unique, inverse.reshape(np.shape(indices))


def decode_in_order(path: str | Path, unique: np.ndarray) -> np.ndarray:
    """Frames `unique` (sorted, distinct) of a video, decoded with PyAV in order from the first frame,
    turned upright; uint8 (U, H, W, 3). Raises IndexError past the last frame that decodes."""
    import av

    from orchestrator.data.video_io import upright

    wanted, kept, last = set(unique.tolist()), [], int(unique[-1])
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # one core, as decord's and torchcodec's readers: loader processes are the parallelism
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                kept.append(upright(frame.to_ndarray(format="rgb24"), frame.rotation))
            if index == last:
                return np.stack(kept)
    raise IndexError(f"frame {last} is past the last frame that decodes")


def decode_every_frame(path: str | Path) -> np.ndarray:
    """Every frame of a video that decodes, in order, uint8 RGB (T, H, W, 3), decoded with PyAV.

    Only frames the decoder produced: where decord fills a frame that does not decode with a copy of
    a neighbour, and counts the frames an edit list hides, these are fewer than decord's `len()`.
    """
    import av

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError("no video frame decodes")
    return np.stack(frames)


class DecordVideo:
    """A video decoded with decord in this process."""

    def __init__(self, path: str | Path):
        import decord

        self.path = str(path)
        self._reader = decord.VideoReader(self.path, num_threads=1)
        self.fps = float(self._reader.get_avg_fps())

    def __len__(self) -> int:
        return len(self._reader)

    def read(self, indices: np.ndarray, *, sequential: bool = False) -> np.ndarray:
        unique, inverse = unique_frames(indices)
        if sequential:
            wanted, kept = set(unique.tolist()), []
            for index in range(int(unique[-1]) + 1):
                try:
                    frame = self._reader.next()
                except StopIteration:
                    raise IndexError(f"frame {index} is past the last frame that decodes") from None
                if index in wanted:
                    kept.append(frame.asnumpy())
            frames = np.stack(kept)  # (U, H, W, 3)
        else:
            frames = self._reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3)
        return frames[inverse]


class TorchcodecVideo:
    """A video decoded with torchcodec in this process; AVI in order with PyAV (see the module docstring)."""

    def __init__(self, path: str | Path):
        from torchcodec.decoders import VideoDecoder

        self.path = str(path)
        self._decoder = VideoDecoder(self.path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1)
        meta = self._decoder.metadata
        self._num_frames = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps) if meta.average_fps else float("nan")
        self.size = (meta.height, meta.width)  # of a decoded frame: torchcodec states them after the rotation

    def __len__(self) -> int:
        return self._num_frames

    def read(self, indices: np.ndarray, *, sequential: bool = False) -> np.ndarray:
        unique, inverse = unique_frames(indices)
        if sequential:
            return decode_in_order(self.path, unique)[inverse]
        if unique[-1] >= self._num_frames:
            raise IndexError(f"frame {int(unique[-1])} is past the video's {self._num_frames} frames")
        return self._decoder.get_frames_at(unique.tolist()).data.numpy()[inverse]  # (V, T, H, W, 3)


class PyAVVideo:
    """A video decoded with PyAV in this process, always in order from the first frame."""

    def __init__(self, path: str | Path):
        import av

        self.path = str(path)
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate) if stream.average_rate else float("nan")
            # the header's count where it states one; else the stream's packets, counted without decoding
            self._num_frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)

    def __len__(self) -> int:
        return self._num_frames

    def read(self, indices: np.ndarray, *, sequential: bool = False) -> np.ndarray:
        unique, inverse = unique_frames(indices)
        return decode_in_order(self.path, unique)[inverse]


VIDEO_CLASSES = {"decord": DecordVideo, "torchcodec": TorchcodecVideo, "pyav": PyAVVideo}


def torchcodec_frames(path: str, indices: list[int], device) -> "torch.Tensor":
    """Frames `indices` of a video decoded by torchcodec on `device` (NVDEC on CUDA), turned upright:
    uint8 (U, H, W, 3) there. What `data.decode_device: cuda` uses for a video file with
    `data.decoder: torchcodec` (device_decode.decode_batch)."""
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(path, seek_mode="exact", dimension_order="NHWC", device=str(device)).get_frames_at(indices).data


def open_video(path: str | Path, decoder: str = "decord"):
    """`path` opened with `decoder` (one of DECODERS) in this process."""
    if decoder not in VIDEO_CLASSES:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    return VIDEO_CLASSES[decoder](path)


def decoder_module(decoder: str) -> str:
    """The module a decode process imports before its first video (so no video's time limit pays for it)."""
    return {"decord": "decord", "torchcodec": "torchcodec.decoders", "pyav": "av"}[decoder]
