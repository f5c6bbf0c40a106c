"""The per-worker training loop every Ray Train worker runs (Train V2 style).

    train_loop_per_worker(loop_config)      <- TorchTrainer (orchestrator/training/driver.py)
        build data (sampler -> decord Dataset -> DistributedSampler -> DataLoader)
        build model -> prepare_model (DDP) ; SGD + warm-up/cosine ; resume from get_checkpoint()
        for each epoch: train_one_epoch ; evaluate ; ray.train.report(metrics, checkpoint)

Batches stay uint8 until they reach the device (4x less to copy); `prepare_inputs` normalises
there. Evaluation shards the test videos round-robin without padding (DistributedSampler would
repeat videos to even out ranks and count them twice) and gathers per-video scores on rank 0.
"""
from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.data import DataLoader, DistributedSampler, Subset

from orchestrator.config import ExperimentConfig, checkpoint_path, from_dict, model_kwargs

STATE_FILE = "state.pt"  # model/optimiser/scheduler/scaler/epoch/RNG/history: everything to resume
SCORES_FILE = "scores.npz"  # per-video test scores (models.late_fusion.VideoScores)
MODEL_FILE = "model.pt"  # final weights alone (an `init_checkpoint` for fine-tuning)

logger = logging.getLogger("actionlab.train")


def data_modalities(model_modality: str) -> tuple[str, ...]:
    """What the Dataset decodes for a model modality (RGB-difference is computed from RGB frames)."""
    return {"rgb": ("rgb",), "rgbdiff": ("rgb",), "flow": ("flow",), "rgb+flow": ("rgb", "flow")}[model_modality]


def build_dataset(cfg: ExperimentConfig, records, *, train: bool):
    from orchestrator.data.dataset import VideoDataset
    from orchestrator.data.sampling import make_sampler
    from orchestrator.data.transforms import ClipTransform

    d = cfg.data
    sampler = make_sampler(kind=d.sampler, train=train, clip_len=d.clip_len, stride=d.stride,
                           num_segments=d.num_segments, frames_per_segment=d.frames_per_segment,
                           num_clips=1 if train else d.test_clips)
    transform = ClipTransform(train=train, short_side=d.short_side, crop_size=d.crop_size,
                              crop=d.train_crop if train else d.test_crop, flip=train and d.flip)
    modalities = data_modalities(cfg.model.modality)
    flow_dir = d.resolved_flow_dir() if "flow" in modalities else None
    return VideoDataset(records, sampler=sampler, transform=transform, modalities=modalities,
                        flow_dir=flow_dir, seed=cfg.seed)


def prepare_inputs(batch_inputs: dict, cfg: ExperimentConfig, device) -> tuple[torch.Tensor | dict, int]:
    """uint8 {modality: (B, V, C, T, H, W)} -> normalised float model input with views folded into B.

    Returns the input ((B*V, C, T, H, W), or a dict of them for rgb+flow) and V.
    """
    from orchestrator.data.transforms import normalize_clip

    out, views = {}, 1
    for modality, clip in batch_inputs.items():
        views = clip.shape[1]
        clip = rearrange(clip.to(device, non_blocking=True), "b v c t h w -> (b v) c t h w")
        if cfg.model.modality == "rgbdiff":  # differences within each segment, never across two
            k = cfg.data.num_segments if cfg.data.sampler == "tsn" else 1
            out[modality] = normalize_clip(clip, "rgbdiff", num_segments=k)
        else:
            out[modality] = normalize_clip(clip, modality)
    return (out if cfg.model.modality == "rgb+flow" else next(iter(out.values()))), views


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def lr_lambda(cfg: ExperimentConfig, steps_per_epoch: int):
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero at the last step."""
    warmup = max(1, int(cfg.optim.warmup_epochs * steps_per_epoch))
    total = max(warmup + 1, cfg.optim.epochs * steps_per_epoch)

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


def train_one_epoch(model, loader, optimizer, scheduler, scaler, cfg: ExperimentConfig, device) -> dict:
    """One pass over this worker's shard. Returns loss, clip accuracy, skipped videos, timings."""
    model.train()
    use_amp = cfg.optim.amp and device.type == "cuda"
    loss_sum, correct, seen, skipped, wait_s = 0.0, 0, 0, 0, 0.0
    start = tick = time.perf_counter()
    for batch in loader:
        wait_s += time.perf_counter() - tick
        skipped += batch["num_skipped"]
        labels = batch["label"].to(device, non_blocking=True)
        if labels.numel() == 0:
            tick = time.perf_counter()
            continue
        x, _ = prepare_inputs(batch["inputs"], cfg, device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x)  # (B, K)
            loss = F.cross_entropy(logits.float(), labels)
            if hasattr(unwrap(model), "auxiliary_loss"):
                loss = loss + unwrap(model).auxiliary_loss()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.item() * labels.numel()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += labels.numel()
        tick = time.perf_counter()
    elapsed = time.perf_counter() - start
    return {"loss_sum": loss_sum, "correct": correct, "seen": seen, "skipped": skipped,
            "seconds": elapsed, "data_wait_s": wait_s}


@torch.no_grad()
def evaluate(model, dataset, cfg: ExperimentConfig, device, *, rank: int, world: int) -> dict | None:
    """Clip and video accuracy over every view of every test video, computed once on rank 0.

    Each rank scores the videos rank, rank+world, ... (no padding); rank 0 gathers
    {index: (label, per-view logits)} and returns
    {'indices' (N,), 'labels' (N,), 'video_scores' (N, K) mean logits over views,
     'clip_top1', 'skipped'}; other ranks return None.
    """
    from orchestrator.data.dataset import collate_skip_bad

    model.eval()
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=cfg.optim.batch_size, num_workers=cfg.data.loader_workers,
                        collate_fn=collate_skip_bad)
    indices, labels, scores, clip_correct, clip_total, skipped = [], [], [], 0, 0, 0
    use_amp = cfg.optim.amp and device.type == "cuda"
    for batch in loader:
        skipped += batch["num_skipped"]
        if batch["label"].numel() == 0:
            continue
        x, views = prepare_inputs(batch["inputs"], cfg, device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x).float()
        logits = rearrange(logits, "(b v) k -> b v k", v=views).cpu()
        y = batch["label"]
        clip_correct += (logits.argmax(2) == y[:, None]).sum().item()
        clip_total += logits.shape[0] * views
        indices.append(batch["index"])
        labels.append(y)
        scores.append(logits.mean(1))
    local = (torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
             torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
             torch.cat(scores) if scores else torch.zeros(0, 0), clip_correct, clip_total, skipped)
    parts = [local]
    if world > 1:
        parts = [None] * world
        torch.distributed.all_gather_object(parts, local)
    if rank != 0:
        return None
    skipped = sum(p[5] for p in parts)
    parts = [p for p in parts if p[0].numel()]
    if not parts:
        return {"indices": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64), "video_scores": np.zeros((0, 0)),
                "clip_top1": 0.0, "skipped": skipped}
    order = torch.cat([p[0] for p in parts]).argsort()
    return {
        "indices": torch.cat([p[0] for p in parts])[order].numpy(),
        "labels": torch.cat([p[1] for p in parts])[order].numpy(),
        "video_scores": torch.cat([p[2] for p in parts])[order].numpy().astype(np.float32),
        "clip_top1": sum(p[3] for p in parts) / max(1, sum(p[4] for p in parts)),
        "skipped": skipped,
    }


def _sum_across_workers(values: dict, device, world: int) -> dict:
    if world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point. loop_config: {'experiment': ExperimentConfig.to_dict()}."""
    import ray
    import ray.train
    import ray.train.torch

    from models import build_model
    from orchestrator.data.annotations import read_train_test
    from orchestrator.data.dataset import collate_skip_bad

    cfg = from_dict(loop_config["experiment"], check_paths=False)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    nodes = [ray.get_runtime_context().get_node_id()] * world
    if world > 1:  # where the data-parallel replicas landed, for the run's record
        torch.distributed.all_gather_object(nodes, nodes[0])
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts)

    d = cfg.data
    train_split, test_split = read_train_test(d.dataset, root=d.root, annotations=d.annotations, split=d.split,
                                              test_annotations=d.test_annotations)
    missing = {"train": len(train_split.problems), "test": len(test_split.problems)}
    if rank == 0 and any(missing.values()):  # left out by the reader: never seen by the Dataset
        for path, reason in (train_split.problems + test_split.problems)[:20]:
            logger.warning("left out %s: %s", path, reason)
        logger.warning("left out %d training and %d test list entries (`actionlab data check` lists all)",
                       missing["train"], missing["test"])
    train_set = build_dataset(cfg, train_split.records, train=True)
    test_set = build_dataset(cfg, test_split.records, train=False)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)

    train_loader = DataLoader(train_set, batch_size=cfg.optim.batch_size, sampler=sampler,
                              num_workers=d.loader_workers, collate_fn=collate_skip_bad,
                              pin_memory=device.type == "cuda")  # not persistent: workers must see set_epoch

    model = build_model(cfg.model.architecture, num_classes=len(train_split.class_names), **model_kwargs(cfg))
    if cfg.model.init_checkpoint:  # the "pretraining" ablation: weights of an earlier run
        from models.pretrained import load_checkpoint

        load_checkpoint(model, checkpoint_path(cfg), skip_head=True)
    model = ray.train.torch.prepare_model(model)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, len(train_loader)))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.optim.amp and device.type == "cuda")

    parts = {"model": unwrap(model), "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    start_epoch, history = restore(ray.train.get_checkpoint(), parts)

    for epoch in range(start_epoch, cfg.optim.epochs):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        # join(): a rank whose batch held only unreadable videos skips a step; DDP's join keeps the
        # other ranks' gradient all-reduces from waiting for it
        with model.join() if world > 1 else contextlib.nullcontext():
            stats = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, cfg, device)
        stats = _sum_across_workers(stats, device, world)
        last = epoch == cfg.optim.epochs - 1
        result = None
        if last or (epoch + 1) % cfg.optim.eval_every == 0:
            # the bare module: DDP's forward would broadcast buffers, a collective that hangs when
            # one rank has no test batch
            result = evaluate(unwrap(model), test_set, cfg, device, rank=rank, world=world)
        metrics = epoch_metrics(stats, result, epoch=epoch, lr=scheduler.get_last_lr()[0], world=world)
        metrics.update({"resumed_from_epoch": start_epoch, "scaling/num_nodes": len(set(nodes)),
                        "data/unlisted_train_videos": missing["train"], "data/unlisted_test_videos": missing["test"]})
        history.append(metrics)
        skipped = (metrics["data/skipped_videos"], metrics.get("data/skipped_test_videos", 0))
        if rank == 0 and any(skipped):
            logger.warning("epoch %d: skipped %d training and %d test videos that could not be read (each named "
                           "in a warning above; `actionlab data check` lists them all)", epoch, *skipped)

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:  # one copy of the state; every rank still reports (Train V2 requires it)
                torch.save({**{k: v.state_dict() for k, v in parts.items()}, "torch_rng": torch.get_rng_state(),
                            "epoch": epoch, "history": history}, Path(tmp) / STATE_FILE)
                if last:
                    write_final_outputs(Path(tmp), unwrap(model), cfg, test_split, result)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def restore(checkpoint, parts: dict) -> tuple[int, list]:
    """Load model/optimizer/scheduler/scaler/RNG from a Ray checkpoint, if there is one.

    A restarted worker group continues where the last report left off.
    Returns (first epoch to run, metrics history so far).
    """
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as ckpt_dir:
        state = torch.load(Path(ckpt_dir) / STATE_FILE, map_location="cpu", weights_only=True)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    return state["epoch"] + 1, state["history"]


def epoch_metrics(stats: dict, result: dict | None, *, epoch: int, lr: float, world: int) -> dict:
    """One epoch's report: training stats summed over workers, plus validation when it ran."""
    from orchestrator.metrics import topk_accuracy

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
    if result is not None:
        metrics["data/skipped_test_videos"] = result["skipped"]
        if len(result["labels"]):
            metrics["val/clip_top1"] = result["clip_top1"]
            metrics["val/video_top1"] = topk_accuracy(result["labels"], result["video_scores"], 1)
    return metrics


def write_final_outputs(out_dir: Path, model, cfg: ExperimentConfig, test_split, result: dict | None) -> None:
    """The last epoch's extras: final weights (a fine-tuning `init_checkpoint`) and per-video scores."""
    from models.late_fusion import VideoScores, save_scores

    torch.save({"model": model.state_dict(), "architecture": cfg.model.architecture,
                "modality": cfg.model.modality, "class_names": test_split.class_names}, out_dir / MODEL_FILE)
    if result is not None:
        ids = np.array([test_split.records[i].video_id for i in result["indices"]])
        save_scores(out_dir / SCORES_FILE, VideoScores(ids, result["labels"].astype(np.int64), result["video_scores"]))
