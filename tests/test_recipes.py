"""The recipes for real data sets (experiments/recipes/): each parses, carries the paper's figure, feeds
every variant's model the paper's clip (meta device), the folder covers the papers' architecture x
data set table, the settings taken from the papers and their authors' code are there, and every
variant trains one epoch and scores every test video on a tiny data set in its data set's official
layout (CPU, no Ray)."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_layout
from orchestrator.config import with_overrides
from orchestrator.data.annotations import read_all_subsets
from orchestrator.data.flow import extract_flow
from orchestrator.late_fusion import choose_fusion, fuse_scores
from orchestrator.plan import plan
from orchestrator.preflight import check_model, load_experiment
from orchestrator.training import loop

RECIPES = sorted((Path(__file__).parents[1] / "experiments" / "recipes").glob("*.yaml"))
# (architecture, data.dataset) pairs the papers report and the folder must cover
REQUIRED = {(arch, dataset) for arch in ("tsn", "two_stream", "i3d", "c3d", "lrcn") for dataset in ("ucf101", "hmdb51")}
REQUIRED |= {("i3d", "kinetics"), ("tsn", "kinetics")}


def covered(cfg) -> set[tuple[str, str]]:
    return {(v.config.model.architecture, v.config.data.dataset) for v in plan(cfg).runs.values()}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_feeds_each_model_the_papers_clip(recipe):
    cfg = load_experiment(recipe)
    assert cfg.study and cfg.study.expected, f"{recipe.name}: a recipe is a study with the paper's figure"
    assert all(e.source.strip() for e in cfg.study.expected.values())
    for v in plan(cfg).runs.values():
        assert v.config.data.split == 1 and not v.config.data.synth
        check_model(v.config, v.inputs)  # the paper-size model eats the paper-size clip (meta device: no memory, no time)


def test_recipes_cover_the_papers_architecture_x_data_set_table():
    have = set().union(*(covered(load_experiment(p)) for p in RECIPES))
    assert REQUIRED <= have, f"no recipe for {sorted(REQUIRED - have)}"


# --- settings the papers and their authors' code fix (each recipe's header cites its source) ----

def recipe(stem: str):
    return load_experiment(next(p for p in RECIPES if p.stem == stem))


def variant_configs(stem: str) -> dict:
    return {v.variant: v.config for v in plan(recipe(stem)).runs.values()}


# the first stream's (RGB's) weight and the fusion mode
PAPER_FUSION = {
    # RGB : flow = 1 : 1.5 on pre-softmax scores: TSN's tools/eval_scores.py --score_weights 1 1.5
    "tsn_ucf101": (0.4, "logits"),
    "tsn_hmdb51": (0.4, "logits"),
    "tsn_kinetics400": (0.5, "logits"),  # the TSN authors' Kinetics models: RGB + flow 1 : 1
    # logits added with equal weight: kinetics-i3d's evaluate_sample.py
    "i3d_ucf101": (0.5, "logits"),
    "i3d_hmdb51": (0.5, "logits"),
    "i3d_kinetics400": (0.5, "logits"),
}


@pytest.mark.parametrize("stem, rule", PAPER_FUSION.items())
def test_tsn_and_i3d_fuse_their_streams_by_the_authors_rule(stem, rule):
    fusion = recipe(stem).study.late_fusion["two_stream"]
    assert fusion.streams == ("rgb", "flow") and (fusion.weight, fusion.resolved_mode) == rule


@pytest.mark.parametrize("stem", ["tsn_ucf101", "tsn_hmdb51", "tsn_kinetics400"])
def test_tsn_clips_the_gradient_norm_at_40_for_rgb_and_20_for_flow(stem):
    """The authors' solvers: models/{ucf101,hmdb51}/tsn_bn_inception_{rgb,flow}_solver.prototxt."""
    variants = variant_configs(stem)
    assert (variants["rgb"].optim.grad_clip, variants["flow"].optim.grad_clip) == (40, 20)


@pytest.mark.parametrize("stem, metric", [("tsn_ucf101", "test/video_mean_class_acc"),
                                          ("tsn_hmdb51", "test/video_mean_class_acc"),
                                          ("tsn_kinetics400", "test/video_top1")])  # the Kinetics page: top-1
def test_tsn_figures_compare_with_the_metric_their_source_reports(stem, metric):
    assert {e.metric for e in recipe(stem).study.expected.values()} == {metric}


@pytest.mark.parametrize("stem", ["i3d_ucf101", "i3d_hmdb51", "i3d_kinetics400"])
def test_i3d_samples_video_resampled_to_25_fps(stem):
    assert {c.data.fps for c in variant_configs(stem).values()} == {25}


def test_i3d_kinetics_trains_with_the_authors_batch_weight_decay_and_steps():
    """kinetics-i3d's README: minibatch 6 on each of 64 replicas, weight decay 1e-7, RGB 115k and flow
    155k steps; on fewer GPUs keep_global_batch keeps 6 x 64 clips a step (gradient accumulation)."""
    cfg, variants = recipe("i3d_kinetics400"), variant_configs("i3d_kinetics400")
    assert cfg.optim.batch_size == 6 and cfg.scaling.max_workers == 64
    assert cfg.scaling.on_resize == "keep_global_batch"
    assert {c.optim.weight_decay for c in variants.values()} == {1e-7}
    assert (variants["rgb"].optim.iterations, variants["flow"].optim.iterations) == (115_000, 155_000)


def test_i3d_hmdb51_quotes_the_imagenet_then_kinetics_headline():
    header = next(p for p in RECIPES if p.stem == "i3d_hmdb51").read_text()
    assert "(80.7 on HMDB-51" in header and "(80.9 on HMDB-51" not in header


@pytest.mark.parametrize("stem", ["c3d_ucf101", "c3d_hmdb51"])
def test_c3d_from_scratch_follows_the_authors_solver(stem):
    """C3D's conv3d_ucf101_solver.prototxt: weight decay 0.005, 60,000 iterations of 30 clips."""
    cfg = recipe(stem)
    assert cfg.optim.weight_decay == 0.005 and cfg.optim.batch_size * cfg.scaling.max_workers == 30
    assert cfg.optim.iterations == 60_000


# "20,000 iterations", "115k steps", "up to 5k steps": a schedule the header's source gives in steps
ITERATION_COUNT = re.compile(r"\d[\d,.]*k? (?:iterations|steps)\b")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_a_schedule_published_in_iterations_is_given_in_iterations(recipe):
    """Epochs from the whole training list would run ~80 % of those steps once data.val takes its share
    (issue 21): such a recipe sets optim.iterations in every variant; the others keep optim.epochs."""
    header = recipe.read_text().split("\nname:")[0]
    in_iterations = {v.config.optim.iterations is not None for v in plan(load_experiment(recipe)).runs.values()}
    assert in_iterations == {bool(ITERATION_COUNT.search(header))}


@pytest.mark.parametrize("stem", ["lrcn_ucf101", "lrcn_hmdb51"])
def test_lrcn_drops_0_9_of_the_cnn_features_and_0_5_of_the_lstm_output(stem):
    """LRCN's train_test_lstm_RGB.prototxt: drop6 (after fc6) 0.9, lstm1-drop 0.5; and the model built
    from the recipe has both."""
    from models import build_model

    for config in variant_configs(stem).values():
        m = config.model
        assert (m.options["feature_dropout"], m.dropout) == (0.9, 0.5)
        model = build_model("lrcn", num_classes=3, modality=m.modality, width=1 / 16, dropout=m.dropout, **m.options)
        assert (model.feature_dropout.p, model.dropout.p) == (0.9, 0.5)


# --- one epoch of every variant on a tiny data set ----------------------------------------------

# 65 frames: every recipe's clip fits unchanged (I3D reads 64 consecutive frames, or 64 flow fields).
NUM_FRAMES = 65
# per class: enough videos that data.val holds some out of the training list: ucf101 4 groups (1 test
# group, 1 val group, 2 to train), hmdb51 6 videos (2 train, of which 1 goes to val, 2 test, 2 unused),
# kinetics 2 train, its own val, 1 labelled test video (and one unlabelled test row, not scored)
PER_CLASS = {"ucf101": 4, "hmdb51": 6, "kinetics": 3}

# What the smoke run changes, and why; everything else (sampler, clip length, segments, crops, flips,
# test crops, batch, optimiser, schedule, data.val, optim.keep) is the recipe's.
SMOKE = {
    "optim.epochs": 1,
    # imagenet: torchvision would download the weights; nothing is downloaded here (the meta test
    # above builds each model at the paper's size)
    "model.pretrained": None,
    # at the paper's 224 (C3D: 112) crops, with up to 250 test views per video (25 x 10 crops), a run
    # takes minutes on 2 cores; 32 still passes every stride of every network (32x down to 1x1)
    "data.short_side": 36,
    "data.crop_size": 32,
    # the tiny sets train on 2 to 8 videos and training drops a last partial batch; `actionlab rehearse`
    # (run by .ci/run) trains each recipe at its own batch and crop on 2 processes
    "optim.batch_size": 2,
    # one process trains here, and a step takes optim.batch_size x the max workers clips whatever the world
    # size (scaling.on_resize keep_global_batch): 2 x 64 for i3d_kinetics400, more than a tiny set holds
    "scaling.num_workers": 1,
}
# test views per video: the recipes' 8-25 (x 10 crops for TSN and two-stream) made evaluation most of
# the time (this file: 60 s instead of 25 s on lightly loaded cores, over 3 minutes beside another
# job); 2 views take the same code path (views and crops averaged per video, data.test_crop unchanged)
SMOKE_TEST_CLIPS = 2


@pytest.fixture(scope="session")
def tiny_sets(tmp_path_factory) -> dict[str, dict]:
    """dataset -> the data fields a smoke run points at it: root, annotations, and a flow cache in the
    recipes' format (jpg), by Farneback: the recipes' TV-L1 takes ~1.7 s per 65-frame 64x32 video here
    (a minute for these sets), Farneback 0.04 s."""
    sets = {}
    for dataset, per_class in PER_CLASS.items():
        folder = tmp_path_factory.mktemp(dataset)
        root, annotations = write_layout(dataset, folder, num_frames=NUM_FRAMES, per_class=per_class,
                                         kinetics_test_per_class=1)
        records = read_all_subsets(dataset, root=root, annotations=annotations, split=1).records
        summary = extract_flow(records, flow_dir=folder / "flow", method="farneback", fmt="jpg", use_ray=False,
                               progress=False)
        assert not summary.failed and summary.computed == len(records)
        sets[dataset] = {"data.root": str(root), "data.annotations": str(annotations),
                         "data.flow_dir": str(folder / "flow"), "data.flow_method": "farneback"}
    return sets


@pytest.fixture()
def one_torch_thread():
    """One intra-op thread: beside another job on these 2 cores, torch's two OpenMP threads spin-wait
    against it (this file, measured beside a Ray training job: 150 s with two threads, 52 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_one_epoch_of_every_variant_on_a_tiny_set_in_its_layout(recipe, tiny_sets, one_torch_thread):
    cfg = load_experiment(recipe)
    scored = {}  # variant -> (val, test) VideoScores
    for label, variant in plan(cfg).runs.items():
        smoke = {**tiny_sets[variant.config.data.dataset], **SMOKE,
                 "data.test_clips": min(SMOKE_TEST_CLIPS, variant.config.data.test_clips)}
        run = with_overrides(variant.config, smoke)
        w = loop.setup_worker(run, rank=0, world=1, device=torch.device("cpu"))
        metrics, test = loop.run_epoch(w, 0)
        assert math.isfinite(metrics["train/loss"]), label
        assert metrics["data/skipped_videos"] == 0 and metrics["data/skipped_val_videos"] == 0, label
        # data.val held videos out of the training list, scored them, and kept the scores that
        # late_fusion weight: auto fuses
        assert len(w.val_set) > 0 and 0.0 <= metrics["val/video_top1"] <= 1.0, label
        assert w.kept_val.indices.tolist() == list(range(len(w.val_set))), label
        # then the test list, once: every video scored, in order, a finite score per class
        assert len(w.test_set) > 0 and 0.0 <= metrics["test/video_top1"] <= 1.0, label
        assert test.indices.tolist() == list(range(len(w.test_set))) and test.skipped == 0, label
        assert test.video_scores.shape == (len(w.test_set), len(w.splits.test.class_names)), label
        assert np.isfinite(test.video_scores).all(), label
        names = tuple(w.splits.test.class_names)
        scored[variant.variant] = (loop.video_scores(w.splits.val, w.kept_val, names),
                                   loop.video_scores(w.splits.test, test, names))
    for name, fusion in cfg.study.late_fusion.items():  # offline, as `actionlab ablate` fuses after the runs
        (a_val, a_test), (b_val, b_test) = scored[fusion.streams[0]], scored[fusion.streams[1]]
        weight, mode = fusion.weight, fusion.resolved_mode  # the paper's fixed rule (TSN, I3D) ...
        if fusion.weight == "auto":  # ... or the one data.val chooses (two-stream, LRCN)
            choice = choose_fusion(a_val, b_val)
            assert choice.val_top1 >= max(choice.val_top1_a, choice.val_top1_b), name
            weight, mode = choice.weight, choice.mode
        fused = fuse_scores(a_test, b_test, weight=weight, mode=mode)  # ValueError unless same videos
        assert len(fused.labels) == len(a_test.labels) and np.isfinite(fused.scores).all(), name
