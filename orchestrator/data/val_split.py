"""A validation list carved from a training list, so that model selection never sees the test list.

    carve_val(train, by=..., fraction=..., seed=...)  ->  (what is left to train on, the val list)

- by 'group': clips cut from one recording must not sit on both sides of the split: a model that
  has fit one of them recognises the other by its actor and background, and validation accuracy
  would leak. The official splits keep such clips together, and so does the val list:
  - UCF-101's clips come in groups (`v_<Class>_gXX_cYY`: one actor and background per group,
    across every class);
  - HMDB-51's file names start with the source video they were cut from
    (`April_09_brush_hair_u_nm_np1_ba_goo_{0,1,2}` are three clips of `April_09`: `hmdb_source`);
  - a csv list names its groups in a `group` column;
  - a Kinetics clip's group is its YouTube video (`<youtube_id>_<start>_<end>`); with its official
    lists (by 'list') clips of a video the train list also holds are named in a warning.
  Groups that span classes (UCF-101's) are held out from one pool, `fraction` of them; a group of one
  class (an HMDB-51 source video, mostly) is held out within its class, `fraction` of that class's
  groups (none of a class with one group), so every class keeps training videos.
- by 'video': `fraction` of each class's videos (at least one of a class with two or more), for
  csv lists without groups; clips are then the unit, whatever they share.

The choice is a pure function of the sorted video ids and `seed`, so every variant and seed of a
study trains and selects on the same lists.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from orchestrator.errors import UserError

UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")  # v_ApplyEyeMakeup_g08_c01 -> 08
# HMDB-51's five tags and clip number, which end every file name (Kuehne et al. 2011, the release's
# README): visible body part, camera motion, number of people, viewpoint, quality, then the clip
HMDB_TAGS = re.compile(r"_[fhul]_(?:cm|nm)_np\d+_(?:fr|ba|ri|le)_(?:bad|med|goo)_\d+$")


def hmdb_source(video_id: str) -> str:
    """The source video an HMDB-51 clip was cut from: its file name less `_<action>_<5 tags>_<n>`.

    The action is the clip's folder (`<action>/<file>`), so actions with '_' in them are stripped
    whole: 'brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0' -> 'April_09'. A name whose action is
    not its folder's keeps it ('April_09_brush_hair': still one group per source and action); '' for
    a name without HMDB-51's tags.
    """
    folder, _, name = video_id.rpartition("/")
    tags = HMDB_TAGS.search(name)
    if tags is None:
        return ""
    stem, action = name[:tags.start()], folder.rpartition("/")[2]
    suffix = f"_{action}"
    return stem[:-len(suffix)] if action and stem.endswith(suffix) and len(stem) > len(suffix) else stem


def record_group(record) -> str:
    """A record's group: its csv `group`, else UCF-101's gXX or HMDB-51's source video from its name, else ''."""
    if record.group:
        return record.group
    if match := UCF_GROUP.search(record.video_id):
        return match.group(1)
    return hmdb_source(record.video_id)


def resolve_by(dataset: str, records, by: str) -> str:
    """`data.val.by` with 'auto' made concrete: kinetics list; ucf101 and hmdb51 group; csv group when
    it has a `group` column (a row without one is then refused by `carve_val`, naming it), else video."""
    if by != "auto":
        return by
    if dataset == "kinetics":
        return "list"
    if dataset in ("ucf101", "hmdb51") or (dataset == "csv" and any(r.group for r in records)):
        return "group"
    return "video"


def _held_count(fraction: float, total: int) -> int:
    """How many of `total` units (groups or videos) go to val: `fraction` of them, at least one and at
    most all but one; none of a single one."""
    return min(total - 1, max(1, round(fraction * total)))


def carve_val(records: list, *, by: str, fraction: float, seed: int) -> tuple[list, list]:
    """Split training records into (train, val) by 'group' or 'video' (see the module docstring).

    Args:
        records: VideoRecords of a training list.
        fraction: of the groups (by group: of the pool of groups spanning classes, and of each class's
            own groups) or of each class's videos (by video), in (0, 1).
    Returns:
        (train records, val records), each in the input order.
    """
    rng = np.random.default_rng(seed)
    if by == "group":
        groups = defaultdict(list)
        for record in records:
            if not (group := record_group(record)):
                raise UserError(f"data.val.by 'group': {record.path} has no group (UCF-101's _gXX_ in the name, "
                                "HMDB-51's source video, or a csv `group` column: give every row one, its own name "
                                "for a clip that shares nothing with another); or use data.val.by: video")
            groups[group].append(record)
        if len(groups) < 2:
            raise UserError(f"data.val.by 'group': the training list has {len(groups)} group(s); at least 2 are "
                            "needed to hold one out; use data.val.by: video")
        # a group spanning classes (UCF-101's) is drawn from one pool (key -1), a group of one class
        # (an HMDB-51 source video) within its class
        pools = defaultdict(list)
        for name in sorted(groups):
            labels = {r.label for r in groups[name]}
            pools[labels.pop() if len(labels) == 1 else -1].append(name)
        held = set()
        for key in sorted(pools):
            if count := _held_count(fraction, len(pools[key])):
                held |= set(rng.choice(pools[key], size=count, replace=False).tolist())
        in_val = {id(r) for name in held for r in groups[name]}
    else:
        by_class = defaultdict(list)
        for record in sorted(records, key=lambda r: r.video_id):
            by_class[record.label].append(record)
        in_val = set()
        for label in sorted(by_class):
            members = by_class[label]
            in_val |= {id(members[i]) for i in rng.permutation(len(members))[:_held_count(fraction, len(members))]}
    train = [r for r in records if id(r) not in in_val]
    val = [r for r in records if id(r) in in_val]
    if not val:
        raise UserError(f"data.val: the training list ({len(records)} videos) is too small to hold out a "
                        f"validation list by {by}; add videos or set data.val: null (then selection uses the test list)")
    return train, val
