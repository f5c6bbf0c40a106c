"""The plan (orchestrator/plan.py) as a value, and Tune's trial runner (training/tune.run_trials) with a
fake `train` in place of Ray Train: which runs a command launches, in which stage, with which config."""
import functools
import json
import sys
from pathlib import Path

import pytest

from orchestrator.config import parse_experiment
from orchestrator.errors import UserError
from orchestrator.plan import plan
from orchestrator.training.results import RunOutcome

STUDY = {"variants": {"rgb": {"model.modality": "rgb"}, "flow": {"model.modality": "flow"},
                      "rgb_ft": {"model.modality": "rgb", "model.init_checkpoint": "variant:rgb"}},
         "datasets": {"a": {"root": "/d/a/UCF101"}, "b": {"root": "/d/b/UCF101"}}, "seeds": [0, 1],
         "late_fusion": {"two_stream": {"streams": ["rgb", "flow"], "weight": 0.5, "mode": "logits"}},
         "compare": [["two_stream", "rgb"], ["rgb_ft", "rgb"]]}


def experiment(tmp_path: Path, **sections):
    return parse_experiment({"name": "t", "data": {"frames_per_segment": 2},
                             "scaling": {"storage_path": str(tmp_path / "runs")},
                             "tracking": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, **sections},
                            source="t.yaml")


def test_a_study_plans_its_stages_fusions_and_comparisons(tmp_path):
    p = plan(experiment(tmp_path, study=STUDY))
    assert (p.kind, p.name) == ("study", "study-t")
    scratch, fine_tuned = p.stages
    assert sorted(scratch) == [f"{v}/{d}/seed{s}" for v in ("flow", "rgb") for d in "ab" for s in (0, 1)]
    assert sorted(fine_tuned) == [f"rgb_ft/{d}/seed{s}" for d in "ab" for s in (0, 1)]
    run = p.runs["rgb_ft/b/seed1"]
    assert (run.variant, run.dataset, run.seed, run.source) == ("rgb_ft", "b", 1, "rgb")
    assert (run.config.seed, run.config.data.root, run.config.study) == (1, "/d/b/UCF101", None)
    assert run.tags == {"actionlab.variant": "rgb_ft", "actionlab.dataset": "b", "actionlab.study_dataset": "b",
                        "actionlab.seed": "1", "actionlab.source_variant": "rgb"}
    assert run.inputs.shapes == {"rgb": (3, 6, 56, 56)}  # K=3 segments x L=2 frames, data.crop_size 56
    assert [(f.streams, f.dataset, f.seed) for f in p.fusions] == [
        (("rgb/a/seed0", "flow/a/seed0"), "a", 0), (("rgb/a/seed1", "flow/a/seed1"), "a", 1),
        (("rgb/b/seed0", "flow/b/seed0"), "b", 0), (("rgb/b/seed1", "flow/b/seed1"), "b", 1)]
    assert p.compare == (("two_stream", "rgb"), ("rgb_ft", "rgb"))


def test_a_sweep_plans_its_listed_values_and_the_low_end_of_ranges(tmp_path):
    p = plan(experiment(tmp_path, sweep={"parameters": {"optim.lr": {"grid": [0.1, 0.01]},
                                                        "optim.weight_decay": {"loguniform": [1e-5, 1e-3]}}}))
    assert (p.kind, p.name) == ("sweep", "sweep-t")
    assert [(r.where, r.overrides) for r in p.runs.values()] == [
        ("sweep.parameters.optim.lr=0.1", {"optim.lr": 0.1}), ("sweep.parameters.optim.lr=0.01", {"optim.lr": 0.01}),
        ("sweep.parameters.optim.weight_decay=1e-05", {"optim.weight_decay": 1e-5})]
    assert [r.config.optim.lr for r in p.runs.values()][:2] == [0.1, 0.01]


def test_train_plans_the_base_run_alone(tmp_path):
    p = plan(experiment(tmp_path, study=STUDY), kind="train")
    (run,) = p.runs.values()
    assert (p.kind, run.label, run.config.study, run.tags) == ("train", "t", None, {})


@pytest.mark.parametrize("study,message", [
    ({"variants": {"rgb": {}, "ft": {"model.init_checkpoint": "variant:ft"}}},
     "t.yaml: study variant 'ft/seed0': model.init_checkpoint: variant:ft: inside a study, name a variant trained "
     "from scratch (rgb)"),
    ({"variants": {"rgb": {"data.val": None}, "flow": {"model.modality": "flow"}},
      "late_fusion": {"ts": {"streams": ["rgb", "flow"], "weight": "auto"}}},
     "t.yaml: study.late_fusion.ts: weight/mode auto is chosen on the streams' val scores, but variant 'rgb' has "
     "data.val: null"),
])
def test_a_plan_that_cannot_run_is_refused(tmp_path, study, message):
    with pytest.raises(UserError) as err:
        plan(experiment(tmp_path, study=study))
    assert message in str(err.value)


def test_a_variant_to_start_from_outside_a_study_is_refused(tmp_path):
    """Refused when planned, before Ray starts or data is written (`actionlab train` once generated the
    data and failed on a worker: "variant:rgb is not a file")."""
    with pytest.raises(UserError, match="t.yaml: model.init_checkpoint: variant:rgb names a study variant, but this "
                                        "train runs no study"):
        plan(experiment(tmp_path, model={"init_checkpoint": "variant:rgb"}))


def fake_train(cfg, *, log: str, fail: str = "", kind: str, variant: str, parent_run_id: str, extra_tags: dict,
               **_) -> RunOutcome:
    """`driver.train_run`'s signature; writes down what it was asked to train (it runs in a Ray worker)."""
    if variant == fail:
        raise ValueError(f"{variant} broke")
    with open(log, "a") as f:
        f.write(json.dumps({"label": variant, "kind": kind, "seed": cfg.seed, "parent": parent_run_id,
                            "tags": extra_tags, "init": cfg.model.init_checkpoint}) + "\n")
    return RunOutcome(f"run-{variant}", {"test/video_top1": 0.5 + cfg.seed / 10}, Path(log).parent)


def test_run_trials_runs_each_planned_run_once_with_its_config_and_tags(ray_session, tmp_path):
    """A study stage on Tune: one trial per run, each given its planned config and tags; every trial's
    outcome comes back; a failing trial is reported with its reason, all failing is an error."""
    from ray import cloudpickle

    from orchestrator.training.tune import run_trials

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
    p = plan(experiment(tmp_path, study={"variants": {"rgb": {}}, "seeds": [0, 1]}))
    log = tmp_path / "trained.jsonl"
    train = functools.partial(fake_train, log=str(log), fail="")
    _, outcomes = run_trials(p, name="stage", parent_run_id="parent", resume=False, stage=p.stages[0], train=train)
    assert sorted((o.label, o.status, o.run_id, o.metrics["test/video_top1"]) for o in outcomes) == [
        ("rgb/seed0", "finished", "run-rgb/seed0", 0.5), ("rgb/seed1", "finished", "run-rgb/seed1", 0.6)]
    trained = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda r: r["label"])
    assert [(t["label"], t["kind"], t["seed"], t["parent"]) for t in trained] == [
        ("rgb/seed0", "variant", 0, "parent"), ("rgb/seed1", "variant", 1, "parent")]
    assert all(p.runs[t["label"]].tags.items() <= t["tags"].items() for t in trained)

    train = functools.partial(fake_train, log=str(log), fail="rgb/seed1")
    _, outcomes = run_trials(p, name="stage-2", parent_run_id="parent", resume=False, stage=p.stages[0], train=train)
    assert sorted((o.label, o.status) for o in outcomes) == [("rgb/seed0", "finished"), ("rgb/seed1", "failed")]
    assert "rgb/seed1 broke" in next(o.reason for o in outcomes if o.status == "failed")
    with pytest.raises(RuntimeError, match="all 2 trials failed"):
        run_trials(p, name="stage-3", parent_run_id="parent", resume=False, stage=p.stages[0], train=no_data)


def no_data(cfg, **_):
    raise ValueError("no data")


def test_a_study_runs_its_stages_in_order_then_fuses_and_reports(tmp_path):
    """run_study with a fake trial runner (no Ray): the fine-tuned stage starts from its source's run
    of the same seed; each seed's two streams are fused into their own child run; the report pairs
    the variants of study.compare."""
    import numpy as np

    from conftest import write_layout
    from orchestrator import tracking
    from orchestrator.data.annotations import read_run_splits
    from orchestrator.runs import SCORES_FILE, VideoScores, run_output_dir, save_scores
    from orchestrator.study import run_study
    from orchestrator.training.driver import log_datasets, run_name, run_tags
    from orchestrator.training.results import TrialOutcome

    root, annotations = write_layout("ucf101", tmp_path / "data")
    study = {"variants": {"rgb": {}, "flow": {"model.modality": "flow"},
                          "rgb_ft": {"model.init_checkpoint": "variant:rgb"}}, "seeds": [0, 1],
             "late_fusion": {"two_stream": {"streams": ["rgb", "flow"], "weight": 0.5, "mode": "logits"}},
             "compare": [["two_stream", "rgb"], ["rgb_ft", "rgb"]]}
    p = plan(experiment(tmp_path, data={"root": str(root), "annotations": str(annotations), "val": None},
                        study=study))
    test = read_run_splits("ucf101", root=root, annotations=annotations).test.records
    labels = np.array([r.label for r in test])
    stages = []

    def fake_run_trials(plan_, *, name, parent_run_id, resume, stage):
        """As tune.run_trials: a FINISHED child run per planned run, with scores in its folder. The
        rgb runs get the even videos right, the flow runs the odd ones: together, all."""
        stages.append((name, {label: r.config.model.init_checkpoint for label, r in stage.items()}))
        outcomes = []
        for label, r in stage.items():
            cfg = r.config
            tags = run_tags(cfg, kind="variant", variant=label, extra=r.tags)
            run_id = tracking.start_run(tracking_uri=cfg.tracking.tracking_uri, experiment=cfg.experiment_name,
                                        run_name=run_name(tags), tags=tags, params={}, parent_run_id=parent_run_id)
            right = np.arange(len(labels)) % 2 == (cfg.model.modality == "flow")
            scores = np.zeros((len(labels), labels.max() + 1), np.float32)
            # a stream is surer where it is right: the fusion follows it
            scores[np.arange(len(labels)), np.where(right, labels, (labels + 1) % scores.shape[1])] = np.where(right, 2, 1)
            out = run_output_dir(cfg.scaling.storage_path, run_id)
            out.mkdir(parents=True)
            save_scores(out / SCORES_FILE, VideoScores(np.array([t.video_id for t in test]), labels, scores))
            with tracking.run_status(cfg.tracking.tracking_uri, run_id):
                log_datasets(cfg.tracking.tracking_uri, run_id, cfg.data, tags["actionlab.dataset"])
                tracking.log_metrics(cfg.tracking.tracking_uri, run_id, {"test/video_top1": float(right.mean())})
            outcomes.append(TrialOutcome(label, "finished", "", run_id, {}))
        return None, outcomes

    result = run_study(p, out_dir=tmp_path / "report", run_trials=fake_run_trials)
    (first, scratch_inits), (second, ft_inits) = stages
    assert (first, second) == ("study-t", "study-t-finetune")
    assert set(scratch_inits) == {"rgb/seed0", "rgb/seed1", "flow/seed0", "flow/seed1"}
    assert not any(scratch_inits.values())
    rgb_runs = {o.label: o.run_id for o in result["outcomes"] if o.label.startswith("rgb/")}
    assert ft_inits == {f"rgb_ft/seed{s}": f"mlflow:{rgb_runs[f'rgb/seed{s}']}" for s in (0, 1)}

    rows = {(row.split("|")[1].strip(), row.split("|")[2].strip()) for row in result["markdown"].splitlines()
            if row.startswith("| ") and not row.startswith("| Variant")}
    assert ("two_stream †", "100.0 ± 0.0") in rows and ("rgb †", "50.0 ± 0.0") in rows  # †: selected on test
    assert "two_stream − rgb: +50.0 points" in result["markdown"]
    assert (tmp_path / "report" / "comparison.md").read_text() == result["markdown"]


def test_asha_is_refused_beside_a_second_ray_instance(monkeypatch):
    """Ray Train's cleanup of an ASHA-stopped trial finds no cluster when two run on the machine, and the
    sweep waits for ever (seen: `.ci/run` beside another study); refuse with the fix instead."""
    from orchestrator.training import tune

    monkeypatch.setattr(tune, "local_ray_instances", lambda: ["/tmp/ray/session_a", "/tmp/ray/session_b"])
    with pytest.raises(UserError, match=r"t.yaml: sweep.scheduler 'asha': 2 Ray instances run on this machine "
                                        r"\(/tmp/ray/session_a, /tmp/ray/session_b\).*or use sweep.scheduler 'fifo'"):
        tune.require_state_api("t.yaml: sweep.scheduler 'asha'")
