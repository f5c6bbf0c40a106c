"""Optical flow for the temporal stream: compute, quantise to uint8, cache per video.

Flow field i is the motion from frame i to frame i + 1, (dx, dy) in pixels, so a video of T
frames has T - 1 fields. Three estimators, picked by `method`:

- 'farneback' (Farnebäck 2003): dense polynomial-expansion flow, fast on CPU.
- 'tvl1' (Zach, Pock & Bischof 2007): the TV-L1 flow of the two-stream and TSN papers; accurate
  but ~100x slower than Farneback on CPU.
- 'raft' (Teed & Deng 2020): torchvision's raft_small / raft_large, weights from a local file.

`warp=True` gives TSN's warped flow (Wang et al. 2016, after iDT, Wang & Schmid 2013): the camera
motion between two frames, fitted as a homography to the flow itself with RANSAC, is subtracted
so that mostly the actors' motion is left.

Fields are quantised to uint8 with a fixed `bound` (+-20 px by default, as TSN) and cached in one
of three formats (`FLOW_FORMATS`, `data.flow_format`):

- 'jpg' (default): `flow_dir/<video_id>/x_00001.jpg, y_00001.jpg, ...`, one greyscale JPEG (quality
  95) per field and axis, 1-based: the layout of TSN's and MMAction2's denseflow extractions, about
  a tenth of the bytes of 'npy' (`actionlab bench flow` measures it).
- 'png': the same layout, lossless.
- 'npy': `flow_dir/<video_id>.npy`, uint8 (T - 1, H, W, 2), memory-mapped; the format of caches
  made before the image formats existed (`actionlab data convert-flow` turns one into images).

A cache keeps the format it was made in: asking for another over it reads and extends it as it is.

Videos are decoded in a child process killed after `decode_timeout_s` (decord can hang; see
orchestrator/data/decode_guard.py), and only frames that decode are used: a video on which fewer (or
more) frames decode than the container lists fails, with its reason in the FlowSummary, and gets no
cache, rather than flow computed from the copies decord hands back for frames that do not decode.

Reads open only the sampled fields (their image files, or their rows of the memory map), whatever
the format. A video's cache is written under a temporary name and renamed, so an interrupted
extraction leaves no half-written cache and a rerun resumes where it stopped, after removing what
the interrupted run left half-written (`tasks.remove_stale_temporaries`).
`flow_dir/manifest.json` records the parameters; a rerun with other parameters is refused.

The cache folder is the flow's own: a new or empty folder, or one holding a flow manifest; never the
data set's root or lists, nor inside or around them (`sources`, `paths.check_output`). Every cache
path resolves inside it; two videos whose caches would be one path, or one inside the other, are
refused before anything is written.
"""
import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from orchestrator.data.decode_guard import DecodeGuard, close_decode_process
from orchestrator.data.paths import check_output, holds_files, is_inside, require_inside
from orchestrator.data.tasks import remove_stale_temporaries, run_per_video, temporary_sibling, write_atomic
from orchestrator.errors import UserError

FLOW_METHODS = ("farneback", "tvl1", "raft")
FLOW_FORMATS = ("jpg", "png", "npy")  # see the module docstring
JPEG_QUALITY = 95  # TSN's and denseflow's
MANIFEST_NAME = "manifest.json"

# OpenCV's documented example values, the ones TSN-style extractors use: a 3-level pyramid halving
# each level, 15 px averaging window, 5-px polynomial neighbourhood.
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
RAFT_PAIRS_PER_BATCH = 8  # frame pairs per RAFT forward pass: bounds memory on long videos
RAFT_MIN_SIDE = 128  # torchvision RAFT's 4-level correlation pyramid needs 1/8-size maps >= 16
WARP_GRID_POINTS = 1000  # about this many flow vectors are fed to RANSAC per frame pair
WARP_RANSAC_PX = 1.0  # a correspondence further than this from the homography is an outlier
DECODE_TIMEOUT_S = 60.0  # as data.decode_timeout_s: the slowest good video measured took 6 s to decode


class FlowParams(NamedTuple):
    """What `flow_dir/manifest.json` records: everything that changes the cached values."""

    method: str
    bound: float
    short_side: int | None
    warp: bool
    format: str = "npy"  # manifests written before the image formats existed name none


class FlowSummary(NamedTuple):
    """What one `extract_flow` run did."""

    computed: int  # videos whose flow was computed in this run
    cached: int  # videos skipped because their cache file already existed
    failed: list[tuple[Path, str]]  # (path, reason) for each video that could not be processed
    frames: int  # flow fields computed in this run
    seconds: float  # wall time of the run

    def describe(self) -> str:
        """One line: counts and throughput (of the videos computed in this run)."""
        seconds = max(self.seconds, 1e-9)
        return (f"{self.computed} computed, {self.cached} cached, {len(self.failed)} failed; "
                f"{self.frames} flow fields in {self.seconds:.1f} s = "
                f"{self.frames / seconds:.1f} frames/s, {self.computed / seconds:.2f} videos/s")


# --- quantisation ---------------------------------------------------------------------------

def quantize_flow(flow: np.ndarray, *, bound: float = 20.0) -> np.ndarray:
    """Flow in pixels -> uint8, q = clip(round(f / bound * 127.5 + 127.5), 0, 255).

    Ties round away from the centre 127.5, so `255 - quantize(f) == quantize(-f)` (a horizontal
    flip negates dx) for every f except exactly 0, which must pick a side (128). Either way
    `dequantize(255 - q) == -dequantize(q)` exactly. |f| >= bound saturates at 0 / 255.

    Args:
        flow: float (..., 2) or any shape, pixels.
        bound: flow magnitude mapped to 0 and 255.

    Returns:
        uint8, same shape; the round-trip error is at most bound / 255 inside +-bound.
    """
    steps = np.asarray(flow, np.float32) / np.float32(bound) * np.float32(127.5)  # steps from the centre
    # The representable values are the half-integers 127.5 +- (k + 0.5): nearest is floor + 0.5.
    magnitude = np.floor(np.abs(steps)) + 0.5
    q = 127.5 + np.where(steps < 0, -magnitude, magnitude)
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize_flow(q: np.ndarray, *, bound: float = 20.0) -> np.ndarray:
    """uint8 -> float32 pixels, (q - 127.5) / 127.5 * bound. Same shape."""
    return (np.asarray(q, np.float32) - np.float32(127.5)) / np.float32(127.5) * np.float32(bound)


# --- estimators -----------------------------------------------------------------------------

def _grey(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (T, H, W, 3) -> uint8 grey (T, H, W)."""
    import cv2

    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])


def _farneback(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (T-1, H, W, 2)."""
    import cv2

    grey = _grey(frames)
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK_PARAMS) for a, b in zip(grey[:-1], grey[1:])])


def _tvl1(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (T-1, H, W, 2), OpenCV defaults (tau 0.25, lambda 0.15, 5 scales)."""
    import cv2

    grey = _grey(frames)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return np.stack([tvl1.calc(a, b, None) for a, b in zip(grey[:-1], grey[1:])])


@functools.lru_cache(maxsize=2)
def _raft_model(weights: str, device: str):
    """raft_small or raft_large, chosen by the state dict's keys, in eval mode on `device`.

    Cached per process, so a Ray worker that extracts many videos loads the weights once.
    """
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"--raft-weights {weights}: cannot be read as a torch state dict ({err})") from err
    # raft_small's encoders use bottleneck blocks, the only ones with a third conv.
    builder = raft_small if "feature_encoder.layer1.0.convnormrelu3.0.weight" in state else raft_large
    model = builder(weights=None)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"--raft-weights {weights}: not a torchvision raft_small/raft_large state dict "
                        f"({err})") from err
    return model.eval().to(device)


def _raft(frames: np.ndarray, *, weights: str, device: str, pairs_per_batch: int = RAFT_PAIRS_PER_BATCH) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (T-1, H, W, 2), `pairs_per_batch` frame pairs per forward pass.

    Frames are edge-padded (bottom, right) to a multiple of 8 (RAFT's 1/8 grid) and at least
    RAFT_MIN_SIDE, and the flow is cropped back.
    """
    import torch
    import torch.nn.functional as F

    model = _raft_model(str(weights), device)
    _, height, width, _ = frames.shape
    pad_h, pad_w = (max(RAFT_MIN_SIDE, side + -side % 8) - side for side in (height, width))
    out = []
    with torch.inference_mode():
        for start in range(0, len(frames) - 1, pairs_per_batch):
            chunk = torch.from_numpy(frames[start:start + pairs_per_batch + 1]).to(device)  # (P+1, H, W, 3)
            chunk = chunk.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (P+1, 3, H, W) in [-1, 1], as RAFT was trained
            chunk = F.pad(chunk, (0, pad_w, 0, pad_h), mode="replicate")
            flow = model(chunk[:-1], chunk[1:])[-1]  # last refinement: (P, 2, H + pad_h, W + pad_w)
            out.append(flow[:, :, :height, :width].permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _camera_flow(flow: np.ndarray) -> np.ndarray | None:
    """Camera motion in one flow field, as the flow of a RANSAC homography fitted to a grid of it.

    Args:
        flow: float32 (H, W, 2).

    Returns:
        float32 (H, W, 2), or None when no homography fits (too few inliers).
    """
    import cv2

    height, width, _ = flow.shape
    step = max(1, int(np.sqrt(height * width / WARP_GRID_POINTS)))
    ys, xs = np.mgrid[step // 2:height:step, step // 2:width:step]
    src = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)  # (N, 2) as (x, y)
    dst = src + flow[ys, xs].reshape(-1, 2)
    if len(src) < 4:
        return None
    homography, _ = cv2.findHomography(src, dst, cv2.RANSAC, WARP_RANSAC_PX)
    if homography is None:
        return None
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ homography.T  # (H, W, 3) homogeneous
    moved = points[..., :2] / points[..., 2:]
    return (moved - np.stack([xs, ys], axis=-1)).astype(np.float32)


def _subtract_camera_motion(flow: np.ndarray) -> np.ndarray:
    """float32 (T-1, H, W, 2) -> the same with each field's homography flow removed."""
    out = flow.copy()
    for i, field in enumerate(flow):
        camera = _camera_flow(field)
        if camera is not None:
            out[i] -= camera
    return out


def check_flow_args(method: str, raft_weights: str | Path | None) -> None:
    """UserError unless `method` is known and, for RAFT, `raft_weights` is an existing file."""
    if method not in FLOW_METHODS:
        raise UserError(f"--method {method!r} is not a flow method; choose one of {', '.join(FLOW_METHODS)}")
    if method == "raft":
        if raft_weights is None:
            raise UserError("--method raft needs --raft-weights FILE, a local torchvision raft_small or raft_large "
                            "state dict (nothing is downloaded); or use --method farneback / tvl1")
        if not Path(raft_weights).is_file():
            raise UserError(f"--raft-weights {raft_weights}: no such file; give the path of a raft_small/raft_large "
                            "state dict (.pth)")


def compute_flow(frames: np.ndarray, *, method: str = "farneback", raft_weights: str | Path | None = None,
                 device: str = "cpu", warp: bool = False, raft_batch: int = RAFT_PAIRS_PER_BATCH) -> np.ndarray:
    """Dense optical flow between consecutive frames.

    Args:
        frames: uint8 RGB (T, H, W, 3), T >= 2.
        method: one of FLOW_METHODS.
        raft_weights: local state-dict file, required for 'raft'.
        device: torch device for 'raft' ('cpu', 'cuda'); the OpenCV methods run on CPU.
        warp: subtract the camera motion (TSN warped flow).
        raft_batch: frame pairs per RAFT forward pass (GPU memory vs. speed).

    Returns:
        float32 (T-1, H, W, 2): field i is (dx, dy) in pixels from frame i to frame i + 1.
    """
    check_flow_args(method, raft_weights)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 2:
        raise ValueError(f"flow needs uint8 RGB frames (T >= 2, H, W, 3); got shape {frames.shape}")
    if method == "farneback":
        flow = _farneback(frames)
    elif method == "tvl1":
        flow = _tvl1(frames)
    else:
        flow = _raft(frames, weights=raft_weights, device=device, pairs_per_batch=raft_batch)
    return _subtract_camera_motion(flow) if warp else flow


# --- cache ----------------------------------------------------------------------------------

def flow_path(flow_dir: Path, video_id: str, fmt: str) -> Path:
    """Cache of one video (video_id may contain '/'): '<video_id>.npy' for 'npy', else the folder
    '<video_id>/' of its field images."""
    return Path(flow_dir) / (f"{video_id}.npy" if fmt == "npy" else video_id)


def _field_image(folder: Path, axis: str, index: int, fmt: str) -> Path:
    return folder / f"{axis}_{index + 1:05d}.{fmt}"  # 1-based, as denseflow names them


def _locate(flow_dir: Path, video_id: str) -> tuple[str, Path]:
    """(format, path) of a video's cache, whichever format it was written in; UserError if none."""
    npy = flow_path(flow_dir, video_id, "npy")
    if npy.is_file():
        return "npy", npy
    folder = flow_path(flow_dir, video_id, "jpg")
    for fmt in ("jpg", "png"):
        if _field_image(folder, "x", 0, fmt).is_file():
            return fmt, folder
    raise UserError(f"{folder}: no cached flow for video {video_id!r}; run `actionlab flow --flow-dir {flow_dir}` "
                    "on this dataset first")


def _read_plane(image: Path) -> np.ndarray:
    # Pillow, not OpenCV: once decord is imported, OpenCV's libpng inflates with decord's zlib and
    # fails ("bad parameters to zlib") -- tests/test_flow.py checks it in a fresh process
    from PIL import Image

    with Image.open(image) as im:
        return np.asarray(im)  # (H, W) uint8


def load_flow(flow_dir: Path, video_id: str, indices: np.ndarray) -> np.ndarray:
    """The cached fields at `indices` only, uint8 (len(indices), H, W, 2); nothing else is read."""
    fmt, path = _locate(flow_dir, video_id)
    indices = np.asarray(indices, np.int64)
    if fmt == "npy":
        return np.asarray(np.load(path, mmap_mode="r")[indices])
    fields = []
    for i in indices.tolist():
        try:
            fields.append(np.stack([_read_plane(_field_image(path, axis, i, fmt)) for axis in "xy"], axis=-1))
        except OSError as err:  # missing or unreadable
            raise IndexError(f"{path}: no flow field {i} (x_/y_{i + 1:05d}.{fmt}: {err})") from None
    return np.stack(fields)  # (N, H, W, 2)


def flow_frame_count(flow_dir: Path, video_id: str) -> int:
    """Number of cached flow fields (frames - 1): the .npy header, or the x_ images."""
    fmt, path = _locate(flow_dir, video_id)
    if fmt == "npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    return sum(1 for name in os.listdir(path) if name.startswith("x_"))


def save_flow(out_path: Path, q: np.ndarray, fmt: str) -> None:
    """Write a video's quantised fields, uint8 (N, H, W, 2), as `fmt`, atomically (a temporary
    sibling renamed into place)."""
    if fmt == "npy":
        write_atomic(Path(out_path), lambda f: np.save(f, q))
        return
    from PIL import Image

    options = {"quality": JPEG_QUALITY} if fmt == "jpg" else {"compress_level": 1}  # PNG: fast, still lossless
    out_path = Path(out_path)
    tmp = temporary_sibling(out_path)
    tmp.mkdir(parents=True)
    try:
        for i, field in enumerate(q):
            for c, axis in enumerate("xy"):
                Image.fromarray(np.ascontiguousarray(field[..., c])).save(_field_image(tmp, axis, i, fmt), **options)
        os.replace(tmp, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(flow_dir: Path) -> FlowParams | None:
    """The parameters a flow_dir was extracted with, or None if it has no manifest yet; UserError if
    its manifest.json is not a flow cache's."""
    path = Path(flow_dir) / MANIFEST_NAME
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise UserError(f"{path}: not a regular file, so not a flow cache's manifest; pass another --flow-dir")
        return None
    try:
        return FlowParams(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError):
        raise UserError(f"{path}: not the manifest of a flow cache made by `actionlab flow`; pass another "
                        "--flow-dir (a new or empty folder)") from None


def check_or_write_manifest(flow_dir: Path, params: FlowParams) -> FlowParams:
    """Write flow_dir/manifest.json, or UserError if it records different flow.

    Returns the parameters the cache holds. A cache stored in another format but otherwise the same
    is kept as it is (the same flow; a note says how to convert it): flow is costly to recompute.
    """
    existing = read_manifest(flow_dir)
    if existing is None:
        if Path(flow_dir).is_dir() and holds_files(Path(flow_dir)):
            raise UserError(f"--flow-dir {flow_dir}: a folder that holds other files and no {MANIFEST_NAME} of a flow "
                            "cache; pass a new or empty folder (or the cache `actionlab flow` made)")
        if Path(flow_dir).exists() and not Path(flow_dir).is_dir():
            raise UserError(f"--flow-dir {flow_dir}: not a folder; pass a new or empty folder")
        text = json.dumps(params._asdict(), indent=2)
        write_atomic(Path(flow_dir) / MANIFEST_NAME, lambda f: f.write(text.encode()))
        return params
    if existing.format != params.format and existing._replace(format=params.format) == params:
        how = (f"`actionlab data convert-flow --flow-dir {flow_dir} --format {params.format}` converts it"
               if existing.format == "npy" else "another --flow-dir keeps both")
        print(f"note: {flow_dir} holds this flow as {existing.format}, not {params.format}: reading and extending it "
              f"as {existing.format} ({how})")
        return existing
    mismatches = [f"{name} is {old!r} there but {new!r} now"
                  for name, old, new in zip(FlowParams._fields, existing, params) if old != new]
    if mismatches:
        raise UserError(f"{Path(flow_dir) / MANIFEST_NAME}: this flow cache was made with other parameters "
                        f"({'; '.join(mismatches)}); pass a different --flow-dir, or delete {flow_dir} to recompute")
    return existing


# --- extraction -----------------------------------------------------------------------------

class MissingFrames(RuntimeError):
    """Fewer (or more) frames of a video decode than its container lists."""


def decode_video(path: Path, *, short_side: int | None = None, timeout_s: float = DECODE_TIMEOUT_S) -> np.ndarray:
    """Every frame of a video, uint8 RGB (T, H, W, 3), optionally resized so min(H, W) == short_side.

    Decoded in this process's decode child, killed after `timeout_s` seconds (DecodeTimeout); raises
    MissingFrames unless every frame the container lists decodes, so that no flow field is ever
    computed from a frame the decoder made up.
    """
    import cv2

    video = DecodeGuard(timeout_s).open(path)
    frames = video.read_every_frame()  # (T', H, W, 3): only the frames that decoded
    if len(frames) != len(video):
        raise MissingFrames(f"the container lists {len(video)} frames but {len(frames)} decode; no flow is written "
                            "from frames that do not (re-encode the video, e.g. with ffmpeg)")
    if short_side is None:
        return frames
    _, height, width, _ = frames.shape
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 wants (W, H)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def extract_video_flow(path: Path, out_path: Path, *, params: FlowParams, raft_weights=None,
                       device: str = "cpu", raft_batch: int = RAFT_PAIRS_PER_BATCH,
                       decode_timeout_s: float = DECODE_TIMEOUT_S) -> int:
    """Decode one video (see `decode_video`), compute and quantise its flow, write `out_path` atomically.

    Returns:
        the number of flow fields written (frames - 1).
    """
    frames = decode_video(path, short_side=params.short_side, timeout_s=decode_timeout_s)
    flow = compute_flow(frames, method=params.method, raft_weights=raft_weights, device=device, warp=params.warp,
                        raft_batch=raft_batch)
    q = quantize_flow(flow, bound=params.bound)  # uint8 (T-1, H, W, 2)
    save_flow(out_path, q, params.format)
    return len(q)


class _VideoResult(NamedTuple):
    path: Path
    frames: int
    error: str | None  # None on success


def _extract_or_report(path: Path, out_path: Path, kwargs: dict) -> _VideoResult:
    """extract_video_flow, with any failure turned into a reason string (one bad video must not stop a run)."""
    try:
        return _VideoResult(path, extract_video_flow(path, out_path, **kwargs), None)
    except Exception as err:  # noqa: BLE001 - reported per video, the run goes on
        return _VideoResult(path, 0, f"{type(err).__name__}: {err}")


def _extract_in_ray_task(path: Path, out_path: Path, kwargs: dict) -> _VideoResult:
    import cv2

    cv2.setNumThreads(1)  # the task holds one CPU; OpenCV's own thread pool would oversubscribe it
    return _extract_or_report(path, out_path, kwargs)


def _cache_jobs(records, flow_dir: Path, fmt: str) -> list[tuple[Path, Path]]:
    """(video, cache path) per record; UserError, before anything is written, when a cache path
    resolves outside flow_dir (a symlink in the cache), or two videos' caches would be one path or,
    as folders of images, one inside the other."""
    jobs, video_of = [], {}
    for record in records:
        out = flow_path(flow_dir, record.video_id, fmt)
        require_inside(out, flow_dir, "--flow-dir")
        if video_of.setdefault(out, Path(record.path)) != Path(record.path):
            raise UserError(f"{record.path} and {video_of[out]} would share the flow cache {out} (the same video "
                            "id); rename one of them in the list and on disk")
        jobs.append((Path(record.path), out))
    if fmt != "npy":
        for _, out in jobs:
            outer = next((parent for parent in out.parents if parent in video_of), None)
            if outer is not None:
                raise UserError(f"the flow cache of {video_of[out]} ({out}) would lie inside that of {video_of[outer]} "
                                f"({outer}); rename one of the videos, or use --format npy")
    return jobs


def extract_flow(records, *, flow_dir: Path, method: str = "farneback", bound: float = 20.0,
                 short_side: int | None = None, warp: bool = False, fmt: str = "jpg", raft_weights=None,
                 device: str = "cpu", use_ray: bool = True, address: str | None = None,
                 gpus_per_task: float = 1.0, raft_batch: int = RAFT_PAIRS_PER_BATCH,
                 progress: bool = True, sources: dict[str, Path | None] | None = None,
                 decode_timeout_s: float = DECODE_TIMEOUT_S) -> FlowSummary:
    """Compute and cache the flow of every record whose cache file does not exist yet.

    Args:
        records: VideoRecord(path, label, video_id) items; needs `.path` and `.video_id`.
        flow_dir: cache root; gets each video's cache (see `flow_path`) and manifest.json.
        method, warp, raft_weights, device: as in `compute_flow`.
        bound: quantisation bound in pixels (see `quantize_flow`).
        short_side: resize frames so min(H, W) == short_side before computing flow; None keeps them.
        fmt: cache format, one of FLOW_FORMATS.
        use_ray: one Ray task per video (connects to `address` unless Ray is already initialised);
            False runs the same per-video function in a loop.
        gpus_per_task: with a CUDA device, the GPU share each task holds: 0.25 runs 4 videos per GPU
            at once, so one video's decoding on the CPU overlaps another's RAFT on the GPU.
        raft_batch: frame pairs per RAFT forward pass.
        progress: show a tqdm bar.
        sources: option name -> what the videos come from, e.g. {'--root': ..., '--annotations': ...}:
            flow_dir must be none of them, nor inside or around them.
        decode_timeout_s: a video whose decoding takes longer fails (its decode process is killed).

    Returns:
        FlowSummary; failed videos are listed there with their reason, the others are still done.
    """
    from tqdm import tqdm

    check_flow_args(method, raft_weights)
    if not bound > 0:
        raise UserError(f"--bound must be a positive number of pixels, got {bound!r}")
    if short_side is not None and short_side < 8:
        raise UserError(f"--short-side must be at least 8 pixels, got {short_side!r}")
    if fmt not in FLOW_FORMATS:
        raise UserError(f"flow format {fmt!r} is not one of {', '.join(FLOW_FORMATS)}")
    if not decode_timeout_s > 0:
        raise UserError(f"--decode-timeout-s must be a positive number of seconds, got {decode_timeout_s!r}")
    flow_dir = Path(flow_dir)
    check_output(flow_dir, "--flow-dir", sources or {})
    params = check_or_write_manifest(flow_dir, FlowParams(method, float(bound), short_side, bool(warp), fmt))

    start = time.perf_counter()
    jobs = _cache_jobs(records, flow_dir, params.format)
    remove_stale_temporaries([flow_dir, *(out.parent for _, out in jobs)])  # a killed run's half-written caches
    todo = [(path, out) for path, out in jobs if not out.exists()]
    kwargs = dict(params=params, raft_weights=None if raft_weights is None else str(raft_weights), device=device,
                  raft_batch=raft_batch, decode_timeout_s=float(decode_timeout_s))
    with tqdm(total=len(todo), unit="video", desc=f"flow ({method})", disable=not progress) as bar:
        results = run_per_video(_extract_or_report, todo, shared=(kwargs,), task_fn=_extract_in_ray_task,
                                failed=lambda job, reason: _VideoResult(job[0], 0, reason), use_ray=use_ray,
                                address=address, num_gpus=gpus_per_task if device.startswith("cuda") else 0, bar=bar)
    close_decode_process()  # the loop's (use_ray=False); a Ray worker's dies with the worker
    failed = [(r.path, r.error) for r in results if r.error is not None]
    return FlowSummary(computed=len(results) - len(failed), cached=len(jobs) - len(todo), failed=failed,
                       frames=sum(r.frames for r in results), seconds=time.perf_counter() - start)


def _converted(array: Path, folder: Path, fmt: str) -> bool:
    """Whether `folder` holds every field image of the .npy `array` (converted, then interrupted
    before the .npy was removed), rather than some other video's cache (video 'a/b' of 'a.npy')."""
    count = int(np.load(array, mmap_mode="r").shape[0])
    return all(_field_image(folder, axis, i, fmt).is_file() for axis in "xy" for i in (0, count - 1)) and \
        not _field_image(folder, "x", count, fmt).exists()


def convert_flow_cache(flow_dir: Path, fmt: str, *, progress: bool = True) -> int:
    """Rewrite a .npy flow cache as per-field images (`fmt` 'jpg' or 'png'), video by video, each
    rename atomic; a rerun after an interruption converts what is left. Returns videos converted.

    Every .npy is checked first, and the command refused before anything changes, when one resolves
    outside flow_dir (a symlink) or its image folder already holds something else (video 'a/b''s
    cache where 'a.npy' goes): a .npy is only ever deleted once its images are written."""
    from tqdm import tqdm

    flow_dir = Path(flow_dir)
    params = read_manifest(flow_dir)
    if params is None:
        raise UserError(f"{flow_dir}: no {MANIFEST_NAME}; not a flow cache made by `actionlab flow`")
    if fmt not in ("jpg", "png"):
        raise UserError(f"--format {fmt!r}: convert a .npy cache to jpg or png")
    if params.format not in ("npy", fmt):
        raise UserError(f"{flow_dir}: stored as {params.format}; only .npy caches are converted")
    arrays = sorted(Path(parent, name) for parent, _, names in os.walk(flow_dir) for name in names
                    if name.endswith(".npy"))
    remove_stale_temporaries([flow_dir, *(path.parent for path in arrays)])
    done = set()
    for path in arrays:
        if path.is_symlink() or not is_inside(path, flow_dir) or not path.is_file():
            raise UserError(f"{path}: not a regular file inside {flow_dir} (a symlink or special file); nothing was "
                            "converted; remove it and run again")
        folder = path.with_suffix("")
        if folder.exists() or folder.is_symlink():
            if not (folder.is_dir() and not folder.is_symlink() and _converted(path, folder, fmt)):
                raise UserError(f"{path}: its images would go in {folder}, which holds something else (another "
                                "video's cache: a video id that is the folder of another); nothing was converted; "
                                "rename one of the two videos, or keep this cache as npy")
            done.add(path)
    for path in tqdm(arrays, unit="video", desc=f"npy -> {fmt}", disable=not progress):
        if path not in done:  # else converted before an interruption, not yet removed
            save_flow(path.with_suffix(""), np.load(path), fmt)
        path.unlink()
    text = json.dumps(params._replace(format=fmt)._asdict(), indent=2)
    write_atomic(flow_dir / MANIFEST_NAME, lambda f: f.write(text.encode()))
    return len(arrays)
