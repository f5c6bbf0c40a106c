"""`actionlab bench gpu`: its import closure, its smoke run on CPU, and the pieces that make it
correct on a GPU without one (batch probe, budget, guarded rows, shapes and FLOPs from the contracts)."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from orchestrator import bench_gpu
from orchestrator.bench_gpu import CASES, FULL, SMOKE, BenchRow, case_spec, probe_batch, train_flops_per_clip
from orchestrator.model_summary import summarize

REPO = Path(__file__).resolve().parents[1]
# Absent on the bare GPU machine the bench is for
BLOCKED = ("ray", "mlflow", "pydantic", "tqdm", "av", "decord")

# Each blocked name is None in sys.modules: `import ray` raises ModuleNotFoundError and
# importlib.util.find_spec("ray") returns None, as when it is not installed (a meta-path finder that
# raises would also break libraries that merely look for optional packages, e.g. torch._dynamo).
BLOCKING_RUN = f"""
import runpy, sys

sys.modules.update(dict.fromkeys({BLOCKED!r}))
sys.argv = ["bench_gpu", "--smoke"]
runpy.run_module("orchestrator.bench_gpu", run_name="__main__", alter_sys=True)
"""


def test_smoke_run_imports_no_ray_mlflow_pydantic_and_prints_one_table():
    result = subprocess.run([sys.executable, "-c", BLOCKING_RUN], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    assert table.startswith("actionlab bench gpu (smoke)")
    assert "error" not in table, table
    for case in CASES:
        assert case.label in table
    rows = [line for line in table.splitlines() if line.startswith(("train ", "loader ", "flow "))]
    assert len(rows) == len(CASES) * len(bench_gpu.MODES) + len(bench_gpu.LOADER_CASES) + 1
    assert sum("clips/s" in r for r in rows) == len(CASES) * 3 + len(bench_gpu.LOADER_CASES)  # compile: skipped
    assert all("%" in r for r in rows if r.startswith("loader"))  # data-wait share
    assert "pairs/s" in rows[-1] and "random init" in rows[-1]


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
    c3d, bf16 = CASES[-1], bench_gpu.MODES[1]
    row = bench_gpu.bench_train(c3d, bf16, scale, torch.device("cpu"))  # probe: 1, 2, 4 fit, 8 runs out
    assert tried[:4] == [1, 2, 4, 8] and set(tried[4:]) == {4} and row.batch == 4 and row.rate > 0
    tried.clear()
    row = bench_gpu.bench_train(c3d, bf16, scale, torch.device("cpu"), batch=16)  # given: halved on OOM
    assert tried[:3] == [16, 8, 4] and row.batch == 4 and row.note == "OOM at batch 16; OOM at batch 8"


def test_rows_past_the_budget_are_skipped():
    rows = bench_gpu.run(SMOKE, torch.device("cpu"), budget_s=0, log=lambda line: None)
    assert len(rows) == len(CASES) * len(bench_gpu.MODES) + len(bench_gpu.LOADER_CASES) + 1
    compile_rows = [r for r in rows if r.mode == "bf16+cl+compile"]
    assert all("compile is timed on CUDA only" in r.note for r in compile_rows)
    assert all(r.note == "skipped (time budget)" and r.rate is None for r in rows if r not in compile_rows)
    assert rows[0].inputs == "3x3x32x32"  # a skipped row still says what it would have measured
    table = bench_gpu.format_table(rows, machine="test", wall_s=0, scale=SMOKE)
    assert table.count("skipped (time budget)") == len(rows) - len(compile_rows)


def test_a_failing_row_is_reported_and_the_rest_go_on(monkeypatch):
    def broken_loader(*args, **kwargs):
        raise RuntimeError("no frames\nsecond line")

    flow_row = BenchRow("flow", "RAFT-small", "2 x 3x8x8", "fp32", batch=8, rate=123.0, unit="pairs/s")
    monkeypatch.setattr(bench_gpu, "write_prepared_videos", lambda root, scale: [root])
    monkeypatch.setattr(bench_gpu, "bench_loader", broken_loader)
    monkeypatch.setattr(bench_gpu, "bench_raft", lambda scale, device, tmp: flow_row)
    rows = bench_gpu.run(SMOKE, torch.device("cpu"), sections=("loader", "flow"), log=lambda line: None)
    assert [r.note for r in rows[:-1]] == ["error: RuntimeError: no frames"] * len(bench_gpu.LOADER_CASES)
    assert rows[-1] == flow_row


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
    assert "RAFT-small" in out and "pairs/s" in out and "error" not in out
    assert main(["bench", "gpu", "--only", "nothing"]) == 2
    assert "--only 'nothing'" in capsys.readouterr().err
