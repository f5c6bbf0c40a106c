"""Elastic runs (orchestrator/training/elastic.py): the sample order as a pure function of (seed, epoch),
mid-epoch resume at another world size (no clip twice, none skipped), and keep_global_batch giving the
unresized run's weights, on real gloo DDP processes."""
import os
import socket
from collections import Counter

import numpy as np
import pytest
import torch
import torch.distributed as dist

from orchestrator.config import parse_experiment
from orchestrator.data.synth import SynthSpec, write_synthetic_ucf
from orchestrator.training import loop
from orchestrator.training.elastic import (EpochBatches, Schedule, epoch_clips, epoch_order, rank_batches, schedule,
                                           schedule_step, step_batch, steps_left)


@pytest.mark.parametrize("on_resize,world,expected", [
    # (world, G, accumulate, lr factor, G at the max world) for batch 4 written for 4 workers
    ("keep_global_batch", 4, (4, 16, 1, 1.0, 16)),
    ("keep_global_batch", 2, (2, 16, 2, 1.0, 16)),
    ("keep_global_batch", 3, (3, 16, 2, 1.0, 16)),  # shares 6, 5, 5: two micro-batches each
    ("keep_global_batch", 1, (1, 16, 4, 1.0, 16)),
    ("keep_worker_batch", 4, (4, 16, 1, 1.0, 16)),
    ("keep_worker_batch", 2, (2, 8, 1, 0.5, 16)),  # linear scaling: half the batch, half the LR
    ("keep_worker_batch", 1, (1, 4, 1, 0.25, 16)),
])
def test_the_resize_rule(on_resize, world, expected):
    assert tuple(step_batch(batch_size=4, max_workers=4, world=world, on_resize=on_resize)) == expected


@pytest.mark.parametrize("epochs,iterations,on_resize,world,expected,clips", [
    # 17 clips, batch 4 written for 2 workers: G = 8 at the max world, 2 whole steps an epoch
    (3, None, "keep_global_batch", 2, Schedule(3, 6, 2, False), [17, 17, 17]),
    (None, 5, "keep_global_batch", 2, Schedule(3, 5, 2, True), [17, 17, 8]),  # the third epoch: 1 step
    (None, 5, "keep_global_batch", 1, Schedule(3, 5, 2, True), [17, 17, 8]),  # at any world size
    (None, 5, "keep_worker_batch", 1, Schedule(3, 5, 2, True), [17, 17, 8]),  # 2 steps of 4 clips at world 1
    (None, 4, "keep_global_batch", 2, Schedule(2, 4, 2, True), [17, 16]),  # the same 2 steps: 16 clips
])
def test_a_schedule_in_iterations_ends_in_the_epoch_that_holds_its_last_step(epochs, iterations, on_resize, world,
                                                                             expected, clips):
    sb = step_batch(batch_size=4, max_workers=2, world=world, on_resize=on_resize)
    sched = schedule(epochs=epochs, iterations=iterations, num_clips=17, sb=sb)
    assert sched == expected
    assert [epoch_clips(e, sched=sched, num_clips=17, sb=sb) for e in range(sched.epochs)] == clips
    # the clips trained, counted in steps of the max world, are the schedule's steps
    assert sum(steps_left(c, 0, sb) * sb.global_clips for c in clips) == sched.steps * sb.max_world_clips
    batches = EpochBatches(17, seed=0, sb=sb, rank=0)
    batches.set_epoch(sched.epochs - 1, 0, clips[-1])
    order = epoch_order(17, seed=0, epoch=sched.epochs - 1)
    assert [i for batch in batches for _, i in batch] == [
        i for batch in rank_batches(order[:clips[-1]], start=0, sb=sb, rank=0) for i in batch]


def test_the_order_depends_on_seed_and_epoch_only():
    a = epoch_order(50, seed=3, epoch=2)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=2))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=2))
    # at the max world, rank r's clips are DistributedSampler's (shuffle, same seed) when the ranks divide the list
    sampler = torch.utils.data.DistributedSampler(range(48), num_replicas=2, rank=1, shuffle=True, seed=3)
    sampler.set_epoch(2)
    sb = step_batch(batch_size=4, max_workers=2, world=2, on_resize="keep_global_batch")
    mine = [i for batch in rank_batches(epoch_order(48, seed=3, epoch=2), start=0, sb=sb, rank=1) for i in batch]
    assert mine == list(sampler)


def trained(order, start, sb):
    """Every rank's clips from `start` to the epoch's end (a Counter: each clip how many times)."""
    return Counter(i for rank in range(sb.world) for batch in rank_batches(order, start=start, sb=sb, rank=rank)
                   for i in batch)


@pytest.mark.parametrize("on_resize", ["keep_global_batch", "keep_worker_batch"])
@pytest.mark.parametrize("before,after,steps_done", [(2, 1, 3), (1, 2, 2), (4, 3, 1), (3, 4, 5), (2, 2, 0)])
def test_a_resume_at_another_world_size_trains_each_remaining_clip_once(on_resize, before, after, steps_done):
    """Resume at clip p (after `steps_done` steps at `before` ranks) with `after` ranks: the clips of
    the two parts together are the epoch's, each once; only the last N mod G are left out."""
    num_clips, order = 101, epoch_order(101, seed=0, epoch=5)
    first = step_batch(batch_size=4, max_workers=4, world=before, on_resize=on_resize)
    second = step_batch(batch_size=4, max_workers=4, world=after, on_resize=on_resize)
    position = steps_done * first.global_clips
    head = trained(order[:position], 0, first)
    tail = trained(order, position, second)
    both = head + tail
    assert max(both.values()) == 1, "no clip twice"
    assert len(head) == position and set(head) == set(order[:position].tolist())
    assert set(both) == set(order[:position + steps_left(num_clips, position, second) * second.global_clips].tolist())
    assert num_clips - len(both) < second.global_clips, "only a remainder smaller than one step is left out"


def test_every_rank_takes_the_same_number_of_micro_batches():
    """DDP's all-reduce pairs the ranks' steps: 16 clips over 3 ranks (6, 5, 5) in 2 micro-batches each."""
    sb = step_batch(batch_size=4, max_workers=4, world=3, on_resize="keep_global_batch")
    counts = {rank: len(rank_batches(epoch_order(40, seed=0, epoch=0), start=0, sb=sb, rank=rank)) for rank in range(3)}
    assert set(counts.values()) == {2 * 2}  # 2 steps of 2 micro-batches
    batches = EpochBatches(40, seed=0, sb=sb, rank=2)
    batches.set_epoch(1, start=16)
    keys = list(batches)
    assert len(keys) == len(batches) == 2 and {e for batch in keys for e, _ in batch} == {1}


def test_the_schedule_runs_on_clips_so_a_resize_keeps_its_end():
    """keep_worker_batch at half the world: twice the steps, the same schedule positions per clip."""
    full = step_batch(batch_size=4, max_workers=2, world=2, on_resize="keep_worker_batch")
    half = step_batch(batch_size=4, max_workers=2, world=1, on_resize="keep_worker_batch")
    assert schedule_step(epoch=1, position=8, num_clips=40, sb=full) == schedule_step(epoch=1, position=8,
                                                                                      num_clips=40, sb=half) == 6.0
    assert schedule_step(epoch=0, position=40, num_clips=40, sb=half) == 5.0  # the epoch's end, whatever the world


# --- gloo DDP processes: a run stopped mid-epoch at 2 ranks and resumed at 1 -----------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("elastic_ucf")
    write_synthetic_ucf(out, SynthSpec(groups=3, clips_per_group=2, num_frames=12), progress=False)
    return {"root": str(out / "UCF101"), "annotations": str(out / "ucfTrainTestlist"), "val": None}


def c3d_config(data, **scaling):
    """C3D has no BatchNorm; dropout 0: its gradient is then the same however the step is split."""
    return parse_experiment({
        "data": {**data, "sampler": "dense", "clip_len": 4, "short_side": 32, "crop_size": 32, "loader_workers": 0},
        "model": {"architecture": "c3d", "width": 0.0625, "dropout": 0.0},
        "optim": {"epochs": 2, "batch_size": 2, "lr": 0.05, "warmup_epochs": 0.5, "eval_every": 2},
        "scaling": {"num_workers": [1, 2], **scaling}})


class Stop(Exception):
    pass


def _rank(rank: int, world: int, port: int, cfg, out: str, stop_after: int | None, resume: bool):
    """One rank: train (recording every clip index it takes), stop after `stop_after` steps with a
    mid-epoch checkpoint, or resume from one; rank 0 saves the weights and the indices."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    w = loop.setup_worker(cfg, rank=rank, world=world, device=torch.device("cpu"),
                          wrap_model=torch.nn.parallel.DistributedDataParallel if world > 1 else None)
    start, history = loop.Progress(0), []
    if resume:
        start, history = loop.load_state(w, out)
    seen, inner = [], w.train_loader

    class Recording:  # the loader as the loop sees it, each batch's clip indices kept
        def __len__(self):
            return len(inner)

        def __iter__(self):
            for batch in inner:
                seen.append((w.train_batches.epoch, batch["index"].tolist()))
                yield batch

    w.train_loader = Recording()

    def after_step(position, sums):
        if stop_after is not None and w.counters["steps"] == stop_after:
            carried = loop._sum_across_workers(sums, w.device, w.world)
            if rank == 0:
                loop.save_state(w, out, at=loop.Progress(0, position, carried), history=history)
            raise Stop

    try:
        for epoch in range(start.epoch, cfg.optim.epochs):
            loop.run_epoch(w, epoch, start=start if epoch == start.epoch else None, after_step=after_step)
    except Stop:
        pass
    gathered = [None] * world
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        torch.save({"weights": loop.unwrap(w.model).state_dict(), "seen": [s for part in gathered for s in part],
                    "counters": w.counters}, os.path.join(out, f"result_{world}_{stop_after}_{resume}.pt"))
    dist.destroy_process_group()


def run_ranks(world, cfg, out, *, stop_after=None, resume=False) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_rank, args=(world, port, cfg, str(out), stop_after, resume),
                                          nprocs=world, start_method="fork")
    return torch.load(out / f"result_{world}_{stop_after}_{resume}.pt", weights_only=False)


def test_keep_global_batch_resized_mid_epoch_reaches_the_unresized_weights(data, tmp_path):
    """Two epochs at 2 ranks vs 1 step at 2 ranks, a mid-epoch checkpoint, the rest at 1 rank (two
    micro-batches a step): the same clips, each once per epoch, and the same weights."""
    cfg = c3d_config(data)
    for folder in ("straight", "resized"):
        (tmp_path / folder).mkdir()
    straight = run_ranks(2, cfg, tmp_path / "straight")
    head = run_ranks(2, cfg, tmp_path / "resized", stop_after=1)
    tail = run_ranks(1, cfg, tmp_path / "resized", resume=True)

    num_clips = len(loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu")).train_set)
    per_epoch = (num_clips // 4) * 4
    for epoch in range(2):
        resized = Counter(i for part in (head, tail) for e, batch in part["seen"] if e == epoch for i in batch)
        unresized = Counter(i for e, batch in straight["seen"] if e == epoch for i in batch)
        assert resized == unresized and set(resized.values()) == {1} and len(resized) == per_epoch
    assert tail["counters"]["resizes"] == 1 and tail["counters"]["restarts"] == 1
    assert tail["counters"]["steps"] == straight["counters"]["steps"] == 2 * (num_clips // 4)
    for name, value in straight["weights"].items():
        assert torch.allclose(value, tail["weights"][name], rtol=1e-4, atol=1e-6), name


def test_a_checkpoint_of_another_run_is_refused(data, tmp_path):
    """The checkpoint names its MLflow run: a storage folder shared by mistake must not resume another run."""
    from orchestrator.errors import UserError

    cfg = c3d_config(data)
    w = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    loop.save_state(w, tmp_path, at=loop.Progress(1), history=[], run_id="run-a")
    with pytest.raises(UserError, match="belongs to MLflow run run-a, not run-b"):
        loop.load_state(w, tmp_path, run_id="run-b")
    assert loop.load_state(w, tmp_path, run_id="run-a")[0] == loop.Progress(1)
