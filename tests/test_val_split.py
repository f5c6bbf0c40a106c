"""The validation list carved from a training list (orchestrator/data/val_split.py, annotations.read_run_splits)
and the late-fusion rule chosen on it (orchestrator.late_fusion.choose_fusion)."""
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config import parse_experiment
from orchestrator.data.annotations import VideoRecord, read_run_splits
from orchestrator.data.val_split import carve_val, hmdb_source, record_group, resolve_by
from orchestrator.errors import UserError
from orchestrator.late_fusion import choose_fusion, fuse_scores
from orchestrator.plan import plan
from orchestrator.runs import VideoScores


class Val:  # what read_run_splits reads of data.val
    def __init__(self, by="auto", fraction=0.2, seed=0):
        self.by, self.fraction, self.seed = by, fraction, seed


def _ucf_records(classes=4, groups=18, clips=4):
    return [VideoRecord(Path(f"/v/{c}/{g}/{k}"), c, f"C{c}/v_C{c}_g{g:02d}_c{k:02d}")
            for c in range(classes) for g in range(8, 8 + groups) for k in range(1, clips + 1)]


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_no_ucf_group_is_on_both_sides_of_the_val_split(fraction, seed):
    records = _ucf_records()
    train, val = carve_val(records, by="group", fraction=fraction, seed=seed)
    train_groups, val_groups = {record_group(r) for r in train}, {record_group(r) for r in val}
    assert train_groups.isdisjoint(val_groups)
    assert len(val_groups) == max(1, round(fraction * 18))
    assert sorted(train + val, key=records.index) == records  # nothing lost, nothing twice
    assert {r.label for r in val} == set(range(4))  # a UCF group spans every class


def test_the_val_list_is_a_function_of_the_seed_alone():
    records = _ucf_records()
    first = carve_val(records, by="group", fraction=0.2, seed=1)[1]
    assert first == carve_val(list(reversed(records)), by="group", fraction=0.2, seed=1)[1][::-1]
    assert first != carve_val(records, by="group", fraction=0.2, seed=2)[1]


def test_by_video_holds_out_a_share_of_every_class():
    records = [VideoRecord(Path(f"/v/{c}/{i}"), c, f"c{c}/clip{i}") for c in range(3) for i in range(10 + 5 * c)]
    train, val = carve_val(records, by="video", fraction=0.2, seed=0)
    counts = {c: sum(r.label == c for r in val) for c in range(3)}
    assert counts == {0: 2, 1: 3, 2: 4}  # round(0.2 x 10, 15, 20)
    assert not {r.video_id for r in train} & {r.video_id for r in val}
    assert len(train) + len(val) == len(records)


def test_a_single_group_cannot_be_split_and_the_error_says_what_to_do():
    records = [r for r in _ucf_records(groups=1)]
    with pytest.raises(UserError, match="data.val.by: video"):
        carve_val(records, by="group", fraction=0.2, seed=0)


@pytest.mark.parametrize("dataset,groups,by", [("ucf101", "", "group"), ("hmdb51", "", "group"),
                                                ("kinetics", "", "list"), ("csv", "g1", "group"),
                                                ("csv", "", "video"), ("csv", "g1,", "group")])
def test_auto_picks_each_data_sets_unit(dataset, groups, by):
    """csv: a `group` column is honoured as soon as one row fills it (a row left blank is then refused,
    below), never dropped for the whole list."""
    records = [VideoRecord(Path(f"/v/{i}"), 0, f"{i}", group) for i, group in enumerate(groups.split(","))]
    assert resolve_by(dataset, records, "auto") == by


# --- HMDB-51: clips of one source video ------------------------------------------------------------

# (folder = action, file name, source video): HMDB-51's naming, `<source>_<action>_<body part>_<camera
# motion>_<people>_<viewpoint>_<quality>_<clip>`; the first five are files of the release, the rest
# follow its pattern with the actions that hold '_'
HMDB_NAMES = [
    ("brush_hair", "April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "April_09"),
    ("wave", "20060723sfjffbartsinger_wave_f_cm_np1_ba_med_0.avi", "20060723sfjffbartsinger"),
    ("walk", "Veoh_Alpha_Dog_1_walk_f_nm_np1_fr_med_24.avi", "Veoh_Alpha_Dog_1"),
    ("wave", "winKen_wave_u_cm_np1_ri_bad_0.avi", "winKen"),
    ("punch", "Aussie_Brutal_Kung_Fu_Flick_punch_u_cm_np1_fr_med_4.avi", "Aussie_Brutal_Kung_Fu_Flick"),
    ("draw_sword", "Kill_Bill_Vol_2_draw_sword_u_cm_np1_le_goo_2.avi", "Kill_Bill_Vol_2"),
    ("fall_floor", "Parkour_Fails_fall_floor_f_cm_np1_ri_bad_11.avi", "Parkour_Fails"),
    ("ride_bike", "BMX_ride_ride_bike_f_cm_np2_le_med_0.avi", "BMX_ride"),  # the source ends in a word of the action
    ("ride_horse", "Rodeo_Day_ride_horse_f_nm_np3_fr_goo_1.avi", "Rodeo_Day"),
    ("shoot_ball", "NBA_Dunks_shoot_ball_h_cm_np1_ba_med_7.avi", "NBA_Dunks"),
    ("shoot_bow", "archery_lesson_shoot_bow_l_nm_np1_ri_goo_3.avi", "archery_lesson"),
    ("shoot_gun", "shoot_gun_range_shoot_gun_u_nm_np1_fr_bad_0.avi", "shoot_gun_range"),  # the action in the source
    ("sword_exercise", "Tai_Chi_Sword_sword_exercise_f_nm_np1_fr_goo_5.avi", "Tai_Chi_Sword"),
    ("throw", "Baseball_Pitch_throw_f_cm_np1_le_med_2.avi", "Baseball_Pitch"),
]


@pytest.mark.parametrize("action,name,source", HMDB_NAMES)
def test_an_hmdb_clip_belongs_to_its_source_video(action, name, source):
    video_id = f"{action}/{name[:-len('.avi')]}"
    assert hmdb_source(video_id) == source
    assert record_group(VideoRecord(Path(f"/h/{action}/{name}"), 0, video_id)) == source


@pytest.mark.parametrize("video_id", ["brush_hair/April_09_brush_hair", "a/clip_3", "v_A_g08_c01_x"])
def test_a_name_without_hmdb_tags_has_no_hmdb_source(video_id):
    assert hmdb_source(video_id) == ""


def _hmdb_records(classes=("brush_hair", "draw_sword", "fall_floor", "ride_bike"), sources=6, clips=(1, 2, 3, 5)):
    """Several clips per source video, a varying number; one source (a film) gives clips to two actions."""
    records = []
    for c, action in enumerate(classes):
        for s in range(sources):
            for k in range(clips[(s + c) % len(clips)]):
                name = f"Film_{c}_{s:02d}_{action}_u_cm_np1_fr_med_{k}"
                records.append(VideoRecord(Path(f"/h/{action}/{name}.avi"), c, f"{action}/{name}"))
    for c, action in enumerate(classes[:2]):  # Kill_Bill: a draw_sword clip and a brush_hair clip
        records += [VideoRecord(Path(f"/h/{action}/Kill_Bill_{action}_f_nm_np1_le_goo_{k}.avi"), c,
                                f"{action}/Kill_Bill_{action}_f_nm_np1_le_goo_{k}") for k in range(2)]
    return records


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_no_hmdb_source_video_is_on_both_sides_of_the_val_split(fraction, seed):
    records = _hmdb_records()
    train, val = carve_val(records, by=resolve_by("hmdb51", records, "auto"), fraction=fraction, seed=seed)
    train_sources, val_sources = {hmdb_source(r.video_id) for r in train}, {hmdb_source(r.video_id) for r in val}
    assert "" not in train_sources | val_sources
    assert train_sources.isdisjoint(val_sources)
    assert sorted(train + val, key=records.index) == records
    for c in range(4):  # each class: `fraction` of its own sources (6 each) in val, the rest to train on
        held = {hmdb_source(r.video_id) for r in val if r.label == c} - {"Kill_Bill"}  # a source of two classes
        assert len(held) == max(1, round(fraction * 6))
        assert any(r.label == c for r in train)


def _write_hmdb(root: Path, splits: Path, records) -> None:
    """An HMDB-51 layout of `records`: every video a training video of split 1."""
    lines = {}
    for r in records:
        action, name = r.video_id.split("/")
        _touch(root / action / f"{name}.avi")
        lines.setdefault(action, []).append(f"{name}.avi 1 ")
    splits.mkdir(parents=True, exist_ok=True)
    for action, listed in lines.items():
        _touch(root / action / f"Test_clip_{action}_f_nm_np1_fr_med_0.avi")
        listed.append(f"Test_clip_{action}_f_nm_np1_fr_med_0.avi 2 ")
        (splits / f"{action}_test_split1.txt").write_text("\n".join(listed) + "\n")


def test_hmdb_val_list_read_from_its_split_files_holds_whole_source_videos(tmp_path):
    """What training reads (`read_run_splits`, data.val left at auto) on HMDB-51's own layout."""
    root, splits = tmp_path / "hmdb51_org", tmp_path / "testTrainMulti_7030_splits"
    _write_hmdb(root, splits, _hmdb_records())
    run = read_run_splits("hmdb51", root=root, annotations=splits, val=Val())
    train_sources = {hmdb_source(r.video_id) for r in run.train.records}
    val_sources = {hmdb_source(r.video_id) for r in run.val.records}
    assert val_sources and train_sources.isdisjoint(val_sources)
    assert len(run.train.records) + len(run.val.records) == len(_hmdb_records())


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def test_csv_groups_come_from_its_group_column(tmp_path):
    rows = ["path,label,group"] + [f"{c}/{g}_{k}.mp4,{c},{g}" for c in "ab" for g in ("x", "y", "z") for k in (1, 2)]
    for row in rows[1:]:
        _touch(tmp_path / row.split(",")[0])
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    _touch(tmp_path / "a" / "w_1.mp4")  # a held-out video: one in both lists is refused (annotations.py)
    (tmp_path / "test.csv").write_text("path,label\na/w_1.mp4,a\n")
    run = read_run_splits("csv", root=tmp_path, annotations=tmp_path / "train.csv",
                          test_annotations=tmp_path / "test.csv", val=Val(fraction=0.34))
    val_groups = {r.group for r in run.val.records}
    assert len(val_groups) == 1 and val_groups.isdisjoint({r.group for r in run.train.records})
    assert len(run.val.records) == 4  # one group x 2 classes x 2 clips


def test_a_csv_row_without_a_group_beside_rows_with_one_is_refused_by_name(tmp_path):
    rows = ["path,label,group"] + [f"a/{g}_{k}.mp4,a,{g}" for g in ("x", "y") for k in (1, 2)] + ["a/lone.mp4,a,"]
    for row in rows[1:]:
        _touch(tmp_path / row.split(",")[0])
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    _touch(tmp_path / "a" / "w_1.mp4")
    (tmp_path / "test.csv").write_text("path,label\na/w_1.mp4,a\n")
    with pytest.raises(UserError, match=r"lone\.mp4 has no group .*its own name"):
        read_run_splits("csv", root=tmp_path, annotations=tmp_path / "train.csv",
                        test_annotations=tmp_path / "test.csv", val=Val())


def test_kinetics_validates_on_its_val_rows_and_tests_on_its_labelled_test_rows(tmp_path):
    root = tmp_path / "k400"
    header = "label,youtube_id,time_start,time_end,split"
    rows = [("a", "t1", "train"), ("b", "t2", "train"), ("a", "v1", "val"), ("b", "s1", "test"), ("", "s2", "test")]
    for label, yid, subset in rows:
        _touch(root / subset / (label or "x") / f"{yid}_000000_000010.mp4")
    (tmp_path / "k.csv").write_text("\n".join([header] + [f"{lab},{y},0,10,{s}" for lab, y, s in rows]) + "\n")
    run = read_run_splits("kinetics", root=root, annotations=tmp_path / "k.csv", val=Val())
    assert [r.video_id for r in run.train.records] == ["train/a/t1_000000_000010", "train/b/t2_000000_000010"]
    assert [r.video_id for r in run.val.records] == ["val/a/v1_000000_000010"]
    assert [(r.video_id, r.label) for r in run.test.records] == [("test/b/s1_000000_000010", 1)]
    (tmp_path / "k.csv").write_text("\n".join([header] + [f"{lab},{y},0,10,{s}" for lab, y, s in rows
                                                          if s != "test" or not lab]) + "\n")
    with pytest.raises(UserError, match="no labels.*data.val.by: video"):
        read_run_splits("kinetics", root=root, annotations=tmp_path / "k.csv", val=Val())


def test_kinetics_clips_of_one_youtube_video_are_one_group(tmp_path, caplog):
    """A Kinetics clip's group is its YouTube video: by 'group' carves whole videos, and with the official
    lists (by 'list') clips of a video the train list also has are named in a warning."""
    import logging

    root = tmp_path / "k400"
    header = "label,youtube_id,time_start,time_end,split"
    rows = [("a", "y1", 0, "train"), ("a", "y1", 20, "train"), ("a", "y2", 0, "train"), ("b", "y3", 0, "train"),
            ("b", "y4", 0, "train"), ("b", "y4", 20, "train"), ("a", "y2", 40, "val"), ("b", "y5", 0, "test")]
    for label, yid, start, subset in rows:
        _touch(root / subset / label / f"{yid}_{start:06d}_{start + 10:06d}.mp4")
    (tmp_path / "k.csv").write_text("\n".join([header] + [f"{lab},{y},{t},{t + 10},{s}" for lab, y, t, s in rows]) + "\n")
    carved = read_run_splits("kinetics", root=root, annotations=tmp_path / "k.csv", val=Val(by="group", fraction=0.5))
    assert {r.group for r in carved.train.records}.isdisjoint({r.group for r in carved.val.records})
    with caplog.at_level(logging.WARNING, logger="actionlab.data"):
        read_run_splits("kinetics", root=root, annotations=tmp_path / "k.csv", val=Val())
    assert "1 clip(s) of the val list come from YouTube videos the train list also has" in caplog.text
    assert "y2_000040_000050.mp4" in caplog.text and "test list" not in caplog.text


@pytest.mark.parametrize("raw,message", [
    ({"optim": {"keep": "best_val"}, "data": {"val": None}}, "optim.keep 'best_val' needs data.val"),
    ({"data": {"val": {"by": "list"}}}, "only kinetics has an official val list"),
    ({"data": {"val": {"fraction": 1.0}}}, "data.val.fraction: must be < 1"),
    ({"data": {"val": None}, "study": {"variants": {"rgb": {}, "flow": {"model.modality": "flow"}},
                                       "late_fusion": {"both": {"streams": ["rgb", "flow"], "weight": "auto"}}}},
     "chosen on the streams' val scores, but variant 'rgb' has data.val: null"),
])
def test_selection_settings_that_would_select_on_test_are_refused(raw, message):
    with pytest.raises(UserError, match=message):
        plan(parse_experiment(raw))


# --- the fusion rule chosen on val ---------------------------------------------------------------

def _scores(labels, logits):
    return VideoScores(np.array([f"v{i}" for i in range(len(labels))]), np.asarray(labels), logits.astype(np.float32))


def _top1(s: VideoScores) -> float:
    return float((s.scores.argmax(1) == s.labels).mean())


@pytest.mark.parametrize("seed", range(30))
def test_the_chosen_fusion_is_never_below_the_better_stream_on_val(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 40)
    signal_a, signal_b = rng.uniform(0, 3, 2)
    a = _scores(labels, rng.normal(size=(40, 5)) + signal_a * np.eye(5)[labels])
    b = _scores(labels, rng.normal(scale=rng.uniform(0.2, 5), size=(40, 5)) + signal_b * np.eye(5)[labels])
    choice = choose_fusion(a, b)
    assert choice.val_top1 >= max(_top1(a), _top1(b))
    assert (choice.val_top1_a, choice.val_top1_b) == (_top1(a), _top1(b))
    assert choice.val_top1 == _top1(fuse_scores(a, b, weight=choice.weight, mode=choice.mode))


def test_a_stream_that_only_adds_noise_gets_no_weight():
    """Stream a is right on every val video, b is confidently wrong on most: only a weight of 1 (a alone) and a
    few near it stay perfect; the tie-break picks the one nearest 0.5 among them."""
    labels = np.arange(20) % 4
    a = _scores(labels, 1.0 * np.eye(4)[labels])
    b = _scores(labels, 10.0 * np.eye(4)[(labels + 1) % 4])
    choice = choose_fusion(a, b, modes=("logits",))
    assert choice.val_top1 == 1.0 and choice.weight > 0.9  # logits: a's margin 1 beats b's 10 only at w > 10/11
    assert choice.mode == "logits"
