"""The screen during train / sweep / ablate: one row per run, in place on a terminal, plain lines in
a pipe, everything else in the log. No Ray cluster: Tune's callback is fed fake trials."""
import io
import os
import re
from types import SimpleNamespace

import pytest

from orchestrator import progress
from orchestrator.progress import Row, Rows, console, duration, error_reason, format_row, short_reason


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def screen_after(text: str) -> list[str]:
    """What a terminal shows after `text`: the escapes Rows uses (CPL, EL, ED), nothing else."""
    lines, y = [""], 0
    for token in re.split(r"(\x1b\[\d*[A-Za-z]|\n)", text):
        if token == "\n":
            y += 1
            lines += [""] * (y + 1 - len(lines))
        elif m := re.fullmatch(r"\x1b\[(\d*)([A-Za-z])", token):
            n, op = int(m[1] or 1), m[2]
            if op == "F":
                y = max(0, y - n)
            elif op == "K":
                lines[y] = ""
            elif op == "J":
                del lines[y + 1:]
                lines[y] = ""
        else:
            lines[y] += token
    return [line for line in lines if line]


def test_row_columns_say_epoch_loss_top1_elapsed_and_eta():
    row = Row("rgb/seed0", epochs=10, status="running", done=2, train_loss=1.23456, val_top1=0.5,
              started=0.0, first_report=(30.0, 1), last_report=40.0)
    # 10 s per epoch after the first (start-up included in it): 8 epochs left at t=45 -> 75 s
    assert format_row(row, 45.0, 10).split() == ["rgb/seed0", "running", "2/10", "1.2346", "50.0%", "0:45", "1:15"]
    pending = Row("flow/seed0", epochs=10)
    assert format_row(pending, 45.0, 10).split() == ["flow/seed0", "pending", "-", "-", "-", "-", "-"]
    assert [duration(s) for s in (None, 5, 65, 3725)] == ["-", "0:05", "1:05", "1:02:05"]


@pytest.mark.parametrize("text, reason", [
    ("boom", "boom"),
    ("ray::ImplicitFunc.train() (pid=1)\n  File 'x.py', line 3\n    f()\nValueError: bad crop 0\n", "ValueError: bad crop 0"),
    ("Training failed.\nTraceback:\nRuntimeError: first\nduring it\ntorch.OutOfMemoryError: CUDA out of memory",
     "torch.OutOfMemoryError: CUDA out of memory"),
])
def test_short_reason_is_the_last_error_line(text, reason):
    assert short_reason(text) == reason


def test_error_reason_unwraps_ray_and_train_wrappers():
    class WorkerGroupError(RuntimeError):  # the shape of ray.train.WorkerGroupError
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors:\n[Rank 0 Error Snippet]: ... truncated ...")
            self.worker_failures = failures

    class RayTaskError(RuntimeError):  # the shape of ray.exceptions.RayTaskError
        def __init__(self, cause):
            super().__init__("ray::ImplicitFunc.train() (pid=1)\n  File ...")
            self.cause = cause

    wrapped = RayTaskError(WorkerGroupError({1: OSError("rank 1"), 0: ValueError("bad crop 0\nmore detail")}))
    assert error_reason(wrapped) == "ValueError: bad crop 0"
    assert error_reason(RayTaskError(None)) == "ray::ImplicitFunc.train() (pid=1)"
    assert error_reason("Traceback:\nKeyError: 'x'") == "KeyError: 'x'"
    assert error_reason(None) == "unknown error"


def test_piped_output_is_one_plain_line_per_change():
    out, clock = io.StringIO(), Clock()
    rows = Rows(out, live=False, clock=clock)
    rows.add("rgb/seed0", 2)
    rows.add("flow/seed0", 2)  # pending rows print nothing in a pipe
    rows.start("rgb/seed0", 2)
    clock.now = 10
    rows.report("rgb/seed0", 2, epoch=0, train_loss=1.5, val_top1=None)
    rows.refresh()  # a terminal's clock tick: nothing in a pipe
    clock.now = 15
    rows.report("rgb/seed0", 2, epoch=1, train_loss=1.0, val_top1=0.25)
    rows.report("rgb/seed0", 2, epoch=1, train_loss=1.0, val_top1=0.25)  # the trial's final report: no change
    rows.end("rgb/seed0", "done")
    rows.failed("flow/seed0", "Traceback ...\nValueError: no flow for v_1")
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert [line.split() for line in lines] == [
        ["run", "status", "epoch", "train", "loss", "val", "top-1", "elapsed", "ETA"],
        ["rgb/seed0", "running", "0/2", "-", "-", "0:00", "-"],
        ["rgb/seed0", "running", "1/2", "1.5000", "-", "0:10", "0:10"],
        ["rgb/seed0", "running", "2/2", "1.0000", "25.0%", "0:15", "0:00"],
        ["rgb/seed0", "done", "2/2", "1.0000", "25.0%", "0:15", "-"],
        ["FAILED", "flow/seed0:", "ValueError:", "no", "flow", "for", "v_1"],
    ]


def test_terminal_rows_are_redrawn_in_place():
    out, clock = io.StringIO(), Clock()
    rows = Rows(out, live=True, clock=clock, size=lambda: os.terminal_size((60, 20)))
    for name in ("rgb/seed0", "flow/seed0"):
        rows.add(name, 3)
    rows.start("rgb/seed0", 3)
    for epoch in range(3):
        clock.now += 5
        rows.report("rgb/seed0", 3, epoch=epoch, train_loss=1.0 / (epoch + 1), val_top1=0.5)
        rows.refresh()
    rows.end("rgb/seed0", "done")
    rows.failed("flow/seed0", "RuntimeError: worker died")
    screen = screen_after(out.getvalue())
    assert [line.split()[:3] for line in screen] == [
        ["FAILED", "flow/seed0:", "RuntimeError:"],  # stays above the table
        ["run", "status", "epoch"], ["rgb/seed0", "done", "3/3"], ["flow/seed0", "FAILED", "0/3"]]
    assert all(len(line) < 60 for line in screen)


def test_a_table_taller_than_the_terminal_shows_the_running_rows_and_counts_the_rest():
    out = io.StringIO()
    rows = Rows(out, live=True, clock=Clock(), size=lambda: os.terminal_size((80, 6)))
    for i in range(10):
        rows.add(f"lr={i}", 4)
    for i in (3, 7):
        rows.start(f"lr={i}", 4)
    rows.end("lr=0", "done")
    screen = screen_after(out.getvalue())
    assert [line.split()[0] for line in screen] == ["run", "lr=3", "lr=7", "..."]
    assert screen[-1] == "... and 8 more: 7 pending, 1 done"


def test_console_sends_other_output_to_the_log_and_rows_to_the_screen(tmp_path, capfd):
    with console(tmp_path, "ablate") as rows:
        print("Reporting training result 1: {...}")  # what Ray Train prints per epoch
        os.write(2, b"(RayTrainWorker pid=1) Checkpoint successfully created\n")
        with rows.uncaptured():
            print("optical flow for 12 videos")  # our own step, on screen
        rows.start("rgb/seed0", 1)
        rows.report("rgb/seed0", 1, epoch=0, train_loss=0.5, val_top1=1.0)
    print("after")
    out, err = capfd.readouterr()
    log = next((tmp_path / "logs").glob("ablate-*.log"))
    assert out.splitlines()[0].startswith(f"log: {log} ")
    assert "optical flow for 12 videos" in out and "after" in out
    assert "Reporting" not in out + err and "Checkpoint" not in out + err
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("rgb/")] == [
        ["rgb/seed0", "running", "0/1"], ["rgb/seed0", "running", "1/1"]]
    assert log.read_text().splitlines() == ["Reporting training result 1: {...}",
                                            "(RayTrainWorker pid=1) Checkpoint successfully created"]
    assert progress.current() is None


def test_console_lets_an_error_reach_the_terminal_with_the_log(tmp_path, capfd):
    with pytest.raises(RuntimeError, match="2 study variant"):
        with console(tmp_path, "sweep"):
            print("noise")
            raise RuntimeError("2 study variant(s) did not finish")
    print("the traceback's way out")
    out, _ = capfd.readouterr()
    log = next((tmp_path / "logs").glob("sweep-*.log"))
    assert out.splitlines() == [f"log: {log} (Ray's and Tune's output; -v shows it here instead)", f"log: {log}",
                                "the traceback's way out"]


def test_verbose_console_keeps_everything_on_screen_and_writes_no_log(tmp_path, capfd):
    with console(tmp_path, "train", verbose=True) as rows:
        print("Reporting training result 1")
        rows.start("tiny", 1)
    out, _ = capfd.readouterr()
    assert "Reporting training result 1" in out and "tiny" in out
    assert not (tmp_path / "logs").exists()


def test_tune_callback_names_trials_by_label_and_survives_pickling(tmp_path, capfd):
    import ray.cloudpickle

    def describe(config):
        return config["label"], 2

    callback = ray.cloudpickle.loads(ray.cloudpickle.dumps(progress.tune_callback(describe)))  # as Tuner.restore
    ok = SimpleNamespace(config={"label": "rgb/seed0"}, last_result={"outcome": "finished"})
    error_txt = tmp_path / "error.txt"  # what Tune writes beside a failed trial (error.pkl when it can)
    error_txt.write_text("Failure # 1\nTraceback (most recent call last):\nValueError: bad flow\n")
    bad = SimpleNamespace(config={"label": "flow/seed0"}, last_result={}, pickled_error_file=None,
                          error_file=str(error_txt))
    callback.on_step_end(0, [ok, bad])  # nothing open: ignored
    with console(tmp_path, "ablate") as rows:
        callback.on_step_end(1, [ok, bad])
        callback.on_trial_start(1, [ok, bad], ok)
        for epoch in range(2):
            callback.on_trial_result(2, [ok, bad], ok, {"epoch": epoch, "train/loss": 0.5, "val/video_top1": 0.75})
        callback.on_trial_result(3, [ok, bad], ok, {"epoch": 1, "outcome": "finished", "test/video_top1": 0.8})
        callback.on_trial_complete(3, [ok, bad], ok)
        callback.on_trial_error(4, [ok, bad], bad)
    out = capfd.readouterr().out.splitlines()
    assert [line.split()[:4] for line in out[2:]] == [
        ["rgb/seed0", "running", "0/2", "-"], ["rgb/seed0", "running", "1/2", "0.5000"],
        ["rgb/seed0", "running", "2/2", "0.5000"], ["rgb/seed0", "done", "2/2", "0.5000"],
        ["FAILED", "flow/seed0:", "ValueError:", "bad"]]
    assert out[-1].endswith(f"(log: {rows.log})")
    assert sorted(rows.rows) == ["flow/seed0", "rgb/seed0"]
