"""`actionlab bench gpu` (== `python -m orchestrator.bench.gpu`): the one thing a lent GPU machine
runs, in under 8 minutes: what the machine is, whether the project's training loop and DDP run on
it, and what one GPU does with the papers' models, the real loader and RAFT, trained by the loop's
own step.

    main (the parent, this module: imports no torch until it runs, never touches the GPU)
      for each section, in order: a child process `python -m orchestrator.bench.gpu --only SECTION
          --in-process`, killed with its process group at its budget (`section_budgets`,
          `run_section_child`): a crash or a timeout loses that section's unfinished rows only
        child: the section's runner (`gpu_sections.SECTION_RUNNERS`) prints each row the moment it is
          measured; table rows also go, one JSON object a line, to the rows file
        parent: forwards each line as it arrives: stdout -> the terminal, TEXT_FILE and LOG_FILE;
          stderr (warnings, tracebacks) -> the terminal's stderr and LOG_FILE
      summary (`summary_lines`): each section done / not run / TIMED OUT after N s / crashed (its last
          stderr line); from the rows file (`gpu_sections.rows_summary`): channels_last yes/no per
          architecture from the train rows; per loader case, decode on the CPU beside decode on the
          GPU (clips/s, data wait, cores busy); the H200 targets

Files, with $OUT set (each line written and flushed as it comes, so that a run killed at the
machine's limit keeps every line before it): $OUT/bench_gpu.txt (the section headers, rows and
summary: what stdout shows), $OUT/bench_gpu.log (that and every child's stderr, interleaved) and
$OUT/bench_gpu.jsonl (the table rows as JSON; the summary reads them back). Without $OUT only the
terminal gets them.

Sections, each with its default budget in seconds (`SECTIONS`; 450 in all, 30 s under the 8
minutes for start-up and kills). `--budget-s` splits another total over the sections chosen with
`--only` in the same proportions; `--section-budget NAME=S` fixes one:

  facts    30  python, torch / CUDA / cuDNN / NCCL, GPU, bf16 native (no emulation), cores, RAM,
               /dev/shm, which of the project's imports are present; a bf16 matmul ceiling; I3D's
               first layers (conv1 with 3 input channels, BatchNorm3d, MaxPool3d) in NCDHW vs NDHWC
               (channels_last_3d), conv1 also with its input padded to 8 channels
  ddp      30  a one-rank NCCL process group (gloo without CUDA): TSN wrapped in DistributedDataParallel
               as ray.train.torch.prepare_model wraps it, trained DDP_STEPS steps by loop.train_one_epoch
               under model.join(), without and with partial_bn (whose frozen norms once broke step 2);
               the loop's collectives: all_reduce, all_gather_object (a ShardScores), broadcast_object_list
  loop     90  TSN-R50 (K=3 x 224) and I3D rgb (64 x 224), bf16 + channels_last: loop.train_one_epoch over
               pinned uint8 batches in collate_skip_bad's format, score_shard, save_state / load_state;
               clips/s, TFLOP/s, peak GiB
  train   150  clips/s and TFLOP/s of the loop's step (loop.train_step: normalise, autocast forward,
               cross-entropy, backward, gradient clipping, SGD) on uint8 batches already on the GPU, for
               TSN-R50, I3D (each stream), C3D and R(2+1)D-18 at `model_summary.PAPER_SETTINGS`: bf16
               and bf16 + channels_last for every model first, then fp32, then bf16 + channels_last +
               torch.compile (optim.compile) while the budget lasts
  loader  120  TSN-R50 and I3D rgb as a run trains them, bf16 + channels_last: data.build_dataset over
               320x240 JPEG frame folders written on the spot (`actionlab data prepare`'s frames layout)
               -> loop.make_loader (every core but one, persistent, pinned) -> loop.train_one_epoch; two
               rows per model: data.decode_device cpu (the loader processes decode and crop), then cuda
               (at most 8 of them read JPEG bytes; device_decode.DeviceDecoding decodes each batch with
               nvJPEG and crops it on the GPU); clips/s, data wait = the loop's own data_wait_s / its seconds, and
               CPU cores busy = CPU seconds of the process and its loader processes (/proc) / wall
  flow     30  RAFT-small through `flow.compute_flow` (the extraction path) on 320x240 frames:
               pairs/s, with random weights (none can be downloaded there; speed does not depend on them)

Every row's model, optimiser, scaler and step are the training loop's (`loop.build_trainable`,
`loop.train_step`), set up by a real ExperimentConfig (`orchestrator.config.parse_experiment`) of the
model at its paper's setting (`gpu_sections.bench_config`): the benchmark has no step of its own.
Batch (train rows): doubled from 8 until a step runs out of memory or its peak says the next doubling
would not fit, at most 256 clips; channels_last and compile reuse bf16's batch, fp32 starts from it
and halves on OOM. Timings synchronise the GPU around warmed-up steps (compilation and cuDNN
autotuning excluded). TFLOP/s = clips/s x 3 x forward FLOPs per clip (`count_macs`, as `actionlab
models --summary`, 2 FLOPs per multiply-add; backward ~ 2 x forward). Each row is guarded: an error is
printed in its row and the rest go on; a row that would start too close to its section's budget
reads "skipped (time budget)". Without CUDA (or with --smoke) every section runs its smoke version:
width 1/8, 32-pixel crops, 8-frame clips, a few steps, no compile; the tests run that.

Imports: torch, torchvision, numpy, einops, Pillow and the project's models, data layer and training
loop (which imports no pydantic), so it runs on the GPU machine, which lacks pydantic, Ray, MLflow,
decord, PyAV and tqdm (tests/test_bench_gpu.py runs it without them). The config needs pydantic:
where it does not import, the wheels in `.whl/` at the repository root (`--wheels`) are unpacked
into a temporary folder put on sys.path; without them each section that trains (ddp's steps, loop,
train, loader) prints one line saying so and the rest run. To bring the wheels (2.8 MB, CPython
3.12, x86_64), once, in the repository root of the machine that sends the working tree:

    mkdir -p .git/info && echo /.whl/ >> .git/info/exclude   # ignored: never committed
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \\
      pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection typing-extensions

and send `.whl` to the GPU machine with the working tree (being ignored, it goes only where it is
named explicitly).

On the GPU machine, from the repository root, within a 600 s limit:

    OUT=${OUT:-/tmp/bench_gpu} python3 -m orchestrator.bench.gpu
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

from orchestrator.errors import UserError

REPO = Path(__file__).resolve().parents[2]


class Section(NamedTuple):
    name: str
    budget_s: float  # default seconds before its process is killed
    what: str  # its header's summary


SECTIONS = (  # run in this order: the cheap correctness checks first, the long tables last
    Section("facts", 30.0, "the machine, its packages, I3D's first layers NCDHW vs NDHWC"),
    Section("ddp", 30.0, "one-rank NCCL, DistributedDataParallel + join(), TSN partial_bn, the loop's collectives"),
    Section("loop", 90.0, "orchestrator.training.loop on TSN-R50 and I3D rgb, bf16 + channels_last"),
    Section("train", 150.0, "clips/s and TFLOP/s of the loop's step per model and precision"),
    Section("loader", 120.0, "JPEG frames -> the run's Dataset and DataLoader -> train_one_epoch, bf16 + cl, "
                             "decoded on the CPU, then on the GPU"),
    Section("flow", 30.0, "RAFT-small pairs/s through flow.compute_flow"),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)
TEXT_FILE, LOG_FILE, ROWS_FILE = "bench_gpu.txt", "bench_gpu.log", "bench_gpu.jsonl"  # under $OUT
WHEELS_DIR = REPO / ".whl"  # pydantic wheels for the config, where pydantic is missing (--wheels)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`actionlab bench gpu`'s options, which `python -m orchestrator.bench.gpu` takes too (this module
    imports no torch: the CLI builds its parser from here)."""
    parser.add_argument("--smoke", action="store_true", help="the tiny version (always, without CUDA)")
    parser.add_argument("--only", default=None,
                        help=f"sections to run, comma-separated, of {', '.join(SECTION_NAMES)} (default: all)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds in all, split over the sections in proportion to their default budgets "
                             "(under 8 minutes in all); a section is killed at its share, and its rows that would "
                             "start too close to it are skipped")
    parser.add_argument("--section-budget", action="append", metavar="NAME=SECONDS",
                        help="one section's seconds, taken out of --budget-s first (repeatable)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 TFLOP/s, for the peak column (default: from its name)")
    parser.add_argument("--wheels", type=Path, default=WHEELS_DIR,
                        help="pydantic wheels to unpack where pydantic is missing (default: .whl/ in the repository "
                             "root; the module's docstring says how to bring them)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the sections in this process, one after another, none killed (what each "
                             "child process runs; for debugging)")
    parser.add_argument("--rows-file", type=Path, default=None,
                        help="with --in-process: also append each table row there as a JSON line")


def parse_sections(only: str | None) -> tuple[str, ...]:
    """--only's comma-separated names (None: all), in SECTIONS' order."""
    if only is None:
        return SECTION_NAMES
    chosen = {name.strip() for name in only.split(",") if name.strip()}
    if not chosen or chosen - set(SECTION_NAMES):
        raise UserError(f"--only {only!r}: expected some of {', '.join(SECTION_NAMES)}, comma-separated")
    return tuple(name for name in SECTION_NAMES if name in chosen)


def parse_section_budgets(items: list[str] | None) -> dict[str, float]:
    """--section-budget NAME=SECONDS, each given once or more (the last wins)."""
    budgets = {}
    for item in items or []:
        name, _, seconds = item.partition("=")
        try:
            budgets[name.strip()] = float(seconds)
        except ValueError:
            raise UserError(f"--section-budget {item!r}: expected NAME=SECONDS, e.g. train=200") from None
        if name.strip() not in SECTION_NAMES or budgets[name.strip()] <= 0:
            raise UserError(f"--section-budget {item!r}: NAME is one of {', '.join(SECTION_NAMES)}, SECONDS > 0")
    return budgets


def section_budgets(sections: tuple[str, ...], *, total_s: float | None = None,
                    fixed: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per section: `fixed` ones as given; the others their SECTIONS default, or, with
    `total_s`, what `fixed` leaves of it split in proportion to their defaults."""
    defaults = {s.name: s.budget_s for s in SECTIONS}
    fixed = {name: seconds for name, seconds in (fixed or {}).items() if name in sections}
    rest = [name for name in sections if name not in fixed]
    share = 1.0
    if total_s is not None and rest:
        left = total_s - sum(fixed.values())
        if left <= 0:
            raise UserError(f"--budget-s {total_s:g}: the --section-budget values take all of it, none is left for "
                            f"{', '.join(rest)}")
        share = left / sum(defaults[name] for name in rest)
    return {name: fixed.get(name, defaults[name] * share) for name in sections}


class Transcript:
    """The run's lines as they arrive: the terminal and, with `out_dir`, TEXT_FILE (stdout's lines) and
    LOG_FILE (stderr's too), each written and flushed at once: a run killed at the machine's time limit
    keeps every line printed before."""

    def __init__(self, out_dir: Path | None):
        self.lock = threading.Lock()  # two pipes per child are read at once
        self.text = self.log = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.text, self.log = open(out_dir / TEXT_FILE, "w"), open(out_dir / LOG_FILE, "w")

    def out(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            for f in (self.text, self.log):
                if f is not None:
                    f.write(line + "\n")
                    f.flush()

    def err(self, line: str) -> None:
        with self.lock:
            print(line, file=sys.stderr, flush=True)
            if self.log is not None:
                self.log.write(line + "\n")
                self.log.flush()

    def close(self) -> None:
        for f in (self.text, self.log):
            if f is not None:
                f.close()


class SectionResult(NamedTuple):
    name: str
    budget_s: float
    seconds: float  # from its start to its end or its kill
    status: str  # done | done, some rows failed | not run | TIMED OUT | crashed
    detail: str = ""  # crashed: the exit code or signal and the last line of its stderr


def _forward_lines(stream, write: Callable[[str], None]) -> None:
    for line in stream:
        write(line.rstrip("\n"))


def run_section_child(name: str, budget_s: float, child_args: list[str], transcript: Transcript) -> SectionResult:
    """`name` in a child process of its own session, its lines forwarded to `transcript` as they come,
    the child and its process group (DataLoader workers too) killed at `budget_s`."""
    from orchestrator.bench.gpu_sections import EXIT_NOT_RUN, EXIT_ROWS_FAILED

    command = [sys.executable, "-m", "orchestrator.bench.gpu", "--only", name, "--in-process",
               "--budget-s", f"{budget_s:g}", *child_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    last_error = [""]

    def error_line(line: str) -> None:
        if line.strip():
            last_error[0] = line.strip()
        transcript.err(line)

    start = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                             env=env, start_new_session=True)
    readers = [threading.Thread(target=_forward_lines, args=(child.stdout, transcript.out), daemon=True),
               threading.Thread(target=_forward_lines, args=(child.stderr, error_line), daemon=True)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        child.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if child.poll() is None:  # past its budget, or this process interrupted: the whole group goes
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    seconds = time.monotonic() - start
    for reader in readers:
        reader.join(timeout=5)  # the pipes close when the last process holding them is gone
    if timed_out:
        return SectionResult(name, budget_s, seconds, "TIMED OUT", "killed at its budget; its rows above are what "
                                                                   "it finished")
    status = {0: "done", EXIT_ROWS_FAILED: "done, some rows failed", EXIT_NOT_RUN: "not run"}.get(child.returncode)
    if status is not None:
        return SectionResult(name, budget_s, seconds, status, "its line above says why" if status == "not run" else "")
    code = child.returncode
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    return SectionResult(name, budget_s, seconds, "crashed", f"{how}: {last_error[0][:200]}")


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def summary_lines(results: list[SectionResult], rows_file: Path, *, smoke: bool, wall_s: float) -> list[str]:
    """How each section ended, then what the rows say (channels_last per architecture, the targets)."""
    from orchestrator.bench.gpu_sections import rows_summary

    lines = [f"==== summary: {wall_s:.0f} s ===="]
    lines += [f"{r.name:<7} {r.status} after {r.seconds:.0f} s (budget {_seconds(r.budget_s)} s)" +
              (f": {r.detail}" if r.detail else "") for r in results]
    return lines + rows_summary(rows_file, smoke=smoke)


def run_sections(sections: tuple[str, ...], budgets: dict[str, float], *, smoke: bool,
                 peak_tflops: float | None, wheels: Path) -> int:
    """Each section in its own child process (`run_section_child`), then the summary. Returns 0 when
    every section ran to its end (its rows may still report errors), else 1."""
    import torch  # here only to ask whether there is a GPU

    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    transcript = Transcript(out_dir)
    scratch = None if out_dir else tempfile.TemporaryDirectory(prefix="actionlab-bench-gpu-rows-")
    rows_file = (out_dir or Path(scratch.name)) / ROWS_FILE
    rows_file.write_text("")
    smoke = smoke or not torch.cuda.is_available()
    child_args = ["--rows-file", str(rows_file), "--wheels", str(wheels)] + (["--smoke"] if smoke else []) + (
        ["--peak-tflops", f"{peak_tflops:g}"] if peak_tflops else [])
    start = time.monotonic()
    results: list[SectionResult] = []
    try:
        transcript.out(f"actionlab bench gpu{' (smoke)' if smoke else ''}: {', '.join(sections)}; at most "
                       f"{_seconds(sum(budgets.values()))} s; " +
                       (f"files {out_dir / TEXT_FILE}, {LOG_FILE}, {ROWS_FILE}" if out_dir else "$OUT unset: no files"))
        for name in sections:
            what = next(s.what for s in SECTIONS if s.name == name)
            transcript.out(f"==== {name}: {what}; killed past {_seconds(budgets[name])} s ====")
            results.append(run_section_child(name, budgets[name], child_args, transcript))
        for line in summary_lines(results, rows_file, smoke=smoke, wall_s=time.monotonic() - start):
            transcript.out(line)
    finally:
        transcript.close()
        if scratch is not None:
            scratch.cleanup()
    return 0 if all(r.status.startswith(("done", "not run")) for r in results) else 1


def run_from_args(args: argparse.Namespace) -> int:
    """`actionlab bench gpu ARGS`: the sections in child processes, or with --in-process here."""
    sections = parse_sections(args.only)
    budgets = section_budgets(sections, total_s=args.budget_s, fixed=parse_section_budgets(args.section_budget))
    if args.in_process:
        from orchestrator.bench.gpu_sections import run_in_process

        return run_in_process(sections, budgets, smoke=args.smoke, peak_tflops=args.peak_tflops, wheels=args.wheels,
                              rows_file=args.rows_file)
    return run_sections(sections, budgets, smoke=args.smoke, peak_tflops=args.peak_tflops, wheels=args.wheels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.bench.gpu",
                                     description="actionlab bench gpu: " + ", ".join(SECTION_NAMES) +
                                                 " (the module's docstring says what each measures)")
    add_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except UserError as err:
        print(f"bench gpu: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
