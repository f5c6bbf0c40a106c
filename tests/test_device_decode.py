"""data.decode_device: cuda, run on the CPU device: the deferred path (JPEG bytes and drawn crop parameters
from the loader, decode and transform on the device) gives the CPU path's batches; a bad JPEG costs its
item only; the setting is refused where there is no GPU."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_frames
from orchestrator.data.annotations import VideoRecord
from orchestrator.data.dataset import VideoDataset, collate_skip_bad
from orchestrator.data.device_decode import DeviceDecoding, PendingClip, decode_batch
from orchestrator.data.flow import flow_path, save_flow
from orchestrator.data.sampling import make_sampler
from orchestrator.data.transforms import ClipTransform
from orchestrator.data.video_io import frame_image, write_frame_folder, write_video
from orchestrator.errors import UserError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> tuple[list[VideoRecord], Path]:
    """Three frame folders (one of another size), an mp4 and an AVI, and a JPEG flow cache for each."""
    root = tmp_path_factory.mktemp("device_decode")
    sizes = [(96, 128), (96, 128), (120, 90)]
    records = [VideoRecord(root / f"f{i}", i % 2, f"f{i}") for i in range(3)]
    for record, (h, w) in zip(records, sizes):
        write_frame_folder(record.path, make_frames(20, h, w, seed=record.label))
    records.append(VideoRecord(write_video(root / "v.mp4", make_frames(20, 96, 128, seed=7)), 1, "v"))
    records.append(VideoRecord(write_video(root / "w.avi", make_frames(20, 96, 128, seed=8)), 0, "w"))
    rng = np.random.default_rng(0)
    for record in records:
        h, w = (96, 128) if record.video_id != "f2" else (120, 90)
        save_flow(flow_path(root / "flow", record.video_id, "jpg"),
                  rng.integers(0, 256, size=(19, h // 2, w // 2, 2), dtype=np.uint8), "jpg")
    return records, root / "flow"


def _datasets(records, flow_dir, *, train: bool, crop: str, modalities=("rgb",)):
    kwargs = dict(sampler=make_sampler(kind="tsn", train=train, num_segments=3, num_clips=1 if train else 2),
                  transform=ClipTransform(train=train, short_side=64, crop_size=48, crop=crop),
                  modalities=modalities, flow_dir=flow_dir, seed=3)
    return VideoDataset(records, **kwargs), VideoDataset(records, defer=True, **kwargs)


@pytest.mark.parametrize("train, crop", [(True, "multiscale"), (True, "random"), (False, "center"), (False, "ten")])
@pytest.mark.parametrize("modalities", [("rgb",), ("rgb", "flow")])
def test_deferred_batches_equal_the_cpu_path(records, train, crop, modalities):
    records, flow_dir = records
    cpu, deferred = _datasets(records, flow_dir, train=train, crop=crop, modalities=modalities)
    for epoch in range(2):
        cpu.set_epoch(epoch)
        deferred.set_epoch(epoch)
        expected = collate_skip_bad([cpu[i] for i in range(len(records))])
        pending = collate_skip_bad([deferred[i] for i in range(len(records))])
        assert isinstance(pending["inputs"]["rgb"][0].frames, list)  # a frame folder's: undecoded bytes
        assert isinstance(pending["inputs"]["rgb"][3].frames, torch.Tensor)  # a video's: decoded on the CPU
        got = decode_batch(pending, deferred.transform, CPU)
        assert set(got) == set(expected) and got["num_skipped"] == 0
        for modality in modalities:  # torchvision's libjpeg-turbo and Pillow's decode these alike
            assert torch.equal(got["inputs"][modality], expected["inputs"][modality]), modality
        assert torch.equal(got["label"], expected["label"]) and torch.equal(got["index"], expected["index"])


def test_loader_processes_hand_over_bytes_and_the_device_decodes_them(records):
    records, flow_dir = records
    cpu, deferred = _datasets(records, flow_dir, train=True, crop="multiscale")
    keys = [[0, 1], [2, 3], [4]]
    expected = list(torch.utils.data.DataLoader(cpu, batch_sampler=keys, collate_fn=collate_skip_bad))
    loader = torch.utils.data.DataLoader(deferred, batch_sampler=keys, num_workers=2, collate_fn=collate_skip_bad)
    got = list(DeviceDecoding(loader, deferred.transform, CPU))
    assert len(got) == len(expected) == len(DeviceDecoding(loader, None, CPU))
    for a, b in zip(got, expected):
        assert torch.equal(a["inputs"]["rgb"], b["inputs"]["rgb"])


def test_a_jpeg_that_does_not_decode_costs_its_item_only(records, tmp_path, caplog):
    import shutil

    records, flow_dir = records
    broken = tmp_path / "broken"
    shutil.copytree(records[0].path, broken)
    for i in range(20):  # cut 50 bytes into the scan: the loader's header check passes it, libjpeg does not
        data = frame_image(broken, i).read_bytes()
        frame_image(broken, i).write_bytes(data[:data.index(b"\xff\xda") + 50])
    items = [VideoRecord(broken, 1, "broken"), records[1]]
    _, deferred = _datasets(items, flow_dir, train=True, crop="random")
    pending = collate_skip_bad([deferred[0], deferred[1]])
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        got = decode_batch(pending, deferred.transform, CPU)
    assert got["num_skipped"] == 1 and got["index"].tolist() == [1] and got["inputs"]["rgb"].shape[0] == 1
    assert "does not decode" in caplog.text


def test_hostile_frame_folders_are_bad_videos_in_the_loader(records, tmp_path, caplog):
    records, flow_dir = records
    mixed, fifo, png = tmp_path / "mixed", tmp_path / "fifo", tmp_path / "png"
    write_frame_folder(mixed, make_frames(20, 96, 128))
    write_frame_folder(tmp_path / "small", make_frames(1, 64, 64))
    (tmp_path / "small" / "img_00001.jpg").replace(frame_image(mixed, 10))  # one frame of another size
    write_frame_folder(fifo, make_frames(20, 96, 128))
    frame_image(fifo, 10).unlink()
    import os

    os.mkfifo(frame_image(fifo, 10))  # would block an open() for ever
    write_frame_folder(png, make_frames(20, 96, 128))
    from PIL import Image

    Image.fromarray(make_frames(1, 96, 128)[0]).save(frame_image(png, 10), format="PNG")  # named .jpg
    items = [VideoRecord(p, 0, p.name) for p in (mixed, fifo, png)]
    _, deferred = _datasets(items, flow_dir, train=False, crop="center")  # centres: frame 10 among them
    deferred.sampler = lambda num_frames, rng: np.array([[0, 10, 19]])
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        assert [deferred[i] for i in range(3)] == [None, None, None]
    assert "different sizes" in caplog.text and "not a regular file" in caplog.text and "not a JPEG" in caplog.text


def test_cuda_decoding_is_refused_without_a_gpu(records):
    from orchestrator.config import parse_experiment
    from orchestrator.training import driver
    from orchestrator.training.loop import setup_worker

    with pytest.raises(UserError, match="data.decode_device 'cuda'.*scaling.use_gpu is false"):
        parse_experiment({"name": "t", "data": {"decode_device": "cuda"}, "scaling": {"use_gpu": False}})
    cfg = parse_experiment({"name": "t", "data": {"decode_device": "cuda"}, "scaling": {"use_gpu": True}})
    with pytest.raises(UserError, match="data.decode_device 'cuda': this worker trains on cpu"):
        setup_worker(cfg, rank=0, world=1, device=CPU)
    driver.check_decode_device(cfg)  # GPUs asked for: the cluster's concern
    auto = parse_experiment({"name": "t", "data": {"decode_device": "cuda"}})
    original = driver.use_gpu
    try:
        driver.use_gpu = lambda cfg: False  # a cluster without GPUs (auto resolves to False)
        with pytest.raises(UserError, match="data.decode_device 'cuda'.*has none"):
            driver.check_decode_device(auto)
    finally:
        driver.use_gpu = original


def test_pending_clip_of_decoded_frames_records_their_size():
    clip = PendingClip.of(np.zeros((4, 30, 40, 2), np.uint8), torch.zeros(1, 4, dtype=torch.int64))
    assert clip.size == (30, 40) and clip.frames.dtype == torch.uint8


def test_torchcodec_decodes_video_files_on_the_device(records, tmp_path):
    """With data.decoder torchcodec the loader only opens a video (its frame count and size) and the
    device decodes the sampled frames; an .avi is still decoded in order on the CPU. Run on the CPU device."""
    import shutil

    from orchestrator.data.decoders import torchcodec_problem
    from orchestrator.data.device_decode import VideoFrames

    if torchcodec_problem():
        pytest.skip(torchcodec_problem())  # .ci/run installs it
    records, flow_dir = records
    videos = records[3:]  # v.mp4, w.avi
    kwargs = dict(sampler=make_sampler(kind="tsn", train=True, num_segments=3),
                  transform=ClipTransform(train=True, short_side=64, crop_size=48, crop="multiscale"), seed=3,
                  decode_timeout_s=30)
    cpu = VideoDataset(videos, **kwargs)
    deferred = VideoDataset(videos, decoder="torchcodec", defer=True, **kwargs)
    pending = collate_skip_bad([deferred[0], deferred[1]])
    mp4, avi = pending["inputs"]["rgb"]
    assert isinstance(mp4.frames, VideoFrames) and mp4.size == (96, 128)
    assert isinstance(avi.frames, torch.Tensor)
    got = decode_batch(pending, deferred.transform, CPU)
    expected = collate_skip_bad([cpu[0], cpu[1]])
    assert torch.equal(got["inputs"]["rgb"], expected["inputs"]["rgb"])

    moved = tmp_path / "v.mp4"
    shutil.copy(videos[0].path, moved)
    pending = collate_skip_bad([VideoDataset([VideoRecord(moved, 1, "v")], decoder="torchcodec", defer=True,
                                             **kwargs)[0], deferred[1]])
    moved.write_bytes(b"gone")  # replaced between the loader's open and the device's decode
    got = decode_batch(pending, deferred.transform, CPU)
    assert got["num_skipped"] == 1 and got["index"].tolist() == [1]
