"""What a change of world size does to the optimisation and to the order of the clips (elastic runs,
`scaling.num_workers: [min, max]`, and every fixed-size run too: the rule is the same).

    epoch_order(num_clips, seed, epoch)     the epoch's clip order: a pure function of (seed, epoch),
                                            whatever the world size (DistributedSampler's permutation)
    step_batch(...) -> StepBatch            clips per optimiser step over all ranks, micro-batches per
                                            rank, the learning-rate factor, at one world size
    rank_batches(order, start, sb, rank)    this rank's micro-batches from clip `start` of the order on
    EpochBatches                            the same as a DataLoader batch_sampler / RayDataLoader source
    schedule_step(...)                      where the LR schedule stands at a clip of an epoch
    schedule(...) -> Schedule               the run's epochs and steps: optim.epochs, or optim.iterations
                                            over the list it trains on (`epoch_clips` ends the last epoch)

The rule (`scaling.on_resize`), with b = optim.batch_size and W = the max world size (what the recipe's
optimiser settings are written for):
    keep_global_batch (default): every step trains on G = b x W clips of the order at any world size w.
        Rank r takes the step's clips r, r + w, r + 2w, ... (at w = W exactly DistributedSampler's split),
        in `accumulate` micro-batches of at most b clips (gradient accumulation under DDP's no_sync),
        and divides its summed loss by G / w: DDP's mean over the w ranks is then the mean over the G
        clips, the gradient of the unresized run. Steps per epoch, floor(N / G), stay as they are.
    keep_worker_batch: every rank trains on b clips per step, G = b x w, and the learning rate is
        multiplied by w / W (the linear scaling rule, Goyal et al. 2017, arXiv:1706.02677).
The position in an epoch is a count of clips of its order, so a run resumed at clip p of epoch e, at
any world size, trains on order[p:] and on nothing else of epoch e: no clip twice, none skipped. The
epoch's last N mod G clips (too few for a whole step) are left out, as drop_last does. The schedule
(warm-up, cosine) runs on clips trained, counted in steps of the max world, so a resize moves neither
its shape nor its end.

BatchNorm's batch statistics are per micro-batch, so with BatchNorm a resized run is close to, not
equal to, the unresized one; without it (and without dropout) it is equal within float rounding
(tests/test_elastic.py).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

ON_RESIZE = ("keep_global_batch", "keep_worker_batch")  # config.ScalingConfig.on_resize


class StepBatch(NamedTuple):
    """One optimiser step at one world size (`step_batch`)."""
    world: int  # ranks training
    global_clips: int  # G: clips of the epoch order one step trains on, over all ranks
    accumulate: int  # micro-batches per rank per step
    lr_factor: float  # optim.lr multiplier at this world size
    max_world_clips: int  # G at the max world size: the unit the LR schedule counts steps in

    @property
    def loss_divisor(self) -> float:
        """A rank divides its summed loss by this: DDP's mean over the ranks is then the mean over G."""
        return self.global_clips / self.world


def step_batch(*, batch_size: int, max_workers: int, world: int, on_resize: str) -> StepBatch:
    """The step of a run written for `max_workers` ranks of `batch_size` clips, trained on `world` ranks
    (a world above max_workers, outside Ray Train, counts as the max)."""
    max_workers = max(max_workers, world)
    reference = batch_size * max_workers
    if on_resize == "keep_global_batch":
        return StepBatch(world, reference, math.ceil(math.ceil(reference / world) / batch_size), 1.0, reference)
    if on_resize == "keep_worker_batch":
        return StepBatch(world, batch_size * world, 1, world / max_workers, reference)
    raise ValueError(f"on_resize: expected one of {ON_RESIZE}, got {on_resize!r}")


def epoch_order(num_clips: int, *, seed: int, epoch: int) -> np.ndarray:
    """(num_clips,) int64: the epoch's clip order, torch.randperm seeded with seed + epoch (as
    DistributedSampler draws it), so it depends on nothing else."""
    generator = torch.Generator()
    generator.manual_seed(seed + epoch)
    return torch.randperm(num_clips, generator=generator).numpy()


def steps_left(num_clips: int, start: int, sb: StepBatch) -> int:
    """Whole steps from clip `start` of an epoch to its end (the rest, under G clips, is left out)."""
    return max(0, (num_clips - start) // sb.global_clips)


def rank_batches(order: np.ndarray, *, start: int, sb: StepBatch, rank: int) -> list[list[int]]:
    """This rank's micro-batches (dataset indices) for the epoch's steps from clip `start` on: step k
    takes order[start + k G : start + (k + 1) G], this rank its clips rank, rank + world, ..., cut in
    sb.accumulate micro-batches of near-equal size (one may be empty when a share is smaller)."""
    batches = []
    for first in range(start, start + steps_left(len(order), start, sb) * sb.global_clips, sb.global_clips):
        share = order[first:first + sb.global_clips][rank::sb.world]
        batches += [chunk.tolist() for chunk in np.array_split(share, sb.accumulate)]
    return batches


class EpochBatches:
    """This rank's micro-batches as (epoch, index) keys: a DataLoader `batch_sampler` (the keys carry the
    epoch to persistent loader processes) and what RayDataLoader decodes. `set_epoch(epoch, start)`
    picks the epoch and the clip of its order to begin at (a mid-epoch resume)."""

    def __init__(self, num_clips: int, *, seed: int, sb: StepBatch, rank: int):
        self.num_clips, self.seed, self.sb, self.rank = num_clips, seed, sb, rank
        self.epoch = self.start = 0
        self.stop = num_clips

    def set_epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        """`stop`: train on the order's clips before it only (`epoch_clips`); default all."""
        self.epoch, self.start, self.stop = epoch, start, self.num_clips if stop is None else stop

    def __iter__(self):
        order = epoch_order(self.num_clips, seed=self.seed, epoch=self.epoch)[:self.stop]
        epoch = self.epoch
        return iter([[(epoch, i) for i in batch] for batch in rank_batches(order, start=self.start, sb=self.sb,
                                                                            rank=self.rank)])

    def __len__(self) -> int:
        return steps_left(self.stop, self.start, self.sb) * self.sb.accumulate


def schedule_step(*, epoch: int, position: int, num_clips: int, sb: StepBatch) -> float:
    """Steps of the max world trained before clip `position` of `epoch`: where the LR schedule stands
    (`loop.lr_lambda`, with steps_per_epoch = num_clips // sb.max_world_clips)."""
    per_epoch = num_clips // sb.max_world_clips
    return epoch * per_epoch + min(position / sb.max_world_clips, per_epoch)


class Schedule(NamedTuple):
    """How long a run trains, in steps of the max world (`schedule`)."""
    epochs: int  # epochs it trains; with optim.iterations the last may stop early (`epoch_clips`)
    steps: int  # optimiser steps in all: the LR schedule's length (loop.lr_lambda)
    steps_per_epoch: int  # whole steps in an epoch: floor(N / G)
    by_iterations: bool  # the length was given as optim.iterations


def schedule(*, epochs: int | None, iterations: int | None, num_clips: int, sb: StepBatch) -> Schedule:
    """The run's length from optim.epochs, or from optim.iterations and the list it trains on (`num_clips`
    clips, after data.val's carve): ceil(iterations / steps per epoch) epochs."""
    per_epoch = num_clips // sb.max_world_clips
    if iterations is None:
        return Schedule(epochs, epochs * per_epoch, per_epoch, False)
    return Schedule(math.ceil(iterations / max(per_epoch, 1)), iterations, per_epoch, True)


def epoch_clips(epoch: int, *, sched: Schedule, num_clips: int, sb: StepBatch) -> int:
    """Clips of `epoch`'s order the run trains on: all, but the last epoch of a run given in iterations
    stops after the schedule's last step (counted in clips of the max world, so at any world size)."""
    if not sched.by_iterations:
        return num_clips
    return min(num_clips, max(0, sched.steps - epoch * sched.steps_per_epoch) * sb.max_world_clips)
