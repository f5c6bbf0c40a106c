"""`actionlab bench gpu`: its sections run as a user runs them (child processes, each killed at its
budget, rows streamed to $OUT as they finish), on CPU with the GPU machine's missing packages absent
(pydantic brought as wheels, as there), every trained row going through the training loop's own
step, and the pieces that make it correct on a GPU without one (batch probe, budgets, guarded rows,
shapes and FLOPs from the contracts, the pydantic wheels)."""
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from orchestrator.bench import gpu, gpu_sections
from orchestrator.bench.gpu import SECTION_NAMES, section_budgets
from orchestrator.bench.gpu_sections import (BF16_CL, CASES, FULL, SMOKE, BenchRow, SectionNotRun, bench_config,
                                             probe_batch, train_flops_per_clip)
from orchestrator.errors import UserError
from orchestrator.model_summary import summarize
from orchestrator.training import loop

REPO = Path(__file__).resolve().parents[1]
# Absent on the bare GPU machine the bench is for
BLOCKED = ("ray", "mlflow", "pydantic", "tqdm", "av", "decord")
# What the module's docstring has `pip download` bring to that machine
WHEEL_DISTRIBUTIONS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions")

PLANNED = gpu_sections.experiment_parser(Path("/nonexistent"))[0]  # pydantic is installed here


def python_without(blocked: tuple[str, ...], folder: Path) -> Path:
    """A folder for PYTHONPATH whose sitecustomize swaps this python's site-packages for a copy made of
    links, less `blocked`'s packages and distributions: every process the bench starts lacks them
    as if they had never been installed (and pydantic unpacked from wheels then imports)."""
    site = Path(importlib.util.find_spec("pydantic").origin).parents[1]
    mirror = folder / "site-packages"
    mirror.mkdir(parents=True)
    for entry in site.iterdir():  # e.g. pydantic_core-2.50.5.dist-info, av.libs, mlflow_skinny-3.17.2.dist-info
        if re.split(r"[-._]", entry.name)[0] not in blocked:
            (mirror / entry.name).symlink_to(entry)
    (folder / "sitecustomize.py").write_text(
        f"import sys\n\nsys.path[:] = [{str(mirror)!r} if p == {str(site)!r} else p for p in sys.path]\n")
    return folder


def wheels_of_installed(distributions: tuple[str, ...], folder: Path) -> Path:
    """Each installed distribution zipped back into a wheel (its files as they lie in site-packages):
    what `pip download` brings, for the python running the tests."""
    folder.mkdir()
    for name in distributions:
        dist = importlib.metadata.distribution(name)
        wheel = folder / f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for file in dist.files:
                path = Path(dist.locate_file(file))
                if not str(file).startswith("..") and path.is_file():  # scripts outside site-packages: none needed
                    archive.write(path, str(file))
    return folder


def run_bench(args: list[str], tmp_path: Path, *, block: bool = False) -> tuple[int, list[tuple[float, str]], str]:
    """`python -m orchestrator.bench.gpu ARGS` with OUT=tmp_path/out, as a user runs it (with `block`: in a
    python without BLOCKED). Returns its exit code, its stdout lines with the seconds each arrived after
    the start, and its stderr."""
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    if block:
        site = python_without(BLOCKED, tmp_path / "block")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(site), env.get("PYTHONPATH"))))
    stderr_path = tmp_path / "stderr.txt"
    lines = []
    with open(stderr_path, "w") as stderr:  # a file: a full stderr pipe would stall the run
        start = time.monotonic()
        bench = subprocess.Popen([sys.executable, "-m", "orchestrator.bench.gpu", *args], cwd=REPO, env=env,
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
    """The whole bench as the GPU machine runs it (no ray, mlflow, pydantic, tqdm, av, decord; pydantic
    from wheels in --wheels): every section in its own process, rows on stdout and in
    $OUT/bench_gpu.txt as each finishes, in order."""
    wheels = wheels_of_installed(WHEEL_DISTRIBUTIONS, tmp_path / "wheels")
    code, timed, stderr = run_bench(["--smoke", "--wheels", str(wheels)], tmp_path, block=True)
    lines = [line for _, line in timed]
    assert code == 0, stderr[-3000:]
    out = tmp_path / "out"
    assert (out / gpu.TEXT_FILE).read_text().splitlines() == lines  # the file is what stdout showed
    assert set(lines) <= set((out / gpu.LOG_FILE).read_text().splitlines())
    headers = [line.split()[1].rstrip(":") for line in lines if line.startswith("==== ")]
    assert headers == [*SECTION_NAMES, "summary"]
    sections = section_lines(lines)
    # streamed: the first section's lines came out long before the run ended
    first_fact = next(t for t, line in timed if line.startswith("facts "))
    assert first_fact < timed[-1][0] - 10

    facts = sections["facts"]
    assert all(line.startswith("facts ") for line in facts) and not any("error" in line for line in facts)
    assert any("missing: " + ", ".join(m for m in gpu_sections.PROJECT_IMPORTS if m in BLOCKED) in line
               for line in facts)
    assert any(line.startswith("facts I3D conv1") and "NDHWC" in line for line in facts)
    # each section that trains builds the real config, pydantic unpacked from the wheels
    for name in ("ddp", "loop", "train", "loader"):
        assert f"{name}: run planned by orchestrator.plan, config parsed by orchestrator.config (pydantic " \
               f"{importlib.metadata.version('pydantic')} from wheels/)" in sections[name]
    ddp = [line for line in sections["ddp"] if line.startswith("ddp gloo ")]
    assert len(ddp) == 3 and all("OK" in line for line in ddp)
    assert any("partial_bn=True" in line for line in ddp)
    loop_rows = [line for line in sections["loop"] if line.startswith("loop ")]
    assert [line.split()[1] for line in loop_rows] == ["TSN-R50", "I3D"]
    assert all("resume OK" in line and "score_shard" in line for line in loop_rows)
    train = [line for line in sections["train"] if line.startswith("train ")]
    assert len(train) == len(CASES) * len(gpu_sections.MODES)
    assert [line.split()[:3] for line in train[:2]] == [["train", "TSN-R50", "3x3x32x32"]] * 2  # bf16, then + cl
    assert sum("clips/s" in line for line in train) == len(CASES) * 3  # compile: skipped on CPU
    loader = [line for line in sections["loader"] if line.startswith("loader ")]
    assert len(loader) == len(gpu_sections.LOADER_CASES) * len(gpu_sections.LOADER_DECODES)
    assert all("%" in line and "clips/s" in line for line in loader)
    (flow,) = [line for line in sections["flow"] if line.startswith("flow ")]
    assert "pairs/s" in flow and "random init" in flow
    assert not any("error" in line or " BAD" in line for line in loop_rows + train + loader + [flow])

    summary = sections["summary"]
    assert [line.split()[:2] for line in summary[:len(SECTION_NAMES)]] == [[name, "done"] for name in SECTION_NAMES]
    assert any(line.startswith("channels_last (") and "tsn " in line and "i3d " in line for line in summary)
    assert any(line.startswith("loader, decode cpu -> cuda: TSN-R50 ") and "I3D rgb " in line
               and "not measured" not in line for line in summary)
    rows = [BenchRow(**json.loads(line)) for line in (out / gpu.ROWS_FILE).read_text().splitlines()]
    assert [gpu_sections.format_row(r) for r in rows] == loop_rows + train + loader + [flow]
    assert [(r.what, r.decode) for r in rows if r.section == "loader"] == [  # decode on the CPU, then the device
        ("TSN-R50", "cpu"), ("TSN-R50", "cuda"), ("I3D rgb", "cpu"), ("I3D rgb", "cuda")]
    assert all(r.cores > 0 for r in rows if r.section == "loader")


def test_without_pydantic_or_wheels_the_sections_that_train_say_why_and_the_rest_run(tmp_path):
    (tmp_path / "no-wheels").mkdir()
    code, timed, stderr = run_bench(["--smoke", "--only", "ddp,train,flow", "--wheels", str(tmp_path / "no-wheels")],
                                    tmp_path, block=True)
    assert code == 0, stderr[-3000:]
    sections = section_lines([line for _, line in timed])
    (why,) = sections["train"]
    assert why.startswith("train: cannot run: orchestrator.config needs pydantic") and "pip download" in why
    steps, collectives = sections["ddp"]
    assert steps.startswith("ddp gloo TSN DistributedDataParallel steps: cannot run:")
    assert collectives.startswith("ddp gloo collectives:") and collectives.endswith("OK")
    assert any(line.startswith("flow ") and "pairs/s" in line for line in sections["flow"])
    assert [line.split()[:2] for line in sections["summary"][:3]] == [["ddp", "done"], ["train", "not"],
                                                                      ["flow", "done"]]


def test_a_section_killed_at_its_budget_keeps_the_others_rows(tmp_path):
    """ddp gets half a second (less than its imports take): killed with its process group; the facts
    before it and the loop after it (with the real config, pydantic being installed here) keep theirs."""
    code, timed, stderr = run_bench(["--smoke", "--only", "loop,ddp,facts", "--section-budget", "ddp=0.5"], tmp_path)
    assert code == 1, stderr[-3000:]
    text = (tmp_path / "out" / gpu.TEXT_FILE).read_text().splitlines()
    sections = section_lines(text)
    assert list(sections) == ["facts", "ddp", "loop", "summary"]
    assert sections["ddp"] == []
    assert any(line.startswith("facts torch ") for line in sections["facts"])
    loop_rows = [line for line in sections["loop"] if line.startswith("loop ")]
    assert [line.split()[1] for line in loop_rows] == ["TSN-R50", "I3D"]
    assert all("resume OK" in line and "score_shard" in line and " OK" in line for line in loop_rows)
    assert any("parsed by orchestrator.config (pydantic" in line for line in sections["loop"])
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
        run, num_classes = bench_config(PLANNED, case, FULL, BF16_CL)
        inputs += ["x".join(map(str, shape)) for shape in run.inputs.shapes.values()]
        flops += train_flops_per_clip(run.config, run.inputs, num_classes)
    assert set(inputs) <= set(row.inputs.split(" + "))
    if len(cases) == len(row.inputs.split(" + ")):  # every stream of the summary's model benchmarked
        assert flops == 3 * 2 * row.macs


def test_the_smoke_scale_is_tiny():
    for case in CASES:
        spec = bench_config(PLANNED, case, SMOKE, BF16_CL)[0].inputs
        (shape,) = spec.shapes.values()
        assert shape[-1] == SMOKE.crop_size and shape[1] <= SMOKE.max_clip_len and spec.builder_kwargs["width"] < 1


@pytest.fixture
def one_thread(request):
    """As `measure_rows` does on CPU: tiny steps, busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))


def test_train_and_loader_rows_train_with_the_loop_s_own_step(monkeypatch, tmp_path, one_thread):
    """No step of the benchmark's own: each timed step is a call of loop.train_step with the row's
    config (the loader row's through loop.train_one_epoch, over the run's Dataset and DataLoader)."""
    calls = []
    real_step = loop.train_step

    def counted(model, micro_batches, optimizer, scaler, cfg, device, sb):
        calls.append((cfg.optim.precision, cfg.optim.channels_last, len(micro_batches[0]["label"])))
        return real_step(model, micro_batches, optimizer, scaler, cfg, device, sb)

    monkeypatch.setattr(loop, "train_step", counted)
    tsn, fp32 = CASES[0], gpu_sections.MODES[0]
    row = gpu_sections.bench_train(PLANNED, tsn, fp32, SMOKE, torch.device("cpu"))
    assert row.rate > 0 and len(calls) >= SMOKE.warmup_steps + 1 + 3  # warm-up, one to size the run, >= 3 timed
    assert set(calls) == {("fp32", False, SMOKE.batch)}
    calls.clear()
    folders = gpu_sections.write_prepared_videos(tmp_path, SMOKE)
    row = gpu_sections.bench_loader(PLANNED, tsn, SMOKE, torch.device("cpu"), folders=folders, batch=2)
    assert row.rate > 0 and 0 <= row.wait_share <= 1 and "error" not in row.note
    assert row.decode == "cpu" and row.cores > 0
    assert set(calls) == {("bf16", True, 2)} and len(calls) >= 2 * SMOKE.loader_workers


def test_the_gpu_decode_loader_row_runs_the_deferred_path_on_cpu(monkeypatch, tmp_path, one_thread):
    """data.decode_device cuda, on the CPU device: the run's Dataset hands over JPEG bytes (defer) and
    make_loader's DeviceDecoding decodes every batch the loop trains on."""
    from orchestrator.data import device_decode

    decoded = []
    real_decode = device_decode.decode_batch

    def counted(batch, transform, device):
        decoded.append(len(batch["params"]))
        return real_decode(batch, transform, device)

    monkeypatch.setattr(device_decode, "decode_batch", counted)
    folders = gpu_sections.write_prepared_videos(tmp_path, SMOKE)
    row = gpu_sections.bench_loader(PLANNED, CASES[0], SMOKE, torch.device("cpu"), folders=folders, batch=2,
                                    decode_device="cuda")
    assert row.rate > 0 and 0 <= row.wait_share <= 1 and row.cores > 0 and "error" not in row.note
    assert row.decode == "cuda" and "decoded on cpu" in row.note
    assert len(decoded) >= 2 * SMOKE.warmup_steps and set(decoded) == {2}


def test_tree_cpu_seconds_counts_children_running_and_reaped():
    """CPU burnt by a child process shows in this process's tree while it runs and after it is reaped."""
    burn = ("import sys, time\nend = time.process_time() + 0.5\nwhile time.process_time() < end:\n    pass\n"
            "print('burnt', flush=True)\nsys.stdin.read()\n")
    before = gpu_sections.tree_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "burnt\n"
    running = gpu_sections.tree_cpu_seconds()
    child.stdin.close()
    child.wait(timeout=30)
    reaped = gpu_sections.tree_cpu_seconds()
    assert before is not None and running - before >= 0.4 and reaped - before >= 0.4
    assert gpu_sections.tree_cpu_seconds(child.pid) is None  # gone


def test_tree_cpu_seconds_is_none_without_proc(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_sections, "PROC", tmp_path / "absent")
    assert gpu_sections.tree_cpu_seconds() is None


def test_probe_and_out_of_memory_retries_run_the_cuda_path(monkeypatch, one_thread):
    """bench_train's CUDA-only branches, on CPU: CUDA's memory calls faked, OOM past batch 4."""
    tried = []
    real_batch = gpu_sections.synthetic_batch

    def batch_or_oom(spec, num_classes, batch, **kwargs):
        tried.append(batch)
        if batch > 4:
            raise torch.cuda.OutOfMemoryError(f"batch {batch}")
        return real_batch(spec, num_classes, batch, **kwargs)

    monkeypatch.setattr(gpu_sections, "synthetic_batch", batch_or_oom)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1000)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(total_memory=10**9))
    scale = SMOKE._replace(batch=None, batch_start=1, batch_limit=64)
    c3d, bf16 = next(case for case in CASES if case.architecture == "c3d"), gpu_sections.MODES[1]
    cpu = torch.device("cpu")
    row = gpu_sections.bench_train(PLANNED, c3d, bf16, scale, cpu)  # probe: 1, 2, 4 fit, 8 runs out
    assert tried[:4] == [1, 2, 4, 8] and set(tried[4:]) == {4} and row.batch == 4 and row.rate > 0
    tried.clear()
    row = gpu_sections.bench_train(PLANNED, c3d, bf16, scale, cpu, batch=16)  # given: halved on OOM
    assert tried[:3] == [16, 8, 4] and row.batch == 4 and row.note == "OOM at batch 16; OOM at batch 8"


def test_rows_past_the_budget_are_skipped():
    rows = []
    returned = gpu_sections.measure_rows(SMOKE, torch.device("cpu"), parse=PLANNED, budget_s=0,
                                         emit=rows.append)
    assert returned == rows  # each row handed over as it is decided, in run order
    loader_rows = len(gpu_sections.LOADER_CASES) * len(gpu_sections.LOADER_DECODES)
    assert len(rows) == len(CASES) * len(gpu_sections.MODES) + loader_rows + 1
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
    monkeypatch.setattr(gpu_sections, "write_prepared_videos", lambda root, scale: [root])
    monkeypatch.setattr(gpu_sections, "bench_loader", broken_loader)
    monkeypatch.setattr(gpu_sections, "bench_raft", lambda scale, device, tmp: flow_row)
    rows = gpu_sections.measure_rows(SMOKE, torch.device("cpu"), parse=PLANNED, sections=("loader", "flow"),
                                     emit=lambda row: None)
    loader_rows = len(gpu_sections.LOADER_CASES) * len(gpu_sections.LOADER_DECODES)
    assert [r.note for r in rows[:-1]] == ["error: RuntimeError: no frames"] * loader_rows
    assert [r.decode for r in rows[:-1]] == list(gpu_sections.LOADER_DECODES) * len(gpu_sections.LOADER_CASES)
    assert all(r.failed for r in rows[:-1])
    assert rows[-1] == flow_row


@pytest.mark.parametrize("sections,total_s,fixed,expected", [
    (SECTION_NAMES, None, {}, {s.name: s.budget_s for s in gpu.SECTIONS}),  # the defaults
    (("train", "flow"), None, {}, {"train": 150.0, "flow": 30.0}),
    (("train", "flow"), 360.0, {}, {"train": 300.0, "flow": 60.0}),  # a total, split as the defaults are
    (("train", "flow"), 300.0, {"flow": 60.0}, {"train": 240.0, "flow": 60.0}),  # a fixed one first
    (("train",), None, {"flow": 5.0}, {"train": 150.0}),  # a section not run is ignored
])
def test_section_budgets(sections, total_s, fixed, expected):
    assert section_budgets(sections, total_s=total_s, fixed=fixed) == pytest.approx(expected)


def test_the_default_run_fits_in_8_minutes_with_room_to_start_and_kill():
    assert sum(section_budgets(SECTION_NAMES).values()) <= 450


def test_budget_arguments_are_checked():
    with pytest.raises(UserError, match="none is left for train"):
        section_budgets(("train", "flow"), total_s=50, fixed={"flow": 60.0})
    with pytest.raises(UserError, match="NAME=SECONDS"):
        gpu.parse_section_budgets(["train:20"])
    with pytest.raises(UserError, match="NAME is one of"):
        gpu.parse_section_budgets(["gpu=20"])
    assert gpu.parse_sections("flow, facts") == ("facts", "flow")  # always in run order


def test_channels_last_verdict_per_architecture():
    rate = {("TSN-R50", "bf16"): 1000.0, ("TSN-R50", "bf16+cl"): 1200.0, ("I3D rgb", "bf16"): 100.0,
            ("I3D rgb", "bf16+cl"): 70.0, ("I3D flow", "bf16"): 100.0, ("I3D flow", "bf16+cl"): 110.0,
            ("C3D", "bf16"): 100.0}  # C3D without its bf16+cl row: not measured
    rows = [BenchRow("train", what, "", mode, rate=value) for (what, mode), value in rate.items()]
    assert gpu_sections.channels_last_line(rows) == (
        "channels_last (bf16+cl vs bf16 clips/s, train rows): tsn yes (TSN-R50 +20%); "
        "i3d no (I3D rgb -30%, I3D flow +10%); c3d not measured; r2plus1d not measured")


def test_wheels_are_unpacked_onto_sys_path(tmp_path, monkeypatch):
    wheel = tmp_path / "actionlab_fake_wheel-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("actionlab_fake_wheel/__init__.py", "VERSION = '1.0'\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    site = gpu_sections.unpack_wheels([wheel])
    import actionlab_fake_wheel

    assert actionlab_fake_wheel.VERSION == "1.0" and Path(actionlab_fake_wheel.__file__).parent.parent == site
    monkeypatch.delitem(sys.modules, "actionlab_fake_wheel")


def test_without_pydantic_or_wheels_the_config_says_why_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydantic", None)
    with pytest.raises(SectionNotRun) as why:
        gpu_sections.experiment_parser(tmp_path)
    line = str(why.value)
    assert "\n" not in line and line.startswith("cannot run:") and str(tmp_path) in line
    assert "pip download" in line and gpu_sections.WHEELS_PACKAGES in line
    assert "--python-version {}.{} ".format(*sys.version_info[:2]) in line  # wheels for the python that runs it


def test_targets_are_reported_beside_the_rows_that_answer_them():
    rows = [
        BenchRow("train", "TSN-R50", "3x3x224x224", "fp32", rate=2000.0),  # fp32 does not count
        BenchRow("train", "TSN-R50", "3x3x224x224", "bf16", rate=900.0),
        BenchRow("train", "TSN-R50", "3x3x224x224", "bf16+cl", rate=1100.0),
        BenchRow("train", "I3D rgb", "3x64x224x224", "bf16", peak_share=0.35),
        BenchRow("loader", "TSN-R50", "3x3x224x224", "bf16+cl", decode="cpu", rate=800.0, wait_share=0.25, cores=15.0),
        BenchRow("loader", "TSN-R50", "3x3x224x224", "bf16+cl", decode="cuda", rate=1200.0, wait_share=0.04,
                 cores=3.2),
        BenchRow("loader", "I3D rgb", "3x64x224x224", "bf16+cl", decode="cpu", rate=60.0, wait_share=0.5),
        BenchRow("loader", "I3D rgb", "3x64x224x224", "bf16+cl", decode="cuda", note="skipped (time budget)"),
    ]
    lines = gpu_sections.target_lines(rows)
    assert lines == [
        "TSN-R50 bf16 loop step >= 1000 clips/s: 1100 (TSN-R50 bf16+cl, met)",
        "I3D >= 40% of bf16 peak: 35% (I3D rgb bf16, missed)",
        "TSN-R50 end to end from frames, GPU decode, <= 8 loader workers, >= 1000 clips/s: 1200 (TSN-R50 bf16+cl "
        "decode cuda, met)",
        "data wait <= 10%: 25% (TSN-R50 bf16+cl decode cpu, missed)",
        "data wait <= 10%: 4% (TSN-R50 bf16+cl decode cuda, met)",
        "data wait <= 10%: 50% (I3D rgb bf16+cl decode cpu, missed)",
        "RAFT-small >= 100 pairs/s: not measured",
    ]
    assert gpu_sections.loader_decode_line(rows) == (
        "loader, decode cpu -> cuda: TSN-R50 800 clips/s, wait 25%, 15.0 cores -> 1200 clips/s, wait 4%, 3.2 cores; "
        "I3D rgb 60 clips/s, wait 50%, - cores -> not measured")


def test_actionlab_bench_gpu_command(capsys):
    from orchestrator.cli import main

    assert main(["bench", "gpu", "--smoke", "--only", "flow"]) == 0
    out = capsys.readouterr().out
    assert "==== flow" in out and "RAFT-small" in out and "pairs/s" in out and "error" not in out
    assert "flow    done" in out
    assert main(["bench", "gpu", "--only", "nothing"]) == 2
    assert "--only 'nothing'" in capsys.readouterr().err
