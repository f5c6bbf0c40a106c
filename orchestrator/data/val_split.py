"""A validation list carved from a training list, so that model selection never sees the test list.

    carve_val(train, by=..., fraction=..., seed=...)  ->  (what is left to train on, the val list)

- by 'group': UCF-101's clips come in groups (`v_<Class>_gXX_cYY`: one actor and background per
  group, across every class), and its official splits hold out whole groups. A random split of clips
  would put near-duplicate clips of one group on both sides, and validation accuracy would leak;
  so the val list takes whole groups too, `fraction` of the training list's groups. A csv list
  names its groups in a `group` column.
- by 'video': `fraction` of each class's videos (at least one of a class with two or more), for
  HMDB-51 (whose split files name no groups) and csv lists without groups.

The choice is a pure function of the sorted video ids and `seed`, so every variant and seed of a
study trains and selects on the same lists.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from orchestrator.errors import UserError

UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")  # v_ApplyEyeMakeup_g08_c01 -> 08


def record_group(record) -> str:
    """A record's group: its csv `group`, else UCF-101's gXX from its name, else ''."""
    if record.group:
        return record.group
    match = UCF_GROUP.search(record.video_id)
    return match.group(1) if match else ""


def resolve_by(dataset: str, records, by: str) -> str:
    """`data.val.by` with 'auto' made concrete: ucf101 group, kinetics list, csv group when every row
    has one (else video), hmdb51 video."""
    if by != "auto":
        return by
    if dataset == "kinetics":
        return "list"
    if dataset == "ucf101" or (dataset == "csv" and records and all(r.group for r in records)):
        return "group"
    return "video"


def carve_val(records: list, *, by: str, fraction: float, seed: int) -> tuple[list, list]:
    """Split training records into (train, val) by 'group' or 'video' (see the module docstring).

    Args:
        records: VideoRecords of a training list.
        fraction: of the groups (by group) or of each class's videos (by video), in (0, 1).
    Returns:
        (train records, val records), each in the input order.
    """
    rng = np.random.default_rng(seed)
    if by == "group":
        groups = defaultdict(list)
        for record in records:
            if not (group := record_group(record)):
                raise UserError(f"data.val.by 'group': {record.path} has no group (UCF-101's _gXX_ in the name, or a "
                                "csv `group` column); use data.val.by: video")
            groups[group].append(record)
        names = sorted(groups)
        if len(names) < 2:
            raise UserError(f"data.val.by 'group': the training list has {len(names)} group(s); at least 2 are needed "
                            "to hold one out; use data.val.by: video")
        count = min(len(names) - 1, max(1, round(fraction * len(names))))
        held = set(rng.choice(names, size=count, replace=False).tolist())
        in_val = {id(r) for name in held for r in groups[name]}
    else:
        by_class = defaultdict(list)
        for record in sorted(records, key=lambda r: r.video_id):
            by_class[record.label].append(record)
        in_val = set()
        for label in sorted(by_class):
            members = by_class[label]
            count = min(len(members) - 1, max(1, round(fraction * len(members))))
            in_val |= {id(members[i]) for i in rng.permutation(len(members))[:count]}
    train = [r for r in records if id(r) not in in_val]
    val = [r for r in records if id(r) in in_val]
    if not val:
        raise UserError(f"data.val: the training list ({len(records)} videos) is too small to hold out a "
                        f"validation list by {by}; add videos or set data.val: null (then selection uses the test list)")
    return train, val
