"""A torch Dataset of video clips (decoded by `data.decoder`'s back-end), the collate function that skips
bad ones, and `build_dataset`: a run's Dataset, its sampler laid out by the run's input spec (orchestrator/inputs.py).

Data flow of one item (V views, T frames each, as the sampler decides):

    record -> sampler(num_frames, rng) -> indices int64 (V, T)
           -> per modality uint8 (V, T, H, W, C)    C = 3 for 'rgb', 2 for 'flow' (x, y)
           -> transform(inputs, rng)              -> uint8 (V', C, T, H', W')
              (transform=None only permutes to     uint8 (V, C, T, H, W))

    item  = {'inputs': {modality: uint8 (V, C, T, H, W)}, 'label': int, 'index': int}
    batch = {'inputs': {modality: uint8 (B, V, C, T, H, W)}, 'label': int64 (B,),
             'index': int64 (B,), 'num_skipped': int}

RGB frames are read with the `decoder` back-end (orchestrator/data/decoders.py; decord by default):
exactly the sampled frames, except in AVI files, where seeking is wrong (no timestamps) and frames are
decoded in order up to the last one sampled. A record whose path is a folder holds one JPEG per frame
(`actionlab data prepare --format frames`): only the sampled frames' images are opened.

With `defer` (`data.decode_device: cuda`) an item carries, per modality, a `PendingClip` (the sampled
frames' JPEG bytes, a video's frames for torchcodec to decode, or decoded frames of a video file or the
flow cache) and the transform's drawn
`ClipParams` instead of pixels; `device_decode.DeviceDecoding` decodes and transforms the batch on the
GPU (orchestrator/data/device_decode.py).

With `decode_timeout_s`, the back-end runs in a child process that is killed when one video takes longer
(decord can loop forever on a file that lists more frames than decode; see
orchestrator/data/decode_guard.py): that video is skipped like a bad one and the next starts a
fresh child. The sampler and the transform still run here, so items are the same with or without.

Flow field i is the motion from frame i to frame i + 1, so a video of N frames has N - 1 fields.
With 'flow' among the modalities the sampler is given the field count and RGB is read at the same
indices: both streams then show the same instants.

With `fps` (`data.fps`, I3D's 25) the sampler works on the video as if resampled to `fps` frames a
second and its indices are mapped back to the file's frames (`sampling.resampled_num_frames`,
`sampling.native_frame_indices`); the file's rate is the one its header states (decord's
`get_avg_fps`), so a flow-only item opens the video too. Flow fields stay those of consecutive frames
of the file: at 30 fps read as 25, a field is 1/30 s of motion, where I3D computed flow on the
resampled frames (1/25 s). A frame folder records no rate: with `fps` its items are bad videos.

Randomness comes only from `np.random.default_rng([seed, epoch, index])`, made per item: the same
(seed, epoch, index) gives the same clip in any process, DataLoader worker or Ray worker.

A bad video (missing, undecodable, too short for the sampler) is logged as a warning on the
'actionlab.data' logger and its item is None; `collate_skip_bad` drops it and counts it. No other
video is substituted and `len()` does not change, so an epoch is the same list of videos for
every run.
"""
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from einops import rearrange

from orchestrator.data.annotations import VideoRecord
from orchestrator.data.decode_guard import DecodeGuard
from orchestrator.data.decoders import open_video, unique_frames
from orchestrator.data.device_decode import PendingClip, VideoFrames
from orchestrator.data.sampling import native_frame_indices, resampled_num_frames
from orchestrator.errors import UserError

if TYPE_CHECKING:  # read as plain attributes: the training loop imports no pydantic
    from orchestrator.config import ExperimentConfig

MODALITIES = ("rgb", "flow")

logger = logging.getLogger("actionlab.data")


# decord's seeks land on wrong frames in AVI files, which have no timestamps to seek by: always
# with H.264 B-frames (the synthetic benchmark), now and then in HMDB-51 (dmlc/decord#195).
# Decoding from the first frame in order is exact, so AVIs are read that way.
SEQUENTIAL_SUFFIXES = (".avi",)


def _read_frame_folder(folder: Path, indices: np.ndarray) -> np.ndarray:
    """Frames at `indices` (V, T) of a JPEG frame folder, uint8 (V, T, H, W, 3); each image read once."""
    from orchestrator.data.video_io import read_frame_folder

    unique, inverse = unique_frames(indices)
    return read_frame_folder(folder, unique)[inverse]


def _read_flow(flow_dir: Path, video_id: str, indices: np.ndarray) -> np.ndarray:
    """Flow fields at `indices` (V, T), uint8 (V, T, H, W, 2)."""
    from orchestrator.data.flow import load_flow

    unique, inverse = unique_frames(indices)
    return load_flow(flow_dir, video_id, unique)[inverse]  # (U, H, W, 2) -> (V, T, H, W, 2)


@functools.cache
def _bad_video_errors() -> tuple[type[Exception], ...]:
    """What reading a bad video raises. decord's own error only where decord is installed: frame
    folders are read without it (e.g. by `actionlab bench gpu` on a machine that lacks it)."""
    # UserError: load_flow's "no cached flow for this video" (its extraction failed); one video's
    # problem, not the run's. decode_guard's DecodeTimeout is an OSError, DecodeCrash a RuntimeError.
    errors = (RuntimeError, ValueError, OSError, IndexError, UserError)
    try:
        import decord
    except ImportError:
        return errors
    return (decord.DECORDError, *errors)


class VideoDataset(torch.utils.data.Dataset):
    """Clips of `records`' videos, one item per record (see the module docstring for shapes).

    Args:
        records: the videos, e.g. `read_split(...).records`.
        sampler: `sampler(num_frames, rng) -> int64 (V, T)` frame indices; raises ValueError when
            the video is too short (see orchestrator/data/sampling.py).
        transform: `transform(inputs, rng)` mapping {modality: uint8 (V, T, H, W, C)} to
            {modality: uint8 (V', C, T, H', W')}; None only permutes to (V, C, T, H, W).
        modalities: any of 'rgb', 'flow'.
        flow_dir: folder of the precomputed flow (`actionlab flow`); needed for 'flow'.
        seed: with the epoch and the index, seeds each item's random generator.
        decode_timeout_s: decode each video in a child process and skip it after this many seconds
            (`data.decode_timeout_s`); None decodes in this process, without a limit.
        fps: sample each video as if resampled to this many frames a second (`data.fps`); None
            samples the file's own frames.
        decoder: the video back-end (`data.decoder`): decord, torchcodec or pyav.
        defer: leave JPEG decoding and the transform to the training device (`data.decode_device:
            cuda`): items hold PendingClips and the drawn ClipParams (needs a ClipTransform).
    """

    def __init__(self, records: Sequence[VideoRecord], *, sampler: Callable[[int, np.random.Generator], np.ndarray],
                 transform: Callable | None = None, modalities: tuple[str, ...] = ("rgb",),
                 flow_dir: Path | None = None, seed: int = 0, decode_timeout_s: float | None = None,
                 fps: float | None = None, decoder: str = "decord", defer: bool = False):
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
        if "flow" in modalities and flow_dir is None:
            raise ValueError("the 'flow' modality needs flow_dir (the folder written by `actionlab flow`)")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {fps!r}")
        if defer and not hasattr(transform, "draw"):
            raise ValueError("defer needs a ClipTransform (its parameters are drawn here, applied on the device)")
        self.records = list(records)
        self.sampler = sampler
        self.transform = transform
        self.modalities = tuple(modalities)
        self.flow_dir = None if flow_dir is None else Path(flow_dir)
        self.seed = seed
        self.epoch = 0
        self.decoder, self.defer = decoder, defer
        self.decode_guard = DecodeGuard(decode_timeout_s, decoder) if decode_timeout_s else None
        self.fps = fps

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose clips plain-integer keys draw. Call before creating the DataLoader
        iterator: workers copy the dataset when the iterator starts. Persistent workers never see
        it; they get (epoch, index) keys from `training.elastic.EpochBatches` instead."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, record: VideoRecord, rng: np.random.Generator) -> dict[str, np.ndarray | PendingClip]:
        """{modality: uint8 (V, T, H, W, C)} of one sampled clip, or with `defer` {modality: PendingClip};
        raises on a bad video."""
        reader, rgb_frames = None, None
        if "rgb" in self.modalities or self.fps:  # with fps: the file's frame rate, from its header
            if record.path.is_dir():  # a JPEG frame folder (`actionlab data prepare --format frames`)
                from orchestrator.data.video_io import frame_folder_length

                rgb_frames = frame_folder_length(record.path)
            elif not record.path.is_file():
                raise FileNotFoundError("missing file")
            else:
                reader = (self.decode_guard.open(record.path) if self.decode_guard
                          else open_video(record.path, self.decoder))
                rgb_frames = len(reader)
            num_frames = rgb_frames
        if "flow" in self.modalities:
            from orchestrator.data.flow import flow_frame_count

            num_frames = flow_frame_count(self.flow_dir, record.video_id)
            if rgb_frames is not None and num_frames >= rgb_frames:  # field i needs frames i and i + 1
                raise ValueError(f"{num_frames} flow fields but only {rgb_frames} frames (stale flow cache?)")
        indices = np.asarray(self._sample(num_frames, reader, rng), dtype=np.int64)  # (V, T)
        sequential = record.path.suffix.lower() in SEQUENTIAL_SUFFIXES
        if self.defer:
            return self._pending(record, reader, indices, sequential=sequential)
        inputs = {}
        if "rgb" in self.modalities and reader is None:
            inputs["rgb"] = _read_frame_folder(record.path, indices)
        elif "rgb" in self.modalities:
            inputs["rgb"] = reader.read(indices, sequential=sequential)  # (V, T, H, W, 3)
        if "flow" in self.modalities:
            inputs["flow"] = _read_flow(self.flow_dir, record.video_id, indices)
        return inputs

    def _pending(self, record: VideoRecord, reader, indices: np.ndarray, *,
                 sequential: bool) -> dict[str, PendingClip]:
        """The distinct sampled frames of each modality, as JPEG bytes (a frame folder's RGB), the frames for
        torchcodec to decode on the device (a video file's RGB, `decoder` torchcodec, not .avi) or decoded
        uint8 (U, H, W, C) (another video file's RGB, flow), and where the (V, T) slots find them."""
        from orchestrator.data.flow import load_flow
        from orchestrator.data.video_io import read_frame_bytes

        unique, inverse = unique_frames(indices)  # (U,), (V, T)
        inverse = torch.from_numpy(inverse)
        inputs = {}
        if "rgb" in self.modalities and reader is None:
            files, size = read_frame_bytes(record.path, unique)
            inputs["rgb"] = PendingClip([torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in files],
                                        inverse, size)
        elif "rgb" in self.modalities and self.decoder == "torchcodec" and not sequential:  # on the device
            inputs["rgb"] = PendingClip(VideoFrames(str(record.path), unique.tolist()), inverse, reader.size)
        elif "rgb" in self.modalities:
            inputs["rgb"] = PendingClip.of(reader.read(unique[None], sequential=sequential)[0], inverse)
        if "flow" in self.modalities:
            inputs["flow"] = PendingClip.of(load_flow(self.flow_dir, record.video_id, unique), inverse)
        return inputs

    def _sample(self, num_frames: int, reader, rng: np.random.Generator) -> np.ndarray:
        """The sampler's (V, T) indices into the file's `num_frames` frames (or flow fields): drawn on the
        `self.fps` resampling of the video when there is one, then mapped back to the file's frames."""
        if not self.fps:
            return self.sampler(num_frames, rng)
        if reader is None:
            raise ValueError("a frame folder records no frame rate; data.fps needs the video files "
                             "(or data.fps: null)")
        if not reader.fps > 0:  # also nan
            raise ValueError(f"the video states no frame rate (decord's average fps: {reader.fps}); data.fps "
                             "cannot resample it")
        resampled = resampled_num_frames(num_frames, native_fps=reader.fps, fps=self.fps)
        return native_frame_indices(self.sampler(resampled, rng), num_frames=num_frames, native_fps=reader.fps,
                                    fps=self.fps)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        """The clip of video `key`, or of `key = (epoch, index)`; None for a bad video (logged)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        record = self.records[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        try:
            arrays = self._read(record, rng)
            if self.defer:  # the parameters from the frame sizes, drawn as the CPU path draws them
                return {"inputs": arrays, "params": self.transform.draw([clip.size for clip in arrays.values()], rng),
                        "label": record.label, "index": index}
        except _bad_video_errors() as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            logger.warning("skipping %s: %s", record.path, reason)
            return None
        inputs = {m: torch.from_numpy(np.ascontiguousarray(a)) for m, a in arrays.items()}
        if self.transform is None:
            inputs = {m: rearrange(x, "v t h w c -> v c t h w") for m, x in inputs.items()}
        else:
            inputs = self.transform(inputs, rng)
        return {"inputs": inputs, "label": record.label, "index": index}


def collate_skip_bad(batch: list[dict | None]) -> dict:
    """Stack the good items of `batch`; None items (bad videos) are dropped and counted.

    Returns:
        {'inputs': {modality: (B, V, C, T, H, W)}, 'label': int64 (B,), 'index': int64 (B,),
        'num_skipped': int}. If every item was bad, B = 0 and 'inputs' is empty. Deferred items
        (`defer`) keep 'inputs' as {modality: [PendingClip] * B} and add 'params': [ClipParams] * B.
    """
    good = [item for item in batch if item is not None]
    modalities = good[0]["inputs"].keys() if good else ()
    deferred = bool(good) and "params" in good[0]
    collate = list if deferred else torch.stack
    return {
        "inputs": {m: collate([item["inputs"][m] for item in good]) for m in modalities},
        **({"params": [item["params"] for item in good]} if deferred else {}),
        "label": torch.tensor([item["label"] for item in good], dtype=torch.int64),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.int64),
        "num_skipped": len(batch) - len(good),
    }


def data_modalities(model_modality: str) -> tuple[str, ...]:
    """What the Dataset decodes for a model modality (RGB-difference is computed from RGB frames)."""
    return {"rgb": ("rgb",), "rgbdiff": ("rgb",), "flow": ("flow",), "rgb+flow": ("rgb", "flow")}[model_modality]


def build_dataset(cfg: "ExperimentConfig", records: Sequence[VideoRecord], *, train: bool) -> VideoDataset:
    """A run's Dataset of `records`, training or test views.

    The sampler reads the run's time layout, K segments x L frames (one group of `clip_len` for a
    dense clip), from `orchestrator.inputs.input_spec`: the derivation the model's input shapes and
    time keywords come from, so the clips read are the clips the model was built for. The rest of
    the data section picks the views, crop, flip, flow cache, frame rate and decoding limit.
    """
    from orchestrator.data.sampling import make_sampler
    from orchestrator.data.transforms import ClipTransform
    from orchestrator.inputs import input_spec

    d, layout = cfg.data, input_spec(cfg).layout
    if d.sampler == "tsn":
        groups = dict(num_segments=layout.segments, frames_per_segment=layout.frames_per_segment)
    else:  # dense: one group, the whole clip
        groups = dict(clip_len=layout.frames_per_segment, stride=d.stride, loop_short=d.loop_short)
    sampler = make_sampler(kind=d.sampler, train=train, num_clips=1 if train else d.test_clips, **groups)
    transform = ClipTransform(train=train, short_side=d.short_side, crop_size=d.crop_size,
                              crop=d.train_crop if train else d.test_crop, flip=train and d.flip)
    modalities = data_modalities(cfg.model.modality)
    flow_dir = d.resolved_flow_dir() if "flow" in modalities else None
    return VideoDataset(records, sampler=sampler, transform=transform, modalities=modalities,
                        flow_dir=flow_dir, seed=cfg.seed, decode_timeout_s=d.decode_timeout_s or None, fps=d.fps,
                        decoder=d.decoder, defer=d.decode_device == "cuda")
