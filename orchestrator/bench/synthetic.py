"""Synthetic inputs the benchmarks share: frames that compress like footage, and training clips in the
two forms the loop meets them (a Dataset's items, a collated batch) without decoding a video."""
from __future__ import annotations

import numpy as np
import torch

from orchestrator.inputs import InputSpec


def bench_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: smooth moving gradients plus noise, which compress like real footage, not like
    flat colour."""
    rng = np.random.default_rng(0)
    t = np.arange(num_frames)[:, None, None]
    base = (np.arange(width)[None, None, :] + 3 * t + np.arange(height)[None, :, None]) % 256
    frames = np.repeat(base[..., None], 3, axis=3).astype(np.int16)
    frames += rng.integers(-12, 12, size=frames.shape, dtype=np.int16)
    return np.clip(frames, 0, 255).astype(np.uint8)


class SyntheticClips:
    """VideoDataset's items without a video: {'inputs': {stream: uint8 (V=1, C, T, H, W)}, 'label', 'index'},
    the same for the same index (seeded by it)."""

    def __init__(self, spec: InputSpec, num_classes: int, videos: int):
        self.spec, self.num_classes, self.videos = spec, num_classes, videos

    def __len__(self) -> int:
        return self.videos

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"inputs": {stream: torch.randint(0, 256, (1, *shape), dtype=torch.uint8, generator=g)
                           for stream, shape in self.spec.shapes.items()},
                "label": i % self.num_classes, "index": i}


def synthetic_batch(spec: InputSpec, num_classes: int, batch: int, *, device: torch.device,
                    pin: bool = False) -> dict:
    """A batch as `collate_skip_bad` builds it: {'inputs': {stream: uint8 (B, V=1, C, T, H, W)}, 'label':
    int64 (B,), 'index': int64 (B,), 'num_skipped': 0}, made on `device` (on a GPU: as if the copy were
    done), or pinned on the host as DataLoader(pin_memory=True) hands it over."""
    inputs = {stream: torch.randint(0, 256, (batch, 1, *shape), dtype=torch.uint8, device=device)
              for stream, shape in spec.shapes.items()}
    labels = torch.randint(0, num_classes, (batch,), device=device)
    if pin:
        inputs, labels = {k: v.pin_memory() for k, v in inputs.items()}, labels.pin_memory()
    return {"inputs": inputs, "label": labels, "index": torch.arange(batch), "num_skipped": 0}
