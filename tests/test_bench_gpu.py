"""`actionlab bench gpu`: its sections run as a user runs them (child processes, each killed at its
budget, rows streamed to $OUT as they finish), on CPU with the GPU machine's missing packages made
unimportable, and the pieces that make it correct on a GPU without one (batch probe, budgets, guarded
rows, shapes and FLOPs from the contracts, the pydantic wheels)."""
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from orchestrator import bench_gpu
from orchestrator.bench_gpu import (CASES, FULL, SECTION_NAMES, SMOKE, BenchRow, SectionNotRun, case_spec,
                                    probe_batch, section_budgets, train_flops_per_clip)
from orchestrator.errors import UserError
from orchestrator.model_summary import summarize

REPO = Path(__file__).resolve().parents[1]
# Absent on the bare GPU machine the bench is for
BLOCKED = ("ray", "mlflow", "pydantic", "tqdm", "av", "decord")

# Each blocked name is None in sys.modules: `import ray` raises ModuleNotFoundError and
# importlib.util.find_spec("ray") returns None, as when it is not installed (a meta-path finder that
# raises would also break libraries that merely look for optional packages, e.g. torch._dynamo).
# As a sitecustomize on PYTHONPATH it does so in every process the bench starts.
BLOCKING_SITECUSTOMIZE = f"""
import sys

sys.modules.update(dict.fromkeys({BLOCKED!r}))
"""
TABLE_SECTIONS = ("loop", "train", "loader", "flow")


def run_bench(args: list[str], tmp_path: Path, *, block: bool = False) -> tuple[int, list[tuple[float, str]], str]:
    """`python -m orchestrator.bench_gpu ARGS` with OUT=tmp_path/out, as a user runs it. Returns its exit
    code, its stdout lines with the seconds each arrived after the start, and its stderr."""
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    if block:
        (tmp_path / "block").mkdir()
        (tmp_path / "block" / "sitecustomize.py").write_text(BLOCKING_SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(tmp_path / "block"), env.get("PYTHONPATH"))))
    stderr_path = tmp_path / "stderr.txt"
    lines = []
    with open(stderr_path, "w") as stderr:  # a file: a full stderr pipe would stall the run
        start = time.monotonic()
        bench = subprocess.Popen([sys.executable, "-m", "orchestrator.bench_gpu", *args], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=stderr, text=True)
        for line in bench.stdout:
            lines.append((time.monotonic() - start, line.rstrip("\n")))
        code = bench.wait(timeout=60)
    return code, lines, stderr_path.read_text()


def section_lines(lines: list[str]) -> dict[str, list[str]]:
    """Each section's lines, between its header and the next."""
    sections, current = {}, None
    for line in lines:
        if line.startswith("==== "):
            current = line.split()[1].rstrip(":")
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def test_smoke_run_streams_every_section_without_ray_mlflow_pydantic(tmp_path):
    """The whole bench as the GPU machine runs it (no ray, mlflow, pydantic, tqdm, av, decord): every
    section in its own process, rows on stdout and in $OUT/bench_gpu.txt as each finishes, in order."""
    code, timed, stderr = run_bench(["--smoke"], tmp_path, block=True)
    lines = [line for _, line in timed]
    assert code == 0, stderr[-3000:]
    out = tmp_path / "out"
    assert (out / bench_gpu.TEXT_FILE).read_text().splitlines() == lines  # the file is what stdout showed
    assert set(lines) <= set((out / bench_gpu.LOG_FILE).read_text().splitlines())
    headers = [line.split()[1].rstrip(":") for line in lines if line.startswith("==== ")]
    assert headers == [*SECTION_NAMES, "summary"]
    sections = section_lines(lines)
    # streamed: the first section's lines came out long before the run ended
    first_fact = next(t for t, line in timed if line.startswith("facts "))
    assert first_fact < timed[-1][0] - 10

    facts = sections["facts"]
    assert all(line.startswith("facts ") for line in facts) and not any("error" in line for line in facts)
    assert any("missing: " + ", ".join(m for m in bench_gpu.PROJECT_IMPORTS if m in BLOCKED) in line
               for line in facts)
    assert any(line.startswith("facts I3D conv1") and "NDHWC" in line for line in facts)
    ddp = sections["ddp"]
    assert len(ddp) == 3 and all(line.startswith("ddp gloo ") and "OK" in line for line in ddp)
    assert any("partial_bn=True" in line for line in ddp)
    # no pydantic and no wheels that could import while it is blocked: one line, why and how
    (why,) = sections["loop"]
    assert why.startswith("loop: cannot run:") and "pip download" in why and ".whl" in why
    train = [line for line in sections["train"] if line.startswith("train ")]
    assert len(train) == len(CASES) * len(bench_gpu.MODES)
    assert [line.split()[:3] for line in train[:2]] == [["train", "TSN-R50", "3x3x32x32"]] * 2  # bf16, then + cl
    assert sum("clips/s" in line for line in train) == len(CASES) * 3  # compile: skipped on CPU
    loader = [line for line in sections["loader"] if line.startswith("loader ")]
    assert len(loader) == len(bench_gpu.LOADER_CASES) and all("%" in line for line in loader)
    (flow,) = [line for line in sections["flow"] if line.startswith("flow ")]
    assert "pairs/s" in flow and "random init" in flow
    assert not any("error" in line for name in TABLE_SECTIONS for line in sections[name])

    summary = sections["summary"]
    assert [line.split()[:2] for line in summary[:len(SECTION_NAMES)]] == [
        [name, "not" if name == "loop" else "done"] for name in SECTION_NAMES]
    assert any(line.startswith("channels_last (") and "tsn " in line and "i3d " in line for line in summary)
    rows = [BenchRow(**json.loads(line)) for line in (out / bench_gpu.ROWS_FILE).read_text().splitlines()]
    assert [bench_gpu.format_row(r) for r in rows] == train + loader + [flow]


def test_a_section_killed_at_its_budget_keeps_the_others_rows(tmp_path):
    """ddp gets half a second (less than its imports take): killed with its process group; the facts
    before it and the loop after it (with the real config, pydantic being installed here) keep theirs."""
    code, timed, stderr = run_bench(["--smoke", "--only", "loop,ddp,facts", "--section-budget", "ddp=0.5"], tmp_path)
    assert code == 1, stderr[-3000:]
    text = (tmp_path / "out" / bench_gpu.TEXT_FILE).read_text().splitlines()
    sections = section_lines(text)
    assert list(sections) == ["facts", "ddp", "loop", "summary"]
    assert sections["ddp"] == []
    assert any(line.startswith("facts torch ") for line in sections["facts"])
    loop_rows = [line for line in sections["loop"] if line.startswith("loop ")]
    assert [line.split()[1] for line in loop_rows] == ["TSN-R50", "I3D"]
    assert all("resume OK" in line and "score_shard" in line and " OK" in line for line in loop_rows)
    assert any("parse_experiment (pydantic" in line for line in sections["loop"])
    summary = {line.split()[0]: line for line in sections["summary"][:3]}
    assert summary["ddp"].split()[1:3] == ["TIMED", "OUT"] and "budget 0.5 s" in summary["ddp"]
    assert "done" in summary["facts"] and "done" in summary["loop"]


@pytest.mark.parametrize("start,limit,memory_bytes,oom_from,expected", [
    (8, 256, 10**9, None, 256),  # everything fits: the limit
    (8, 256, 10**9, 64, 32),  # 64 runs out of memory: the batch before it
    (8, 256, 500, None, 32),  # 32 peaks at 320 bytes: 64 would pass 500
    (8, 256, 10**9, 8, 0),  # not even the first batch fits
    (2, 2, 10**9, None, 2),  # a fixed batch: start = limit
])
def test_probe_batch_doubles_until_memory_runs_out(start, limit, memory_bytes, oom_from, expected):
    tried = []

    def peak_bytes(batch):
        tried.append(batch)
        return None if oom_from is not None and batch >= oom_from else 10 * batch

    assert probe_batch(peak_bytes, start=start, limit=limit, memory_bytes=memory_bytes) == expected
    assert tried == [start * 2**k for k in range(len(tried))]  # doubling from start, never past the limit
    assert max(tried) <= limit


@pytest.mark.parametrize("architecture", sorted({case.architecture for case in CASES}))
def test_shapes_and_flops_are_the_summary_s(architecture):
    """Each stream's input is the paper's (as `actionlab models --summary` derives it) and the
    training FLOPs are 3 x the summary's forward FLOPs (2 per multiply-add), streams summed."""
    row = summarize(architecture)
    cases = [case for case in CASES if case.architecture == architecture]
    inputs, flops = [], 0
    for case in cases:
        spec, num_classes = case_spec(case, FULL)
        inputs += ["x".join(map(str, shape)) for shape in spec.shapes.values()]
        flops += train_flops_per_clip(case, spec, num_classes)
    assert set(inputs) <= set(row.inputs.split(" + "))
    if len(cases) == len(row.inputs.split(" + ")):  # every stream of the summary's model benchmarked
        assert flops == 3 * 2 * row.macs


def test_the_smoke_scale_is_tiny():
    for case in CASES:
        spec, _ = case_spec(case, SMOKE)
        (shape,) = spec.shapes.values()
        assert shape[-1] == SMOKE.crop_size and shape[1] <= SMOKE.max_clip_len and spec.builder_kwargs["width"] < 1


def test_probe_and_out_of_memory_retries_run_the_cuda_path(monkeypatch, request):
    """bench_train's CUDA-only branches, on CPU: CUDA's memory calls faked, OOM past batch 4."""
    tried = []
    real_batch = bench_gpu.synthetic_batch

    def batch_or_oom(spec, num_classes, batch, device, *, channels_last):
        tried.append(batch)
        if batch > 4:
            raise torch.cuda.OutOfMemoryError(f"batch {batch}")
        return real_batch(spec, num_classes, batch, device, channels_last=channels_last)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `run` does on CPU: tiny steps, busy cores
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    monkeypatch.setattr(bench_gpu, "synthetic_batch", batch_or_oom)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1000)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(total_memory=10**9))
    scale = SMOKE._replace(batch=None, batch_start=1, batch_limit=64)
    c3d, bf16 = next(case for case in CASES if case.architecture == "c3d"), bench_gpu.MODES[1]
    row = bench_gpu.bench_train(c3d, bf16, scale, torch.device("cpu"))  # probe: 1, 2, 4 fit, 8 runs out
    assert tried[:4] == [1, 2, 4, 8] and set(tried[4:]) == {4} and row.batch == 4 and row.rate > 0
    tried.clear()
    row = bench_gpu.bench_train(c3d, bf16, scale, torch.device("cpu"), batch=16)  # given: halved on OOM
    assert tried[:3] == [16, 8, 4] and row.batch == 4 and row.note == "OOM at batch 16; OOM at batch 8"


def test_rows_past_the_budget_are_skipped():
    rows = []
    returned = bench_gpu.run(SMOKE, torch.device("cpu"), budget_s=0, emit=rows.append)
    assert returned == rows  # each row handed over as it is decided, in run order
    assert len(rows) == len(CASES) * len(bench_gpu.MODES) + len(bench_gpu.LOADER_CASES) + 1
    compile_rows = [r for r in rows if r.mode == "bf16+cl+compile"]
    assert rows[-len(CASES):] == compile_rows
    assert all("compile is timed on CUDA only" in r.note for r in compile_rows)
    assert all(r.note == "skipped (time budget)" and r.rate is None for r in rows if r not in compile_rows)
    assert rows[0].inputs == "3x3x32x32" and rows[0].mode == "bf16" and rows[1].mode == "bf16+cl"
    assert not any(r.failed for r in rows)


def test_a_failing_row_is_reported_and_the_rest_go_on(monkeypatch):
    def broken_loader(*args, **kwargs):
        raise RuntimeError("no frames\nsecond line")

    flow_row = BenchRow("flow", "RAFT-small", "2 x 3x8x8", "fp32", batch=8, rate=123.0, unit="pairs/s")
    monkeypatch.setattr(bench_gpu, "write_prepared_videos", lambda root, scale: [root])
    monkeypatch.setattr(bench_gpu, "bench_loader", broken_loader)
    monkeypatch.setattr(bench_gpu, "bench_raft", lambda scale, device, tmp: flow_row)
    rows = bench_gpu.run(SMOKE, torch.device("cpu"), sections=("loader", "flow"), emit=lambda row: None)
    assert [r.note for r in rows[:-1]] == ["error: RuntimeError: no frames"] * len(bench_gpu.LOADER_CASES)
    assert all(r.failed for r in rows[:-1])
    assert rows[-1] == flow_row


@pytest.mark.parametrize("sections,total_s,fixed,expected", [
    (SECTION_NAMES, None, {}, {s.name: s.budget_s for s in bench_gpu.SECTIONS}),  # the defaults
    (("train", "flow"), None, {}, {"train": 180.0, "flow": 30.0}),
    (("train", "flow"), 420.0, {}, {"train": 360.0, "flow": 60.0}),  # a total, split as the defaults are
    (("train", "flow"), 300.0, {"flow": 60.0}, {"train": 240.0, "flow": 60.0}),  # a fixed one first
    (("train",), None, {"flow": 5.0}, {"train": 180.0}),  # a section not run is ignored
])
def test_section_budgets(sections, total_s, fixed, expected):
    assert section_budgets(sections, total_s=total_s, fixed=fixed) == pytest.approx(expected)


def test_the_default_run_fits_in_8_minutes_with_room_to_start_and_kill():
    assert sum(section_budgets(SECTION_NAMES).values()) <= 450


def test_budget_arguments_are_checked():
    with pytest.raises(UserError, match="none is left for train"):
        section_budgets(("train", "flow"), total_s=50, fixed={"flow": 60.0})
    with pytest.raises(UserError, match="NAME=SECONDS"):
        bench_gpu.parse_section_budgets(["train:20"])
    with pytest.raises(UserError, match="NAME is one of"):
        bench_gpu.parse_section_budgets(["gpu=20"])
    assert bench_gpu.parse_sections("flow, facts") == ("facts", "flow")  # always in run order


def test_channels_last_verdict_per_architecture():
    rate = {("TSN-R50", "bf16"): 1000.0, ("TSN-R50", "bf16+cl"): 1200.0, ("I3D rgb", "bf16"): 100.0,
            ("I3D rgb", "bf16+cl"): 70.0, ("I3D flow", "bf16"): 100.0, ("I3D flow", "bf16+cl"): 110.0,
            ("C3D", "bf16"): 100.0}  # C3D without its bf16+cl row: not measured
    rows = [BenchRow("train", what, "", mode, rate=value) for (what, mode), value in rate.items()]
    assert bench_gpu.channels_last_line(rows) == (
        "channels_last (bf16+cl vs bf16 clips/s, train rows): tsn yes (TSN-R50 +20%); "
        "i3d no (I3D rgb -30%, I3D flow +10%); c3d not measured; r2plus1d not measured")


def test_wheels_are_unpacked_onto_sys_path(tmp_path, monkeypatch):
    wheel = tmp_path / "actionlab_fake_wheel-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("actionlab_fake_wheel/__init__.py", "VERSION = '1.0'\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    site = bench_gpu.unpack_wheels([wheel])
    import actionlab_fake_wheel

    assert actionlab_fake_wheel.VERSION == "1.0" and Path(actionlab_fake_wheel.__file__).parent.parent == site
    monkeypatch.delitem(sys.modules, "actionlab_fake_wheel")


def test_without_pydantic_or_wheels_the_loop_says_why_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydantic", None)
    monkeypatch.setattr(bench_gpu, "WHEELS_DIR", tmp_path)
    with pytest.raises(SectionNotRun) as why:
        bench_gpu.experiment_parser()
    line = str(why.value)
    assert "\n" not in line and line.startswith("loop: cannot run:")
    assert "pip download" in line and bench_gpu.WHEELS_PACKAGES in line
    assert "--python-version {}.{} ".format(*sys.version_info[:2]) in line  # wheels for the python that runs it


def test_targets_are_reported_beside_the_rows_that_answer_them():
    rows = [
        BenchRow("train", "TSN-R50", "3x3x224x224", "fp32", rate=2000.0),  # fp32 does not count
        BenchRow("train", "TSN-R50", "3x3x224x224", "bf16", rate=900.0),
        BenchRow("train", "TSN-R50", "3x3x224x224", "bf16+cl", rate=1100.0),
        BenchRow("train", "I3D rgb", "3x64x224x224", "bf16", peak_share=0.35),
        BenchRow("loader", "TSN-R50", "3x3x224x224", "bf16+cl", rate=800.0, wait_share=0.25),
    ]
    lines = bench_gpu.target_lines(rows)
    assert lines == [
        "TSN-R50 bf16 model-only >= 1000 clips/s: 1100 (TSN-R50 bf16+cl, met)",
        "I3D >= 40% of bf16 peak: 35% (I3D rgb bf16, missed)",
        "data wait <= 10%: 25% (TSN-R50 bf16+cl, missed)",
        "RAFT-small >= 100 pairs/s: not measured",
    ]


def test_actionlab_bench_gpu_command(capsys):
    from orchestrator.cli import main

    assert main(["bench", "gpu", "--smoke", "--only", "flow"]) == 0
    out = capsys.readouterr().out
    assert "==== flow" in out and "RAFT-small" in out and "pairs/s" in out and "error" not in out
    assert "flow    done" in out
    assert main(["bench", "gpu", "--only", "nothing"]) == 2
    assert "--only 'nothing'" in capsys.readouterr().err
