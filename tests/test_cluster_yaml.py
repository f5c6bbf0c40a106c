"""cluster.yaml (the Ray cluster launcher's config for AWS), checked without AWS: nothing answers without
credentials, the nodes install from the lock.

- The secrets: the one line that makes them (cluster.yaml's header, README.md "On a cluster") is run in
  a temporary HOME: four 0600 files of 64 hex digits in a 0700 folder, kept when run again; every
  file the commands read is one of them, and file_mounts copies the folder to every node.
- Ray: the head's and the workers' `ray start` commands are run with a stand-in `ray` that records
  its environment: token authentication with the token file, the MLflow login for the trial drivers,
  the job API on loopback only.
- PostgreSQL: initdb with scram-sha-256 and the password file; the check that refuses a data folder
  left on `trust` is run on pg_hba.conf files.
- MLflow: the command that writes the basic-auth settings is run, and the installed mlflow's own
  parser reads them; `actionlab server` runs the basic-auth app, parsed by actionlab's parser.
- Elastic training: gpu_worker's bounds and the autoscaler's settings fit the experiment section the
  comments show; the spot watcher runs with stand-ins for curl (EC2's metadata), python and ray, and
  drains its node with arguments the installed `ray drain-node` takes.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
SECRETS = "~/.actionlab-cluster"
SECRET_FILES = {"ray_auth_token", "postgres_password", "mlflow_admin_password", "mlflow_flask_secret_key"}

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def bash(command: str, home: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(home), **env})


def secrets_line(text: str) -> str:
    """The command that makes the secrets, as written in a file (a comment's or a code block's line)."""
    (line,) = [line.lstrip("# ").strip() for line in text.splitlines()
               if "(umask 077 && mkdir -p ~/.actionlab-cluster" in line]
    return line


def all_commands() -> str:
    return "\n".join(command for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                                         "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
                     for command in CLUSTER.get(key) or [])


@pytest.fixture
def home(tmp_path):
    """A HOME with the cluster's secrets made by the header's line, and an empty venv to `source`."""
    if shutil.which("openssl") is None:
        pytest.skip("the line that makes the secrets runs openssl")
    run = bash(secrets_line((ROOT / "cluster.yaml").read_text()), tmp_path)
    assert run.returncode == 0, run.stderr
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "activate").write_text("")
    return tmp_path


@needs_bash
def test_secrets_are_made_once_and_private(home):
    readme = (ROOT / "README.md").read_text()
    assert secrets_line(readme) == secrets_line((ROOT / "cluster.yaml").read_text()), "README.md and cluster.yaml differ"
    folder = home / ".actionlab-cluster"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {p.name for p in folder.iterdir()} == SECRET_FILES
    first = {}
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        first[path.name] = path.read_text()
        assert re.fullmatch(r"[0-9a-f]{64}\n", first[path.name]), path.name
    assert len(set(first.values())) == len(first), "one secret per purpose"
    run = bash(secrets_line((ROOT / "cluster.yaml").read_text()), home)
    assert run.returncode == 0 and {p.name: p.read_text() for p in folder.iterdir()} == first, "made once, then kept"

    # every node gets the folder, and its setup makes it private again whatever rsync kept
    assert CLUSTER["file_mounts"]["/home/ubuntu/.actionlab-cluster"] == SECRETS
    for path in folder.iterdir():
        path.chmod(0o644)
    (setup,) = [c for c in CLUSTER["setup_commands"] if "chmod" in c and "actionlab-cluster" in c]
    assert bash(setup, home).returncode == 0
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    read = set(re.findall(r"(?:~|\$HOME)/\.actionlab-cluster/(\w+)", all_commands()))
    assert read <= SECRET_FILES and read, read


FAKE_RAY = """#!/bin/bash
{ echo "ARGS $*"; env; } > "$RAY_CALLS/$1.$$"
"""


def run_with_fake_ray(command: str, home: Path, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """Runs one start command with a stand-in `ray`: the `ray start` arguments and environment it got."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    calls.mkdir(exist_ok=True)
    (bin_dir / "ray").write_text(FAKE_RAY)
    (bin_dir / "ray").chmod(0o755)
    # ulimit -n 65536 needs a hard limit at least that high, which a developer's shell may not have
    run = bash(command.replace("ulimit -n 65536 &&", ""), home, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               RAY_CALLS=str(calls), RAY_HEAD_IP="10.0.0.1")
    assert run.returncode == 0, run.stderr
    (record,) = [p for p in calls.iterdir() if p.name.startswith("start.")]
    lines = record.read_text().splitlines()
    args = shlex.split(lines[0][len("ARGS "):])
    env = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    record.unlink()
    return args, env


@needs_bash
@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_ray_requires_its_token(key, home, tmp_path):
    """Every node's `ray start` runs with token authentication and the token file, and with the MLflow
    login its trial drivers inherit; the head's job API listens on loopback only (`ray dashboard`)."""
    (command,) = [c for c in CLUSTER[key] if "ray start" in c]
    args, env = run_with_fake_ray(command, home, tmp_path)
    assert args[0] == "start"
    assert env["RAY_AUTH_MODE"] == "token"
    assert Path(env["RAY_AUTH_TOKEN_PATH"]) == home / ".actionlab-cluster" / "ray_auth_token"
    assert env["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert env["MLFLOW_TRACKING_PASSWORD"] + "\n" == (home / ".actionlab-cluster" / "mlflow_admin_password").read_text()
    assert "RAY_AUTH_TOKEN" not in env, "the token stays in its file"
    if "--head" in args:
        assert "--dashboard-host=127.0.0.1" in args
    assert not any("0.0.0.0" in arg for arg in args)
    header = (ROOT / "cluster.yaml").read_text()
    assert "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$HOME/.actionlab-cluster/ray_auth_token" in header


def test_postgres_requires_a_password():
    """initdb with scram-sha-256 for every connection and the password file; the server's clients read it."""
    (initdb,) = [c for c in CLUSTER["head_setup_commands"] if "/initdb" in c]
    argv = shlex.split(initdb.split("||", 1)[1])
    assert "--auth=scram-sha-256" in argv
    assert '--pwfile=$HOME/.actionlab-cluster/postgres_password' in initdb.replace('"', "")
    assert not any(a.startswith(("--auth-local", "--auth-host")) for a in argv)
    assert "trust" not in initdb
    for command in CLUSTER["head_start_ray_commands"]:
        if "createdb" in command or "actionlab server" in command:
            assert 'PGPASSWORD="$(cat ~/.actionlab-cluster/postgres_password)"' in command


HBA_INITDB_COMMENT = '# METHOD can be "trust", "reject", "md5", "password", "scram-sha-256",\n'


@needs_bash
@pytest.mark.parametrize("hba, refused", [
    (HBA_INITDB_COMMENT + "local   all   all   scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n", False),
    (HBA_INITDB_COMMENT + "local   all   all   trust\nhost all all 127.0.0.1/32 scram-sha-256\n", True),
    ("host    all   all   127.0.0.1/32   trust\n", True),
    ("host all all ::1/128 trust   # loopback\n", True),
], ids=["scram", "local-trust", "host-trust", "trust-before-a-comment"])
def test_a_data_folder_on_trust_is_refused(hba, refused, tmp_path):
    """A data folder made by an earlier cluster.yaml (initdb --auth=trust) stops `ray up` with a message."""
    (check,) = [c for c in CLUSTER["head_setup_commands"] if "pg_hba.conf" in c]
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "pg_hba.conf").write_text(hba)
    run = bash(check.replace("/mnt/shared", str(tmp_path)), tmp_path)
    assert run.returncode == (1 if refused else 0), run.stderr
    assert ("without a password (trust)" in run.stderr) == refused


def read_auth_config(path: Path):
    """MLflow's own basic-auth settings parser (mlflow/server/auth/config.py), loaded alone: the package's
    __init__ is the auth app, whose Flask-WTF the nodes install (the lock's mlflow[auth]) but tests need not."""
    (mlflow_dir,) = importlib.util.find_spec("mlflow").submodule_search_locations
    spec = importlib.util.spec_from_file_location("mlflow_auth_config", Path(mlflow_dir) / "server" / "auth" / "config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_auth_config()


@needs_bash
def test_mlflow_requires_a_login(home, monkeypatch):
    """The head writes MLflow's basic-auth settings (no password in them) and runs `actionlab server` on
    every interface with the basic-auth app, the settings, the admin's password and the form key read
    from their files."""
    from orchestrator.cli import build_parser

    (write,) = [c for c in CLUSTER["head_setup_commands"] if "[mlflow]" in c]
    assert bash(write, home).returncode == 0
    ini = home / "mlflow_basic_auth.ini"
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    config = read_auth_config(ini)
    assert config.admin_username == "admin" and config.admin_password is None
    assert config.database_uri == "postgresql+psycopg://actionlab@127.0.0.1:5432/actionlab"
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"

    (start,) = [c for c in CLUSTER["head_start_ray_commands"] if "actionlab server" in c]
    server = re.search(r"exec (actionlab server [^']*)'", start)[1]
    args = build_parser().parse_args(shlex.split(server)[1:])
    assert args.host == "0.0.0.0"
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    assert extra == ["--app-name", "basic-auth"]
    exports = start.split("setsid", 1)[0]
    assert "MLFLOW_AUTH_CONFIG_PATH=$HOME/mlflow_basic_auth.ini" in exports
    assert 'MLFLOW_AUTH_ADMIN_PASSWORD="$(cat ~/.actionlab-cluster/mlflow_admin_password)"' in exports
    assert 'MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat ~/.actionlab-cluster/mlflow_flask_secret_key)"' in exports


def test_nodes_install_from_the_lock():
    """Dependencies from the lock with every hash checked and nothing resolved; actionlab itself without
    dependencies or a downloaded build environment; no other pip install."""
    pips = [part.strip() for command in CLUSTER["setup_commands"] for part in command.split("&&") if "pip install" in part]
    assert pips == ["pip install --no-cache-dir --no-deps --require-hashes -r /home/ubuntu/actionlab/k8s/requirements.lock",
                    "pip install --no-cache-dir --no-deps --no-build-isolation -e /home/ubuntu/actionlab"]
    assert CLUSTER["file_mounts"]["/home/ubuntu/actionlab"] == "."
    assert (ROOT / "k8s" / "requirements.lock").is_file()


# -- elastic training on spot GPU nodes -------------------------------------------------------------

def documented_scaling(text: str) -> dict:
    """The experiment section a file's comments size its GPU nodes for: the one `#   scaling: {...}` line."""
    (line,) = re.findall(r"^\s*#\s+(scaling: \{[^}]*\})\s*$", text, re.MULTILINE)
    return yaml.safe_load(line)["scaling"]


def test_gpu_nodes_fit_an_elastic_run():
    """gpu_worker's min_workers is the documented run's num_workers min and its max_workers room for its max;
    the autoscaler may launch every type's max at once, grows the group, and keeps a node that returned
    past the run's next resize check."""
    from orchestrator.config import ScalingConfig

    scaling = documented_scaling((ROOT / "cluster.yaml").read_text())
    low, high = ScalingConfig.model_validate(scaling).num_workers  # a section the experiment file takes
    types = CLUSTER["available_node_types"]
    gpu = types["gpu_worker"]
    assert 0 < low < high
    assert gpu["min_workers"] == low and gpu["max_workers"] >= high
    assert sum(t.get("max_workers", 0) for t in types.values()) <= CLUSTER["max_workers"]
    assert CLUSTER["upscaling_speed"] >= 1.0
    assert CLUSTER["idle_timeout_minutes"] * 60 > scaling["resize_interval_s"]
    assert scaling["checkpoint_every_steps"] > 0, "a lost node costs at most that many steps"
    gpu_block = (ROOT / "cluster.yaml").read_text().split("\n  gpu_worker:\n", 1)[1].split("\n  cpu_decoder:\n", 1)[0]
    assert "# InstanceMarketOptions: {MarketType: spot}" in gpu_block, "show how the GPU nodes become spot instances"


# EC2's instance metadata (IMDSv2): a PUT for a token, then GETs with it; the interruption notice on the
# second poll (a 404, curl -f's exit 22, before it)
FAKE_CURL = """#!/bin/bash
echo "$*" >> "$CALLS/curl"
case "$*" in
  "-sf -X PUT -H X-aws-ec2-metadata-token-ttl-seconds: 60 http://169.254.169.254/latest/api/token") echo TOKEN ;;
  "-sf -H X-aws-ec2-metadata-token: TOKEN http://169.254.169.254/latest/meta-data/spot/instance-action")
    test "$(grep -c instance-action "$CALLS/curl")" -ge 2 || exit 22
    echo '{"action": "terminate", "time": "2026-01-01T00:02:00Z"}' ;;
  *) exit 22 ;;
esac
"""
NODE_ID = "ab" * 28  # a Ray NodeID in hex
FAKE_WATCH_TOOLS = {
    "curl": FAKE_CURL,
    "sleep": "#!/bin/bash\n",  # the 5 s between polls
    "python": f"#!/bin/bash\necho {NODE_ID}\n",  # the node's Ray id, which ray.init would give
    "ray": '#!/bin/bash\nprintf "%s\\n" "$@" > "$CALLS/ray.$$.tmp"; env > "$CALLS/env.$$"; mv "$CALLS/ray.$$.tmp" "$CALLS/ray.$$"\n',
}


def spot_watcher(tmp_path: Path) -> tuple[str, Path, Path]:
    """The watcher's start command with its pid file under tmp_path, the fake tools' folder and the calls' folder."""
    (command,) = [c for c in CLUSTER["worker_start_ray_commands"] if "spot/instance-action" in c]
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    for folder in (bin_dir, calls):
        folder.mkdir()
    for name, text in FAKE_WATCH_TOOLS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return command.replace("/tmp/actionlab-spot-watch", str(tmp_path / "spot-watch")), bin_dir, calls


@needs_bash
def test_spot_notice_drains_the_node(home, tmp_path):
    """On a spot node the watcher polls EC2's metadata until the interruption notice, then drains this node's
    Ray node with reason PREEMPTION, a deadline inside the 2 minutes' notice and the Ray token: the
    arguments are those the installed Ray's `ray drain-node` takes."""
    with warnings.catch_warnings():  # Ray's CLI module imports Ray Serve's pydantic models, which warn
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray.scripts.scripts import drain_node

    command, bin_dir, calls = spot_watcher(tmp_path)
    run = bash(command, home, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CALLS=str(calls))
    assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 30
    while not list(calls.glob("ray.*[0-9]")) and time.monotonic() < deadline:
        time.sleep(0.2)
    (record,) = calls.glob("ray.*[0-9]")
    args = record.read_text().splitlines()
    assert args[0] == "drain-node"
    options = drain_node.make_context("drain-node", args[1:]).params  # refuses an option it does not take
    assert options["node_id"] == NODE_ID and options["address"] == "auto"
    assert options["reason"] == "DRAIN_NODE_REASON_PREEMPTION"
    assert 60 <= options["deadline_remaining_seconds"] < 120, "checkpoint time, inside EC2's 2 minutes"
    env = dict(line.split("=", 1) for line in (calls / f"env.{record.suffix[1:]}").read_text().splitlines() if "=" in line)
    assert env["RAY_AUTH_MODE"] == "token"
    assert Path(env["RAY_AUTH_TOKEN_PATH"]) == home / ".actionlab-cluster" / "ray_auth_token"
    polls = (calls / "curl").read_text().splitlines()
    assert sum("spot/instance-action" in line for line in polls) == 2, "polled until the notice came"
    assert '"action": "terminate"' in (tmp_path / "spot-watch.log").read_text(), "the notice, in its log"


@needs_bash
def test_spot_watcher_runs_once_per_node(home, tmp_path):
    """A re-run of the start commands (`ray up` again) starts no second watcher while one runs."""
    command, bin_dir, calls = spot_watcher(tmp_path)
    (tmp_path / "spot-watch.pid").write_text(f"{os.getpid()}\n")  # a running process
    run = bash(command, home, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CALLS=str(calls))
    assert run.returncode == 0, run.stderr
    time.sleep(1)
    assert not (calls / "curl").exists(), "a second watcher polls"
