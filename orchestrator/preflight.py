"""Between an experiment file and a launch: read the file, then check it against the world once.

    load_experiment(path)  ->  ExperimentConfig (orchestrator.config: parsed and checked, no I/O),
                               from YAML read by `read_yaml` (duplicate keys and anchor bombs refused)
    preflight(plan)        ->  for every run of the plan (orchestrator/plan.py): data paths, pretrained
                               weights, init checkpoints (files or MLflow runs), the synthetic spec,
                               and a meta-device forward of its model, fed the run's planned input

Commands run both on the driver before anything is launched; trials and workers receive the
frozen config and check nothing again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import ExperimentConfig, example_input, parse_experiment, quote
from orchestrator.errors import UserError
from orchestrator.inputs import InputSpec
from orchestrator.plan import Plan, source_variant
from orchestrator.training.results import init_weights


# The shipped experiment files are under 6 KB and 240 values, anchors expanded; these limits are
# 170x and 40x that. A 486-byte file of nested anchors expands to ~10^9 values (2 GB, and a 351 MB
# error message, before they were counted).
MAX_FILE_BYTES = 1 << 20
MAX_VALUES = 10_000


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and parse an experiment YAML (its study variants and sweep grid included)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such experiment file; the shipped ones are in experiments/")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes; an experiment file is a few KB (at most "
                        f"{MAX_FILE_BYTES} bytes): is this the right file?")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot be read as UTF-8 text ({err}); give the experiment YAML") from None
    raw = read_yaml(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections (data, model, optim, ...), got {quote(raw)}")
    return parse_experiment({"name": path.stem, **raw}, source=str(path))


def read_yaml(text: str, where: str, *, fix: str = "fix the syntax there") -> Any:
    """One YAML document's value (PyYAML's safe loader), checked before it is built.

    Args:
        text: the document.
        where: the file (or the --set argument) the messages name.
        fix: the advice after a syntax error.
    Raises:
        UserError, one line: a syntax error (line, column), a key given twice in one mapping (the
        dotted field; YAML would silently keep the last), more than MAX_VALUES values with anchors
        expanded, or an anchor that contains itself.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_values(node, "", where, {}, set())
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        if mark is None:
            at = ""
        elif "\n" in text.strip():
            at = f"line {mark.line + 1}, column {mark.column + 1}: "
        else:  # a --set value
            at = f"column {mark.column + 1}: "
        parts = [getattr(err, "context", None), getattr(err, "problem", None)]
        what = " ".join(" ".join(str(p) for p in parts if p).split()) or " ".join(str(err).split())
        raise UserError(f"{where}: {at}not valid YAML ({what[:200]}); {fix}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be an experiment; {fix}") from None
    finally:
        loader.dispose()


def _count_values(node: yaml.Node, dotted: str, where: str, counted: dict[int, int], open_: set[int]) -> int:
    """Values under `node` with every alias expanded, each shared node counted once per use without
    being walked twice; refuses duplicate keys, and more than MAX_VALUES or a cycle as soon as seen.

    Args:
        counted: id(node) -> its count, for nodes already walked (an anchor's every alias).
        open_: ids of the nodes being walked (an alias to one of them is a cycle).
    """
    if id(node) in counted:
        return counted[id(node)]
    line = node.start_mark.line + 1
    if id(node) in open_:
        raise UserError(f"{where}: {dotted or 'the document'}: an anchor that contains itself (line {line}); "
                        "write the value out")
    open_.add(id(node))
    total = 1
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple, int] = {}
        for key, value in node.value:
            part = str(key.value)[:60] if isinstance(key, yaml.ScalarNode) else "?"  # `? [a, b]: c` keys
            name = f"{dotted}.{part}" if dotted else part
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":  # `<<:` merges
                if (key.tag, key.value) in first_line:
                    raise UserError(f"{where}: {name}: given twice in one mapping (lines "
                                    f"{first_line[key.tag, key.value]} and {key.start_mark.line + 1}); keep one")
                first_line[key.tag, key.value] = key.start_mark.line + 1
            total += _count_values(key, name, where, counted, open_) + _count_values(value, name, where, counted, open_)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            total += _count_values(item, f"{dotted}.{i}" if dotted else str(i), where, counted, open_)
    if total > MAX_VALUES:
        raise UserError(f"{where}: {(dotted or 'the document')[:200]} (line {line}): more than {MAX_VALUES} values "
                        "once anchors are expanded, where an experiment holds a few hundred; remove the nested "
                        "anchors (or values)")
    open_.discard(id(node))
    counted[id(node)] = total
    return total


def preflight(plan: Plan) -> Plan:
    """Check every run the plan will launch against files, MLflow and the model zoo.

    Returns the plan. Raises UserError naming the file, the run, the field and the fix.
    """
    for run in plan.runs.values():
        where = f"{plan.config.source or 'config'}: {run.where}".rstrip(": ")
        try:
            _check_files(run.config, run.inputs)
            check_model(run.config, run.inputs)
            _check_splits(run.config)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    return plan


def _check_files(cfg: ExperimentConfig, spec: InputSpec) -> None:
    from orchestrator.data.synth import spec_from_options

    d, m = cfg.data, cfg.model
    try:
        spec_from_options(d.synth)
    except ValueError as err:
        raise UserError(f"data.synth: {err}") from None
    if not d.synth:
        for name in ("root", "annotations", "test_annotations"):
            if getattr(d, name) and not Path(getattr(d, name)).exists():
                raise UserError(f"data.{name}: {getattr(d, name)} does not exist; fix the path, or "
                                "set data.synth: true to generate the synthetic benchmark there")
    if d.decoder == "torchcodec":
        from orchestrator.data.decoders import torchcodec_problem

        if problem := torchcodec_problem():
            raise UserError(problem)
    if m.pretrained:  # loaded into a real (CPU) model: fetches torchvision's weights, checks they fit
        import torch

        from models import build_model
        from models.pretrained import WeightsError

        try:
            with torch.device("cpu"):
                build_model(m.architecture, num_classes=2, **spec.builder_kwargs)
        except WeightsError as err:
            raise UserError(f"model.pretrained: {err}") from None
    if m.init_checkpoint and source_variant(cfg) is None:  # a study's source variant is trained first
        try:
            init_weights(cfg, download=False)
        except UserError as err:
            raise UserError(f"model.init_checkpoint: {err}") from None


def check_model(cfg: ExperimentConfig, spec: InputSpec) -> None:
    """Build the model on the meta device (no memory, no time) and feed it the clip the sampler and
    crop will make (`spec`, the run's planned input): a wrong option or clip length fails here, not on a worker."""
    import torch

    from models import build_model

    m = cfg.model
    kwargs = {**spec.builder_kwargs, "pretrained": None}  # weights were loaded above; meta holds none
    try:  # batch 2, in training mode: BatchNorm refuses one value per channel, and training never feeds
        # it one (the loader drops a last batch of one clip)
        with torch.device("meta"), torch.no_grad():
            build_model(m.architecture, num_classes=2, **kwargs)(example_input(spec, batch=2))
    except (ValueError, TypeError) as err:
        shapes = ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in spec.shapes.items())
        raise UserError(f"model ({m.architecture}, modality {m.modality}, options {m.options}) fed {shapes} "
                        f"(C x T x H x W, from the data section): {err}") from None


def _check_splits(cfg: ExperimentConfig) -> None:
    """Carve the val list as the workers will, when the data is there: too few groups, or too few
    training videos for one batch per worker, fails here."""
    from orchestrator.data.annotations import read_run_splits

    d = cfg.data
    if Path(d.root).exists():
        splits = read_run_splits(d.dataset, root=d.root, annotations=d.annotations, split=d.split,
                                 test_annotations=d.test_annotations, val=d.val)
        needed = cfg.optim.batch_size * cfg.scaling.max_workers  # one full global batch (drop_last)
        if len(splits.train.records) < needed:
            workers = "max " if isinstance(cfg.scaling.num_workers, tuple) else ""
            raise UserError(f"optim.batch_size ({cfg.optim.batch_size}) x {workers}scaling.num_workers "
                            f"({cfg.scaling.max_workers}) = {needed} videos, but the training list holds "
                            f"{len(splits.train.records)}{' after data.val' if d.val else ''}: lower one of them")
