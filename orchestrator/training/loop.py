"""The per-worker training loop every Ray Train worker runs (Train V2 style), in pieces that run
without Ray too (tests/test_loop.py):

    train_loop_per_worker(loop_config)      <- TorchTrainer (orchestrator/training/driver.py)
        setup_worker: data (sampler -> Dataset (data.decoder) -> elastic.EpochBatches -> DataLoader or Ray Data
                      [-> device_decode.DeviceDecoding with data.decode_device: cuda]),
                      model (-> DDP), SGD/AdamW + warm-up/cosine ; load_state from get_checkpoint()
                      (at an epoch's end or mid-epoch, written at any world size)
        for each epoch: run_epoch (train_one_epoch: steps of elastic.StepBatch, each followed by
                        after_step: a preemption notice or scaling.checkpoint_every_steps -> save_state
                        -> ray.train.report ; evaluate the val list, data.val) ; save_state
                        -> ray.train.report (each node's first worker samples the node's CPU/memory/GPU
                        into MLflow meanwhile)
        last epoch: final_test (the test list, once, with the weights optim.keep keeps);
                    rank 0: write_run_outputs -> <storage_path>/scores/<run_id>/

Batches stay uint8 until they reach the device (4x less to copy); `prepare_inputs` normalises
there. Evaluation shards the test videos round-robin without padding (DistributedSampler would
repeat videos to even out ranks and count them twice) and gathers per-video scores on rank 0.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.data import BatchSampler, DataLoader

from orchestrator import tracking
from orchestrator.data.dataset import build_dataset
from orchestrator.errors import UserError
from orchestrator.inputs import input_spec
from orchestrator.runs import (HISTORY_FILE, MODEL_FILE, SCORES_FILE, VAL_SCORES_FILE, VideoScores, run_output_dir,
                               save_scores)
from orchestrator.training.elastic import (EpochBatches, Schedule, StepBatch, epoch_clips, schedule, schedule_step,
                                           step_batch)
from orchestrator.training.precision import PRECISION_NAMES, autocast_dtype, to_channels_last

if TYPE_CHECKING:  # the loop imports no pydantic: `actionlab bench gpu` runs it on machines without
    from orchestrator.config import ExperimentConfig

# uint8 bytes of an evaluation loader batch (at least one whole video). A loader process holds up to
# prefetch_factor (2) finished batches and builds the next from ~3x its bytes of decoded frames, so a
# GPU worker's 7 processes peak near 7 x 5 x this. I3D's 32 two-view 64 x 224 x 224 videos were 616 MB
# a batch: 11.6 GB for one rehearsed rank (`actionlab rehearse experiments/recipes/i3d_hmdb51.yaml`).
EVAL_LOADER_BATCH_BYTES = 128 * 2**20
STATE_FILE = "state.pt"  # model/optimiser/scaler/progress/RNG/history: everything to resume, nothing else

logger = logging.getLogger("actionlab.train")


def prepare_inputs(batch_inputs: dict, cfg: ExperimentConfig, device) -> tuple[torch.Tensor | dict, int]:
    """uint8 {modality: (B, V, C, T, H, W)} -> normalised float model input with views folded into B.

    Returns the input ((B*V, C, T, H, W), or a dict of them for rgb+flow) and V.
    """
    from orchestrator.data.transforms import normalize_clip

    out, views = {}, 1
    for modality, clip in batch_inputs.items():
        views = clip.shape[1]
        clip = rearrange(clip.to(device, non_blocking=True), "b v c t h w -> (b v) c t h w")
        if device.type == "cuda" and cfg.optim.channels_last:
            clip = clip.contiguous(memory_format=torch.channels_last_3d)
        if cfg.model.modality == "rgbdiff":  # differences within each segment, never across two
            out[modality] = normalize_clip(clip, "rgbdiff", num_segments=input_spec(cfg).layout.segments)
        else:
            out[modality] = normalize_clip(clip, modality)
    return (out if cfg.model.modality == "rgb+flow" else next(iter(out.values()))), views


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if hasattr(model, "module") else model  # DistributedDataParallel


def lr_lambda(cfg: ExperimentConfig, sched: Schedule):
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero at the schedule's last step."""
    warmup = max(1, int(cfg.optim.warmup_epochs * sched.steps_per_epoch))
    total = max(warmup + 1, sched.steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return factor


def build_optimizer(model: torch.nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def train_one_epoch(model, loader, optimizer, scaler, cfg: ExperimentConfig, device, *, sb: StepBatch,
                    lr_at: Callable[[int], float], start: int = 0, after_step: Callable[[int], None] | None = None,
                    ) -> dict:
    """This rank's steps of one epoch from clip `start` of its order: each step takes sb.accumulate
    micro-batches from `loader` (gradients accumulated without DDP's all-reduce until the last) and
    divides the summed loss by sb.loss_divisor, so that every step's gradient is the mean over its
    sb.global_clips clips at any world size (orchestrator/training/elastic.py).

    Args:
        lr_at: the learning rate of the step that begins at a clip of the epoch.
        after_step: called with the clip position after every step, on every rank (may checkpoint).
    Returns:
        This rank's sums: loss_sum, correct, seen, skipped, seconds, data_wait_s.
    """
    model.train()
    stats = {"loss_sum": 0.0, "correct": 0, "seen": 0, "skipped": 0, "seconds": 0.0, "data_wait_s": 0.0}
    position, micro = start, []
    begin = tick = time.perf_counter()
    for batch in loader:
        stats["data_wait_s"] += time.perf_counter() - tick
        micro.append(batch)
        if len(micro) == sb.accumulate:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(position)
            for key, value in train_step(model, micro, optimizer, scaler, cfg, device, sb).items():
                stats[key] += value
            position, micro = position + sb.global_clips, []
            if after_step is not None:
                stats["seconds"] += time.perf_counter() - begin  # the epoch's time so far, for a checkpoint
                after_step(position, stats)
                begin = time.perf_counter()
        tick = time.perf_counter()
    stats["seconds"] += time.perf_counter() - begin
    return stats


def train_step(model, micro_batches: list[dict], optimizer, scaler, cfg: ExperimentConfig, device,
               sb: StepBatch) -> dict:
    """One optimiser step over a rank's micro-batches (collate_skip_bad's dicts). A micro-batch with no
    readable clip (or none given, a share smaller than sb.accumulate) still takes part in DDP's
    all-reduce: a forward pass of zeros in eval mode, its loss times 0. Returns the step's
    loss_sum, correct, seen and skipped."""
    optimizer.zero_grad(set_to_none=True)
    dtype = autocast_dtype(cfg.optim.precision, device)
    out = {"loss_sum": 0.0, "correct": 0, "seen": 0, "skipped": 0}
    for j, batch in enumerate(micro_batches):
        last = j == len(micro_batches) - 1
        out["skipped"] += batch["num_skipped"]
        labels = batch["label"].to(device, non_blocking=True)
        # DDP all-reduces the gradients in the last micro-batch's backward pass only
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            if labels.numel() == 0:
                _zero_step(model, cfg, device, dtype, scaler)
                continue
            x, _ = prepare_inputs(batch["inputs"], cfg, device)
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)  # (B, K)
                loss = F.cross_entropy(logits.float(), labels, reduction="sum")
                if hasattr(unwrap(model), "auxiliary_loss"):  # a mean over the micro-batch
                    loss = loss + unwrap(model).auxiliary_loss() * labels.numel()
            scaler.scale(loss / sb.loss_divisor).backward()
        out["loss_sum"] += loss.item()
        out["correct"] += (logits.argmax(1) == labels).sum().item()
        out["seen"] += labels.numel()
    if cfg.optim.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return out


def _zero_step(model, cfg: ExperimentConfig, device, dtype, scaler) -> None:
    """A backward pass that adds nothing to any gradient but lets DDP's hooks run (see train_step)."""
    zeros = {m: torch.zeros((1, 1, *shape), dtype=torch.uint8) for m, shape in input_spec(cfg).shapes.items()}
    x, _ = prepare_inputs(zeros, cfg, device)
    model.eval()  # BatchNorm's running statistics and dropout untouched
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
        loss = model(x).float().sum() * 0.0
    scaler.scale(loss).backward()
    model.train()


class ShardScores(NamedTuple):
    """One rank's share of an evaluation: the test videos rank, rank + world, ..."""
    indices: torch.Tensor  # (n,) int64 dataset indices
    labels: torch.Tensor  # (n,) int64
    video_scores: torch.Tensor  # (n, K) float32 logits averaged over the views
    clip_correct: int  # views whose own argmax was right
    clip_total: int  # views scored
    skipped: int  # unreadable videos


class EvalResult(NamedTuple):
    """Every test video scored once, in dataset order (rank 0's merge of all shards)."""
    indices: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N,) int64
    video_scores: np.ndarray  # (N, K) float32
    clip_top1: float
    skipped: int


def loader_workers(setting: int | str, cpus: float) -> int:
    """DataLoader processes for `data.loader_workers`: the number given, or for "auto" every CPU
    this training worker holds except the one its own process trains on."""
    return setting if setting != "auto" else max(0, int(cpus) - 1)


def make_loader(dataset, batches, cfg: ExperimentConfig, *, num_workers: int, device, persistent: bool = False):
    """Collated batches of `dataset` for the lists of keys `batches` (a batch sampler) yields, by
    `data.loader`: this worker's DataLoader processes, or Ray Data tasks anywhere in the cluster (the
    same batches either way)."""
    from orchestrator.data.dataset import collate_skip_bad
    from orchestrator.data.device_decode import DeviceDecoding

    if cfg.data.loader == "ray_data":
        from orchestrator.data.ray_loader import RayDataLoader

        loader = RayDataLoader(dataset, batches)
    else:
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_skip_bad,
                            pin_memory=device.type == "cuda", persistent_workers=persistent and num_workers > 0)
    # data.decode_device: cuda: the loader hands over JPEG bytes and crop parameters, decoded here
    return DeviceDecoding(loader, dataset.transform, device) if getattr(dataset, "defer", False) else loader


def view_bytes(cfg: ExperimentConfig) -> int:
    """uint8 bytes of one view of one video as the loader delivers it (every stream's C x T x H x W)."""
    return sum(math.prod(shape) for shape in input_spec(cfg).shapes.values())


def views_per_test_video(cfg: ExperimentConfig) -> int:
    """Views scored per test video: test_clips x the test crop's crops."""
    from orchestrator.data.transforms import TEST_CROP_VIEWS

    return cfg.data.test_clips * TEST_CROP_VIEWS[cfg.data.test_crop]


def eval_videos_per_batch(cfg: ExperimentConfig) -> int:
    """Whole test videos per evaluation loader batch: as many as `optim.eval_batch_size` views and
    EVAL_LOADER_BATCH_BYTES hold, at least one (its views then go through the model in chunks,
    `forward_views`)."""
    video = views_per_test_video(cfg) * view_bytes(cfg)
    return max(1, min(cfg.optim.eval_batch_size // views_per_test_video(cfg), EVAL_LOADER_BATCH_BYTES // video))


def forward_views(model, inputs: dict, cfg: ExperimentConfig, device) -> torch.Tensor:
    """Logits of every view of a uint8 batch {modality: (B, V, C, T, H, W)}, at most
    `optim.eval_batch_size` views per forward pass (only those are on the device at once).

    Returns (B, V, K) float32 on the CPU.
    """
    batch, views = next(iter(inputs.values())).shape[:2]
    flat = {m: rearrange(clip, "b v c t h w -> (b v) 1 c t h w") for m, clip in inputs.items()}  # views as videos
    chunk, dtype = cfg.optim.eval_batch_size, autocast_dtype(cfg.optim.precision, device)
    logits = []
    for start in range(0, batch * views, chunk):
        x, _ = prepare_inputs({m: clip[start:start + chunk] for m, clip in flat.items()}, cfg, device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            logits.append(model(x).float().cpu())  # (n, K)
    return rearrange(torch.cat(logits), "(b v) k -> b v k", v=views)


@torch.no_grad()
def score_shard(model, dataset, cfg: ExperimentConfig, device, *, rank: int, world: int,
                num_workers: int = 0) -> ShardScores:
    """Score this rank's test videos, every view of each, without padding (DistributedSampler would
    repeat videos to even out ranks and count them twice)."""
    model.eval()
    videos = BatchSampler(range(rank, len(dataset), world), eval_videos_per_batch(cfg), drop_last=False)
    loader = make_loader(dataset, videos, cfg, num_workers=num_workers, device=device)
    indices, labels, scores, clip_correct, clip_total, skipped = [], [], [], 0, 0, 0
    for batch in loader:
        skipped += batch["num_skipped"]
        if batch["label"].numel() == 0:
            continue
        logits = forward_views(model, batch["inputs"], cfg, device)  # (B, V, K)
        y = batch["label"]
        clip_correct += (logits.argmax(2) == y[:, None]).sum().item()
        clip_total += logits.shape[0] * logits.shape[1]
        indices.append(batch["index"])
        labels.append(y)
        scores.append(logits.mean(1))
    if not indices:
        return ShardScores(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, 0),
                           0, 0, skipped)
    return ShardScores(torch.cat(indices), torch.cat(labels), torch.cat(scores), clip_correct, clip_total, skipped)


def merge_shards(parts: list[ShardScores]) -> EvalResult:
    """All ranks' shards as one result in dataset order; clip accuracy over every view scored."""
    skipped = sum(p.skipped for p in parts)
    parts = [p for p in parts if p.indices.numel()]
    if not parts:
        return EvalResult(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32), 0.0, skipped)
    indices = torch.cat([p.indices for p in parts])
    order = indices.argsort()
    return EvalResult(indices[order].numpy(), torch.cat([p.labels for p in parts])[order].numpy(),
                      torch.cat([p.video_scores for p in parts])[order].numpy().astype(np.float32),
                      sum(p.clip_correct for p in parts) / max(1, sum(p.clip_total for p in parts)), skipped)


def evaluate(model, dataset, cfg: ExperimentConfig, device, *, rank: int, world: int,
             num_workers: int = 0) -> EvalResult | None:
    """Clip and video scores over every view of every test video: each rank scores its shard, rank 0
    gathers and merges them (other ranks return None)."""
    parts = [score_shard(model, dataset, cfg, device, rank=rank, world=world, num_workers=num_workers)]
    if world > 1:
        local, parts = parts[0], [None] * world
        torch.distributed.all_gather_object(parts, local)
    return merge_shards(parts) if rank == 0 else None


def _sum_across_workers(values: dict, device, world: int) -> dict:
    if world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return dict(zip(keys, t.tolist()))


@dataclass
class Worker:
    """Everything one training worker holds between epochs (built by `setup_worker`)."""
    cfg: ExperimentConfig
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module  # DDP-wrapped when world > 1
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: StepBatch  # clips per optimiser step at this world size (elastic.step_batch)
    train_set: Any  # VideoDataset
    train_batches: Any  # elastic.EpochBatches: this rank's micro-batches of an epoch
    train_loader: Any  # DataLoader or RayDataLoader (data.loader)
    num_workers: int  # DataLoader processes (data.loader_workers resolved)
    splits: Any  # annotations.RunSplits: class names and video ids of the train / val / test lists
    val_set: Any  # VideoDataset of the val list; None without data.val (the test list stands in)
    test_set: Any  # VideoDataset
    unlisted: dict  # {"train": n, "test": n} list entries the annotation reader left out
    best: dict | None = None  # optim.keep best_val: {"epoch", "val_top1", "model" (its weights, on the CPU)}
    kept_val: EvalResult | None = None  # rank 0: val scores of the weights kept (late_fusion weight: auto)
    # the run's, across restarts: optimiser steps so far, restarts, resizes, steps trained but lost to them
    counters: dict | None = None

    def __post_init__(self):
        self.counters = self.counters or {"steps": 0, "restarts": 0, "resizes": 0, "lost_steps": 0}

    @property
    def schedule(self) -> Schedule:
        """The run's epochs and steps (optim.epochs, or optim.iterations over this training list)."""
        o = self.cfg.optim
        return schedule(epochs=o.epochs, iterations=o.iterations, num_clips=len(self.train_set), sb=self.step)

    def lr_at(self, epoch: int, position: int) -> float:
        """The learning rate of the step that begins at clip `position` of `epoch` (warm-up, cosine,
        and the resize rule's factor)."""
        factor = lr_lambda(self.cfg, self.schedule)
        at = schedule_step(epoch=epoch, position=position, num_clips=len(self.train_set), sb=self.step)
        return self.cfg.optim.lr * self.step.lr_factor * factor(at)

    @property
    def selection_set(self):
        """What per-epoch validation scores and everything selects on: the val list, else the test list."""
        return self.test_set if self.val_set is None else self.val_set

    def resumable(self) -> dict:
        """The objects whose state_dict a checkpoint holds."""
        return {"model": unwrap(self.model), "optimizer": self.optimizer, "scaler": self.scaler}


def build_trainable(cfg: ExperimentConfig, *, num_classes: int, device: torch.device,
                    init_weights: Path | None = None, class_names: list[str] | None = None, wrap_model=None):
    """The model, optimiser and loss scaler one worker trains with (`setup_worker`'s; `actionlab bench`
    builds its own through here too, so that it times what runs train). `class_names`: the run's, in label
    order (a checkpoint's head is kept only where they are its own). Returns (model, optimizer, scaler)."""
    from models import build_model

    model = build_model(cfg.model.architecture, num_classes=num_classes, **input_spec(cfg).builder_kwargs)
    if init_weights:  # the "pretraining" ablation: weights of an earlier run
        from models.pretrained import load_checkpoint

        load_checkpoint(model, init_weights, skip_head=True, class_names=class_names)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input shape per run: let cuDNN time its algorithms once
        if cfg.optim.channels_last:
            to_channels_last(model)
    model = wrap_model(model) if wrap_model else model.to(device)
    if cfg.optim.compile:
        model = torch.compile(model)
    optimizer = build_optimizer(model, cfg)
    # loss scaling only for fp16: bf16 has fp32's exponent range
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(cfg.optim.precision, device) == torch.float16)
    return model, optimizer, scaler


def setup_worker(cfg: ExperimentConfig, *, rank: int, world: int, device: torch.device, cpus: float = 1,
                 init_weights: Path | None = None, wrap_model=None) -> Worker:
    """Data, model, optimiser and schedule for one worker of `world`.

    Args:
        cpus: CPUs this worker holds (sizes `data.loader_workers: auto`).
        init_weights: a model.pt to fine-tune from (the driver resolves `model.init_checkpoint`).
        wrap_model: puts the model on the device for data-parallel training
            (`ray.train.torch.prepare_model`); default: `.to(device)`.
    """
    from orchestrator.data.annotations import read_run_splits

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts)
    d = cfg.data
    if d.decode_device == "cuda" and device.type != "cuda":
        raise UserError(f"data.decode_device 'cuda': this worker trains on {device.type}, not a GPU; set "
                        "data.decode_device: cpu")
    splits = read_run_splits(d.dataset, root=d.root, annotations=d.annotations, split=d.split,
                             test_annotations=d.test_annotations, val=d.val)
    train_split, test_split = splits.train, splits.test
    unlisted = {"train": len(train_split.problems), "test": len(test_split.problems)}
    if rank == 0 and any(unlisted.values()):  # left out by the reader: never seen by the Dataset
        for path, reason in (train_split.problems + test_split.problems)[:20]:
            logger.warning("left out %s: %s", path, reason)
        logger.warning("left out %d training and %d test list entries (`actionlab data check` lists all)",
                       unlisted["train"], unlisted["test"])
    train_set = build_dataset(cfg, train_split.records, train=True)
    test_set = build_dataset(cfg, test_split.records, train=False)
    val_set = build_dataset(cfg, splits.val.records, train=False) if splits.val else None
    sb = step_batch(batch_size=cfg.optim.batch_size, max_workers=cfg.scaling.max_workers, world=world,
                    on_resize=cfg.scaling.on_resize)
    batches = EpochBatches(len(train_set), seed=cfg.seed, sb=sb, rank=rank)
    num_workers = loader_workers(d.loader_workers, cpus)
    # persistent DataLoader processes: the (epoch, index) keys carry the epoch to them. An epoch's last
    # clips, too few for a whole step, are left out (a batch of one clip would stop BatchNorm in training)
    train_loader = make_loader(train_set, batches, cfg, num_workers=num_workers, device=device, persistent=True)
    if len(train_loader) == 0:
        raise UserError(f"one step takes {sb.global_clips} clips (optim.batch_size {cfg.optim.batch_size} x "
                        f"{sb.global_clips // cfg.optim.batch_size} workers) but the training list holds "
                        f"{len(train_set)} videos: lower optim.batch_size or scaling.num_workers")

    model, optimizer, scaler = build_trainable(cfg, num_classes=len(train_split.class_names), device=device,
                                               init_weights=init_weights, class_names=train_split.class_names,
                                               wrap_model=wrap_model)
    return Worker(cfg, rank, world, device, model, optimizer, scaler, sb, train_set, batches, train_loader,
                  num_workers, splits, val_set, test_set, unlisted)


class Progress(NamedTuple):
    """Where a run stands: the next clip of `epoch`'s order to train on and, mid-epoch, the epoch's
    training sums so far over all ranks (`train_one_epoch`'s)."""
    epoch: int
    position: int = 0
    carried: dict | None = None


def run_epoch(w: Worker, epoch: int, *, start: Progress | None = None,
              after_step: Callable[[int, dict], None] | None = None) -> tuple[dict, EvalResult | None]:
    """Train one epoch (from `start`, a mid-epoch resume of this epoch) and, when due (every
    eval_every epochs and the last), score the val list (`Worker.selection_set`); after the last,
    score the test list once with the kept weights (`final_test`).

    Args:
        after_step: called on every rank after every step with the clip position and this rank's sums.
    Returns the epoch's metrics (training stats summed over workers; test/... after the last epoch)
    and rank 0's EvalResult of the test list (None before the last epoch and on other ranks).
    """
    cfg = w.cfg
    position, carried = (start.position, start.carried) if start is not None else (0, None)
    sched = w.schedule
    w.train_batches.set_epoch(epoch, position, epoch_clips(epoch, sched=sched, num_clips=len(w.train_set), sb=w.step))

    def step_done(at: int, sums: dict) -> None:
        w.counters["steps"] += 1
        if after_step is not None:
            after_step(at, sums)

    stats = train_one_epoch(w.model, w.train_loader, w.optimizer, w.scaler, cfg, w.device, sb=w.step,
                            lr_at=lambda at: w.lr_at(epoch, at), start=position, after_step=step_done)
    if cfg.data.loader == "ray_data":  # where the epoch's batches were decoded
        stats.update(decoded_batches=w.train_loader.decoded, decoded_on_own_node=w.train_loader.decoded_here)
    stats = _sum_across_workers(stats, w.device, w.world)
    if carried:  # what the ranks before a mid-epoch restart trained
        stats = {k: v + carried.get(k, 0) for k, v in stats.items()}
    result = None
    if epoch == sched.epochs - 1 or (epoch + 1) % cfg.optim.eval_every == 0:
        # the bare module: DDP's forward would broadcast buffers, a collective that hangs when one
        # rank has no test batch
        result = evaluate(unwrap(w.model), w.selection_set, cfg, w.device, rank=w.rank, world=w.world,
                          num_workers=w.num_workers)
        if cfg.optim.keep == "best_val":
            _keep_if_best(w, epoch, result)
        elif w.val_set is not None:
            w.kept_val = result
    metrics = epoch_metrics(stats, result, epoch=epoch, lr=w.optimizer.param_groups[0]["lr"], world=w.world)
    metrics.update({"data/unlisted_train_videos": w.unlisted["train"], "data/unlisted_test_videos": w.unlisted["test"],
                    "precision": PRECISION_NAMES[autocast_dtype(cfg.optim.precision, w.device)],  # "auto" resolved
                    # the schedule (optim.iterations resolves here) and the optimiser steps the run has taken
                    "train/epochs": sched.epochs, "train/planned_steps": sched.steps, "train/steps": w.counters["steps"]})
    skipped = (metrics["data/skipped_videos"], metrics.get("data/skipped_val_videos", 0))
    if w.rank == 0 and any(skipped):
        logger.warning("epoch %d: skipped %d training and %d validation videos that could not be read (each named "
                       "in a warning above; `actionlab data check` lists them all)", epoch, *skipped)
    if epoch < sched.epochs - 1:
        return metrics, None
    test = final_test(w, result)
    if test is not None:
        metrics.update(_scored("test", test))
    metrics["selected_epoch"] = w.best["epoch"] if w.best else epoch
    return metrics, test


def _keep_if_best(w: Worker, epoch: int, result: EvalResult | None) -> None:
    """optim.keep best_val: hold a copy of the weights of the best val/video_top1 so far (every rank
    keeps one, so that every rank scores its test shard with them), and rank 0 their val scores."""
    from orchestrator.metrics import topk_accuracy

    score = [topk_accuracy(result.labels, result.video_scores, 1) if result is not None and len(result.labels)
             else -1.0]
    if w.world > 1:  # rank 0 holds the merged result
        torch.distributed.broadcast_object_list(score, src=0)
    if w.best is None or score[0] > w.best["val_top1"]:
        w.best = {"epoch": epoch, "val_top1": score[0],
                  "model": {k: v.detach().to("cpu", copy=True) for k, v in unwrap(w.model).state_dict().items()}}
        w.kept_val = result


def final_test(w: Worker, last_result: EvalResult | None) -> EvalResult | None:
    """The test list scored once, after the last epoch, with the kept weights (optim.keep: the last
    epoch's, or the best val epoch's, which the model then holds). Without a val list the last
    epoch's evaluation was already of the test list. Rank 0's result; None on other ranks."""
    if w.val_set is None:
        return last_result
    if w.best is not None:
        unwrap(w.model).load_state_dict(w.best["model"])
    return evaluate(unwrap(w.model), w.test_set, w.cfg, w.device, rank=w.rank, world=w.world,
                    num_workers=w.num_workers)


def save_state(w: Worker, directory: Path, *, at: Progress, history: list[dict], run_id: str = "") -> None:
    """Everything resuming needs, at `at` (an epoch's start, or a clip of it with the epoch's sums so
    far): weights, optimiser, scaler, RNG, history, the best val epoch's weights and scores (optim.keep
    best_val), the run's counters, the world size that wrote it and the MLflow run it belongs to."""
    cuda_rng = torch.cuda.get_rng_state(w.device) if w.device.type == "cuda" else None  # dropout on the GPU
    torch.save({**{k: v.state_dict() for k, v in w.resumable().items()}, "torch_rng": torch.get_rng_state(),
                "cuda_rng": cuda_rng, "epoch": at.epoch, "position": at.position, "carried": at.carried,
                "history": history, "best": w.best, "kept_val": _as_tensors(w.kept_val), "counters": w.counters,
                "world": w.world, "run_id": run_id}, Path(directory) / STATE_FILE)


def load_state(w: Worker, directory: Path, *, run_id: str = "") -> tuple[Progress, list[dict]]:
    """Restore what `save_state` wrote, at any world size (a restart counts one, a changed world size
    one resize). Returns (where to go on from, metrics history so far)."""
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    if run_id and state["run_id"] and state["run_id"] != run_id:
        raise UserError(f"{directory}: this checkpoint belongs to MLflow run {state['run_id']}, not {run_id}; "
                        "point scaling.storage_path at this run's own folder")
    for name, part in w.resumable().items():
        part.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and w.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], w.device)
    w.best, w.kept_val = state.get("best"), _as_tensors(state.get("kept_val"), back=True)
    counters = state["counters"]
    w.counters = {**counters, "restarts": counters["restarts"] + 1,
                  "resizes": counters["resizes"] + (state["world"] != w.world)}
    return Progress(state["epoch"], state["position"], state["carried"]), state["history"]


def _as_tensors(result: EvalResult | dict | None, *, back: bool = False):
    """An EvalResult as a dict of tensors (what torch.load's weights_only reads), or back."""
    if result is None:
        return None
    if back:
        return EvalResult(**{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in result.items()})
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in result._asdict().items()}


def write_run_outputs(w: Worker, out_dir: Path, result: EvalResult | None, history: list[dict]) -> None:
    """Rank 0, last epoch: the kept weights, per-video test scores (and val scores, with data.val)
    with the class names, and the history, each written under a temporary name and renamed, so a
    reader never sees half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = tuple(w.splits.test.class_names)

    def publish(name: str, write) -> None:
        tmp = out_dir / f".{name}.tmp{Path(name).suffix}"
        write(tmp)
        os.replace(tmp, out_dir / name)

    publish(MODEL_FILE, lambda p: torch.save({"model": unwrap(w.model).state_dict(), "class_names": list(names),
                                              "architecture": w.cfg.model.architecture,
                                              "modality": w.cfg.model.modality}, p))
    publish(HISTORY_FILE, lambda p: p.write_text(json.dumps(history, indent=1)))
    for file, scored, split in ((SCORES_FILE, result, w.splits.test), (VAL_SCORES_FILE, w.kept_val, w.splits.val)):
        if scored is not None:
            publish(file, lambda p: save_scores(p, video_scores(split, scored, names)))


def video_scores(split, result: EvalResult, class_names: tuple[str, ...]):
    """An evaluation of `split`'s records as `runs.VideoScores` (what scores.npz holds)."""
    ids = np.array([split.records[i].video_id for i in result.indices])
    return VideoScores(ids, result.labels.astype(np.int64), result.video_scores, tuple(class_names))


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. loop_config: {'experiment': ExperimentConfig (frozen, checked by the
    driver), 'run_id': the MLflow run (names the output folder), 'init_weights': Path | None}."""
    import ray
    import ray.train
    import ray.train.torch

    cfg: ExperimentConfig = loop_config["experiment"]
    run_id = loop_config["run_id"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    nodes = [ray.get_runtime_context().get_node_id()] * world
    if world > 1:  # where the data-parallel replicas landed, for the run's record
        torch.distributed.all_gather_object(nodes, nodes[0])
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    w = setup_worker(cfg, rank=rank, world=world, device=ray.train.torch.get_device(), cpus=cpus,
                     init_weights=loop_config["init_weights"], wrap_model=ray.train.torch.prepare_model)
    start, history = Progress(0), []
    if (checkpoint := ray.train.get_checkpoint()) is not None:  # a restarted worker group goes on from there
        with checkpoint.as_directory() as ckpt_dir:
            start, history = load_state(w, Path(ckpt_dir), run_id=run_id)

    # The node's CPU / memory / GPU as MLflow system metrics, sampled by one worker per node.
    node_id = f"node{ctx.get_node_rank()}" if len(set(nodes)) > 1 else None
    node_metrics = (tracking.system_metrics(cfg.tracking.tracking_uri, run_id, node_id=node_id,
                                            interval_s=cfg.tracking.system_metrics_interval_s)
                    if ctx.get_local_rank() == 0 else contextlib.nullcontext())
    with node_metrics:
        _train_epochs(w, run_id, start, history, num_nodes=len(set(nodes)))


def _train_epochs(w: Worker, run_id: str, start: Progress, history: list[dict], *, num_nodes: int) -> None:
    """Epochs from `start` to the end. Each epoch's end reports to Ray Train with rank 0's checkpoint,
    and so does a step after which a preemption notice is out (at once, then the ranks wait for the
    deadline: whatever they trained after it would be lost) or scaling.checkpoint_every_steps fall due.
    The run's step metrics (`step_metrics`) go with a report only when steps were trained since the
    last, so no MLflow step is logged twice across restarts."""
    import ray.train

    from orchestrator.training.elastic import steps_left

    cfg, every = w.cfg, w.cfg.scaling.checkpoint_every_steps
    marker = Path(cfg.scaling.storage_path) / "progress" / f"{run_id}.steps"  # how far the run got
    resumed, last_logged, notified = w.counters["steps"], [w.counters["steps"]], [False]
    if w.rank == 0:
        reached = int(marker.read_text()) if marker.exists() else resumed
        w.counters["lost_steps"] += max(0, reached - resumed)
        marker.parent.mkdir(parents=True, exist_ok=True)

    def report(metrics: dict, at: Progress, *, outputs: EvalResult | None = None, last: bool = False) -> None:
        metrics = {**metrics, "resumed_from_step": resumed, "scaling/num_nodes": num_nodes}
        if w.counters["steps"] > last_logged[0]:
            metrics.update(step_metrics(w))
            last_logged[0] = w.counters["steps"]
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if w.rank == 0:  # one copy of the state; every rank still reports (Train V2 requires it)
                save_state(w, Path(tmp), at=at, history=history, run_id=run_id)
                if last:
                    write_run_outputs(w, run_output_dir(cfg.scaling.storage_path, run_id), outputs, history)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
        if metrics["report"] == "checkpoint":  # mid-epoch: it counts only once the controller committed it
            ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)

    epochs = w.schedule.epochs
    for epoch in range(start.epoch, epochs):
        begun = start if epoch == start.epoch else None

        def after_step(position: int, sums: dict) -> None:
            if w.rank == 0:
                _publish_text(marker, str(w.counters["steps"]))
            notice = ray.train.get_preemption_info()  # a collective: every rank asks after every step
            due = every and w.counters["steps"] % every == 0 and steps_left(w.train_batches.stop, position, w.step)
            if (notice is None or notified[0]) and not due:
                return
            carried = _sum_across_workers(sums, w.device, w.world)
            if begun is not None and begun.carried:
                carried = {k: v + begun.carried.get(k, 0) for k, v in carried.items()}
            report({"epoch": epoch, "report": "checkpoint"}, Progress(epoch, position, carried))
            if notice is not None and not notified[0]:
                notified[0] = True
                _wait_for_preemption(notice, cfg.scaling.preemption_grace_s, rank=w.rank)

        metrics, result = run_epoch(w, epoch, start=begun, after_step=after_step)
        history.append({**metrics, "resumed_from_step": resumed, "scaling/num_nodes": num_nodes})
        report({**metrics, "report": "epoch"}, Progress(epoch + 1), outputs=result, last=epoch == epochs - 1)


def _wait_for_preemption(notice, grace_s: float, *, rank: int) -> None:
    """After the notice's checkpoint: wait for Ray Train to stop the group at the deadline (plus
    scaling.preemption_grace_s). Steps trained meanwhile would be lost with the node; a notice without
    a deadline, or a deadline that passes with the group still running, goes back to training."""
    if notice.deadline_ms is None:
        return
    until = notice.deadline_ms / 1000 + grace_s + 30
    if rank == 0:
        logger.warning("preemption notice for node(s) %s (ranks %s): checkpoint taken; waiting %.0f s for the "
                       "restart at the deadline", notice.preempted_node_ids, notice.preempted_ranks,
                       until - 30 - time.time())
    while time.time() < until:
        time.sleep(0.5)


def _publish_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def step_metrics(w: Worker) -> dict:
    """What MLflow logs against the optimiser step: {'step': n, 'per_step': {world size, global batch and
    learning rate now, and the run's restarts, resizes and steps lost to them so far}}."""
    c = w.counters
    return {"step": c["steps"], "per_step": {
        "train/world_size": w.world, "train/global_batch": w.step.global_clips,
        "train/lr": w.optimizer.param_groups[0]["lr"], "train/restarts": c["restarts"],
        "train/resizes": c["resizes"], "train/lost_steps": c["lost_steps"]}}


def epoch_metrics(stats: dict, result: EvalResult | None, *, epoch: int, lr: float, world: int) -> dict:
    """One epoch's report: training stats summed over workers, plus validation when it ran."""
    metrics = {
        "epoch": epoch,
        "train/loss": stats["loss_sum"] / max(1, stats["seen"]),
        "train/clip_top1": stats["correct"] / max(1, stats["seen"]),
        "lr": lr,
        "data/skipped_videos": stats["skipped"],
        "time/epoch_s": stats["seconds"] / world,
        "time/data_wait_share": stats["data_wait_s"] / max(1e-9, stats["seconds"]),
        "throughput/clips_per_s": stats["seen"] / max(1e-9, stats["seconds"] / world),
        "scaling/num_workers": world,
    }
    if "decoded_batches" in stats:  # data.loader ray_data: 0 when the training nodes decode nothing
        metrics["data/decoded_on_training_node_share"] = stats["decoded_on_own_node"] / max(1, stats["decoded_batches"])
    if result is not None:
        metrics["data/skipped_val_videos"] = result.skipped
        metrics.update(_scored("val", result))
    return metrics


def _scored(prefix: str, result: EvalResult) -> dict:
    """{prefix/clip_top1, prefix/video_top1} of an evaluation ({} when it scored nothing)."""
    from orchestrator.metrics import topk_accuracy

    if not len(result.labels):
        return {}
    return {f"{prefix}/clip_top1": result.clip_top1,
            f"{prefix}/video_top1": topk_accuracy(result.labels, result.video_scores, 1)}
