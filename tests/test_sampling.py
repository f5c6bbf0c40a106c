"""Table-driven tests of the frame samplers: (inputs -> exact expected indices)."""
import pickle

import numpy as np
import pytest

from orchestrator.data.sampling import (
    SAMPLERS,
    dense_clip_indices,
    dense_test_indices,
    dense_train_indices,
    make_sampler,
    native_frame_indices,
    resampled_num_frames,
    tsn_segment_bounds,
    tsn_test_indices,
    tsn_train_indices,
    uniform_clip_starts,
)


@pytest.mark.parametrize(
    "num_frames, clip_len, stride, start_frame, expected",
    [
        (10, 4, 1, 0, [0, 1, 2, 3]),
        (10, 4, 2, 3, [3, 5, 7, 9]),  # the last possible start: span 7 ends on frame 9
        (16, 16, 1, 0, list(range(16))),  # exactly long enough
        (5, 3, 2, 0, [0, 2, 4]),
    ],
)
def test_dense_clip_indices(num_frames, clip_len, stride, start_frame, expected):
    indices = dense_clip_indices(num_frames, clip_len=clip_len, stride=stride, start_frame=start_frame)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize(
    "num_frames, clip_len, stride, num_clips, expected",
    [
        (32, 16, 1, 1, [8]),  # the centred clip: 8 frames before, 8 after
        (33, 16, 1, 1, [9]),
        (32, 16, 1, 3, [2, 8, 14]),  # centres of 3 bins over starts 0..16
        (16, 16, 1, 3, [0, 0, 0]),  # one possible start: views repeat
        (40, 8, 2, 2, [6, 19]),  # span 15, starts 0..25
        (100, 16, 1, 10, [4, 12, 21, 29, 38, 46, 55, 63, 72, 80]),
    ],
)
def test_uniform_clip_starts(num_frames, clip_len, stride, num_clips, expected):
    starts = uniform_clip_starts(num_frames, clip_len=clip_len, stride=stride, num_clips=num_clips)
    assert starts.dtype == np.int64
    np.testing.assert_array_equal(starts, expected)


@pytest.mark.parametrize(
    "num_frames, clip_len, stride, num_clips, expected",
    [
        (32, 4, 1, 1, [[14, 15, 16, 17]]),
        (20, 4, 3, 2, [[2, 5, 8, 11], [8, 11, 14, 17]]),
        (4, 4, 1, 2, [[0, 1, 2, 3], [0, 1, 2, 3]]),
    ],
)
def test_dense_test_indices_multi_view(num_frames, clip_len, stride, num_clips, expected):
    indices = dense_test_indices(num_frames, clip_len=clip_len, stride=stride, num_clips=num_clips)
    np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("num_frames, clip_len, stride", [(30, 8, 1), (30, 4, 3), (10, 10, 1)])
def test_dense_train_indices_random_start_stays_inside(num_frames, clip_len, stride):
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        indices = dense_train_indices(num_frames, clip_len=clip_len, stride=stride, rng=rng)
        assert indices.shape == (1, clip_len)
        np.testing.assert_array_equal(np.diff(indices[0]), stride)
        assert 0 <= indices[0, 0] and indices[0, -1] < num_frames
        starts.add(int(indices[0, 0]))
    # Every start at which the clip fits is drawn (uniform over 0..max_start).
    assert starts == set(range(num_frames - (clip_len - 1) * stride))


@pytest.mark.parametrize(
    "num_positions, num_segments, start_frame, stop_frame",
    [
        (9, 3, [0, 3, 6], [3, 6, 9]),
        (10, 3, [0, 3, 6], [3, 6, 10]),
        (3, 3, [0, 1, 2], [1, 2, 3]),
        (7, 2, [0, 3], [3, 7]),
        (5, 1, [0], [5]),
    ],
)
def test_tsn_segment_bounds(num_positions, num_segments, start_frame, stop_frame):
    bounds = tsn_segment_bounds(num_positions, num_segments)
    np.testing.assert_array_equal(bounds.start_frame, start_frame)
    np.testing.assert_array_equal(bounds.stop_frame, stop_frame)


@pytest.mark.parametrize(
    "num_frames, num_segments, frames_per_segment, num_clips, expected",
    [
        (9, 3, 1, 1, [[1, 4, 7]]),  # segment centres
        (10, 3, 1, 1, [[1, 4, 8]]),  # the last segment is one frame longer
        (3, 3, 1, 1, [[0, 1, 2]]),  # exactly long enough
        (12, 3, 3, 1, [[1, 2, 3, 4, 5, 6, 8, 9, 10]]),  # 3 consecutive frames per segment
        (25, 3, 5, 1, [[3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 17, 18, 19, 20, 21]]),  # RGB-diff: L + 1 = 5
        (9, 3, 1, 2, [[0, 3, 6], [2, 5, 8]]),  # two views shifted evenly inside each segment
        (30, 2, 1, 3, [[2, 17], [7, 22], [12, 27]]),
    ],
)
def test_tsn_test_indices(num_frames, num_segments, frames_per_segment, num_clips, expected):
    indices = tsn_test_indices(
        num_frames, num_segments=num_segments, frames_per_segment=frames_per_segment, num_clips=num_clips
    )
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("num_frames, num_segments, frames_per_segment", [(30, 3, 1), (31, 4, 5), (8, 3, 2), (3, 3, 1)])
def test_tsn_train_indices_random_but_bounded_within_segments(num_frames, num_segments, frames_per_segment):
    bounds = tsn_segment_bounds(num_frames - frames_per_segment + 1, num_segments)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(400):
        indices = tsn_train_indices(
            num_frames, num_segments=num_segments, frames_per_segment=frames_per_segment, rng=rng
        )
        assert indices.shape == (num_segments * frames_per_segment,) and indices.dtype == np.int64
        per_segment = indices.reshape(num_segments, frames_per_segment)  # (K, L)
        np.testing.assert_array_equal(np.diff(per_segment, axis=1), 1)  # consecutive within a segment
        starts = per_segment[:, 0]
        assert np.all(bounds.start_frame <= starts) and np.all(starts < bounds.stop_frame)
        assert per_segment.max() < num_frames
        seen.update(starts.tolist())
    # Every allowed start of every segment is drawn: the offsets are random, not fixed.
    assert seen == set(range(num_frames - frames_per_segment + 1))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: dense_clip_indices(8, clip_len=4, stride=3), "video has 8 frames; the clip needs 10"),
        (lambda: uniform_clip_starts(15, clip_len=16, stride=1, num_clips=1),
         "video has 15 frames; the clip needs 16"),
        (lambda: dense_train_indices(0, clip_len=1, stride=1, rng=np.random.default_rng()),
         "video has 0 frames; the clip needs 1"),
        (lambda: tsn_test_indices(2, num_segments=3), "video has 2 frames; the clip needs 3"),
        (lambda: tsn_train_indices(4, num_segments=3, frames_per_segment=3, rng=np.random.default_rng()),
         "video has 4 frames; the clip needs 5"),
        (lambda: dense_clip_indices(10, clip_len=4, stride=2, start_frame=4), "start_frame 4 is outside 0..3"),
    ],
)
def test_too_short_or_out_of_range_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "params, num_frames, expected",
    [
        (dict(kind="dense", train=False, clip_len=4, stride=1, num_clips=1), 32, [[14, 15, 16, 17]]),
        (dict(kind="dense", train=False, clip_len=4, stride=3, num_clips=2), 20, [[2, 5, 8, 11], [8, 11, 14, 17]]),
        (dict(kind="tsn", train=False, num_segments=3, num_clips=1), 9, [[1, 4, 7]]),
        (dict(kind="tsn", train=False, num_segments=3, frames_per_segment=3), 12, [[1, 2, 3, 4, 5, 6, 8, 9, 10]]),
        (dict(kind="tsn", train=False, num_segments=3, num_clips=2), 9, [[0, 3, 6], [2, 5, 8]]),
    ],
)
def test_make_sampler_test_time(params, num_frames, expected):
    sampler = make_sampler(**params)
    np.testing.assert_array_equal(sampler(num_frames, np.random.default_rng(0)), expected)
    # Picklable: DataLoader workers and Ray ship it to other processes.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(sampler))(num_frames, None), expected)


@pytest.mark.parametrize(
    "params, num_frames, shape",
    [
        (dict(kind="dense", train=True, clip_len=8, stride=2, num_clips=10), 40, (1, 8)),  # num_clips ignored
        (dict(kind="tsn", train=True, num_segments=3), 30, (1, 3)),
        (dict(kind="tsn", train=True, num_segments=8, frames_per_segment=5, num_clips=10), 100, (1, 40)),
        (dict(kind="dense", train=False, clip_len=16, num_clips=10), 64, (10, 16)),
        (dict(kind="tsn", train=False, num_segments=25, num_clips=10), 250, (10, 25)),
    ],
)
def test_make_sampler_shape_and_determinism(params, num_frames, shape):
    sampler = make_sampler(**params)
    first = sampler(num_frames, np.random.default_rng(7))
    assert first.shape == shape and first.dtype == np.int64
    assert first.min() >= 0 and first.max() < num_frames
    np.testing.assert_array_equal(sampler(num_frames, np.random.default_rng(7)), first)


def test_make_sampler_training_varies_with_rng():
    sampler = make_sampler(kind="tsn", train=True, num_segments=3)
    rng = np.random.default_rng(0)
    assert len({tuple(sampler(300, rng)[0]) for _ in range(20)}) > 1


def test_make_sampler_short_video_error_passes_through():
    with pytest.raises(ValueError, match="video has 10 frames; the clip needs 16"):
        make_sampler(kind="dense", train=True, clip_len=16)(10, np.random.default_rng(0))


@pytest.mark.parametrize(
    "bad, name",
    [
        (dict(kind="slowfast"), "kind"),
        (dict(clip_len=0), "clip_len"),
        (dict(stride=-1), "stride"),
        (dict(num_segments=0), "num_segments"),
        (dict(frames_per_segment=0), "frames_per_segment"),
        (dict(num_clips=0), "num_clips"),
        (dict(clip_len=2.5), "clip_len"),
    ],
)
def test_make_sampler_rejects_bad_parameters(bad, name):
    params = dict(kind=SAMPLERS[0], train=True) | bad
    with pytest.raises(ValueError, match=name):
        make_sampler(**params)


@pytest.mark.parametrize(
    "num_frames, params, expected",
    [
        (5, dict(clip_len=8, stride=1, num_clips=1), [[2, 3, 4, 0, 1, 2, 3, 4]]),  # one view, from the centre
        (5, dict(clip_len=4, stride=2, num_clips=2), [[1, 3, 0, 2], [3, 0, 2, 4]]),  # span 7 > 5: looped views
        (8, dict(clip_len=8, stride=1, num_clips=1), [[0, 1, 2, 3, 4, 5, 6, 7]]),  # long enough: the usual clip
    ],
)
def test_a_dense_sampler_loops_a_short_video_when_asked(num_frames, params, expected):
    sampler = make_sampler(kind="dense", train=False, loop_short=True, **params)
    np.testing.assert_array_equal(sampler(num_frames, np.random.default_rng(0)), expected)
    train = make_sampler(kind="dense", train=True, loop_short=True, **params)(num_frames, np.random.default_rng(1))
    assert train.shape == (1, params["clip_len"]) and train.min() >= 0 and train.max() < num_frames
    if num_frames < (params["clip_len"] - 1) * params["stride"] + 1:  # without loop_short: too short, skipped
        with pytest.raises(ValueError, match="the clip needs"):
            make_sampler(kind="dense", train=False, **params)(num_frames, np.random.default_rng(0))


@pytest.mark.parametrize(
    "num_frames, native_fps, fps, expected",
    [
        (300, 30, 25, 250),  # a 10 s Kinetics clip read at I3D's 25 fps
        (250, 25, 25, 250),  # UCF-101's own rate: unchanged
        (7, 50, 25, 4),  # 3.5 rounds up
        (10, 25, 30, 12),  # a higher rate: more frames
        (1, 30, 25, 1),  # never 0 for a non-empty video
        (0, 30, 25, 0),
        (100, 29.97, 25, 83),  # NTSC: 83.4
    ],
)
def test_resampled_num_frames(num_frames, native_fps, fps, expected):
    assert resampled_num_frames(num_frames, native_fps=native_fps, fps=fps) == expected


@pytest.mark.parametrize(
    "indices, num_frames, native_fps, fps, expected",
    [
        (range(8), 300, 30, 25, [0, 1, 2, 3, 4, 6, 7, 8]),  # 30 -> 25 fps: every sixth frame skipped
        (range(5), 250, 25, 25, [0, 1, 2, 3, 4]),  # same rate: the identity
        (range(6), 10, 25, 30, [0, 0, 1, 2, 3, 4]),  # 25 -> 30 fps: frames repeat
        ([0, 249], 300, 30, 25, [0, 298]),  # the last resampled frame of a 10 s clip: floor(249 * 1.2)
        ([[0, 3], [5, 2]], 300, 50, 25, [[0, 6], [10, 4]]),  # any shape, any order (test views, looped clips)
        ([3], 6, 50, 25, [5]),  # an index past the resampled video's 3 frames: clamped to the file's last
    ],
)
def test_native_frame_indices(indices, num_frames, native_fps, fps, expected):
    out = native_frame_indices(np.asarray(indices), num_frames=num_frames, native_fps=native_fps, fps=fps)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)


def test_a_sampler_on_the_resampled_timeline_reads_frames_of_the_file():
    """I3D's rule end to end: 64 consecutive frames at 25 fps are 63 / 25 s = 2.52 s of a 30 fps video,
    63 x 1.2 = 75.6 of its frame steps."""
    num_frames, native_fps, fps = 300, 30.0, 25.0
    sampler = make_sampler(kind="dense", train=False, clip_len=64, num_clips=1)
    resampled = resampled_num_frames(num_frames, native_fps=native_fps, fps=fps)  # 250
    clip = native_frame_indices(sampler(resampled, np.random.default_rng(0)), num_frames=num_frames,
                                native_fps=native_fps, fps=fps)  # (1, 64)
    assert clip.shape == (1, 64) and abs((clip[0, -1] - clip[0, 0]) - 63 * native_fps / fps) < 1
    assert (np.diff(clip[0]) >= 1).all() and set(np.diff(clip[0])) == {1, 2}  # skips, never repeats


@pytest.mark.parametrize("native_fps, fps", [(0, 25), (30, 0), (float("nan"), 25), (-30, 25)])
def test_resampling_rejects_rates_that_are_not_positive(native_fps, fps):
    with pytest.raises(ValueError, match="frame rates must be > 0"):
        resampled_num_frames(10, native_fps=native_fps, fps=fps)
    with pytest.raises(ValueError, match="frame rates must be > 0"):
        native_frame_indices(np.arange(3), num_frames=10, native_fps=native_fps, fps=fps)
