"""Optical flow: quantisation, estimators on synthetic motion, the cache formats, resume, Ray fan-out."""
import argparse
import json
import shutil
import subprocess
import sys
import types
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.commands import flow as flow_command
from orchestrator.data.flow import (
    FlowParams, compute_flow, convert_flow_cache, dequantize_flow, extract_flow, flow_frame_count, flow_path, load_flow,
    quantize_flow, read_manifest, save_flow,
)
from orchestrator.data.video_io import write_video
from orchestrator.errors import UserError
from tests.conftest import make_frames

try:
    from orchestrator.data.annotations import VideoRecord
except ImportError:  # written in parallel by another helper; same fields
    VideoRecord = namedtuple("VideoRecord", ["path", "label", "video_id"])

NUM_FRAMES = 6  # per tiny video: 5 flow fields
# decord 0.6.0 here returns garbled frames for H.264 widths 16, 24, 48 and 72 (conftest's default is
# 48), so the tiny videos are 64 wide.
HEIGHT, WIDTH = 32, 64


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture, uint8 (H, W, 3): gives flow something to lock onto everywhere."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


def moving_object_pair(dx: int, dy: int) -> np.ndarray:
    """Static textured background, a 24x24 textured square moving by (dx, dy): uint8 (2, 64, 64, 3)."""
    background, patch = texture(64, 64, seed=1), texture(24, 24, seed=2)
    frames = np.stack([background, background])
    frames[0, 16:40, 16:40] = patch
    frames[1, 16 + dy:40 + dy, 16 + dx:40 + dx] = patch
    return frames


def camera_pan(num_frames: int, dx: int, dy: int, size: int = 64) -> np.ndarray:
    """A camera panning over a static textured scene by (dx, dy) >= 0 px a frame: content moves by (-dx, -dy)."""
    scene = texture(size + num_frames * dy, size + num_frames * dx, seed=3)
    return np.stack([scene[t * dy:t * dy + size, t * dx:t * dx + size] for t in range(num_frames)])


# --- quantisation ---------------------------------------------------------------------------

def test_quantize_round_trip_within_one_step():
    flow = np.random.default_rng(0).uniform(-20, 20, (4, 8, 8, 2)).astype(np.float32)
    q = quantize_flow(flow, bound=20.0)
    assert q.dtype == np.uint8 and q.shape == flow.shape
    assert np.abs(dequantize_flow(q, bound=20.0) - flow).max() <= 20.0 / 255 + 1e-5


@pytest.mark.parametrize("value,expected", [(-100.0, 0), (-20.0, 0), (20.0, 255), (100.0, 255), (0.0, 128)])
def test_quantize_table(value, expected):
    assert quantize_flow(np.array([value]), bound=20.0)[0] == expected


def test_quantize_flip_negates_flow():
    # Random values and exact rounding ties (f / bound * 127.5 an integer), positive and negative.
    ties = np.concatenate([np.arange(-127, 0), np.arange(1, 128)]) * 20.0 / 127.5
    flow = np.concatenate([np.random.default_rng(1).uniform(-25, 25, 1000), ties])
    q = quantize_flow(flow, bound=20.0)
    np.testing.assert_array_equal(255 - q, quantize_flow(-flow, bound=20.0))
    np.testing.assert_array_equal(dequantize_flow(255 - q), -dequantize_flow(q))


# --- estimators -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_known_translation_recovered_in_object(method):
    flow = compute_flow(moving_object_pair(dx=3, dy=2), method=method)
    assert flow.shape == (1, 64, 64, 2) and flow.dtype == np.float32
    inside = flow[0, 22:34, 22:34].reshape(-1, 2)  # object interior, away from its edges
    np.testing.assert_allclose(np.median(inside, axis=0), [3, 2], atol=0.5)
    assert np.abs(flow[0, :8, :8]).max() < 0.5  # static background corner


def test_warp_removes_camera_pan():
    frames = camera_pan(4, dx=2, dy=1)  # content moves by (-2, -1) px per frame
    raw = compute_flow(frames, method="farneback")
    np.testing.assert_allclose(np.median(raw.reshape(-1, 2), axis=0), [-2, -1], atol=0.2)
    warped = compute_flow(frames, method="farneback", warp=True)
    assert warped.shape == raw.shape
    assert np.abs(warped[:, 8:-8, 8:-8]).mean() < 0.1


@pytest.fixture(scope="module")
def raft_small_weights(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return path


def test_raft_random_weights_shape_and_batching(raft_small_weights):
    frames = np.stack([texture(60, 60, seed=s) for s in range(4)])  # 60 is not a multiple of 8: padded
    flow = compute_flow(frames, method="raft", raft_weights=raft_small_weights)
    assert flow.shape == (3, 60, 60, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    # pairs split 2 + 1 across forward passes: the same fields as one pass of 3
    batched = compute_flow(frames, method="raft", raft_weights=raft_small_weights, raft_batch=2)
    np.testing.assert_allclose(batched, flow, atol=1e-3)


def test_raft_without_weights_is_user_error():
    with pytest.raises(UserError, match="--raft-weights"):
        compute_flow(np.zeros((2, 16, 16, 3), np.uint8), method="raft")
    with pytest.raises(UserError, match="no such file"):
        compute_flow(np.zeros((2, 16, 16, 3), np.uint8), method="raft", raft_weights="/nonexistent/raft.pth")


def test_unknown_method_is_user_error():
    with pytest.raises(UserError, match="farneback"):
        compute_flow(np.zeros((2, 16, 16, 3), np.uint8), method="lucas-kanade")


# --- cache ----------------------------------------------------------------------------------

def test_load_flow_reads_exact_indices(tmp_path):
    cached = np.random.default_rng(0).integers(0, 256, (7, 4, 5, 2)).astype(np.uint8)
    path = flow_path(tmp_path, "Class/v_Class_g01_c01", "npy")
    assert path == tmp_path / "Class" / "v_Class_g01_c01.npy"
    path.parent.mkdir()
    np.save(path, cached)
    indices = np.array([3, 0, 6, 3])
    out = load_flow(tmp_path, "Class/v_Class_g01_c01", indices)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 5, 2)
    np.testing.assert_array_equal(out, cached[indices])
    assert flow_frame_count(tmp_path, "Class/v_Class_g01_c01") == 7
    with pytest.raises(UserError, match="actionlab flow"):
        flow_frame_count(tmp_path, "Class/missing")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three tiny real videos (6 frames, 32x64) and one file that is not a video."""
    root = tmp_path_factory.mktemp("videos")
    paths = [write_video(root / f"A/v{i}.mp4", make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=i)) for i in range(3)]
    records = [VideoRecord(path, 0, f"A/v{i}") for i, path in enumerate(paths)]
    bad = root / "B/broken.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a video")
    return records, VideoRecord(bad, 1, "B/broken")


@pytest.mark.parametrize("fmt", ["jpg", "npy"])
def test_extract_caches_skips_and_resumes(videos, tmp_path, fmt):
    records, _ = videos
    first = extract_flow(records, flow_dir=tmp_path, fmt=fmt, use_ray=False, progress=False)
    assert (first.computed, first.cached, first.failed, first.frames) == (3, 0, [], 3 * (NUM_FRAMES - 1))
    assert read_manifest(tmp_path) == FlowParams("farneback", 20.0, None, False, fmt)
    every = np.arange(NUM_FRAMES - 1)
    for record in records:
        assert load_flow(tmp_path, record.video_id, every).shape == (NUM_FRAMES - 1, HEIGHT, WIDTH, 2)
        assert flow_frame_count(tmp_path, record.video_id) == NUM_FRAMES - 1
    assert not list(tmp_path.rglob("*.tmp"))

    second = extract_flow(records, flow_dir=tmp_path, fmt=fmt, use_ray=False, progress=False)
    assert (second.computed, second.cached, second.frames) == (0, 3, 0)

    kept = load_flow(tmp_path, records[0].video_id, every)
    shutil.rmtree(flow_path(tmp_path, records[1].video_id, fmt)) if fmt != "npy" else \
        flow_path(tmp_path, records[1].video_id, fmt).unlink()  # as if killed before this video's rename
    resumed = extract_flow(records, flow_dir=tmp_path, fmt=fmt, use_ray=False, progress=False)
    assert (resumed.computed, resumed.cached) == (1, 2)
    assert flow_path(tmp_path, records[1].video_id, fmt).exists()
    np.testing.assert_array_equal(load_flow(tmp_path, records[0].video_id, every), kept)


def smooth_flow(n: int = 6, height: int = 24, width: int = 40) -> np.ndarray:
    """Quantised fields that vary smoothly, as real flow does: uint8 (n, H, W, 2)."""
    t, y, x = np.meshgrid(np.arange(n), np.arange(height), np.arange(width), indexing="ij")
    flow = np.stack([8 * np.sin(x / 7 + t), 5 * np.cos(y / 5 - t / 2)], axis=-1)
    return quantize_flow(flow)


@pytest.mark.parametrize("fmt", ["jpg", "png", "npy"])
def test_every_format_reads_back_the_sampled_fields(tmp_path, fmt):
    q = smooth_flow()
    save_flow(flow_path(tmp_path, "A/v", fmt), q, fmt)
    indices = np.array([4, 0, 4])
    out = load_flow(tmp_path, "A/v", indices)
    assert out.dtype == np.uint8 and out.shape == (3, 24, 40, 2) and flow_frame_count(tmp_path, "A/v") == 6
    error = np.abs(out.astype(int) - q[indices].astype(int))
    if fmt == "jpg":  # lossy: within a couple of quantisation steps of 0.16 px
        assert error.mean() < 1.0 and error.max() <= 8
    else:
        assert error.max() == 0


def test_image_cache_opens_only_the_sampled_fields(tmp_path):
    save_flow(flow_path(tmp_path, "v", "jpg"), smooth_flow(), "jpg")
    (tmp_path / "v" / "x_00003.jpg").unlink()  # field 2
    assert load_flow(tmp_path, "v", np.array([0, 5])).shape == (2, 24, 40, 2)
    with pytest.raises(IndexError, match="no flow field 2"):
        load_flow(tmp_path, "v", np.array([2]))


def test_a_npy_cache_is_kept_read_and_converted_with_the_command_named(videos, tmp_path, capsys):
    records, _ = videos
    extract_flow(records[:2], flow_dir=tmp_path, fmt="npy", use_ray=False, progress=False)
    manifest = tmp_path / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["format"]  # as written before the image formats existed
    manifest.write_text(json.dumps(old))
    arrays = {r.video_id: np.load(flow_path(tmp_path, r.video_id, "npy")) for r in records[:2]}
    assert read_manifest(tmp_path).format == "npy"
    np.testing.assert_array_equal(load_flow(tmp_path, records[0].video_id, np.arange(3)), arrays["A/v0"][:3])

    kept = extract_flow(records, flow_dir=tmp_path, fmt="jpg", use_ray=False, progress=False)  # one new video
    assert (kept.computed, kept.cached) == (1, 2) and flow_path(tmp_path, records[2].video_id, "npy").is_file()
    assert f"actionlab data convert-flow --flow-dir {tmp_path} --format jpg" in capsys.readouterr().out
    arrays[records[2].video_id] = np.load(flow_path(tmp_path, records[2].video_id, "npy"))
    assert convert_flow_cache(tmp_path, "jpg", progress=False) == 3
    assert not list(tmp_path.rglob("*.npy")) and read_manifest(tmp_path).format == "jpg"
    again = extract_flow(records, flow_dir=tmp_path, fmt="jpg", use_ray=False, progress=False)
    assert (again.computed, again.cached) == (0, 3)
    for video_id, array in arrays.items():
        jpg = load_flow(tmp_path, video_id, np.arange(len(array)))
        assert np.abs(jpg.astype(int) - array.astype(int)).mean() < 1.0


def test_extract_matches_compute_flow_and_resizes(videos, tmp_path):
    records, _ = videos
    summary = extract_flow(records[:1], flow_dir=tmp_path, short_side=16, use_ray=False, progress=False)
    assert summary.computed == 1
    cached = load_flow(tmp_path, records[0].video_id, np.arange(NUM_FRAMES - 1))
    assert cached.shape == (NUM_FRAMES - 1, 16, 32, 2)
    # The moving square goes right by 3 px a frame at full size: about +1.5 px at half size.
    assert dequantize_flow(cached[..., 0]).max() > 1.0


def test_manifest_mismatch_is_refused(videos, tmp_path):
    records, _ = videos
    extract_flow(records[:1], flow_dir=tmp_path, use_ray=False, progress=False)
    with pytest.raises(UserError, match=r"bound is 20\.0 there but 10\.0.*different --flow-dir"):
        extract_flow(records[:1], flow_dir=tmp_path, bound=10.0, use_ray=False, progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["bound"] == 20.0


def test_bad_video_reported_run_goes_on(videos, tmp_path):
    records, bad = videos
    summary = extract_flow([bad, *records], flow_dir=tmp_path, use_ray=False, progress=False)
    assert summary.computed == 3
    assert [path for path, _ in summary.failed] == [bad.path]
    assert summary.failed[0][1]  # a non-empty reason
    assert not flow_path(tmp_path, bad.video_id, "jpg").exists()


def test_a_video_whose_frames_do_not_all_decode_fails_and_gets_no_flow(videos, tmp_path):
    """decord lists the 200 frames of this mp4 but only 50 decode, and hands back copies for the other
    150: flow used to be written from them (150 of its 199 fields from repeated frames)."""
    import time

    from orchestrator.data.decode_guard import decode_process_pid
    from tests.test_decode_guard import HIDDEN, LISTED, write_overreporting_mp4

    records, _ = videos
    bad = VideoRecord(write_overreporting_mp4(tmp_path / "hidden.mp4"), 1, "B/hidden")
    limit_s = 20.0
    start = time.monotonic()
    summary = extract_flow([bad, records[0]], flow_dir=tmp_path / "flow", use_ray=False, progress=False,
                           decode_timeout_s=limit_s)
    assert time.monotonic() - start < limit_s
    assert [path for path, _ in summary.failed] == [bad.path]
    assert f"the container lists {LISTED} frames but {LISTED - HIDDEN} decode" in summary.failed[0][1]
    assert not flow_path(tmp_path / "flow", bad.video_id, "jpg").exists()
    assert not list((tmp_path / "flow").rglob("*hidden*"))
    assert (summary.computed, summary.frames) == (1, NUM_FRAMES - 1)  # the good video still gets its flow
    assert flow_frame_count(tmp_path / "flow", records[0].video_id) == NUM_FRAMES - 1
    assert decode_process_pid() is None  # the run's decode process is gone


def test_a_decode_past_the_time_limit_fails_that_video_only(videos, tmp_path):
    """A FIFO with no writer blocks decord's open in native code, as a hanging decode does."""
    import os
    import time

    records, _ = videos
    fifo = tmp_path / "videos/blocks.mp4"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    start = time.monotonic()
    summary = extract_flow([VideoRecord(fifo, 1, "B/blocks"), records[0]], flow_dir=tmp_path / "flow", use_ray=False,
                           progress=False, decode_timeout_s=2)
    assert 2 <= time.monotonic() - start < 2 + 10
    assert summary.failed == [(fifo, "DecodeTimeout: decode took longer than 2 s (killed; data.decode_timeout_s)")]
    assert summary.computed == 1  # a fresh decode process read the next video
    with pytest.raises(UserError, match="--decode-timeout-s must be a positive number"):
        extract_flow(records, flow_dir=tmp_path / "flow", use_ray=False, progress=False, decode_timeout_s=0)


def test_command_prints_failures_and_exits_nonzero(videos, tmp_path, monkeypatch, capsys):
    import orchestrator.data.check  # noqa: F401 - imports the real annotations module before it is faked

    records, bad = videos
    Split = namedtuple("Split", ["records", "class_names", "problems"])
    fake = types.ModuleType("orchestrator.data.annotations")
    problems = [(tmp_path / "a.csv", "line 3: unknown class 'C'")]
    fake.read_split = fake.read_all_subsets = lambda dataset, **kwargs: Split([*records, bad], ["A", "B"], problems)
    fake.require_consistent = lambda *splits: None
    fake.DATASETS = {"csv": fake.read_split}  # the registry --dataset takes its choices from
    monkeypatch.setitem(sys.modules, "orchestrator.data.annotations", fake)
    parser = argparse.ArgumentParser()
    flow_command.add_arguments(parser)
    args = parser.parse_args(["--dataset", "csv", "--root", str(tmp_path / "videos"), "--annotations",
                              str(tmp_path / "a.csv"), "--flow-dir", str(tmp_path / "flow"), "--no-ray"])
    assert flow_command.run(args) == 1
    out = capsys.readouterr().out
    assert f"failed: {bad.path}" in out and "3 computed" in out and "frames/s" in out
    assert "warning: " in out and "unknown class 'C'" in out


def test_prepare_data_extracts_flow_for_a_csv_test_list(tmp_path, monkeypatch):
    """A csv data set keeps its held-out list in data.test_annotations: its videos need flow too."""
    from functools import partial

    from orchestrator.config import parse_experiment
    from orchestrator.data import flow
    from orchestrator.plan import plan
    from orchestrator.training.prepare import prepare_data
    from tests.conftest import _write_text, write_layout

    root, train_csv = write_layout("csv", tmp_path, num_frames=NUM_FRAMES)
    test_videos = {"held/d.mp4": "walk", "held/e.mp4": "run"}
    for seed, path in enumerate(test_videos):
        write_video(root / path, make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=10 + seed))
    test_csv = _write_text(tmp_path / "test.csv",
                           "path,label\n" + "".join(f"{path},{label}\n" for path, label in test_videos.items()))
    cfg = parse_experiment({"data": {"dataset": "csv", "root": str(root), "annotations": str(train_csv),
                                     "test_annotations": str(test_csv), "flow_dir": str(tmp_path / "flow")},
                            "model": {"modality": "flow"}})
    monkeypatch.setattr(flow, "extract_flow", partial(flow.extract_flow, use_ray=False, progress=False))
    prepare_data(plan(cfg))
    for video_id in ("clips/a", "held/d", "held/e"):
        assert flow_path(tmp_path / "flow", video_id, cfg.data.flow_format).exists(), video_id


@pytest.mark.ray
def test_ray_fan_out(videos, tmp_path, ray_session):
    records, bad = videos
    summary = extract_flow([*records, bad], flow_dir=tmp_path, use_ray=True, progress=False)
    assert (summary.computed, summary.cached, summary.frames) == (3, 0, 3 * (NUM_FRAMES - 1))
    assert [path for path, _ in summary.failed] == [bad.path]
    no_ray = extract_flow(records, flow_dir=tmp_path / "local", use_ray=False, progress=False)
    assert no_ray.computed == 3
    every = np.arange(NUM_FRAMES - 1)
    for record in records:  # same fields whichever way it ran
        np.testing.assert_array_equal(load_flow(tmp_path, record.video_id, every),
                                      load_flow(tmp_path / "local", record.video_id, every))


def test_bench_flow_compares_every_format_on_the_same_fields():
    from orchestrator.bench.cpu import bench_flow

    lines = []
    figures = bench_flow(videos=1, num_frames=16, height=48, width=64, clips=2, rounds=1, out=lines.append)
    assert set(figures) == {"jpg", "png", "npy"} and figures["npy"]["vs_npy"] == 1.0
    assert all(f["bytes_per_field"] > 0 and f["clips_per_s"] > 0 for f in figures.values())
    assert any("jpg" in line and "x npy" in line for line in lines)


def test_png_fields_read_after_decord_is_imported(tmp_path):
    """A training worker imports decord before it reads flow; OpenCV's PNG decoder then fails."""
    save_flow(flow_path(tmp_path, "v", "png"), smooth_flow(), "png")
    code = ("import decord, numpy as np; from orchestrator.data.flow import load_flow; "
            f"print(load_flow({str(tmp_path)!r}, 'v', np.arange(6)).sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) == int(smooth_flow().astype(np.int64).sum())
