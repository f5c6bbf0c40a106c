"""The `actionlab` command line as a user meets it: help, synth + check, clean errors, and light
commands that import no torch."""
import subprocess
import sys

import pytest

from orchestrator.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS) and "95% CI" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: actionlab " + command in capsys.readouterr().out


def test_synth_then_check_reports_each_bad_video(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--groups", "3", "--clips-per-group", "1"]) == 0
    assert "appearance_only 50%" in capsys.readouterr().out
    args = ["data", "check", "--dataset", "ucf101", "--root", str(out / "UCF101"),
            "--annotations", str(out / "ucfTrainTestlist"), "--subset", "train"]
    assert main(args) == 0
    assert "no problems found" in capsys.readouterr().out

    videos = sorted(v for v in (out / "UCF101").rglob("*.avi") if "_g01_" not in v.name)  # split 1 trains on g02-g03
    videos[0].write_bytes(b"")  # zero-byte
    videos[1].write_text("not a video")  # a text file named like a video
    assert main(args) == 1
    report = capsys.readouterr().out
    for bad in videos[:2]:
        assert str(bad) in report


def test_user_errors_exit_2_with_the_field_and_no_traceback(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("model: {modalty: rgb}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.modalty: unknown key; did you mean 'modality'?" in err
    assert "Traceback" not in err
    assert main(["data", "synth", "--out", str(tmp_path), "--appearances", "Mauve"]) == 2
    assert "unknown name 'Mauve'" in capsys.readouterr().err


def test_flow_command_covers_every_subset_and_then_costs_nothing(tmp_path, capsys):
    out = tmp_path / "synth"
    main(["data", "synth", "--out", str(out), "--groups", "3", "--clips-per-group", "1"])
    args = ["flow", "--dataset", "ucf101", "--root", str(out / "UCF101"), "--annotations",
            str(out / "ucfTrainTestlist"), "--flow-dir", str(tmp_path / "flow"), "--no-ray"]
    capsys.readouterr()
    assert main(args) == 0
    assert "12 computed, 0 cached, 0 failed" in capsys.readouterr().out  # train and test videos
    assert len(list((tmp_path / "flow").rglob("x_00001.jpg"))) == 12  # one folder of field JPEGs per video
    assert main(args) == 0
    assert "0 computed, 12 cached" in capsys.readouterr().out


# `actionlab ARGS` in a fresh interpreter, failing if anything it ran imported torch (seconds of import)
WITHOUT_TORCH = ("import sys; from orchestrator.cli import main; code = main(sys.argv[1:]); "
                 "assert 'torch' not in sys.modules, 'actionlab ' + ' '.join(sys.argv[1:]) + ' imported torch'; "
                 "sys.exit(code)")


def run_without_torch(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_schema_and_report_import_no_torch(tmp_path):
    """The schema and a study's report (YAML parsed, MLflow read, table and plot written) need no model."""
    import mlflow

    from orchestrator import tracking
    from orchestrator.config import resolve_tracking_uri

    schema = run_without_torch("schema", cwd=tmp_path)
    assert schema.returncode == 0, schema.stderr
    assert '"title": "actionlab experiment"' in schema.stdout

    uri = resolve_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient(uri)
    study = tracking.start_run(tracking_uri=uri, experiment="abl", run_name="study",
                               tags={"actionlab.kind": "study", "actionlab.study": "abl"})
    for variant, top1 in [("rgb", 0.5), ("flow", 0.7)]:
        tags = {"actionlab.kind": "variant", "actionlab.study": "abl", "actionlab.variant": variant,
                "actionlab.dataset": "ucf101", "actionlab.seed": "0", "actionlab.selection": "val"}
        run_id = tracking.start_run(tracking_uri=uri, experiment="abl", run_name=variant, tags=tags,
                                    parent_run_id=study)
        client.log_metric(run_id, "test/video_top1", top1)
        client.set_terminated(run_id)
    (tmp_path / "abl.yaml").write_text(
        f"name: abl\ntracking: {{tracking_uri: '{uri}'}}\n"
        "study: {variants: {rgb: {}, flow: {model.modality: flow}}, compare: [[flow, rgb]]}\n")
    report = run_without_torch("report", "abl.yaml", "--out", "out", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "| flow | 70.0 |" in report.stdout and (tmp_path / "out" / "comparison.png").is_file()
