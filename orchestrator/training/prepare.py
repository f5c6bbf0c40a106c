"""Everything a run needs on disk before training: the synthetic data set and the flow cache."""
from __future__ import annotations

from pathlib import Path

from orchestrator.data.dataset import data_modalities
from orchestrator.errors import UserError
from orchestrator.plan import Plan


def prepare_data(plan: Plan) -> None:
    """Generate synthetic data where the plan's runs ask for it and it is missing; extract flow once
    per distinct cache.

    Flow extraction fans out as Ray tasks (one per video) over every core of the cluster and
    skips videos already cached, so a second call costs almost nothing.
    """
    from orchestrator.data.annotations import read_all_subsets
    from orchestrator.data.flow import extract_flow
    from orchestrator.data.synth import spec_from_options

    configs = [run.config for run in plan.runs.values()]
    for cfg in configs:
        if cfg.data.synth is not False and not Path(cfg.data.root).exists():
            _synthesize(Path(cfg.data.root), spec_from_options(cfg.data.synth))
    done = set()
    for cfg in configs:
        d = cfg.data
        flow_dir = d.resolved_flow_dir()
        if "flow" not in data_modalities(cfg.model.modality) or flow_dir in done:
            continue
        done.add(flow_dir)
        records = read_all_subsets(d.dataset, root=d.root, annotations=d.annotations, split=d.split,
                                   test_annotations=d.test_annotations).records
        method = d.flow_method + (", warped" if d.flow_warp else "")
        print(f"optical flow ({method}) for {len(records)} videos -> {flow_dir}")
        summary = extract_flow(records, flow_dir=flow_dir, method=d.flow_method, bound=d.flow_bound, fmt=d.flow_format,
                               warp=d.flow_warp)
        print(summary.describe())


def _synthesize(root: Path, spec) -> None:
    from orchestrator.data.synth import write_synthetic_ucf

    if root.name != "UCF101":
        raise UserError(f"data.root: {root} does not exist and data.synth generates the UCF-101 layout "
                        "<out>/UCF101 + <out>/ucfTrainTestlist; point data.root at .../UCF101")
    print(f"generating the synthetic benchmark in {root.parent}")
    try:
        write_synthetic_ucf(root.parent, spec)
    except (ValueError, FileExistsError) as err:  # e.g. a folder of other files: synth writes only its own
        raise UserError(f"data.synth: {err}") from None
