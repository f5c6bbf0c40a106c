"""MLflow bookkeeping against a throw-away SQLite store (no server, no network, no Ray cluster)."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from orchestrator import tracking  # noqa: E402
from orchestrator.config import resolve_tracking_uri  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store per module (creating its tables takes seconds); tests use their own experiments."""
    return resolve_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def new_run(store: str, experiment: str, **kwargs) -> str:
    return tracking.start_run(tracking_uri=store, experiment=experiment, run_name=kwargs.pop("run_name", "r"),
                              tags=kwargs.pop("tags", {"actionlab.kind": "train"}), **kwargs)


def status(store: str, run_id: str) -> str:
    return mlflow.MlflowClient(store).get_run(run_id).info.status


@pytest.mark.parametrize("uri, expected", [
    (None, "sqlite:///{cwd}/mlflow.db"),
    ("sqlite:///runs/m.db", "sqlite:///{cwd}/runs/m.db"),
    ("sqlite:////abs/m.db", "sqlite:////abs/m.db"),
    ("mlruns", "file://{cwd}/mlruns"),
    ("file:./mlruns", "file://{cwd}/mlruns"),
    ("file:///abs/mlruns", "file:///abs/mlruns"),
    ("http://head:5000", "http://head:5000"),
    ("databricks", "databricks"),
])
def test_resolve_tracking_uri_makes_local_stores_absolute(uri, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(uri) == expected.format(cwd=tmp_path.resolve())


def test_flatten_params():
    config = {"name": "tsn", "seed": 0, "optim": {"lr": 0.01, "amp": True},
              "model": {"options": {}, "pretrained": None, "deep": {"x": [1, 2]}},
              "study": {"seeds": [0, 1], "variants": {"rgb": {"model.modality": "rgb"}}},
              "long": "a" * 10_000}
    flat = tracking.flatten_params(config)
    assert flat == {"name": "tsn", "seed": "0", "optim.lr": "0.01", "optim.amp": "True",
                    "model.options": "{}", "model.pretrained": "None", "model.deep.x": "[1, 2]",
                    "study.seeds": "[0, 1]", "study.variants.rgb.model.modality": "rgb",
                    "long": "a" * tracking.MAX_PARAM_VALUE_LENGTH}
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert tracking.MAX_PARAM_VALUE_LENGTH == MAX_PARAM_VAL_LENGTH


def test_nested_runs_carry_parent_tag_params_and_driver_tags(store):
    parent = new_run(store, "nesting", run_name="study-x", tags={"actionlab.kind": "study"})
    params = {f"p{i}": str(i) for i in range(150)}  # more than one log_batch (100 params max)
    child = new_run(store, "nesting", run_name="rgb", tags={"actionlab.kind": "variant", "actionlab.variant": "rgb"},
                    params=params, parent_run_id=parent)
    client = mlflow.MlflowClient(store)
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["actionlab.variant"] == "rgb"
    assert run.data.tags[tracking.HOST_TAG] == socket.gethostname()
    assert run.data.tags[tracking.PID_TAG] == str(os.getpid())
    assert run.data.tags[tracking.COMMIT_TAG]  # a hash, or 'unknown' outside git
    assert run.data.params == params
    assert run.info.run_name == "rgb" and run.info.status == "RUNNING"
    assert "mlflow.parentRunId" not in client.get_run(parent).data.tags
    # artifacts of a SQLite store live beside the .db file, whatever the cwd
    db_dir = Path(store[len("sqlite:///"):]).parent
    assert client.get_experiment_by_name("nesting").artifact_location == (db_dir / "mlartifacts" / "nesting").as_uri()


class Boom(Exception):
    pass


@pytest.mark.parametrize("raised, expected", [(None, "FINISHED"), (Boom, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_run_status(store, raised, expected):
    run_id = new_run(store, "status")
    if raised is None:
        with tracking.run_status(store, run_id):
            pass
    else:
        with pytest.raises(raised), tracking.run_status(store, run_id):
            raise raised()
    assert status(store, run_id) == expected
    assert mlflow.MlflowClient(store).get_run(run_id).info.end_time is not None


def test_run_status_tells_a_stop_from_outside_from_a_failure(store):
    stopped, failed = new_run(store, "status"), new_run(store, "status")
    stopped_by = lambda err: "stopped by the scheduler" if isinstance(err, Boom) else None  # noqa: E731
    with pytest.raises(Boom), tracking.run_status(store, stopped, stopped_by=stopped_by):
        raise Boom()
    with pytest.raises(ValueError), tracking.run_status(store, failed, stopped_by=stopped_by):
        raise ValueError("clip 3 of v_a.avi is empty")
    client = mlflow.MlflowClient(store)
    assert status(store, stopped) == "KILLED" and status(store, failed) == "FAILED"
    assert client.get_run(stopped).data.tags[tracking.KILLED_REASON_TAG] == "stopped by the scheduler"
    assert tracking.ERROR_TAG not in client.get_run(stopped).data.tags
    failed_tags = client.get_run(failed).data.tags
    assert tracking.KILLED_REASON_TAG not in failed_tags
    assert failed_tags[tracking.ERROR_TAG] == "ValueError: clip 3 of v_a.avi is empty"


def test_end_stopped_runs_ends_only_the_named_trials_unfinished_runs(store):
    """A trial the scheduler stopped ends KILLED whether its driver left it RUNNING or FAILED."""
    client = mlflow.MlflowClient(store)
    sweep = new_run(store, "stopped")
    runs = {key: new_run(store, "stopped", parent_run_id=sweep, tags={tracking.RESUME_KEY_TAG: key})
            for key in ("running", "failed", "finished", "other")}
    with pytest.raises(RuntimeError), tracking.run_status(store, runs["failed"]):
        raise RuntimeError("the TorchTrainer's controller died")
    client.set_terminated(runs["finished"])

    killed = tracking.end_stopped_runs(store, sweep, {"running", "failed", "finished"}, reason="stopped early")
    assert sorted(killed) == sorted([runs["running"], runs["failed"]])
    assert [status(store, runs[k]) for k in ("running", "failed", "finished", "other")] == [
        "KILLED", "KILLED", "FINISHED", "RUNNING"]
    tags = client.get_run(runs["failed"]).data.tags
    assert tags[tracking.KILLED_REASON_TAG] == "stopped early" and tracking.ERROR_TAG not in tags
    assert tracking.end_stopped_runs(store, sweep, set(), reason="stopped early") == []


def test_run_status_sigterm_kills_run_and_restores_handler(store):
    before = signal.getsignal(signal.SIGTERM)
    run_id = new_run(store, "status")
    with pytest.raises(SystemExit) as exit_info, tracking.run_status(store, run_id):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this at once
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert status(store, run_id) == "KILLED"
    assert signal.getsignal(signal.SIGTERM) == before


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: the pid no longer exists
    return process.pid


def test_reap_stale_runs_kills_only_runs_of_dead_local_drivers(store):
    client = mlflow.MlflowClient(store)
    stale, alive, elsewhere = (new_run(store, "reap") for _ in range(3))
    client.set_tag(stale, tracking.PID_TAG, str(dead_pid()))
    client.set_tag(elsewhere, tracking.HOST_TAG, "another-host")
    client.set_tag(elsewhere, tracking.PID_TAG, str(dead_pid()))
    finished = new_run(store, "reap")
    client.set_tag(finished, tracking.PID_TAG, str(dead_pid()))
    client.set_terminated(finished, status="FINISHED")

    assert tracking.reap_stale_runs(store, "reap") == [stale]
    assert [status(store, r) for r in (stale, alive, elsewhere, finished)] == ["KILLED", "RUNNING", "RUNNING",
                                                                               "FINISHED"]
    assert tracking.reap_stale_runs(store, "reap") == []
    assert tracking.reap_stale_runs(store, "no-such-experiment") == []


def test_reap_stale_runs_ends_children_of_an_ended_sweep_on_any_host(store):
    client = mlflow.MlflowClient(store)
    sweep, live_sweep = new_run(store, "reap2"), new_run(store, "reap2")
    orphan = new_run(store, "reap2", parent_run_id=sweep)
    client.set_tag(orphan, tracking.HOST_TAG, "worker-node-7")  # a trial driver on another node
    sibling = new_run(store, "reap2", parent_run_id=live_sweep)
    client.set_tag(sibling, tracking.HOST_TAG, "worker-node-7")
    client.set_terminated(sweep, status="KILLED")

    assert tracking.reap_stale_runs(store, "reap2") == [orphan]
    assert [status(store, r) for r in (orphan, sibling, live_sweep)] == ["KILLED", "RUNNING", "RUNNING"]


def test_a_resumed_run_that_finishes_loses_its_stale_end_tags(store):
    """kill -9'd driver -> reaped KILLED with a reason -> resumed -> FINISHED, without that reason;
    likewise a FAILED run's error. A resumed run that is interrupted again gets its new ending only."""
    client = mlflow.MlflowClient(store)
    killed, failed, again = (new_run(store, "resume") for _ in range(3))
    for run_id in (killed, again):
        client.set_tag(run_id, tracking.PID_TAG, str(dead_pid()))
    assert sorted(tracking.reap_stale_runs(store, "resume")) == sorted([killed, again])
    assert client.get_run(killed).data.tags[tracking.KILLED_REASON_TAG].startswith("driver pid ")
    with pytest.raises(ValueError), tracking.run_status(store, failed):
        raise ValueError("out of memory")

    for run_id in (killed, failed):
        tracking.reopen_run(store, run_id)
        tags = client.get_run(run_id).data.tags
        assert status(store, run_id) == "RUNNING" and tags[tracking.PID_TAG] == str(os.getpid())
        assert tracking.KILLED_REASON_TAG not in tags and tracking.ERROR_TAG not in tags
        with tracking.run_status(store, run_id):
            pass
        tags = client.get_run(run_id).data.tags
        assert status(store, run_id) == "FINISHED"
        assert tracking.KILLED_REASON_TAG not in tags and tracking.ERROR_TAG not in tags

    tracking.reopen_run(store, again)
    with pytest.raises(Boom), tracking.run_status(store, again, stopped_by=lambda err: "stopped by ASHA"):
        raise Boom()
    assert status(store, again) == "KILLED"
    assert client.get_run(again).data.tags[tracking.KILLED_REASON_TAG] == "stopped by ASHA"


def test_log_artifacts_files_and_folders(store, tmp_path):
    run_id = new_run(store, "artifacts")
    (tmp_path / "curves.png").write_bytes(b"png")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "cm.png").write_bytes(b"png")
    tracking.log_artifacts(store, run_id, [tmp_path / "curves.png", tmp_path / "plots"], artifact_path="figures")
    client = mlflow.MlflowClient(store)
    assert sorted(a.path for a in client.list_artifacts(run_id, "figures")) == ["figures/curves.png",
                                                                                 "figures/plots"]
    assert [a.path for a in client.list_artifacts(run_id, "figures/plots")] == ["figures/plots/cm.png"]


def test_metrics_callback_logs_rank0_report_per_epoch(store):
    from ray import cloudpickle
    from ray.train import UserCallback

    run_id = new_run(store, "callback")
    callback = tracking.mlflow_metrics_callback(store, run_id)
    assert isinstance(callback, UserCallback)
    callback = cloudpickle.loads(cloudpickle.dumps(callback))  # as Ray ships it to the controller
    for epoch, loss in enumerate([2.0, 1.5]):
        rank0 = {"epoch": epoch, "train/loss": loss, "lr": 0.1 / (epoch + 1), "val/clip_top1": float("nan"),
                 "resumed": False, "note": "text"}
        callback.after_report(None, [rank0, {**rank0, "train/loss": 99.0}], None)

    client = mlflow.MlflowClient(store)
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 1.5)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "lr")] == [(0, 0.1), (1, 0.05)]
    assert set(client.get_run(run_id).data.metrics) == {"train/loss", "lr"}  # no epoch, NaN, bool or text


def test_metrics_callback_logs_per_step_values_against_the_step_and_checkpoints_only_those(store):
    """A mid-epoch checkpoint's report logs its 'per_step' values (world size ...) at its optimiser step
    and no epoch metric; an epoch's report logs both, each against its own step."""
    run_id = new_run(store, "per-step")
    callback = tracking.mlflow_metrics_callback(store, run_id)
    reports = [{"epoch": 0, "report": "checkpoint", "step": 4, "per_step": {"train/world_size": 2}},
               {"epoch": 0, "report": "epoch", "train/loss": 1.0, "step": 6, "per_step": {"train/world_size": 1}},
               {"epoch": 1, "report": "epoch", "train/loss": 0.5}]  # no step trained since: no per_step
    for report in reports:
        callback.after_report(None, [report], None)
    client = mlflow.MlflowClient(store)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/world_size")] == [(4, 2), (6, 1)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")] == [(0, 1.0), (1, 0.5)]
    assert set(client.get_run(run_id).data.metrics) == {"train/loss", "train/world_size"}



def test_experiments_open_in_the_model_training_view(store):
    """MLflow 3's UI opens an experiment tagged as model training on its runs, not on GenAI traces;
    an experiment that already has a kind keeps it."""
    client = mlflow.MlflowClient(store)
    new_run(store, "kind-new")
    old = client.create_experiment("kind-old")  # made before actionlab tagged experiments
    chosen = client.create_experiment("kind-chosen", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("kind-old", "kind-chosen"):
        new_run(store, name)
    kinds = {e: client.get_experiment(e).tags.get(tracking.EXPERIMENT_KIND_TAG)
             for e in (client.get_experiment_by_name("kind-new").experiment_id, old, chosen)}
    assert list(kinds.values()) == ["custom_model_development", "custom_model_development", "genai_development"]


@pytest.mark.parametrize("argv, expected", [
    (["/venv/bin/actionlab", "ablate", "experiments/quickstart.yaml", "--set", "study.seeds=[0]"],
     "actionlab ablate experiments/quickstart.yaml --set 'study.seeds=[0]'"),
    (["/src/orchestrator/cli.py", "ui", "--port", "5001"], "actionlab ui --port 5001"),  # python -m orchestrator.cli
    (["/usr/lib/python3/pytest", "-q"], "/usr/lib/python3/pytest -q"),
])
def test_command_line(argv, expected):
    assert tracking.command_line(argv) == expected


def test_runs_carry_the_drivers_command_line_as_source(store):
    client = mlflow.MlflowClient(store)
    here = client.get_run(new_run(store, "source")).data.tags
    assert here[tracking.SOURCE_NAME_TAG] == tracking.command_line() and here[tracking.SOURCE_TYPE_TAG] == "JOB"
    assert here.get(tracking.SOURCE_COMMIT_TAG, "unknown") == here[tracking.COMMIT_TAG]  # 'unknown' outside git
    driver = {tracking.SOURCE_NAME_TAG: "actionlab sweep s.yaml", tracking.SOURCE_TYPE_TAG: "JOB",
              tracking.SOURCE_COMMIT_TAG: "abc123"}  # what a Tune trial receives from its driver
    trial = client.get_run(new_run(store, "source", tags={"actionlab.kind": "trial", **driver})).data.tags
    assert {k: trial[k] for k in driver} == driver and trial[tracking.COMMIT_TAG] == "abc123"


def test_ui_link_opens_the_experiments_runs_in_the_model_training_view(store, monkeypatch, tmp_path):
    experiment_id = mlflow.MlflowClient(store).get_experiment_by_name("source").experiment_id
    runs = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert tracking.ui_link(store, "source") == "http://127.0.0.1:5000" + runs
    assert tracking.ui_link(store, "source", ui_url="http://127.0.0.1:5123/") == "http://127.0.0.1:5123" + runs
    assert tracking.ui_link(store, "no-such-experiment") is None
    assert tracking.ui_line(store, "source") == (f"MLflow UI: http://127.0.0.1:5000{runs}  "
                                                 f"(start it with `actionlab ui --tracking-uri {store}`)")
    monkeypatch.chdir(Path(store[len("sqlite:///"):]).parent)  # the default store: no --tracking-uri
    assert tracking.ui_line(store, "source").endswith("(start it with `actionlab ui`)")


def test_ui_lists_a_link_per_experiment_with_runs_latest_first(store):
    from orchestrator.commands.ui import _prepare_experiments

    client = mlflow.MlflowClient(store)
    client.create_experiment("ui-empty")
    new_run(store, "ui-latest")
    lines = _prepare_experiments(store, "http://127.0.0.1:5123")
    latest = client.get_experiment_by_name("ui-latest").experiment_id
    assert lines[0] == f"  ui-latest: http://127.0.0.1:5123/#/experiments/{latest}/runs?workflowType=machine_learning"
    assert not any(line.startswith("  ui-empty:") for line in lines)


def test_dataset_inputs_and_description_as_the_ui_reads_them(store):
    run_id = new_run(store, "inputs")
    lists = {"train": ["a/v1\tRed", "a/v2\tGreen"], "test": ["b/v3\tRed"]}
    splits = [tracking.DatasetSplit("synth/UCF101 split 1", context, tracking.list_digest(lines), len(lines), 2,
                                    "/data/UCF101 (/data/ucfTrainTestlist)") for context, lines in lists.items()]
    tracking.log_dataset_inputs(store, run_id, splits)
    tracking.set_description(store, run_id, "## Table\n\n| a | b |\n|---|---:|\n| x | 1 |\n")
    run = mlflow.MlflowClient(store).get_run(run_id)
    logged = [(d.dataset.name, d.dataset.digest, d.dataset.profile, [(t.key, t.value) for t in d.tags])
              for d in run.inputs.dataset_inputs]
    assert sorted(logged) == sorted([
        ("synth/UCF101 split 1", s.digest, '{"num_videos": ' + str(s.num_videos) + ', "num_classes": 2}',
         [("mlflow.data.context", s.context)]) for s in splits])
    assert run.data.tags["mlflow.note.content"].startswith("## Table")
    digest = tracking.list_digest(lists["train"])
    assert len(digest) == 16 and digest != tracking.list_digest(["a/v1\tGreen", "a/v2\tGreen"])


@pytest.fixture
def monitor_calls(monkeypatch):
    """Waits for MLflow's system-metrics monitor to have sampled or published `n` times for a run, with a
    deadline: a test then waits on what the monitor did, not on the clock, and a busy machine only slows it."""
    import collections
    import threading

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    counts, changed = collections.Counter(), threading.Condition()

    def counted(method: str):
        original = getattr(SystemMetricsMonitor, method)

        def call(self, *args):
            result = original(self, *args)
            with changed:
                counts[self._run_id, method] += 1
                changed.notify_all()
            return result

        monkeypatch.setattr(SystemMetricsMonitor, method, call)

    counted("collect_metrics")  # one sample of every metric
    counted("publish_metrics")  # one step logged

    def wait(run_id: str, method: str, n: int, timeout_s: float = 60) -> bool:
        with changed:
            return changed.wait_for(lambda: counts[run_id, method] >= n, timeout=timeout_s)

    return wait


def test_system_metrics_are_sampled_while_the_block_runs(store, monitor_calls):
    client = mlflow.MlflowClient(store)
    run_id, short, quiet = (new_run(store, "system") for _ in range(3))
    with tracking.system_metrics(store, run_id, interval_s=0.2, node_id="node1"):
        assert monitor_calls(run_id, "publish_metrics", 3)  # three intervals' samples logged
    with tracking.system_metrics(store, short, interval_s=30):  # ends before its first interval,
        assert monitor_calls(short, "collect_metrics", 1)  # once it has its first sample
    with tracking.system_metrics(store, quiet, interval_s=0):
        pass
    metrics = client.get_run(run_id).data.metrics
    assert {"system/node1/cpu_utilization_percentage", "system/node1/system_memory_usage_megabytes"} <= set(metrics)
    steps = [m.step for m in client.get_metric_history(run_id, "system/node1/cpu_utilization_percentage")]
    assert len(steps) >= 3 and steps == list(range(len(steps)))
    assert [m.step for m in client.get_metric_history(short, "system/cpu_utilization_percentage")] == [0]
    assert client.get_run(quiet).data.metrics == {}


@pytest.mark.parametrize("tags, expected", [
    ({"actionlab.variant": "rgb", "actionlab.dataset": "synth/UCF101", "actionlab.seed": "1"}, "rgb / synth/UCF101 / seed1"),
    ({"actionlab.variant": "two_stream", "actionlab.dataset": "hmdb", "actionlab.seed": "0"}, "two_stream / hmdb / seed0"),
    ({"actionlab.variant": "consensus=avg", "actionlab.dataset": "UCF101", "actionlab.seed": "0"},
     "consensus=avg / UCF101 / seed0"),  # a sweep trial
])
def test_run_name_says_variant_dataset_seed(tags, expected):
    from orchestrator.training.driver import run_name

    assert run_name(tags) == expected
