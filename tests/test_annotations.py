"""Split readers on small copies of the official layouts (empty placeholder videos: only paths matter)."""
from pathlib import Path

import pytest

from orchestrator.data.annotations import DATASETS, Problem, VideoRecord, read_split
from orchestrator.errors import UserError

UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]
HMDB_CLASSES = ["brush_hair", "cartwheel"]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def _write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path


def _ucf_name(class_name: str, group: int) -> str:
    return f"{class_name}/v_{class_name}_g{group:02d}_c01.avi"


@pytest.fixture()
def ucf(tmp_path):
    """Three groups per class; split k tests on group k, like the official lists (CRLF included)."""
    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    for name in UCF_CLASSES:
        for group in (1, 2, 3):
            _touch(root / _ucf_name(name, group))
    _write(lists / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(UCF_CLASSES)], "\r\n")
    for k in (1, 2, 3):
        train = [f"{_ucf_name(n, g)} {i + 1}" for i, n in enumerate(UCF_CLASSES) for g in (1, 2, 3) if g != k]
        _write(lists / f"trainlist{k:02d}.txt", train, "\r\n")
        _write(lists / f"testlist{k:02d}.txt", [_ucf_name(n, k) for n in UCF_CLASSES], "\r\n")
    return root, lists


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_reads_every_official_split(ucf, split):
    root, lists = ucf
    train = read_split("ucf101", root=root, annotations=lists, split=split, subset="train")
    test = read_split("ucf101", root=root, annotations=lists, split=split, subset="test")
    assert train.class_names == test.class_names == UCF_CLASSES
    assert train.problems == test.problems == []
    expected_train = [
        VideoRecord(root / _ucf_name(n, g), i, _ucf_name(n, g)[: -len(".avi")])
        for i, n in enumerate(UCF_CLASSES) for g in (1, 2, 3) if g != split
    ]
    assert train.records == expected_train
    assert test.records == [VideoRecord(root / _ucf_name(n, split), i, _ucf_name(n, split)[:-4])
                            for i, n in enumerate(UCF_CLASSES)]


def test_ucf101_record_fields_are_absolute_paths_and_slash_ids(ucf, monkeypatch):
    root, lists = ucf
    monkeypatch.chdir(root.parent)
    split = read_split("ucf101", root="UCF-101", annotations="ucfTrainTestlist", split=1, subset="test")
    assert split.records[0] == VideoRecord(
        root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01")
    assert split.records[0].path.is_absolute()


def test_ucf101_bad_entries_become_problems(ucf):
    root, lists = ucf
    train_file = _write(lists / "trainlist01.txt", [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1",
        "just-a-path.avi",
        "YoYo/v_YoYo_g02_c01.avi 99",
        "YoYo/v_YoYo_g09_c01.avi 3",
        "YoYo/v_YoYo_g03_c01.avi three",
    ])
    split = read_split("ucf101", root=root, annotations=lists, split=1, subset="train")
    assert split.records == [VideoRecord(root / _ucf_name("ApplyEyeMakeup", 2), 0, _ucf_name("ApplyEyeMakeup", 2)[:-4])]
    assert [p.path for p in split.problems] == [train_file, train_file, root / "YoYo/v_YoYo_g09_c01.avi", train_file]
    reasons = [p.reason for p in split.problems]
    assert reasons[0].startswith("line 2: expected") and "just-a-path.avi" in reasons[0]
    assert reasons[1] == "line 3: label '99' is not a class number of classInd.txt (1..3)"
    assert reasons[2] == "video file not found (listed in trainlist01.txt line 4)"
    assert reasons[3].startswith("line 5: label 'three'")

    test_file = _write(lists / "testlist01.txt", ["Juggling/v_Juggling_g01_c01.avi", _ucf_name("YoYo", 1)])
    split = read_split("ucf101", root=root, annotations=lists, split=1, subset="test")
    assert split.records == [VideoRecord(root / _ucf_name("YoYo", 1), 2, _ucf_name("YoYo", 1)[:-4])]
    assert split.problems == [Problem(test_file, "line 1: unknown class 'Juggling' (not in classInd.txt)")]


@pytest.mark.parametrize("kwargs, message", [
    (dict(split=4), "use one of 1, 2, 3"),
    (dict(split=0), "use one of 1, 2, 3"),
    (dict(subset="val"), "use one of train, test"),
])
def test_ucf101_bad_split_or_subset_is_a_user_error(ucf, kwargs, message):
    root, lists = ucf
    with pytest.raises(UserError, match=message):
        read_split("ucf101", root=root, annotations=lists, **kwargs)


def test_missing_annotations_are_user_errors_naming_the_path(ucf, tmp_path):
    root, lists = ucf
    with pytest.raises(UserError, match="nowhere.*directory not found.*ucfTrainTestlist"):
        read_split("ucf101", root=root, annotations=tmp_path / "nowhere")
    (lists / "testlist02.txt").unlink()
    with pytest.raises(UserError, match="testlist02.txt: file not found"):
        read_split("ucf101", root=root, annotations=lists, split=2, subset="test")
    (lists / "classInd.txt").unlink()
    with pytest.raises(UserError, match="classInd.txt: file not found"):
        read_split("ucf101", root=root, annotations=lists)
    with pytest.raises(UserError, match="no-videos: directory not found"):
        read_split("ucf101", root=tmp_path / "no-videos", annotations=lists)
    with pytest.raises(UserError, match="use one of ucf101, hmdb51, kinetics, csv"):
        read_split("ucf-101", root=root, annotations=lists)
    assert sorted(DATASETS) == ["csv", "hmdb51", "kinetics", "ucf101"]


# HMDB-51: tag of (class, video number) per split, 1 = train, 2 = test, 0 = unused.
HMDB_TAGS = {1: [1, 2, 0], 2: [2, 1, 1], 3: [0, 1, 2]}


def _hmdb_file(class_name: str, number: int) -> str:
    return f"{class_name}_clip_{number}_f_cm_np1_fr_med_0.avi"


@pytest.fixture()
def hmdb(tmp_path):
    root, splits = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    for name in HMDB_CLASSES:
        for number in range(3):
            _touch(root / name / _hmdb_file(name, number))
        for k, tags in HMDB_TAGS.items():
            _write(splits / f"{name}_test_split{k}.txt", [f"{_hmdb_file(name, n)} {t} " for n, t in enumerate(tags)])
    return root, splits


@pytest.mark.parametrize("split", [1, 2, 3])
@pytest.mark.parametrize("subset, tag", [("train", 1), ("test", 2)])
def test_hmdb51_reads_every_official_split(hmdb, split, subset, tag):
    root, splits = hmdb
    result = read_split("hmdb51", root=root, annotations=splits, split=split, subset=subset)
    assert result.class_names == HMDB_CLASSES
    assert result.problems == []
    assert result.records == [
        VideoRecord(root / c / _hmdb_file(c, n), label, f"{c}/{_hmdb_file(c, n)[:-4]}")
        for label, c in enumerate(HMDB_CLASSES) for n, t in enumerate(HMDB_TAGS[split]) if t == tag
    ]


def test_hmdb51_bad_entries_and_missing_files(hmdb, tmp_path):
    root, splits = hmdb
    bad = _write(splits / "cartwheel_test_split1.txt", [
        f"{_hmdb_file('cartwheel', 0)} 1", "broken_line", f"{_hmdb_file('cartwheel', 1)} 7", "gone.avi 1"])
    result = read_split("hmdb51", root=root, annotations=splits, split=1, subset="train")
    assert [r.video_id for r in result.records] == [f"brush_hair/{_hmdb_file('brush_hair', 0)[:-4]}",
                                                    f"cartwheel/{_hmdb_file('cartwheel', 0)[:-4]}"]
    assert result.problems == [
        Problem(bad, "line 2: expected '<video file> <0|1|2>', got 'broken_line'"),
        Problem(bad, f"line 3: expected '<video file> <0|1|2>', got '{_hmdb_file('cartwheel', 1)} 7'"),
        Problem(root / "cartwheel/gone.avi", "video file not found (listed in cartwheel_test_split1.txt line 4)"),
    ]
    with pytest.raises(UserError, match="no '<class>_test_split1.txt' files"):
        read_split("hmdb51", root=root, annotations=root)
    with pytest.raises(UserError, match="use one of 1, 2, 3"):
        read_split("hmdb51", root=root, annotations=splits, split=5)


KINETICS_HEADER = "label,youtube_id,time_start,time_end,split"


def _clip(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}.mp4"


@pytest.fixture()
def kinetics(tmp_path):
    """Every accepted layout at once: root/<subset>/<label>/ (raw and '_' label), root/<subset>/, root/."""
    root = tmp_path / "kinetics"
    _touch(root / "train/abseiling" / _clip("aaa", 14, 24))
    _touch(root / "train/air_drumming" / _clip("bbb", 0, 10))
    _touch(root / "train/zumba" / _clip("zzz", 5, 15))
    _touch(root / "val" / _clip("ccc", 30, 40))
    _touch(root / _clip("ddd", 1, 11))
    csv_file = _write(tmp_path / "kinetics.csv", [
        KINETICS_HEADER,
        "zumba,zzz,5,15,train",
        "abseiling,aaa,14,24,train",
        "air drumming,bbb,0,10,train",
        "air drumming,ccc,30,40,val",
        "abseiling,missing,0,10,val",
        "yodelling,eee,0,10,val",
        ",fff,0,10,val",
        "abseiling,ggg,ten,20,val",
        ",ddd,1,11,test",
    ])
    return root, csv_file


def test_kinetics_subsets_share_the_train_class_indices(kinetics):
    root, csv_file = kinetics
    train = read_split("kinetics", root=root, annotations=csv_file, subset="train")
    assert train.class_names == ["abseiling", "air drumming", "zumba"]
    assert train.problems == []
    assert train.records == [
        # a clip's group is its YouTube video
        VideoRecord(root / "train/zumba" / _clip("zzz", 5, 15), 2, "train/zumba/zzz_000005_000015", "zzz"),
        VideoRecord(root / "train/abseiling" / _clip("aaa", 14, 24), 0, "train/abseiling/aaa_000014_000024", "aaa"),
        VideoRecord(root / "train/air_drumming" / _clip("bbb", 0, 10), 1, "train/air_drumming/bbb_000000_000010",
                    "bbb"),
    ]
    val = read_split("kinetics", root=root, annotations=csv_file, subset="val", split=3)  # split number ignored
    assert val.class_names == train.class_names
    assert val.records == [VideoRecord(root / "val" / _clip("ccc", 30, 40), 1, "val/ccc_000030_000040", "ccc")]
    assert [(p.path, p.reason) for p in val.problems] == [
        (root / "val/abseiling" / _clip("missing", 0, 10),
         f"video file not found (listed in kinetics.csv line 6; also looked in {root / 'val'} and {root})"),
        (csv_file, "line 7: unknown class 'yodelling' (no train row has that label)"),
        (csv_file, "line 8: unlabeled val row (fff)"),
        (csv_file, "line 9: time_start/time_end must be whole seconds, got 'ten', '20'"),
    ]
    test = read_split("kinetics", root=root, annotations=csv_file, subset="test")
    assert test.records == [VideoRecord(root / _clip("ddd", 1, 11), -1, "ddd_000001_000011", "ddd")]
    assert test.problems == []


def test_kinetics_reads_a_folder_of_official_csvs(kinetics, tmp_path):
    root, _ = kinetics
    folder = tmp_path / "annotations"
    _write(folder / "train.csv", [KINETICS_HEADER, "abseiling,aaa,14,24,train", "air drumming,bbb,0,10,train"])
    _write(folder / "validate.csv", [KINETICS_HEADER, "air drumming,ccc,30,40,val"])
    _write(folder / "test.csv", ["youtube_id,time_start,time_end,split", "ddd,1,11,test"])  # no label column
    val = read_split("kinetics", root=root, annotations=folder, subset="val")
    assert val.class_names == ["abseiling", "air drumming"]
    assert val.records == [VideoRecord(root / "val" / _clip("ccc", 30, 40), 1, "val/ccc_000030_000040", "ccc")]
    test = read_split("kinetics", root=root, annotations=folder, subset="test")
    assert [(r.label, r.video_id) for r in test.records] == [(-1, "ddd_000001_000011")]


def test_kinetics_user_errors(kinetics, tmp_path):
    root, csv_file = kinetics
    with pytest.raises(UserError, match="use one of train, val, test"):
        read_split("kinetics", root=root, annotations=csv_file, subset="validation")
    with pytest.raises(UserError, match="nope.csv: file not found"):
        read_split("kinetics", root=root, annotations=tmp_path / "nope.csv")
    bad = _write(tmp_path / "bad.csv", ["label,youtube_id,start,end,split"])
    with pytest.raises(UserError, match="bad.csv: missing column\\(s\\) time_start, time_end"):
        read_split("kinetics", root=root, annotations=bad)


def test_csv_reader(tmp_path):
    root = tmp_path / "videos"
    _touch(root / "b/clip1.mp4")
    _touch(root / "a/clip2.mp4")
    _touch(root / "clip3.avi")
    csv_file = _write(tmp_path / "list.csv", [
        "path,label", "b/clip1.mp4,running", "a/clip2.mp4,jumping", "clip3.avi,running",
        "gone.mp4,jumping", "b/clip1.mp4,",
    ])
    # split and subset are ignored by this reader
    split = read_split("csv", root=root, annotations=csv_file, split=7, subset="anything")
    assert split.class_names == ["jumping", "running"]
    assert split.records == [
        VideoRecord(root / "b/clip1.mp4", 1, "b/clip1"),
        VideoRecord(root / "a/clip2.mp4", 0, "a/clip2"),
        VideoRecord(root / "clip3.avi", 1, "clip3"),
    ]
    assert split.problems == [
        Problem(root / "gone.mp4", "video file not found (listed in list.csv line 5)"),
        Problem(csv_file, "line 6: unlabeled row (b/clip1.mp4)"),
    ]
    absolute = _write(tmp_path / "absolute.csv", ["path,label", "b/clip1.mp4,running", "/abs/clip.mp4,running"])
    with pytest.raises(UserError, match=f"absolute.csv line 3: path '/abs/clip.mp4' is absolute; list paths "
                                        f"relative to the data root {root}"):
        read_split("csv", root=root, annotations=absolute)
    no_header = _write(tmp_path / "no_header.csv", ["b/clip1.mp4,running"])
    with pytest.raises(UserError, match="no_header.csv: missing column\\(s\\) path, label"):
        read_split("csv", root=root, annotations=no_header)


def test_csv_train_test_pair_shares_the_training_class_indices(tmp_path):
    from orchestrator.data.annotations import read_train_test

    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "train.csv").write_text("path,label\na.mp4,Jump\nb.mp4,Run\nc.mp4,Swim\n")
    (tmp_path / "test.csv").write_text("path,label\nd.mp4,Swim\nb.mp4,Fly\n")
    train, test = read_train_test("csv", root=tmp_path, annotations=tmp_path / "train.csv",
                                  test_annotations=tmp_path / "test.csv")
    assert train.class_names == test.class_names == ["Jump", "Run", "Swim"]
    assert [(r.video_id, r.label) for r in test.records] == [("d", 2)]
    assert [p.reason for p in test.problems] == ["class 'Fly' (from %s) is not in the training list" % (tmp_path / "test.csv")]
