"""The per-worker loop's pieces, without Ray: schedule, input preparation, an epoch with a bad video,
sharded evaluation over two ranks, and a resumed run that continues exactly where it stopped."""
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from orchestrator.config import input_spec, parse_experiment
from orchestrator.errors import UserError
from orchestrator.data.annotations import read_split
from orchestrator.data.dataset import build_dataset, collate_skip_bad
from orchestrator.data.synth import SynthSpec, write_synthetic_ucf
from orchestrator.training import loop
from orchestrator.training.elastic import Schedule, step_batch
from orchestrator.training.loop import build_optimizer, lr_lambda, prepare_inputs, train_one_epoch


def config(**sections):
    raw = {"data": {"num_segments": 2, "short_side": 32, "crop_size": 32, "loader_workers": 0},
           "model": {"architecture": "tsn", "width": 0.125, "options": {"backbone": "resnet18"}},
           "optim": {"epochs": 4, "warmup_epochs": 1, "batch_size": 4}}
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return parse_experiment(raw)


@pytest.mark.parametrize("sched,step,factor", [
    # 4 epochs of 4 steps: 1 warm-up epoch = 4 steps (0.25 .. 1.0), cosine to 0 at step 16
    (Schedule(4, 16, 4, False), 0, 0.25), (Schedule(4, 16, 4, False), 3, 1.0), (Schedule(4, 16, 4, False), 4, 1.0),
    (Schedule(4, 16, 4, False), 10, 0.5), (Schedule(4, 16, 4, False), 16, 0.0),
    # optim.iterations 10 at 4 steps an epoch: the cosine ends at step 10, inside the third epoch
    (Schedule(3, 10, 4, True), 7, 0.5), (Schedule(3, 10, 4, True), 10, 0.0),
])
def test_warmup_then_cosine(sched, step, factor):
    assert lr_lambda(config(), sched)(step) == pytest.approx(factor, abs=1e-6)


def test_rgbdiff_inputs_difference_within_segments():
    cfg = config(model={"modality": "rgbdiff"}, data={"frames_per_segment": 3})
    clip = torch.randint(0, 256, (2, 1, 3, 6, 32, 32), dtype=torch.uint8)  # (B, V, C, K*(L+1), H, W)
    x, views = prepare_inputs({"rgb": clip}, cfg, torch.device("cpu"))
    assert views == 1 and x.shape == (2, 3, 4, 32, 32)  # K=2 segments x L=2 differences
    assert input_spec(cfg).builder_kwargs["frames_per_segment"] == 2


def test_an_epoch_skips_a_bad_video_with_a_warning_and_a_count(tmp_path, caplog):
    write_synthetic_ucf(tmp_path, SynthSpec(groups=3, clips_per_group=1, num_frames=16), progress=False)
    cfg = config(data={"root": str(tmp_path / "UCF101"), "annotations": str(tmp_path / "ucfTrainTestlist")})
    split = read_split("ucf101", root=cfg.data.root, annotations=cfg.data.annotations, subset="train")
    split.records[0].path.write_text("this is not a video")
    dataset = build_dataset(cfg, split.records, train=True)
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_skip_bad)
    torch.manual_seed(0)
    from models import build_model

    model = build_model("tsn", num_classes=len(split.class_names), **input_spec(cfg).builder_kwargs)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    sb = step_batch(batch_size=4, max_workers=1, world=1, on_resize="keep_global_batch")
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        stats = train_one_epoch(model, loader, optimizer, scaler, cfg, torch.device("cpu"), sb=sb,
                                lr_at=lambda clip: cfg.optim.lr)
    assert stats["skipped"] == 1
    assert stats["seen"] == len(split.records) - 1
    assert torch.isfinite(torch.tensor(stats["loss_sum"]))
    assert str(split.records[0].path) in caplog.text


@pytest.fixture(scope="module")
def tiny_ucf(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_ucf")
    write_synthetic_ucf(out, SynthSpec(groups=3, clips_per_group=1, num_frames=16), progress=False)
    return {"root": str(out / "UCF101"), "annotations": str(out / "ucfTrainTestlist")}


def test_two_ranks_score_every_test_video_once_with_its_label(tiny_ucf, monkeypatch):
    """world = 2 with a faked all_gather_object: rank 1 scores its shard, rank 0 gathers and merges."""
    cfg = config(data=tiny_ucf, optim={"batch_size": 3})
    w = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    model = loop.unwrap(w.model)
    shard_1 = loop.score_shard(model, w.test_set, cfg, torch.device("cpu"), rank=1, world=2)

    def fake_gather(parts, local):  # what torch.distributed does across the two processes
        parts[:] = [local, shard_1]

    monkeypatch.setattr(torch.distributed, "all_gather_object", fake_gather)
    result = loop.evaluate(model, w.test_set, cfg, torch.device("cpu"), rank=0, world=2)
    assert loop.evaluate(model, w.test_set, cfg, torch.device("cpu"), rank=1, world=2) is None
    records = w.test_set.records
    assert result.indices.tolist() == list(range(len(records)))  # each video once, in dataset order
    assert result.labels.tolist() == [r.label for r in records]
    assert shard_1.indices.tolist() == list(range(1, len(records), 2))
    assert result.video_scores.shape == (len(records), len(w.splits.test.class_names))
    alone = loop.evaluate(model, w.test_set, cfg, torch.device("cpu"), rank=0, world=1)
    assert torch.allclose(torch.from_numpy(result.video_scores), torch.from_numpy(alone.video_scores), atol=1e-5)
    assert result.clip_top1 == pytest.approx(alone.clip_top1)


def test_a_resumed_run_continues_where_it_stopped(tiny_ucf, tmp_path):
    """Two epochs straight vs one epoch, save, a fresh worker, load, one epoch: the same weights,
    optimiser state, learning rate and RNG, because the checkpoint holds all of them."""
    cfg = config(data=tiny_ucf, model={"dropout": 0.5}, optim={"epochs": 2, "eval_every": 2})
    cpu = torch.device("cpu")
    straight = loop.setup_worker(cfg, rank=0, world=1, device=cpu)
    history = [loop.run_epoch(straight, epoch)[0] for epoch in range(2)]
    rng_straight = torch.get_rng_state()

    first = loop.setup_worker(cfg, rank=0, world=1, device=cpu)
    loop.save_state(first, tmp_path, at=loop.Progress(1), history=[loop.run_epoch(first, 0)[0]])
    torch.manual_seed(12345)  # a restarted process starts from another RNG state
    resumed = loop.setup_worker(cfg, rank=0, world=1, device=cpu)
    start, resumed_history = loop.load_state(resumed, tmp_path)
    assert start == loop.Progress(1) and len(resumed_history) == 1
    resumed_history.append(loop.run_epoch(resumed, 1)[0])
    assert torch.equal(torch.get_rng_state(), rng_straight)

    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert resumed.counters == {**straight.counters, "restarts": 1} and straight.counters["steps"] > 0
    momentum = [s["momentum_buffer"] for s in straight.optimizer.state_dict()["state"].values()]
    for a, b in zip(momentum, [s["momentum_buffer"] for s in resumed.optimizer.state_dict()["state"].values()]):
        assert torch.equal(a, b)
    assert resumed_history[1]["train/loss"] == pytest.approx(history[1]["train/loss"])
    assert resumed_history[1]["val/video_top1"] == history[1]["val/video_top1"]


def test_precision_resolves_per_device_and_bf16_trains_on_cpu(tiny_ucf):
    cpu = torch.device("cpu")
    assert loop.autocast_dtype("auto", cpu) is None  # fp32 on CPU
    assert loop.autocast_dtype("bf16", cpu) is torch.bfloat16 and loop.autocast_dtype("fp16", cpu) is torch.float16
    cfg = config(data=tiny_ucf, optim={"epochs": 1, "precision": "bf16"})
    w = loop.setup_worker(cfg, rank=0, world=1, device=cpu)
    assert not w.scaler.is_enabled()  # bf16 needs no loss scaling
    metrics, result = loop.run_epoch(w, 0)
    assert metrics["precision"] == "bf16" and torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert result.video_scores.dtype == np.float32


def test_channels_last_keeps_the_outputs_and_unwrap_sees_through_compile():
    from models import build_model

    torch.manual_seed(0)
    model = build_model("c3d", num_classes=3, width=0.125).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    before = model(x)
    loop.to_channels_last(model)
    conv = model.conv1.weight  # 5D: NDHWC
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last_3d)), before, atol=1e-5)
    assert loop.unwrap(torch.compile(model)) is model  # compiling is lazy: nothing runs here


@pytest.mark.parametrize("setting,cpus,workers", [
    ("auto", 1, 0),  # one CPU: decode in the training process
    ("auto", 8, 7),  # a GPU worker holding 8 CPUs: 7 decode, 1 trains
    ("auto", 2.5, 1),
    (3, 8, 3),  # a number is taken as given
    (0, 8, 0),
])
def test_loader_workers_follow_the_cpus_a_worker_holds(setting, cpus, workers):
    assert loop.loader_workers(setting, cpus) == workers


def test_persistent_loader_workers_draw_each_epochs_clips(tiny_ucf):
    """Workers kept across epochs get the epoch with every key: the same clips as the main process."""
    cfg = config(data={**tiny_ucf, "loader_workers": 1}, optim={"batch_size": 3})
    w = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"), cpus=2)
    assert w.num_workers == 1 and w.train_loader.persistent_workers
    reference = loop.setup_worker(config(data=tiny_ucf, optim={"batch_size": 3}), rank=0, world=1,
                                  device=torch.device("cpu"))
    clips = []
    for epoch in range(2):
        for setup in (w, reference):
            setup.train_batches.set_epoch(epoch)
        batches = [next(iter(setup.train_loader))["inputs"]["rgb"] for setup in (w, reference)]
        assert torch.equal(*batches)  # worker process == main process, epoch by epoch
        clips.append(batches[0])
    assert not torch.equal(*clips)  # and epoch 1 drew other clips than epoch 0


def test_val_selects_and_the_test_list_is_scored_once_with_the_kept_weights(tiny_ucf, tmp_path):
    """data.val carves one of the two training groups; optim.keep best_val keeps the weights of the best
    val epoch, which the test list is then scored with, once, after the last epoch."""
    cfg = config(data=tiny_ucf, optim={"epochs": 3, "keep": "best_val", "lr": 0.05})
    w = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    val_ids, test_ids = ({r.video_id for r in s.records} for s in (w.splits.val, w.splits.test))
    train_ids = {r.video_id for r in w.splits.train.records}
    assert val_ids and not val_ids & train_ids and not val_ids & test_ids
    history = []
    for epoch in range(3):
        metrics, test = loop.run_epoch(w, epoch)
        history.append(metrics)
        assert (test is None) == (epoch < 2)  # the test list only after the last epoch
    best = int(np.argmax([m["val/video_top1"] for m in history]))  # the first of equals
    assert history[-1]["selected_epoch"] == w.best["epoch"] == best
    for name, tensor in loop.unwrap(w.model).state_dict().items():  # the model now holds the kept weights
        assert torch.equal(tensor, w.best["model"][name])
    rescored = loop.evaluate(loop.unwrap(w.model), w.test_set, cfg, torch.device("cpu"), rank=0, world=1)
    assert np.allclose(rescored.video_scores, test.video_scores, atol=1e-5)
    assert history[-1]["test/video_top1"] == pytest.approx(float((test.video_scores.argmax(1) == test.labels).mean()))
    loop.write_run_outputs(w, tmp_path, test, history)
    from orchestrator.runs import load_scores
    assert set(load_scores(tmp_path / "val_scores.npz").video_ids) == val_ids
    assert set(load_scores(tmp_path / "scores.npz").video_ids) == test_ids


def test_without_a_val_list_the_test_list_stands_in(tiny_ucf):
    cfg = config(data={**tiny_ucf, "val": None}, optim={"epochs": 1})
    w = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    assert w.splits.val is None and w.selection_set is w.test_set
    metrics, test = loop.run_epoch(w, 0)
    assert metrics["val/video_top1"] == metrics["test/video_top1"]


def test_a_resumed_best_val_run_keeps_the_best_epoch_it_had(tiny_ucf, tmp_path):
    cfg = config(data=tiny_ucf, optim={"epochs": 3, "keep": "best_val"})
    first = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    history = [loop.run_epoch(first, epoch)[0] for epoch in range(2)]
    loop.save_state(first, tmp_path, at=loop.Progress(2), history=history)
    resumed = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    assert loop.load_state(resumed, tmp_path) == (loop.Progress(2), history)
    assert resumed.best["epoch"] == first.best["epoch"] and resumed.best["val_top1"] == first.best["val_top1"]
    assert all(torch.equal(v, first.best["model"][k]) for k, v in resumed.best["model"].items())
    assert np.array_equal(resumed.kept_val.video_scores, first.kept_val.video_scores)


def test_a_run_given_in_iterations_stops_at_its_last_step(tiny_ucf):
    """optim.iterations 6 on 8 training videos in steps of 2 clips: 2 epochs, the second stopping after its
    second step, with the test list scored then; the epochs, the planned and the taken steps are reported."""
    cfg = config(data={**tiny_ucf, "val": None}, optim={"batch_size": 2, "epochs": None, "iterations": 6})
    w = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    assert len(w.train_set) == 8 and w.schedule == Schedule(2, 6, 4, True)
    first, test = loop.run_epoch(w, 0)
    assert test is None and (first["train/steps"], first["train/epochs"], first["train/planned_steps"]) == (4, 2, 6)
    last, test = loop.run_epoch(w, 1)
    assert test is not None and last["train/steps"] == w.counters["steps"] == 6
    # the last step's learning rate: step 5 of the cosine that ends at step 6
    assert w.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * lr_lambda(cfg, w.schedule)(5))


def test_training_drops_a_last_batch_of_one_clip(tiny_ucf):
    """4 training videos in batches of 3: one step of 3; the last batch of 1 would stop BatchNorm."""
    cfg = config(data=tiny_ucf, optim={"batch_size": 3, "epochs": 1})
    w = loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu"))
    assert len(w.train_set) == 4 and len(w.train_loader) == 1
    assert loop.run_epoch(w, 0)[0]["train/clip_top1"] >= 0 and w.counters["steps"] == 1
    stats = loop.train_one_epoch(w.model, w.train_loader, w.optimizer, w.scaler, cfg, w.device, sb=w.step,
                                 lr_at=lambda clip: 0.1)
    assert stats["seen"] == 3


def test_a_step_larger_than_the_training_list_is_refused(tiny_ucf):
    step = (r"one step takes 6 clips \(optim.batch_size 3 x 2 workers\) but the training list holds 4 videos: "
            r"lower optim.batch_size or scaling.num_workers")
    with pytest.raises(UserError, match=step):
        loop.setup_worker(config(data=tiny_ucf, optim={"batch_size": 3}), rank=0, world=2, device=torch.device("cpu"))


def test_evaluation_feeds_at_most_eval_batch_size_views_and_scores_the_same(tiny_ucf):
    """3 clips x three crops = 9 views per video; eval_batch_size 4: one video per loader batch, its
    views in forward passes of 4, 4 and 1; the scores are those of one pass over everything."""
    data = {**tiny_ucf, "test_clips": 3, "test_crop": "three"}
    chunked = config(data=data, optim={"eval_batch_size": 4})
    w = loop.setup_worker(chunked, rank=0, world=1, device=torch.device("cpu"))
    model = loop.unwrap(w.model)
    sizes = []
    hook = model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    result = loop.evaluate(model, w.test_set, chunked, w.device, rank=0, world=1)
    hook.remove()
    assert loop.eval_videos_per_batch(chunked) == 1
    assert max(sizes) == 4 and sum(sizes) == 9 * len(w.test_set)
    whole = loop.evaluate(model, w.test_set, config(data=data, optim={"eval_batch_size": 64}), w.device, rank=0, world=1)
    assert np.allclose(result.video_scores, whole.video_scores, atol=1e-5) and result.clip_top1 == whole.clip_top1


def test_the_resume_state_holds_the_cuda_rng(tiny_ucf, tmp_path, monkeypatch):
    """A GPU run's dropout draws from the CUDA generator: a resumed run must restore it too."""
    import dataclasses

    generator = {"state": torch.arange(16, dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": generator["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": generator.update(state=state))
    cfg = config(data=tiny_ucf, optim={"epochs": 1})
    w = dataclasses.replace(loop.setup_worker(cfg, rank=0, world=1, device=torch.device("cpu")),
                            device=torch.device("cuda"))  # only save_state / load_state see the device
    loop.save_state(w, tmp_path, at=loop.Progress(1), history=[])
    generator["state"] = torch.zeros(16, dtype=torch.uint8)  # the restarted process's generator
    loop.load_state(w, tmp_path)
    assert torch.equal(generator["state"], torch.arange(16, dtype=torch.uint8))
