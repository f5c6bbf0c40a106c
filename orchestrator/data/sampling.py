"""Which frames of a video make a clip: small pure functions of (num_frames, parameters[, rng]).

Every function returns int64 numpy arrays of frame indices into a video of `num_frames` frames
(or flow fields, for a flow stream: pass the number of fields). Randomness comes only from the
`rng` argument, so a seeded `np.random.Generator` reproduces a sample exactly.

A video too short for the clip raises ValueError (the dataset skips it with a warning), unless a
dense sampler is asked to loop it (`loop_short`, I3D's rule: "looping the video as many times as
necessary"): its frames are then read modulo the video's length.

Two families, picked by `make_sampler(kind=...)`:

- 'dense' (C3D, Tran et al. 2015; I3D, Carreira & Zisserman 2017): `clip_len` frames `stride`
  apart. Training takes one clip at a random start; testing takes `num_clips` clips whose starts
  are spread evenly over the video (multi-view testing).
- 'tsn' (Temporal Segment Networks, Wang et al. 2016): the video is cut into `num_segments` equal
  segments and each contributes `frames_per_segment` consecutive frames (1 RGB frame, L flow
  fields for the flow stream, L + 1 frames for RGB difference). Training starts each segment's
  frames at a random position inside it; testing at its centre.

"Spread evenly" is one rule used for both test-time families: view i of V over n candidate
positions takes position `((2 * i + 1) * n) // (2 * V)`, the (floor of the) centre of the i-th of
V equal bins. With V = 1 that is the middle position, i.e. the centred clip.

Frame rate (`data.fps`, I3D's "we sample frames at 25 frames per second"): a sampler works on frame
numbers, not times. To read a video as if resampled to `fps`, the sampler is given the frame count of
the resampled video, `resampled_num_frames`, and each index it returns is mapped back to a frame of
the file, `native_frame_indices`: the resampled frame i shows the instant i / fps, so the file's
frame floor(i * native_fps / fps), the last one shown at that instant.
"""
import functools
import math
from typing import Callable, NamedTuple

import numpy as np

SAMPLERS = ("dense", "tsn")


class SegmentBounds(NamedTuple):
    """Start positions allowed in each TSN segment: `start_frame[k] <= start < stop_frame[k]`."""

    start_frame: np.ndarray  # int64 (K,)
    stop_frame: np.ndarray  # int64 (K,), every stop > start


def _check_long_enough(num_frames: int, frames_needed: int) -> None:
    if num_frames < frames_needed:
        raise ValueError(f"video has {num_frames} frames; the clip needs {frames_needed}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _bin_centres(num_positions: int, num_bins: int) -> np.ndarray:
    """Centre (floored) of each of `num_bins` equal bins over positions 0..num_positions-1: int64 (num_bins,)."""
    return (2 * np.arange(num_bins, dtype=np.int64) + 1) * num_positions // (2 * num_bins)


def clip_span_frames(clip_len: int, stride: int) -> int:
    """Frames a dense clip covers from its first to its last index, inclusive."""
    return (clip_len - 1) * stride + 1


def dense_clip_indices(num_frames: int, *, clip_len: int, stride: int = 1, start_frame: int = 0) -> np.ndarray:
    """`clip_len` frames `stride` apart from `start_frame`.

    Args:
        num_frames: frames in the video.
        clip_len: T, frames in the clip.
        stride: frames between consecutive clip frames.
        start_frame: index of the first clip frame.

    Returns:
        int64 (T,): start_frame, start_frame + stride, ...

    Raises:
        ValueError: the video is too short for the clip, or the clip would run past its end.
    """
    span = clip_span_frames(clip_len, stride)
    _check_long_enough(num_frames, span)
    if not 0 <= start_frame <= num_frames - span:
        raise ValueError(f"start_frame {start_frame} is outside 0..{num_frames - span} for a {span}-frame clip")
    return start_frame + stride * np.arange(clip_len, dtype=np.int64)


def random_clip_start(num_frames: int, *, clip_len: int, stride: int, rng: np.random.Generator) -> int:
    """A start frame drawn uniformly from every start at which the dense clip fits (training)."""
    span = clip_span_frames(clip_len, stride)
    _check_long_enough(num_frames, span)
    return int(rng.integers(0, num_frames - span + 1))


def uniform_clip_starts(num_frames: int, *, clip_len: int, stride: int, num_clips: int) -> np.ndarray:
    """Starts of `num_clips` test views spread evenly over the video (see the module docstring).

    Returns:
        int64 (num_clips,), non-decreasing; one clip is the centred clip. Views repeat when the
        video has fewer possible starts than `num_clips`.
    """
    span = clip_span_frames(clip_len, stride)
    _check_long_enough(num_frames, span)
    return _bin_centres(num_frames - span + 1, num_clips)


def dense_train_indices(num_frames: int, *, clip_len: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """One dense clip at a random start. Returns int64 (1, T)."""
    start_frame = random_clip_start(num_frames, clip_len=clip_len, stride=stride, rng=rng)
    return dense_clip_indices(num_frames, clip_len=clip_len, stride=stride, start_frame=start_frame)[None]


def dense_test_indices(num_frames: int, *, clip_len: int, stride: int, num_clips: int) -> np.ndarray:
    """`num_clips` dense clips with evenly spread starts. Returns int64 (V, T), V = num_clips."""
    starts = uniform_clip_starts(num_frames, clip_len=clip_len, stride=stride, num_clips=num_clips)  # (V,)
    return starts[:, None] + stride * np.arange(clip_len, dtype=np.int64)[None, :]


def tsn_segment_bounds(num_positions: int, num_segments: int) -> SegmentBounds:
    """Split start positions 0..num_positions-1 into `num_segments` contiguous, near-equal segments.

    Segment k holds positions [k * P // K, (k + 1) * P // K); each is non-empty when P >= K.
    """
    k = np.arange(num_segments + 1, dtype=np.int64)
    edges = k * num_positions // num_segments  # (K + 1,)
    return SegmentBounds(edges[:-1], edges[1:])


def _tsn_bounds(num_frames: int, num_segments: int, frames_per_segment: int) -> SegmentBounds:
    # A segment's L frames start at a position p with p + L <= num_frames, and every segment needs
    # at least one such position: num_frames - L + 1 >= K.
    _check_long_enough(num_frames, num_segments + frames_per_segment - 1)
    return tsn_segment_bounds(num_frames - frames_per_segment + 1, num_segments)


def _expand_segment_starts(starts: np.ndarray, frames_per_segment: int) -> np.ndarray:
    """(..., K) segment starts -> (..., K * L) indices, L consecutive frames per segment, segment-major."""
    indices = starts[..., None] + np.arange(frames_per_segment, dtype=np.int64)  # (..., K, L)
    return indices.reshape(*starts.shape[:-1], -1)


def tsn_train_indices(
    num_frames: int, *, num_segments: int, frames_per_segment: int = 1, rng: np.random.Generator
) -> np.ndarray:
    """TSN training sample: in each of K segments, L consecutive frames from a random start inside it.

    Args:
        num_frames: frames (or flow fields) in the video.
        num_segments: K.
        frames_per_segment: L (1 for RGB, the flow stack length for flow, stack + 1 for RGB difference).
        rng: the only source of randomness.

    Returns:
        int64 (K * L,), segment-major: [seg0 frame0..L-1, seg1 frame0..L-1, ...].
    """
    bounds = _tsn_bounds(num_frames, num_segments, frames_per_segment)
    starts = rng.integers(bounds.start_frame, bounds.stop_frame)  # (K,) one draw per segment
    return _expand_segment_starts(starts.astype(np.int64), frames_per_segment)


def tsn_test_indices(
    num_frames: int, *, num_segments: int, frames_per_segment: int = 1, num_clips: int = 1
) -> np.ndarray:
    """TSN test sample: `num_clips` views; view i starts each segment at the i-th of V evenly spread
    positions inside it (the segment centre when V = 1, as in TSN).

    Returns:
        int64 (V, K * L), V = num_clips, each row segment-major like `tsn_train_indices`.
    """
    bounds = _tsn_bounds(num_frames, num_segments, frames_per_segment)
    lengths = bounds.stop_frame - bounds.start_frame  # (K,)
    view = 2 * np.arange(num_clips, dtype=np.int64)[:, None] + 1  # (V, 1)
    starts = bounds.start_frame[None, :] + view * lengths[None, :] // (2 * num_clips)  # (V, K)
    return _expand_segment_starts(starts, frames_per_segment)


def resampled_num_frames(num_frames: int, *, native_fps: float, fps: float) -> int:
    """Frames of a `num_frames`-frame video at `native_fps` once resampled to `fps`.

    Returns:
        round(num_frames * fps / native_fps), halves rounded up (at least 1 for a non-empty video,
        so a sampler's "too short" error names a real count).
    """
    if not (native_fps > 0 and fps > 0):
        raise ValueError(f"frame rates must be > 0, got native_fps={native_fps!r}, fps={fps!r}")
    if num_frames < 1:
        return 0
    return max(1, math.floor(num_frames * fps / native_fps + 0.5))


def native_frame_indices(indices: np.ndarray, *, num_frames: int, native_fps: float, fps: float) -> np.ndarray:
    """Frames of the file at `native_fps` that indices into its `fps` resampling show.

    Args:
        indices: int (...) indices into the resampled video (`resampled_num_frames` frames), any shape.
        num_frames: frames in the file.
    Returns:
        int64 of `indices`' shape: floor(i * native_fps / fps), clamped to 0..num_frames - 1. Down to
        a lower rate frames are skipped (30 -> 25 fps: 0, 1, 2, 3, 4, 6, ...), up to a higher one
        repeated.
    """
    if not (native_fps > 0 and fps > 0):
        raise ValueError(f"frame rates must be > 0, got native_fps={native_fps!r}, fps={fps!r}")
    # i * native_fps before the division: exact for whole-number rates, so 5 * 30 / 25 is 6, not 5.999...
    native = np.floor(np.asarray(indices, dtype=np.float64) * native_fps / fps).astype(np.int64)
    return np.clip(native, 0, num_frames - 1)


def looped_clip_indices(num_frames: int, *, clip_len: int, stride: int, start_frames: np.ndarray) -> np.ndarray:
    """Dense clips over a video played in a loop, for videos shorter than the clip (I3D).

    Args:
        num_frames: frames in the video (>= 1).
        start_frames: int64 (V,) first frame of each clip, in 0..num_frames-1.
    Returns:
        int64 (V, T): (start + stride * t) mod num_frames.
    """
    return (start_frames[:, None] + stride * np.arange(clip_len, dtype=np.int64)[None, :]) % num_frames


def _dense_sampler(num_frames: int, rng: np.random.Generator, *, train: bool, clip_len: int, stride: int,
                   num_clips: int, loop_short: bool = False) -> np.ndarray:
    if loop_short and 0 < num_frames < clip_span_frames(clip_len, stride):
        starts = (np.array([rng.integers(0, num_frames)], dtype=np.int64) if train
                  else _bin_centres(num_frames, num_clips))  # views spread over the one pass there is
        return looped_clip_indices(num_frames, clip_len=clip_len, stride=stride, start_frames=starts)
    if train:
        return dense_train_indices(num_frames, clip_len=clip_len, stride=stride, rng=rng)
    return dense_test_indices(num_frames, clip_len=clip_len, stride=stride, num_clips=num_clips)


def _tsn_sampler(num_frames: int, rng: np.random.Generator, *, train: bool, num_segments: int,
                 frames_per_segment: int, num_clips: int) -> np.ndarray:
    if train:
        return tsn_train_indices(
            num_frames, num_segments=num_segments, frames_per_segment=frames_per_segment, rng=rng
        )[None]
    return tsn_test_indices(
        num_frames, num_segments=num_segments, frames_per_segment=frames_per_segment, num_clips=num_clips
    )


def make_sampler(
    *,
    kind: str,
    train: bool,
    clip_len: int = 16,
    stride: int = 1,
    num_segments: int = 3,
    frames_per_segment: int = 1,
    num_clips: int = 1,
    loop_short: bool = False,
) -> Callable[[int, np.random.Generator], np.ndarray]:
    """The frame sampler a Dataset calls per video: (num_frames, rng) -> int64 (V, T).

    Args:
        kind: 'dense' (C3D/I3D clips) or 'tsn' (Wang et al. 2016 segments), see SAMPLERS.
        train: one random view (V = 1) if True; `num_clips` deterministic views otherwise.
        clip_len: dense only, T.
        stride: dense only, frames between consecutive clip frames.
        num_segments: tsn only, K.
        frames_per_segment: tsn only, L consecutive frames per segment.
        num_clips: test views V (ignored in training). For 'tsn', view i shifts every segment's
            start to the i-th evenly spread position in it; a single view takes segment centres.
        loop_short: dense only: a video shorter than the clip is played in a loop (I3D) instead of
            raising ValueError (then skipped).

    Returns:
        A picklable callable; T = clip_len for 'dense', num_segments * frames_per_segment for 'tsn'.
        The test sampler ignores its rng; the training sampler uses nothing else.

    Raises:
        ValueError: naming the bad parameter.
    """
    _check_positive(clip_len=clip_len, stride=stride, num_segments=num_segments,
                    frames_per_segment=frames_per_segment, num_clips=num_clips)
    if kind == "dense":
        return functools.partial(_dense_sampler, train=train, clip_len=clip_len, stride=stride, num_clips=num_clips,
                                 loop_short=loop_short)
    if kind == "tsn":
        return functools.partial(_tsn_sampler, train=train, num_segments=num_segments,
                                 frames_per_segment=frames_per_segment, num_clips=num_clips)
    raise ValueError(f"kind must be one of {SAMPLERS}, got {kind!r}")
