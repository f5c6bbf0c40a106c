"""Per-video jobs of the data commands (`actionlab flow`, `actionlab data prepare`): one Ray task
per video across the cluster's CPUs (and GPUs), or the same function in a loop in this process;
and the atomic writes their outputs (manifests, split files, caches) go through.

Every output is first written to a temporary sibling (`temporary_sibling`: a dot name holding
this host's tag and the writing process's id) and renamed into place. A killed run leaves its
temporaries behind; `remove_stale_temporaries` removes those whose writer, on this host, is gone,
so a rerun cleans up after the run it resumes and never touches a live process's file (one on
another host is left: its process ids mean nothing here).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # short and file-name safe, unlike a host name
# .<name>.<host tag>-<pid>-<random>.tmp[<suffix>]; before host tags: .<name>.<pid>-<random>.tmp[<suffix>]
_TEMPORARY = re.compile(r"\..+\.(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)-[0-9a-f]{8}\.tmp(?:\.[A-Za-z0-9]+)?")


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh temporary name beside `path` for this process (`suffix`, e.g. '.mp4', picks a muxer)."""
    return path.with_name(f".{path.name}.{HOST_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: checks without signalling
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folders: Iterable[Path]) -> list[Path]:
    """Remove the temporaries (`temporary_sibling`) in `folders` (not below them: a temporary lies
    beside what it becomes, and a copy's frame folders hold thousands of files) that a process of
    this host wrote and that no longer runs; symlinks are neither followed nor removed.

    Returns:
        what was removed.
    """
    removed = []
    for folder in sorted(set(folders)):
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = _TEMPORARY.fullmatch(entry.name)
            if (match is None or match["host"] not in (None, HOST_TAG) or entry.is_symlink()
                    or _process_alive(int(match["pid"]))):
                continue
            if entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def write_atomic(path: Path, data: bytes | Callable) -> None:
    """Write `data` (bytes, or `data(file)` writing to a binary file) to a temporary sibling, then
    rename it to `path` (atomic on POSIX): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_per_video(fn: Callable, jobs: list[tuple], *, shared: tuple = (), failed: Callable[[tuple, str], Any],
                  use_ray: bool, address: str | None = None, num_gpus: float = 0, task_fn: Callable | None = None,
                  bar) -> list:
    """`fn(*job, *shared)` for every job; returns the results as they finish.

    Args:
        fn: turns its own failures into a result (one bad video must not stop a run).
        shared: arguments every job gets (put in Ray's object store once).
        failed: `failed(job, reason)`, the result for a job whose Ray worker died (OOM, segfault).
        use_ray: one task (1 CPU, `num_gpus`) per job, connecting to `address` unless Ray is
            already initialised; False: a loop here.
        task_fn: what the Ray task runs instead of `fn` (e.g. `fn` after limiting library threads
            to the task's one CPU).
        bar: a tqdm bar, advanced once per finished job.
    """
    if not use_ray:
        results = []
        for job in jobs:
            results.append(fn(*job, *shared))
            bar.update(1)
        return results
    import ray

    if not ray.is_initialized():
        ray.init(address=address)
    task = ray.remote(num_cpus=1, num_gpus=num_gpus)(task_fn or fn)
    shared_refs = [ray.put(value) for value in shared]
    pending = {task.remote(*job, *shared_refs): job for job in jobs}
    results = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=min(8, len(pending)), timeout=1.0)
        for ref in done:
            job = pending.pop(ref)
            try:
                results.append(ray.get(ref))
            except Exception as err:  # noqa: BLE001 - a worker that died fails only its video
                results.append(failed(job, f"{type(err).__name__}: {err}"))
            bar.update(1)
    return results
