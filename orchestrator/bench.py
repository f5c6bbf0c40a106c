"""Throughput benchmarks, measured side by side in one run (never asserted in tests).

decode: clips/s of the Dataset path (decord `get_batch` on the sampled indices, plus the
        Dataset's bookkeeping) vs raw `decord.VideoReader.get_batch` on the same indices vs a
        naive PyAV seek-and-decode of the same indices.
train:  per-step time of one Ray Train worker vs a plain PyTorch loop, same model, same
        in-memory batches, same `train_one_epoch` code, after a warm-up epoch.
flow:   the flow cache formats (npy, jpg q95, png) on the same fields: bytes per field and TSN
        clips read per second.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, items) -> float:
    """Items per second of fn over items."""
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def bench_decode(*, videos: int = 6, num_frames: int = 150, height: int = 240, width: int = 320,
                 num_segments: int = 8, rounds: int = 3, out=print) -> dict:
    """UCF-101-sized H.264 videos (320x240, 150 frames), TSN test sampling (K segment centres),
    in .mp4 and in .avi (UCF-101's and HMDB-51's container).

    Returns {container: {'dataset', 'decord', 'pyav', 'dataset/decord', 'dataset/pyav'}}, clips/s
    as the median over rounds.
    """
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = _bench_frames(num_frames, height, width)
        for container in ("mp4", "avi"):
            figures[container] = _bench_container(Path(tmp), container, frames, videos=videos,
                                                  num_segments=num_segments, rounds=rounds, out=out)
    out(f"\ndecode, {videos} videos {width}x{height} x {num_frames} frames, TSN K={num_segments} centres, "
        f"median of {rounds} rounds:")
    for container, f in figures.items():
        out(f"  .{container}: dataset path {f['dataset']:7.1f} clips/s | raw decord.get_batch {f['decord']:7.1f} "
            f"(ratio {f['dataset/decord']:.2f}, target >= 0.9) | naive PyAV seek {f['pyav']:7.1f} "
            f"(ratio {f['dataset/pyav']:.2f}, target >= 2)")
    out("  (.avi: the dataset decodes in order up to the last sampled frame, because decord's get_batch "
        "returns wrong frames from B-frame AVI; its raw get_batch figure is speed only)")
    return figures


def _bench_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Smooth moving gradients plus noise: compresses like real footage, not like flat colour."""
    rng = np.random.default_rng(0)
    t = np.arange(num_frames)[:, None, None]
    base = (np.arange(width)[None, None, :] + 3 * t + np.arange(height)[None, :, None]) % 256
    frames = np.repeat(base[..., None], 3, axis=3).astype(np.int16)
    frames += rng.integers(-12, 12, size=frames.shape, dtype=np.int16)
    return np.clip(frames, 0, 255).astype(np.uint8)


def _bench_container(tmp: Path, container: str, frames: np.ndarray, *, videos: int, num_segments: int,
                     rounds: int, out) -> dict:
    import decord

    from orchestrator.data.annotations import VideoRecord
    from orchestrator.data.dataset import VideoDataset
    from orchestrator.data.sampling import make_sampler
    from orchestrator.data.video_io import read_frames_pyav, write_video

    sampler = make_sampler(kind="tsn", train=False, num_segments=num_segments)
    records = [VideoRecord(write_video(tmp / f"v{i}.{container}", np.roll(frames, i, axis=2)), 0, f"v{i}")
               for i in range(videos)]
    dataset = VideoDataset(records, sampler=sampler)
    indices = [sampler(len(decord.VideoReader(str(r.path))), None).ravel().tolist() for r in records]

    def raw_decord(i):
        decord.VideoReader(str(records[i].path), num_threads=1).get_batch(indices[i]).asnumpy()

    def naive_pyav(i):
        read_frames_pyav(records[i].path, indices[i])

    results = {"dataset": [], "decord": [], "pyav": []}
    items = list(range(videos))
    for r in range(rounds):  # interleaved, so drifts in machine load hit every method alike
        results["dataset"].append(_timed(dataset.__getitem__, items))
        results["decord"].append(_timed(raw_decord, items))
        results["pyav"].append(_timed(naive_pyav, items))
        out(f".{container} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f} clips/s" for k, v in results.items()))
    figures = {k: statistics.median(v) for k, v in results.items()}
    figures["dataset/decord"] = figures["dataset"] / figures["decord"]
    figures["dataset/pyav"] = figures["dataset"] / figures["pyav"]
    return figures


def bench_flow(*, videos: int = 4, num_frames: int = 60, height: int = 240, width: int = 320, clips: int = 20,
               rounds: int = 3, out=print) -> dict:
    """Farneback flow of UCF-101-sized videos (320x240), cached in each of FLOW_FORMATS; then TSN
    training clips (K=3 segments of L=5 fields, random positions) read back through `load_flow`.

    Returns {format: {'bytes_per_field', 'vs_npy', 'clips_per_s'}} (clips/s: median over rounds).
    """
    from orchestrator.data.flow import FLOW_FORMATS, compute_flow, flow_path, load_flow, quantize_flow, save_flow
    from orchestrator.data.sampling import make_sampler

    frames = _bench_frames(num_frames, height, width)
    fields = [quantize_flow(compute_flow(np.roll(frames, 7 * i, axis=2))) for i in range(videos)]  # (N, H, W, 2)
    sampler = make_sampler(kind="tsn", train=True, num_segments=3, frames_per_segment=5)
    rng = np.random.default_rng(0)
    reads = [(f"v{j % videos}", sampler(len(fields[0]), rng).ravel()) for j in range(clips)]
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FLOW_FORMATS:
            root = Path(tmp) / fmt
            for i, q in enumerate(fields):
                save_flow(flow_path(root, f"v{i}", fmt), q, fmt)
            size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
            figures[fmt] = {"bytes_per_field": size / sum(len(q) for q in fields), "clips_per_s": []}
        for _ in range(rounds):  # interleaved, so drifts in machine load hit every format alike
            for fmt in FLOW_FORMATS:
                root = Path(tmp) / fmt
                figures[fmt]["clips_per_s"].append(_timed(lambda r: load_flow(root, *r), reads))
    out(f"\nflow cache, {videos} videos {width}x{height} x {num_frames - 1} Farneback fields, TSN K=3 x L=5 clips, "
        f"median of {rounds} rounds:")
    for fmt, f in figures.items():
        f["clips_per_s"] = statistics.median(f["clips_per_s"])
        f["vs_npy"] = f["bytes_per_field"] / figures["npy"]["bytes_per_field"]
        out(f"  {fmt:>4}: {f['bytes_per_field'] / 1024:8.1f} KiB/field ({f['vs_npy']:.3f} x npy) | "
            f"read {f['clips_per_s']:7.1f} clips/s")
    return figures


class _MemoryClips:
    """An in-memory dataset of fixed uint8 clips shaped like VideoDataset items (no decoding)."""

    def __init__(self, n: int, shape: tuple, num_classes: int):
        g = np.random.default_rng(0)
        self.clips = [g.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]
        self.labels = g.integers(0, num_classes, size=n)

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        import torch

        return {"inputs": {"rgb": torch.from_numpy(self.clips[i])}, "label": int(self.labels[i]), "index": i}


def _bench_config(architecture: str, width: float, batch_size: int):
    from orchestrator.config import parse_experiment

    model = {"architecture": architecture, "width": width, "options": {"backbone": "resnet18"}}
    return parse_experiment({"model": model, "optim": {"batch_size": batch_size, "epochs": 2, "grad_clip": 0.0}},
                            source="bench")


def _step_seconds(cfg, steps: int, threads: int, device) -> float:
    """Seconds per step of `train_one_epoch` over in-memory batches, after one warm-up epoch."""
    import torch
    from torch.utils.data import DataLoader

    from models import build_model
    from orchestrator.config import input_spec
    from orchestrator.data.dataset import collate_skip_bad
    from orchestrator.training.loop import build_optimizer, lr_lambda, train_one_epoch

    torch.set_num_threads(threads)
    spec = input_spec(cfg)
    shape = (1, *spec.shapes["rgb"])  # one view (V, C, T, H, W), as the Dataset yields it
    loader = DataLoader(_MemoryClips(steps * cfg.optim.batch_size, shape, 10), batch_size=cfg.optim.batch_size,
                        collate_fn=collate_skip_bad)
    torch.manual_seed(0)
    model = build_model(cfg.model.architecture, num_classes=10, **spec.builder_kwargs).to(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, len(loader)))
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    train_one_epoch(model, loader, optimizer, scheduler, scaler, cfg, device)  # warm-up
    stats = train_one_epoch(model, loader, optimizer, scheduler, scaler, cfg, device)
    return stats["seconds"] / steps


def _ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    seconds = _step_seconds(config["cfg"], config["steps"], config["threads"], ray.train.torch.get_device())
    with tempfile.TemporaryDirectory() as tmp:  # Train V2 hands metrics back with a checkpoint
        Path(tmp, "step_s.txt").write_text(repr(seconds))
        ray.train.report({"step_s": seconds}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def bench_train(*, architecture: str = "tsn", width: float = 0.25, batch_size: int = 8, steps: int = 30,
                threads: int = 1, out=print) -> dict:
    """One Ray Train worker vs plain PyTorch: per-step seconds of the same loop on the same data."""
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = _bench_config(architecture, width, batch_size)
    plain = _step_seconds(cfg, steps, threads, torch.device("cpu"))
    out(f"plain PyTorch: {plain * 1000:.1f} ms/step")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    trainer = TorchTrainer(_ray_worker, train_loop_config={"cfg": cfg, "steps": steps, "threads": threads},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
                           run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="actionlab-bench-")))
    result = trainer.fit()
    with result.checkpoint.as_directory() as ckpt:
        ray_step = float(Path(ckpt, "step_s.txt").read_text())
    figures = {"plain_step_s": plain, "ray_step_s": ray_step, "ratio": ray_step / plain,
               "ray_wall_s": time.perf_counter() - start}
    out(f"\ntrain step, {architecture} width {width}, batch {batch_size}, {steps} steps after a warm-up epoch, "
        f"{threads} thread(s) each:")
    out(f"  plain PyTorch loop     {plain * 1000:8.1f} ms/step")
    out(f"  Ray Train (1 worker)   {ray_step * 1000:8.1f} ms/step   ratio {figures['ratio']:.3f} (target <= 1.05)")
    out(f"  Ray Train start-up + run wall time {figures['ray_wall_s']:.0f} s (start-up excluded from the ratio)")
    return figures
