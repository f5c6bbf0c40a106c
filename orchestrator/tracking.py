"""MLflow bookkeeping, done once per run by the driver (and the Ray Train controller), never by workers.

    start_run(...)            ->  run_id, tagged with the driver's host/pid and the git commit
    with run_status(uri, id): ->  FINISHED / FAILED (exception, in actionlab.error) / KILLED (Ctrl-C, SIGTERM)
    mlflow_metrics_callback   ->  per-epoch metrics logged live from the Train controller
    system_metrics            ->  CPU / memory / GPU samples, from each training node's first worker
    log_dataset_inputs        ->  the run's train/test lists as MLflow dataset inputs
    set_description           ->  Markdown on the run's page (a study's comparison table)
    ui_link                   ->  the experiment's runs in the MLflow UI's Model-training view
    hide_password             ->  credentials in URIs masked: every param, tag and message written here
    reap_stale_runs           ->  runs left RUNNING by a kill -9'd driver are marked KILLED
    end_stopped_runs          ->  runs of trials a scheduler stopped early are marked KILLED

Every function takes the tracking URI and uses an `MlflowClient`: no global MLflow state, so
Ray actors and Tune trials (which run in other working directories) log to the same store.
System metrics are the one thing workers log: only a process on a node can sample it, and a
cluster's GPUs are on the workers' nodes, not the driver's.
mlflow and ray are imported inside the functions: light commands import this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import shlex
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

MAX_PARAM_VALUE_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH (longer values are rejected)
_PARAMS_PER_BATCH = 100  # mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH
_ARTIFACT_DIR = "mlartifacts"  # beside a SQLite store, like `mlflow server`'s default

HOST_TAG, PID_TAG, COMMIT_TAG = "actionlab.driver_host", "actionlab.driver_pid", "actionlab.git_commit"
PARENT_TAG = "mlflow.parentRunId"  # the tag the MLflow UI nests runs by
KILLED_REASON_TAG = "actionlab.killed_reason"  # why a KILLED run was ended from outside
ERROR_TAG = "actionlab.error"  # the exception that ended a FAILED run
RESUME_KEY_TAG = "actionlab.resume_key"  # the Tune trial a run belongs to (see `train_run`)
# MLflow's own tags (mlflow.utils.mlflow_tags), read by its UI
DESCRIPTION_TAG = "mlflow.note.content"  # the run page's Description, rendered as Markdown
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"  # the Source column
SOURCE_COMMIT_TAG = "mlflow.source.git.commit"  # shown beside the source
DATASET_CONTEXT_TAG = "mlflow.data.context"  # 'train' / 'test' beside a dataset input
# The UI opens an experiment in its GenAI view (traces) unless this experiment tag says model
# training, or the URL says `workflowType=machine_learning` (values from MLflow 3's UI code).
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
UI_URL = "http://127.0.0.1:5000"  # `actionlab ui`'s default address

# `scheme://user:password@host`: the password runs to the last `@` before the host, so that one
# written unescaped (`p/@:w`, which MLflow and SQLAlchemy take as typed) is hidden whole. A URI with
# no `@` after the host keeps its port (`http://head:5000/x`).
_URI_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)\S*@(?=[^@/\s]*(?:[/?#\s]|$))")
_QUERY_SECRET = re.compile(r"([?&;](?:password|passwd|pwd|token|access_token|secret|api_key)=)[^&#\s]*", re.I)


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # a SQLite store in the working directory


def resolve_tracking_uri(uri: str | None) -> str:
    """The tracking URI with local paths made absolute (None: DEFAULT_TRACKING_URI).

    Ray actors and Tune trials run in other working directories, so a relative
    `sqlite:///mlflow.db` would silently open a different store in each of them. Server URLs
    (`http://...`, `databricks`) pass through.
    """
    uri = uri or DEFAULT_TRACKING_URI
    absolute = lambda path: os.path.abspath(os.path.expanduser(path))  # noqa: E731 (where the command runs)
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):]
        return uri if db.startswith("/") else f"sqlite:///{absolute(db)}"
    if uri.startswith("file:"):
        return "file://" + absolute(uri[len("file:"):].removeprefix("//"))
    if "://" not in uri and not uri.startswith("databricks"):  # a plain folder is MLflow's file store
        return "file://" + absolute(uri)
    return uri


def hide_password(text: str) -> str:
    """`text` with every URI's password (`scheme://user:***@host`) and secret query value
    (`?password=***`) masked: for params, tags, artifacts and messages, which anyone who can read
    the tracking store or the terminal's log reads too."""
    return _QUERY_SECRET.sub(r"\1***", _URI_PASSWORD.sub(r"\1***@", text))


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: `{'optim': {'lr': 0.01}}` -> `{'optim.lr': '0.01'}`.

    Lists (and tuples) become JSON; an empty dict stays visible as '{}'; every value is cut to
    MAX_PARAM_VALUE_LENGTH characters, which MLflow would otherwise reject; passwords in URIs are
    masked (`hide_password`).

    Args:
        config: nested dict of plain values (e.g. `ExperimentConfig.to_dict()`).
        prefix: prepended to every key (used by the recursion).
    Returns:
        Flat dict of dotted key -> string value.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        text = json.dumps(value, default=str) if isinstance(value, (list, tuple, dict)) else str(value)
        flat[name] = hide_password(text)[:MAX_PARAM_VALUE_LENGTH]
    return flat


def git_commit() -> str | None:
    """The commit of the working tree this process was started from (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def command_line(argv: list[str] | None = None) -> str:
    """This process's command as a person would type it: `actionlab ablate x.yaml --set a=1`, with
    passwords masked (`--set tracking.tracking_uri=http://u:***@head:5000`)."""
    argv = [hide_password(str(a)) for a in (sys.argv if argv is None else argv)]
    if argv and (Path(argv[0]).name == "actionlab" or Path(argv[0]).parts[-2:] == ("orchestrator", "cli.py")):
        argv[0] = "actionlab"  # the console script, or `python -m orchestrator.cli`
    return shlex.join(argv)


def source_tags() -> dict[str, str]:
    """MLflow's source tags for runs this process starts: the command line (a JOB source: the UI
    shows it whole) and the git commit. Computed on the driver and passed to Tune trials, whose
    own command line is a Ray worker's."""
    tags = {SOURCE_NAME_TAG: command_line(), SOURCE_TYPE_TAG: "JOB"}
    if commit := git_commit():
        tags[SOURCE_COMMIT_TAG] = commit
    return tags


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the .db file, not in whichever cwd created the experiment."""
    if not tracking_uri.startswith("sqlite:///"):
        return None  # servers and file stores choose their own artifact root
    db = Path(tracking_uri[len("sqlite:///"):])
    folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (db.parent / _ARTIFACT_DIR / folder).as_uri()


def get_or_create_experiment(client, experiment: str, tracking_uri: str) -> str:
    """The experiment's id; created on first use (tolerating a concurrent trial creating it too)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is not None:
        mark_model_training(client, found)
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=_artifact_location(tracking_uri, experiment),
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except MlflowException:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def mark_model_training(client, experiment) -> None:
    """Tag an experiment as model training (its runs, not GenAI traces, open first in the UI),
    unless it already has a kind: someone chose it."""
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def start_run(*, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str],
              params: dict | None = None, parent_run_id: str | None = None) -> str:
    """Create a RUNNING MLflow run and log its params; the caller ends it (see `run_status`).
    Passwords in tag and param values are masked (`hide_password`).

    Args:
        tracking_uri: from `config.resolve_tracking_uri`.
        experiment: MLflow experiment name (created if missing).
        run_name: shown in the UI.
        tags: `actionlab.*` tags (kind, study, variant, dataset, seed, ...); MLflow's source tags
            given here (a Tune trial gets its driver's `source_tags()`) replace this process's.
        params: flat str -> str params (see `flatten_params`).
        parent_run_id: nests the run under this one (`mlflow.parentRunId` tag).
    Returns:
        The new run's id. Adds tags actionlab.driver_host, actionlab.driver_pid (read by
        `reap_stale_runs`), actionlab.git_commit, mlflow.source.* and mlflow.parentRunId.
    """
    import mlflow
    from mlflow.entities import Param

    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = get_or_create_experiment(client, experiment, tracking_uri)
    all_tags = {k: hide_password(str(v)) for k, v in {**source_tags(), **tags}.items()}
    all_tags.update({HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
    all_tags[COMMIT_TAG] = all_tags.get(SOURCE_COMMIT_TAG, "unknown")
    if parent_run_id:
        all_tags[PARENT_TAG] = parent_run_id
    run_id = client.create_run(experiment_id, tags=all_tags, run_name=run_name).info.run_id
    items = [Param(k, hide_password(str(v))) for k, v in (params or {}).items()]
    for i in range(0, len(items), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + _PARAMS_PER_BATCH])
    return run_id


def _terminate(tracking_uri: str, run_id: str, status: str, why: str | None = None) -> None:
    """End the run, tagging `why` (KILLED: the reason; FAILED: the error); a tracking failure here
    is reported but must not hide the run's own error."""
    import mlflow

    try:
        client = mlflow.MlflowClient(tracking_uri)
        if why:
            client.set_tag(run_id, KILLED_REASON_TAG if status == "KILLED" else ERROR_TAG, hide_password(why)[:5000])
        client.set_terminated(run_id, status=status)
    except Exception as err:  # noqa: BLE001 - the store being down must not mask the training error
        print(f"warning: could not mark MLflow run {run_id} {status}: {err}", file=sys.stderr)


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the stack like Ctrl-C, so `run_status` sees it


@contextmanager
def run_status(tracking_uri: str, run_id: str, *, stopped_by: Callable[[BaseException], str | None] | None = None):
    """Ends the run FINISHED on normal exit, FAILED on an exception, KILLED on Ctrl-C or SIGTERM.

    SIGTERM (sent by `ray stop`, schedulers, `kill`) is turned into SystemExit for the duration,
    then the previous handler is restored. Signal handlers can only be set from the main thread;
    elsewhere (e.g. inside a Tune trial) only Ctrl-C/SystemExit/exceptions are caught.
    `stopped_by(exception)` names the reason when an exception means the run was stopped from
    outside (a trial scheduler): KILLED with that reason in `actionlab.killed_reason`, not FAILED.
    Exceptions are always re-raised.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm) if main else None
    try:
        yield run_id
    except (KeyboardInterrupt, SystemExit):
        _terminate(tracking_uri, run_id, "KILLED")
        raise
    except BaseException as err:
        reason = stopped_by(err) if stopped_by else None
        if reason:
            _terminate(tracking_uri, run_id, "KILLED", why=reason)
        else:
            _terminate(tracking_uri, run_id, "FAILED", why=f"{type(err).__name__}: {err}")
        raise
    else:
        _terminate(tracking_uri, run_id, "FINISHED")
    finally:
        if main:  # None: the previous handler was not set from Python; SIG_DFL is what it was
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def search_all_runs(client, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list:
    """Every run matching the filter, across result pages."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, order_by=order_by,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def reap_stale_runs(tracking_uri: str, experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs whose driver ran on this host and is gone (e.g. kill -9), and
    the RUNNING children (trials, on any node) of a sweep or study run that has ended.

    Other runs started on other hosts are left alone: their pids mean nothing here.

    Args:
        tracking_uri: from `config.resolve_tracking_uri`.
        experiment: MLflow experiment name (a missing experiment has nothing to reap).
    Returns:
        Ids of the runs marked KILLED.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    host = socket.gethostname().replace("'", "")
    running = search_all_runs(client, [found.experiment_id],
                          f"attributes.status = 'RUNNING' and tags.\"{HOST_TAG}\" = '{host}'")
    reaped = []
    for run in running:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not pid_alive(int(pid)):
            reaped.append(_kill(client, run.info.run_id, f"driver pid {pid} on {host} is gone"))
    # Trials that ran on other nodes of a cluster: their sweep/study ended, so they are gone too.
    parent_running: dict[str, bool] = {}
    for run in search_all_runs(client, [found.experiment_id], "attributes.status = 'RUNNING'"):
        parent_id = run.data.tags.get(PARENT_TAG)
        if parent_id and parent_id not in parent_running:
            parent_running[parent_id] = client.get_run(parent_id).info.status == "RUNNING"
        if parent_id and not parent_running[parent_id]:
            reaped.append(_kill(client, run.info.run_id, f"its parent run {parent_id} has ended"))
    return reaped


def _kill(client, run_id: str, reason: str) -> str:
    """End a run KILLED, with why in its `actionlab.killed_reason` tag; returns the run id."""
    client.set_tag(run_id, KILLED_REASON_TAG, reason)
    client.set_terminated(run_id, status="KILLED")
    return run_id


def reopen_run(tracking_uri: str, run_id: str) -> None:
    """Mark an interrupted run RUNNING again under this process (a resumed sweep, study or trial),
    so `reap_stale_runs` judges it by the live driver, not the dead one.

    The previous ending's `actionlab.killed_reason` / `actionlab.error` are deleted: they described
    the attempt that ended, and the resumed run's own ending (`run_status`) sets them again if it
    needs them, so a resumed run that finishes carries neither.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    stale = [tag for tag in (KILLED_REASON_TAG, ERROR_TAG) if tag in client.get_run(run_id).data.tags]
    for tag in stale:
        client.delete_tag(run_id, tag)
    client.set_tag(run_id, HOST_TAG, socket.gethostname())
    client.set_tag(run_id, PID_TAG, str(os.getpid()))
    client.update_run(run_id, status="RUNNING")


def end_stopped_runs(tracking_uri: str, parent_run_id: str, resume_keys: set[str], *, reason: str) -> list[str]:
    """Mark KILLED, with `reason` as a tag, the unfinished children of a sweep whose trials its
    scheduler stopped (named by their `actionlab.resume_key`): a stopped trial's driver may be ended
    before it can end its run (left RUNNING), or see its TorchTrainer die under it and take that
    for a failure (FAILED)."""
    import mlflow

    if not resume_keys:
        return []
    client = mlflow.MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    children = search_all_runs(client, [parent.info.experiment_id], f"tags.\"{PARENT_TAG}\" = '{parent_run_id}'")
    stopped = [r for r in children if r.data.tags.get(RESUME_KEY_TAG) in resume_keys and r.info.status != "FINISHED"]
    for run in stopped:
        if ERROR_TAG in run.data.tags:  # the "failure" its driver recorded was the stop
            client.delete_tag(run.info.run_id, ERROR_TAG)
    return [_kill(client, run.info.run_id, reason) for run in stopped]


def log_artifacts(tracking_uri: str, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
    """Upload files and folders to the run; a folder keeps its name (`plots/` -> `<artifact_path>/plots/`)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    for path in map(Path, paths):
        if path.is_dir():
            dest = f"{artifact_path}/{path.name}" if artifact_path else path.name
            client.log_artifacts(run_id, str(path), artifact_path=dest)
        else:
            client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def numeric_metrics(report: dict) -> dict[str, float]:
    """The finite int/float values of one `ray.train.report` dict, except 'epoch' and 'step' (the steps)."""
    import math

    return {k: float(v) for k, v in report.items()
            if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def mlflow_metrics_callback(tracking_uri: str, run_id: str):
    """A `ray.train.UserCallback` that logs every epoch's report to the run, live, once.

    It runs on the Ray Train controller (not on the workers): `after_report` gets one metrics
    dict per worker; rank 0's (`metrics[0]`) is logged with step = its 'epoch', except its
    'per_step' values (world size, global batch, learning rate, restarts), logged with step = its
    'step' (optimiser steps), and except a mid-epoch checkpoint's report ('report': 'checkpoint'),
    of which only the 'per_step' values are logged. The class is
    built here so that importing this module does not import Ray; Ray ships the object to the
    controller with cloudpickle, which pickles such a class by value.

    Args:
        tracking_uri: from `config.resolve_tracking_uri`.
        run_id: the run `start_run` created.
    Returns:
        An MLflowMetricsCallback instance for `RunConfig(callbacks=[...])`.
    """
    from ray.train import UserCallback

    class MLflowMetricsCallback(UserCallback):
        def __init__(self, tracking_uri: str, run_id: str):
            self.tracking_uri, self.run_id = tracking_uri, run_id  # no client: it must pickle

        def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
            import mlflow
            from mlflow.entities import Metric

            if not metrics:
                return
            report, now_ms = metrics[0], int(time.time() * 1000)
            batch = [Metric(k, v, now_ms, int(report["step"])) for k, v in report.get("per_step", {}).items()]
            if report.get("report", "epoch") == "epoch":  # not a mid-epoch checkpoint's
                batch += [Metric(k, v, now_ms, int(report["epoch"])) for k, v in numeric_metrics(report).items()]
            if not batch:
                return
            try:
                mlflow.MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=batch)
            except Exception as err:  # noqa: BLE001 - a busy store must not stop training; history is kept
                print(f"warning: epoch {report['epoch']} metrics not logged to MLflow: {err}", file=sys.stderr)

    return MLflowMetricsCallback(tracking_uri, run_id)


@contextmanager
def system_metrics(tracking_uri: str, run_id: str, *, interval_s: float, node_id: str | None = None):
    """Sample this node's CPU, memory, disk, network and (with nvidia-ml-py and a driver) GPU
    utilisation every `interval_s` seconds into the run's `system/...` metrics (the UI's "System
    metrics" tab) for the duration of the block; `interval_s` 0 samples nothing.

    Run it in one process per node (a training node's first worker): the samples are the node's,
    not the process's. A restarted worker group goes on at the next step. The samples of the last,
    unfinished interval are logged at the end too (MLflow's monitor drops them), so even a block
    shorter than `interval_s` logs one step.

    Args:
        node_id: names the node's metrics (`system/<node_id>/...`) when a run spans several.
    """
    monitor = None
    if interval_s > 0:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True,
                                           node_id=node_id, tracking_uri=tracking_uri)
            monitor.start()
        except Exception as err:  # noqa: BLE001 - missing psutil or a busy store must not stop training
            print(f"warning: no system metrics for run {run_id}: {err}", file=sys.stderr)
            monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()  # joins its thread: the samples below are no longer being written
            try:
                if any(m.metrics for m in monitor.monitors):
                    monitor.publish_metrics(monitor.aggregate_metrics())
                    monitor.mlflow_logger.flush()
            except Exception as err:  # noqa: BLE001 - as above
                print(f"warning: last system metrics of run {run_id} not logged: {err}", file=sys.stderr)


class DatasetSplit(NamedTuple):
    """One list of videos a run trained or tested on, as an MLflow dataset input."""
    name: str  # e.g. 'synth/UCF101 split 1'
    context: str  # 'train', 'validation' or 'test'
    digest: str  # of the list as the run read it (see `list_digest`)
    num_videos: int
    num_classes: int
    source: str  # the videos' folder and the list file or folder


def list_digest(lines: list[str]) -> str:
    """16 hex digits of SHA-256 over the lines (MLflow keeps at most 36 characters of a digest)."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def log_dataset_inputs(tracking_uri: str, run_id: str, splits: list[DatasetSplit]) -> None:
    """Log each split as a dataset input of the run (the UI's Dataset column and run page)."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = [DatasetInput(Dataset(name=s.name, digest=s.digest, source_type="local",
                                   source=json.dumps({"uri": s.source}),
                                   profile=json.dumps({"num_videos": s.num_videos, "num_classes": s.num_classes})),
                           tags=[InputTag(DATASET_CONTEXT_TAG, s.context)]) for s in splits]
    mlflow.MlflowClient(tracking_uri).log_inputs(run_id, datasets=inputs)


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Final values (step 0) in one batch; nothing for an empty dict."""
    import mlflow

    if metrics:
        now_ms = int(time.time() * 1000)
        mlflow.MlflowClient(tracking_uri).log_batch(
            run_id, metrics=[mlflow.entities.Metric(k, float(v), now_ms, 0) for k, v in metrics.items()])


def set_description(tracking_uri: str, run_id: str, markdown: str) -> None:
    """The run page's Description (MLflow renders Markdown there; shown one click from the run list)."""
    import mlflow

    mlflow.MlflowClient(tracking_uri).set_tag(run_id, DESCRIPTION_TAG, markdown)


def ui_link(tracking_uri: str, experiment: str, *, ui_url: str | None = None) -> str | None:
    """The URL that opens the experiment's runs in the MLflow UI's Model-training view.

    Args:
        tracking_uri: a server (`http(s)://...`: its own UI) or a local store (served by `actionlab ui`).
        experiment: MLflow experiment name.
        ui_url: where the UI runs; default: the server itself, else `actionlab ui`'s address.
    Returns:
        `<ui>/#/experiments/<id>/runs?workflowType=machine_learning` (MLflow 3 reads the view from the
        URL and remembers it); None when the experiment does not exist.
    """
    import mlflow

    found = mlflow.MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        return None
    if ui_url is None:
        ui_url = tracking_uri if tracking_uri.startswith(("http://", "https://")) else UI_URL
    return f"{ui_url.rstrip('/')}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


def ui_line(tracking_uri: str, experiment: str) -> str:
    """One line for the end of a command: where to see its runs."""
    link = ui_link(tracking_uri, experiment)
    if tracking_uri.startswith(("http://", "https://")):
        return hide_password(f"MLflow UI: {link}")
    store = "" if tracking_uri == resolve_tracking_uri(None) else f" --tracking-uri {shlex.quote(tracking_uri)}"
    return hide_password(f"MLflow UI: {link}  (start it with `actionlab ui{store}`)")


def fetch_artifact(tracking_uri: str, run_id: str, name: str, dest: Path | None) -> Path | None:
    """Check that run `run_id` logged the artifact `name`, and download it into `dest` (None: only check).

    Raises:
        UserError: no such run in the store, or the run has no such artifact (with what it has).
    """
    import mlflow

    from orchestrator.errors import UserError

    client = mlflow.MlflowClient(tracking_uri)
    try:
        names = [a.path for a in client.list_artifacts(run_id)]
    except mlflow.exceptions.MlflowException as err:
        raise UserError(hide_password(f"mlflow:{run_id}: no such run in {tracking_uri} ({err.message})")) from None
    if name not in names:
        raise UserError(f"mlflow:{run_id}: that run logged no {name} (did it finish?); "
                        f"artifacts: {', '.join(names) or 'none'}")
    if dest is None:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, name, str(dest)))
