"""An MLflow tracking server for runs logged from many processes and nodes at once.

    store_uri(backend, uri)        ->  the backend store: PostgreSQL (default) or a SQLite file (a laptop)
    check_postgres(uri)            ->  a UserError naming the URI and the fix when PostgreSQL cannot be reached
    artifact_destination(root, ..) ->  where the server writes artifacts (a folder, a shared mount, s3://...)
    server_command(...)            ->  the `mlflow server` command line, run with this interpreter
    network_args(host, port)       ->  --allowed-hosts / --cors-allowed-origins: the names it is reached by
    basic_auth(folder)             ->  MLflow's basic-auth app: settings, a generated admin password (0600)
    serve(argv, ...)               ->  runs a server in its own process group until Ctrl-C / SIGTERM
                                       (`actionlab server` and `actionlab ui`)

Why a server: SQLite takes one writer at a time and its locks are unreliable over NFS, where a
cluster's drivers would share the file. Clients of a server only speak HTTP; PostgreSQL takes the
concurrent writes, and artifacts are proxied by the server (`mlflow-artifacts:/`), so no client
needs the artifact store's mount or credentials.

Why a login beyond loopback: a server without one lets anyone who reaches its port read, change
and delete every run, and write files under the artifact root through its proxy. So a server that
listens beyond this machine runs MLflow's basic-auth app (or says why not, with --no-auth).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

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
# Children never import from the folder the server is started in (a stray mlflow.py or flask.py there
# would run): `python -m` puts that folder first on sys.path, in `mlflow server` and in the uvicorn it
# starts with `python -m` too; this variable (Python >= 3.11) is inherited by both.
SAFE_PATH = {"PYTHONSAFEPATH": "1"}
AUTH_USER = "admin"  # the basic-auth app's administrator, created on its first start


def masked(uri: str) -> str:
    """The URI with its password hidden, for messages: `scheme://user:***@host/...`."""
    from orchestrator.tracking import hide_password

    return hide_password(uri)


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
        return str(_beside(store) / _ARTIFACT_DIR)
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def auth_folder(folder: str | None, store: str) -> Path:
    """Where `basic_auth` keeps its files: `folder`, else `mlflow-auth` beside a SQLite file, else in
    the working directory (as the artifacts)."""
    return Path(folder).expanduser().resolve() if folder else _beside(store) / "mlflow-auth"


def _beside(store: str) -> Path:
    return Path(store[len("sqlite:///"):]).parent if store.startswith("sqlite:///") else Path.cwd()


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


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only (a host name other than
    localhost counts as beyond it: it may resolve to any interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def reachable_names(host: str) -> list[str]:
    """The addresses and names clients reach a server bound to `host` by: `host` itself; for every
    interface (0.0.0.0, ::) this machine's name, full name and every address of its interfaces."""
    if not _every_interface(host):
        return [host.strip("[]")]
    import psutil

    names = [socket.gethostname(), socket.getfqdn(), outward_address()]
    names += [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family in (socket.AF_INET, socket.AF_INET6)]
    return list(dict.fromkeys(n.strip("[]") for n in names if n))


def network_args(host: str, port: int, *, given: list[str] = ()) -> list[str]:
    """`mlflow server`'s --allowed-hosts and --cors-allowed-origins for a server bound to `host`,
    each unless the user gave it (in `given`, the options after `--`, or in MLflow's variable:
    a command-line option would override the variable).

    MLflow's defaults accept the Host header of localhost and of any private address, and browser
    requests (the UI's own POSTs included) only from localhost origins; a server reached by its name
    or public address needs both set to those, and one on loopback is reached through SSH tunnels
    on any local port.

    Returns:
        The options, each a comma-separated list: Host headers (`name` and `name:port`; loopback
        names with any port) and, beyond loopback, origins (`http://name:port`).
    """
    if is_loopback(host):
        loopback = ["localhost", "127.0.0.1", "[::1]"]
        # an entry with `*` is an fnmatch pattern (where `[` opens a set), one without is compared as it is
        hosts = loopback + [f"{n.replace('[', '[[]')}:*" for n in loopback]
        origins = []  # MLflow always allows localhost origins
    else:
        names = [f"[{n}]" if ":" in n else n for n in reachable_names(host)]
        hosts, origins = [h for n in names for h in (n, f"{n}:{port}")], [f"http://{n}:{port}" for n in names]
    args = []
    for option, variable, values in [("--allowed-hosts", "MLFLOW_SERVER_ALLOWED_HOSTS", hosts),
                                     ("--cors-allowed-origins", "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", origins)]:
        if values and not gives(given, option) and not os.environ.get(variable):
            args += [option, ",".join(values)]
    return args


def gives(argv: list[str], option: str) -> bool:
    """Whether a command line sets `option` (`--option value` or `--option=value`)."""
    return any(a == option or a.startswith(option + "=") for a in argv)


def auth_extras_installed() -> bool:
    """Whether MLflow's basic-auth app can start: it needs Flask-WTF (`pip install 'mlflow[auth]'`)."""
    import importlib.util

    return importlib.util.find_spec("flask_wtf") is not None


class BasicAuth(NamedTuple):
    """MLflow's basic-auth app, as `basic_auth` set it up."""
    args: list[str]  # for `mlflow server`
    env: dict[str, str]  # for its process: the settings file, the admin's first password, Flask's CSRF key
    password_file: Path  # the admin's password (mode 0600)


def basic_auth(folder: Path) -> BasicAuth:
    """Set up MLflow's basic-auth app in `folder` (mode 0700), once; later starts reuse it:

        basic_auth.ini   its settings: users in basic_auth.db beside it, READ by default
        basic_auth.db    its users, created by MLflow on the first start with the admin below
        admin_password   the admin's password (0600): 32 random URL-safe characters, generated here
                         (MLflow's example one is public); MLflow reads it on the first start only
        secret_key       Flask's CSRF key (0600): the same in every worker and after a restart

    Raises:
        UserError: MLflow's auth extras are missing; the users exist but the password file is gone;
            a secret file others can read.
    """
    if not auth_extras_installed():
        raise UserError("MLflow's basic-auth app needs its auth extras (Flask-WTF is missing): "
                        "`pip install 'mlflow[auth]'`; or, on a network only you can reach, --no-auth")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    users, password_file = folder / "basic_auth.db", folder / "admin_password"
    if users.exists() and not password_file.exists():
        raise UserError(f"{users} holds users, but {password_file} is gone, so the admin password is unknown; "
                        f"restore that file, or delete {users} to start over with a new admin")
    password = _private(password_file, lambda: secrets.token_urlsafe(24))
    secret_key = _private(folder / "secret_key", lambda: secrets.token_hex(32))
    settings = folder / "basic_auth.ini"  # no secret in it: written again at each start (the folder may have moved)
    database = str(users).replace("%", "%%")  # configparser's interpolation
    settings.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{database}\n"
                        f"admin_username = {AUTH_USER}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(settings), "MLFLOW_AUTH_ADMIN_USERNAME": AUTH_USER,
           "MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key}
    return BasicAuth(["--app-name", "basic-auth"], env, password_file)


def _private(path: Path, make) -> str:
    """The secret in `path`, written there first (mode 0600, never over an existing file) by `make()`."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(make() + "\n")
    if path.stat().st_mode & 0o077:
        raise UserError(f"{path} can be read by other users (mode {path.stat().st_mode & 0o777:o}): chmod 600 {path}")
    return path.read_text().strip()


def local_url(host: str, port: int) -> str:
    """The URL this machine polls for readiness (loopback for a server bound to every interface)."""
    return f"http://127.0.0.1:{port}" if _every_interface(host) else tracking_url(host, port)


def tracking_url(host: str, port: int) -> str:
    """The URL clients use: a server bound to every interface is named by this machine's
    outward IP address (MLflow's default --allowed-hosts accepts private IPs, not host names)."""
    if _every_interface(host):
        host = outward_address()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def outward_address() -> str:
    """This machine's address on the interface its outgoing traffic takes (else its host name)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostname()


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


def serve(argv: list[str], *, env: dict[str, str] | None = None, secrets_env: dict[str, str] | None = None,
          health_url: str | None = None, ready_message: str = "") -> int:
    """Run a server until it exits, Ctrl-C or SIGTERM; print `ready_message` once `health_url` answers.

    The server gets its own process group: `mlflow server` starts uvicorn and its workers, and
    Ctrl-C or `kill` must reach all of them even when the signal was sent to this process only
    (kill -INT, a job runner, `ray up` restarting the head). SIGTERM is turned into Ctrl-C for that.

    Args:
        argv: the server's command line.
        env: variables added to this process's environment, unless it sets them already.
        secrets_env: variables set whatever the environment says (the files they come from are
            what the user was told about). SAFE_PATH is always set.
        health_url: polled (`/health`) until the server answers; then `ready_message` is printed.
    Returns:
        The server's exit code; 0 when stopped by Ctrl-C / SIGTERM.
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # before the child exists
    process = subprocess.Popen(argv, env={**(env or {}), **os.environ, **(secrets_env or {}), **SAFE_PATH},
                               start_new_session=True)
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
