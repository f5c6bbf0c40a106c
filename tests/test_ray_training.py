"""Ray Train / Tune end to end on tiny data: few tests, one shared Ray session (start-up is slow)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from ray_fixtures import tiny_experiment, write_tiny_benchmark

pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_benchmark(tmp_path_factory.mktemp("bench"))


def kill_workers_after_first_report(tracking_uri: str, experiment: str, killed: list,
                                   timeout_s: float = 240) -> threading.Thread:
    """Once the controller has logged the first epoch to MLflow (so its checkpoint is registered),
    SIGKILL the Ray Train workers of this test's run: the whole worker group dies mid-run. The pids
    are those Ray's state API reports for this driver's job in this test's Ray cluster, so another
    job's workers on the same machine are never touched."""
    import ray
    from ray.util.state import list_actors

    # this test's cluster and job: with no address the state API looks for a cluster and refuses when
    # the machine runs two
    context = ray.get_runtime_context()
    address, job_id = context.gcs_address, context.get_job_id()

    def first_epoch_logged() -> bool:
        client = mlflow.MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return any(client.get_metric_history(r.info.run_id, "train/loss") for r in runs)

    def watch():
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                ready = first_epoch_logged()
            except Exception:  # the store is being created or is busy: look again
                ready = False
            if ready:
                workers = list_actors(address=address, filters=[("class_name", "=", "RayTrainWorker"),
                                                                ("state", "=", "ALIVE"), ("job_id", "=", job_id)])
                for actor in workers:
                    os.kill(actor.pid, signal.SIGKILL)
                    killed.append(actor.pid)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_two_worker_run_resumes_after_worker_group_is_killed(ray_session, tiny_data, tmp_path):
    from orchestrator.training.driver import train_run

    cfg = tiny_experiment(tiny_data, tmp_path, optim={"epochs": 8}, scaling={"num_workers": 2, "max_failures": 2})
    killed: list[int] = []
    watcher = kill_workers_after_first_report(cfg.tracking.tracking_uri, cfg.experiment_name, killed)
    outcome = train_run(cfg)
    watcher.join(timeout=1)

    assert len(killed) == 2, "both workers of the group were running when the first checkpoint landed"
    history = outcome.metrics
    assert history["epoch"] == 7
    assert history["resumed_from_step"] >= 1, "the restarted group continued from a checkpoint, not from scratch"
    assert history["scaling/num_workers"] == 2
    run = mlflow.MlflowClient(cfg.tracking.tracking_uri).get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    logged_epochs = [m.step for m in mlflow.MlflowClient(cfg.tracking.tracking_uri).get_metric_history(
        outcome.run_id, "train/loss")]
    assert set(logged_epochs) == set(range(8)), "every epoch logged, before and after the restart"
    # results as files the run owns; the checkpoints hold only the resume state
    assert sorted(p.name for p in outcome.output_dir.iterdir()) == ["history.json", "model.pt", "scores.npz",
                                                                     "val_scores.npz"]
    checkpoints = [c for c in Path(cfg.scaling.storage_path).glob("*/checkpoint_*") if c.is_dir()]
    assert checkpoints and all("state.pt" in {p.name for p in c.iterdir()} for c in checkpoints)
    assert not any((c / name).exists() for c in checkpoints for name in ("model.pt", "scores.npz"))


def test_sweep_logs_one_nested_child_run_per_trial(ray_session, tiny_data, tmp_path, capfd):
    from orchestrator.progress import console
    from orchestrator.report import results_from_mlflow
    from orchestrator.plan import plan
    from orchestrator.study import run_sweep

    cfg = tiny_experiment(tiny_data, tmp_path, sweep={"parameters": {"model.options.consensus": {"grid": ["avg", "max"]}}})
    capfd.readouterr()
    with console(cfg.scaling.storage_path, "sweep"):  # as `actionlab sweep` runs it
        results, outcomes = run_sweep(plan(cfg))
    assert len(results) == 2 and not results.errors
    assert sorted((o.label, o.status) for o in outcomes) == [("consensus=avg", "finished"), ("consensus=max", "finished")]

    # the screen: the log's path, then rows named by the trials' values; Tune's table is in the log
    screen = capfd.readouterr().out.splitlines()
    log = next((tmp_path / "runs" / "logs").glob("sweep-*.log"))
    assert screen[0].startswith(f"log: {log}") and screen[1].split()[:3] == ["run", "status", "epoch"]
    assert {line.split()[0] for line in screen[2:]} == {"consensus=avg", "consensus=max"}
    assert sorted(line.split()[0] for line in screen if line.split()[1] == "done") == ["consensus=avg", "consensus=max"]
    assert "Trial status" in log.read_text() and "Trial status" not in "\n".join(screen)

    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags["actionlab.kind"] == "sweep"]
    children = [r for r in runs if r.data.tags["actionlab.kind"] == "trial"]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["model.options.consensus"] for r in children) == ["avg", "max"]
    dataset = children[0].data.tags["actionlab.dataset"]
    assert sorted(r.info.run_name for r in children) == [f"consensus={c} / {dataset} / seed0" for c in ("avg", "max")]
    description = parents[0].data.tags["mlflow.note.content"]  # the table, on the sweep's page in the UI
    assert "| consensus=avg |" in description and "| consensus=max |" in description

    # `actionlab report` rebuilds exactly what was logged
    rows = results_from_mlflow(cfg.tracking.tracking_uri, cfg.experiment_name)
    logged = {r.info.run_id: r.data.metrics["test/video_top1"] for r in children}
    assert {row.run_id: row.top1 for row in rows} == logged


def test_asha_sweep_leaves_no_run_running(ray_session, tiny_data, tmp_path):
    """ASHA stops trials mid-run; their MLflow runs must still end, KILLED with the reason, and the
    Ray Train workers they held must be freed for the next trials (else the sweep hangs)."""
    from orchestrator.plan import plan
    from orchestrator.study import run_sweep
    from orchestrator.training.tune import STOPPED_EARLY

    epochs = 4  # ASHA rungs at epochs 1 and 2: a trial stopped at the first has 2 epochs left to skip
    # val: null, so that the trials' val scores (the test list's 8 videos, after training on 16) tell lr 0.05
    # from 1e-5 at the first rung; the 8-video val list of 8 training videos often ties them
    cfg = tiny_experiment(tiny_data, tmp_path, optim={"epochs": epochs}, data={"val": None}, sweep={
        "parameters": {"optim.lr": {"grid": [0.05, 1e-5, 2e-5, 3e-5]}}, "scheduler": "asha",
        "max_concurrent_trials": 1})
    results, outcomes = run_sweep(plan(cfg))
    assert len(results) == 4 and not results.errors
    assert min(r.metrics["epoch"] for r in results) < epochs - 1, "ASHA stopped at least one trial early"

    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment_name).experiment_id])
    trials = [r for r in runs if r.data.tags["actionlab.kind"] == "trial"]
    not_ended = {r.info.run_name: (r.info.status, r.data.tags.get("actionlab.error")) for r in runs
                 if r.info.status not in ("FINISHED", "KILLED")}
    assert len(trials) == 4 and not not_ended
    for run in trials:
        epochs_logged = len(client.get_metric_history(run.info.run_id, "train/loss"))
        if run.info.status == "KILLED":
            assert run.data.tags["actionlab.killed_reason"] == STOPPED_EARLY and epochs_logged < epochs
        else:
            assert epochs_logged == epochs and "test/video_top1" in run.data.metrics
    assert "KILLED" in {r.info.status for r in trials}
    # the sweep read each stop from the scheduler, not from a missing key
    stopped = [o for o in outcomes if o.status == "stopped early"]
    assert len(stopped) == sum(r.info.status == "KILLED" for r in trials)
    assert {o.status for o in outcomes} <= {"finished", "stopped early"}
    assert all(o.reason == STOPPED_EARLY for o in stopped)


def test_asha_refuses_a_cluster_without_the_state_api(monkeypatch):
    """Without the state API, ASHA-stopped trials would keep their workers' CPUs: a clear error instead."""
    import ray.util.state
    from ray.util.state.exception import ServerUnavailable

    from orchestrator.errors import UserError
    from orchestrator.training.tune import require_state_api

    def unavailable(**kwargs):
        raise ServerUnavailable("no dashboard")

    monkeypatch.setattr(ray.util.state, "list_actors", unavailable)
    with pytest.raises(UserError, match=r"sweep.scheduler 'asha'.*dashboard.*'fifo'"):
        require_state_api("x.yaml: sweep.scheduler 'asha'")


@pytest.fixture(scope="module")
def tiny_study(ray_session, tiny_data, tmp_path_factory):
    """One study (rgb, flow, rgb fine-tuned from rgb, their late fusion), shared by the study test and
    the UI test. Returns (cfg, run_study's outcome, the folder holding its store and report)."""
    from orchestrator.plan import plan
    from orchestrator.study import run_study

    tmp_path = tmp_path_factory.mktemp("study")
    cfg = tiny_experiment(tiny_data, tmp_path, study={
        "variants": {"rgb": {"model.modality": "rgb"}, "flow": {"model.modality": "flow", "data.frames_per_segment": 2},
                     "rgb_pretrained": {"model.modality": "rgb", "model.init_checkpoint": "variant:rgb"}},
        "late_fusion": {"two_stream": {"streams": ["rgb", "flow"], "weight": "auto"}},
        "compare": [["two_stream", "rgb"], ["rgb_pretrained", "rgb"]]})
    return cfg, run_study(plan(cfg), out_dir=tmp_path / "report"), tmp_path


def test_study_trains_variants_then_fuses_their_scores_offline(tiny_study):
    from orchestrator.late_fusion import fuse_scores
    from orchestrator.runs import load_scores
    from orchestrator.data.annotations import read_run_splits
    from orchestrator.metrics import topk_accuracy

    cfg, outcome, tmp_path = tiny_study
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment_name).experiment_id])
    children = {r.data.tags["actionlab.variant"]: r for r in runs if r.data.tags["actionlab.kind"] == "variant"}
    assert sorted(children) == ["flow", "rgb", "rgb_pretrained", "two_stream"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {outcome["parent_run_id"]}
    assert children["two_stream"].data.tags["actionlab.modality"] == "rgb+flow"
    # the fine-tuned variant ran after its source and started from the source run's final weights
    fine_tuned = children["rgb_pretrained"]
    assert fine_tuned.data.tags["actionlab.pretrained"] == "checkpoint"
    assert fine_tuned.data.params["model.init_checkpoint"] == f"mlflow:{children['rgb'].info.run_id}"
    assert fine_tuned.info.start_time > children["rgb"].info.end_time

    # the fusion rule was chosen on the streams' val scores, never below the better stream there, and the
    # fused run's test accuracy is exactly that rule applied to the two streams' logged test scores
    fusion = children["two_stream"].data
    assert fusion.tags["actionlab.fusion_chosen_on"] == "val" and fusion.params["weight_setting"] == "auto"
    val = [load_scores(client.download_artifacts(children[v].info.run_id, "val_scores.npz")) for v in ("rgb", "flow")]
    stream_val = [topk_accuracy(v.labels, v.scores, 1) for v in val]
    assert fusion.metrics["val/video_top1"] >= max(stream_val)
    assert [fusion.metrics[f"val/stream_{k}_video_top1"] for k in "ab"] == pytest.approx(stream_val)
    scores = [load_scores(client.download_artifacts(children[v].info.run_id, "scores.npz")) for v in ("rgb", "flow")]
    assert scores[0].class_names == scores[1].class_names and len(scores[0].class_names) == 4
    assert not set(val[0].video_ids) & set(scores[0].video_ids)  # selected on val, scored on test
    fused = fuse_scores(*scores, weight=float(fusion.params["weight"]), mode=fusion.params["mode"])
    expected = topk_accuracy(fused.labels, fused.scores, 1)
    assert fusion.metrics["test/video_top1"] == pytest.approx(expected)
    assert all(r.data.tags["actionlab.selection"] == "val" for r in children.values())
    assert {o.label: o.status for o in outcome["outcomes"]} == {
        "rgb/seed0": "finished", "flow/seed0": "finished", "rgb_pretrained/seed0": "finished"}
    table = outcome["markdown"]
    assert all(f"| {v} |" in table for v in ("rgb", "flow", "two_stream", "rgb_pretrained"))
    # the fused run keeps its per-video scores too, so study.compare pairs it with a stream video by video
    assert load_scores(client.download_artifacts(children["two_stream"].info.run_id, "scores.npz")).scores.shape == \
        fused.scores.shape
    assert "### Comparisons" in table and "- two_stream − rgb: " in table and "- rgb_pretrained − rgb: " in table
    assert (tmp_path / "report" / "comparison.png").stat().st_size > 0

    # what the UI shows: names, the table on the parent, data sets, source, system metrics
    dataset = children["rgb"].data.tags["actionlab.dataset"]
    assert {r.info.run_name for r in children.values()} == {f"{v} / {dataset} / seed0" for v in children}
    parent = client.get_run(outcome["parent_run_id"])
    assert parent.data.tags["mlflow.note.content"] == table
    # each comparison is a metric of the parent run too, as the table reports it
    line = next(line for line in table.splitlines() if line.startswith("- two_stream − rgb: "))
    assert f"{parent.data.metrics['compare/two_stream-rgb/diff']:+.1f} points" in line
    assert client.get_experiment_by_name(cfg.experiment_name).tags["mlflow.experimentKind"] == "custom_model_development"
    inputs = {r.data.tags["actionlab.variant"]: [(d.dataset.name, d.dataset.digest, json.loads(d.dataset.profile),
                                                 {t.key: t.value for t in d.tags}["mlflow.data.context"])
                                                for d in r.inputs.dataset_inputs] for r in children.values()}
    name = f"{dataset} split 1"
    (_, train_digest, train_profile, _), (_, val_digest, val_profile, _), (_, test_digest, test_profile, _) = \
        inputs["rgb"]
    assert [(n, c) for n, _, _, c in inputs["rgb"]] == [(name, "train"), (name, "validation"), (name, "test")]
    lists = read_run_splits("ucf101", root=cfg.data.root, annotations=cfg.data.annotations, val=cfg.data.val)
    assert [train_profile, val_profile, test_profile] == [{"num_videos": len(part.records), "num_classes": 4}
                                                          for part in lists]
    assert len({train_digest, val_digest, test_digest}) == 3 and inputs["flow"] == inputs["rgb"]
    assert inputs["two_stream"] == [(name, test_digest, test_profile, "test")]  # scored on the test list only
    for run in [parent, *children.values()]:
        assert run.data.tags["mlflow.source.type"] == "JOB"
        assert run.data.tags["mlflow.source.name"] == parent.data.tags["mlflow.source.name"]  # the driver's command
    trained = [r for v, r in children.items() if v != "two_stream"]
    assert all("system/cpu_utilization_percentage" in r.data.metrics for r in trained)
    assert all("system/system_memory_usage_megabytes" in r.data.metrics for r in trained)


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


@pytest.fixture
def chromium(tmp_path):
    """Headless Debian chromium driven by Playwright (no browser of Playwright's own), a fresh profile."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(tmp_path / "profile", executable_path=executable, headless=True,
                                                       args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 900})
        yield browser
        browser.close()


def start_actionlab_ui(tracking_uri: str, experiment: str, log: Path, timeout_s: float = 120,
                       ) -> tuple[subprocess.Popen, str]:
    """`actionlab ui` on a free port, in its own process group, its output in `log`; returns it and
    the link it printed for `experiment`, once the UI answers."""
    from orchestrator.server import wait_ready

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--tracking-uri", tracking_uri,
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    prefix, deadline = f"  {experiment}: ", time.monotonic() + timeout_s
    while not (links := [ln[len(prefix):] for ln in log.read_text().splitlines() if ln.startswith(prefix)]):
        assert proc.poll() is None and time.monotonic() < deadline, f"no link printed:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    assert wait_ready(f"http://127.0.0.1:{port}", proc), f"the UI did not come up:\n{log.read_text()[-3000:]}"
    return proc, links[0]


def test_ui_link_shows_the_study_nested_with_its_table(tiny_study, chromium, tmp_path):
    """The link `actionlab ui` prints opens the runs in the Model-training view: the study's parent
    run, which expands to its children, and whose page shows the comparison table."""
    from playwright.sync_api import expect

    cfg, outcome, _ = tiny_study
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    experiment_id = client.get_experiment_by_name(cfg.experiment_name).experiment_id
    parent = client.get_run(outcome["parent_run_id"]).info.run_name
    children = [r.info.run_name for r in client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{outcome['parent_run_id']}'")]
    proc, link = start_actionlab_ui(cfg.tracking.tracking_uri, cfg.experiment_name, tmp_path / "ui.log")
    try:
        assert link.endswith(f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
        page = chromium.new_page()
        page.goto(link)
        parent_row = page.get_by_role("row").filter(has_text=parent)
        expect(parent_row).to_be_visible(timeout=60_000)
        page.screenshot(path=tmp_path / "1_runs.png")
        for name in children:  # nested: hidden until the parent is expanded
            expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
        parent_row.locator("button[data-component-id*=runnamecellrenderer]").click()  # the (+) beside the name
        for name in children:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        page.screenshot(path=tmp_path / "2_expanded.png")

        page.get_by_role("link", name=parent, exact=True).click()
        expect(page.get_by_role("heading", name=cfg.description or cfg.name, exact=True)).to_be_visible()
        table = page.locator("table")  # the description's Markdown, rendered (MLflow's own tables are divs)
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in outcome["markdown"].splitlines()
                if line.startswith("| ") and not line.startswith("| Variant")]
        assert sorted(r[0] for r in rows) == ["flow", "rgb", "rgb_pretrained", "two_stream"]
        for cells in rows:  # every row of the study's table, cell by cell
            row = table.get_by_role("row").filter(has=page.get_by_role("cell", name=cells[0], exact=True))
            expect(row.get_by_role("cell")).to_have_text(cells)
        if (show_more := page.get_by_text("Show more", exact=True)).count():  # a long description is folded
            show_more.first.click()
        page.get_by_text("Description", exact=True).scroll_into_view_if_needed()  # it scrolls in its own panel
        page.screenshot(path=tmp_path / "3_parent.png")
    finally:
        proc.send_signal(signal.SIGTERM)  # `actionlab ui` stops its server's process group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ray_data_loader_yields_the_dataloaders_batches(ray_session, tiny_data, tmp_path):
    """Same (seed, epoch, index) keys, same batches, in the same order, from a mid-epoch resume point
    too (at another world size: each remaining clip once); a bad video skipped and counted."""
    import torch
    from torch.utils.data import DataLoader

    from orchestrator.data.annotations import VideoRecord, read_split
    from orchestrator.data.dataset import collate_skip_bad
    from orchestrator.data.ray_loader import RayDataLoader
    from orchestrator.training.elastic import EpochBatches, epoch_order, step_batch
    from orchestrator.data.dataset import build_dataset

    cfg = tiny_experiment(tiny_data, tmp_path, model={"architecture": "two_stream", "modality": "rgb+flow"})
    records = read_split("ucf101", root=cfg.data.root, annotations=cfg.data.annotations, subset="train").records
    dataset = build_dataset(cfg, [*records[:11], VideoRecord(tmp_path / "gone.avi", 0, "gone")], train=True)
    order = epoch_order(12, seed=0, epoch=3).tolist()
    # one step of 4 clips written for 4 workers of 1 clip, trained at 2 ranks; the rest at 3 ranks: shares
    # of 2, 1 and 1 clips in 2 micro-batches each (one of them empty)
    trained_before = order[:4]
    got_all = []
    for rank in range(3):
        batches = EpochBatches(12, seed=0, sb=step_batch(batch_size=1, max_workers=4, world=3,
                                                         on_resize="keep_global_batch"), rank=rank)
        batches.set_epoch(3, start=4)
        expected = list(DataLoader(dataset, batch_sampler=batches, collate_fn=collate_skip_bad))
        loader = RayDataLoader(dataset, batches)
        got = list(loader)
        assert len(got) == len(expected) == len(loader) == 2 * 2  # 2 steps of 2 micro-batches
        for a, b in zip(expected, got):
            assert a["num_skipped"] == b["num_skipped"]
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["label"], b["label"])
            assert a["inputs"].keys() == b["inputs"].keys()  # none for an empty micro-batch
            assert all(torch.equal(a["inputs"][m], b["inputs"][m]) for m in a["inputs"])
        assert loader.decoded == 4 and loader.decoded_here == 4  # one node here
        got_all += got
    trained = trained_before + [i for b in got_all for i in b["index"].tolist()]
    skipped = sum(b["num_skipped"] for b in got_all)
    assert skipped == (11 not in trained_before)  # the missing video, skipped and counted where it fell
    assert sorted(trained + [11] * skipped) == list(range(12)), "each clip of the epoch once"


def test_bench_input_measures_every_source_and_loader(ray_session):
    from orchestrator.bench.cpu import (BYTES_ONLY, DECODER_COLUMNS, FLOW_SAMPLER, INPUT_SAMPLERS, PILLOW,
                                        TORCHCODEC_DEVICE, VIDEO_SOURCES, bench_input)
    from orchestrator.data.decoders import DECODERS, torchcodec_problem

    lines = []
    figures = bench_input(videos=1, num_frames=70, clips=2, rounds=1, workers=1, out=lines.append)
    others = [d for d in DECODERS if d != "decord" and (d != "torchcodec" or torchcodec_problem() is None)]
    assert set(figures["per_core"]) == ({(s, "decord", n) for s in VIDEO_SOURCES for n in INPUT_SAMPLERS}
                                        | {(s, d, n) for s in VIDEO_SOURCES for d in others for n in DECODER_COLUMNS}
                                        | {(s, TORCHCODEC_DEVICE, n) for s in VIDEO_SOURCES for n in DECODER_COLUMNS
                                           if "torchcodec" in others}
                                        | {("prepared frames", r, n) for r in (PILLOW, BYTES_ONLY)
                                           for n in INPUT_SAMPLERS}
                                        | {("flow jpg", PILLOW, FLOW_SAMPLER[0])})
    assert all(rate > 0 for rate in figures["per_core"].values())
    assert set(figures["torchcodec/decord"]) == ({(s, n) for s in VIDEO_SOURCES for n in DECODER_COLUMNS}
                                                 if "torchcodec" in others else set())
    cpu_ms = figures["frames_cpu_ms"]
    assert all(cpu_ms[(BYTES_ONLY, n)] < cpu_ms[(PILLOW, n)] for n in INPUT_SAMPLERS)  # no pixels decoded
    assert set(figures["dataloader"]) == {0, 1} and figures["ray_data"] > 0
    assert any("needs" in line and "prepared h264" in line for line in lines)


def test_two_node_cluster_places_one_worker_per_node(tiny_data, tmp_path):
    """A real two-node Ray cluster (ray.cluster_utils.Cluster, 1 CPU each) in a fresh process; then
    a third, CPU-only node decodes for a ray_data run whose worker holds the head's only CPU."""
    script = Path(__file__).with_name("multinode_run.py")
    proc = subprocess.run([sys.executable, str(script), str(tiny_data), str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "num_nodes=2" in proc.stdout
    assert "ray_data: decoded_on_training_node_share=0.0 skipped=0 finished" in proc.stdout
    assert any((tmp_path / "runs").glob("*/checkpoint_*")), "checkpoints landed in the shared storage path"


def test_an_elastic_run_survives_a_node_loss_a_return_and_a_preemption(tiny_data, tmp_path):
    """`num_workers: [1, 2]` on two one-CPU nodes (tests/elastic_run.py, its own process): a node
    removed without notice, the run goes on at 1 worker; a node added, it grows back to 2; a node
    drained as a spot reclaim, the workers checkpoint on the notice and lose no step. One MLflow run
    throughout, FINISHED, every epoch logged once; the preemption counted apart from max_failures
    (max_failures 1 is spent on the first loss)."""
    script = Path(__file__).with_name("elastic_run.py")
    epochs = 30
    proc = subprocess.run([sys.executable, str(script), str(tiny_data), str(tmp_path), str(epochs)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = dict(line.removeprefix("elastic: ").split("=", 1) for line in proc.stdout.splitlines()
               if line.startswith("elastic: "))
    print("\n".join(f"{k}={v}" for k, v in out.items()))  # the figures, in the test log
    assert out["status"] == "FINISHED"
    assert json.loads(out["epochs_logged"]) == list(range(epochs)), "every epoch logged once"
    assert out["lost_steps_with_notice"] == "0"
    curve = [world for _, world in json.loads(out["world_size_curve"])]
    changes = [w for i, w in enumerate(curve) if i == 0 or w != curve[i - 1]]
    assert changes == [2, 1, 2, 1], curve
    steps = [step for step, _ in json.loads(out["world_size_curve"])]
    assert steps == sorted(set(steps)), "no step logged twice"
