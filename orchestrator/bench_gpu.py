"""`actionlab bench gpu`: what one GPU does with the papers' models, the real loader and RAFT, in one table.

Rows (figures are reported, never asserted):

  train   TSN-R50 (K=3 x 224), I3D (64 x 224, each stream alone), R(2+1)D-18 (8 x 112) and C3D
          (16 x 112) at `model_summary.PAPER_SETTINGS`, shaped by their registered input contracts
          (`orchestrator.inputs`): training clips/s and achieved TFLOP/s for fp32, bf16,
          bf16 + channels_last and that + torch.compile, on synthetic clips already on the GPU.
  loader  TSN-R50 and I3D-RGB end to end: VideoDataset + sampler + ClipTransform + DataLoader (every
          core but one, persistent, pinned) + collate_skip_bad over 320x240 JPEG frame folders it
          writes on the spot (`actionlab data prepare`'s frames layout), with the bf16 +
          channels_last training step on the GPU; data wait = time blocked in next(loader) / total.
  flow    RAFT-small through `flow.compute_flow` (the extraction path) on 320x240 frames: pairs/s,
          with random weights (none can be downloaded there; speed does not depend on them).

The step is the loop's: forward under autocast, cross-entropy, backward, SGD with momentum (no
gradient clipping). Batch: doubled from 8 until a step runs out of memory or its peak says the next
doubling would not fit, at most 256 clips; channels_last and compile reuse bf16's batch, fp32
starts from it and halves on OOM. Timings synchronize the GPU around warmed-up steps (compilation
and cuDNN autotuning excluded). TFLOP/s = clips/s x 3 x forward FLOPs per clip (`count_macs`, as
`actionlab models --summary`, 2 FLOPs per multiply-add; backward ~ 2 x forward). Each row is
guarded: an error is printed in its row and the rest go on; past the time budget (default 420 s)
rows read "skipped (time budget)". Without CUDA (or with --smoke) it runs a smoke version: width
1/8, 32-pixel crops, 8-frame clips, a few steps, no compile; the tests run that.

It imports torch, torchvision, numpy, einops, Pillow and the project's models and data layer:
no Ray, MLflow, pydantic, tqdm, PyAV or decord (tests/test_bench_gpu.py runs the smoke version with
those made unimportable; the loader rows read JPEG frame folders, which need no video decoder).
The project's GPU machine has torch, torchvision, Pillow and einops, so nothing needs to travel.
Wheel sizes for CPython 3.12 x86_64, should a machine lack one (`pip download --no-deps
--only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ...`): torchvision
0.26.0 7.5 MB, pillow 13.0.0 7.1 MB, einops 0.8.2 0.07 MB.

On the GPU machine, from the repository root (stderr gets a progress line per row, stdout the table):

    PYTHONUNBUFFERED=1 python3 -m orchestrator.bench_gpu 2>&1 | tee bench_gpu.txt
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from models import build_model
from orchestrator.errors import UserError
from orchestrator.inputs import InputSpec, example_input, model_input_spec, sampler_layout
from orchestrator.model_summary import PAPER_SETTINGS, count_macs
from orchestrator.training.precision import autocast_dtype, to_channels_last

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), TFLOP/s; --peak-tflops overrides.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
MEMORY_SHARE = 0.9  # of the GPU's memory a probed batch may use at its peak
DROPOUT = 0.5  # any rate costs the same


class Case(NamedTuple):
    """One model fed one stream, at its paper's setting."""
    label: str
    architecture: str  # a registered name, with an entry in PAPER_SETTINGS
    modality: str  # the stream benchmarked


CASES = (
    Case("TSN-R50", "tsn", "rgb"),
    Case("I3D rgb", "i3d", "rgb"),
    Case("I3D flow", "i3d", "flow"),
    Case("R(2+1)D-18", "r2plus1d", "rgb"),
    Case("C3D", "c3d", "rgb"),
)
LOADER_CASES = (CASES[0], CASES[1])


class Mode(NamedTuple):
    name: str
    precision: str  # as optim.precision: fp32 | bf16
    channels_last: bool
    compile: bool


MODES = (
    Mode("fp32", "fp32", False, False),
    Mode("bf16", "bf16", False, False),
    Mode("bf16+cl", "bf16", True, False),
    Mode("bf16+cl+compile", "bf16", True, True),
)
LOADER_MODE = MODES[2]


class Scale(NamedTuple):
    """How big a run is: the papers' sizes on a GPU, or the smoke version anywhere."""
    smoke: bool
    width: float  # channel multiplier; 1.0 = the published networks
    crop_size: int | None  # None: each paper's crop
    max_clip_len: int | None  # dense clips are cut to this many frames; None: each paper's
    batch: int | None  # None: probe the memory (CUDA); else this batch (CPU)
    batch_start: int  # the probe's first batch, doubled from there
    batch_limit: int
    loader_batch_limit: int  # loader rows: bf16's batch, at most this (a worker builds whole batches)
    warmup_steps: int
    measure_s: float  # timed seconds per train row
    loader_measure_s: float
    loader_workers: int | None  # None: every core but one
    videos: int  # prepared videos the loader rows read
    video_frames: int
    video_size: tuple[int, int]  # (height, width)
    raft_pairs: int  # frame pairs per timed compute_flow call
    raft_size: tuple[int, int]  # (height, width)
    budget_s: float  # a row that would start later than this is "skipped (time budget)"


FULL = Scale(smoke=False, width=1.0, crop_size=None, max_clip_len=None,
             batch=None, batch_start=8, batch_limit=256, loader_batch_limit=64,
             warmup_steps=3, measure_s=2.0, loader_measure_s=8.0, loader_workers=None,
             videos=12, video_frames=96, video_size=(240, 320), raft_pairs=64, raft_size=(240, 320),
             budget_s=420.0)
SMOKE = Scale(smoke=True, width=0.125, crop_size=32, max_clip_len=8,
              batch=2, batch_start=2, batch_limit=2, loader_batch_limit=2,
              warmup_steps=1, measure_s=0.2, loader_measure_s=0.5, loader_workers=1,
              videos=3, video_frames=12, video_size=(48, 64), raft_pairs=2, raft_size=(128, 128),
              budget_s=240.0)

SECTIONS = ("train", "loader", "flow")
# Seconds a row is allowed to start with: less left in the budget and it is skipped.
ROW_COST_S = {"train": 15.0, "compile": 75.0, "loader": 40.0, "flow": 10.0}


class BenchRow(NamedTuple):
    section: str  # train | loader | flow
    what: str  # e.g. "TSN-R50"
    inputs: str  # C x T x H x W of one clip (flow: one frame pair)
    mode: str  # precision and layout, e.g. "bf16+cl"
    batch: int | None = None
    rate: float | None = None  # clips/s (flow: pairs/s)
    unit: str = "clips/s"
    tflops: float | None = None  # achieved TFLOP/s
    peak_share: float | None = None  # of the bf16 dense peak
    wait_share: float | None = None  # loader rows: time blocked on next(loader) / total
    memory_gib: float | None = None  # peak GPU memory allocated
    note: str = ""


# ---- shapes and FLOPs, from the registered contracts and the papers' settings ----------------------


def case_spec(case: Case, scale: Scale) -> tuple[InputSpec, int]:
    """The input spec of `case` at its paper's setting (cut down by a smoke scale) and its class count."""
    setting = PAPER_SETTINGS[case.architecture]
    data = setting.data
    clip_len = data.get("clip_len")
    if clip_len and scale.max_clip_len:
        clip_len = min(clip_len, scale.max_clip_len)
    layout = sampler_layout(data["sampler"], num_segments=data.get("num_segments"),
                            frames_per_segment=data.get("frames_per_segment"), clip_len=clip_len)
    spec = model_input_spec(case.architecture, modality=case.modality, layout=layout,
                            crop_size=scale.crop_size or data["crop_size"], width=scale.width, dropout=DROPOUT,
                            pretrained=None, options=setting.model.get("options", {}))
    return spec, setting.num_classes


def train_flops_per_clip(case: Case, spec: InputSpec, num_classes: int) -> int:
    """3 x the forward FLOPs of one clip (backward ~ 2 x forward), counted on the meta device."""
    with torch.device("meta"):
        model = build_model(case.architecture, num_classes=num_classes, **spec.builder_kwargs)
        inputs = example_input(spec)
    return 3 * 2 * count_macs(model, inputs)


def _shape(spec: InputSpec) -> str:
    return " + ".join("x".join(map(str, shape)) for shape in spec.shapes.values())


# ---- one training step, timed --------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_step(model, optimizer, x: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """The loop's step (`loop.train_one_epoch`) without its bookkeeping: x (B, C, T, H, W), labels (B,)."""
    with torch.autocast(device_type=x.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(x)  # (B, num_classes)
        loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


class Trainer(NamedTuple):
    step: Callable  # (x, labels) -> loss
    model: torch.nn.Module  # the bare model (for its parameters)
    channels_last: bool


def build_trainer(case: Case, spec: InputSpec, num_classes: int, mode: Mode, device: torch.device) -> Trainer:
    """The case's model in `mode` on `device`, with SGD + momentum, as `loop.setup_worker` builds it."""
    torch.manual_seed(0)
    model = build_model(case.architecture, num_classes=num_classes, **spec.builder_kwargs)
    if mode.channels_last:
        to_channels_last(model)
    model = model.to(device).train()
    # a small rate: random clips and labels must not drive the weights to inf (speed is the same)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    forward = torch.compile(model, dynamic=False) if mode.compile else model  # one graph per batch size
    dtype = autocast_dtype(mode.precision, device)
    return Trainer(lambda x, labels: train_step(forward, optimizer, x, labels, dtype), model, mode.channels_last)


def synthetic_batch(spec: InputSpec, num_classes: int, batch: int, device: torch.device, *, channels_last: bool):
    """Normalised-looking clips (B, C, T, H, W) and labels (B,) on the device (the model-only rows)."""
    (shape,) = spec.shapes.values()  # one stream per case
    x = torch.randn((batch, *shape), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x, torch.randint(0, num_classes, (batch,), device=device)


def probe_batch(peak_bytes: Callable[[int], int | None], *, start: int, limit: int, memory_bytes: int) -> int:
    """The largest batch start * 2^k <= limit that trains, found by doubling.

    Args:
        peak_bytes: runs one step at a batch; its peak memory, or None when it ran out of memory.
        memory_bytes: what a batch may use; doubling stops when the next one would pass it.

    Returns:
        The batch, or 0 when even `start` does not fit.
    """
    best, batch = 0, start
    while batch <= limit:
        peak = peak_bytes(batch)
        if peak is None:
            break
        best = batch
        if 2 * peak > memory_bytes:  # activations double with the batch; weights do not (a safe guess)
            break
        batch *= 2
    return best


def _drop_grads(model: torch.nn.Module) -> None:
    for p in model.parameters():  # a step that ran out of memory may leave some behind
        p.grad = None


def _peak_of_one_step(trainer: Trainer, spec: InputSpec, num_classes: int, device: torch.device,
                      batch: int) -> int | None:
    """Peak memory of one step at `batch`, or None when it ran out of memory."""
    torch.cuda.reset_peak_memory_stats(device)
    x = labels = peak = None
    try:
        x, labels = synthetic_batch(spec, num_classes, batch, device, channels_last=trainer.channels_last)
        trainer.step(x, labels)
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    except torch.cuda.OutOfMemoryError:
        pass  # freed below, once the exception (and the frames holding the activations) is gone
    x = labels = None
    _drop_grads(trainer.model)
    _free(device)
    return peak


def time_steps(step: Callable[[], object], *, warmup: int, measure_s: float,
               device: torch.device) -> tuple[float, float]:
    """(seconds per step, seconds of the first warm-up step): `warmup` steps, then as many as fill
    about `measure_s`, timed between two synchronisations."""
    start = time.perf_counter()
    step()
    _sync(device)
    first_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    one_s = time.perf_counter() - start
    steps = max(3, min(1000, int(measure_s / max(one_s, 1e-6))))
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps, first_s


def bench_train(case: Case, mode: Mode, scale: Scale, device: torch.device, *, batch: int | None = None,
                peak_tflops: float | None = None) -> BenchRow:
    """Model-only training throughput of `case` in `mode`. `batch`: start there (halved on OOM);
    None: probe the GPU's memory (or the scale's fixed batch)."""
    spec, num_classes = case_spec(case, scale)
    row = BenchRow("train", case.label, _shape(spec), mode.name)
    trainer = build_trainer(case, spec, num_classes, mode, device)
    if batch is None and scale.batch is not None:
        batch = scale.batch
    if batch is None:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.backends.cudnn.benchmark = False  # autotune once, at the batch found, not at every probe
        try:
            batch = probe_batch(lambda b: _peak_of_one_step(trainer, spec, num_classes, device, b),
                                start=scale.batch_start, limit=scale.batch_limit,
                                memory_bytes=int(MEMORY_SHARE * total))
        finally:
            torch.backends.cudnn.benchmark = True
        if batch == 0:
            return row._replace(note=f"error: batch {scale.batch_start} does not fit in memory")
    notes = []
    while True:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # the probe's failed batch is not this row's peak
        try:
            x, labels = synthetic_batch(spec, num_classes, batch, device, channels_last=mode.channels_last)
            seconds, first_s = time_steps(lambda: trainer.step(x, labels), warmup=scale.warmup_steps,
                                          measure_s=scale.measure_s, device=device)
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        notes.append(f"OOM at batch {batch}")  # freed here, once the exception is gone
        x = labels = None
        _drop_grads(trainer.model)
        _free(device)
        batch //= 2
    if mode.compile:
        notes.append(f"compile {first_s:.0f} s")
    rate = batch / seconds
    tflops = rate * train_flops_per_clip(case, spec, num_classes) / 1e12
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return row._replace(batch=batch, rate=rate, tflops=tflops, memory_gib=memory, note="; ".join(notes),
                        peak_share=tflops / peak_tflops if peak_tflops else None)


# ---- the real loader, end to end ------------------------------------------------------------------


def write_prepared_videos(root: Path, scale: Scale) -> list[Path]:
    """`scale.videos` JPEG frame folders (`<root>/v<i>/img_00001.jpg`, ...), as `actionlab data prepare`
    writes them: moving gradients plus noise (they compress like footage, not like flat colour)."""
    from orchestrator.bench import bench_frames
    from orchestrator.data.video_io import write_frame_folder

    frames = bench_frames(scale.video_frames, *scale.video_size)  # (T, H, W, 3)
    folders = [root / f"v{i}" for i in range(scale.videos)]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # Pillow encodes with the GIL released
        list(pool.map(lambda i: write_frame_folder(folders[i], np.roll(frames, 11 * i, axis=2)), range(len(folders))))
    return folders


def default_loader_workers() -> int:
    """Every core this process may run on but the one that drives the GPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


def bench_loader(case: Case, scale: Scale, device: torch.device, *, folders: list[Path], batch: int,
                 peak_tflops: float | None = None) -> BenchRow:
    """clips/s and data-wait share of the training loop's data path feeding the bf16 + channels_last step."""
    from torch.utils.data import DataLoader

    from orchestrator.data.annotations import VideoRecord
    from orchestrator.data.dataset import VideoDataset, collate_skip_bad
    from orchestrator.data.sampling import make_sampler
    from orchestrator.data.transforms import ClipTransform, normalize_clip

    spec, num_classes = case_spec(case, scale)
    setting, layout = PAPER_SETTINGS[case.architecture], spec.layout
    (crop_size,) = {shape[-1] for shape in spec.shapes.values()}
    workers = scale.loader_workers or default_loader_workers()
    height, width = scale.video_size
    row = BenchRow("loader", case.label, _shape(spec), LOADER_MODE.name, batch=batch,
                   note=f"{workers} loader workers, {len(folders)} JPEG frame folders {width}x{height}")

    if setting.data["sampler"] == "tsn":
        sampler = make_sampler(kind="tsn", train=True, num_segments=layout.segments,
                               frames_per_segment=layout.frames_per_segment)
    else:
        sampler = make_sampler(kind="dense", train=True, clip_len=layout.frames_per_segment)
    # TSN's 340x256 frames for 224 crops: the short side 8/7 of the crop
    transform = ClipTransform(train=True, short_side=crop_size * 8 // 7, crop_size=crop_size, crop="multiscale")
    videos = [VideoRecord(folder, i % num_classes, folder.name) for i, folder in enumerate(folders)]
    steps_at_most = 100_000 // batch + 64
    records = [videos[i % len(videos)] for i in range(batch * steps_at_most)]  # the same videos, over and over
    dataset = VideoDataset(records, sampler=sampler, transform=transform)
    if dataset[0] is None:
        raise RuntimeError(f"VideoDataset could not read {videos[0].path} (its warning says why)")
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_skip_bad,
                        pin_memory=device.type == "cuda", persistent_workers=True, drop_last=True)
    trainer = build_trainer(case, spec, num_classes, LOADER_MODE, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def one_step(batch_dict: dict) -> int:
        """`loop.prepare_inputs` + the step; returns the clips trained on."""
        labels = batch_dict["label"].to(device, non_blocking=True)
        clip = rearrange(batch_dict["inputs"]["rgb"].to(device, non_blocking=True), "b v c t h w -> (b v) c t h w")
        if trainer.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        trainer.step(normalize_clip(clip, "rgb"), labels).item()  # .item(): the loop syncs every step too
        return labels.numel()

    batches = iter(loader)
    skipped = 0
    try:
        # Each worker builds whole batches: warm up over one round of them (the first fill of the
        # queue), then time at least another round and at least loader_measure_s.
        rounds = max(scale.warmup_steps, workers)
        for _ in range(rounds):
            one_step(next(batches))
        clips = steps = 0
        wait_s = 0.0
        start = time.perf_counter()
        while steps < rounds or time.perf_counter() - start < scale.loader_measure_s:
            tick = time.perf_counter()
            batch_dict = next(batches)
            wait_s += time.perf_counter() - tick
            skipped += batch_dict["num_skipped"]
            clips += one_step(batch_dict)
            steps += 1
        total_s = time.perf_counter() - start
    finally:
        del batches, loader  # ends the worker processes
    rate = clips / total_s
    tflops = rate * train_flops_per_clip(case, spec, num_classes) / 1e12
    note = row.note + (f"; {skipped} clips skipped" if skipped else "")
    return row._replace(rate=rate, tflops=tflops, wait_share=wait_s / total_s, note=note,
                        peak_share=tflops / peak_tflops if peak_tflops else None,
                        memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)


# ---- RAFT-small ---------------------------------------------------------------------------------


def bench_raft(scale: Scale, device: torch.device, *, tmp: Path) -> BenchRow:
    """Frame pairs per second of `compute_flow(method="raft")` with a random-init RAFT-small."""
    from torchvision.models.optical_flow import raft_small

    from orchestrator.bench import bench_frames
    from orchestrator.data.flow import RAFT_PAIRS_PER_BATCH, compute_flow

    height, width = scale.raft_size
    row = BenchRow("flow", "RAFT-small", f"2 x 3x{height}x{width}", "fp32", batch=RAFT_PAIRS_PER_BATCH,
                   unit="pairs/s", note="random init (no weights offline; speed does not depend on them)")
    weights = tmp / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), weights)
    frames = bench_frames(scale.raft_pairs + 1, height, width)  # (P + 1, H, W, 3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    def extract():  # returns host arrays: the GPU is synchronised
        return compute_flow(frames, method="raft", raft_weights=weights, device=str(device))

    seconds, _ = time_steps(extract, warmup=1, measure_s=scale.measure_s, device=device)
    return row._replace(rate=scale.raft_pairs / seconds,
                        memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)


# ---- the run and its table ------------------------------------------------------------------------


def bf16_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def describe_machine(device: torch.device, peak_tflops: float | None) -> str:
    cores = default_loader_workers() + 1
    if device.type != "cuda":
        return f"CPU only (smoke run), torch {torch.__version__}, {cores} cores"
    props = torch.cuda.get_device_properties(device)
    peak = f"{peak_tflops:.0f} TFLOP/s bf16 dense peak" if peak_tflops else "bf16 peak unknown (--peak-tflops)"
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {peak}, torch {torch.__version__}, {cores} cores"


def run(scale: Scale, device: torch.device, *, sections: tuple[str, ...] = SECTIONS,
        budget_s: float | None = None, peak_tflops: float | None = None, log=None) -> list[BenchRow]:
    """Every row of the table, in table order. Rows run cheapest-first (compile rows last), each
    guarded: an exception becomes its row's note, and rows past the budget are skipped."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    deadline = started + (scale.budget_s if budget_s is None else budget_s)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the loop: one input shape per run
    threads = torch.get_num_threads()
    if device.type == "cpu":  # tiny steps: OpenMP threads spinning on busy cores make them ~20x slower
        torch.set_num_threads(1)
    bf16_batch: dict[Case, int] = {}  # channels_last, compile and the loader train at bf16's batch
    rows: dict[tuple, BenchRow] = {}
    tmp = Path(tempfile.mkdtemp(prefix="actionlab-bench-gpu-"))
    folders: list[Path] = []

    def attempt(key: tuple, cost: str, blank: BenchRow, make: Callable[[], BenchRow], skip: str = "") -> None:
        if skip or time.perf_counter() + ROW_COST_S[cost] > deadline:
            rows[key] = blank._replace(note=skip or "skipped (time budget)")
        else:
            try:
                rows[key] = make()
            except Exception as err:  # noqa: BLE001 (one failing row must not stop the others)
                lines = str(err).strip().splitlines()
                rows[key] = blank._replace(note=f"error: {type(err).__name__}: {lines[0] if lines else ''}"[:160])
            finally:
                _free(device)
        r = rows[key]
        figure = f"{r.rate:.1f} {r.unit}" if r.rate is not None else "-"
        log(f"[{time.perf_counter() - started:5.0f} s] {r.section} {r.what} {r.mode}: {figure} {r.note}".rstrip())

    def train(case: Case, mode: Mode) -> BenchRow:
        batch = bf16_batch.get(case) if mode.channels_last or mode.precision == "fp32" else None
        row = bench_train(case, mode, scale, device, batch=batch, peak_tflops=peak_tflops)
        if mode.name == "bf16" and row.batch:
            bf16_batch[case] = row.batch
        return row

    def loader(case: Case) -> BenchRow:
        if not folders:
            folders.extend(write_prepared_videos(tmp / "videos", scale))
        batch = min(bf16_batch.get(case) or scale.batch_start, scale.loader_batch_limit)
        return bench_loader(case, scale, device, folders=folders, batch=batch, peak_tflops=peak_tflops)

    def placeholder(section: str, case: Case, mode: Mode) -> BenchRow:  # what a skipped or failed row shows
        try:
            inputs = _shape(case_spec(case, scale)[0])
        except Exception:  # noqa: BLE001 (the row's own attempt reports it)
            inputs = ""
        return BenchRow(section, case.label, inputs, mode.name)

    order = [MODES[1], MODES[0], MODES[2]]  # bf16 first: it sizes the batch of the others
    try:
        if "train" in sections:
            for case in CASES:
                for mode in order:
                    attempt(("train", case, mode), "train", placeholder("train", case, mode), lambda: train(case, mode))
        if "loader" in sections:
            for case in LOADER_CASES:
                attempt(("loader", case), "loader", placeholder("loader", case, LOADER_MODE), lambda: loader(case))
        if "flow" in sections:
            blank = BenchRow("flow", "RAFT-small", "2 x 3x{}x{}".format(*scale.raft_size), "fp32", unit="pairs/s")
            attempt(("flow",), "flow", blank, lambda: bench_raft(scale, device, tmp=tmp))
        if "train" in sections:
            mode = MODES[3]
            skip = "skipped (CPU: compile is timed on CUDA only)" if device.type != "cuda" else ""
            for case in CASES:
                if device.type == "cuda":
                    import torch._dynamo as dynamo

                    dynamo.reset()  # each model compiles afresh, and the last one's code is freed
                attempt(("train", case, mode), "compile", placeholder("train", case, mode), lambda: train(case, mode),
                        skip=skip)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        torch.set_num_threads(threads)
    table_order = [("train", c, m) for c in CASES for m in MODES] + [("loader", c) for c in LOADER_CASES] + [("flow",)]
    return [rows[key] for key in table_order if key in rows]


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def format_table(rows: list[BenchRow], *, machine: str, wall_s: float, scale: Scale) -> str:
    """The one table: a line per row, then how to read it and the targets."""
    header = (f"{'section':<7} {'model':<11} {'input CxTxHxW':<15} {'mode':<16} {'batch':>5} {'throughput':>15} "
              f"{'TFLOP/s':>8} {'peak':>5} {'wait':>5} {'GiB':>6}  note")
    lines = [f"actionlab bench gpu{' (smoke)' if scale.smoke else ''}: {machine}; {wall_s:.0f} s", header,
             "-" * len(header)]
    for r in rows:
        rate = f"{r.rate:.1f} {r.unit}" if r.rate is not None else "-"
        lines.append(f"{r.section:<7} {r.what:<11} {r.inputs:<15} {r.mode:<16} {_cell(r.batch, 'd'):>5} {rate:>15} "
                     f"{_cell(r.tflops, '.1f'):>8} {_percent(r.peak_share):>5} {_percent(r.wait_share):>5} "
                     f"{_cell(r.memory_gib, '.1f'):>6}  {r.note}".rstrip())
    lines += [
        "train: synthetic clips on the device; step = autocast forward, cross-entropy, backward, SGD + momentum; "
        "cl = channels_last weights and clips.",
        (f"batch: {scale.batch} (smoke)" if scale.batch else
         f"batch: doubled from {scale.batch_start} while it fits in memory (at most {scale.batch_limit}); cl and "
         f"compile at bf16's, fp32 halved from bf16's on OOM; loader at most {scale.loader_batch_limit}") +
        ". GiB: peak allocated.",
        "TFLOP/s = clips/s x 3 x forward FLOPs per clip (as `actionlab models --summary`); peak: share of the bf16 "
        "dense peak. fp32 = PyTorch defaults (cuDNN may use TF32).",
        "loader: JPEG frame folders -> VideoDataset -> DataLoader -> the bf16+cl step; wait: share of the time "
        "blocked in next(loader).",
    ]
    if not scale.smoke:
        lines += ["targets (reported, not asserted): " + "; ".join(target_lines(rows))]
    return "\n".join(lines)


def _best(rows: list[BenchRow], pick: Callable[[BenchRow], bool], metric: str) -> BenchRow | None:
    found = [r for r in rows if pick(r) and getattr(r, metric) is not None]
    return max(found, key=lambda r: getattr(r, metric)) if found else None


def target_lines(rows: list[BenchRow]) -> list[str]:
    """Each H200 target of issue 9 beside the row that answers it (the best bf16 row; every loader row)."""
    def verdict(text: str, row: BenchRow | None, metric: str, threshold: float, at_most: bool = False) -> str:
        if row is None:
            return f"{text}: not measured"
        value = getattr(row, metric)
        shown = f"{100 * value:.0f}%" if metric.endswith("share") else f"{value:.0f}"
        met = value <= threshold if at_most else value >= threshold
        return f"{text}: {shown} ({row.what} {row.mode}, {'met' if met else 'missed'})"

    tsn = _best(rows, lambda r: r.section == "train" and r.what == "TSN-R50" and r.mode.startswith("bf16"), "rate")
    i3d = _best(rows, lambda r: r.section == "train" and r.what.startswith("I3D") and r.mode.startswith("bf16"),
                "peak_share")
    loaders = [r for r in rows if r.section == "loader" and r.wait_share is not None] or [None]
    raft = _best(rows, lambda r: r.section == "flow", "rate")
    return ([verdict("TSN-R50 bf16 model-only >= 1000 clips/s", tsn, "rate", 1000.0),
             verdict("I3D >= 40% of bf16 peak", i3d, "peak_share", 0.40)]
            + [verdict("data wait <= 10%", r, "wait_share", 0.10, at_most=True) for r in loaders]
            + [verdict("RAFT-small >= 100 pairs/s", raft, "rate", 100.0)])


def main(argv: list[str] | None = None) -> int:
    from orchestrator.commands.bench import add_gpu_arguments

    parser = argparse.ArgumentParser(prog="python -m orchestrator.bench_gpu", description=__doc__.splitlines()[0])
    add_gpu_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except UserError as err:
        print(f"bench_gpu: error: {err}", file=sys.stderr)
        return 2


def run_from_args(args: argparse.Namespace) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale = SMOKE if args.smoke or device.type != "cuda" else FULL
    sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(sections) - set(SECTIONS)
    if unknown or not sections:
        raise UserError(f"--only {args.only!r}: expected some of {', '.join(SECTIONS)}, comma-separated")
    peak = args.peak_tflops or bf16_peak_tflops(device)
    start = time.perf_counter()
    rows = run(scale, device, sections=sections, budget_s=args.budget_s, peak_tflops=peak)
    print(format_table(rows, machine=describe_machine(device, peak), wall_s=time.perf_counter() - start,
                       scale=scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
