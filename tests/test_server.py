"""`actionlab server` against a real PostgreSQL: a study read back by `actionlab report`, and 8
processes logging at once with nothing lost (SQLite, served or as a file, is measured beside it).

PostgreSQL: $ACTIONLAB_TEST_POSTGRES_URI (a superuser URI; `.ci/run` starts one), else a throw-away
cluster this module starts with `initdb` / `pg_ctl` (as an unprivileged user when run as root);
skipped only when neither exists. Run as a script, this file is one of the 8 writer processes.
"""
from __future__ import annotations

import json
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

mlflow = pytest.importorskip("mlflow")

from orchestrator import server, tracking  # noqa: E402
from orchestrator.cli import main  # noqa: E402
from orchestrator.errors import UserError  # noqa: E402

WRITERS, POINTS = 8, 200  # processes, and metric points each logs (one key per writer, steps 0..199)
PG_ENV = "ACTIONLAB_TEST_POSTGRES_URI"
START_TIMEOUT_S = 120  # a server's first start migrates an empty database


# -- PostgreSQL --------------------------------------------------------------------------------

def postgres_bin_dir() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return debian[-1].parent if debian else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def throwaway_postgres(bin_dir: Path) -> Iterator[str]:
    """A PostgreSQL cluster in a temp folder on a free loopback port; yields its superuser URI.

    initdb refuses to run as root, so root runs it (and the server) as `postgres` (Debian's
    package creates that user) or `nobody`, in a folder that user owns.
    """
    folder = Path(tempfile.mkdtemp(prefix="actionlab-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)))
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", user, "--"]
    data, port = folder / "data", free_port()
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "actionlab", "--auth=trust",
                        "-E", "UTF8", "--no-locale", "--no-sync"], check=True, capture_output=True)
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                        "-t", "60", "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}", "start"],
                       check=True, capture_output=True)
        yield f"postgresql://actionlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    """A superuser URI of a running PostgreSQL (see the module docstring)."""
    if os.environ.get(PG_ENV):
        yield os.environ[PG_ENV]
        return
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL: set {PG_ENV}, or install its binaries (Debian: apt-get install postgresql; "
                    "initdb is looked for on PATH and in /usr/lib/postgresql/*/bin)")
    with throwaway_postgres(bin_dir) as uri:
        yield uri


@contextmanager
def new_database(admin_uri: str) -> Iterator[str]:
    """A fresh database on that server (dropped afterwards); yields its URI."""
    import psycopg

    name = f"actionlab_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(admin_uri, autocommit=True)  # CREATE / DROP DATABASE cannot run in a transaction
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        yield admin_uri.rsplit("/", 1)[0] + f"/{name}"
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


# -- `actionlab server` as a user starts it ----------------------------------------------------

class Server(NamedTuple):
    process: subprocess.Popen
    url: str  # the tracking URI it printed
    output: list[str]  # every line it printed so far


def start_server(*args: str) -> Server:
    """`actionlab server ARGS` in a subprocess; returns once it printed its tracking URI."""
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "server", *args, "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    urls: queue.Queue[str] = queue.Queue()

    def read() -> None:  # drains the pipe for the server's whole life
        for line in process.stdout:
            output.append(line)
            if line.startswith("Tracking URI: "):
                urls.put(line.split()[2])
        urls.put("")  # it exited

    threading.Thread(target=read, daemon=True).start()
    try:
        url = urls.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        url = ""
    if not url:
        stop_server(process)
        pytest.fail("actionlab server printed no tracking URI:\n" + "".join(output))
    return Server(process, url, output)


def stop_server(process: subprocess.Popen) -> list:
    """SIGTERM to `actionlab server` (not to its group: it must stop the server itself); returns the
    processes it had started that are still alive afterwards."""
    import psutil

    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    return [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def pg_server(postgres_admin, tmp_path_factory) -> Iterator[tuple[Server, str, Path]]:
    """One `actionlab server` on a fresh PostgreSQL database; yields (server, database URI, artifact root)."""
    artifacts = tmp_path_factory.mktemp("pg-artifacts")
    with new_database(postgres_admin) as database:
        started = start_server("--backend-store-uri", database, "--artifact-root", str(artifacts),
                               "--port", str(free_port()))
        yield started, database, artifacts
        assert stop_server(started.process) == []
        assert started.process.returncode == 0


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory) -> str:
    """One SQLite store for the module (creating MLflow's tables takes seconds): the study's local
    twin, then the store the SQLite loads write to (served, then as a file)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'mlflow.db'}"
    tracking.get_or_create_experiment(mlflow.MlflowClient(uri), "load", uri)
    return uri


# -- a tiny study, logged the way `actionlab ablate` logs one ----------------------------------

# variant, seed -> (test/video_top1, test/video_top5)
STUDY = {("rgb", 0): (0.575, 0.9), ("rgb", 1): (0.6, 0.925), ("flow", 0): (0.65, 0.95),
         ("flow", 1): (0.6, 0.875), ("two_stream", 0): (1.0, 1.0), ("two_stream", 1): (0.975, 1.0)}


def log_study(uri: str, experiment: str, folder: Path) -> dict[str, str]:
    """A parent study run with one FINISHED child per (variant, seed): params, per-epoch and test
    metrics, the tags `actionlab report` reads, and artifacts. Returns {'parent': id, 'rgb/0': id, ...}."""
    (folder / "comparison.md").write_text("| rgb | flow |\n")
    study_tags = {"actionlab.kind": "study", "actionlab.study": "tiny"}
    parent = tracking.start_run(tracking_uri=uri, experiment=experiment, run_name="tiny", tags=study_tags,
                                params=tracking.flatten_params({"study": {"seeds": [0, 1]}, "optim": {"lr": 0.01}}))
    ids = {"parent": parent}
    with tracking.run_status(uri, parent):
        client = mlflow.MlflowClient(uri)
        for (variant, seed), (top1, top5) in STUDY.items():
            tags = {"actionlab.kind": "variant", "actionlab.study": "tiny", "actionlab.variant": variant,
                    "actionlab.dataset": "synth", "actionlab.seed": str(seed), "actionlab.selection": "val"}
            run_id = tracking.start_run(tracking_uri=uri, experiment=experiment, run_name=f"{variant}/seed{seed}",
                                        tags=tags, params={"model.modality": variant, "seed": str(seed)},
                                        parent_run_id=parent)
            with tracking.run_status(uri, run_id):
                for epoch, loss in enumerate([1.4, 0.9, 0.6]):
                    client.log_metric(run_id, "train/loss", loss + seed / 10, step=epoch)
                client.log_metric(run_id, "test/video_top1", top1)
                client.log_metric(run_id, "test/video_top5", top5)
                history = folder / "history.json"
                history.write_text(json.dumps({"variant": variant, "seed": seed}))
                tracking.log_artifacts(uri, run_id, [history])
            ids[f"{variant}/{seed}"] = run_id
        tracking.log_artifacts(uri, parent, [folder / "comparison.md"])
    return ids


def report(uri: str, experiment: str, capsys) -> str:
    capsys.readouterr()
    assert main(["report", experiment, "--tracking-uri", uri]) == 0
    return capsys.readouterr().out


def test_a_study_through_the_postgresql_server_reads_back_exactly(pg_server, sqlite_db, tmp_path, capsys):
    from orchestrator.report import ResultRow, summarize, to_markdown

    started, database, artifacts = pg_server
    (tmp_path / "pg").mkdir()
    ids = log_study(started.url, "tiny-study", tmp_path / "pg")
    (tmp_path / "sqlite").mkdir()
    log_study(sqlite_db, "tiny-study", tmp_path / "sqlite")

    rows = [ResultRow("tiny", variant, "synth", seed, top1, top5, "") for (variant, seed), (top1, top5) in STUDY.items()]
    expected = to_markdown(summarize(rows), title="tiny-study")
    assert report(started.url, "tiny-study", capsys) == expected == report(sqlite_db, "tiny-study", capsys)
    # seed 95% CI, then the one with the test list (– : these runs log no test dataset input)
    assert re.search(r"\| two_stream \| 98\.8 ± 1\.8 \| \[[\d.]+, [\d.]+\] \| – \| 100\.0 ± 0\.0 \|", expected)

    client = mlflow.MlflowClient(started.url)
    child = client.get_run(ids["flow/1"])
    assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == ids["parent"]
    assert child.data.params == {"model.modality": "flow", "seed": "1"}
    assert [(m.step, m.value) for m in client.get_metric_history(ids["flow/1"], "train/loss")] == [
        (0, 1.5), (1, 1.0), (2, 0.7)]
    assert client.get_run(ids["parent"]).data.params["study.seeds"] == "[0, 1]"
    # artifacts went through the server into its artifact root, and come back byte for byte
    assert child.info.artifact_uri.startswith("mlflow-artifacts:/")
    got = Path(client.download_artifacts(ids["flow/1"], "history.json", str(tmp_path)))
    assert json.loads(got.read_text()) == {"variant": "flow", "seed": 1}
    assert len(list(artifacts.rglob("history.json"))) == len(STUDY)
    # ... and the runs are rows of PostgreSQL, not of some default store
    import psycopg

    with psycopg.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM runs").fetchone()[0] == len(STUDY) + 1


# -- 8 processes at once ------------------------------------------------------------------------

class Load(NamedTuple):
    store: str
    points: int  # sent
    stored: int  # rows read back
    lost: int  # (key, step) pairs sent but not stored
    duplicated: int  # rows beyond one per (key, step)
    errors: int  # log calls that raised (after the client's own retries)
    messages: list[str]  # distinct error messages, cut
    seconds: float  # from "go" to the last writer done

    def line(self) -> str:
        return (f"{self.store}: {self.points} points from {WRITERS} processes in {self.seconds:.1f} s "
                f"({self.points / self.seconds:.0f} points/s), {self.errors} errors, {self.lost} lost, "
                f"{self.duplicated} duplicated" + (f"; {self.messages}" if self.messages else ""))


@pytest.fixture(scope="module")
def writers() -> Iterator[list[subprocess.Popen]]:
    """8 writer processes (this file as a script), started once: importing mlflow costs seconds each."""
    procs = [subprocess.Popen([sys.executable, __file__, str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, bufsize=1) for i in range(WRITERS)]
    yield procs
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def run_load(writers: list[subprocess.Popen], uri: str, store: str) -> Load:
    """Every writer logs POINTS points to one run of `uri` at the same moment; then count them back."""
    run_id = tracking.start_run(tracking_uri=uri, experiment="load", run_name=store, tags={"actionlab.kind": "train"})
    for proc in writers:
        proc.stdin.write(f"{uri} {run_id}\n")
    assert [proc.stdout.readline().strip() for proc in writers] == ["ready"] * WRITERS  # store opened
    start = time.perf_counter()
    for proc in writers:
        proc.stdin.write("go\n")
    results = [json.loads(proc.stdout.readline()) for proc in writers]
    seconds = time.perf_counter() - start

    client = mlflow.MlflowClient(uri)
    rows = [(i, m.step, m.value) for i in range(WRITERS) for m in client.get_metric_history(run_id, f"writer{i}")]
    expected = {(i, step, float(step)) for i in range(WRITERS) for step in range(POINTS)}
    return Load(store, WRITERS * POINTS, len(rows), len(expected - set(rows)), len(rows) - len(set(rows)),
                sum(r["errors"] for r in results), sorted({m for r in results for m in r["messages"]}), seconds)


def writer(index: int) -> None:
    """One writer process: for each 'URI RUN_ID' line, open the store, say 'ready', wait for 'go',
    log POINTS points of key writer<index> (steps 0..POINTS-1, value = step), print a JSON summary."""
    for line in sys.stdin:
        uri, run_id = line.split()
        client = mlflow.MlflowClient(uri)
        client.get_run(run_id)  # connects (and checks a SQLite file's schema) before the clock starts
        print("ready", flush=True)
        sys.stdin.readline()
        errors, messages = 0, set()
        for step in range(POINTS):
            try:
                client.log_metric(run_id, f"writer{index}", float(step), step=step)
            except Exception as err:  # noqa: BLE001 - counted and reported: this is what is measured
                errors += 1
                messages.add(" ".join(str(err).split())[:120])
        print(json.dumps({"errors": errors, "messages": sorted(messages)}), flush=True)


def test_eight_writers_through_the_postgresql_server_lose_nothing(pg_server, writers, capsys):
    load = run_load(writers, pg_server[0].url, "PostgreSQL server")
    with capsys.disabled():
        print("\n" + load.line())
    assert (load.stored, load.lost, load.duplicated, load.errors) == (WRITERS * POINTS, 0, 0, 0)


@pytest.mark.parametrize("store", ["SQLite server", "SQLite file"])
def test_eight_writers_on_sqlite_are_measured(store, writers, sqlite_db, capsys):
    """Recorded, not asserted: what SQLite does under the same load (see the printed line)."""
    if store == "SQLite file":
        load = run_load(writers, sqlite_db, store)
    else:
        started = start_server("--backend", "sqlite", "--backend-store-uri", sqlite_db, "--port", str(free_port()))
        try:
            load = run_load(writers, started.url, store)
        finally:
            left = stop_server(started.process)
        assert left == [] and started.process.returncode == 0  # SIGTERM stopped its whole process group
    with capsys.disabled():
        print("\n" + load.line())
    assert load.points == WRITERS * POINTS


# -- the command's checks, without a server -----------------------------------------------------

@pytest.mark.parametrize("backend, uri, expected", [
    (None, None, "postgresql+psycopg://actionlab@127.0.0.1:5432/actionlab"),  # the driver actionlab installs
    ("postgresql", "postgresql://u:pw@db:5433/runs", "postgresql+psycopg://u:pw@db:5433/runs"),
    (None, "postgresql+psycopg2://u@db/runs", "postgresql+psycopg2://u@db/runs"),  # a driver of one's own
    ("sqlite", None, "sqlite:///{cwd}/mlflow.db"),
    (None, "sqlite:///runs/m.db", "sqlite:///{cwd}/runs/m.db"),
])
def test_store_uri(backend, uri, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert server.store_uri(backend, uri) == expected.format(cwd=tmp_path.resolve())


@pytest.mark.parametrize("backend, uri, message", [
    ("sqlite", "postgresql://u@db/runs", "--backend sqlite contradicts --backend-store-uri postgresql://u@db/runs"),
    (None, "mysql://u@db/runs", "expected postgresql://"),
    (None, "postgres://u:secret@db/runs", r"'postgres://u:\*\*\*@db/runs'"),  # the password never printed
])
def test_store_uri_errors(backend, uri, message):
    with pytest.raises(UserError, match=message):
        server.store_uri(backend, uri)


@pytest.mark.parametrize("root, store, expected", [
    (None, "sqlite:////data/mlflow.db", "/data/mlartifacts"),
    (None, "postgresql://u@db/runs", "{cwd}/mlartifacts"),
    ("shared/art", "postgresql://u@db/runs", "{cwd}/shared/art"),
    ("s3://bucket/actionlab", "postgresql://u@db/runs", "s3://bucket/actionlab"),
])
def test_artifact_destination(root, store, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert server.artifact_destination(root, store) == expected.format(cwd=tmp_path.resolve())


def test_server_command():
    argv = server.server_command(store="postgresql://u@db/runs", artifacts="/mnt/shared/mlartifacts",
                                 host="127.0.0.1", port=5001, workers=2, extra=["--allowed-hosts", "head"])
    assert argv == [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", "postgresql://u@db/runs",
                    "--serve-artifacts", "--artifacts-destination", "/mnt/shared/mlartifacts",
                    "--host", "127.0.0.1", "--port", "5001", "--workers", "2", "--allowed-hosts", "head"]
    assert server.tracking_url("127.0.0.1", 5001) == "http://127.0.0.1:5001"
    assert server.tracking_url("0.0.0.0", 5001).startswith("http://")  # this machine's address, not 0.0.0.0
    assert "0.0.0.0" not in server.tracking_url("0.0.0.0", 5001)


def test_unreachable_postgresql_is_one_clear_error(capsys):
    port = free_port()  # nothing listens there
    assert main(["server", "--backend-store-uri", f"postgresql://actionlab:secret@127.0.0.1:{port}/actionlab"]) == 2
    err = capsys.readouterr().err
    assert f"PostgreSQL at postgresql+psycopg://actionlab:***@127.0.0.1:{port}/actionlab is not reachable" in err
    assert "apt-get install postgresql" in err and "--backend sqlite" in err
    assert "secret" not in err and "Traceback" not in err


def test_a_taken_port_is_named():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.check_port_free("127.0.0.1", port)


# -- beyond loopback: a login, or --no-auth said out loud -------------------------------------------

class Started(NamedTuple):
    code: int
    argv: list[str]  # the `mlflow server` command line
    secrets_env: dict[str, str]
    out: str
    err: str


def run_server_command(monkeypatch, capsys, tmp_path, *args: str, extras: bool = True) -> Started:
    """`actionlab server --backend sqlite ARGS` in-process, with `serve` replaced by a recorder (no
    server starts) and MLflow's auth extras present or not."""
    seen = {}

    def record(argv, *, env=None, secrets_env=None, health_url=None, ready_message=""):
        seen.update(argv=argv, secrets_env=secrets_env or {})
        print(ready_message)
        return 0

    monkeypatch.setattr(server, "serve", record)
    monkeypatch.setattr(server, "auth_extras_installed", lambda: extras)
    for variable in ("MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"):
        monkeypatch.delenv(variable, raising=False)
    capsys.readouterr()
    code = main(["server", "--backend", "sqlite", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--port", str(free_port()), *args])
    out, err = capsys.readouterr()
    return Started(code, seen.get("argv", []), seen.get("secrets_env", {}), out, err)


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_beyond_loopback_without_the_auth_extras_is_one_clear_error(monkeypatch, capsys, tmp_path):
    started = run_server_command(monkeypatch, capsys, tmp_path, "--host", "0.0.0.0", extras=False)
    assert started.code == 2 and started.argv == []  # nothing started
    [line] = started.err.splitlines()
    assert line == ("actionlab server: error: --host 0.0.0.0 listens beyond this machine, so the server needs a "
                    "login: MLflow's basic-auth app needs its auth extras (Flask-WTF is missing): "
                    "`pip install 'mlflow[auth]'`; or, on a network only you can reach, --no-auth")


def test_beyond_loopback_the_server_gets_a_generated_login_kept_in_private_files(monkeypatch, capsys, tmp_path):
    started = run_server_command(monkeypatch, capsys, tmp_path, "--host", "0.0.0.0")
    assert started.code == 0 and option(started.argv, "--app-name") == "basic-auth"
    folder = tmp_path / "mlflow-auth"  # beside the SQLite store
    password = (folder / "admin_password").read_text().strip()
    assert len(password) >= 32 and password != "password1234"
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.name != "basic_auth.ini"} == {
        "admin_password": 0o600, "secret_key": 0o600}
    assert folder.stat().st_mode & 0o777 == 0o700
    assert started.secrets_env == {
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": (folder / "secret_key").read_text().strip()}
    assert f"login: user admin, password in {folder / 'admin_password'} (mode 0600)" in started.out
    assert password not in started.out + started.err
    # the Host headers and browser origins of this machine's names, not MLflow's "localhost-only" defaults
    hosts, origins = option(started.argv, "--allowed-hosts"), option(started.argv, "--cors-allowed-origins")
    address = server.outward_address()
    port = started.argv[started.argv.index("--port") + 1]
    assert f"{address}:{port}" in hosts.split(",") and f"http://{address}:{port}" in origins.split(",")
    # a restart keeps the login; a lost password file with its users is refused
    again = run_server_command(monkeypatch, capsys, tmp_path, "--host", "0.0.0.0")
    assert again.secrets_env == started.secrets_env
    (folder / "basic_auth.db").touch()  # MLflow creates it on the first real start
    (folder / "admin_password").unlink()
    lost = run_server_command(monkeypatch, capsys, tmp_path, "--host", "0.0.0.0")
    assert lost.code == 2 and "admin password is unknown" in lost.err and len(lost.err.splitlines()) == 1


def test_no_auth_beyond_loopback_says_why_it_is_unsafe(monkeypatch, capsys, tmp_path):
    started = run_server_command(monkeypatch, capsys, tmp_path, "--host", "0.0.0.0", "--no-auth", extras=False)
    assert started.code == 0 and "--app-name" not in started.argv and started.secrets_env == {}
    [warning] = started.err.splitlines()
    assert warning.startswith("warning: --no-auth on 0.0.0.0: anyone who reaches port ")
    assert "read, change and delete every run" in warning
    assert option(started.argv, "--allowed-hosts") and option(started.argv, "--cors-allowed-origins")


def test_loopback_needs_no_login_and_options_of_ones_own_win(monkeypatch, capsys, tmp_path):
    started = run_server_command(monkeypatch, capsys, tmp_path, extras=False)  # 127.0.0.1
    assert started.code == 0 and started.err == "" and "--app-name" not in started.argv
    assert option(started.argv, "--allowed-hosts") == "localhost,127.0.0.1,[::1],localhost:*,127.0.0.1:*,[[]::1]:*"
    # k8s/mlflow.yaml: basic auth with its own settings, its hosts in MLflow's variable
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", "mlflow,mlflow:5000")
    seen = {}
    monkeypatch.setattr(server, "serve", lambda argv, **kw: seen.update(argv=argv, **kw) or 0)
    assert main(["server", "--backend", "sqlite", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 "--host", "0.0.0.0", "--port", str(free_port()), "--", "--app-name", "basic-auth"]) == 0
    assert seen["argv"].count("--app-name") == 1 and "--allowed-hosts" not in seen["argv"]
    assert not seen["secrets_env"] and not (tmp_path / "mlflow-auth").exists()


@pytest.mark.parametrize("host, names", [
    ("127.0.0.1", None), ("localhost", None), ("::1", None),
    ("10.1.2.3", ["10.1.2.3"]), ("head.example.com", ["head.example.com"]), ("fd00::5", ["[fd00::5]"]),
])
def test_network_args_name_the_host_given(host, names, monkeypatch):
    for variable in ("MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"):
        monkeypatch.delenv(variable, raising=False)
    args = server.network_args(host, 5001)
    assert server.is_loopback(host) == (names is None)
    if names is None:
        assert args[0] == "--allowed-hosts" and "--cors-allowed-origins" not in args
        return
    assert args == ["--allowed-hosts", ",".join(h for n in names for h in (n, f"{n}:5001")),
                    "--cors-allowed-origins", ",".join(f"http://{n}:5001" for n in names)]
    assert server.network_args(host, 5001, given=["--allowed-hosts=x"]) == args[2:]


def test_a_server_beyond_loopback_asks_for_its_login(tmp_path):
    """A real server on 0.0.0.0 (needs `mlflow[auth]`): 401 without the login, 200 with it."""
    pytest.importorskip("flask_wtf")
    import base64
    import urllib.request

    started = start_server("--backend", "sqlite", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                           "--host", "0.0.0.0", "--port", str(free_port()))
    try:
        url = f"{started.url}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        password = (tmp_path / "mlflow-auth" / "admin_password").read_text().strip()
        request = urllib.request.Request(url, headers={
            "Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert "localhost-only" not in "".join(started.output)  # MLflow's banner names the hosts given
    finally:
        assert stop_server(started.process) == []


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH is Python 3.11's")
def test_server_children_never_import_from_the_working_folder(tmp_path, monkeypatch):
    """`python -m mlflow` (and the `python -m uvicorn` it starts) put the working folder first on sys.path."""
    (tmp_path / "json.py").write_text("import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    assert server.serve([sys.executable, "-m", "json.tool", "--help"]) == 0
    assert not (tmp_path / "ran").exists()


if __name__ == "__main__":
    writer(int(sys.argv[1]))
