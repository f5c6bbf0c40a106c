"""`actionlab rehearse`: the layouts it writes, what it changes in a recipe (and nothing else), the
sizes it picks, and the evaluation batch of the papers' 250-view flow test at its real size.
(.ci/run rehearses one recipe per architecture family on 2 processes through the command.)"""
from pathlib import Path

import pytest

from orchestrator.config import ValSplit
from orchestrator.data.annotations import read_run_splits
from orchestrator.data.layouts import LAYOUT_PATHS, LAYOUTS, write_layout
from orchestrator.preflight import load_experiment
from orchestrator.rehearse import input_bytes, layout_sizes, plan_rehearsal, predict_step_bytes

RECIPES = sorted((Path(__file__).parents[1] / "experiments" / "recipes").glob("*.yaml"))
# what a rehearsal may change: the width (and the weights that fit only the full width), the data it
# reads (generated: fewer videos), the flow method (speed), and where and on what it runs
CHANGEABLE = {"model.width", "model.pretrained", "model.init_checkpoint", "data.root", "data.annotations",
              "data.test_annotations", "data.synth", "data.flow_method", "data.flow_dir", "scaling.num_workers",
              "scaling.use_gpu", "scaling.storage_path"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("dataset", LAYOUTS)
def test_each_layout_is_read_by_its_real_reader(dataset, tmp_path):
    layout = write_layout(dataset, tmp_path / dataset, train_per_class=5, test_per_class=2, height=32, width=64,
                          num_frames=8, progress=False)
    assert layout == LAYOUT_PATHS[dataset](tmp_path / dataset)
    splits = read_run_splits(dataset, root=layout.root, annotations=layout.annotations, split=1,
                             test_annotations=layout.test_annotations, val=ValSplit())
    assert not splits.train.problems and len(splits.train.class_names) == 4
    assert len(splits.test.records) == 4 * 2  # kinetics: its unlabelled test row is read, not scored
    trained = len(splits.train.records) + len(splits.val.records)
    assert trained >= 4 * 5 if dataset == "ucf101" else trained == 4 * 5 + (4 * 1 if dataset == "kinetics" else 0)
    assert not {r.video_id for r in splits.val.records} & {r.video_id for r in splits.train.records}


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_a_rehearsal_changes_only_width_data_flow_method_and_placement(recipe, tmp_path):
    cfg = load_experiment(recipe)
    runs, changes = plan_rehearsal(cfg, workers=2, steps=1, width=1 / 16, out=tmp_path, variants=None)
    assert runs and {c.field for c in changes} <= CHANGEABLE
    for run in runs:
        before, after = _flatten(run.recipe.to_dict()), _flatten(run.config.to_dict())
        assert {k for k in before if before[k] != after[k]} <= CHANGEABLE
        assert after["model.width"] == 1 / 16 and after["scaling.num_workers"] == 2


def test_sizes_leave_each_worker_full_batches_and_an_odd_last_one(tmp_path):
    """ucf101 carves its val list by group: what is left still gives each of 2 workers one batch of
    32 and a remainder, and the test list one full evaluation batch per worker."""
    cfg = load_experiment(next(r for r in RECIPES if r.stem == "two_stream_ucf101"))
    train, test = layout_sizes(cfg, workers=2, steps=1)
    layout = write_layout("ucf101", tmp_path, train_per_class=train, test_per_class=test, height=32, width=64,
                          num_frames=8, progress=False)
    splits = read_run_splits("ucf101", root=layout.root, annotations=layout.annotations, split=1, val=cfg.data.val)
    share = len(splits.train.records) // 2
    assert share // 32 >= 1 and share % 32 > 0
    assert len(splits.test.records) >= 2 + 1


def test_the_papers_250_view_flow_test_is_evaluated_one_video_per_batch():
    """two_stream_ucf101's flow stream: 25 stacks x ten crops of 2 x 10 x 224 x 224 = 251 MB of uint8 per
    video. An evaluation batch of optim.batch_size (32) videos was 8 GB per loader batch."""
    cfg = load_experiment(next(r for r in RECIPES if r.stem == "two_stream_ucf101"))
    from orchestrator.config import with_overrides

    flow = with_overrides(cfg.model_copy(update={"study": None}), {"model.modality": "flow",
                                                                   "data.frames_per_segment": 10})
    assert input_bytes(flow)["last epoch"] == 250 * 2 * 10 * 224 * 224


def test_predicted_step_memory_is_fixed_state_plus_activations_linear_in_the_batch():
    """Meta-device prediction for C3D: fp32 weights, gradients and SGD momentum (12 bytes a parameter)
    and the bf16 weight copies saved for backward, whatever the batch; plus saved bf16 activations and
    the batch, which grow linearly with it."""
    import torch

    from models import build_model
    from orchestrator.config import input_spec, with_overrides

    cfg = load_experiment(next(r for r in RECIPES if r.stem == "c3d_ucf101")).model_copy(update={"study": None})
    sizes = [predict_step_bytes(with_overrides(cfg, {"optim.batch_size": b}), num_classes=101) for b in (1, 2, 3)]
    per_clip = sizes[1] - sizes[0]
    assert sizes[2] - sizes[1] == per_clip
    assert per_clip > 3 * 16 * 112 * 112 * 2 * 10  # the activations of a clip dwarf the clip itself
    with torch.device("meta"):
        model = build_model("c3d", num_classes=101, **{**input_spec(cfg).builder_kwargs, "pretrained": None})
    params = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)  # biases are not saved for backward
    assert sizes[0] - per_clip == 12 * params + 2 * weights  # + the bf16 copies autocast saves for backward


def test_an_out_folder_holding_other_data_is_refused_and_left_alone(tmp_path):
    """--out . inside a project must not delete its data/: only a folder rehearse wrote is replaced."""
    from orchestrator.errors import UserError
    from orchestrator.rehearse import rehearse

    mine = tmp_path / "data" / "UCF-101" / "v_x.avi"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"a user's video")
    with pytest.raises(UserError, match=r"--out: .*data exists and is not a rehearsal's data"):
        rehearse(load_experiment(next(r for r in RECIPES if r.stem == "c3d_ucf101")), out=tmp_path)
    assert mine.read_bytes() == b"a user's video"


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipes_evaluation_batch_is_bounded_in_host_bytes(recipe):
    """A loader batch holds EVAL_LOADER_BATCH_BYTES at most, or one whole video when a video is larger:
    I3D's batches of 32 two-view 64 x 224 x 224 videos were 616 MB, 11.6 GB for one rehearsed rank."""
    from orchestrator.plan import plan
    from orchestrator.training.loop import EVAL_LOADER_BATCH_BYTES, view_bytes, views_per_test_video

    for variant in plan(load_experiment(recipe)).runs.values():
        video = views_per_test_video(variant.config) * view_bytes(variant.config)
        assert input_bytes(variant.config)["last epoch"] <= max(EVAL_LOADER_BATCH_BYTES, video)
