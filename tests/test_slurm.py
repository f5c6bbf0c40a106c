"""slurm/actionlab.sbatch, run here with a fake SLURM: `srun` runs its command on this machine and
`scontrol show hostnames` lists two nodes, so the script starts a Ray head and one Ray worker as two
`ray start` processes here, waits for both, runs `actionlab flow` against them (one Ray task per video
of a tiny synthetic data set) and stops Ray on exit, also when the command fails; as a requeued job, sweep
and ablate get --resume. About 50 s on 2 CPU cores (each run ~15 s: two `ray start`, 12 videos' flow,
draining). The header's statement of what an elastic run gets on SLURM is checked against its #SBATCH lines."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

import pytest

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "slurm" / "actionlab.sbatch"
TIMEOUT_S = 300

# srun: options are dropped (the script writes them all as --option=value), the command replaces it
SRUN = """#!/bin/bash
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
exec "$@"
"""
# scontrol show hostnames 'node[1-2]' -> node1, node2 (a prefix and one bracketed list of numbers and ranges)
SCONTROL = f"""#!{sys.executable}
import re, sys
assert sys.argv[1:3] == ["show", "hostnames"], sys.argv
prefix, ranges = re.fullmatch(r"([^\\[]*)\\[([-0-9,]+)\\]", sys.argv[3]).groups()
for part in ranges.split(","):
    first, _, last = part.partition("-")
    for number in range(int(first), int(last or first) + 1):
        print(f"{{prefix}}{{number:0{{len(first)}}d}}")
"""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def processes_using(path: str) -> list[str]:
    """This machine's processes whose command line names `path` (Ray's processes name their temp dir)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if path in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:200]}")
    return found


def fake_slurm(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


class SbatchRun(NamedTuple):
    returncode: int
    output: str  # the script's stdout and stderr, as SLURM's --output file would hold them
    leftovers: list[str]  # Ray processes still running after the script ended (killed by then)


def run_sbatch(tmp_path: Path, command: list[str], **slurm_env: str) -> SbatchRun:
    """`bash slurm/actionlab.sbatch COMMAND...` under the fake SLURM: nodes node1 and node2, 1 CPU each;
    `slurm_env` adds to the job's variables (SLURM_RESTART_COUNT)."""
    job_id = f"test{os.getpid()}"
    temp_dir = f"/tmp/ray_{job_id}"  # the script's, from SLURM_JOB_ID
    # Two Ray nodes on one machine: every port that has a fixed default is chosen free here
    port, dashboard, client, head_agent, worker_agent = free_ports(5)
    env = {
        **os.environ,
        "PATH": f"{fake_slurm(tmp_path)}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_CPUS_PER_TASK": "1",
        "ACTIONLAB_RAY_PORT": str(port), "ACTIONLAB_RAY_JOIN_TIMEOUT_S": "120",
        "ACTIONLAB_RAY_HEAD_ARGS": f"--dashboard-port={dashboard} --ray-client-server-port={client} "
                                   f"--dashboard-agent-listen-port={head_agent}",
        "ACTIONLAB_RAY_WORKER_ARGS": f"--dashboard-agent-listen-port={worker_agent}",
        **slurm_env,
    }
    proc = subprocess.Popen(["bash", str(SCRIPT), *command], env=env, cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # as scancel would: the script's trap stops Ray
        output, _ = proc.communicate(timeout=90)
        output += f"\n[test] slurm/actionlab.sbatch ran over {TIMEOUT_S} s"
    finally:
        leftovers = processes_using(temp_dir)
        for line in leftovers:  # reported by the tests; killed so that a failure leaves nothing behind
            with suppress(psutil.Error):
                psutil.Process(int(line.split(":")[0])).kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return SbatchRun(proc.returncode, output, leftovers)


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.ray
@needs_bash
def test_sbatch_starts_two_nodes_runs_the_command_and_stops_ray(tmp_path):
    from orchestrator.data.synth import SynthSpec, write_synthetic_ucf

    data = write_synthetic_ucf(tmp_path / "data", SynthSpec(groups=3, clips_per_group=1, num_frames=8),
                               progress=False)  # 4 classes x 3 groups = 12 videos
    run = run_sbatch(tmp_path, ["flow", "--dataset", "ucf101", "--root", str(data / "UCF101"),
                                "--annotations", str(data / "ucfTrainTestlist"), "--flow-dir", str(tmp_path / "flow")])
    assert run.returncode == 0, run.output
    assert "2/2 Ray nodes joined" in run.output, run.output
    assert "--address 127.0.0.1:" in run.output  # the head's address, from `srun hostname --ip-address`
    assert re.search(r"^12 computed, 0 cached, 0 failed", run.output, re.MULTILINE), run.output
    assert (tmp_path / "flow" / "manifest.json").is_file()
    assert "stopping Ray on 2 nodes" in run.output, run.output
    assert run.leftovers == [], "Ray processes left running:\n" + "\n".join(run.leftovers)


@pytest.mark.ray
@needs_bash
def test_sbatch_stops_ray_when_the_command_fails(tmp_path):
    run = run_sbatch(tmp_path, ["flow", "--dataset", "ucf101", "--root", str(tmp_path / "missing"),
                                "--annotations", str(tmp_path / "missing"), "--flow-dir", str(tmp_path / "flow")])
    assert run.returncode == 2, run.output  # actionlab's exit status for a user error, passed on
    assert "directory not found" in run.output, run.output
    assert "stopping Ray on 2 nodes" in run.output, run.output
    assert run.leftovers == [], "Ray processes left running:\n" + "\n".join(run.leftovers)


@pytest.mark.ray
@needs_bash
def test_requeued_sweep_resumes(tmp_path):
    """A requeued job (SLURM_RESTART_COUNT > 0) runs `ablate`/`sweep` with --resume, so its trials go on from
    their checkpoints; here the experiment is missing, so the command fails at once, and Ray stops."""
    run = run_sbatch(tmp_path, ["ablate", str(tmp_path / "missing.yaml")], SLURM_RESTART_COUNT="1")
    assert f"actionlab ablate {tmp_path / 'missing.yaml'} --resume --address 127.0.0.1:" in run.output, run.output
    assert run.returncode == 2 and "no such experiment file" in run.output, run.output
    assert "stopping Ray on 2 nodes" in run.output, run.output
    assert run.leftovers == [], "Ray processes left running:\n" + "\n".join(run.leftovers)


def test_header_states_what_an_elastic_run_gets():
    """SLURM allocations are fixed: the header says an elastic run trains at the allocation's size, that a
    requeue resumes it, and that it asks for no warning signal before the end (none is handled)."""
    text = SCRIPT.read_text()
    options = re.findall(r"^#SBATCH (\S+)", text, re.MULTILINE)
    assert {"--requeue", "--open-mode=append"} <= set(options)
    assert not any(o.startswith("--signal") for o in options), "the script handles no warning signal"
    header = " ".join(line.lstrip("# ") for line in text.split("#SBATCH", 1)[0].splitlines())
    for statement in ("scaling.num_workers: [min, max]", "never grows", "SLURM_RESTART_COUNT > 0",
                      "get --resume", "scaling.checkpoint_every_steps", "Not supported: a checkpoint on the way out"):
        assert statement in header, statement
