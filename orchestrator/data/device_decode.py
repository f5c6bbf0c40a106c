"""Decoding and augmentation on the training GPU (`data.decode_device: cuda`): the loader processes
read file bytes (or only a video's header) and sample, the GPU does the pixel work.

    loader process (VideoDataset, defer=True)               training process (DeviceDecoding)
    sampler(num_frames, rng) -> indices (V, T) -> U distinct frames
    frame folder: the U JPEG files' bytes ---------------->  decode_jpeg(every JPEG of the batch, device)
                                                             (one batched call: nvJPEG on CUDA)
    video file, data.decoder torchcodec: VideoFrames ----->  decoders.torchcodec_frames(path, U, device)
        (path, U indices; size from the header)              (NVDEC on CUDA)
    other video file / flow cache: decoded uint8 (U, H, W, C) -> .to(device)
    ClipTransform.draw(frame sizes, rng) -> ClipParams ---->  frames[inverse] -> ClipTransform.apply(params)
                                                             -> uint8 {modality: (B, V', C, T, h, w)}
                                                             -> loop.prepare_inputs normalises, as on CPU

The random parameters are drawn in the loader from the same per-item generator, in the same order, as
the CPU path draws them (the JPEG headers give the frame sizes), and `apply` is the CPU path's code: an
item differs from its CPU twin only by the JPEG decoder's and the resize kernel's rounding
(tests/test_device_decode.py measures it on CPU).

Video files are decoded on the device only with `data.decoder: torchcodec` and not for .avi (read in
order on the CPU, orchestrator/data/decoders.py); those decodes run in the training process, outside
`data.decode_timeout_s` (the loader's open of the file, which finds its frame count, stays under it).
Other video files are decoded on the CPU by `data.decoder` as before; only their resize, crop and flip
move.

A JPEG that the batched decode rejects is decoded again on its own; an item with one that fails, or
with a video that fails to decode, is dropped and counted in `num_skipped`, with a warning, as the CPU
path skips a bad video.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from orchestrator.data.decoders import torchcodec_frames

logger = logging.getLogger("actionlab.data")


class VideoFrames(NamedTuple):
    """Frames of a video file for torchcodec to decode on the device."""
    path: str
    indices: list[int]  # the U distinct frames, sorted


class PendingClip(NamedTuple):
    """One modality of one item, waiting to be decoded and transformed on the training device."""
    # uint8 (U, H, W, C) decoded, U JPEG files' bytes (1-D uint8), or a video's frames to decode
    frames: torch.Tensor | list[torch.Tensor] | VideoFrames
    inverse: torch.Tensor  # int64 (V, T): where each sampled slot's frame is among the U
    size: tuple[int, int]  # (H, W) of the frames

    @classmethod
    def of(cls, frames, inverse: torch.Tensor) -> PendingClip:
        """Decoded frames, uint8 (U, H, W, C) numpy or torch."""
        frames = torch.as_tensor(frames)
        return cls(frames, inverse, tuple(frames.shape[1:3]))


def _decode_jpegs(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 (3, H, W) on `device` per JPEG; None for one that does not decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not jpegs:
        return []
    try:
        return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad file fails the batch: find it
        out = []
        for data in jpegs:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def decode_batch(batch: dict, transform, device: torch.device) -> dict:
    """A deferred batch (collate_skip_bad's, with 'params') decoded and transformed on `device`.

    Args:
        batch: {'inputs': {modality: [PendingClip] * B}, 'params': [ClipParams] * B, 'label': (B,),
            'index': (B,), 'num_skipped': int}.
        transform: the Dataset's ClipTransform (crop kind and size).
    Returns:
        The batch as the CPU path delivers it: 'inputs' {modality: uint8 (B', V', C, T, h, w)} on
        `device`, 'params' removed; items with a frame that does not decode dropped from every key and counted.
    """
    inputs, params = batch["inputs"], batch["params"]
    jpegs = [data for clips in inputs.values() for clip in clips if isinstance(clip.frames, list)
             for data in clip.frames]
    decoded = iter(_decode_jpegs(jpegs, device))
    items, kept = [], []
    for i, item_params in enumerate(params):
        frames = {}
        for modality, clips in inputs.items():
            clip = clips[i]
            if isinstance(clip.frames, list):
                images = [next(decoded) for _ in clip.frames]  # consumed in order, even after a failure
                if any(image is None for image in images):
                    frames = None
                    continue
                pixels = torch.stack(images).permute(0, 2, 3, 1)  # (U, H, W, 3)
            elif isinstance(clip.frames, VideoFrames):
                try:
                    pixels = torchcodec_frames(clip.frames.path, clip.frames.indices, device)  # (U, H, W, 3)
                except (RuntimeError, ValueError, OSError):
                    frames = None
                    continue
            else:
                pixels = clip.frames.to(device, non_blocking=True)  # (U, H, W, C)
            if frames is not None:
                frames[modality] = pixels[clip.inverse.to(device)]  # (V, T, H, W, C)
        if frames is None:
            logger.warning("skipping item %d of the batch: a frame does not decode on %s", int(batch["index"][i]),
                           device)
            continue
        items.append(transform.apply(frames, item_params))
        kept.append(i)
    keep = torch.tensor(kept, dtype=torch.int64)
    return {"inputs": {m: torch.stack([item[m] for item in items]) for m in inputs} if items else {},
            "label": batch["label"][keep], "index": batch["index"][keep],
            "num_skipped": batch["num_skipped"] + len(params) - len(kept)}


class DeviceDecoding:
    """`loader`'s batches, deferred ones decoded and transformed on `device` as they are taken (the
    time counts as the training loop's data wait). Iterates as the loader does; `len()` is its."""

    def __init__(self, loader, transform, device: torch.device):
        self.loader, self.transform, self.device = loader, transform, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield decode_batch(batch, self.transform, self.device) if "params" in batch else batch
