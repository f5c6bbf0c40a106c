"""What a person sees while runs train: one row per run on screen, Ray's and Tune's output in a log.

    with console(storage_path, "ablate", verbose=False) as rows:    # prints "log: <file>"
        ... everything written to this process's stdout/stderr (Tune's status table, the workers'
        output that Ray forwards to the driver, Train's per-epoch reports) goes to
        <storage_path>/logs/ablate-<time>.log (`Capture`); `verbose` leaves it on screen instead;
        `with rows.uncaptured():` shows our own steps' output (data preparation) meanwhile
        rows.start / report / end, fed by `tune_callback` (sweeps, studies: one row per trial)
        or `train_rows` (one run):

            run         status     epoch train loss val top-1  elapsed      ETA
            rgb/seed0   running     3/30     1.2345     50.0%     0:41     5:02

        redrawn in place on a terminal; one plain line per change when piped or verbose
        rows.failed(name, error) -> FAILED rgb/seed0: <reason> (log: <file>), above the rows

Tune pickles a Tuner's callbacks with its state and restores those on `--resume`, so the Tune
callback holds no screen: it reports to the one `console` opened (`current()`).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

HEADER = ("run", "status", "epoch", "train loss", "val top-1", "elapsed", "ETA")
WIDTHS = (8, 7, 10, 9, 8, 8)  # the columns after the name, right-aligned except status
MAX_REASON = 200  # characters of a failure's reason on screen; the log has all of it
REFRESH_S = 1.0  # a terminal's rows are redrawn this often, so elapsed and ETA move between epochs
ENDED = ("done", "stopped", "FAILED")


@dataclass
class Row:
    """One run as the screen shows it; times are `time.monotonic()` seconds."""
    name: str
    epochs: int | None  # the run's optim.epochs; with optim.iterations, None until its first report says
    status: str = "pending"  # pending, running, then one of ENDED
    done: int = 0  # epochs finished
    train_loss: float | None = None
    val_top1: float | None = None  # the last evaluation's video top-1, a fraction
    started: float | None = None
    first_report: tuple[float, int] | None = None  # (time, done) of the first epoch seen in this attempt
    last_report: float | None = None
    ended: float | None = None

    def eta_s(self, now: float) -> float | None:
        """Seconds left at the pace of the epochs seen so far (after the first, which also paid for
        start-up, as soon as there are two); None before the first epoch or once ended."""
        if self.status != "running" or self.last_report is None or self.started is None or not self.epochs:
            return None
        # one epoch seen in this attempt: it took from the start (a resumed run starts mid-way)
        t0, done0 = self.first_report if self.done > self.first_report[1] else (self.started, self.done - 1)
        per_epoch = (self.last_report - t0) / max(1, self.done - done0)
        return max(0.0, self.last_report + per_epoch * (self.epochs - self.done) - now)


def duration(seconds: float | None) -> str:
    """'m:ss' or 'h:mm:ss'; '-' for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def format_row(row: Row, now: float, name_width: int) -> str:
    """One line of the table (see the module docstring)."""
    end = row.ended if row.ended is not None else now
    cells = (f"{row.done}/{row.epochs or '?'}" if row.status != "pending" else "-",
             f"{row.train_loss:.4f}" if row.train_loss is not None else "-",
             f"{100 * row.val_top1:.1f}%" if row.val_top1 is not None else "-",
             duration(end - row.started if row.started is not None else None), duration(row.eta_s(now)))
    return f"{row.name:<{name_width}}  {row.status:<{WIDTHS[0]}}" + "".join(
        f" {c:>{w}}" for c, w in zip(cells, WIDTHS[1:]))


def format_header(name_width: int) -> str:
    return f"{HEADER[0]:<{name_width}}  {HEADER[1]:<{WIDTHS[0]}}" + "".join(
        f" {h:>{w}}" for h, w in zip(HEADER[2:], WIDTHS[1:]))


def short_reason(error_text: str) -> str:
    """The line of an error's text (or a traceback) that says what went wrong: the last
    'SomethingError: ...' line, else the first line."""
    lines = [line.strip() for line in str(error_text).strip().splitlines() if line.strip()]
    found = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b.*:", line)]
    return (found[-1] if found else lines[0] if lines else "unknown error")[:MAX_REASON]


def error_reason(error: BaseException | str | None) -> str:
    """What went wrong, in one line: the innermost error, unwrapped from Ray's wrappers (a task's
    RayTaskError.cause, Train's WorkerGroupError.worker_failures (the lowest rank's) and
    ControllerError.controller_failure), as 'TypeName: first line of its message'."""
    for _ in range(10):  # wrappers nest a few levels at most
        if not isinstance(error, BaseException):
            break
        failures = sorted((getattr(error, "worker_failures", None) or {}).items())
        inner = getattr(error, "cause", None) or getattr(error, "controller_failure", None) or (
            failures[0][1] if failures else None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    if not isinstance(error, BaseException):
        return short_reason(error or "unknown error")
    text = str(error).strip()
    if not text or text.startswith("ray::"):  # a wrapper that kept only the remote traceback's text
        return short_reason(text or type(error).__name__)
    return f"{type(error).__name__}: {text.splitlines()[0]}"[:MAX_REASON]


class Rows:
    """The table of runs, written to `out`: redrawn in place (`live`, a terminal) or as one plain
    line per change. Thread-safe: Tune's callbacks, a Train queue reader and the refresh thread
    all update it."""

    def __init__(self, out: TextIO, *, live: bool, capture: Capture | None = None,
                 clock: Callable[[], float] = time.monotonic, size: Callable[[], os.terminal_size] | None = None):
        self.out, self.live, self.capture, self.clock = out, live, capture, clock
        self.log = capture.log if capture else None
        self.size = size or (lambda: os.get_terminal_size(out.fileno()))
        self.rows: dict[str, Row] = {}
        self._lock = threading.RLock()
        self._drawn = 0  # lines of the live table now on screen
        self._header_printed = False

    # --- what the runs say -------------------------------------------------------------------
    def add(self, name: str, epochs: int) -> None:
        """A run the table should show (pending until it starts)."""
        with self._lock:
            if name not in self.rows:
                self.rows[name] = Row(name, epochs)
                self._changed(self.rows[name], announce=False)

    def start(self, name: str, epochs: int) -> None:
        with self._lock:
            self.add(name, epochs)
            row = self.rows[name]
            row.status, row.started, row.ended, row.first_report = "running", self.clock(), None, None
            self._changed(row)

    def report(self, name: str, epochs: int, *, epoch: int, train_loss: float | None = None,
               val_top1: float | None = None) -> None:
        """An epoch's report: `epoch` is 0-based, as the training loop counts."""
        with self._lock:
            if name not in self.rows or self.rows[name].status != "running":
                self.start(name, epochs)
            row, now = self.rows[name], self.clock()
            row.epochs = epochs or row.epochs
            if epoch + 1 == row.done:  # the same epoch again (the trial's final report)
                return
            row.done, row.last_report = epoch + 1, now
            row.first_report = row.first_report or (now, row.done)
            row.train_loss = train_loss if train_loss is not None else row.train_loss
            row.val_top1 = val_top1 if val_top1 is not None else row.val_top1
            self._changed(row)

    def end(self, name: str, status: str, epochs: int = 0) -> None:
        """`status`: done, or stopped (by a scheduler)."""
        with self._lock:
            self.add(name, epochs)
            row = self.rows[name]
            if row.status not in ENDED:
                row.status, row.ended = status, self.clock()
                self._changed(row)

    def failed(self, name: str, error: BaseException | str, epochs: int = 0) -> None:
        """FAILED <name>: <reason> (log: <file>), printed above the table, and the row marked FAILED."""
        with self._lock:
            self.add(name, epochs)
            row = self.rows[name]
            row.status, row.ended = "FAILED", self.clock()
            where = f" (log: {self.log})" if self.log else ""
            self.note(f"FAILED {name}: {error_reason(error)}{where}")
            self._changed(row, announce=False)  # the FAILED line says it

    def note(self, text: str) -> None:
        """A line that stays: printed above the live table, or as is."""
        with self._lock:
            if self.live:
                self._erase()
            self.out.write(text + "\n")
            if self.live:
                self._redraw()
            self.out.flush()

    def uncaptured(self):
        """A context in which stdout and stderr reach the screen (nothing while not captured)."""
        return self.capture.paused() if self.capture else contextlib.nullcontext()

    # --- drawing -----------------------------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:
            if self.live:
                self._redraw()

    def _changed(self, row: Row, announce: bool = True) -> None:
        if self.live:
            self._redraw()
        elif announce:  # a pipe gets the header once, then a line per change
            width = self._name_width()
            if not self._header_printed:
                self.out.write(format_header(width) + "\n")
                self._header_printed = True
            self.out.write(format_row(row, self.clock(), width) + "\n")
            self.out.flush()

    def _name_width(self) -> int:
        return max([len(HEADER[0]), *map(len, self.rows)])

    def _lines(self) -> list[str]:
        """The live table, cut to the terminal: a table taller than it could not be redrawn in
        place (the cursor cannot move above the top), a line wider would wrap."""
        size = self.size()
        height, columns = size.lines or 24, size.columns or 80  # a pseudo-terminal may say 0 x 0
        now, width = self.clock(), self._name_width()
        rows = list(self.rows.values())
        if len(rows) > max(1, height - 3):  # running and failed rows first, the rest counted
            shown = [r for r in rows if r.status in ("running", "FAILED")][:max(1, height - 4)]
            counts = {s: sum(r.status == s for r in rows if r not in shown) for s in ("pending", *ENDED)}
            rest = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            lines = [format_row(r, now, width) for r in shown] + [f"... and {len(rows) - len(shown)} more: {rest}"]
        else:
            lines = [format_row(r, now, width) for r in rows]
        return [line[:columns - 1] for line in [format_header(width), *lines]]

    def _erase(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # to the table's first line, clear to the end
            self._drawn = 0

    def _redraw(self) -> None:
        if not self.rows:
            return
        lines = self._lines()
        self.out.write((f"\x1b[{self._drawn}F" if self._drawn else "")
                       + "".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J")
        self.out.flush()
        self._drawn = len(lines)


class Capture:
    """File descriptors 1 and 2 (this process's stdout and stderr, and so everything written to
    them: prints, logging, Ray's and Tune's output, the workers' output Ray forwards) sent to `log`;
    `sys.stdout` / `sys.stderr` too, for when they are not those descriptors (pytest's capture)."""

    def __init__(self, log: Path):
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(log, "a", buffering=1)
        self._saved = [os.dup(1), os.dup(2)]  # where they pointed: the screen, a pipe
        self._streams = (sys.stdout, sys.stderr)
        self._color = os.environ.get("RAY_COLOR_PREFIX")
        os.environ["RAY_COLOR_PREFIX"] = "0"  # the driver prints the workers' lines without colour codes
        self._to_log(True)

    def _to_log(self, on: bool) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(self._file.fileno() if on else saved, fd)
        sys.stdout, sys.stderr = (self._file, self._file) if on else self._streams

    @contextmanager
    def paused(self):
        """Our own steps' output (data preparation's progress bars) on screen meanwhile."""
        self._to_log(False)
        try:
            yield
        finally:
            self._to_log(True)

    def close(self) -> None:
        """Give stdout and stderr back for good."""
        if self._saved:
            self._to_log(False)
            for saved in self._saved:
                os.close(saved)
            self._saved = []
            self._file.close()
            if self._color is None:
                os.environ.pop("RAY_COLOR_PREFIX", None)
            else:
                os.environ["RAY_COLOR_PREFIX"] = self._color


_current: Rows | None = None


def current() -> Rows | None:
    """The table the running command shows (None outside `console`)."""
    return _current


@contextmanager
def console(storage_path: str | Path, command: str, *, verbose: bool = False) -> Iterator[Rows]:
    """Show runs as rows on this process's stdout and send all other output to a log file.

    Everything written to stdout and stderr meanwhile goes to <storage_path>/logs/<command>-<time>.log
    (see `Capture`), whose path is printed first; `rows.uncaptured()` shows it for a while. With
    `verbose` it all stays on screen, there is no log and the rows are plain lines among it. On
    an error stdout and stderr are restored before it propagates, so it reaches the terminal,
    followed by the log's path.
    """
    global _current
    sys.stdout.flush()
    terminal = os.fdopen(os.dup(1), "w", buffering=1)  # the screen, whatever fd 1 becomes
    capture = None
    if not verbose:
        log = Path(storage_path) / "logs" / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        terminal.write(f"log: {log} (Ray's and Tune's output; -v shows it here instead)\n")
        capture = Capture(log)
    live = not verbose and terminal.isatty() and os.environ.get("TERM") != "dumb"
    rows = _current = Rows(terminal, live=live, capture=capture)
    stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(rows, stop), daemon=True)
    if live:
        ticker.start()
    error = None
    try:
        yield rows
    except BaseException as err:
        error = err
        raise
    finally:
        stop.set()
        if live:
            ticker.join()
        rows.refresh()
        _current = None
        if capture:
            capture.close()
            if error is not None and not isinstance(error, KeyboardInterrupt):
                terminal.write(f"log: {capture.log}\n")
        terminal.close()


def _tick(rows: Rows, stop: threading.Event) -> None:
    while not stop.wait(REFRESH_S):
        rows.refresh()


def tune_callback(describe: Callable[[dict], tuple[str, int]]):
    """A `ray.tune.Callback` that turns trial events into rows of the running `console`.

    Args:
        describe: a trial's config -> (its name, e.g. 'rgb/seed0', its number of epochs);
            picklable (Tune saves the callback with the Tuner).
    Reads from each result: 'epoch' (0-based), 'train/loss', 'val/video_top1', 'outcome'.
    """
    from ray.tune import Callback

    class TrialRows(Callback):
        def __init__(self, describe):
            self.describe = describe

        def _rows(self, trial):
            from orchestrator import progress  # the live module: this class is pickled by value

            rows = progress.current()
            return (rows, *self.describe(trial.config)) if rows else (None, "", 0)

        def on_step_end(self, iteration, trials, **info):
            for trial in trials:  # new trials appear as pending rows
                rows, name, epochs = self._rows(trial)
                if rows and name not in rows.rows:
                    rows.add(name, epochs)

        def on_trial_start(self, iteration, trials, trial, **info):
            rows, name, epochs = self._rows(trial)
            if rows:
                rows.start(name, epochs)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            rows, name, epochs = self._rows(trial)
            if rows and "epoch" in result:  # the run's epochs as it resolved them (optim.iterations)
                rows.report(name, result.get("train/epochs", epochs), epoch=int(result["epoch"]),
                            train_loss=result.get("train/loss"), val_top1=result.get("val/video_top1"))

        def on_trial_complete(self, iteration, trials, trial, **info):
            rows, name, epochs = self._rows(trial)
            if rows:  # without its final report the scheduler stopped it (ASHA)
                finished = (trial.last_result or {}).get("outcome") == "finished"
                rows.end(name, "done" if finished else "stopped", epochs)

        def on_trial_error(self, iteration, trials, trial, **info):
            rows, name, epochs = self._rows(trial)
            if rows:
                from orchestrator import progress

                rows.failed(name, progress.trial_error(trial), epochs)

    return TrialRows(describe)


def trial_error(trial) -> BaseException | str:
    """A failed trial's error, from the files Tune has just written beside the trial (its
    `get_pickled_error()` reads them from the storage path, where they have not arrived yet)."""
    import ray.cloudpickle

    if trial.pickled_error_file and os.path.exists(trial.pickled_error_file):
        with open(trial.pickled_error_file, "rb") as f:
            return ray.cloudpickle.load(f)
    if trial.error_file and os.path.exists(trial.error_file):
        return Path(trial.error_file).read_text()
    return "unknown error (no error file)"


@contextmanager
def train_rows(rows: Rows, name: str, epochs: int):
    """One run's row, for `actionlab train` (no Tune): yields a `ray.train.UserCallback` for the
    run's RunConfig. It runs on the Train controller and puts each epoch's rank-0 report on a Ray
    queue that a thread here reads into the row. The row ends done, or FAILED with the error."""
    from ray.train import UserCallback
    from ray.util.queue import Empty, Queue

    queue = Queue(actor_options={"num_cpus": 0})  # the workers may hold every CPU

    class QueueReports(UserCallback):
        def __init__(self, queue):
            self.queue = queue

        def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
            if metrics:
                self.queue.put({k: metrics[0].get(k) for k in ("epoch", "train/epochs", "train/loss", "val/video_top1")})

    def read(stop: threading.Event) -> None:
        while not (stop.is_set() and queue.empty()):
            try:
                m = queue.get(timeout=0.5)
            except Empty:
                continue
            rows.report(name, m["train/epochs"] or epochs, epoch=int(m["epoch"]), train_loss=m["train/loss"],
                        val_top1=m["val/video_top1"])

    rows.start(name, epochs)
    stop = threading.Event()
    reader = threading.Thread(target=read, args=(stop,), daemon=True)
    reader.start()
    try:
        yield QueueReports(queue)
    except BaseException as err:
        stop.set()
        reader.join(timeout=10)
        if not isinstance(err, KeyboardInterrupt):
            rows.failed(name, err, epochs)
        raise
    else:
        stop.set()
        reader.join(timeout=10)
        rows.end(name, "done", epochs)
    finally:
        queue.shutdown()
