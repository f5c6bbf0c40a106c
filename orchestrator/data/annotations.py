"""Reading a data set's split files into (video path, label) records.

One reader per layout that users really have on disk, registered by name in `DATASETS`:

- 'ucf101': the official `ucfTrainTestlist` folder (classInd.txt, trainlist0N.txt, testlist0N.txt).
- 'hmdb51': the official `testTrainMulti_7030_splits` folder (`<class>_test_splitN.txt`).
- 'kinetics': the official CSV(s) `label,youtube_id,time_start,time_end,split`.
- 'csv': a plain `path,label` CSV for any other data set.

Bad entries never stop reading: a malformed line, an unknown class, an unlabeled row or a video
file that does not exist becomes a `Problem` and the entry is left out of `records`, so that
`actionlab data check` can list every problem at once. Only a missing annotation file or folder,
or a bad `split` / `subset` argument, is a `UserError`.
"""
import csv
from pathlib import Path
from typing import Callable, NamedTuple

from orchestrator.errors import UserError

SPLIT_NUMBERS = (1, 2, 3)  # UCF-101 and HMDB-51 both ship three official train/test splits


class VideoRecord(NamedTuple):
    path: Path  # absolute path of the video file, or of its JPEG frame folder (`actionlab data prepare`)
    label: int  # index into Split.class_names; -1 only where the data set has no labels (Kinetics test)
    video_id: str  # path relative to the video root, no suffix, '/'-separated: key of flow caches and score files
    group: str = ""  # clips that share actors / scene (a csv `group` column); UCF-101's is in the name (val_split)


class Problem(NamedTuple):
    path: Path  # the offending video, or the annotation file for a malformed line ('line N' in reason)
    reason: str


class Split(NamedTuple):
    records: list[VideoRecord]
    class_names: list[str]
    problems: list[Problem]


def _video_id(path: Path, root: Path) -> str:
    relative = path.relative_to(root)  # a frame folder's name is already the video's, less its suffix
    return (relative if path.is_dir() else relative.with_suffix("")).as_posix()


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise UserError(f"{path}: directory not found; expected {what} there")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise UserError(f"{path}: file not found; expected {what}")


def _check_subset(dataset: str, subset: str, valid: tuple[str, ...]) -> None:
    if subset not in valid:
        raise UserError(f"subset {subset!r} is not one of {dataset}'s subsets; use one of {', '.join(valid)}")


def _check_split_number(dataset: str, split: int) -> None:
    if split not in SPLIT_NUMBERS:
        valid = ", ".join(map(str, SPLIT_NUMBERS))
        raise UserError(f"split {split!r} is not one of {dataset}'s official splits; use one of {valid}")


def _numbered_lines(path: Path):
    """(line number, whitespace-stripped text) of every non-blank line; the official files use CRLF."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line.strip()


def _add_if_exists(video: Path, label: int, root: Path, origin: str, split: Split, group: str = "") -> None:
    if video.is_file() or video.is_dir():  # a folder: JPEG frames (`actionlab data prepare --format frames`)
        split.records.append(VideoRecord(video, label, _video_id(video, root), group))
    else:
        split.problems.append(Problem(video, f"video file not found (listed in {origin})"))


def read_ucf101(root: Path, annotations: Path, split: int, subset: str) -> Split:
    """UCF-101 (Soomro et al. 2012): videos at root/<Class>/v_<Class>_gXX_cYY.avi.

    `annotations` is the ucfTrainTestlist folder. classInd.txt maps 1-based numbers to class
    names; trainlist0N.txt lines carry a 1-based label, testlist0N.txt lines only the path (the
    label is that of the class folder).
    """
    _check_split_number("ucf101", split)
    _check_subset("ucf101", subset, ("train", "test"))
    _require_dir(annotations, "the UCF-101 ucfTrainTestlist folder (classInd.txt, trainlist01.txt, ...)")
    class_file = annotations / "classInd.txt"
    list_file = annotations / f"{subset}list{split:02d}.txt"
    _require_file(class_file, "UCF-101's class list ('1 ApplyEyeMakeup' per line)")
    _require_file(list_file, f"UCF-101's {subset} list of split {split}")

    out = Split([], [], [])
    for number, line in _numbered_lines(class_file):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise UserError(f"{class_file} line {number}: expected '<number> <ClassName>', got {line!r}")
        out.class_names.append(fields[1])
    index_of = {name: i for i, name in enumerate(out.class_names)}

    for number, line in _numbered_lines(list_file):
        fields = line.split()
        where = f"{list_file.name} line {number}"
        if len(fields) != (2 if subset == "train" else 1):
            expected = "'<Class>/<video>.avi <label>'" if subset == "train" else "'<Class>/<video>.avi'"
            out.problems.append(Problem(list_file, f"line {number}: expected {expected}, got {line!r}"))
            continue
        class_name = fields[0].split("/")[0]
        if subset == "train":
            if not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(out.class_names):
                out.problems.append(Problem(
                    list_file, f"line {number}: label {fields[1]!r} is not a class number of classInd.txt "
                               f"(1..{len(out.class_names)})"))
                continue
            label = int(fields[1]) - 1
        elif class_name in index_of:
            label = index_of[class_name]
        else:
            out.problems.append(Problem(list_file, f"line {number}: unknown class {class_name!r} "
                                                   "(not in classInd.txt)"))
            continue
        _add_if_exists(root / fields[0], label, root, where, out)
    return out


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

    out = Split([], [f.name[: -len(suffix)] for f in split_files], [])
    for label, (class_name, split_file) in enumerate(zip(out.class_names, split_files)):
        for number, line in _numbered_lines(split_file):
            fields = line.rsplit(maxsplit=1)  # rsplit: the tag is last, whatever the file name holds
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                out.problems.append(Problem(
                    split_file, f"line {number}: expected '<video file> <0|1|2>', got {line!r}"))
                continue
            if fields[1] == wanted_tag:
                _add_if_exists(root / class_name / fields[0], label, root, f"{split_file.name} line {number}", out)
    return out


def _kinetics_video(root: Path, subset: str, label: str, file_name: str) -> Path | None:
    """The clip's file, or its JPEG frame folder (the file name less .mp4, `actionlab data prepare`)."""
    candidates = [root / subset / label / file_name, root / subset / label.replace(" ", "_") / file_name,
                  root / subset / file_name, root / file_name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.with_suffix("").is_dir():
            return candidate.with_suffix("")
    return None


def _read_csv_rows(path: Path, required: tuple[str, ...], what: str):
    """(file, line number, row dict) of every data row; a missing column is a UserError."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected the header {what}")
        for row in reader:
            yield path, reader.line_num, row


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

    out = Split([], sorted({row["label"] for _, _, row in rows if row["split"] == "train" and row.get("label")}), [])
    index_of = {name: i for i, name in enumerate(out.class_names)}
    for csv_file, number, row in rows:
        if row["split"] != subset:
            continue
        label_name = (row.get("label") or "").strip()
        try:
            file_name = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
        except (TypeError, ValueError):
            out.problems.append(Problem(csv_file, f"line {number}: time_start/time_end must be whole seconds, "
                                                  f"got {row['time_start']!r}, {row['time_end']!r}"))
            continue
        if not label_name and subset != "test":
            out.problems.append(Problem(csv_file, f"line {number}: unlabeled {subset} row ({row['youtube_id']})"))
            continue
        if label_name and label_name not in index_of:
            out.problems.append(Problem(csv_file, f"line {number}: unknown class {label_name!r} "
                                                  "(no train row has that label)"))
            continue
        video = _kinetics_video(root, subset, label_name, file_name)
        if video is None:
            out.problems.append(Problem(root / subset / label_name / file_name,
                                        f"video file not found (listed in {csv_file.name} line {number}; "
                                        f"also looked in {root / subset} and {root})"))
            continue
        out.records.append(VideoRecord(video, index_of.get(label_name, -1), _video_id(video, root)))
    return out


def read_csv(root: Path, annotations: Path, split: int, subset: str) -> Split:
    """Any data set listed in a CSV with the header `path,label` (and optionally `group`).

    `path` is relative to `root`, `label` a class name; the classes are the sorted distinct names.
    `group` names clips that share actors or scene, so a validation list holds whole groups.
    `split` and `subset` are ignored: keep one CSV per subset.
    """
    _require_file(annotations, "a CSV with the header 'path,label'")
    rows = list(_read_csv_rows(annotations, ("path", "label"), "path,label"))
    out = Split([], sorted({row["label"].strip() for _, _, row in rows if (row["label"] or "").strip()}), [])
    index_of = {name: i for i, name in enumerate(out.class_names)}
    for _, number, row in rows:
        rel, label_name = (row["path"] or "").strip(), (row["label"] or "").strip()
        if not rel or Path(rel).is_absolute():
            out.problems.append(Problem(annotations, f"line {number}: path {rel!r} must be relative to {root}"))
        elif not label_name:
            out.problems.append(Problem(annotations, f"line {number}: unlabeled row ({rel})"))
        else:
            _add_if_exists(root / rel, index_of[label_name], root, f"{annotations.name} line {number}", out,
                           group=(row.get("group") or "").strip())
    return out


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
        Split with records in file order, every record's video existing; bad entries in problems.
    """
    if dataset not in DATASETS:
        raise UserError(f"dataset {dataset!r} is not known; use one of {', '.join(DATASETS)}")
    root = Path(root).expanduser().absolute()
    _require_dir(root, f"the {dataset} videos")
    return DATASETS[dataset](root, Path(annotations).expanduser().absolute(), split, subset)


SUBSETS = {"ucf101": ("train", "test"), "hmdb51": ("train", "test"), "kinetics": ("train", "val", "test"),
           "csv": ("train",)}  # csv ignores the subset: one list


def read_all_subsets(dataset: str, *, root: str | Path, annotations: str | Path, split: int = 1) -> Split:
    """Every subset of one split in one Split (e.g. for flow extraction), each video once.

    A Kinetics CSV that lacks a subset's rows contributes nothing for it.
    """
    records, problems, seen, class_names = [], [], set(), []
    for subset in SUBSETS[dataset] if dataset in SUBSETS else ("train",):
        part = read_split(dataset, root=root, annotations=annotations, split=split, subset=subset)
        class_names = class_names or part.class_names
        records += [r for r in part.records if r.path not in seen]
        seen.update(r.path for r in part.records)
        problems += part.problems
    return Split(records, class_names, problems)


def read_train_test(dataset: str, *, root: str | Path, annotations: str | Path, split: int = 1,
                    test_annotations: str | Path | None = None) -> tuple[Split, Split]:
    """The (train, test) pair a training run uses.

    Test is the 'test' subset, except for Kinetics, whose test rows carry no labels: the papers
    report its 'val' subset. A csv data set is one list, so its held-out list is `test_annotations`.
    """
    train = read_split(dataset, root=root, annotations=annotations, split=split, subset="train")
    if dataset == "csv":
        if test_annotations is None:
            raise UserError("a csv data set needs a second, held-out list to test on (data.test_annotations)")
        test = read_split(dataset, root=root, annotations=test_annotations)
        return train, _relabel(test, train.class_names, Path(test_annotations))
    subset = "val" if dataset == "kinetics" else "test"
    return train, read_split(dataset, root=root, annotations=annotations, split=split, subset=subset)


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
        return RunSplits(train, test, Split([r for r in labelled.records if r.label >= 0], labelled.class_names,
                                            problems))
    kept, held = carve_val(train.records, by=by, fraction=val.fraction, seed=val.seed)
    return RunSplits(Split(kept, train.class_names, train.problems), Split(held, train.class_names, []), test)


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
