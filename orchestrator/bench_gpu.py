"""`actionlab bench gpu` (== `python -m orchestrator.bench_gpu`): the one thing a lent GPU machine
runs, in under 8 minutes: what the machine is, whether the project's training loop and DDP run on
it, and what one GPU does with the papers' models, the real loader and RAFT.

    main (the parent: imports torch, never touches the GPU)
      for each section, in order: a child process `python -m orchestrator.bench_gpu --only SECTION
          --in-process`, killed with its process group at its budget (`section_budgets`,
          `run_section_child`): a crash or a timeout loses that section's unfinished rows only
        child: the section's runner (`SECTION_RUNNERS`) prints each row the moment it is measured;
          table rows also go, one JSON object a line, to the rows file
        parent: forwards each line as it arrives: stdout -> the terminal, TEXT_FILE and LOG_FILE;
          stderr (warnings, tracebacks) -> the terminal's stderr and LOG_FILE
      summary (`summary_lines`): each section done / not run / TIMED OUT after N s / crashed (its last
          stderr line); channels_last yes/no per architecture from the train rows; the H200 targets

Files, with $OUT set (each line written and flushed as it comes, so that a run killed at the
machine's limit keeps every line before it): $OUT/bench_gpu.txt (the section headers, rows and
summary: what stdout shows), $OUT/bench_gpu.log (that and every child's stderr, interleaved) and
$OUT/bench_gpu.jsonl (the table rows as JSON; the summary reads them back). Without $OUT only the
terminal gets them.

Sections, each with its default budget in seconds (`SECTIONS`; 450 in all, 30 s under the 8
minutes for start-up and kills). `--budget-s` splits another total over the sections chosen with
`--only` in the same proportions; `--section-budget NAME=S` fixes one:

  facts    30  python, torch / CUDA / cuDNN / NCCL, GPU, bf16 native (no emulation), cores, RAM,
               /dev/shm, which of the project's imports are present; a bf16 matmul ceiling; I3D's
               first layers (conv1 with 3 input channels, BatchNorm3d, MaxPool3d) in NCDHW vs
               NDHWC (channels_last_3d), conv1 also with its input padded to 8 channels
  ddp      30  a one-rank NCCL process group (gloo without CUDA), TSN wrapped in DistributedDataParallel
               as ray.train.torch.prepare_model wraps it, DDP_STEPS steps under model.join(), without and
               with partial_bn (whose frozen norms once broke step 2); the loop's collectives:
               all_reduce, all_gather_object (a ShardScores), broadcast_object_list
  loop    100  orchestrator.training.loop itself on TSN-R50 (K=3 x 224) and I3D rgb (64 x 224), bf16 +
               channels_last: train_one_epoch over pinned uint8 batches in collate_skip_bad's format
               (prepare_inputs, autocast, grad clipping, the schedule), score_shard, save_state /
               load_state; clips/s, TFLOP/s, peak GiB. Its ExperimentConfig is the real one (see below)
  train   180  model-only training clips/s and TFLOP/s of TSN-R50, I3D (each stream), C3D and
               R(2+1)D-18 at `model_summary.PAPER_SETTINGS`, shaped by their registered input
               contracts (`orchestrator.inputs`): bf16 and bf16 + channels_last for every model
               first, then fp32, then bf16 + channels_last + torch.compile while the budget lasts
  loader   80  TSN-R50 and I3D rgb end to end: VideoDataset + sampler + ClipTransform + DataLoader
               (every core but one, persistent, pinned) + collate_skip_bad over 320x240 JPEG frame
               folders it writes on the spot (`actionlab data prepare`'s frames layout), with the bf16
               + channels_last step on the GPU; data wait = time blocked in next(loader) / total
  flow     30  RAFT-small through `flow.compute_flow` (the extraction path) on 320x240 frames:
               pairs/s, with random weights (none can be downloaded there; speed does not depend on them)

The train and loader rows' step is the loop's (forward under autocast, cross-entropy, backward, SGD
with momentum) without its bookkeeping: the loop section times the loop itself. Batch: doubled from
8 until a step runs out of memory or its peak says the next doubling would not fit, at most 256
clips; channels_last and compile reuse bf16's batch, fp32 starts from it and halves on OOM. Timings
synchronise the GPU around warmed-up steps (compilation and cuDNN autotuning excluded). TFLOP/s =
clips/s x 3 x forward FLOPs per clip (`count_macs`, as `actionlab models --summary`, 2 FLOPs per
multiply-add; backward ~ 2 x forward). Each row is guarded: an error is printed in its row and the
rest go on; a row that would start too close to its section's budget reads "skipped (time budget)".
Without CUDA (or with --smoke) every section runs its smoke version: width 1/8, 32-pixel crops,
8-frame clips, a few steps, no compile; the tests run that.

Imports: torch, torchvision, numpy, einops, Pillow and the project's models, data layer and training
loop (which imports no pydantic), so it runs on the GPU machine, which lacks pydantic, Ray, MLflow,
decord, PyAV and tqdm (tests/test_bench_gpu.py runs it with those made unimportable). The loop
section alone needs pydantic, for `orchestrator.config.parse_experiment` (no stand-in config: the
loop is timed with what users run). Where pydantic does not import, the wheels in `.whl/` at the
repository root are unpacked into a temporary folder put on sys.path; without them the loop section
prints one line saying so and the others run. To bring the wheels (2.8 MB, CPython 3.12, x86_64),
once, in the repository root of the machine that sends the working tree:

    mkdir -p .git/info && echo /.whl/ >> .git/info/exclude   # ignored: never committed
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \\
      pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection typing-extensions

and send `.whl` to the GPU machine with the working tree (being ignored, it goes only where it is
named explicitly).

On the GPU machine, from the repository root, within a 600 s limit:

    OUT=${OUT:-/tmp/bench_gpu} python3 -m orchestrator.bench_gpu
"""
from __future__ import annotations

import argparse
import atexit
import functools
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
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

REPO = Path(__file__).resolve().parents[1]


class Section(NamedTuple):
    name: str
    budget_s: float  # default seconds before its process is killed
    what: str  # its header's summary


SECTIONS = (  # run in this order: the cheap correctness checks first, the long tables last
    Section("facts", 30.0, "the machine, its packages, I3D's first layers NCDHW vs NDHWC"),
    Section("ddp", 30.0, "one-rank NCCL, DistributedDataParallel + join(), TSN partial_bn, the loop's collectives"),
    Section("loop", 100.0, "orchestrator.training.loop on TSN-R50 and I3D rgb, bf16 + channels_last"),
    Section("train", 180.0, "model-only clips/s and TFLOP/s per model and precision"),
    Section("loader", 80.0, "JPEG frames -> VideoDataset -> DataLoader -> the bf16 + cl step"),
    Section("flow", 30.0, "RAFT-small pairs/s through flow.compute_flow"),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)
TEXT_FILE, LOG_FILE, ROWS_FILE = "bench_gpu.txt", "bench_gpu.log", "bench_gpu.jsonl"  # under $OUT
EXIT_NOT_RUN = 3  # a child's exit code: its section could not run here (its one line says why)
EXIT_ROWS_FAILED = 4  # a child's exit code: it ran to its end, some of its rows or checks failed

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), TFLOP/s; --peak-tflops overrides.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
MEMORY_SHARE = 0.9  # of the GPU's memory a probed batch may use at its peak
DROPOUT = 0.5  # any rate costs the same
LOOP_BATCH = {"tsn": 128, "i3d": 16}  # the loop section's batch per architecture at full scale
DDP_STEPS = 3  # the partial_bn failure came at step 2
WHEELS_DIR = REPO / ".whl"  # pydantic wheels for the loop section's config, where pydantic is missing
WHEELS_PACKAGES = "pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection typing-extensions"
# The imports the project's requirements name, by module: facts says which this machine has.
PROJECT_IMPORTS = ("torchvision", "numpy", "einops", "PIL", "cv2", "yaml", "psutil", "pynvml", "matplotlib", "triton",
                   "pydantic", "ray", "mlflow", "decord", "av", "tqdm", "sqlalchemy", "psycopg")


class Case(NamedTuple):
    """One model fed one stream, at its paper's setting."""
    label: str
    architecture: str  # a registered name, with an entry in PAPER_SETTINGS
    modality: str  # the stream benchmarked


CASES = (  # the distinct networks first: a budget cut drops I3D flow (I3D rgb's network, 2 channels in)
    Case("TSN-R50", "tsn", "rgb"),
    Case("I3D rgb", "i3d", "rgb"),
    Case("C3D", "c3d", "rgb"),
    Case("R(2+1)D-18", "r2plus1d", "rgb"),
    Case("I3D flow", "i3d", "flow"),
)
LOADER_CASES = (CASES[0], CASES[1])
LOOP_CASES = (CASES[0], CASES[1])


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
    batch: int | None  # None: probe the memory (train rows), LOOP_BATCH (loop rows); else this batch
    batch_start: int  # the probe's first batch, doubled from there
    batch_limit: int
    loader_batch_limit: int  # loader rows: bf16's batch, at most this (a worker builds whole batches)
    warmup_steps: int
    loop_steps: int  # steps of the loop section's timed epoch
    measure_s: float  # timed seconds per train row
    loader_measure_s: float
    loader_workers: int | None  # None: every core but one
    videos: int  # prepared videos the loader rows read
    video_frames: int
    video_size: tuple[int, int]  # (height, width)
    raft_pairs: int  # frame pairs per timed compute_flow call
    raft_size: tuple[int, int]  # (height, width)


FULL = Scale(smoke=False, width=1.0, crop_size=None, max_clip_len=None,
             batch=None, batch_start=8, batch_limit=256, loader_batch_limit=64,
             warmup_steps=3, loop_steps=20, measure_s=2.0, loader_measure_s=8.0, loader_workers=None,
             videos=12, video_frames=96, video_size=(240, 320), raft_pairs=64, raft_size=(240, 320))
SMOKE = Scale(smoke=True, width=0.125, crop_size=32, max_clip_len=8,
              batch=2, batch_start=2, batch_limit=2, loader_batch_limit=2,
              warmup_steps=1, loop_steps=2, measure_s=0.2, loader_measure_s=0.5, loader_workers=1,
              videos=3, video_frames=12, video_size=(48, 64), raft_pairs=2, raft_size=(128, 128))

# Seconds a row is allowed to start with: less left in its section's budget and it is skipped.
ROW_COST_S = {"train": 15.0, "compile": 75.0, "loader": 40.0, "flow": 10.0}


class BenchRow(NamedTuple):
    section: str  # train | loader | flow | loop
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

    @property
    def failed(self) -> bool:
        return self.note.startswith("error") or " BAD" in self.note


class SectionNotRun(Exception):
    """A section cannot run on this machine; the message is the one line that says why and what to do."""


# ---- shapes and FLOPs, from the registered contracts and the papers' settings ----------------------


def paper_sections(case: Case, scale: Scale) -> tuple[dict, dict, int]:
    """`case` at its paper's setting (cut down by a smoke scale) in the experiment file's terms: its
    data section, its model section and its class count. Every section derives its shapes from here."""
    setting = PAPER_SETTINGS[case.architecture]
    data = dict(setting.data)
    if scale.crop_size:
        data["crop_size"] = scale.crop_size
    if "clip_len" in data and scale.max_clip_len:
        data["clip_len"] = min(data["clip_len"], scale.max_clip_len)
    model = {"architecture": case.architecture, "modality": case.modality, "width": scale.width, "dropout": DROPOUT,
             "options": setting.model.get("options", {})}
    return data, model, setting.num_classes


def case_spec(case: Case, scale: Scale) -> tuple[InputSpec, int]:
    """The input spec of `case` at its paper's setting (cut down by a smoke scale) and its class count."""
    data, model, num_classes = paper_sections(case, scale)
    layout = sampler_layout(data["sampler"], num_segments=data.get("num_segments"),
                            frames_per_segment=data.get("frames_per_segment"), clip_len=data.get("clip_len"))
    spec = model_input_spec(case.architecture, modality=case.modality, layout=layout, crop_size=data["crop_size"],
                            width=model["width"], dropout=model["dropout"], pretrained=None, options=model["options"])
    return spec, num_classes


def train_flops_per_clip(case: Case, spec: InputSpec, num_classes: int) -> int:
    """3 x the forward FLOPs of one clip (backward ~ 2 x forward), counted on the meta device."""
    with torch.device("meta"):
        model = build_model(case.architecture, num_classes=num_classes, **spec.builder_kwargs)
        inputs = example_input(spec)
    return 3 * 2 * count_macs(model, inputs)


def _shape(spec: InputSpec) -> str:
    return " + ".join("x".join(map(str, shape)) for shape in spec.shapes.values())


# ---- one training step, timed (the train and loader rows) ------------------------------------------


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


# ---- the train, loader and flow rows -----------------------------------------------------------------


def bf16_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def guarded(make: Callable[[], BenchRow], blank: BenchRow) -> BenchRow:
    """make(), or `blank` with the error as its note: one failing row must not stop the others."""
    try:
        return make()
    except Exception as err:  # noqa: BLE001
        lines = str(err).strip().splitlines()
        return blank._replace(note=f"error: {type(err).__name__}: {lines[0] if lines else ''}"[:160])


def run(scale: Scale, device: torch.device, *, sections: tuple[str, ...] = ("train", "loader", "flow"),
        budget_s: float = math.inf, peak_tflops: float | None = None,
        emit: Callable[[BenchRow], None] | None = None) -> list[BenchRow]:
    """The rows of `sections` (train, loader, flow), each handed to `emit` the moment it is measured.

    Run order: bf16 and bf16+cl of every model (bf16 sizes the batch of the others; the pair answers
    channels_last), then fp32, the loader, RAFT, and the compile rows last. A row that would start
    less than its ROW_COST_S before `budget_s` reads "skipped (time budget)"; an exception becomes
    its row's note.

    Returns:
        The rows in run order.
    """
    emit = emit or (lambda row: print(format_row(row), flush=True))
    deadline = time.perf_counter() + budget_s
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the loop: one input shape per run
    threads = torch.get_num_threads()
    if device.type == "cpu":  # tiny steps: OpenMP threads spinning on busy cores make them ~20x slower
        torch.set_num_threads(1)
    bf16_batch: dict[Case, int] = {}  # channels_last, compile and the loader train at bf16's batch
    rows: list[BenchRow] = []
    tmp = Path(tempfile.mkdtemp(prefix="actionlab-bench-gpu-"))
    folders: list[Path] = []

    def attempt(cost: str, blank: BenchRow, make: Callable[[], BenchRow], skip: str = "") -> None:
        if skip or time.perf_counter() + ROW_COST_S[cost] > deadline:
            row = blank._replace(note=skip or "skipped (time budget)")
        else:
            row = guarded(make, blank)
            _free(device)
        rows.append(row)
        emit(row)

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

    fp32, bf16, bf16_cl, compiled = MODES
    try:
        if "train" in sections:
            for case in CASES:
                for mode in (bf16, bf16_cl):
                    attempt("train", placeholder("train", case, mode), lambda: train(case, mode))
            for case in CASES:
                attempt("train", placeholder("train", case, fp32), lambda: train(case, fp32))
        if "loader" in sections:
            for case in LOADER_CASES:
                attempt("loader", placeholder("loader", case, LOADER_MODE), lambda: loader(case))
        if "flow" in sections:
            blank = BenchRow("flow", "RAFT-small", "2 x 3x{}x{}".format(*scale.raft_size), "fp32", unit="pairs/s")
            attempt("flow", blank, lambda: bench_raft(scale, device, tmp=tmp))
        if "train" in sections:
            skip = "skipped (CPU: compile is timed on CUDA only)" if device.type != "cuda" else ""
            for case in CASES:
                if device.type == "cuda":
                    import torch._dynamo as dynamo

                    dynamo.reset()  # each model compiles afresh, and the last one's code is freed
                attempt("compile", placeholder("train", case, compiled), lambda: train(case, compiled), skip=skip)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        torch.set_num_threads(threads)
    return rows


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


TABLE_HEADER = (f"{'section':<7} {'model':<11} {'input CxTxHxW':<15} {'mode':<16} {'batch':>5} {'throughput':>15} "
                f"{'TFLOP/s':>8} {'peak':>5} {'wait':>5} {'GiB':>6}  note")


def format_row(r: BenchRow) -> str:
    """One line of the table, under TABLE_HEADER."""
    rate = f"{r.rate:.1f} {r.unit}" if r.rate is not None else "-"
    return (f"{r.section:<7} {r.what:<11} {r.inputs:<15} {r.mode:<16} {_cell(r.batch, 'd'):>5} {rate:>15} "
            f"{_cell(r.tflops, '.1f'):>8} {_percent(r.peak_share):>5} {_percent(r.wait_share):>5} "
            f"{_cell(r.memory_gib, '.1f'):>6}  {r.note}").rstrip()


def table_legend(section: str, scale: Scale, peak_tflops: float | None) -> list[str]:
    """How to read a section's rows: printed before them, so that a killed section keeps it."""
    peak = f"{peak_tflops:.0f} TFLOP/s" if peak_tflops else "unknown: --peak-tflops"
    legend = {
        "train": [
            "train: synthetic clips already on the device; step = autocast forward, cross-entropy, backward, "
            "SGD + momentum; cl = channels_last weights and clips",
            (f"batch: {scale.batch} (smoke)" if scale.batch else
             f"batch: doubled from {scale.batch_start} while it fits in memory (at most {scale.batch_limit}); cl "
             "and compile at bf16's, fp32 halved from bf16's on OOM") + "; GiB: peak allocated",
            "TFLOP/s = clips/s x 3 x forward FLOPs per clip (as `actionlab models --summary`); peak: share of the "
            f"bf16 dense peak ({peak}); fp32 = PyTorch defaults (cuDNN may use TF32)",
        ],
        "loader": ["loader: JPEG frame folders -> VideoDataset -> DataLoader -> the bf16+cl step; batch: bf16's "
                   f"train batch, at most {scale.loader_batch_limit}; wait: share of the time blocked in next(loader)"],
        "flow": ["flow: RAFT-small through flow.compute_flow on frame pairs, random weights"],
        "loop": ["loop: orchestrator.training.loop.train_one_epoch over pinned uint8 batches (collate_skip_bad's "
                 "dicts), then score_shard and a save_state / load_state round trip; warm-up: the first epoch's "
                 "seconds (cuDNN autotuning included); a check that fails reads BAD"],
    }[section]
    return legend + [TABLE_HEADER, "-" * len(TABLE_HEADER)]


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


def channels_last_line(rows: list[BenchRow]) -> str:
    """Per architecture, whether bf16 + channels_last trained faster than bf16 alone in the train rows:
    "yes" when it did for every stream measured (the figures a per-architecture default is set from)."""
    rate = {(r.what, r.mode): r.rate for r in rows if r.section == "train" and r.rate}
    verdicts = []
    for architecture in dict.fromkeys(case.architecture for case in CASES):
        gains = [(case.label, rate[case.label, "bf16+cl"] / rate[case.label, "bf16"] - 1) for case in CASES
                 if case.architecture == architecture and (case.label, "bf16") in rate
                 and (case.label, "bf16+cl") in rate]
        if not gains:
            verdicts.append(f"{architecture} not measured")
            continue
        faster = "yes" if all(gain > 0 for _, gain in gains) else "no"
        verdicts.append(f"{architecture} {faster} (" + ", ".join(f"{label} {gain:+.0%}" for label, gain in gains) + ")")
    return "channels_last (bf16+cl vs bf16 clips/s, train rows): " + "; ".join(verdicts)


# ---- facts: the machine --------------------------------------------------------------------------------


def import_versions(names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Which of the modules `names` this python finds (none is imported) and their distributions'
    versions: ({name: version or "?"}, [missing names])."""
    distributions = importlib.metadata.packages_distributions()  # top-level module -> distribution names
    present, missing = {}, []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None  # None too where sys.modules[name] is None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
            continue
        versions = []
        for distribution in distributions.get(name, []):
            try:
                versions.append(importlib.metadata.version(distribution))
            except importlib.metadata.PackageNotFoundError:
                pass
        present[name] = versions[0] if versions else "?"
    return present, missing


def machine_facts(scale: Scale, device: torch.device) -> list[str]:
    """Python, torch and its CUDA libraries, the GPU, cores, memory, /dev/shm, the project's imports."""
    nccl = "-"
    if device.type == "cuda":
        try:
            version = torch.cuda.nccl.version()
            nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except Exception as err:  # noqa: BLE001 (a fact, not a failure)
            nccl = f"unknown ({type(err).__name__})"
    lines = [f"python {platform.python_version()} ({sys.executable}), {platform.machine()}, "
             f"kernel {platform.release()}",
             f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
             f"NCCL {nccl}, CUDA available {torch.cuda.is_available()}"]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        lines.append(f"GPU {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {total / 2**30:.1f} GiB "
                     f"({free / 2**30:.1f} free), bf16 native {native}")
    else:
        lines.append("GPU none: every section runs its smoke version on the CPU")
    meminfo = {line.split(":")[0]: int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()}
    shm = shutil.disk_usage("/dev/shm") if os.path.isdir("/dev/shm") else None
    lines.append(f"CPU {len(os.sched_getaffinity(0))} cores usable ({os.cpu_count()} online); RAM "
                 f"{meminfo['MemTotal'] / 2**20:.1f} GiB ({meminfo['MemAvailable'] / 2**20:.1f} available); " +
                 (f"/dev/shm {shm.total / 2**30:.1f} GiB ({shm.free / 2**30:.1f} free)" if shm else "no /dev/shm"))
    if not scale.smoke and (shm is None or shm.total < 20 * 2**30):
        lines.append("WARNING: /dev/shm < 20 GiB: the I3D loader row's workers keep up to 2 batches each of 64 x "
                     "3x64x224x224 uint8 (~18 GiB for 15 workers) there and may die with a bus error")
    present, missing = import_versions(PROJECT_IMPORTS)
    lines.append("imports present: " + ", ".join(f"{name} {version}" for name, version in present.items()) +
                 "; missing: " + (", ".join(missing) or "none"))
    return lines


def bf16_matmul(scale: Scale, device: torch.device) -> str:
    """The bf16 matmul ceiling, TFLOP/s (2 FLOPs per multiply-add)."""
    n = 512 if scale.smoke else 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds, _ = time_steps(lambda: a @ b, warmup=2, measure_s=0.5, device=device)
    return f"bf16 matmul {n}x{n}x{n}: {2 * n**3 / seconds / 1e12:.1f} TFLOP/s"


def i3d_first_layers(scale: Scale, device: torch.device) -> list[str]:
    """I3D's conv1 (3 -> 64 channels, 7x7x7, stride 2), BatchNorm3d and MaxPool3d(1,3,3), forward +
    backward in bf16 at the paper's input (batch 8 x 3x64x224x224), NCDHW vs NDHWC (channels_last_3d),
    conv1 also with its input padded to 8 channels: where channels_last can lose, and whether padding
    would win it back. Each variant's failure is its entry's text."""
    batch, frames, size = (1, 8, scale.crop_size) if scale.smoke else (8, 64, 224)
    ndhwc = torch.channels_last_3d

    def conv_step(x: torch.Tensor, w: torch.Tensor) -> None:
        y = F.conv3d(x, w, stride=2, padding=3)  # (B, 64, T/2, H/2, W/2)
        y.backward(torch.ones_like(y))

    def timed(label: str, step: Callable[[], None]) -> str:
        try:
            seconds, _ = time_steps(step, warmup=2, measure_s=0.5, device=device)
            return f"{label} {seconds * 1e3:.2f} ms"
        except Exception as err:  # noqa: BLE001 (a format a kernel lacks is a finding, not a crash)
            return f"{label} error {type(err).__name__}: {str(err).strip().splitlines()[0][:100] if str(err) else ''}"

    x = torch.randn(batch, 3, frames, size, size, device=device, dtype=torch.bfloat16)  # (B, C, T, H, W)
    w = torch.randn(64, 3, 7, 7, 7, device=device, dtype=torch.bfloat16) * 0.05
    x8, w8 = F.pad(x, (0, 0, 0, 0, 0, 0, 0, 5)), F.pad(w, (0, 0, 0, 0, 0, 0, 0, 5))  # C 3 -> 8, zeros
    convs = [timed(label, lambda xx=xx, ww=ww: conv_step(xx, ww)) for label, xx, ww in (
        ("NCDHW", x, w.requires_grad_()),
        ("NDHWC", x.contiguous(memory_format=ndhwc), w.detach().contiguous(memory_format=ndhwc).requires_grad_()),
        ("NDHWC C=8", x8.contiguous(memory_format=ndhwc), w8.contiguous(memory_format=ndhwc).requires_grad_()))]
    lines = [f"I3D conv1 3->64 k7 s2 bf16 fwd+bwd on {batch}x3x{frames}x{size}x{size}: " + "; ".join(convs)]
    del x, w, x8, w8
    y = torch.randn(batch, 64, frames // 2, size // 2, size // 2, device=device, dtype=torch.bfloat16)  # conv1's out
    for label, layer in (("BatchNorm3d", torch.nn.BatchNorm3d(64, eps=1e-3).to(device)),
                         ("MaxPool3d(1,3,3)", torch.nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), ceil_mode=True))):
        def step(yy: torch.Tensor) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = layer(yy)
            out.backward(torch.ones_like(out))

        variants = [timed(name, lambda yy=yy.detach().requires_grad_(): step(yy))
                    for name, yy in (("NCDHW", y), ("NDHWC", y.contiguous(memory_format=ndhwc)))]
        lines.append(f"I3D {label} bf16 fwd+bwd on {'x'.join(map(str, y.shape))}: " + "; ".join(variants))
    return lines


def run_facts(scale: Scale, device: torch.device, *, budget_s: float, peak_tflops: float | None, out: Output) -> int:
    """The machine first (nothing here can fail), then the layer timings. Returns the failed lines."""
    for line in machine_facts(scale, device):
        out.line(f"facts {line}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the loop
    failed = 0
    for measure in (lambda: [bf16_matmul(scale, device)], lambda: i3d_first_layers(scale, device)):
        try:
            lines = measure()
        except Exception as err:  # noqa: BLE001
            lines = [f"error: {type(err).__name__}: {str(err).strip()[:160]}"]
        for line in lines:
            failed += " error" in line or line.startswith("error")
            out.line(f"facts {line}")
        _free(device)
    return failed


# ---- ddp: DistributedDataParallel as Ray Train builds it, on one rank -------------------------------


def ddp_steps(scale: Scale, device: torch.device, *, partial_bn: bool) -> float:
    """TSN-R50 (its paper's shape; smoke: tiny) with `partial_bn`, wrapped as ray.train.torch.prepare_model
    wraps it, trained DDP_STEPS steps under model.join() (uneven inputs allowed). Returns the last loss.

    The step is train_one_epoch's (model.train() first, autocast, cross-entropy, backward, SGD), written
    out: this section runs without pydantic, and the loop section times the loop's own."""
    from torch.nn.parallel import DistributedDataParallel

    case = CASES[0]
    data, model_section, num_classes = paper_sections(case, scale)
    options = {**model_section["options"], "partial_bn": partial_bn}
    layout = sampler_layout("tsn", num_segments=data["num_segments"], frames_per_segment=data["frames_per_segment"],
                            clip_len=1)
    spec = model_input_spec("tsn", modality="rgb", layout=layout, crop_size=data["crop_size"],
                            width=model_section["width"], dropout=DROPOUT, pretrained=None, options=options)
    (shape,) = spec.shapes.values()  # (C, T, H, W)
    torch.manual_seed(0)
    model = build_model("tsn", num_classes=num_classes, **spec.builder_kwargs)
    if device.type == "cuda":
        to_channels_last(model)
        model = DistributedDataParallel(model.to(device), device_ids=[device], output_device=device)
    else:
        model = DistributedDataParallel(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    batch = scale.batch or 8
    model.train()  # train_one_epoch's first line, after the wrapping: partial_bn's norms go to eval here
    with model.join():
        for _ in range(DDP_STEPS):
            x = torch.randn(batch, *shape, device=device)  # (B, C, T, H, W)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            labels = torch.randint(0, num_classes, (batch,), device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return loss.item()


def loop_collectives(device: torch.device) -> str:
    """The loop's three collectives on one rank: all_reduce of float64 sums (_sum_across_workers),
    all_gather_object of a ShardScores (evaluate), broadcast_object_list (_keep_if_best)."""
    import torch.distributed as dist

    from orchestrator.training.loop import ShardScores

    sums = torch.tensor([1.0, 2.0], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    shard = ShardScores(torch.arange(3), torch.arange(3), torch.zeros(3, 4), 1, 3, 0)
    gathered = [None]
    dist.all_gather_object(gathered, shard)
    score = [0.5]
    dist.broadcast_object_list(score, src=0)
    ok = sums.tolist() == [1.0, 2.0] and torch.equal(gathered[0].video_scores, shard.video_scores) and score == [0.5]
    return (f"all_reduce float64 {sums.tolist()}, all_gather_object {type(gathered[0]).__name__}, "
            f"broadcast_object_list {score}: {'OK' if ok else 'BAD'}")


def run_ddp(scale: Scale, device: torch.device, *, budget_s: float, peak_tflops: float | None, out: Output) -> int:
    """A one-rank process group (NCCL on CUDA, gloo without), TSN under DDP without and with partial_bn,
    the loop's collectives. Returns the failed checks."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")  # one rank on one machine: loopback (no network there)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if device.type == "cuda":
        torch.cuda.set_device(device)  # as Ray Train does before the loop runs
        torch.backends.cudnn.benchmark = True
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    failed = 0
    try:
        checks = [(f"TSN partial_bn={partial_bn} DistributedDataParallel + join()",
                   lambda partial_bn=partial_bn: f"{DDP_STEPS} steps OK (loss "
                                                 f"{ddp_steps(scale, device, partial_bn=partial_bn):.3f})")
                  for partial_bn in (False, True)] + [("collectives", lambda: loop_collectives(device))]
        for label, check in checks:
            try:
                result = check()
            except Exception as err:  # noqa: BLE001 (each check reports on its own)
                lines = str(err).strip().splitlines()
                result = f"FAILED {type(err).__name__}: {lines[0][:200] if lines else ''}"
            failed += result.startswith("FAILED") or result.endswith("BAD")
            out.line(f"ddp {backend} {label}: {result}")
            _free(device)
    finally:
        dist.destroy_process_group()
    return failed


# ---- loop: the training loop's own functions ---------------------------------------------------------


def unpack_wheels(wheels: list[Path]) -> Path:
    """`wheels` unpacked into a fresh temporary folder put first on sys.path (`pip install --target`
    without pip: these wheels hold packages only, no scripts or data). Removed when the process exits."""
    site = Path(tempfile.mkdtemp(prefix="actionlab-wheels-"))
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return site


def experiment_parser() -> tuple[Callable, str]:
    """`orchestrator.config.parse_experiment` and where its pydantic comes from: installed, or the
    wheels in WHEELS_DIR (`unpack_wheels`). Raises SectionNotRun with the one line to print otherwise."""
    python = "{}.{}".format(*sys.version_info[:2])  # the wheels must be built for the python that runs this
    bring = ("bring them: in the repository root run `python3 -m pip download --no-deps --only-binary=:all: "
             f"--python-version {python} --implementation cp --platform manylinux_2_28_x86_64 --platform "
             f"manylinux2014_x86_64 -d .whl {WHEELS_PACKAGES}`, keep .whl/ out of git and carry it with the working "
             "tree (python -m orchestrator.bench_gpu's docstring)")
    try:
        import pydantic
        origin = "installed"
    except ImportError:
        wheels = sorted(WHEELS_DIR.glob("*.whl"))
        if not any(w.name.lower().startswith("pydantic-") for w in wheels):
            raise SectionNotRun(f"loop: cannot run: orchestrator.config needs pydantic, which this python lacks, "
                                f"and {WHEELS_DIR} holds no pydantic wheel; {bring}") from None
        unpack_wheels(wheels)
        try:
            import pydantic
        except (ImportError, SystemError) as err:
            raise SectionNotRun(f"loop: cannot run: the wheels in {WHEELS_DIR} do not import in python {python} "
                                f"({type(err).__name__}: {err}); {bring}") from None
        origin = f"from {WHEELS_DIR.name}/"
    from orchestrator.config import parse_experiment

    return parse_experiment, f"pydantic {pydantic.VERSION} {origin}"


def loop_config(parse: Callable, case: Case, scale: Scale, batch: int):
    """The ExperimentConfig of `case` at its paper's setting, parsed as an experiment file's dict is
    (fields not named keep their defaults), training bf16 + channels_last. Returns (config, classes)."""
    data, model, num_classes = paper_sections(case, scale)
    raw = {"data": {**data, "short_side": data["crop_size"] * 8 // 7, "loader_workers": 0},  # TSN: 256 for 224
           "model": model,
           "optim": {"batch_size": batch, "precision": "bf16", "channels_last": True, "compile": False, "epochs": 1,
                     "warmup_epochs": 0.0}}
    return parse(raw, source=f"bench gpu: loop {case.label}"), num_classes


def loop_step(cfg):
    """One worker's step (no accumulation): what setup_worker builds for a fixed world of 1."""
    from orchestrator.training.elastic import step_batch

    return step_batch(batch_size=cfg.optim.batch_size, max_workers=1, world=1, on_resize="keep_global_batch")


class Batches:
    """What the training DataLoader yields, `steps` batches long, cycling through `batches`."""

    def __init__(self, batches: list[dict], steps: int):
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.batches[i % len(self.batches)] for i in range(self.steps))


def synthetic_loader_batch(spec: InputSpec, num_classes: int, batch: int, *, seed: int, pin: bool) -> dict:
    """A batch as collate_skip_bad builds it: {'inputs': {stream: uint8 (B, V=1, C, T, H, W)}, 'label':
    int64 (B,), 'index': int64 (B,), 'num_skipped': 0}; pinned as DataLoader(pin_memory=True) hands it."""
    g = torch.Generator().manual_seed(seed)
    inputs = {stream: torch.randint(0, 256, (batch, 1, *shape), dtype=torch.uint8, generator=g)
              for stream, shape in spec.shapes.items()}
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    if pin:
        inputs, labels = {k: v.pin_memory() for k, v in inputs.items()}, labels.pin_memory()
    return {"inputs": inputs, "label": labels, "index": torch.arange(batch), "num_skipped": 0}


class SyntheticClips(torch.utils.data.Dataset):
    """VideoDataset's items without a video: {'inputs': {stream: uint8 (V=1, C, T, H, W)}, 'label', 'index'}."""

    def __init__(self, spec: InputSpec, num_classes: int, videos: int):
        self.spec, self.num_classes, self.videos = spec, num_classes, videos

    def __len__(self) -> int:
        return self.videos

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"inputs": {stream: torch.randint(0, 256, (1, *shape), dtype=torch.uint8, generator=g)
                           for stream, shape in self.spec.shapes.items()},
                "label": i % self.num_classes, "index": i}


def resume_round_trip(cfg, model, optimizer, scaler, device: torch.device) -> str:
    """loop.save_state, the weights changed, loop.load_state: the weights come back, the epoch and history
    too, and the momentum stays on the weights' device. Returns "resume OK" or what went wrong."""
    from orchestrator.training import loop

    w = loop.Worker(cfg=cfg, rank=0, world=1, device=device, model=model, optimizer=optimizer, scaler=scaler,
                    step=loop_step(cfg), train_set=None, train_batches=None, train_loader=None, num_workers=0,
                    splits=None, val_set=None, test_set=None, unlisted={"train": 0, "test": 0})
    bare = loop.unwrap(model)
    before = {k: v.detach().clone() for k, v in bare.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        loop.save_state(w, Path(tmp), at=loop.Progress(1), history=[{"epoch": 0}])
        with torch.no_grad():
            next(bare.parameters()).add_(1.0)
        (epoch, _, _), history = loop.load_state(w, Path(tmp))
    same = all(torch.equal(before[k], v) for k, v in bare.state_dict().items())
    momentum = {str(s["momentum_buffer"].device) for s in optimizer.state.values() if "momentum_buffer" in s}
    if same and epoch == 1 and history == [{"epoch": 0}] and momentum <= {str(p.device) for p in bare.parameters()}:
        return "resume OK"
    return f"resume BAD (weights back {same}, epoch {epoch}, momentum on {sorted(momentum)})"


def bench_loop(parse: Callable, case: Case, scale: Scale, device: torch.device, *,
               peak_tflops: float | None = None) -> BenchRow:
    """clips/s of loop.train_one_epoch on `case`, then score_shard and a checkpoint round trip."""
    from orchestrator.inputs import input_spec
    from orchestrator.training import loop

    batch = scale.batch or LOOP_BATCH[case.architecture]
    cfg, num_classes = loop_config(parse, case, scale, batch)
    spec = input_spec(cfg)
    row = BenchRow("loop", case.label, _shape(spec), "bf16+cl", batch=batch)
    # setup_worker's model lines (its data lines need a data set)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.architecture, num_classes=num_classes, **spec.builder_kwargs)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if cfg.optim.channels_last:
            to_channels_last(model)
    model = model.to(device)
    optimizer = loop.build_optimizer(model, cfg)
    factor, sb = loop.lr_lambda(cfg, scale.warmup_steps + scale.loop_steps), loop_step(cfg)

    def lr_at(clip: int) -> float:
        return cfg.optim.lr * factor(clip / sb.global_clips)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(cfg.optim.precision, device) == torch.float16)

    batches = [synthetic_loader_batch(spec, num_classes, batch, seed=seed, pin=device.type == "cuda")
               for seed in (0, 1)]
    start = time.perf_counter()
    loop.train_one_epoch(model, Batches(batches, scale.warmup_steps), optimizer, scaler, cfg, device, sb=sb, lr_at=lr_at)
    first_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = loop.train_one_epoch(model, Batches(batches, scale.loop_steps), optimizer, scaler, cfg, device, sb=sb,
                                 lr_at=lambda clip: lr_at(clip + scale.warmup_steps * sb.global_clips))
    rate = stats["seen"] / stats["seconds"]
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    loss = stats["loss_sum"] / stats["seen"]
    checks = [f"warm-up {scale.warmup_steps} steps {first_s:.1f} s",
              f"loss {loss:.2f}" + ("" if math.isfinite(loss) else " BAD")]
    if device.type == "cuda" and cfg.optim.channels_last:  # the optimiser's updates keep the weights' layout
        kept = all(p.is_contiguous(memory_format=torch.channels_last_3d if p.dim() == 5 else torch.channels_last)
                   for p in model.parameters() if p.dim() in (4, 5))
        checks.append(f"weights channels_last {'OK' if kept else 'BAD'}")

    videos = 2 * batch + 1  # a last batch of one
    start = time.perf_counter()
    shard = loop.score_shard(model, SyntheticClips(spec, num_classes, videos), cfg, device, rank=0, world=1)
    result = loop.merge_shards([shard])
    scored = (result.video_scores.shape == (videos, num_classes) and np.isfinite(result.video_scores).all()
              and (result.indices == np.arange(videos)).all())
    checks.append(f"score_shard {videos} videos {'OK' if scored else 'BAD'} ({time.perf_counter() - start:.1f} s)")
    checks.append(resume_round_trip(cfg, model, optimizer, scaler, device))
    tflops = rate * train_flops_per_clip(case, spec, num_classes) / 1e12
    return row._replace(rate=rate, tflops=tflops, peak_share=tflops / peak_tflops if peak_tflops else None,
                        memory_gib=memory, note="; ".join(checks))


def run_loop(scale: Scale, device: torch.device, *, budget_s: float, peak_tflops: float | None, out: Output) -> int:
    """bench_loop on LOOP_CASES with the real ExperimentConfig. Returns the failed rows; raises
    SectionNotRun where the config cannot be built."""
    parse, origin = experiment_parser()
    out.line(f"loop: config from orchestrator.config.parse_experiment ({origin})")
    for line in table_legend("loop", scale, peak_tflops):
        out.line(line)
    failed = 0
    for case in LOOP_CASES:
        blank = BenchRow("loop", case.label, _shape(case_spec(case, scale)[0]), "bf16+cl")
        row = guarded(lambda: bench_loop(parse, case, scale, device, peak_tflops=peak_tflops), blank)
        _free(device)
        failed += row.failed
        out.row(row)
    return failed


# ---- one section in this process (what each child runs) ---------------------------------------------


class Output:
    """A section's results as each is measured: a line on stdout, flushed (the parent forwards it at
    once), and each table row also as one JSON object a line appended to `rows_file`."""

    def __init__(self, rows_file: Path | None):
        self.rows_file = rows_file

    def line(self, text: str) -> None:
        print(text, flush=True)

    def row(self, row: BenchRow) -> None:
        self.line(format_row(row))
        if self.rows_file is not None:
            with open(self.rows_file, "a") as f:
                f.write(json.dumps(row._asdict()) + "\n")


def run_rows_section(section: str, scale: Scale, device: torch.device, *, budget_s: float,
                     peak_tflops: float | None, out: Output) -> int:
    """The train, loader or flow rows (`run`), under their legend. Returns the failed rows."""
    for line in table_legend(section, scale, peak_tflops):
        out.line(line)
    rows = run(scale, device, sections=(section,), budget_s=budget_s, peak_tflops=peak_tflops, emit=out.row)
    return sum(row.failed for row in rows)


# Each section: (scale, device, *, budget_s, peak_tflops, out) -> the number of its rows or checks that failed.
SECTION_RUNNERS: dict[str, Callable[..., int]] = {
    "facts": run_facts,
    "ddp": run_ddp,
    "loop": run_loop,
    "train": functools.partial(run_rows_section, "train"),
    "loader": functools.partial(run_rows_section, "loader"),
    "flow": functools.partial(run_rows_section, "flow"),
}


def run_in_process(sections: tuple[str, ...], budgets: dict[str, float], *, smoke: bool,
                   peak_tflops: float | None, rows_file: Path | None) -> int:
    """`sections` one after another in this process, nothing killed. Returns the exit code: 0,
    EXIT_ROWS_FAILED when a row or check failed, else EXIT_NOT_RUN when a section could not run."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    scale = SMOKE if smoke or device.type != "cuda" else FULL
    peak = peak_tflops or bf16_peak_tflops(device)
    if device.type == "cpu":  # tiny steps: OpenMP threads spinning on busy cores make them ~20x slower
        torch.set_num_threads(1)
    out = Output(rows_file)
    code = 0
    for name in sections:
        try:
            failed = SECTION_RUNNERS[name](scale, device, budget_s=budgets[name], peak_tflops=peak, out=out)
            code = max(code, EXIT_ROWS_FAILED if failed else 0)
        except SectionNotRun as why:
            out.line(str(why))
            code = max(code, EXIT_NOT_RUN)
    return code


# ---- the parent: each section in its own process, killed at its budget -------------------------------


def parse_sections(only: str | None) -> tuple[str, ...]:
    """--only's comma-separated names (None: all), in SECTIONS' order."""
    if only is None:
        return SECTION_NAMES
    chosen = {name.strip() for name in only.split(",") if name.strip()}
    if not chosen or chosen - set(SECTION_NAMES):
        raise UserError(f"--only {only!r}: expected some of {', '.join(SECTION_NAMES)}, comma-separated")
    return tuple(name for name in SECTION_NAMES if name in chosen)


def parse_section_budgets(items: list[str] | None) -> dict[str, float]:
    """--section-budget NAME=SECONDS, each given once or more (the last wins)."""
    budgets = {}
    for item in items or []:
        name, _, seconds = item.partition("=")
        try:
            budgets[name.strip()] = float(seconds)
        except ValueError:
            raise UserError(f"--section-budget {item!r}: expected NAME=SECONDS, e.g. train=200") from None
        if name.strip() not in SECTION_NAMES or budgets[name.strip()] <= 0:
            raise UserError(f"--section-budget {item!r}: NAME is one of {', '.join(SECTION_NAMES)}, SECONDS > 0")
    return budgets


def section_budgets(sections: tuple[str, ...], *, total_s: float | None = None,
                    fixed: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per section: `fixed` ones as given; the others their SECTIONS default, or, with
    `total_s`, what `fixed` leaves of it split in proportion to their defaults."""
    defaults = {s.name: s.budget_s for s in SECTIONS}
    fixed = {name: seconds for name, seconds in (fixed or {}).items() if name in sections}
    rest = [name for name in sections if name not in fixed]
    share = 1.0
    if total_s is not None and rest:
        left = total_s - sum(fixed.values())
        if left <= 0:
            raise UserError(f"--budget-s {total_s:g}: the --section-budget values take all of it, none is left for "
                            f"{', '.join(rest)}")
        share = left / sum(defaults[name] for name in rest)
    return {name: fixed.get(name, defaults[name] * share) for name in sections}


class Transcript:
    """The run's lines as they arrive: the terminal and, with `out_dir`, TEXT_FILE (stdout's lines) and
    LOG_FILE (stderr's too), each written and flushed at once: a run killed at the machine's time limit
    keeps every line printed before."""

    def __init__(self, out_dir: Path | None):
        self.lock = threading.Lock()  # two pipes per child are read at once
        self.text = self.log = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.text, self.log = open(out_dir / TEXT_FILE, "w"), open(out_dir / LOG_FILE, "w")

    def out(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            for f in (self.text, self.log):
                if f is not None:
                    f.write(line + "\n")
                    f.flush()

    def err(self, line: str) -> None:
        with self.lock:
            print(line, file=sys.stderr, flush=True)
            if self.log is not None:
                self.log.write(line + "\n")
                self.log.flush()

    def close(self) -> None:
        for f in (self.text, self.log):
            if f is not None:
                f.close()


class SectionResult(NamedTuple):
    name: str
    budget_s: float
    seconds: float  # from its start to its end or its kill
    status: str  # done | done, some rows failed | not run | TIMED OUT | crashed
    detail: str = ""  # crashed: the exit code or signal and the last line of its stderr


def _forward_lines(stream, write: Callable[[str], None]) -> None:
    for line in stream:
        write(line.rstrip("\n"))


def run_section_child(name: str, budget_s: float, child_args: list[str], transcript: Transcript) -> SectionResult:
    """`name` in a child process of its own session, its lines forwarded to `transcript` as they come,
    the child and its process group (DataLoader workers too) killed at `budget_s`."""
    command = [sys.executable, "-m", "orchestrator.bench_gpu", "--only", name, "--in-process",
               "--budget-s", f"{budget_s:g}", *child_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    last_error = [""]

    def error_line(line: str) -> None:
        if line.strip():
            last_error[0] = line.strip()
        transcript.err(line)

    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             env=env, start_new_session=True)
    readers = [threading.Thread(target=_forward_lines, args=(child.stdout, transcript.out), daemon=True),
               threading.Thread(target=_forward_lines, args=(child.stderr, error_line), daemon=True)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        child.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if child.poll() is None:  # past its budget, or this process interrupted: the whole group goes
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    seconds = time.monotonic() - start
    for reader in readers:
        reader.join(timeout=5)  # the pipes close when the last process holding them is gone
    if timed_out:
        return SectionResult(name, budget_s, seconds, "TIMED OUT", "killed at its budget; its rows above are what "
                                                                   "it finished")
    status = {0: "done", EXIT_ROWS_FAILED: "done, some rows failed", EXIT_NOT_RUN: "not run"}.get(child.returncode)
    if status is not None:
        return SectionResult(name, budget_s, seconds, status, "its line above says why" if status == "not run" else "")
    code = child.returncode
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    return SectionResult(name, budget_s, seconds, "crashed", f"{how}: {last_error[0][:200]}")


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def read_rows(rows_file: Path) -> list[BenchRow]:
    if not rows_file.exists():
        return []
    return [BenchRow(**json.loads(line)) for line in rows_file.read_text().splitlines() if line.strip()]


def summary_lines(results: list[SectionResult], rows: list[BenchRow], *, smoke: bool, wall_s: float) -> list[str]:
    """How each section ended, channels_last per architecture (train rows) and the targets (GPU runs)."""
    lines = [f"==== summary: {wall_s:.0f} s ===="]
    lines += [f"{r.name:<7} {r.status} after {r.seconds:.0f} s (budget {_seconds(r.budget_s)} s)" +
              (f": {r.detail}" if r.detail else "") for r in results]
    if any(r.section == "train" for r in rows):
        lines.append(channels_last_line(rows) + (" [smoke: CPU figures, no verdict]" if smoke else ""))
    if not smoke:
        lines.append("targets (reported, not asserted): " + "; ".join(target_lines(rows)))
    return lines


def run_sections(sections: tuple[str, ...], budgets: dict[str, float], *, smoke: bool,
                 peak_tflops: float | None) -> int:
    """Each section in its own child process (`run_section_child`), then the summary. Returns 0 when
    every section ran to its end (its rows may still report errors), else 1."""
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    transcript = Transcript(out_dir)
    scratch = None if out_dir else tempfile.TemporaryDirectory(prefix="actionlab-bench-gpu-rows-")
    rows_file = (out_dir or Path(scratch.name)) / ROWS_FILE
    rows_file.write_text("")
    smoke = smoke or not torch.cuda.is_available()
    child_args = ["--rows-file", str(rows_file)] + (["--smoke"] if smoke else []) + (
        ["--peak-tflops", f"{peak_tflops:g}"] if peak_tflops else [])
    start = time.monotonic()
    results: list[SectionResult] = []
    try:
        transcript.out(f"actionlab bench gpu{' (smoke)' if smoke else ''}: {', '.join(sections)}; at most "
                       f"{_seconds(sum(budgets.values()))} s; " +
                       (f"files {out_dir / TEXT_FILE}, {LOG_FILE}, {ROWS_FILE}" if out_dir else "$OUT unset: no files"))
        for name in sections:
            what = next(s.what for s in SECTIONS if s.name == name)
            transcript.out(f"==== {name}: {what}; killed past {_seconds(budgets[name])} s ====")
            results.append(run_section_child(name, budgets[name], child_args, transcript))
        for line in summary_lines(results, read_rows(rows_file), smoke=smoke, wall_s=time.monotonic() - start):
            transcript.out(line)
    finally:
        transcript.close()
        if scratch is not None:
            scratch.cleanup()
    return 0 if all(r.status.startswith(("done", "not run")) for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    from orchestrator.commands.bench import add_gpu_arguments

    parser = argparse.ArgumentParser(prog="python -m orchestrator.bench_gpu",
                                     description="actionlab bench gpu: " + ", ".join(SECTION_NAMES) +
                                                 " (the module's docstring says what each measures)")
    add_gpu_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except UserError as err:
        print(f"bench_gpu: error: {err}", file=sys.stderr)
        return 2


def run_from_args(args: argparse.Namespace) -> int:
    sections = parse_sections(args.only)
    budgets = section_budgets(sections, total_s=args.budget_s, fixed=parse_section_budgets(args.section_budget))
    if args.in_process:
        return run_in_process(sections, budgets, smoke=args.smoke, peak_tflops=args.peak_tflops,
                              rows_file=args.rows_file)
    return run_sections(sections, budgets, smoke=args.smoke, peak_tflops=args.peak_tflops)


if __name__ == "__main__":
    sys.exit(main())
