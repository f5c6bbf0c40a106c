"""Reading a video's RGB frames (with `data.decoder`'s back-end, orchestrator/data/decoders.py) in a
child process that a time limit can kill.

decord can loop forever in its C++ code: when a container lists more frames than decode (an mp4
whose edit list hides more than 128 of the samples its `moov` lists, dmlc/decord#373),
`get_batch` spins at 100 % CPU waiting for a frame that never comes. A Python signal handler or
thread cannot stop native code; killing the process can. So with a time limit, each process that
reads items (a DataLoader worker, or the main process with 0 workers) hands decoding to one
long-lived child and waits at most `timeout_s` per video:

    parent (VideoDataset._read)                        child (`serve`)
    DecodeGuard.open(path) --- ("open", path) ------>  decoders.open_video(path, decoder)
                           <-- ("ok", (num_frames, fps, size or None))
    sampler(num_frames, rng)     (all randomness stays in the parent: items are the same either way)
    GuardedVideo.read(indices (V, T), sequential)
                           --- ("read", ...) ------->  video.read -> uint8 (V, T, H, W, 3)
                           <-- ("ok", shape) --------  frames written into a shared buffer
    copy the frames out of the buffer

`GuardedVideo.read_every_frame()` asks instead for every frame that decodes, decoded in order with
PyAV (`decoders.decode_every_frame`): `actionlab flow` compares their number with `len()` and refuses a
video on which they differ, since decord hands back copies of neighbouring frames for frames that
do not decode (150 of the 200 in the file tests/test_decode_guard.py builds).

Past the limit the parent SIGKILLs the child and raises DecodeTimeout (a TimeoutError, so an
OSError); if the child dies mid-video (a crash in decord) it raises DecodeCrash (a RuntimeError).
VideoDataset logs either and skips that video like any unreadable one; the next video starts a
fresh child. torchcodec and PyAV run under the same limit: they too are native code a signal cannot stop.

Messages are small pickles over a socket pair; frames travel through a memfd both processes map
(a 1.8 MB clip took 8 ms pickled through the socket here, 0.1 ms written and copied out). The
child is a fresh interpreter (`subprocess`, not `fork`: forking a process that holds Ray's, CUDA's
or OpenMP's threads is unsafe) that imports only numpy and its back-end before its first video (decord
~0.2 s and ~35 MB; torchcodec imports torch: ~1.5 s, ~0.3 GB); a guard of another back-end restarts it; it dies with
the thread that started it (PR_SET_PDEATHSIG on Linux) or when its socket closes, and
`close_decode_process()` or interpreter exit kills and reaps it.
"""
from __future__ import annotations

import importlib
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from orchestrator.data.decoders import DECODERS, decode_every_frame, decoder_module, open_video

# the folder holding the `orchestrator` package, so that the child imports this very module
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# `python -c` puts the folder it runs in first on sys.path (as ''): a decord.py or numpy.py there would
# run in the child. The first statement replaces that entry by the package's folder, before any import
# (-P does that from Python 3.11 only; -I also drops PYTHONPATH and user site-packages, where decord may be).
_CHILD_MAIN = ("import sys; sys.path[:] = [sys.argv[4], *(p for p in sys.path if p not in ('', '.'))]; "
               "from orchestrator.data.decode_guard import serve; "
               "serve(int(sys.argv[1]), int(sys.argv[2]), parent_pid=int(sys.argv[3]), decoder=sys.argv[5])")
START_TIMEOUT_S = 60.0  # a fresh child takes ~0.2 s to import decord (~1.5 s torchcodec); a limit only for a broken setup


class DecodeTimeout(TimeoutError):
    """A video's decoding overran the time limit; the child decoding it was killed."""


class DecodeCrash(RuntimeError):
    """The child died while decoding a video (a crash in decord or FFmpeg, or killed from outside)."""


class DecodeProcessError(Exception):
    """The child could not start: a broken setup, not a bad video (never caught as one)."""


class GuardedVideo:
    """A video opened in this process's decode child: `len()`, `fps`, `read(indices (V, T), sequential=)`
    as decoders' videos, and `read_every_frame()`. Its time limit runs from `DecodeGuard.open` to the end
    of `read`."""

    def __init__(self, guard: DecodeGuard, num_frames: int, fps: float, size: tuple[int, int] | None,
                 deadline: float):
        self._guard, self._num_frames, self.fps, self._deadline = guard, num_frames, fps, deadline
        self.size = size  # (H, W) of a decoded frame where the back-end states it without decoding (torchcodec)

    def __len__(self) -> int:
        return self._num_frames

    def read(self, indices: np.ndarray, *, sequential: bool = False) -> np.ndarray:
        shape, dtype = self._guard._request(("read", np.asarray(indices), sequential), self._deadline)
        return _child.buffer.array(shape, dtype).copy()  # the next video overwrites the buffer

    def read_every_frame(self) -> np.ndarray:
        """`decoders.decode_every_frame` in the child, within the same time limit: uint8 (T', H, W, 3); T'
        differs from `len()` when frames do not decode."""
        shape, dtype = self._guard._request(("every",), self._deadline)
        return _child.buffer.array(shape, dtype).copy()


class DecodeGuard:
    """Decodes videos with `decoder` in this process's decode child, at most `timeout_s` seconds each
    (see the module docstring). Holds only those two: it pickles into DataLoader workers and Ray tasks.

    One child serves every guard of a process (the train and test sets, the Ray Data tasks a Ray
    worker runs one after another). It starts at the first `open` in a process (a DataLoader worker
    forked from a process that had one starts its own) and again after each kill. One thread per
    process reads through it (a DataLoader worker's, or the training loop's with 0 workers).
    """

    def __init__(self, timeout_s: float, decoder: str = "decord"):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.timeout_s, self.decoder = float(timeout_s), decoder

    def open(self, path: str | Path) -> GuardedVideo:
        """Open `path` in the child; raises what the back-end raises, or DecodeTimeout / DecodeCrash."""
        _ensure_child(self.decoder)
        deadline = time.monotonic() + self.timeout_s  # after any start-up: a fresh child is not the video's fault
        num_frames, fps, size = self._request(("open", str(path)), deadline)
        return GuardedVideo(self, num_frames, fps, size, deadline)

    def _request(self, message: tuple, deadline: float):
        conn = _child.conn
        try:
            conn.send(message)
            ready = conn.poll(max(0.0, deadline - time.monotonic()))
            if ready:
                status, value = conn.recv()
        except (EOFError, OSError):
            raise DecodeCrash(f"the decode process died (exit status {close_decode_process()})") from None
        if not ready:
            close_decode_process()
            raise DecodeTimeout(f"decode took longer than {self.timeout_s:g} s (killed; data.decode_timeout_s)")
        if status == "error":
            raise value
        return value


_child: _Child | None = None  # this process's decode child (see _own_child)


def decode_process_pid() -> int | None:
    """This process's decode child's process id; None before its first video and after a kill."""
    child = _own_child()
    return None if child is None else child.proc.pid


def close_decode_process() -> int | None:
    """Kill and reap this process's decode child, if any; returns its exit status. The next video
    starts another."""
    global _child
    child, _child = _own_child(), None
    return None if child is None else child.stop()


def _own_child() -> _Child | None:
    global _child
    if _child is not None and _child.owner_pid != os.getpid():
        _child = None  # inherited through fork: the parent process's child, not ours to use or kill
    return _child


def _ensure_child(decoder: str) -> None:
    global _child
    child = _own_child()
    # died between videos (e.g. the OOM killer), or serves another back-end
    if child is not None and (child.proc.poll() is not None or child.decoder != decoder):
        close_decode_process()
    if _child is None:
        _child = _Child.start(decoder)


class _SharedBuffer:
    """A file both processes map; the child grows it to fit the largest clip so far."""

    def __init__(self, fd: int):
        self.fd, self._map = fd, None

    def array(self, shape: tuple, dtype: str, *, grow: bool = False) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if grow and os.fstat(self.fd).st_size < nbytes:
            os.ftruncate(self.fd, max(nbytes, 2 * os.fstat(self.fd).st_size))
        if self._map is None or len(self._map) < nbytes:
            self._map = mmap.mmap(self.fd, os.fstat(self.fd).st_size)
        return np.ndarray(shape, dtype, buffer=self._map)

    @staticmethod
    def create() -> int:
        if hasattr(os, "memfd_create"):  # Linux: anonymous memory, freed with the last descriptor
            return os.memfd_create("actionlab-decode")
        fd, name = tempfile.mkstemp(prefix="actionlab-decode-")
        os.unlink(name)
        return fd


class _Child:
    """One running child: its process, socket and shared buffer, and the process that owns them."""

    def __init__(self, proc: subprocess.Popen, conn: Connection, buffer: _SharedBuffer, decoder: str):
        self.proc, self.conn, self.buffer, self.owner_pid = proc, conn, buffer, os.getpid()
        self.decoder = decoder
        # interpreter exit (or dropping the object) kills it too; a forked copy of this object never does
        self._finalizer = weakref.finalize(self, _kill, proc, conn, buffer.fd, self.owner_pid)

    @classmethod
    def start(cls, decoder: str) -> _Child:
        ours, theirs = socket.socketpair()
        buffer_fd = _SharedBuffer.create()
        fds = (theirs.fileno(), buffer_fd)
        proc = subprocess.Popen([sys.executable, "-c", _CHILD_MAIN, *map(str, fds), str(os.getpid()), _PACKAGE_ROOT,
                                 decoder], pass_fds=fds, stdin=subprocess.DEVNULL)
        theirs.close()
        child = cls(proc, Connection(ours.detach()), _SharedBuffer(buffer_fd), decoder)
        try:
            if not child.conn.poll(START_TIMEOUT_S):
                raise DecodeProcessError(f"the decode process did not start within {START_TIMEOUT_S:g} s")
            child.conn.recv()  # ("ready", pid)
        except (EOFError, OSError):
            raise DecodeProcessError(f"the decode process exited at start (status {child.stop()}); its error is "
                                     "on stderr above") from None
        except DecodeProcessError:
            child.stop()
            raise
        return child

    def stop(self) -> int:
        """SIGKILL and reap; returns the exit status."""
        self._finalizer()
        return self.proc.returncode


def _kill(proc: subprocess.Popen, conn: Connection, buffer_fd: int, owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return
    proc.kill()
    proc.wait()
    conn.close()
    os.close(buffer_fd)


def serve(sock_fd: int, buffer_fd: int, *, parent_pid: int, decoder: str = "decord") -> None:
    """The child's loop, decoding with `decoder`: answer ("open", path) with (frame count, fps, frame size
    where the back-end states it), and ("read", indices, sequential)
    or ("every",) with the frames' (shape, dtype), written into the shared buffer; ("error", exception) on
    failure. Returns when the parent closes the socket."""
    if sys.platform.startswith("linux"):  # SIGKILL this process when the thread that started it ends
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    importlib.import_module(decoder_module(decoder))  # before "ready": a video's time limit never pays for it

    conn, buffer, video = Connection(sock_fd), _SharedBuffer(buffer_fd), None
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        try:
            if request[0] == "open":
                video = None  # release the last video before opening the next
                video = open_video(request[1], decoder)
                reply = ("ok", (len(video), video.fps, getattr(video, "size", None)))
            else:
                frames = video.read(request[1], sequential=request[2]) if request[0] == "read" else \
                    decode_every_frame(video.path)
                video = None
                buffer.array(frames.shape, frames.dtype.str, grow=True)[...] = frames
                reply = ("ok", (frames.shape, frames.dtype.str))
        except Exception as err:  # sent back to be raised in the parent: one video's problem
            video = None
            reply = ("error", _picklable(err))
        conn.send(reply)


def _picklable(err: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
