"""Shared fixtures: tiny real H.264 videos written on the fly (nothing is downloaded)."""
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from orchestrator.data.video_io import write_video


class TinyVideo(NamedTuple):
    path: Path
    frames: np.ndarray  # uint8 (T, H, W, 3), exactly as PyAV decodes the file


def decode_all_pyav(path: str | Path) -> np.ndarray:
    """Every frame of a video, uint8 (T, H, W, 3), decoded sequentially with PyAV: the reference
    that decord's frames are compared against."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def make_frames(num_frames: int = 24, height: int = 32, width: int = 64, seed: int = 0) -> np.ndarray:
    """A moving bright square on a smooth, frame-dependent background: every frame differs.

    (decord 0.6.0 garbles H.264 frames 16, 24, 48 or 72 pixels wide: keep test widths off those.)
    """
    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    base = rng.integers(30, 200, size=3)
    for t in range(num_frames):
        frames[t] = (base + 2 * t) % 256
        x = (3 * t) % (width - 8)
        frames[t, 8:16, x:x + 8] = 255
    return frames


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory) -> TinyVideo:
    path = write_video(tmp_path_factory.mktemp("video") / "tiny.mp4", make_frames())
    return TinyVideo(path, decode_all_pyav(path))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray session for the whole test run (Ray start-up costs seconds; share it). With the
    dashboard, as `actionlab` starts Ray: Train frees an ASHA-stopped trial's workers through it."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()
