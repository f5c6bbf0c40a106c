"""What each section of `actionlab bench gpu` measures, in the child process `orchestrator/bench/gpu.py`
starts for it (that module's docstring describes the sections, their budgets and the whole run).

    run_in_process(sections)                  <- `python -m orchestrator.bench.gpu --only S --in-process`
      SECTION_RUNNERS[section](SectionRun)    -> the number of rows or checks that failed
        facts   machine_facts, bf16_matmul, i3d_first_layers
        ddp     ddp_steps (loop.train_one_epoch under DDP + join), loop_collectives
        loop    bench_loop: train_one_epoch, score_shard, save_state / load_state
        train   measure_rows -> bench_train: loop.train_step, batch probed (probe_batch), timed (time_steps)
        loader  measure_rows -> bench_loader, per case with data.decode_device cpu then cuda: data.build_dataset
                -> loop.make_loader (DeviceDecoding with cuda) -> loop.train_one_epoch; CPU cores busy over the
                timed epoch from /proc (tree_cpu_seconds)
        flow    measure_rows -> bench_raft: flow.compute_flow with RAFT-small
      each row -> Output: stdout (the parent forwards it) and a JSON line in the rows file
    rows_summary(rows file)                   <- the parent's summary: channels_last per architecture, targets

Every model, optimiser and step here is the training loop's, set up by a real ExperimentConfig
(`bench_config`, parsed by `experiment_parser`: pydantic installed or unpacked from wheels).
"""
from __future__ import annotations

import atexit
import functools
import gc
import importlib
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from models import build_model
from orchestrator.bench.synthetic import SyntheticClips, bench_frames, synthetic_batch
from orchestrator.inputs import InputSpec, example_input
from orchestrator.model_summary import PAPER_SETTINGS, count_macs
from orchestrator.training import loop
from orchestrator.training.elastic import EpochBatches, StepBatch, step_batch

EXIT_NOT_RUN = 3  # a child's exit code: its section could not run here (its one line says why)
EXIT_ROWS_FAILED = 4  # a child's exit code: it ran to its end, some of its rows or checks failed

# Dense bf16 tensor-core peaks from the vendors' datasheets (SXM parts), TFLOP/s; --peak-tflops overrides.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
MEMORY_SHARE = 0.9  # of the GPU's memory a probed batch may use at its peak
DROPOUT = 0.5  # any rate costs the same
LOOP_BATCH = {"tsn": 128, "i3d": 16}  # the loop section's batch per architecture at full scale
DDP_STEPS = 3  # the partial_bn failure came at step 2
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
LOADER_CASES = LOOP_CASES = (CASES[0], CASES[1])  # TSN-R50, I3D rgb
# data.decode_device of each loader row: JPEGs decoded (and clips cropped) by the loader processes, or by
# the training GPU (nvJPEG) from the bytes the loader processes read
LOADER_DECODES = ("cpu", "cuda")
GPU_DECODE_LOADER_WORKERS = 8  # issue 20's bar: GPU decode fed by at most 8 loader processes


class Mode(NamedTuple):
    name: str
    precision: str  # optim.precision: fp32 | bf16
    channels_last: bool  # optim.channels_last
    compile: bool  # optim.compile


MODES = (
    Mode("fp32", "fp32", False, False),
    Mode("bf16", "bf16", False, False),
    Mode("bf16+cl", "bf16", True, False),
    Mode("bf16+cl+compile", "bf16", True, True),
)
BF16_CL = MODES[2]  # what the loader, loop and ddp sections train with


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
             warmup_steps=3, loop_steps=20, measure_s=2.0, loader_measure_s=6.0, loader_workers=None,
             videos=12, video_frames=96, video_size=(240, 320), raft_pairs=64, raft_size=(240, 320))
SMOKE = Scale(smoke=True, width=0.125, crop_size=32, max_clip_len=8,
              batch=2, batch_start=2, batch_limit=2, loader_batch_limit=2,
              warmup_steps=1, loop_steps=2, measure_s=0.2, loader_measure_s=0.5, loader_workers=1,
              videos=3, video_frames=12, video_size=(48, 64), raft_pairs=2, raft_size=(128, 128))

# Seconds a row is allowed to start with: less left in its section's budget and it is skipped.
ROW_COST_S = {"train": 15.0, "compile": 75.0, "loader": 30.0, "flow": 10.0}


class BenchRow(NamedTuple):
    section: str  # train | loader | flow | loop
    what: str  # e.g. "TSN-R50"
    inputs: str  # C x T x H x W of one clip (flow: one frame pair)
    mode: str  # precision and layout, e.g. "bf16+cl"
    decode: str = ""  # loader rows: data.decode_device, where the JPEGs are decoded (cpu | cuda)
    batch: int | None = None
    rate: float | None = None  # clips/s (flow: pairs/s)
    unit: str = "clips/s"
    tflops: float | None = None  # achieved TFLOP/s
    peak_share: float | None = None  # of the bf16 dense peak
    wait_share: float | None = None  # loader rows: time blocked on the next batch / total
    cores: float | None = None  # loader rows: CPU seconds of this process and its loader processes / wall seconds
    memory_gib: float | None = None  # peak GPU memory allocated
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.note.startswith("error") or " BAD" in self.note


class SectionNotRun(Exception):
    """A section (or part of one) cannot run on this machine; the message is the one line that says
    why and what to do."""


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


class SectionRun(NamedTuple):
    """What every section's runner is handed."""
    scale: Scale
    device: torch.device
    budget_s: float  # the section's: its process is killed past it
    peak_tflops: float | None  # the GPU's dense bf16 peak; None: unknown
    wheels: Path  # pydantic wheels, unpacked where pydantic is missing (`experiment_parser`)
    out: Output


# ---- the config every trained row is set up by -------------------------------------------------------


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


@functools.cache
def experiment_parser(wheels_dir: Path) -> tuple[Callable, str]:
    """`orchestrator.config.parse_experiment` and where its pydantic comes from: installed, or the
    wheels in `wheels_dir` (`unpack_wheels`). Raises SectionNotRun with the one line to print otherwise."""
    python = "{}.{}".format(*sys.version_info[:2])  # the wheels must be built for the python that runs this
    bring = ("bring them: in the repository root run `python3 -m pip download --no-deps --only-binary=:all: "
             f"--python-version {python} --implementation cp --platform manylinux_2_28_x86_64 --platform "
             f"manylinux2014_x86_64 -d .whl {WHEELS_PACKAGES}`, keep .whl/ out of git and carry it with the working "
             "tree (python -m orchestrator.bench.gpu's docstring)")
    try:
        import pydantic
        origin = "installed"
    except ImportError:
        wheels = sorted(wheels_dir.glob("*.whl"))
        if not any(w.name.lower().startswith("pydantic-") for w in wheels):
            raise SectionNotRun(f"cannot run: orchestrator.config needs pydantic, which this python lacks, and "
                                f"{wheels_dir} holds no pydantic wheel; {bring}") from None
        unpack_wheels(wheels)
        try:
            import pydantic
        except (ImportError, SystemError) as err:
            raise SectionNotRun(f"cannot run: the wheels in {wheels_dir} do not import in python {python} "
                                f"({type(err).__name__}: {err}); {bring}") from None
        origin = f"from {wheels_dir.name}/"
    from orchestrator.config import parse_experiment
    from orchestrator.plan import plan

    def planned(raw: dict, *, source: str):
        """The one run an experiment file of `raw` launches, planned as `actionlab train` plans it."""
        (run,) = plan(parse_experiment(raw, source=source), kind="train").runs.values()
        return run

    return planned, f"pydantic {pydantic.VERSION} {origin}"


def config_parser(section: str, run: SectionRun) -> Callable:
    """`experiment_parser`'s parser, after a line saying where its pydantic came from."""
    parse, origin = experiment_parser(run.wheels)
    run.out.line(f"{section}: run planned by orchestrator.plan, config parsed by orchestrator.config ({origin})")
    return parse


def bench_config(parse: Callable, case: Case, scale: Scale, mode: Mode, *, batch: int | None = None,
                 loader_workers: int = 0, decode_device: str = "cpu", options: dict | None = None):
    """The run of `case` at its paper's setting (cut down by a smoke scale), training in `mode`: an
    experiment file's dict parsed and planned as `actionlab train` does it (fields not named keep their
    defaults; `batch` None: optim.batch_size's default, for rows that choose their batch themselves).
    Returns (plan.RunSpec: its config and input spec, the paper's class count)."""
    setting = PAPER_SETTINGS[case.architecture]
    data = {**setting.data, "loader_workers": loader_workers, "decode_device": decode_device}
    if scale.crop_size:
        data["crop_size"] = scale.crop_size
    if "clip_len" in data and scale.max_clip_len:
        data["clip_len"] = min(data["clip_len"], scale.max_clip_len)
    data["short_side"] = data["crop_size"] * 8 // 7  # TSN's 256 for 224 crops
    model = {**setting.model, "architecture": case.architecture, "modality": case.modality, "width": scale.width,
             "dropout": DROPOUT, "options": {**setting.model.get("options", {}), **(options or {})}}
    optim = {"precision": mode.precision, "channels_last": mode.channels_last, "compile": mode.compile, "epochs": 1,
             "warmup_epochs": 0.0, **({"batch_size": batch} if batch else {})}
    return parse({"data": data, "model": model, "optim": optim},
                 source=f"bench gpu: {case.label} {mode.name}"), setting.num_classes


def train_flops_per_clip(cfg, spec: InputSpec, num_classes: int) -> int:
    """3 x the forward FLOPs of one clip (backward ~ 2 x forward), counted on the meta device."""
    with torch.device("meta"):
        model = build_model(cfg.model.architecture, num_classes=num_classes, **spec.builder_kwargs)
        inputs = example_input(spec)
    return 3 * 2 * count_macs(model, inputs)


def _shape(spec: InputSpec) -> str:
    return " + ".join("x".join(map(str, shape)) for shape in spec.shapes.values())


def one_worker_step(batch: int) -> StepBatch:
    """A step of `batch` clips on one worker, no accumulation (what setup_worker builds for a world of 1)."""
    return step_batch(batch_size=batch, max_workers=1, world=1, on_resize="keep_global_batch")


def _lr(cfg) -> Callable[[int], float]:
    return lambda clip: cfg.optim.lr  # train_one_epoch's lr_at: the schedule costs nothing to time


# ---- the loop's step, timed (the train rows) -----------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


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


def bench_train(parse: Callable, case: Case, mode: Mode, scale: Scale, device: torch.device, *,
                batch: int | None = None, peak_tflops: float | None = None) -> BenchRow:
    """clips/s of `loop.train_step` training `case` in `mode` on uint8 batches already on the device.
    `batch`: start there (halved on OOM); None: probe the GPU's memory (or the scale's fixed batch)."""
    run, num_classes = bench_config(parse, case, scale, mode)
    cfg, spec = run.config, run.inputs
    row = BenchRow("train", case.label, _shape(spec), mode.name)
    torch.manual_seed(0)
    model, optimizer, scaler = loop.build_trainable(cfg, num_classes=num_classes, device=device)
    model.train()  # as train_one_epoch does first (partial_bn's norms go to eval there)

    def step(clips: dict) -> None:
        loop.train_step(model, [clips], optimizer, scaler, cfg, device, one_worker_step(len(clips["label"])))

    def peak_of_one_step(b: int) -> int | None:
        """Peak memory of one step at batch b, or None when it ran out of memory."""
        torch.cuda.reset_peak_memory_stats(device)
        peak = None
        try:
            step(synthetic_batch(spec, num_classes, b, device=device))
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device)
        except torch.cuda.OutOfMemoryError:
            pass  # freed below, once the exception (and the frames holding the activations) is gone
        _drop_grads(model)
        _free(device)
        return peak

    if batch is None and scale.batch is not None:
        batch = scale.batch
    if batch is None:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.backends.cudnn.benchmark = False  # autotune once, at the batch found, not at every probe
        try:
            batch = probe_batch(peak_of_one_step, start=scale.batch_start, limit=scale.batch_limit,
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
            clips = synthetic_batch(spec, num_classes, batch, device=device)
            seconds, first_s = time_steps(lambda: step(clips), warmup=scale.warmup_steps, measure_s=scale.measure_s,
                                          device=device)
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        notes.append(f"OOM at batch {batch}")  # freed here, once the exception is gone
        clips = None
        _drop_grads(model)
        _free(device)
        batch //= 2
    if mode.compile:
        notes.append(f"compile {first_s:.0f} s")
    rate = batch / seconds
    tflops = rate * train_flops_per_clip(cfg, spec, num_classes) / 1e12
    return row._replace(batch=batch, rate=rate, tflops=tflops, memory_gib=_peak_gib(device), note="; ".join(notes),
                        peak_share=tflops / peak_tflops if peak_tflops else None)


# ---- the run's data path into the loop (the loader rows) ----------------------------------------------


def write_prepared_videos(root: Path, scale: Scale) -> list[Path]:
    """`scale.videos` JPEG frame folders (`<root>/v<i>/img_00001.jpg`, ...), as `actionlab data prepare`
    writes them: moving gradients plus noise (they compress like footage, not like flat colour)."""
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


def for_at_least(batches, *, steps: int, seconds: float):
    """`batches` until `steps` of them were handed out and `seconds` have passed since the first."""
    start = time.perf_counter()
    for n, batch in enumerate(batches, 1):
        yield batch
        if n >= steps and time.perf_counter() - start >= seconds:
            return


PROC = Path("/proc")  # Linux's process table: the GPU image has no psutil


def tree_cpu_seconds(pid: int | None = None) -> float | None:
    """CPU seconds (user + system) used so far by process `pid` (default: this one), every thread of it
    and every process below it still running, plus what the children each of them reaped used (the
    cutime and cstime of /proc/PID/stat): the difference of two readings is the tree's CPU in between,
    loader processes that exit in between included. None where /proc cannot be read (not Linux).
    """
    pid = os.getpid() if pid is None else pid
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        entries = [entry for entry in os.listdir(PROC) if entry.isdigit()]
    except (OSError, ValueError, AttributeError):
        return None
    parent, used = {}, {}
    for entry in entries:
        try:
            text = (PROC / entry / "stat").read_text()
        except OSError:  # it exited since the listing
            continue
        fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
        parent[int(entry)] = int(fields[1])  # field 4, ppid
        used[int(entry)] = sum(int(f) for f in fields[11:15])  # fields 14-17: utime stime cutime cstime
    if pid not in used:
        return None
    children: dict[int, list[int]] = {}
    for child, ppid in parent.items():
        children.setdefault(ppid, []).append(child)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += used[p]
        todo.extend(children.get(p, []))
    return total / ticks


def bench_loader(parse: Callable, case: Case, scale: Scale, device: torch.device, *, folders: list[Path], batch: int,
                 decode_device: str = "cpu", peak_tflops: float | None = None) -> BenchRow:
    """clips/s, data-wait share and CPU cores busy of `case` trained as a run trains it: the run's
    Dataset (`build_dataset`) and DataLoader (`loop.make_loader`, persistent processes) over JPEG frame
    folders, into `loop.train_one_epoch` in bf16 + channels_last.

    decode_device: data.decode_device. "cpu": the loader processes decode and crop; "cuda": they read
    the JPEG files' bytes and draw the crop, and `make_loader`'s DeviceDecoding decodes and crops each
    batch on `device` (nvJPEG on a GPU; on the CPU device of a smoke run, decode_jpeg on the CPU in this
    process: the same code path, the CPU's figures).
    """
    from orchestrator.data.annotations import VideoRecord
    from orchestrator.data.dataset import build_dataset

    workers = scale.loader_workers or default_loader_workers()
    if decode_device == "cuda":  # they only read bytes: the target asks for as few
        workers = min(workers, GPU_DECODE_LOADER_WORKERS)
    run, num_classes = bench_config(parse, case, scale, BF16_CL, batch=batch, loader_workers=workers,
                                    decode_device=decode_device)
    cfg, spec = run.config, run.inputs
    height, width = scale.video_size
    where = {"cpu": "decoded by the loader workers",
             "cuda": f"bytes only from the loader workers, decoded on {device.type}"}[decode_device]
    row = BenchRow("loader", case.label, _shape(spec), BF16_CL.name, decode=decode_device, batch=batch,
                   note=f"{workers} loader workers, {len(folders)} JPEG frame folders {width}x{height}, {where}")
    videos = [VideoRecord(folder, i % num_classes, folder.name) for i, folder in enumerate(folders)]
    steps_at_most = 100_000 // batch + 64
    dataset = build_dataset(cfg, [videos[i % len(videos)] for i in range(batch * steps_at_most)], train=True)
    if dataset[0] is None:
        raise RuntimeError(f"VideoDataset could not read {videos[0].path} (its warning says why)")
    sb = one_worker_step(batch)
    loader = loop.make_loader(dataset, EpochBatches(len(dataset), seed=cfg.seed, sb=sb, rank=0), cfg,
                              num_workers=workers, device=device, persistent=True)
    torch.manual_seed(cfg.seed)
    model, optimizer, scaler = loop.build_trainable(cfg, num_classes=num_classes, device=device)
    batches = iter(loader)
    try:
        # Each loader process builds whole batches: warm up over one round of them (the first fill of
        # the queue), then time at least another round and at least loader_measure_s. Decoding on the
        # device, they only read bytes, far ahead of this process, which decodes: warm-up steps suffice.
        rounds = max(scale.warmup_steps, workers) if decode_device == "cpu" else scale.warmup_steps
        loop.train_one_epoch(model, itertools.islice(batches, rounds), optimizer, scaler, cfg, device, sb=sb,
                             lr_at=_lr(cfg))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cpu_s, start = tree_cpu_seconds(), time.perf_counter()
        stats = loop.train_one_epoch(model, for_at_least(batches, steps=rounds, seconds=scale.loader_measure_s),
                                     optimizer, scaler, cfg, device, sb=sb, lr_at=_lr(cfg))
        wall_s, cpu_end = time.perf_counter() - start, tree_cpu_seconds()
    finally:
        del batches, loader  # ends the loader processes
    rate = stats["seen"] / stats["seconds"]
    tflops = rate * train_flops_per_clip(cfg, spec, num_classes) / 1e12
    note = row.note + (f"; {stats['skipped']} clips skipped" if stats["skipped"] else "")
    return row._replace(rate=rate, tflops=tflops, wait_share=stats["data_wait_s"] / stats["seconds"], note=note,
                        cores=None if cpu_s is None or cpu_end is None else (cpu_end - cpu_s) / wall_s,
                        peak_share=tflops / peak_tflops if peak_tflops else None, memory_gib=_peak_gib(device))


# ---- RAFT-small ---------------------------------------------------------------------------------


def bench_raft(scale: Scale, device: torch.device, *, tmp: Path) -> BenchRow:
    """Frame pairs per second of `compute_flow(method="raft")` with a random-init RAFT-small."""
    from torchvision.models.optical_flow import raft_small

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
    return row._replace(rate=scale.raft_pairs / seconds, memory_gib=_peak_gib(device))


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


def measure_rows(scale: Scale, device: torch.device, *, parse: Callable | None,
                 sections: tuple[str, ...] = ("train", "loader", "flow"), budget_s: float = math.inf,
                 peak_tflops: float | None = None, emit: Callable[[BenchRow], None] | None = None) -> list[BenchRow]:
    """The rows of `sections` (train, loader, flow), each handed to `emit` the moment it is measured.
    `parse`: `experiment_parser`'s (train and loader rows need it).

    Run order: bf16 and bf16+cl of every model (bf16 sizes the batch of the others; the pair answers
    channels_last), then fp32, the loader (per case: JPEGs decoded by the loader processes, then on
    the device), RAFT, and the compile rows last. A row that would start
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
        row = bench_train(parse, case, mode, scale, device, batch=batch, peak_tflops=peak_tflops)
        if mode.name == "bf16" and row.batch:
            bf16_batch[case] = row.batch
        return row

    def loader(case: Case, decode_device: str) -> BenchRow:
        if not folders:
            folders.extend(write_prepared_videos(tmp / "videos", scale))
        batch = min(bf16_batch.get(case) or scale.batch_start, scale.loader_batch_limit)
        return bench_loader(parse, case, scale, device, folders=folders, batch=batch, decode_device=decode_device,
                            peak_tflops=peak_tflops)

    def placeholder(section: str, case: Case, mode: Mode) -> BenchRow:  # what a skipped or failed row shows
        try:
            inputs = _shape(bench_config(parse, case, scale, mode)[0].inputs)
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
                for decode_device in LOADER_DECODES:
                    attempt("loader", placeholder("loader", case, BF16_CL)._replace(decode=decode_device),
                            lambda: loader(case, decode_device))
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


TABLE_HEADER = (f"{'section':<7} {'model':<11} {'input CxTxHxW':<15} {'mode':<16} {'decode':<6} {'batch':>5} "
                f"{'throughput':>15} {'TFLOP/s':>8} {'peak':>5} {'wait':>5} {'cores':>5} {'GiB':>6}  note")


def format_row(r: BenchRow) -> str:
    """One line of the table, under TABLE_HEADER."""
    rate = f"{r.rate:.1f} {r.unit}" if r.rate is not None else "-"
    return (f"{r.section:<7} {r.what:<11} {r.inputs:<15} {r.mode:<16} {r.decode or '-':<6} {_cell(r.batch, 'd'):>5} "
            f"{rate:>15} {_cell(r.tflops, '.1f'):>8} {_percent(r.peak_share):>5} {_percent(r.wait_share):>5} "
            f"{_cell(r.cores, '.1f'):>5} {_cell(r.memory_gib, '.1f'):>6}  {r.note}").rstrip()


def table_legend(section: str, scale: Scale, peak_tflops: float | None) -> list[str]:
    """How to read a section's rows: printed before them, so that a killed section keeps it."""
    peak = f"{peak_tflops:.0f} TFLOP/s" if peak_tflops else "unknown: --peak-tflops"
    legend = {
        "train": [
            "train: loop.train_step (normalise, autocast forward, cross-entropy, backward, grad clip, SGD + "
            "momentum) on uint8 batches already on the device; cl = optim.channels_last",
            (f"batch: {scale.batch} (smoke)" if scale.batch else
             f"batch: doubled from {scale.batch_start} while it fits in memory (at most {scale.batch_limit}); cl "
             "and compile at bf16's, fp32 halved from bf16's on OOM") + "; GiB: peak allocated",
            "TFLOP/s = clips/s x 3 x forward FLOPs per clip (as `actionlab models --summary`); peak: share of the "
            f"bf16 dense peak ({peak}); fp32 = PyTorch defaults (cuDNN may use TF32)",
        ],
        "loader": ["loader: JPEG frame folders -> data.build_dataset -> loop.make_loader -> loop.train_one_epoch, "
                   f"bf16+cl; batch: bf16's train batch, at most {scale.loader_batch_limit}; wait: the loop's "
                   "data_wait_s / its seconds",
                   "decode: data.decode_device, cpu (the loader processes decode and crop) or cuda (they read the "
                   "JPEG bytes, the training process decodes and crops each batch on its device"
                   + (": the CPU here, no CUDA)" if scale.smoke else ")") + "; cores: CPU seconds of the "
                   "training process and its loader processes over the timed epoch / its wall seconds (/proc)"],
        "flow": ["flow: RAFT-small through flow.compute_flow on frame pairs, random weights"],
        "loop": ["loop: orchestrator.training.loop.train_one_epoch over pinned uint8 batches (collate_skip_bad's "
                 "dicts), then score_shard and a save_state / load_state round trip; warm-up: the first epoch's "
                 "seconds (cuDNN autotuning included); a check that fails reads BAD"],
    }[section]
    return legend + [TABLE_HEADER, "-" * len(TABLE_HEADER)]


# ---- what the rows say (the parent's summary) ---------------------------------------------------------


def read_rows(rows_file: Path) -> list[BenchRow]:
    if not rows_file.exists():
        return []
    return [BenchRow(**json.loads(line)) for line in rows_file.read_text().splitlines() if line.strip()]


def _best(rows: list[BenchRow], pick: Callable[[BenchRow], bool], metric: str) -> BenchRow | None:
    found = [r for r in rows if pick(r) and getattr(r, metric) is not None]
    return max(found, key=lambda r: getattr(r, metric)) if found else None


def target_lines(rows: list[BenchRow]) -> list[str]:
    """Each H200 target (issues 9 and 20) beside the row that answers it (the best bf16 row; every loader row; the
    TSN-R50 loader row decoding on the GPU)."""
    def verdict(text: str, row: BenchRow | None, metric: str, threshold: float, at_most: bool = False) -> str:
        if row is None:
            return f"{text}: not measured"
        value = getattr(row, metric)
        shown = f"{100 * value:.0f}%" if metric.endswith("share") else f"{value:.0f}"
        met = value <= threshold if at_most else value >= threshold
        decode = f" decode {row.decode}" if row.decode else ""
        return f"{text}: {shown} ({row.what} {row.mode}{decode}, {'met' if met else 'missed'})"

    tsn = _best(rows, lambda r: r.section == "train" and r.what == "TSN-R50" and r.mode.startswith("bf16"), "rate")
    i3d = _best(rows, lambda r: r.section == "train" and r.what.startswith("I3D") and r.mode.startswith("bf16"),
                "peak_share")
    loaders = [r for r in rows if r.section == "loader" and r.wait_share is not None] or [None]
    tsn_gpu_decode = _best(rows, lambda r: r.section == "loader" and r.what == "TSN-R50" and r.decode == "cuda",
                           "rate")
    raft = _best(rows, lambda r: r.section == "flow", "rate")
    return ([verdict("TSN-R50 bf16 loop step >= 1000 clips/s", tsn, "rate", 1000.0),
             verdict("I3D >= 40% of bf16 peak", i3d, "peak_share", 0.40),
             verdict(f"TSN-R50 end to end from frames, GPU decode, <= {GPU_DECODE_LOADER_WORKERS} loader workers, "
                     ">= 1000 clips/s", tsn_gpu_decode, "rate", 1000.0)]
            + [verdict("data wait <= 10%", r, "wait_share", 0.10, at_most=True) for r in loaders]
            + [verdict("RAFT-small >= 100 pairs/s", raft, "rate", 100.0)])


def loader_decode_line(rows: list[BenchRow]) -> str:
    """Per loader case, the row with data.decode_device cpu beside the one with cuda: clips/s, data wait
    and CPU cores busy."""
    by = {(r.what, r.decode): r for r in rows if r.section == "loader" and r.rate is not None}
    cases = []
    for what in dict.fromkeys(what for what, _ in by):
        pair = [by.get((what, decode)) for decode in LOADER_DECODES]
        cases.append(f"{what} " + " -> ".join(
            "not measured" if r is None else
            f"{r.rate:.0f} clips/s, wait {_percent(r.wait_share)}, {_cell(r.cores, '.1f')} cores" for r in pair))
    return f"loader, decode {' -> '.join(LOADER_DECODES)}: " + ("; ".join(cases) or "not measured")


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


def rows_summary(rows_file: Path, *, smoke: bool) -> list[str]:
    """channels_last per architecture (train rows), decode cpu beside cuda per loader case (loader rows)
    and, on a GPU, the targets beside their rows."""
    rows = read_rows(rows_file)
    lines = []
    if any(r.section == "train" for r in rows):
        lines.append(channels_last_line(rows) + (" [smoke: CPU figures, no verdict]" if smoke else ""))
    if any(r.section == "loader" for r in rows):
        lines.append(loader_decode_line(rows) + (" [smoke: decoded on the CPU]" if smoke else ""))
    if not smoke:
        lines.append("targets (reported, not asserted): " + "; ".join(target_lines(rows)))
    return lines


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


def run_facts(run: SectionRun) -> int:
    """The machine first (nothing here can fail), then the layer timings. Returns the failed lines."""
    for line in machine_facts(run.scale, run.device):
        run.out.line(f"facts {line}")
    if run.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the loop
    failed = 0
    for measure in (lambda: [bf16_matmul(run.scale, run.device)], lambda: i3d_first_layers(run.scale, run.device)):
        try:
            lines = measure()
        except Exception as err:  # noqa: BLE001
            lines = [f"error: {type(err).__name__}: {str(err).strip()[:160]}"]
        for line in lines:
            failed += " error" in line or line.startswith("error")
            run.out.line(f"facts {line}")
        _free(run.device)
    return failed


# ---- ddp: DistributedDataParallel as Ray Train builds it, on one rank -------------------------------


def ddp_steps(parse: Callable, scale: Scale, device: torch.device, *, partial_bn: bool) -> float:
    """TSN-R50 (its paper's shape; smoke: tiny) with `partial_bn`, built by `loop.build_trainable` and
    wrapped as ray.train.torch.prepare_model wraps it, trained DDP_STEPS steps by `loop.train_one_epoch`
    (model.train() first: partial_bn's norms go to eval there) under model.join() (uneven inputs
    allowed). Returns the mean loss."""
    from torch.nn.parallel import DistributedDataParallel

    run, num_classes = bench_config(parse, CASES[0], scale, BF16_CL, options={"partial_bn": partial_bn})
    cfg = run.config

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        if device.type == "cuda":
            return DistributedDataParallel(model.to(device), device_ids=[device], output_device=device)
        return DistributedDataParallel(model)

    torch.manual_seed(0)
    model, optimizer, scaler = loop.build_trainable(cfg, num_classes=num_classes, device=device, wrap_model=wrap)
    batch = scale.batch or 8
    batches = [synthetic_batch(run.inputs, num_classes, batch, device=device) for _ in range(DDP_STEPS)]
    with model.join():
        stats = loop.train_one_epoch(model, batches, optimizer, scaler, cfg, device, sb=one_worker_step(batch),
                                     lr_at=_lr(cfg))
    return stats["loss_sum"] / stats["seen"]


def loop_collectives(device: torch.device) -> str:
    """The loop's three collectives on one rank: all_reduce of float64 sums (_sum_across_workers),
    all_gather_object of a ShardScores (evaluate), broadcast_object_list (_keep_if_best)."""
    import torch.distributed as dist

    sums = torch.tensor([1.0, 2.0], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    shard = loop.ShardScores(torch.arange(3), torch.arange(3), torch.zeros(3, 4), 1, 3, 0)
    gathered = [None]
    dist.all_gather_object(gathered, shard)
    score = [0.5]
    dist.broadcast_object_list(score, src=0)
    ok = sums.tolist() == [1.0, 2.0] and torch.equal(gathered[0].video_scores, shard.video_scores) and score == [0.5]
    return (f"all_reduce float64 {sums.tolist()}, all_gather_object {type(gathered[0]).__name__}, "
            f"broadcast_object_list {score}: {'OK' if ok else 'BAD'}")


def run_ddp(run: SectionRun) -> int:
    """A one-rank process group (NCCL on CUDA, gloo without), TSN under DDP without and with partial_bn
    (one line instead where the config cannot be built), the loop's collectives. Returns the failed checks."""
    import torch.distributed as dist

    device = run.device
    backend = "nccl" if device.type == "cuda" else "gloo"
    checks = []
    try:
        parse = config_parser("ddp", run)
        checks = [(f"TSN partial_bn={partial_bn} DistributedDataParallel + join()",
                   lambda partial_bn=partial_bn: f"{DDP_STEPS} steps OK (loss "
                                                 f"{ddp_steps(parse, run.scale, device, partial_bn=partial_bn):.3f})")
                  for partial_bn in (False, True)]
    except SectionNotRun as why:
        run.out.line(f"ddp {backend} TSN DistributedDataParallel steps: {why}")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")  # one rank on one machine: loopback (no network there)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if device.type == "cuda":
        torch.cuda.set_device(device)  # as Ray Train does before the loop runs
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    failed = 0
    try:
        for label, check in checks + [("collectives", lambda: loop_collectives(device))]:
            try:
                result = check()
            except Exception as err:  # noqa: BLE001 (each check reports on its own)
                lines = str(err).strip().splitlines()
                result = f"FAILED {type(err).__name__}: {lines[0][:200] if lines else ''}"
            failed += result.startswith("FAILED") or result.endswith("BAD")
            run.out.line(f"ddp {backend} {label}: {result}")
            _free(device)
    finally:
        dist.destroy_process_group()
    return failed


# ---- loop: the training loop's own functions ---------------------------------------------------------


def resume_round_trip(cfg, model, optimizer, scaler, device: torch.device) -> str:
    """loop.save_state, the weights changed, loop.load_state: the weights come back, the epoch and history
    too, and the momentum stays on the weights' device. Returns "resume OK" or what went wrong."""
    w = loop.Worker(cfg=cfg, rank=0, world=1, device=device, model=model, optimizer=optimizer, scaler=scaler,
                    step=one_worker_step(cfg.optim.batch_size), train_set=None, train_batches=None,
                    train_loader=None, num_workers=0, splits=None, val_set=None, test_set=None,
                    unlisted={"train": 0, "test": 0})
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
    batch = scale.batch or LOOP_BATCH[case.architecture]
    run, num_classes = bench_config(parse, case, scale, BF16_CL, batch=batch)
    cfg, spec = run.config, run.inputs
    row = BenchRow("loop", case.label, _shape(spec), BF16_CL.name, batch=batch)
    torch.manual_seed(cfg.seed)
    model, optimizer, scaler = loop.build_trainable(cfg, num_classes=num_classes, device=device)
    sb = one_worker_step(batch)
    pinned = [synthetic_batch(spec, num_classes, batch, device=torch.device("cpu"), pin=device.type == "cuda")
              for _ in range(2)]  # what DataLoader(pin_memory=True) hands the loop

    def epoch(steps: int) -> dict:
        return loop.train_one_epoch(model, [pinned[i % 2] for i in range(steps)], optimizer, scaler, cfg, device,
                                    sb=sb, lr_at=_lr(cfg))

    start = time.perf_counter()
    epoch(scale.warmup_steps)
    first_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = epoch(scale.loop_steps)
    rate = stats["seen"] / stats["seconds"]
    memory = _peak_gib(device)
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
    tflops = rate * train_flops_per_clip(cfg, spec, num_classes) / 1e12
    return row._replace(rate=rate, tflops=tflops, peak_share=tflops / peak_tflops if peak_tflops else None,
                        memory_gib=memory, note="; ".join(checks))


def run_loop(run: SectionRun) -> int:
    """bench_loop on LOOP_CASES with the real ExperimentConfig. Returns the failed rows; raises
    SectionNotRun where the config cannot be built."""
    parse = config_parser("loop", run)
    for line in table_legend("loop", run.scale, run.peak_tflops):
        run.out.line(line)
    failed = 0
    for case in LOOP_CASES:
        blank = BenchRow("loop", case.label, "", BF16_CL.name)
        row = guarded(lambda: bench_loop(parse, case, run.scale, run.device, peak_tflops=run.peak_tflops), blank)
        _free(run.device)
        failed += row.failed
        run.out.row(row)
    return failed


# ---- one section in this process (what each child runs) ---------------------------------------------


def run_rows_section(section: str, run: SectionRun) -> int:
    """The train, loader or flow rows (`measure_rows`), under their legend. Returns the failed rows; raises
    SectionNotRun where train or loader cannot build their config."""
    parse = config_parser(section, run) if section in ("train", "loader") else None
    for line in table_legend(section, run.scale, run.peak_tflops):
        run.out.line(line)
    rows = measure_rows(run.scale, run.device, parse=parse, sections=(section,), budget_s=run.budget_s,
                        peak_tflops=run.peak_tflops, emit=run.out.row)
    return sum(row.failed for row in rows)


# Each section: SectionRun -> the number of its rows or checks that failed.
SECTION_RUNNERS: dict[str, Callable[[SectionRun], int]] = {
    "facts": run_facts,
    "ddp": run_ddp,
    "loop": run_loop,
    "train": functools.partial(run_rows_section, "train"),
    "loader": functools.partial(run_rows_section, "loader"),
    "flow": functools.partial(run_rows_section, "flow"),
}


def run_in_process(sections: tuple[str, ...], budgets: dict[str, float], *, smoke: bool, peak_tflops: float | None,
                   wheels: Path, rows_file: Path | None) -> int:
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
            failed = SECTION_RUNNERS[name](SectionRun(scale, device, budgets[name], peak, wheels, out))
            code = max(code, EXIT_ROWS_FAILED if failed else 0)
        except SectionNotRun as why:
            out.line(f"{name}: {why}")
            code = max(code, EXIT_NOT_RUN)
    return code
