"""Hostile and mistaken input, through the real CLI: each case is one line on stderr naming the file,
the dotted field and the fix, exit status 2; never a traceback, a hang or a value taken silently.
Passwords in a tracking URI never reach the tracking store."""
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator import preflight as preflight_module
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.plan import plan

# A password with every character that cuts a URI short: `/` (path), `@` (host), `:` (port).
PASSWORD = "p/ss@w:rd"
URI = f"http://admin:{PASSWORD}@head:5000"


@pytest.fixture
def no_launch(monkeypatch):
    """`actionlab train` stops where it would check the world and launch: what got past parsing says so."""
    def stop(cfg):
        raise UserError(f"accepted: {cfg.source}")

    monkeypatch.setattr(preflight_module, "preflight", stop)


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; asserts exit status 2 and exactly one line on stderr, and returns it."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err[:2000]
    return err.strip()


def nested_anchors(levels: int) -> str:
    """A few hundred bytes of YAML whose anchors expand to 9**levels strings (the issue's had 9 levels)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghij"
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 9) + "]")
    return "\n".join(lines) + f"\nname: *{names[levels - 1]}\n"


# id, experiment file, extra argv, what the line says (besides the file's name)
CASES = [
    # item 10: tracebacks
    ("set-unclosed-list", "{}\n", ["--set", "optim.lr=[1,"],
     ["--set optim.lr: column 4: not valid YAML", "give a YAML value"]),
    ("set-unclosed-mapping", "{}\n", ["--set", "model.options={consensus: avg"],
     ["--set model.options: column", "not valid YAML", "give a YAML value"]),
    ("set-no-field", "{}\n", ["--set", "=3"], ["--set '=3': expected FIELD=VALUE with a dotted FIELD"]),
    ("width-inf", "model: {width: .inf}\n", [], ["model.width: must be a finite number, got inf"]),
    ("file-syntax", "optim: {lr: 0.1\nmodel: {}\n", [], ["line 2, column", "not valid YAML", "fix the syntax"]),
    ("nested-too-deep", "a: " + "[" * 3000 + "]" * 3000 + "\n", [], ["nested too deeply"]),
    # item 11: accepted, then failing later or silently wrong
    ("lr-inf", "optim: {lr: .inf}\n", [], ["optim.lr: must be a finite number, got inf"]),
    ("lr-nan", "optim: {lr: .nan}\n", [], ["optim.lr: must be a finite number, got nan"]),
    ("momentum-inf", "optim: {momentum: .inf}\n", [], ["optim.momentum: must be a finite number, got inf"]),
    ("set-momentum-inf", "{}\n", ["--set", "optim.momentum=.inf"], ["optim.momentum: must be a finite number"]),
    ("flow-bound-inf", "data: {flow_bound: .inf}\n", [], ["data.flow_bound: must be a finite number, got inf"]),
    ("decode-timeout-overflows", "data: {decode_timeout_s: 2.2e+6}\n", [], ["data.decode_timeout_s: must be <= 3600"]),
    ("epochs-huge", "optim: {epochs: 1.0e+15}\n", [], ["optim.epochs: must be <= 10000"]),
    ("epochs-1e30", "optim: {epochs: 1.0e+30}\n", [], ["optim.epochs: 1e+30 is far too large"]),
    ("short-side-huge", "data: {short_side: 1.0e+8}\n", [], ["data.short_side: must be <= 4320"]),
    ("seed-negative", "seed: -1\n", [], ["seed: must be >= 0"]),
    ("options-inf", "model: {options: {extra: [1, .inf]}}\n", [], ["model.options.extra: must be a finite number"]),
    ("sweep-range-inf", "sweep: {parameters: {optim.lr: {uniform: [0.001, .inf]}}}\n", [],
     ["sweep.parameters.optim.lr.uniform.1: must be a finite number"]),
    ("duplicate-section", "optim: {lr: 0.1}\nmodel: {}\noptim: {epochs: 2}\n", [],
     ["optim: given twice in one mapping (lines 1 and 3); keep one"]),
    ("duplicate-field", "optim:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", [],
     ["optim.lr: given twice in one mapping (lines 2 and 4); keep one"]),
    ("duplicate-in-variant", "study:\n  variants:\n    rgb: {model.modality: rgb, model.modality: flow}\n", [],
     ["study.variants.rgb.model.modality: given twice in one mapping (lines 3 and 3)"]),
    # item 12: what a message quotes, and anchor expansion
    ("nested-anchors", nested_anchors(7), [], ["more than 10000 values once anchors are expanded", "remove the nested anchors"]),
    ("anchor-in-itself", "model: {options: &a {x: *a}}\n", [], ["model.options.x: an anchor that contains itself"]),
    ("long-value-quoted", "name: [" + ", ".join(["word"] * 5_000) + "]\n", [], ["name: Input should be a valid string"]),
]


@pytest.mark.parametrize("name, text, extra, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_with_the_file_the_field_and_the_fix(name, text, extra, expected, tmp_path, capsys,
                                                                  no_launch):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    start = time.monotonic()
    line = one_error_line(capsys, ["train", str(path), *extra])
    assert time.monotonic() - start < 10
    assert line.startswith(f"actionlab train: error: {path}") and "accepted" not in line
    assert len(line) < 500  # quoted values are cut
    for fragment in expected:
        assert fragment in line


def test_the_issues_nested_anchors_are_refused_at_once_by_report(tmp_path, capsys):
    """9 levels: 9**9 strings once expanded (2 GB and a 351 MB error line in 28 s before)."""
    path = tmp_path / "anchors.yaml"
    path.write_text(nested_anchors(9))
    start = time.monotonic()
    line = one_error_line(capsys, ["report", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert time.monotonic() - start < 5
    assert line == (f"actionlab report: error: {path}: e (line 5): more than 10000 values once anchors are expanded, "
                    "where an experiment holds a few hundred; remove the nested anchors (or values)")


def test_an_inf_width_no_longer_reaches_the_model(tmp_path):
    """Before: preflight's meta-device forward raised OverflowError (int(inf) channels)."""
    path = tmp_path / "w.yaml"
    path.write_text(f"model: {{width: .inf}}\ndata: {{synth: true, root: {tmp_path / 'UCF101'}}}\n")
    with pytest.raises(UserError, match=r"model\.width: must be a finite number, got inf"):
        preflight_module.preflight(plan(preflight_module.load_experiment(path)))


def test_shipped_experiments_have_no_duplicate_keys_and_stay_under_the_limits():
    root = Path(__file__).parents[1] / "experiments"
    for path in sorted(root.rglob("*.yaml")):
        text = path.read_text()
        assert len(text.encode()) < preflight_module.MAX_FILE_BYTES
        assert preflight_module.read_yaml(text, str(path)) == yaml.safe_load(text)


def test_a_merge_key_is_not_a_duplicate():
    text = "base: &base {lr: 0.1, epochs: 2}\noptim: {<<: *base, lr: 0.2}\n"
    assert preflight_module.read_yaml(text, "x.yaml")["optim"] == {"lr": 0.2, "epochs": 2}


# -- item 8: credentials in the tracking store -------------------------------------------------------

@pytest.mark.parametrize("uri, shown", [
    (f"postgresql://actionlab:{PASSWORD}@db:5432/runs", "postgresql://actionlab:***@db:5432/runs"),
    (f"postgresql+psycopg://u:{PASSWORD}@db/runs?sslmode=require", "postgresql+psycopg://u:***@db/runs?sslmode=require"),
    (URI, "http://admin:***@head:5000"),
    (f"https://:{PASSWORD}@head/mlflow", "https://:***@head/mlflow"),  # a token as the password
    ("postgresql://u@db/runs?password=s/e@c:r", "postgresql://u@db/runs?password=***"),
    ("http://head:5000/path", "http://head:5000/path"),  # no credentials: unchanged
    ("sqlite:////data/m@x.db", "sqlite:////data/m@x.db"),
])
def test_masked_hides_every_character_of_the_password(uri, shown):
    from orchestrator.server import masked

    assert masked(uri) == shown


def test_a_password_in_the_tracking_uri_reaches_no_param_tag_or_artifact(tmp_path, monkeypatch):
    """Params, the experiment.yaml artifact (both `to_dict`), the command-line tag and an error tag."""
    mlflow = pytest.importorskip("mlflow")
    from orchestrator import tracking
    from orchestrator.config import parse_experiment

    cfg = parse_experiment({"tracking": {"tracking_uri": URI}})
    assert cfg.tracking.tracking_uri == URI  # the run itself still logs in with it
    artifact = yaml.safe_dump(cfg.to_dict(), sort_keys=False)  # as training/driver.py writes experiment.yaml
    assert "tracking_uri: http://admin:***@head:5000" in artifact

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/actionlab", "train", "x.yaml",
                                      "--set", f"tracking.tracking_uri={URI}"])
    run_id = tracking.start_run(tracking_uri=store, experiment="creds", run_name="r", tags={"actionlab.kind": "train"},
                                params=tracking.flatten_params(cfg.to_dict()))
    with pytest.raises(RuntimeError), tracking.run_status(store, run_id):
        raise RuntimeError(f"API request to {URI}/api/2.0/mlflow/runs/get failed")
    run = mlflow.MlflowClient(store).get_run(run_id)
    stored = [*run.data.params.values(), *run.data.tags.values(), artifact]
    for secret in (PASSWORD, "w:rd", "p/ss"):
        assert not [value for value in stored if secret in value], secret
    assert run.data.params["tracking.tracking_uri"] == "http://admin:***@head:5000"
    assert run.data.tags[tracking.SOURCE_NAME_TAG] == \
        "actionlab train x.yaml --set 'tracking.tracking_uri=http://admin:***@head:5000'"
    assert run.data.tags[tracking.ERROR_TAG].startswith("RuntimeError: API request to http://admin:***@head:5000/")
