"""The `actionlab` command line as a user meets it: help, synth + check, and clean errors."""
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
