"""`actionlab rehearse RECIPE.yaml`: a recipe run as written, at its real shapes, on N processes,
on a small data set in its own layout, before anyone spends a GPU hour on it.

    rehearse(recipe, workers, steps, width, out)
        load_experiment + preflight (the real ones) -> the runs: study variants, first seed and data set
        plan_rehearsal -> each run's config with only what must change, and why (printed):
            model.width (and pretrained weights, which fit the full width only), the data paths (a
            generated set in the recipe's layout, sized for `steps` + an odd last batch per worker),
            TV-L1 / RAFT flow -> Farneback (speed only), scaling.num_workers / use_gpu
        write_layout (orchestrator/data/layouts.py) ; flow of every listed video for flow runs
        per run: torch.multiprocessing.spawn(_rank_main) x workers, gloo DDP, the training loop's own
            functions (orchestrator/training/loop.py), phases timed on rank 0 between barriers:
                setup       setup_worker (data, model -> DDP, optimiser, schedule)
                epoch 0     run_epoch: train (drop_last), a val pass when eval_every says so
                save        save_state (rank 0)
                resume      a fresh setup_worker + load_state, as a restarted worker group does
                last epoch  run_epoch(epochs - 1): train, the val list and the test list at the
                            recipe's full views, in loader batches of eval_videos_per_batch videos
                outputs     write_run_outputs (rank 0): model.pt, scores.npz, val_scores.npz
            host memory (PSS of every process of the run, loader workers included) sampled here
        late fusion of the recipe's stream pairs (results.fuse_run_outputs, as `ablate` does)
        -> one table: phase, wall s, peak host memory, input bytes per batch at the recipe's clip
           size, and the device memory a training step would need at full width (predicted on the
           meta device: `predict_step_bytes`)

Nothing is tracked in MLflow and nothing is downloaded; everything is written under `out`.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import socket
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

from orchestrator.errors import UserError

FAST_FLOW = "farneback"  # TV-L1 runs ~0.6 frame/s on a CPU core, RAFT needs a GPU: same cache, other numbers
FRAME_SIZE = {"ucf101": (240, 320), "hmdb51": (240, 320), "kinetics": (256, 340), "csv": (240, 320)}  # (H, W)
NUM_FRAMES = 32  # per generated video; dense 64-frame clips loop (loop_short), as on short real videos
REHEARSAL_MARKER = ".rehearsal"  # in <out>/data: rehearse wrote this folder (and may delete it)
MEMORY_SAMPLE_S = 0.5  # reading every process's smaps costs ~0.2 core at 0.2 s here


class Change(NamedTuple):
    field: str  # dotted config field
    recipe: object  # the recipe's value
    rehearsal: object  # the value rehearsed
    why: str


class Run(NamedTuple):
    """One rehearsed training run: a study variant (first seed, first data set) or the experiment."""
    label: str
    recipe: object  # ExperimentConfig as written
    config: object  # ExperimentConfig rehearsed


class Row(NamedTuple):
    run: str
    phase: str
    seconds: float
    peak_host_bytes: int  # PSS of every process of the run
    peak_rank_bytes: int  # PSS of the largest rank: its process, loader workers and decoders
    batch_bytes: int | None  # uint8 input of one loader batch at the recipe's clip size
    note: str = ""


def rehearse(cfg, *, workers: int = 2, steps: int = 2, width: float = 1 / 16, out: str | Path | None = None,
             variants: list[str] | None = None) -> list[Row]:
    """Rehearse the recipe `cfg` (an ExperimentConfig as loaded); print the plan, a row per phase as it
    ends, and the table. Returns the rows."""
    if workers < 1 or steps < 1 or not 0 < width <= 1:
        raise UserError(f"--workers and --steps must be >= 1 and --width in (0, 1], got {workers}, {steps}, {width}")
    out = Path(out or f"rehearsal_{cfg.name}").absolute()
    runs, changes = plan_rehearsal(cfg, workers=workers, steps=steps, width=width, out=out, variants=variants)
    print(f"rehearsing {cfg.source}: {', '.join(r.label for r in runs)} on {workers} gloo processes, in {out}")
    print("changed from the recipe (everything else is the recipe's own):")
    for c in changes:
        print(f"  {c.field}: {c.recipe!r} -> {c.rehearsal!r}  ({c.why})")
    rows = [write_data(runs, out, workers=workers, steps=steps)]
    _print_row(rows[-1])
    for run in runs:
        rows += rehearse_run(run, out, workers=workers)
    rows += fuse(cfg, runs, out)
    print(format_table(rows, runs))
    return rows


# --- the plan ---------------------------------------------------------------------------------

def plan_rehearsal(cfg, *, workers: int, steps: int, width: float, out: Path,
                   variants: list[str] | None) -> tuple[list[Run], list[Change]]:
    """Each run's rehearsed config, checked by the real preflight, and the changes made (one list:
    a change is the same for every run, with the recipe's value of the first run that has one)."""
    from orchestrator.config import input_spec, with_overrides
    from orchestrator.data.layouts import LAYOUT_PATHS, LAYOUTS
    from orchestrator.plan import plan
    from orchestrator.preflight import check_model

    d = cfg.data
    if d.dataset not in LAYOUTS:
        raise UserError(f"{cfg.source}: data.dataset {d.dataset!r}: rehearse writes {', '.join(LAYOUTS)} layouts")
    planned = plan(cfg, kind="study" if cfg.study else "train").runs.values()  # what `ablate` / `train` would run
    first = next(iter(planned))
    picked = {r.variant or r.label: r.config for r in planned if r.dataset == first.dataset and r.seed == first.seed}
    if variants:
        if unknown := [v for v in variants if v not in picked]:
            raise UserError(f"--variant {unknown[0]}: {cfg.source} has {', '.join(picked)}")
        picked = {k: v for k, v in picked.items() if k in variants}
    layout = LAYOUT_PATHS[d.dataset](out / "data")
    fixed = {
        "model.width": (width, "the only size change: every step runs at the recipe's shapes, thinner"),
        "model.pretrained": (None, "torchvision's weights fit the full width only; nothing is downloaded"),
        "model.init_checkpoint": (None, "each run trains from scratch here"),
        "data.root": (str(layout.root), f"a generated {d.dataset} set in its own layout, fewer videos"),
        "data.annotations": (str(layout.annotations), "its annotation files"),
        "data.test_annotations": (layout.test_annotations and str(layout.test_annotations), "its test list"),
        "data.synth": (False, "the generated set is there"),
        "data.flow_method": (FAST_FLOW, "TV-L1 runs ~0.6 frame/s on a CPU core, RAFT needs a GPU; same cache"),
        "data.flow_dir": (None, "beside the generated videos"),
        "scaling.num_workers": (workers, "gloo DDP processes on this machine"),
        "scaling.use_gpu": (False, "CPU processes"),
        "data.decode_device": ("cpu", "no GPU to decode on: JPEGs decoded and clips cropped in the loader processes"),
        "scaling.storage_path": (str(out / "runs"), "run outputs under --out"),
    }
    changes: dict[str, Change] = {}
    runs = []
    for label, recipe_cfg in picked.items():
        rehearsed = with_overrides(recipe_cfg, {field: value for field, (value, _) in fixed.items()},
                                   where=f"{cfg.source}: rehearsal of {label}")
        check_model(rehearsed, input_spec(rehearsed))  # before any data is written
        for field, (value, why) in fixed.items():
            if (before := _get(recipe_cfg, field)) != value and field not in changes:
                changes[field] = Change(field, before, value, why)
        runs.append(Run(label, recipe_cfg, rehearsed))
    return runs, list(changes.values())


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def layout_sizes(cfg, *, workers: int, steps: int) -> tuple[int, int]:
    """(train, test) videos per class of a four-class layout: after the val list is carved, each
    worker's share is `steps` full batches and a partial last one (dropped in training; the carve's
    rounding sets its size); each worker scores at least one full evaluation batch."""
    from orchestrator.training.loop import eval_videos_per_batch

    train_total = workers * (steps * cfg.optim.batch_size + 1)
    held = cfg.data.val.fraction if cfg.data.val and cfg.data.dataset != "kinetics" else 0.0
    train = math.ceil(train_total / 4 / (1 - held)) + 1  # + 1: the carve rounds per class or group
    test = math.ceil((workers * eval_videos_per_batch(cfg) + 1) / 4)
    return train, test


def write_data(runs: list[Run], out: Path, *, workers: int, steps: int) -> Row:
    """The recipe's layout (sized for the largest batch of its runs) and, for flow runs, the flow of
    every listed video; kept between rehearsals of the same recipe and sizes (`out` is reused)."""
    from orchestrator.data.layouts import write_layout

    cfg = runs[0].config  # every run reads the same data set
    sizes = max(layout_sizes(r.config, workers=workers, steps=steps) for r in runs)
    folder = Path(cfg.data.root).parent
    start = time.perf_counter()
    done = folder / f"{REHEARSAL_MARKER}-{sizes[0]}-{sizes[1]}"  # complete, at these sizes
    if not done.exists():
        if folder.exists():
            if not (folder / REHEARSAL_MARKER).exists():  # never delete what a rehearsal did not write
                raise UserError(f"--out: {folder} exists and is not a rehearsal's data; choose another --out")
            import shutil

            shutil.rmtree(folder)  # this rehearsal's own data: other sizes, or left half-written
        folder.mkdir(parents=True)
        (folder / REHEARSAL_MARKER).touch()
        height, width = FRAME_SIZE[cfg.data.dataset]
        write_layout(cfg.data.dataset, folder, train_per_class=sizes[0], test_per_class=sizes[1], height=height,
                     width=width, num_frames=NUM_FRAMES)
        done.touch()
    for run in runs:
        if "flow" in run.config.model.modality:
            _flow(run.config)
    return Row("data", "write layout + flow", time.perf_counter() - start, 0, 0, None,
               f"{cfg.data.dataset}: {sizes[0]} train + {sizes[1]} test videos per class, {NUM_FRAMES} frames "
               f"{FRAME_SIZE[cfg.data.dataset][1]}x{FRAME_SIZE[cfg.data.dataset][0]}")


def _flow(cfg) -> None:
    """Flow of every listed video into the run's cache, one process per core."""
    from orchestrator.data.annotations import read_all_subsets
    from orchestrator.data.flow import extract_flow

    d = cfg.data
    records = read_all_subsets(d.dataset, root=d.root, annotations=d.annotations, split=d.split,
                               test_annotations=d.test_annotations).records
    kwargs = dict(flow_dir=d.resolved_flow_dir(), method=d.flow_method, bound=d.flow_bound, fmt=d.flow_format,
                  warp=d.flow_warp, use_ray=False, progress=False)
    extract_flow(records[:1], **kwargs)  # writes the manifest once, before the processes share the cache
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        for summary in pool.map(_extract, [(records[i::cores], kwargs) for i in range(cores)]):
            if summary.failed:
                raise UserError(f"flow: {summary.describe()}")


def _extract(job):
    from orchestrator.data.flow import extract_flow

    records, kwargs = job
    return extract_flow(records, **kwargs)


# --- one run on N processes --------------------------------------------------------------------

def rehearse_run(run: Run, out: Path, *, workers: int) -> list[Row]:
    """Spawn `workers` gloo ranks of the training loop; sample the run's host memory meanwhile."""
    import torch.multiprocessing as mp

    from orchestrator.plan import plan
    from orchestrator.preflight import preflight

    preflight(plan(run.config, kind="train"))
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    monitor = _MemoryMonitor()
    spawned = mp.spawn(_rank_main, args=(workers, _free_port(), run.label, run.config, out, events), nprocs=workers,
                       join=False)
    rows, errors = [], []
    batch_bytes = input_bytes(run.config)
    with monitor:
        while True:
            try:
                finished = spawned.join(timeout=0.2)
            except Exception as err:  # a rank failed: the others are stopped by spawn; say why in one line
                _drain(events, rows, errors, monitor, run, batch_bytes)
                where = errors[0] if errors else f"{type(err).__name__}"
                raise UserError(f"{run.recipe.source}: rehearsal of {run.label} failed: {where}") from None
            _drain(events, rows, errors, monitor, run, batch_bytes)
            if finished:
                break
    _drain(events, rows, errors, monitor, run, batch_bytes)
    return rows


def _drain(events, rows, errors, monitor, run: Run, batch_bytes: dict) -> None:
    """Turn the ranks' events into rows (printed as they end) and error lines."""
    import queue

    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        kind, *rest = event
        if kind == "start":
            monitor.reset()
        elif kind == "end":
            phase, seconds, note = rest
            rows.append(Row(run.label, phase, seconds, monitor.peak, monitor.peak_rank, batch_bytes.get(phase), note))
            _print_row(rows[-1])
        else:
            rank, phase, message = rest
            errors.append(f"rank {rank}, phase '{phase}': {message}")


def _rank_main(rank: int, world: int, port: int, label: str, cfg, out: Path, events) -> None:
    """One rank: the loop's own functions, phase by phase, each ended by a barrier."""
    import torch
    import torch.distributed as dist

    from orchestrator.training import loop

    # DataLoader workers fork from the training process, as they do in a Ray Train worker (a spawned
    # process inherits spawn as its default: each loader worker would re-import torch, ~370 MB and seconds)
    multiprocessing.set_start_method("fork", force=True)
    # the recipe's loader workers are meant for a GPU node's cores; torch warns on every loader here
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=10))
    cpu, name = torch.device("cpu"), "setup"
    ddp = torch.nn.parallel.DistributedDataParallel  # as ray.train.torch.prepare_model wraps it on CPU

    @contextlib.contextmanager
    def phase(title: str, note=lambda: ""):
        nonlocal name
        name = title
        if rank == 0:
            events.put(("start", title))
        start = time.perf_counter()
        yield
        dist.barrier()
        if rank == 0:
            events.put(("end", title, time.perf_counter() - start, note()))

    try:
        def setup():
            return loop.setup_worker(cfg, rank=rank, world=world, device=cpu, cpus=cfg.scaling.cpus_per_worker,
                                     wrap_model=ddp)

        with phase("setup", lambda: f"{len(w.train_set)} train / {len(w.selection_set)} val / "
                                    f"{len(w.test_set)} test videos; {w.num_workers} loader workers per rank"):
            w = setup()
        steps = len(w.train_loader) // w.step.accumulate
        with phase("epoch 0", lambda: f"{steps} steps x {w.step.global_clips} clips over {world} ranks; last "
                                      f"{len(w.train_set) - steps * w.step.global_clips} clips left out"):
            history = [loop.run_epoch(w, 0)[0]]
        state = out / "state" / label
        with phase("save"):
            if rank == 0:
                state.mkdir(parents=True, exist_ok=True)
                loop.save_state(w, state, at=loop.Progress(1), history=history)
        with phase("resume", lambda: "fresh worker, load_state"):
            w = setup()
            loop.load_state(w, state)
        last = w.schedule.epochs - 1  # optim.epochs, or derived from optim.iterations and this list
        with phase("last epoch", lambda: f"epoch {last}: val + test at {loop.views_per_test_video(cfg)} views per "
                                         f"video, {loop.eval_videos_per_batch(cfg)} video(s) per loader batch, "
                                         f"{cfg.optim.eval_batch_size} views per forward pass"):
            metrics, result = loop.run_epoch(w, last)
            history.append(metrics)
        from orchestrator.runs import run_output_dir

        with phase("outputs", lambda: f"test top-1 {100 * metrics.get('test/video_top1', float('nan')):.1f} % "
                                      "(random data)"):
            if rank == 0:
                loop.write_run_outputs(w, run_output_dir(cfg.scaling.storage_path, label), result, history)
    except BaseException as err:
        message = str(err).splitlines()[0] if str(err) else ""
        events.put(("error", rank, name, f"{type(err).__name__}: {message}"))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _MemoryMonitor:
    """Peak proportional set size (PSS: shared pages split between their processes), sampled every
    MEMORY_SAMPLE_S: of this process and all its children (`peak`), and of the largest rank, a
    spawned child with its loader workers and decoders (`peak_rank`); `reset` starts new peaks."""

    def __init__(self):
        self.peak = self.peak_rank = 0
        self._stop = threading.Event()

    def reset(self) -> None:
        self.peak, self.peak_rank = self._sample()

    def _sample(self) -> tuple[int, int]:
        import psutil

        def pss(procs) -> int:
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_full_info().pss
            return total

        me = psutil.Process()
        ranks = [pss([child, *child.children(recursive=True)]) for child in me.children()]
        return pss([me]) + sum(ranks), max(ranks, default=0)

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            total, rank = self._sample()
            self.peak, self.peak_rank = max(self.peak, total), max(self.peak_rank, rank)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- what the figures mean at full size -------------------------------------------------------

def input_bytes(cfg) -> dict[str, int]:
    """uint8 bytes of one loader batch at the recipe's clip size: a training batch (one view per
    video) and an evaluation batch (eval_videos_per_batch videos x every view), per phase."""
    from orchestrator.training.loop import eval_videos_per_batch, view_bytes, views_per_test_video

    train = cfg.optim.batch_size * view_bytes(cfg)
    evaluation = eval_videos_per_batch(cfg) * views_per_test_video(cfg) * view_bytes(cfg)
    return {"epoch 0": train, "last epoch": max(train, evaluation)}


def predict_step_bytes(cfg, *, num_classes: int) -> int:
    """Device memory of one training step of `cfg`'s model at its batch, predicted on the meta device:
    fp32 weights, gradients and SGD momentum (AdamW: two moments), plus every tensor autograd saves for
    backward in a bf16 forward pass (what autocast stores on a bf16 GPU), plus the batch as uint8 and
    bf16. A lower bound: cuDNN workspaces and the allocator's cache come on top."""
    import torch

    from models import build_model
    from orchestrator.inputs import example_input, input_spec
    from orchestrator.training.loop import view_bytes

    spec = input_spec(cfg)
    with torch.device("meta"):
        model = build_model(cfg.model.architecture, num_classes=num_classes,
                            **{**spec.builder_kwargs, "pretrained": None}).to(torch.bfloat16).train()
        x = example_input(spec, batch=cfg.optim.batch_size)
    x = {k: v.to(torch.bfloat16) for k, v in x.items()} if isinstance(x, dict) else x.to(torch.bfloat16)
    saved: dict[int, int] = {}

    def pack(tensor):  # a storage saved twice (a ReLU's output is the next conv's input) counts once
        storage = tensor.untyped_storage()
        saved[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    states = 2 if cfg.optim.optimizer == "adamw" else 1
    batch = view_bytes(cfg) * cfg.optim.batch_size * 3  # uint8 + bf16
    return 4 * params + 4 * trainable * (1 + states) + sum(saved.values()) + batch


# --- late fusion and the table ----------------------------------------------------------------

def fuse(cfg, runs: list[Run], out: Path) -> list[Row]:
    """The recipe's late fusions whose two streams were rehearsed, from their run outputs."""
    from orchestrator.late_fusion import fuse_run_outputs
    from orchestrator.runs import run_output_dir

    rows = []
    by_label = {r.label: r for r in runs}
    for name, spec in (cfg.study.late_fusion.items() if cfg.study else []):
        if not all(s in by_label for s in spec.streams):
            continue
        start = time.perf_counter()
        folders = [run_output_dir(by_label[s].config.scaling.storage_path, s) for s in spec.streams]
        fused = fuse_run_outputs(spec, folders, name=name)
        top1 = 100 * float((fused.scores.scores.argmax(1) == fused.scores.labels).mean())
        rows.append(Row(name, "late fusion", time.perf_counter() - start, 0, 0, None,
                        f"weight {fused.weight:.2f} {fused.mode} ({'chosen on val' if fused.choice else 'fixed'}); "
                        f"test top-1 {top1:.1f} % on {len(fused.scores.labels)} videos (random data)"))
        _print_row(rows[-1])
    return rows


def _gb(n: int | None) -> str:
    return "" if not n else f"{n / 1e9:.2f} GB"


def _print_row(row: Row) -> None:
    print(f"  [{row.run}] {row.phase}: {row.seconds:.1f} s" + (f", peak host {_gb(row.peak_host_bytes)} (largest "
                                                               f"rank {_gb(row.peak_rank_bytes)})"
                                                               if row.peak_host_bytes else "")
          + (f"; {row.note}" if row.note else ""), flush=True)


def format_table(rows: list[Row], runs: list[Run]) -> str:
    """Markdown: one row per phase, then each run's predicted device memory at full width."""
    lines = ["", "| Run | Phase | Wall (s) | Peak host memory (all) | largest rank | Input per batch (uint8) | Note |",
             "|---|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r.run} | {r.phase} | {r.seconds:.1f} | {_gb(r.peak_host_bytes)} | {_gb(r.peak_rank_bytes)} | "
              f"{_gb(r.batch_bytes)} | {r.note} |" for r in rows]
    lines += ["", "Device memory of one training step at full width (model.width as the recipe has it), "
                  "predicted on the meta device (weights, gradients, optimiser state, activations saved in bf16, "
                  "the batch; cuDNN workspaces and the allocator's cache come on top):", ""]
    for run in runs:
        classes = _num_classes(run.recipe)
        predicted = predict_step_bytes(run.recipe, num_classes=classes)
        lines.append(f"- {run.label}: {_gb(predicted)} per worker at batch {run.recipe.optim.batch_size} "
                     f"({run.recipe.model.architecture}, {run.recipe.model.modality}, {classes} classes)")
    return "\n".join(lines)


def _num_classes(cfg) -> int:
    """The recipe's class count, from its data set's name (the generated set has four)."""
    return {"ucf101": 101, "hmdb51": 51}.get(cfg.data.dataset, 400 if cfg.data.dataset == "kinetics" else 4)
