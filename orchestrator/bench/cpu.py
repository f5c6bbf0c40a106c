"""Throughput benchmarks, measured side by side in one run (never asserted in tests).

decode: clips/s of the Dataset path with each back-end side by side (`data.decoder`: decord,
        torchcodec where it can run here, pyav; orchestrator/data/decoders.py), on .mp4 and .avi,
        vs raw `decord.VideoReader.get_batch` on the same indices vs a naive PyAV seek-and-decode of
        the same indices; torchcodec / decord per container.
train:  per-step time of one Ray Train worker vs a plain PyTorch loop: the same `loop.train_one_epoch`
        (its own `train_step`) on the same model, built by `loop.build_trainable` as a run builds it,
        over the same synthetic batches, after a warm-up epoch.
flow:   the flow cache formats (npy, jpg q95, png) on the same fields: bytes per field and TSN
        clips read per second.
input:  the input pipeline on Kinetics-sized footage, one table of clips/s per core: raw mp4 and
        prepared h264 read by each back-end, JPEG frames decoded with Pillow or read as bytes only
        (`data.decode_device: cuda`: the loader's share when the GPU decodes), JPEG flow; by sampler
        (TSN K=3 and K=8, dense 32x2, I3D's dense 64x1); torchcodec / decord; the loader's CPU ms per
        clip with and without the pixel decode; the DataLoader's scaling with processes; Ray Data
        tasks against the DataLoader on the same cores; cores one GPU needs.
gpu:    orchestrator/bench/gpu.py (runs on a GPU machine with torch alone).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from orchestrator.bench.synthetic import bench_frames


def _timed(fn, items) -> float:
    """Items per second of fn over items."""
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def _decoders(out) -> tuple[str, ...]:
    """The back-ends that can decode here, in DECODERS' order; torchcodec's problem printed when it cannot."""
    from orchestrator.data.decoders import DECODERS, torchcodec_problem

    problem = torchcodec_problem()
    if problem is not None:
        out(f"torchcodec not measured: {problem}")
    return tuple(d for d in DECODERS if d != "torchcodec" or problem is None)


def bench_decode(*, videos: int = 6, num_frames: int = 150, height: int = 240, width: int = 320,
                 num_segments: int = 8, rounds: int = 3, out=print) -> dict:
    """UCF-101-sized H.264 videos (320x240, 150 frames), TSN test sampling (K segment centres),
    in .mp4 and in .avi (UCF-101's and HMDB-51's container): the Dataset path with each back-end
    (`data.decoder`: decord, torchcodec where it can run, pyav) beside raw decord `get_batch` and a
    naive PyAV seek-and-decode of the same indices.

    Returns {container: {'dataset': {decoder: clips/s}, 'decord', 'pyav', 'dataset/decord',
    'dataset/pyav', 'torchcodec/decord'}}: clips/s as the median over rounds; 'decord' and 'pyav' are
    the raw references, the ratios are the decord Dataset path's against them, and torchcodec's Dataset
    path against decord's ('torchcodec/decord' None where torchcodec cannot run here).
    """
    decoders = _decoders(out)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = bench_frames(num_frames, height, width)
        for container in ("mp4", "avi"):
            figures[container] = _bench_container(Path(tmp), container, frames, videos=videos, decoders=decoders,
                                                  num_segments=num_segments, rounds=rounds, out=out)
    out(f"\ndecode, {videos} videos {width}x{height} x {num_frames} frames, TSN K={num_segments} centres, "
        f"median of {rounds} rounds, clips/s:")
    out(f"  {'':<6}" + "".join(f"{'dataset ' + d:>20}" for d in decoders)
        + f"{'raw decord.get_batch':>22}{'naive PyAV seek':>17}")
    for container, f in figures.items():
        out(f"  .{container:<5}" + "".join(f"{f['dataset'][d]:>20.1f}" for d in decoders)
            + f"{f['decord']:>22.1f}{f['pyav']:>17.1f}")
    for container, f in figures.items():
        ratio = (f"torchcodec / decord {f['torchcodec/decord']:.2f}"
                 if f["torchcodec/decord"] is not None else "torchcodec / decord not measured")
        out(f"  .{container}: dataset decord / raw get_batch {f['dataset/decord']:.2f} (target >= 0.9) | "
            f"dataset decord / naive PyAV {f['dataset/pyav']:.2f} (target >= 2) | {ratio}")
    out("  (.avi carries no timestamps to seek by: every back-end decodes it in order up to the last sampled frame, "
        "decord with its own next(), torchcodec and pyav both through PyAV (orchestrator/data/decoders.py), so "
        "their .avi figures are the same decoder; decord's raw get_batch returns wrong frames from B-frame AVI, "
        "its figure there is speed only)")
    return figures


def _bench_container(tmp: Path, container: str, frames: np.ndarray, *, videos: int, decoders: tuple[str, ...],
                     num_segments: int, rounds: int, out) -> dict:
    import decord

    from orchestrator.data.annotations import VideoRecord
    from orchestrator.data.dataset import VideoDataset
    from orchestrator.data.sampling import make_sampler
    from orchestrator.data.video_io import read_frames_pyav, write_video

    sampler = make_sampler(kind="tsn", train=False, num_segments=num_segments)
    records = [VideoRecord(write_video(tmp / f"v{i}.{container}", np.roll(frames, i, axis=2)), 0, f"v{i}")
               for i in range(videos)]
    indices = [sampler(len(decord.VideoReader(str(r.path))), None).ravel().tolist() for r in records]

    def raw_decord(i):
        decord.VideoReader(str(records[i].path), num_threads=1).get_batch(indices[i]).asnumpy()

    def naive_pyav(i):
        read_frames_pyav(records[i].path, indices[i])

    methods = {f"dataset {d}": VideoDataset(records, sampler=sampler, decoder=d).__getitem__ for d in decoders}
    methods |= {"raw decord": raw_decord, "naive pyav": naive_pyav}
    for fn in methods.values():  # untimed: each back-end's first video loads its libraries
        fn(0)
    results = {name: [] for name in methods}
    items = list(range(videos))
    for r in range(rounds):  # interleaved, so drifts in machine load hit every method alike
        for name, fn in methods.items():
            results[name].append(_timed(fn, items))
        out(f".{container} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f} clips/s" for k, v in results.items()))
    median = {name: statistics.median(v) for name, v in results.items()}
    dataset = {d: median[f"dataset {d}"] for d in decoders}
    return {"dataset": dataset, "decord": median["raw decord"], "pyav": median["naive pyav"],
            "dataset/decord": dataset["decord"] / median["raw decord"],
            "dataset/pyav": dataset["decord"] / median["naive pyav"],
            "torchcodec/decord": dataset["torchcodec"] / dataset["decord"] if "torchcodec" in dataset else None}


def bench_flow(*, videos: int = 4, num_frames: int = 60, height: int = 240, width: int = 320, clips: int = 20,
               rounds: int = 3, out=print) -> dict:
    """Farneback flow of UCF-101-sized videos (320x240), cached in each of FLOW_FORMATS; then TSN
    training clips (K=3 segments of L=5 fields, random positions) read back through `load_flow`.

    Returns {format: {'bytes_per_field', 'vs_npy', 'clips_per_s'}} (clips/s: median over rounds).
    """
    from orchestrator.data.flow import FLOW_FORMATS, compute_flow, flow_path, load_flow, quantize_flow, save_flow
    from orchestrator.data.sampling import make_sampler

    frames = bench_frames(num_frames, height, width)
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


def _bench_run(architecture: str, width: float, batch_size: int):
    """The one run an experiment of this model launches, planned as `actionlab train` plans it."""
    from orchestrator.config import parse_experiment
    from orchestrator.plan import plan

    model = {"architecture": architecture, "width": width, "options": {"backbone": "resnet18"}}
    cfg = parse_experiment({"model": model, "optim": {"batch_size": batch_size, "epochs": 2, "grad_clip": 0.0}},
                           source="bench")
    (run,) = plan(cfg, kind="train").runs.values()
    return run


def _step_seconds(run, steps: int, threads: int, device) -> float:
    """Seconds per step of `loop.train_one_epoch` over synthetic clips, after one warm-up epoch; in a
    Ray Train worker (a process group is up) the model is wrapped as the driver's workers wrap it."""
    import torch
    from torch.utils.data import DataLoader

    from orchestrator.bench.synthetic import SyntheticClips
    from orchestrator.data.dataset import collate_skip_bad
    from orchestrator.training.elastic import step_batch
    from orchestrator.training.loop import build_trainable, train_one_epoch

    torch.set_num_threads(threads)
    cfg = run.config
    batch = cfg.optim.batch_size
    loader = DataLoader(SyntheticClips(run.inputs, 10, steps * batch), batch_size=batch,
                        collate_fn=collate_skip_bad)
    wrap = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        import ray.train.torch

        wrap = ray.train.torch.prepare_model
    torch.manual_seed(0)
    model, optimizer, scaler = build_trainable(cfg, num_classes=10, device=device, wrap_model=wrap)
    sb = step_batch(batch_size=batch, max_workers=1, world=1, on_resize="keep_global_batch")
    for _ in range(2):  # a warm-up epoch, then the timed one; the config's lr throughout (no schedule: same cost)
        stats = train_one_epoch(model, loader, optimizer, scaler, cfg, device, sb=sb, lr_at=lambda clip: cfg.optim.lr)
    return stats["seconds"] / steps


def _ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    seconds = _step_seconds(config["run"], config["steps"], config["threads"], ray.train.torch.get_device())
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

    run = _bench_run(architecture, width, batch_size)
    plain = _step_seconds(run, steps, threads, torch.device("cpu"))
    out(f"plain PyTorch: {plain * 1000:.1f} ms/step")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    trainer = TorchTrainer(_ray_worker, train_loop_config={"run": run, "steps": steps, "threads": threads},
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


def footage_frames(seed: int, *, width: int = 340, height: int = 256, num_frames: int = 300):
    """Frames (H, W, 3) uint8, one at a time, that compress and decode like real footage: a 1/f
    colour texture (natural images' spectrum) under a camera panning at a drifting speed, three
    textured discs on their own paths, slow lighting drift and sensor noise (std 2). Kinetics-sized
    by default (340x256, 10 s at 30 fps); at crf 16 x264 codes it at ~1 Mbit/s."""
    rng = np.random.default_rng(seed)

    def texture(h: int, w: int) -> np.ndarray:  # (h, w, 3), zero mean, unit std
        fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
        f = np.hypot(fx, fy)
        f[0, 0] = 1
        planes = [np.real(np.fft.ifft2((rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) / f))
                  for _ in range(3)]
        tex = np.stack(planes, -1) @ np.array([[1, .6, .4], [.6, 1, .5], [.4, .5, 1]])  # correlated channels
        return (tex - tex.mean()) / tex.std()

    margin_x, margin_y = 600, 400
    scene = texture(height + margin_y, width + margin_x) * 45 + 120
    disc = texture(128, 128) * 60 + 110
    velocity = np.cumsum(rng.normal(0, 0.08, size=(num_frames, 2)), axis=0) + rng.uniform(-2, 2, 2)
    camera = np.cumsum(velocity, axis=0)
    camera = (camera - camera.min(0)) / np.maximum(np.ptp(camera, axis=0), 1) * [margin_x - 1, margin_y - 1]
    ys, xs = np.mgrid[0:height, 0:width]
    discs = [(rng.uniform(20, 40), rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-4, 4),
              rng.uniform(-3, 3)) for _ in range(3)]  # radius, x, y, vx, vy
    for t in range(num_frames):
        x0, y0 = camera[t].astype(int)
        frame = scene[y0:y0 + height, x0:x0 + width].copy()
        for radius, x, y, vx, vy in discs:
            cx, cy = (x + vx * t) % width, (y + vy * t) % height
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 < radius ** 2
            frame[inside] = disc[(ys[inside] - int(cy)) % 128, (xs[inside] - int(cx)) % 128]
        frame = frame * (1 + 0.1 * np.sin(t / 40)) + rng.normal(0, 2, frame.shape)
        yield np.clip(frame, 0, 255).astype(np.uint8)


INPUT_SAMPLERS = {  # name: make_sampler keywords (training sampling)
    "tsn K=3": dict(kind="tsn", num_segments=3),
    "tsn K=8": dict(kind="tsn", num_segments=8),
    "dense 32x2": dict(kind="dense", clip_len=32, stride=2),
    "dense 64x1": dict(kind="dense", clip_len=64, stride=1),  # I3D's training clip (Carreira & Zisserman 2017)
}
FLOW_SAMPLER = ("tsn K=3 x L=5", dict(kind="tsn", num_segments=3, frames_per_segment=5))
VIDEO_SOURCES = ("raw mp4", "prepared h264")
PILLOW, BYTES_ONLY = "Pillow", "bytes only (decode_device cuda)"  # the readers of a frame folder (and of flow: Pillow)
# a video file's reader with data.decode_device cuda and data.decoder torchcodec: the loader opens it, the GPU decodes
TORCHCODEC_DEVICE = "torchcodec, open only (decode_device cuda)"
# torchcodec and pyav are timed on these columns only, on half decord's clips: on every column, with as many
# clips, they would double `actionlab bench input`'s time on 2 cores
DECODER_COLUMNS = ("tsn K=3", "dense 64x1")


def _input_sources(tmp: Path, videos: int, num_frames: int, out) -> dict:
    """Raw Kinetics-sized videos (x264's default keyframe interval), their `data prepare` copies
    (h264 and JPEG frames, default parameters) and their Farneback flow as JPEG fields.
    Returns {source: [VideoRecord]} ('raw mp4', 'prepared h264', 'prepared frames') plus 'flow_dir'."""
    from orchestrator.data.annotations import VideoRecord
    from orchestrator.data.flow import extract_flow
    from orchestrator.data.prepare import PrepareParams, prepare_video
    from orchestrator.data.video_io import write_video

    raw = [VideoRecord(write_video(tmp / "raw" / f"v{i}.mp4", footage_frames(i, num_frames=num_frames), fps=30,
                                   crf=16), 0, f"v{i}") for i in range(videos)]
    sources = {"raw mp4": raw}
    for fmt in ("h264", "frames"):
        params = PrepareParams(format=fmt)
        sources[f"prepared {fmt}"] = [
            r._replace(path=tmp / fmt / (r.video_id + (".mp4" if fmt == "h264" else ""))) for r in raw]
        for src, dst in zip(raw, sources[f"prepared {fmt}"]):
            prepare_video(src.path, dst.path, params)
    extract_flow(raw, flow_dir=tmp / "flow", fmt="jpg", use_ray=False, progress=False)
    sizes = {name: sum(f.stat().st_size for r in recs for f in ([r.path] if r.path.is_file() else r.path.iterdir()))
             for name, recs in sources.items()}
    seconds, raw_bytes = num_frames / 30, sizes["raw mp4"]
    out(f"{videos} videos 340x256, {num_frames} frames at 30 fps: raw {raw_bytes * 8 / videos / seconds / 1e6:.2f} "
        f"Mbit/s (keyframe every 250); prepared h264 {sizes['prepared h264'] / raw_bytes:.2f}x the bytes, "
        f"frames {sizes['prepared frames'] / raw_bytes:.1f}x")
    return {**sources, "flow_dir": tmp / "flow"}


def _dataset(records, sampler_kw: dict, *, modality: str = "rgb", flow_dir=None, repeat: int = 1,
             decoder: str = "decord", defer: bool = False):
    """The training dataset path (sampler, `decoder`'s or Pillow's reads under the default decode time
    limit, multi-scale crop to 224, flip); with `defer`, what `data.decode_device: cuda` leaves the
    loader (a frame folder's JPEG bytes and the drawn crop, no pixels)."""
    from orchestrator.config import DataConfig
    from orchestrator.data.dataset import VideoDataset
    from orchestrator.data.sampling import make_sampler
    from orchestrator.data.transforms import ClipTransform

    return VideoDataset(list(records) * repeat, sampler=make_sampler(train=True, **sampler_kw),
                        transform=ClipTransform(train=True, short_side=256, crop_size=224, crop="multiscale", flip=True),
                        modalities=(modality,), flow_dir=flow_dir, decode_timeout_s=DataConfig().decode_timeout_s,
                        decoder=decoder, defer=defer)


def _input_cases(sources: dict, flow_dir: Path, decoders: tuple[str, ...], repeat: int) -> dict:
    """{(source, reader, sampler): VideoDataset of `repeat` x the source's videos}: each back-end on the
    video sources (torchcodec and pyav on DECODER_COLUMNS only, repeat // 2; torchcodec also as the loader
    runs it when the GPU decodes: open and sample only), the frame folders decoded with Pillow and as bytes
    only, the flow cache. Back-end-major: the decode child serves one back-end
    at a time and restarts at each change."""
    cases = {}
    for decoder in decoders:
        for source in VIDEO_SOURCES:
            for name, kw in INPUT_SAMPLERS.items():
                if decoder == "decord" or name in DECODER_COLUMNS:
                    cases[(source, decoder, name)] = _dataset(sources[source], kw, decoder=decoder,
                                                              repeat=repeat if decoder == "decord" else -(-repeat // 2))
                if decoder == "torchcodec" and name in DECODER_COLUMNS:
                    cases[(source, TORCHCODEC_DEVICE, name)] = _dataset(sources[source], kw, decoder=decoder,
                                                                        defer=True, repeat=-(-repeat // 2))
    for reader, defer in ((PILLOW, False), (BYTES_ONLY, True)):
        for name, kw in INPUT_SAMPLERS.items():
            cases[("prepared frames", reader, name)] = _dataset(sources["prepared frames"], kw, repeat=repeat,
                                                                defer=defer)
    name, kw = FLOW_SAMPLER
    cases[("flow jpg", PILLOW, name)] = _dataset(sources["raw mp4"], kw, modality="flow", flow_dir=flow_dir,
                                                 repeat=repeat)
    return cases


def _per_core(cases: dict, rounds: int) -> tuple[dict, dict]:
    """Clips/s of each case's items read one after another in this process (one thread), and this
    process's CPU ms per clip (all of a frame folder's or the flow cache's work; not a video's decode,
    which runs in the decode child). Medians over `rounds` rounds of every case, interleaved so that
    drifts in machine load hit every case alike."""
    rates, cpu_ms = {case: [] for case in cases}, {case: [] for case in cases}
    for r in range(rounds):
        reader = None
        for case, dataset in cases.items():
            dataset.set_epoch(r)
            if case[1] != reader:  # a back-end's first video (re)starts the decode child: untimed
                reader = case[1]
                dataset[0]
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(len(dataset)):
                dataset[i]
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[case].append(len(dataset) / wall)
            cpu_ms[case].append(1000 * cpu / len(dataset))
    return ({case: statistics.median(v) for case, v in rates.items()},
            {case: statistics.median(v) for case, v in cpu_ms.items()})


def _loader_rate(loader, clips: int) -> float:
    """Clips/s of a second pass (the first starts workers, fills caches)."""
    for _ in loader:
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return clips / (time.perf_counter() - start)


def bench_input(*, videos: int = 4, num_frames: int = 300, clips: int = 24, rounds: int = 3,
                workers: int | None = None, model_rate: float = 1000.0, out=print) -> dict:
    """The input pipeline on Kinetics-sized videos, per core and across cores.

    1. clips/s on one core (this process, one thread) of the training dataset path, for TSN K=3, K=8,
       dense 32x2 and dense 64x1 (I3D) clips: from raw mp4 files and prepared h264 with each back-end
       (`data.decoder`: decord on every column; torchcodec, where it can run, and pyav on
       DECODER_COLUMNS), from JPEG frame folders decoded with Pillow and read as bytes only (what the
       loader does with `data.decode_device: cuda`: the GPU decodes), and TSN K=3 x L=5 flow clips
       from the JPEG flow cache; the CPU ms per clip of the two frame-folder readers;
    2. the DataLoader over prepared h264 (decord, TSN K=3, batch 8) with 0..`workers` processes;
    3. Ray Data tasks on the same cores against the DataLoader with that many processes (in the
       running Ray session if there is one, else a local one with `workers` CPUs);
    4. the cores one GPU training at `model_rate` clips/s needs, from the per-core rates.

    Returns {'per_core': {(source, reader, sampler): clips/s}, 'frames_cpu_ms': {(reader, sampler): ms
    per clip}, 'torchcodec/decord': {(source, sampler): ratio} (empty where torchcodec cannot run),
    'dataloader': {processes: clips/s}, 'ray_data', 'prepared/raw', 'ray_data/dataloader'}; a reader
    is a back-end for the video sources, PILLOW or BYTES_ONLY for the frame folders, PILLOW for flow.
    """
    import os

    import ray
    import torch
    from torch.utils.data import BatchSampler, DataLoader

    from orchestrator.data.dataset import collate_skip_bad
    from orchestrator.data.ray_loader import RayDataLoader

    workers = workers or os.cpu_count()
    torch.set_num_threads(1)
    decoders = _decoders(out)
    figures: dict = {"per_core": {}, "dataloader": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sources = _input_sources(Path(tmp), videos, num_frames, out)
        flow_dir = sources.pop("flow_dir")
        figures["per_core"], cpu_ms = _per_core(_input_cases(sources, flow_dir, decoders, -(-clips // videos)),
                                                rounds)
        figures["frames_cpu_ms"] = {(reader, name): ms for (source, reader, name), ms in cpu_ms.items()
                                    if source == "prepared frames"}

        prepared = _dataset(sources["prepared h264"], INPUT_SAMPLERS["tsn K=3"], repeat=-(-8 * clips // videos))
        keys = range(len(prepared))
        for n in range(workers + 1):
            loader = DataLoader(prepared, batch_size=8, sampler=keys, num_workers=n, persistent_workers=n > 0,
                                collate_fn=collate_skip_bad)
            figures["dataloader"][n] = _loader_rate(loader, len(keys))
            out(f"DataLoader, {n} worker processes: {figures['dataloader'][n]:.1f} clips/s")
        own_ray = not ray.is_initialized()
        if own_ray:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        try:
            figures["ray_data"] = _loader_rate(RayDataLoader(prepared, BatchSampler(keys, 8, drop_last=False)),
                                               len(keys))
        finally:
            if own_ray:
                ray.shutdown()
    _print_input(figures, videos=videos, workers=workers, model_rate=model_rate, rounds=rounds, out=out)
    return figures


def _print_input(figures: dict, *, videos: int, workers: int, model_rate: float, rounds: int, out) -> None:
    """The per-core table, then the ratios and scaling lines; adds 'torchcodec/decord', 'prepared/raw' and
    'ray_data/dataloader' to `figures`."""
    import torch

    per_core, cpu_ms = figures["per_core"], figures["frames_cpu_ms"]
    out(f"\ninput pipeline, training clips (multi-scale crop 224, flip), {videos} Kinetics-sized videos, "
        f"median of {rounds} rounds; clips/s on one core:")
    columns = [*INPUT_SAMPLERS, FLOW_SAMPLER[0]]
    out(f"  {'source, reader':<58}" + "".join(f"{n:>15}" for n in columns))
    sources = (*VIDEO_SOURCES, "prepared frames", "flow jpg")
    rows = sorted(dict.fromkeys((source, reader) for source, reader, _ in per_core), key=lambda r: sources.index(r[0]))
    for row in rows:  # each source's readers in the order measured
        cells = [per_core.get((*row, n)) for n in columns]
        out(f"  {', '.join(row):<58}" + "".join(f"{'':>15}" if c is None else f"{c:>15.1f}" for c in cells))
    out(f"  (torchcodec and pyav: {' and '.join(DECODER_COLUMNS)} only, half decord's clips; a video is decoded in "
        "the decode child, as under data.decode_timeout_s; torchcodec, open only: the video opened in the decode child "
        "(frame count and size), sampled and the crop drawn; frames, bytes only: the JPEG files read and the crop "
        "drawn, no pixels)")
    measured = {source for source, reader, _ in per_core if reader == "torchcodec"}
    figures["torchcodec/decord"] = {(source, n): per_core[(source, "torchcodec", n)] / per_core[(source, "decord", n)]
                                    for source in VIDEO_SOURCES if source in measured for n in DECODER_COLUMNS}
    if measured:
        for n in DECODER_COLUMNS:
            out(f"  torchcodec / decord, {n}: " + ", ".join(
                f"{source} {figures['torchcodec/decord'][(source, n)]:.2f}x" for source in VIDEO_SOURCES))
    else:
        out("  torchcodec / decord: not measured (torchcodec cannot decode here; its line above says why)")
    for n in ("tsn K=3", "dense 64x1"):
        full, light = cpu_ms[(PILLOW, n)], cpu_ms[(BYTES_ONLY, n)]
        out(f"  frames, {n}: loader CPU {full:.1f} ms/clip decoding with Pillow + crop on the CPU vs {light:.1f} "
            f"ms/clip bytes only (decode_device cuda): {full / light:.1f}x less")
    if not torch.cuda.is_available():
        out("  GPU side (nvJPEG decode + crop on the GPU) unmeasured here: no GPU")
    else:
        out("  GPU side (nvJPEG decode + crop on the GPU): `actionlab bench gpu`'s loader rows (GPU decode)")
    tsn3 = "tsn K=3"
    figures["prepared/raw"] = per_core[("prepared h264", "decord", tsn3)] / per_core[("raw mp4", "decord", tsn3)]
    out(f"  prepared h264 / raw mp4, decord, TSN K=3: {figures['prepared/raw']:.2f}x (target >= 3)")
    loader = figures["dataloader"]
    out("  DataLoader over prepared h264 (decord), TSN K=3, batch 8, clips/s by worker processes: "
        + ", ".join(f"{n}: {rate:.1f}" for n, rate in loader.items()))
    figures["ray_data/dataloader"] = figures["ray_data"] / loader[workers]
    out(f"  Ray Data tasks on {workers} CPUs: {figures['ray_data']:.1f} clips/s = {figures['ray_data/dataloader']:.2f}x "
        f"the DataLoader with {workers} processes (target >= 0.9)")
    for source, reader in (("raw mp4", "decord"), ("prepared h264", "decord"), ("prepared frames", PILLOW),
                           ("prepared frames", BYTES_ONLY)):
        out(f"  one GPU at {model_rate:,.0f} TSN K=3 clips/s needs {model_rate / per_core[(source, reader, tsn3)]:.1f} cores "
            f"reading {source}, {reader}" + (" (the loader's side: the GPU decodes)" if reader == BYTES_ONLY else ""))
