"""Reading a data set's split files into (video path, label) records.

One reader per layout that users really have on disk, registered by name in `DATASETS`:

- 'ucf101': the official `ucfTrainTestlist` folder (classInd.txt, trainlist0N.txt, testlist0N.txt).
- 'hmdb51': the official `testTrainMulti_7030_splits` folder (`<class>_test_splitN.txt`).
- 'kinetics': the official CSV(s) `label,youtube_id,time_start,time_end,split`.
- 'csv': a plain `path,label` CSV for any other data set.

Bad entries never stop reading: a malformed line, an unknown class, an unlabeled row or a video
file that does not exist becomes a `Problem` and the entry is left out of `records`, so that
`actionlab data check` can list every problem at once. A `LabelConflict` is a problem that would
train on a wrong label or mix two videos' caches: a video listed twice with two labels, in both the
train and the test list, two files with one video id (`x.avi`, `x.mp4`), one video id the folder of
another (`a`, `a/b`), a UCF-101 label that is not its folder's class. `read_train_test` (and so
`read_run_splits`, which training and its preflight call) refuses those with a `UserError`;
`require_consistent` does it for any Split.

A `UserError` (one line: the file, the line, the fix) is raised, rather than a problem recorded,
for input that cannot be read safely at all: a missing or non-UTF-8 list, a malformed classInd.txt,
a listed path that is absolute, holds '..' or resolves (symlinks followed) outside the data root
(`orchestrator/data/paths.py`), a bad `split` / `subset` argument, or a data root that `actionlab
data prepare` or `data synth` has not finished writing (`require_finished`).
"""
import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Callable, NamedTuple

from orchestrator.data.paths import file_kind, listed_path, resolved
from orchestrator.errors import UserError

logger = logging.getLogger("actionlab.data")

SPLIT_NUMBERS = (1, 2, 3)  # UCF-101 and HMDB-51 both ship three official train/test splits
OUTPUT_MANIFEST = "manifest.json"  # beside a root `data prepare` or `data synth` writes: who, and whether done
MANIFEST_WRITERS = ("actionlab data prepare", "actionlab data synth")  # its `written_by`
_NUMBER = re.compile(r"[0-9]+")  # str.isdigit() also takes '²', which int() refuses


class VideoRecord(NamedTuple):
    path: Path  # absolute path of the video file, or of its JPEG frame folder (`actionlab data prepare`)
    label: int  # index into Split.class_names; -1 only where the data set has no labels (Kinetics test)
    video_id: str  # path relative to the video root, no suffix, '/'-separated: key of flow caches and score files
    group: str = ""  # clips that share actors / scene (a csv `group` column); UCF-101's, HMDB-51's: their names


class Problem(NamedTuple):
    path: Path  # the offending video, or the annotation file for a malformed line ('line N' in reason)
    reason: str


class LabelConflict(Problem):
    """A Problem that would corrupt labels or caches if trained on: training refuses it (module docstring)."""

    __slots__ = ()


class Split(NamedTuple):
    records: list[VideoRecord]
    class_names: list[str]
    problems: list[Problem]  # LabelConflict among them: see `require_consistent`


def _video_id(path: Path, root: Path, kind: str) -> str:
    relative = path.relative_to(root)  # a frame folder's name is already the video's, less its suffix
    return (relative if kind == "folder" else relative.with_suffix("")).as_posix()


def _require_dir(path: Path, what: str) -> None:
    kind = file_kind(path)
    if kind != "folder":
        found = "directory not found" if kind is None else f"a {kind}, not a directory"
        raise UserError(f"{path}: {found}; expected {what} there")


def _require_file(path: Path, what: str) -> None:
    kind = file_kind(path)
    if kind != "file":  # a FIFO would block the read for ever: only regular files are opened
        found = "file not found" if kind is None else f"a {kind}, not a regular file"
        raise UserError(f"{path}: {found}; expected {what}")


def _read_text(path: Path) -> str:
    """A list file's text: a regular file, UTF-8, a leading BOM dropped; else a UserError naming the line."""
    _require_file(path, "a split list (text)")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the list as "
                        "UTF-8") from None


def require_finished(root: Path) -> None:
    """UserError when `root` is the videos folder of an `actionlab data prepare` or `data synth` run that
    has not finished (its manifest, beside it, says so): training on it would silently drop what is
    missing. A folder with no manifest of theirs, or one written before they recorded it, passes."""
    manifest = Path(root).parent / OUTPUT_MANIFEST
    if file_kind(manifest) != "file":
        return
    try:
        fields = json.loads(_read_text(manifest))
    except (UserError, ValueError):
        return  # not one of ours
    if not isinstance(fields, dict) or fields.get("written_by") not in MANIFEST_WRITERS or fields.get("complete", True):
        return
    raise UserError(f"{manifest}: `{fields['written_by']}` has not finished writing {root} (interrupted, or still "
                    f"running); run the same command again to finish it, or delete {Path(root).parent}")


def require_consistent(*splits: Split) -> None:
    """UserError naming the first LabelConflict of `splits` and the fix, with how many more there are."""
    conflicts = [p for split in splits for p in split.problems if isinstance(p, LabelConflict)]
    if conflicts:
        more = (f" ({len(conflicts) - 1} more such conflict{'s' if len(conflicts) > 2 else ''}: "
                "`actionlab data check` lists them all)") if len(conflicts) > 1 else ""
        raise UserError(f"{conflicts[0].path}: {conflicts[0].reason}{more}")


def _check_subset(dataset: str, subset: str, valid: tuple[str, ...]) -> None:
    if subset not in valid:
        raise UserError(f"subset {subset!r} is not one of {dataset}'s subsets; use one of {', '.join(valid)}")


def _check_split_number(dataset: str, split: int) -> None:
    if split not in SPLIT_NUMBERS:
        valid = ", ".join(map(str, SPLIT_NUMBERS))
        raise UserError(f"split {split!r} is not one of {dataset}'s official splits; use one of {valid}")


def _numbered_lines(path: Path):
    """(line number, whitespace-stripped text) of every non-blank line; the official files use CRLF."""
    for number, line in enumerate(_read_text(path).split("\n"), start=1):  # str.splitlines also splits at \x0c
        if line.strip():
            yield number, line.strip()


def _add(out: Split, listed: dict, root: Path, video: Path, label: int, list_file: Path, number: int,
         group: str = "") -> None:
    """Record the video line `number` of `list_file` names, or the problem with it.

    Args:
        out: the Split being read; gets the record or a Problem.
        listed: video id -> (record, '<list name> line N') of this list so far; updated.
        video: the path as `listed_path` returned it (already kept inside root: a path leaving root
            is a UserError there, raised by the reader before anything else about the line).
    A video listed again, or sharing its id with another file, is a (LabelConflict) problem and the
    later line is left out."""
    where = f"{list_file.name} line {number}"
    try:
        kind = file_kind(video)
    except OSError as err:  # e.g. a name longer than the file system allows
        out.problems.append(Problem(video, f"cannot be read ({err.strerror}; listed in {where})"))
        return
    if kind is None:
        out.problems.append(Problem(video, f"video file not found (listed in {where})"))
        return
    if kind not in ("file", "folder"):  # a folder: JPEG frames (`actionlab data prepare --format frames`)
        out.problems.append(Problem(video, f"a {kind}, not a video file or frame folder (listed in {where})"))
        return
    record = VideoRecord(video, label, _video_id(video, root, kind), group)
    if record.video_id not in listed:
        listed[record.video_id] = (record, where)
        out.records.append(record)
        return
    first, first_where = listed[record.video_id]
    if first.path != video:
        out.problems.append(LabelConflict(video, f"same video id {record.video_id!r} as {first.path} ({first_where}): "
                                                 "flow caches, score files and a prepared copy are keyed by it, so "
                                                 f"one would stand for both; rename one of them ({where})"))
    elif first.label != label:
        label_names = [out.class_names[i] if i >= 0 else "(none)" for i in (first.label, label)]
        out.problems.append(LabelConflict(video, f"listed with two labels, {label_names[0]!r} ({first_where}) and "
                                                 f"{label_names[1]!r} ({where}); delete the wrong line"))
    else:
        out.problems.append(Problem(video, f"listed twice ({first_where} and {where}); the second is left out"))


def _nested_ids(records: list[VideoRecord]) -> list[tuple[VideoRecord, VideoRecord]]:
    """(inner, outer) pairs whose outer video id is a folder of the inner one ('a/b' in 'a')."""
    by_id = {r.video_id: r for r in records}
    pairs = []
    for record in records:
        parts = record.video_id.split("/")
        pairs += [(record, by_id["/".join(parts[:depth])]) for depth in range(1, len(parts))
                  if "/".join(parts[:depth]) in by_id]
    return pairs


def _nesting_conflict(inner: VideoRecord, outer: VideoRecord, inner_where: str, outer_where: str) -> LabelConflict:
    return LabelConflict(inner.path, f"video id {inner.video_id!r} ({inner_where}) lies in the folder of video "
                                     f"{outer.video_id!r} ({outer.path}, {outer_where}): their flow caches and "
                                     "frame folders would nest, one inside the other; rename one of them")


def _finish(out: Split, listed: dict) -> Split:
    """`out` with the nesting conflicts between its own video ids added."""
    out.problems.extend(_nesting_conflict(inner, outer, listed[inner.video_id][1], listed[outer.video_id][1])
                        for inner, outer in _nested_ids(out.records))
    return out


def _cross_list_conflicts(lists: list[tuple[str, Split]]) -> list[LabelConflict]:
    """LabelConflicts between the records of different lists, e.g. [('train list', train), ('test
    list', test)]: a video in two lists, two files with one video id, nested video ids. (Those within
    one list its reader has reported.)"""
    list_by_path, first_by_id, conflicts = {}, {}, []
    for name, split in lists:
        for record in split.records:
            other = list_by_path.setdefault(resolved(record.path), name)  # resolved: a symlink is no disguise
            if other != name:
                conflicts.append(LabelConflict(record.path, f"in both the {other} and the {name}: a model would be "
                                                            "scored on a video it was fit on; take it out of one"))
                continue
            other_name, other_record = first_by_id.setdefault(record.video_id, (name, record))
            if other_name != name:
                conflicts.append(LabelConflict(record.path, f"same video id {record.video_id!r} as "
                                                            f"{other_record.path} (in the {other_name}; this one in "
                                                            f"the {name}): flow caches and score files are keyed by "
                                                            "it; rename one of them"))
    list_of = {(r.path, r.video_id): name for name, split in lists for r in split.records}
    records = list({r.video_id: r for _, split in lists for r in split.records}.values())
    for inner, outer in _nested_ids(records):
        inner_list, outer_list = list_of[inner.path, inner.video_id], list_of[outer.path, outer.video_id]
        if inner_list != outer_list:
            conflicts.append(_nesting_conflict(inner, outer, f"in the {inner_list}", f"in the {outer_list}"))
    return conflicts


def _read_class_index(class_file: Path) -> list[str]:
    """classInd.txt's class names in the order of their numbers (1-based, each once, no gaps): its
    numbers, not its line order, are the labels the train lists give."""
    by_number = {}
    for number, line in _numbered_lines(class_file):
        fields = line.split()
        if len(fields) != 2 or not _NUMBER.fullmatch(fields[0]):
            raise UserError(f"{class_file} line {number}: expected '<number> <ClassName>', got {line!r}")
        if int(fields[0]) in by_number or fields[1] in by_number.values():
            raise UserError(f"{class_file} line {number}: {line!r} repeats a class number or name of an earlier "
                            "line; give each class one line")
        by_number[int(fields[0])] = fields[1]
    missing = sorted(set(range(1, len(by_number) + 1)) - set(by_number))
    if missing:
        raise UserError(f"{class_file}: the class numbers must run 1..{len(by_number)}, each once; {missing[0]} is "
                        "missing (the train lists' labels are these numbers); renumber the classes")
    return [by_number[n] for n in range(1, len(by_number) + 1)]


def read_ucf101(root: Path, annotations: Path, split: int, subset: str) -> Split:
    """UCF-101 (Soomro et al. 2012): videos at root/<Class>/v_<Class>_gXX_cYY.avi.

    `annotations` is the ucfTrainTestlist folder. classInd.txt maps 1-based numbers to class
    names (label = number - 1, whatever the line order); trainlist0N.txt lines carry a 1-based
    label, testlist0N.txt lines only the path (the label is that of the class folder). A train
    label that names another class than its folder is a LabelConflict.
    """
    _check_split_number("ucf101", split)
    _check_subset("ucf101", subset, ("train", "test"))
    _require_dir(annotations, "the UCF-101 ucfTrainTestlist folder (classInd.txt, trainlist01.txt, ...)")
    class_file = annotations / "classInd.txt"
    list_file = annotations / f"{subset}list{split:02d}.txt"
    _require_file(class_file, "UCF-101's class list ('1 ApplyEyeMakeup' per line)")
    _require_file(list_file, f"UCF-101's {subset} list of split {split}")

    out, listed = Split([], _read_class_index(class_file), []), {}
    index_of = {name: i for i, name in enumerate(out.class_names)}
    for number, line in _numbered_lines(list_file):
        fields = line.split()
        where = f"{list_file} line {number}"
        if len(fields) != (2 if subset == "train" else 1):
            expected = "'<Class>/<video>.avi <label>'" if subset == "train" else "'<Class>/<video>.avi'"
            out.problems.append(Problem(list_file, f"line {number}: expected {expected}, got {line!r}"))
            continue
        video = listed_path(root, (fields[0],), where)  # a path leaving root is refused, whatever else is wrong
        class_name = fields[0].split("/")[0]
        if subset == "train":
            if not _NUMBER.fullmatch(fields[1]) or not 1 <= int(fields[1]) <= len(out.class_names):
                out.problems.append(Problem(
                    list_file, f"line {number}: label {fields[1]!r} is not a class number of classInd.txt "
                               f"(1..{len(out.class_names)})"))
                continue
            label = int(fields[1]) - 1
            if class_name in index_of and index_of[class_name] != label:
                out.problems.append(LabelConflict(
                    video, f"label {fields[1]} is {out.class_names[label]!r} in classInd.txt, but the video is in "
                           f"the folder {class_name!r} ({list_file.name} line {number}); correct the label"))
                continue
        elif class_name in index_of:
            label = index_of[class_name]
        else:
            out.problems.append(Problem(list_file, f"line {number}: unknown class {class_name!r} "
                                                   "(not in classInd.txt)"))
            continue
        _add(out, listed, root, video, label, list_file, number)
    return _finish(out, listed)


def read_hmdb51(root: Path, annotations: Path, split: int, subset: str) -> Split:
    """HMDB-51 (Kuehne et al. 2011): videos at root/<class>/<video_file_name>.

    `annotations` holds `<class>_test_split{1,2,3}.txt`, lines `<video_file_name> <tag>` with tag
    1 = train, 2 = test, 0 = unused in that split. The classes are the sorted names of that split
    number's files.
    """
    _check_split_number("hmdb51", split)
    _check_subset("hmdb51", subset, ("train", "test"))
    _require_dir(annotations, "the HMDB-51 split files (<class>_test_split1.txt, ...)")
    suffix = f"_test_split{split}.txt"
    split_files = sorted(annotations.glob(f"*{suffix}"))
    if not split_files:
        raise UserError(f"{annotations}: no '<class>{suffix}' files; point --annotations at the folder "
                        "unpacked from HMDB-51's test_train_splits.rar")
    wanted_tag = {"train": "1", "test": "2"}[subset]

    out, listed = Split([], [f.name[: -len(suffix)] for f in split_files], []), {}
    for label, (class_name, split_file) in enumerate(zip(out.class_names, split_files)):
        for number, line in _numbered_lines(split_file):
            fields = line.rsplit(maxsplit=1)  # rsplit: the tag is last, whatever the file name holds
            where = f"{split_file} line {number}"
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                out.problems.append(Problem(
                    split_file, f"line {number}: expected '<video file> <0|1|2>', got {line!r}"))
                continue
            video = listed_path(root, (class_name, fields[0]), where)  # refused in every subset alike
            if fields[1] == wanted_tag:
                _add(out, listed, root, video, label, split_file, number)
    return _finish(out, listed)


def _kinetics_video(root: Path, subset: str, label: str, file_name: str, where: str) -> tuple[str, ...] | None:
    """The names (under root) of the clip's file, or of its JPEG frame folder (the file name less .mp4,
    `actionlab data prepare`); None when neither is in any place looked in."""
    stem = file_name[: -len(".mp4")]
    candidates = [(subset, label, file_name), (subset, label.replace(" ", "_"), file_name), (subset, file_name),
                  (file_name,)]
    for names in candidates:
        for kind, found in (("file", names), ("folder", (*names[:-1], stem))):
            try:  # the one found is checked in full by read_kinetics (`listed_path`): a symlink out is refused there
                if file_kind(listed_path(root, found, where, resolve=False)) == kind:
                    return found
            except OSError:  # a name too long for the file system: not there
                continue
    return None


def _read_csv_rows(path: Path, required: tuple[str, ...], what: str):
    """(file, line number, row dict) of every data row; a missing column, or a line the csv module
    cannot read, is a UserError."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected the header {what}")
        for row in reader:
            yield path, reader.line_num, row
    except csv.Error as err:  # the underlying reader's count: the line it failed on
        raise UserError(f"{path} line {reader.reader.line_num}: not CSV ({err}); fix or remove that line") from None


def read_kinetics(root: Path, annotations: Path, split: int, subset: str) -> Split:
    """Kinetics-400/600/700 (Kay et al. 2017) as downloaded clip by clip.

    `annotations` is one official CSV (`label,youtube_id,time_start,time_end,split`) or a folder of
    them (train.csv, validate.csv, test.csv: all are read). Rows whose `split` column equals
    `subset` are used; the split number is ignored (Kinetics has a single split). The classes are
    the sorted labels of the 'train' rows, so val and test share the training indices. Test rows
    without a label (the label column empty or absent) get label -1.

    A clip is `<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`, looked up in this order under
    root/<subset>/<label>/ (also with spaces in the label written as '_'), root/<subset>/, root/;
    in each place, the frame folder of that name less '.mp4' counts as the clip too.
    """
    _check_subset("kinetics", subset, ("train", "val", "test"))
    if annotations.is_dir():
        csv_files = sorted(annotations.glob("*.csv"))
        if not csv_files:
            raise UserError(f"{annotations}: no .csv files; expected Kinetics' train.csv, validate.csv, test.csv")
    else:
        _require_file(annotations, "a Kinetics CSV (label,youtube_id,time_start,time_end,split)")
        csv_files = [annotations]
    header = "label,youtube_id,time_start,time_end,split"
    rows = [r for f in csv_files for r in _read_csv_rows(f, ("youtube_id", "time_start", "time_end", "split"), header)]

    out = Split([], sorted({(row.get("label") or "").strip() for _, _, row in rows
                            if row["split"] == "train" and (row.get("label") or "").strip()}), [])
    index_of, listed = {name: i for i, name in enumerate(out.class_names)}, {}
    for csv_file, number, row in rows:
        if row["split"] != subset:
            continue
        label_name, youtube_id = (row.get("label") or "").strip(), (row["youtube_id"] or "").strip()
        where = f"{csv_file} line {number}"
        if not youtube_id:
            out.problems.append(Problem(csv_file, f"line {number}: no youtube_id"))
            continue
        try:
            file_name = f"{youtube_id}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
        except (TypeError, ValueError):
            out.problems.append(Problem(csv_file, f"line {number}: time_start/time_end must be whole seconds, "
                                                  f"got {row['time_start']!r}, {row['time_end']!r}"))
            continue
        if not label_name and subset != "test":
            out.problems.append(Problem(csv_file, f"line {number}: unlabeled {subset} row ({youtube_id})"))
            continue
        if label_name and label_name not in index_of:
            out.problems.append(Problem(csv_file, f"line {number}: unknown class {label_name!r} "
                                                  "(no train row has that label)"))
            continue
        names = _kinetics_video(root, subset, label_name, file_name, where)
        if names is None:
            out.problems.append(Problem(root.joinpath(subset, label_name, file_name),
                                        f"video file not found (listed in {csv_file.name} line {number}; "
                                        f"also looked in {root / subset} and {root})"))
            continue
        # the YouTube video is the group: its other clips share the footage (`shared_sources`)
        _add(out, listed, root, listed_path(root, names, where), index_of.get(label_name, -1), csv_file, number,
             group=youtube_id)
    return _finish(out, listed)


def read_csv(root: Path, annotations: Path, split: int, subset: str) -> Split:
    """Any data set listed in a CSV with the header `path,label` (and optionally `group`).

    `path` is relative to `root`, `label` a class name; the classes are the sorted distinct names.
    `group` names clips that share actors or scene, so a validation list holds whole groups.
    `split` and `subset` are ignored: keep one CSV per subset.
    """
    _require_file(annotations, "a CSV with the header 'path,label'")
    rows = list(_read_csv_rows(annotations, ("path", "label"), "path,label"))
    out = Split([], sorted({(row["label"] or "").strip() for _, _, row in rows if (row["label"] or "").strip()}), [])
    index_of, listed = {name: i for i, name in enumerate(out.class_names)}, {}
    for _, number, row in rows:
        rel, label_name = (row["path"] or "").strip(), (row["label"] or "").strip()
        where = f"{annotations} line {number}"
        if not rel:
            out.problems.append(Problem(annotations, f"line {number}: no path"))
            continue
        video = listed_path(root, (rel,), where)  # refused whether labelled or not
        if not label_name:
            out.problems.append(Problem(annotations, f"line {number}: unlabeled row ({rel})"))
        else:
            _add(out, listed, root, video, index_of[label_name], annotations, number,
                 group=(row.get("group") or "").strip())
    return _finish(out, listed)


DATASETS: dict[str, Callable[[Path, Path, int, str], Split]] = {
    "ucf101": read_ucf101,
    "hmdb51": read_hmdb51,
    "kinetics": read_kinetics,
    "csv": read_csv,
}


def read_split(dataset: str, *, root: str | Path, annotations: str | Path, split: int = 1,
               subset: str = "train") -> Split:
    """Records, class names and problems of one subset of one split of a data set.

    Args:
        dataset: a key of `DATASETS`.
        root: folder holding the videos (layout per data set, see the readers).
        annotations: the data set's split folder or CSV.
        split: official split number (1..3) where the data set has several.
        subset: 'train' or 'test' ('val' too for Kinetics).

    Returns:
        Split with records in file order, every record's video existing inside root; bad entries in
        problems (LabelConflicts among them: `require_consistent`).
    Raises:
        UserError: see the module docstring (a path leaving root, an unfinished prepared copy, ...).
    """
    if dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r} is not known; use one of {', '.join(DATASETS)}")
    root = Path(root).expanduser().absolute()
    _require_dir(root, f"the {dataset} videos")
    require_finished(root)
    return DATASETS[dataset](root, Path(annotations).expanduser().absolute(), split, subset)


SUBSETS = {"ucf101": ("train", "test"), "hmdb51": ("train", "test"), "kinetics": ("train", "val", "test"),
           "csv": ("train",)}  # csv ignores the subset: one list


def read_all_subsets(dataset: str, *, root: str | Path, annotations: str | Path, split: int = 1,
                     test_annotations: str | Path | None = None) -> Split:
    """Every subset of one split in one Split (e.g. for flow extraction), each video once.

    A Kinetics CSV that lacks a subset's rows contributes nothing for it. A csv data set keeps each
    list in a file of its own: `test_annotations` adds the held-out one (as `read_train_test` reads it).
    A video in two subsets, or two subsets' videos sharing an id, is a LabelConflict among the problems
    (the caller decides: `data check` lists them, `require_consistent` refuses them).
    """
    if dataset == "csv" and test_annotations is not None:
        parts = list(zip(("train list", "test list"),
                         _train_test(dataset, root=root, annotations=annotations, test_annotations=test_annotations)))
    else:
        parts = [(f"{subset} list", read_split(dataset, root=root, annotations=annotations, split=split,
                                               subset=subset))
                 for subset in (SUBSETS[dataset] if dataset in SUBSETS else ("train",))]
    records, problems, seen, class_names = [], [], set(), []
    for _, part in parts:
        class_names = class_names or part.class_names
        records += [r for r in part.records if r.path not in seen]
        seen.update(r.path for r in part.records)
        problems += part.problems
    return Split(records, class_names, problems + _cross_list_conflicts(parts))


def _train_test(dataset: str, *, root: str | Path, annotations: str | Path, split: int = 1,
                test_annotations: str | Path | None = None) -> tuple[Split, Split]:
    """`read_train_test` without its refusal of LabelConflicts."""
    train = read_split(dataset, root=root, annotations=annotations, split=split, subset="train")
    if dataset == "csv":
        if test_annotations is None:
            raise UserError("a csv data set needs a second, held-out list to test on (data.test_annotations)")
        test = read_split(dataset, root=root, annotations=test_annotations)
        return train, _relabel(test, train.class_names, Path(test_annotations))
    subset = "val" if dataset == "kinetics" else "test"
    return train, read_split(dataset, root=root, annotations=annotations, split=split, subset=subset)


def read_train_test(dataset: str, *, root: str | Path, annotations: str | Path, split: int = 1,
                    test_annotations: str | Path | None = None) -> tuple[Split, Split]:
    """The (train, test) pair a training run uses.

    Test is the 'test' subset, except for Kinetics, whose test rows carry no labels: the papers
    report its 'val' subset. A csv data set is one list, so its held-out list is `test_annotations`.

    Raises:
        UserError naming the first LabelConflict (of either list, or between them: a video in both)
        and its fix; missing videos stay problems (left out, as before).
    """
    train, test = _train_test(dataset, root=root, annotations=annotations, split=split,
                              test_annotations=test_annotations)
    test = test._replace(problems=test.problems + _cross_list_conflicts([("train list", train), ("test list", test)]))
    require_consistent(train, test)
    return train, test


class RunSplits(NamedTuple):
    """The lists one training run reads."""
    train: Split  # what it trains on (less the val list)
    val: Split | None  # what it selects on (data.val); None: no val list, the test list stands in
    test: Split  # scored once, for what was selected


def read_run_splits(dataset: str, *, root: str | Path, annotations: str | Path, split: int = 1,
                    test_annotations: str | Path | None = None, val=None) -> RunSplits:
    """`read_train_test`, plus the validation list `val` asks for (orchestrator/data/val_split.py).

    Args:
        val: the experiment's `data.val` (by, fraction, seed) or None. Kinetics' by 'list' validates
            on its own val rows and tests on its labelled test rows.
    Raises:
        UserError, as `read_train_test` (LabelConflicts) and `read_split` (paths leaving the root, an
        unfinished prepared copy): what training's preflight and its workers both call.
    """
    from orchestrator.data.val_split import carve_val, resolve_by

    train, test = read_train_test(dataset, root=root, annotations=annotations, split=split,
                                  test_annotations=test_annotations)
    if val is None:
        return RunSplits(train, None, test)
    by = resolve_by(dataset, train.records, val.by)
    if by == "list":  # kinetics: its val rows validate, its labelled test rows test
        labelled = read_split(dataset, root=root, annotations=annotations, split=split, subset="test")
        unlabelled = [r for r in labelled.records if r.label < 0]
        if len(unlabelled) == len(labelled.records):
            raise UserError(f"{annotations}: Kinetics' test rows carry no labels ({len(unlabelled)} rows), so with "
                            "data.val.by 'list' (its val list validates) nothing is left to test on; use the release "
                            "with test labels, or data.val.by: video (carve val from train, test on the val list)")
        problems = labelled.problems + [Problem(r.path, "test row without a label: not scored") for r in unlabelled]
        scored = Split([r for r in labelled.records if r.label >= 0], labelled.class_names, problems)
        scored.problems.extend(_cross_list_conflicts([("train list", train), ("val list", test),
                                                      ("test list", scored)]))
        require_consistent(scored)
        for name, held in (("val list", test), ("test list", scored)):
            if shared := shared_sources(train, held):
                logger.warning("%s: %d clip(s) of the %s come from YouTube videos the train list also has clips of "
                               "(e.g. %s): the official lists as they are, the same footage on both sides",
                               annotations, len(shared), name, shared[0].path)
        return RunSplits(train, test, scored)
    kept, held = carve_val(train.records, by=by, fraction=val.fraction, seed=val.seed)
    return RunSplits(Split(kept, train.class_names, train.problems), Split(held, train.class_names, []), test)


def shared_sources(train: Split, held: Split) -> list[VideoRecord]:
    """The records of `held` whose group (a Kinetics clip's YouTube video, a csv row's `group`) the
    training list also holds: the same footage on both sides of a split."""
    seen = {r.group for r in train.records if r.group}
    return [r for r in held.records if r.group and r.group in seen]


def _relabel(split: Split, class_names: list[str], origin: Path) -> Split:
    """`split` with labels indexing `class_names` (a separate CSV sorts only its own classes);
    a class the training list lacks becomes a problem."""
    records, problems = [], list(split.problems)
    for record in split.records:
        name = split.class_names[record.label]
        if name in class_names:
            records.append(record._replace(label=class_names.index(name)))
        else:
            problems.append(Problem(record.path, f"class {name!r} (from {origin}) is not in the training list"))
    return Split(records, list(class_names), problems)
