"""VideoDataset: decord frames equal PyAV's, per-item determinism, bad videos skipped, flow alignment."""
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import decode_all_pyav, make_frames
from orchestrator.data.annotations import VideoRecord
from orchestrator.data.dataset import VideoDataset, collate_skip_bad
from orchestrator.data.video_io import write_video

NUM_FRAMES = 24


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    # 64 px wide: decord 0.6 fails get_batch at a few small widths (16, 24, 48, 72).
    folder = tmp_path_factory.mktemp("dataset")
    write_video(folder / "a.mp4", make_frames(NUM_FRAMES, 32, 64, seed=1))
    write_video(folder / "b.avi", make_frames(NUM_FRAMES, 32, 64, seed=2))
    write_video(folder / "short.mp4", make_frames(4, 32, 64))
    (folder / "text.mp4").write_text("not a video")
    return folder


def _record(folder: Path, name: str, label: int = 0) -> VideoRecord:
    return VideoRecord(folder / name, label, Path(name).stem)


def random_clip_sampler(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """2 views x 4 frames at random starts; too short a video raises ValueError like the real samplers."""
    if num_frames < 8:
        raise ValueError(f"video has {num_frames} frames; the clip needs 8")
    starts = rng.integers(0, num_frames - 4, size=2)
    return starts[:, None] + np.arange(4)[None, :]


FIXED_INDICES = np.array([[5, 0, 5], [23, 1, 2]], dtype=np.int64)  # unsorted, repeated, last frame
MORE_INDICES = [np.array([[22, 23]]), np.array([[7, 8, 9], [15, 16, 17]]), np.array([[12]])]


@pytest.mark.parametrize("name", ["a.mp4", "b.avi"])  # .avi: H.264 B-frames, where decord's seeks go wrong
def test_decoded_frames_equal_pyav(video_dir, name):
    dataset = VideoDataset([_record(video_dir, name, label=3)], sampler=lambda n, rng: FIXED_INDICES)
    item = dataset[0]
    all_frames = decode_all_pyav(video_dir / name)  # (N, H, W, C)
    assert item["label"] == 3 and item["index"] == 0
    assert item["inputs"]["rgb"].dtype == torch.uint8
    assert item["inputs"]["rgb"].shape == (2, 3, 3, 32, 64)  # (V, C, T, H, W)
    np.testing.assert_array_equal(item["inputs"]["rgb"].permute(0, 2, 3, 4, 1).numpy(), all_frames[FIXED_INDICES])
    for indices in MORE_INDICES:
        dataset = VideoDataset([_record(video_dir, name)], sampler=lambda n, rng: indices)
        np.testing.assert_array_equal(dataset[0]["inputs"]["rgb"].permute(0, 2, 3, 4, 1).numpy(), all_frames[indices])


def test_tiny_video_fixture_frames_equal_pyav(tiny_video):
    indices = np.array([[0, 3, 3], [len(tiny_video.frames) - 1, 10, 11]])
    dataset = VideoDataset([VideoRecord(tiny_video.path, 0, "tiny")], sampler=lambda n, rng: indices)
    rgb = dataset[0]["inputs"]["rgb"].permute(0, 2, 3, 4, 1).numpy()  # (V, T, H, W, C)
    np.testing.assert_array_equal(rgb, tiny_video.frames[indices])


def test_sampler_sees_frame_count_and_decoding_reads_only_sampled_frames(video_dir, monkeypatch):
    import decord

    requested = []
    original = decord.VideoReader.get_batch

    def spy(self, indices):
        requested.append(list(indices))
        return original(self, indices)

    monkeypatch.setattr(decord.VideoReader, "get_batch", spy)
    seen = []
    dataset = VideoDataset([_record(video_dir, "a.mp4")],
                           sampler=lambda n, rng: seen.append(n) or FIXED_INDICES)
    dataset[0]
    assert seen == [NUM_FRAMES]
    assert requested == [[0, 1, 2, 5, 23]]


def test_items_are_deterministic_per_seed_epoch_index(video_dir):
    records = [_record(video_dir, "a.mp4"), _record(video_dir, "b.avi", 1)]
    indices_seen = []

    def sampler(num_frames, rng):
        indices = random_clip_sampler(num_frames, rng)
        indices_seen.append(indices)
        return indices

    first = VideoDataset(records, sampler=sampler, seed=7)
    again = VideoDataset(records, sampler=sampler, seed=7)
    for index in range(2):
        assert torch.equal(first[index]["inputs"]["rgb"], again[index]["inputs"]["rgb"])
    assert all(np.array_equal(a, b) for a, b in zip(indices_seen[0::2], indices_seen[1::2]))

    indices_seen.clear()
    epochs = []
    for epoch in range(4):
        first.set_epoch(epoch)
        first[0]
        epochs.append(indices_seen[-1])
    # starts are drawn from 20 values for 2 views: 4 identical epochs would be a seeding bug
    assert len({a.tobytes() for a in epochs}) > 1
    other_seed = VideoDataset(records, sampler=sampler, seed=8)
    other_seed.set_epoch(3)
    other_seed[0]
    assert not np.array_equal(indices_seen[-1], epochs[3])


def test_dataloader_workers_give_the_same_items_as_the_main_process(video_dir):
    records = [_record(video_dir, "a.mp4", 0), _record(video_dir, "b.avi", 1),
               _record(video_dir, "missing.mp4", 2), _record(video_dir, "a.mp4", 3)]
    dataset = VideoDataset(records, sampler=random_clip_sampler, seed=3)
    dataset.set_epoch(2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_skip_bad)
    batches = list(loader)
    assert [b["num_skipped"] for b in batches] == [0, 1]
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.tensor([0, 1, 3]))
    assert torch.equal(torch.cat([b["label"] for b in batches]), torch.tensor([0, 1, 3]))
    rgb = torch.cat([b["inputs"]["rgb"] for b in batches])
    assert rgb.shape == (3, 2, 3, 4, 32, 64)  # (B, V, C, T, H, W)
    for row, index in enumerate([0, 1, 3]):
        assert torch.equal(rgb[row], dataset[index]["inputs"]["rgb"])


@pytest.mark.parametrize("name, reason", [
    ("missing.mp4", "missing file"),
    ("text.mp4", "Error reading"),
    ("short.mp4", "video has 4 frames; the clip needs 8"),
])
def test_bad_videos_give_none_and_a_warning(video_dir, caplog, name, reason):
    dataset = VideoDataset([_record(video_dir, name)], sampler=random_clip_sampler)
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        assert dataset[0] is None
    assert len(dataset) == 1
    [message] = [r.getMessage() for r in caplog.records if r.name == "actionlab.data"]
    assert str(video_dir / name) in message and reason in message


def test_collate_counts_skipped_items_and_survives_an_all_bad_batch(video_dir):
    dataset = VideoDataset([_record(video_dir, "a.mp4", 4), _record(video_dir, "short.mp4")],
                           sampler=random_clip_sampler)
    batch = collate_skip_bad([None, dataset[0], dataset[1]])
    assert batch["num_skipped"] == 2
    assert batch["inputs"]["rgb"].shape == (1, 2, 3, 4, 32, 64)
    assert batch["label"].tolist() == [4] and batch["index"].tolist() == [0]
    empty = collate_skip_bad([None, None])
    assert empty["num_skipped"] == 2 and empty["inputs"] == {}
    assert empty["label"].shape == (0,) and empty["label"].dtype == torch.int64


def test_transform_gets_uint8_vthwc_and_the_item_rng(video_dir):
    calls = []

    def transform(inputs, rng):
        calls.append(({m: (x.dtype, tuple(x.shape)) for m, x in inputs.items()}, rng.integers(1 << 30)))
        return {m: x.permute(0, 4, 1, 2, 3)[..., :16, :16] for m, x in inputs.items()}  # crop

    dataset = VideoDataset([_record(video_dir, "a.mp4")], sampler=random_clip_sampler, transform=transform, seed=5)
    item = dataset[0]
    dataset[0]
    assert calls[0][0] == {"rgb": (torch.uint8, (2, 4, 32, 64, 3))}
    assert calls[0][1] == calls[1][1]  # the transform draws from the same per-item generator
    assert item["inputs"]["rgb"].shape == (2, 3, 4, 16, 16)


def _write_flow(flow_dir: Path, video_id: str, num_fields: int) -> np.ndarray:
    fields = np.random.default_rng(0).integers(0, 256, (num_fields, 32, 64, 2), dtype=np.uint8)
    path = flow_dir / f"{video_id}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, fields)
    return fields


@pytest.fixture()
def flow_stub(monkeypatch):
    """The flow cache's format (flow_dir/<video_id>.npy, uint8 (N - 1, H, W, 2)) behind a stub module."""
    stub = types.ModuleType("orchestrator.data.flow")
    stub.flow_frame_count = lambda flow_dir, video_id: len(np.load(Path(flow_dir) / f"{video_id}.npy", mmap_mode="r"))
    stub.load_flow = lambda flow_dir, video_id, indices: np.load(Path(flow_dir) / f"{video_id}.npy")[indices]
    monkeypatch.setitem(sys.modules, "orchestrator.data.flow", stub)
    return stub


def test_flow_and_rgb_are_read_at_the_same_indices(video_dir, tmp_path, flow_stub):
    fields = _write_flow(tmp_path, "a", NUM_FRAMES - 1)
    seen = []
    indices = np.array([[0, 1, 22]])  # 22: the last field, from frame 22 to frame 23
    dataset = VideoDataset([_record(video_dir, "a.mp4")], sampler=lambda n, rng: seen.append(n) or indices,
                           modalities=("rgb", "flow"), flow_dir=tmp_path)
    item = dataset[0]
    assert seen == [NUM_FRAMES - 1]  # the sampler counts flow fields
    assert item["inputs"]["flow"].shape == (1, 2, 3, 32, 64)
    np.testing.assert_array_equal(item["inputs"]["flow"].permute(0, 2, 3, 4, 1).numpy(), fields[indices])
    np.testing.assert_array_equal(item["inputs"]["rgb"].permute(0, 2, 3, 4, 1).numpy(),
                                  decode_all_pyav(video_dir / "a.mp4")[indices])

    flow_only = VideoDataset([_record(tmp_path / "no-videos-needed", "a.mp4")], sampler=lambda n, rng: indices,
                             modalities=("flow",), flow_dir=tmp_path)
    assert list(flow_only[0]["inputs"]) == ["flow"]


def test_flow_bad_cache_is_skipped_with_a_warning(video_dir, tmp_path, flow_stub, caplog):
    _write_flow(tmp_path, "a", NUM_FRAMES)  # one field too many: computed from another video
    dataset = VideoDataset([_record(video_dir, "a.mp4"), _record(video_dir, "b.avi")],
                           sampler=lambda n, rng: np.array([[0]]), modalities=("rgb", "flow"), flow_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        assert dataset[0] is None
        assert dataset[1] is None  # no b.npy at all
    messages = [r.getMessage() for r in caplog.records if r.name == "actionlab.data"]
    assert "24 flow fields but only 24 frames" in messages[0]
    assert str(video_dir / "b.avi") in messages[1]


def test_flow_through_the_real_flow_module(video_dir, tmp_path):
    from orchestrator.data.flow import load_flow  # part of the package: an import error fails, never skips

    fields = _write_flow(tmp_path, "a", NUM_FRAMES - 1)
    np.testing.assert_array_equal(load_flow(tmp_path, "a", np.array([3, 10])), fields[[3, 10]])
    indices = np.array([[3, 4], [10, 11]])
    dataset = VideoDataset([_record(video_dir, "a.mp4")], sampler=lambda n, rng: indices,
                           modalities=("flow",), flow_dir=tmp_path)
    np.testing.assert_array_equal(dataset[0]["inputs"]["flow"].permute(0, 2, 3, 4, 1).numpy(), fields[indices])
    dataset = VideoDataset([_record(video_dir, "b.avi")], sampler=lambda n, rng: indices,
                           modalities=("flow",), flow_dir=tmp_path)
    assert dataset[0] is None  # no b.npy: that video's flow extraction failed; skipped, not fatal


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="modalities"):
        VideoDataset([], sampler=random_clip_sampler, modalities=("depth",))
    with pytest.raises(ValueError, match="flow_dir"):
        VideoDataset([], sampler=random_clip_sampler, modalities=("flow",))


@pytest.fixture(scope="module")
def video_50fps(tmp_path_factory) -> Path:
    """24 distinct frames at 50 fps: read at 25 fps, every other one."""
    return write_video(tmp_path_factory.mktemp("fps") / "fast.mp4", make_frames(NUM_FRAMES, 32, 64, seed=3), fps=50)


@pytest.mark.parametrize("decode_timeout_s", [None, 30.0])  # in this process, and through the decode child
def test_fps_samples_the_resampled_video_and_reads_the_files_frames(video_50fps, decode_timeout_s):
    seen = []
    indices = np.array([[0, 1, 2], [11, 5, 5]])  # into the 12 frames of the video at 25 fps
    dataset = VideoDataset([VideoRecord(video_50fps, 0, "fast")], sampler=lambda n, rng: seen.append(n) or indices,
                           fps=25, decode_timeout_s=decode_timeout_s)
    rgb = dataset[0]["inputs"]["rgb"].permute(0, 2, 3, 4, 1).numpy()  # (V, T, H, W, C)
    assert seen == [NUM_FRAMES // 2]
    np.testing.assert_array_equal(rgb, decode_all_pyav(video_50fps)[2 * indices])
    at_own_rate = VideoDataset([VideoRecord(video_50fps, 0, "fast")], sampler=lambda n, rng: seen.append(n) or indices)
    at_own_rate[0]
    assert seen[-1] == NUM_FRAMES  # fps=None: the file's own frames, as before


def test_fps_maps_flow_fields_too_and_opens_the_video_for_its_rate(video_50fps, tmp_path, flow_stub):
    fields = _write_flow(tmp_path, "fast", NUM_FRAMES - 1)
    seen = []
    indices = np.array([[0, 5, 11]])
    dataset = VideoDataset([VideoRecord(video_50fps, 0, "fast")], sampler=lambda n, rng: seen.append(n) or indices,
                           modalities=("flow",), flow_dir=tmp_path, fps=25)
    flow = dataset[0]["inputs"]["flow"].permute(0, 2, 3, 4, 1).numpy()
    assert seen == [12]  # round(23 fields * 25 / 50) = round(11.5)
    np.testing.assert_array_equal(flow, fields[2 * indices])  # field i of the 25 fps video: field 2i of the file


def test_fps_without_a_rate_to_resample_from_skips_the_video(tmp_path, caplog):
    from orchestrator.data.video_io import write_frame_folder

    folder = tmp_path / "frames_video"
    write_frame_folder(folder, make_frames(NUM_FRAMES, 32, 64))
    dataset = VideoDataset([VideoRecord(folder, 0, "frames_video")], sampler=lambda n, rng: np.array([[0]]), fps=25)
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        assert dataset[0] is None
    assert "records no frame rate" in caplog.records[-1].getMessage()
    with pytest.raises(ValueError, match="fps"):
        VideoDataset([], sampler=random_clip_sampler, fps=0)
