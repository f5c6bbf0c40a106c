"""An MLflow tracking server for runs logged from many processes and nodes at once.

    store_uri(backend, uri)        ->  the backend store: PostgreSQL (default) or a SQLite file (a laptop)
    check_postgres(uri)            ->  a UserError naming the URI and the fix when PostgreSQL cannot be reached
    artifact_destination(root, ..) ->  where the server writes artifacts (a folder, a shared mount, s3://...)
    server_command(...)            ->  the `mlflow server` command line, run with this interpreter
    serve(argv, ...)               ->  runs a server in its own process group until Ctrl-C / SIGTERM
                                       (`actionlab server` and `actionlab ui`)

Why a server: SQLite takes one writer at a time and its locks are unreliable over NFS, where a
cluster's drivers would share the file. Clients of a server only speak HTTP; PostgreSQL takes the
concurrent writes, and artifacts are proxied by the server (`mlflow-artifacts:/`), so no client
needs the artifact store's mount or credentials.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path

from orchestrator.errors import UserError

BACKENDS = ("postgresql", "sqlite")
# A role and a database named actionlab on this machine's PostgreSQL (README: "A tracking server").
DEFAULT_POSTGRES_URI = "postgresql://actionlab@127.0.0.1:5432/actionlab"
POSTGRES_DRIVER = "postgresql+psycopg"  # psycopg 3, a dependency; SQLAlchemy's default driver differs by version
POSTGRES_HELP = ("start PostgreSQL and create the role and database (Debian: `apt-get install postgresql`, "
                 "`service postgresql start`, then as the postgres user `createuser --pwprompt actionlab` and "
                 "`createdb -O actionlab actionlab`, and the password in PGPASSWORD; README.md, 'A tracking "
                 "server'), or give --backend-store-uri; on a laptop, --backend sqlite")
# MLflow 3's server starts a job runner with 7 huey consumer processes for GenAI jobs (scorers,
# prompt optimisation) that training runs never use: off unless the environment turns it on.
NO_GENAI_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
READY_TIMEOUT_S = 120.0  # a first start on an empty database runs MLflow's schema migrations


def masked(uri: str) -> str:
    """The URI with its password hidden, for messages: `scheme://user:***@host/...`."""
    return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", uri)  # greedy: an unescaped @ in the password


def store_uri(backend: str | None, uri: str | None) -> str:
    """The backend store the server opens.

    Args:
        backend: 'postgresql', 'sqlite' or None (from `uri`'s scheme; else postgresql).
        uri: an explicit `postgresql[+driver]://...` or `sqlite:///...` URI, or None for the backend's default
            (DEFAULT_POSTGRES_URI; the project's `sqlite:///mlflow.db`, made absolute).
    Returns:
        The URI: a SQLite path made absolute; `postgresql://` names the installed driver
        (`postgresql+psycopg://`), an explicit `postgresql+<driver>://` is kept.
    Raises:
        UserError: another scheme, or a backend that contradicts the URI.
    """
    from orchestrator.config import resolve_tracking_uri

    if uri is None:
        if backend == "sqlite":
            return resolve_tracking_uri(None)
        uri = DEFAULT_POSTGRES_URI
    scheme = uri.split(":", 1)[0].split("+", 1)[0]  # postgresql+psycopg2 -> postgresql
    if scheme not in BACKENDS or "://" not in uri:
        raise UserError(f"--backend-store-uri {masked(uri)!r}: expected postgresql://user@host:port/database "
                        "or sqlite:///path/to/mlflow.db")
    if backend and scheme != backend:
        raise UserError(f"--backend {backend} contradicts --backend-store-uri {masked(uri)}: give one of them")
    if scheme == "sqlite":
        return resolve_tracking_uri(uri)
    return POSTGRES_DRIVER + uri[len("postgresql"):] if uri.startswith("postgresql://") else uri


def check_postgres(uri: str, *, timeout_s: int = 5) -> None:
    """Connect once, so that an unreachable database is one clear line, not a server traceback.

    Raises:
        UserError: no driver, the server is down, or the role / database / password is wrong.
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    # connect_timeout is libpq's (psycopg, psycopg2): without it a firewalled host hangs for minutes
    libpq = url.drivername in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2")
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": timeout_s} if libpq else {})
    except ModuleNotFoundError as err:
        raise UserError(f"{masked(uri)}: no PostgreSQL driver ({err}); `pip install 'psycopg[binary]'`") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = " ".join(str(getattr(err, "orig", None) or err).split())  # libpq's message, on one line
        raise UserError(f"PostgreSQL at {masked(uri)} is not reachable ({reason}); {POSTGRES_HELP}") from None
    finally:
        engine.dispose()


def artifact_destination(root: str | None, store: str) -> str:
    """Where the server writes artifacts.

    Args:
        root: a URI with a scheme (`s3://bucket/prefix`, `gs://...`, `file:///...`: passed through),
            a local folder or shared mount (made absolute), or None: `mlartifacts` beside a SQLite
            file (where `tracking.start_run` puts a SQLite store's artifacts), else in the working directory.
        store: from `store_uri`.
    """
    from orchestrator.tracking import _ARTIFACT_DIR

    if root is None:
        beside = Path(store[len("sqlite:///"):]).parent if store.startswith("sqlite:///") else Path.cwd()
        return str(beside / _ARTIFACT_DIR)
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def server_command(*, store: str, artifacts: str, host: str, port: int, workers: int | None = None,
                   extra: list[str] | None = None) -> list[str]:
    """The `mlflow server` command line, run with this interpreter so the venv's mlflow serves it.

    Artifacts are proxied (`--serve-artifacts`): new experiments get `mlflow-artifacts:/` locations
    that the server resolves under `artifacts`.
    """
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--serve-artifacts",
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port)]
    if workers:
        argv += ["--workers", str(workers)]
    return argv + list(extra or [])


def _every_interface(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def local_url(host: str, port: int) -> str:
    """The URL this machine polls for readiness (loopback for a server bound to every interface)."""
    return f"http://127.0.0.1:{port}" if _every_interface(host) else tracking_url(host, port)


def tracking_url(host: str, port: int) -> str:
    """The URL clients use: a server bound to every interface is named by this machine's
    outward IP address (MLflow's default --allowed-hosts accepts private IPs, not host names)."""
    if _every_interface(host):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
                host = probe.getsockname()[0]
            except OSError:
                host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Raises a UserError naming host:port when another process listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port} ({err.strerror}): another server? "
                            "choose one with --port") from None


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Poll `url`/health until the server answers; False if it exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


def serve(argv: list[str], *, env: dict[str, str] | None = None, health_url: str | None = None,
          ready_message: str = "") -> int:
    """Run a server until it exits, Ctrl-C or SIGTERM; print `ready_message` once `health_url` answers.

    The server gets its own process group: `mlflow server` starts uvicorn and its workers, and
    Ctrl-C or `kill` must reach all of them even when the signal was sent to this process only
    (kill -INT, a job runner, `ray up` restarting the head). SIGTERM is turned into Ctrl-C for that.

    Args:
        argv: the server's command line.
        env: variables added to this process's environment, unless it sets them already.
        health_url: polled (`/health`) until the server answers; then `ready_message` is printed.
    Returns:
        The server's exit code; 0 when stopped by Ctrl-C / SIGTERM.
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # before the child exists
    process = subprocess.Popen(argv, env={**(env or {}), **os.environ}, start_new_session=True)
    try:
        if health_url:
            if wait_ready(health_url, process):
                print(ready_message, flush=True)
            elif process.poll() is None:
                print(f"warning: {health_url} does not answer after {READY_TIMEOUT_S:.0f} s; "
                      "see the server's output above", file=sys.stderr, flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return stop_group(process)
    finally:
        if process.poll() is None:  # an unexpected error here must not leave the server behind
            stop_group(process)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def stop_group(process: subprocess.Popen, *, grace_s: float = 10) -> int:
    """SIGINT to the server's process group, then SIGKILL to whatever of the group is left after
    `grace_s` (`mlflow server` may exit before the uvicorn workers it started have)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while _group_alive(process) and time.monotonic() < deadline:
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return 0


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reaps the group's leader once it exits: a zombie would still count
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True
