"""The synthetic UCF-101 data set: exact layout, group-disjoint splits, determinism, and the
design's premise (single frames carry no motion cue, grey frames no appearance cue)."""
import re

import cv2
import numpy as np
import pytest

from orchestrator.data.synth import (
    APPEARANCES,
    BACKGROUND_LUMA,
    MOTIONS,
    OBJECT_LUMA,
    SynthSpec,
    accuracy_bounds,
    class_names,
    fold_groups,
    luma,
    render_frames,
    render_video,
    write_synthetic_ucf,
)
from orchestrator.data.video_io import write_video

# Every option on, non-square, few videos: exercises the whole render path through the encoder.
OPTIONS_SPEC = SynthSpec(
    appearances=("Blue", "Orange", "Cyan"), motions=("Swing", "FastRight"), groups=3, clips_per_group=1,
    num_frames=12, height=32, width=80, object_size=10,
    camera_motion=1.0, partial_action=True, clutter=2, noise_std=4.0, texture=8.0,
)
CLASS_IND = re.compile(r"^(\d+) ([A-Z][A-Za-z0-9]*)$")
TRAIN_LINE = re.compile(r"^([A-Za-z0-9]+)/v_\1_g(\d\d)_c(\d\d)\.avi (\d+)$")
TEST_LINE = re.compile(r"^([A-Za-z0-9]+)/v_\1_g(\d\d)_c(\d\d)\.avi$")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Default spec twice (seed 0), once with seed 1, and the all-options spec."""
    root = tmp_path_factory.mktemp("synth")
    return {
        "a": write_synthetic_ucf(root / "a", progress=False),
        "b": write_synthetic_ucf(root / "b", progress=False),
        "seed1": write_synthetic_ucf(root / "seed1", SynthSpec(seed=1), progress=False),
        "options": write_synthetic_ucf(root / "options", OPTIONS_SPEC, progress=False),
    }


def read_lines(path) -> list[str]:
    return path.read_text().splitlines()


def parse_class_ind(out) -> dict[str, int]:
    labels = {}
    for line in read_lines(out / "ucfTrainTestlist" / "classInd.txt"):
        match = CLASS_IND.match(line)
        assert match, f"bad classInd line {line!r}"
        labels[match[2]] = int(match[1])
    return labels


def parse_split(out, split: int) -> tuple[list[tuple[str, int, int, int]], list[tuple[str, int, int]]]:
    """(class, group, clip, label) per trainlist line, (class, group, clip) per testlist line."""
    lists = out / "ucfTrainTestlist"
    train, test = [], []
    for line in read_lines(lists / f"trainlist0{split}.txt"):
        match = TRAIN_LINE.match(line)
        assert match, f"bad trainlist line {line!r}"
        train.append((match[1], int(match[2]), int(match[3]), int(match[4])))
    for line in read_lines(lists / f"testlist0{split}.txt"):
        match = TEST_LINE.match(line)
        assert match, f"bad testlist line {line!r}"
        test.append((match[1], int(match[2]), int(match[3])))
    return train, test


@pytest.mark.parametrize("name, spec", [("a", SynthSpec()), ("options", OPTIONS_SPEC)])
def test_layout_and_split_files_are_ucf_formats(datasets, name, spec):
    out = datasets[name]
    labels = parse_class_ind(out)
    assert list(labels) == class_names(spec) == sorted(labels)  # alphabetical, as UCF's
    assert list(labels.values()) == list(range(1, len(labels) + 1))
    assert sorted(p.name for p in (out / "UCF101").iterdir()) == sorted(labels)
    all_videos = {
        (c, g, k) for c in labels for g in range(1, spec.groups + 1) for k in range(1, spec.clips_per_group + 1)
    }
    on_disk = {p.relative_to(out / "UCF101").as_posix() for p in (out / "UCF101").rglob("*") if p.is_file()}
    assert on_disk == {f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c, g, k in all_videos}
    test_folds = []
    for split in (1, 2, 3):
        train, test = parse_split(out, split)
        assert all(labels[c] == label for c, _, _, label in train)
        train_videos = {(c, g, k) for c, g, k, _ in train}
        assert len(train_videos) == len(train) and len(set(test)) == len(test)
        assert train_videos | set(test) == all_videos and not train_videos & set(test)
        train_groups, test_groups = {g for _, g, _ in train_videos}, {g for _, g, _ in test}
        assert train_groups and test_groups and not train_groups & test_groups
        assert {c for c, _, _ in test} == {c for c, _, _ in train_videos} == set(labels)  # every class in both
        test_folds.append(test_groups)
    assert not (test_folds[0] & test_folds[1] or test_folds[1] & test_folds[2] or test_folds[0] & test_folds[2])


@pytest.mark.parametrize(
    "num_groups, expected",
    [(25, [range(1, 8), range(8, 15), range(15, 22)]),  # UCF-101's own splits
     (6, [range(1, 3), range(3, 5), range(5, 7)]),
     (3, [range(1, 2), range(2, 3), range(3, 4)]),
     (4, [range(1, 2), range(2, 3), range(3, 4)])],  # group 4 always trains, like UCF's 22-25
)
def test_fold_groups(num_groups, expected):
    assert [fold_groups(num_groups, split) for split in (1, 2, 3)] == expected


@pytest.mark.parametrize("name, spec", [("a", SynthSpec()), ("options", OPTIONS_SPEC)])
def test_decoded_videos_have_spec_frames_and_size(datasets, name, spec):
    decord = pytest.importorskip("decord")
    videos = sorted((datasets[name] / "UCF101").rglob("*.avi"))
    assert len(videos) == len(class_names(spec)) * spec.groups * spec.clips_per_group
    for path in videos:
        reader = decord.VideoReader(str(path))
        assert len(reader) == spec.num_frames
        assert reader[0].shape == (spec.height, spec.width, 3)


def test_decoded_video_is_the_rendered_one(datasets):
    decord = pytest.importorskip("decord")
    spec = SynthSpec()
    decoded = decord.VideoReader(str(datasets["a"] / "UCF101/RedLeft/v_RedLeft_g02_c03.avi"))
    decoded = decoded.get_batch(list(range(spec.num_frames))).asnumpy().astype(int)
    assert np.abs(decoded - render_video(spec, "RedLeft", 2, 3)).mean() < 2.0  # crf 18: near lossless


def test_same_seed_same_bytes_other_seed_differs(datasets):
    decord = pytest.importorskip("decord")
    a, b, seed1 = datasets["a"], datasets["b"], datasets["seed1"]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for rel in ("UCF101/GreenRight/v_GreenRight_g01_c01.avi", "UCF101/RedLeft/v_RedLeft_g06_c03.avi"):
        frames_a, frames_b, frames_1 = (decord.VideoReader(str(d / rel)).get_batch(list(range(32))).asnumpy()
                                        for d in (a, b, seed1))
        np.testing.assert_array_equal(frames_a, frames_b)
        assert np.abs(frames_a.astype(int) - frames_1).mean() > 1.0


def test_palette_is_isoluminant_and_brighter_than_background():
    for name, colour in APPEARANCES.items():
        assert abs(luma(colour) - OBJECT_LUMA) < 0.05, name
        assert max(colour) <= 235 and min(colour) >= 0, name
    assert OBJECT_LUMA - BACKGROUND_LUMA >= 50  # the disc stands out in grey frames, so flow sees it


def test_grey_frames_carry_no_appearance_cue(tmp_path):
    """Same geometry in every colour: identical grey frames when rendered, nearly so after H.264."""
    decord = pytest.importorskip("decord")
    spec = SynthSpec()

    def grey(frames):
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(int)

    rendered = {n: render_frames(spec, c, MOTIONS["Left"], (7, 1)) for n, c in APPEARANCES.items()}
    reference = grey(rendered["Red"])
    assert np.ptp(rendered["Red"][..., 0]) > 100 and np.ptp(rendered["Green"][..., 1]) > 100  # colour is there
    decoded_reference = None
    for name, frames in rendered.items():
        assert np.abs(grey(frames) - reference).max() <= 1, name  # rounding only
        path = write_video(tmp_path / f"{name}.avi", frames)
        decoded = grey(decord.VideoReader(str(path)).get_batch(list(range(32))).asnumpy())
        decoded_reference = decoded if decoded_reference is None else decoded_reference
        assert np.abs(decoded - decoded_reference).mean() < 0.5, name  # codec: stray edge pixels only


def object_xy(frame: np.ndarray) -> np.ndarray:
    """Circular centroid (x, y) in px of the bright disc in one frame (it may wrap around the edges)."""
    height, width, _ = frame.shape
    mask = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) > (BACKGROUND_LUMA + OBJECT_LUMA) / 2
    ys, xs = np.nonzero(mask)
    angles = [np.angle(np.exp(2j * np.pi * v / size).mean()) for v, size in ((xs, width), (ys, height))]
    return np.mod(angles, 2 * np.pi) / (2 * np.pi) * np.array([width, height])


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Training accuracy of a nearest-class-mean classifier (an optimistic separability score)."""
    centroids = np.stack([features[labels == k].mean(0) for k in (0, 1)])
    predicted = np.argmin(((features[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((predicted == labels).mean())


@pytest.mark.parametrize("motion_pair", [("Left", "Right"), ("Right", "FastRight"), ("Right", "Swing"), ("Up", "Bob")])
def test_single_frame_has_no_motion_cue_but_consecutive_frames_do(motion_pair):
    spec = SynthSpec(motions=motion_pair)
    size = np.array([spec.width, spec.height])
    position_features, motion_features, labels = [], [], []
    for label, motion in enumerate(motion_pair):
        for group in range(1, 41):
            frames = render_video(spec, "Red" + motion, group, 1)
            xy = np.stack([object_xy(f) for f in frames])  # (T, 2)
            step = (np.diff(xy, axis=0) + size / 2) % size - size / 2  # wrapped displacement, (T - 1, 2)
            angles = 2 * np.pi * xy[group % spec.num_frames] / size  # one frame, as a circular feature
            position_features.append(np.concatenate([np.cos(angles), np.sin(angles)]))
            # mean velocity (direction), mean speed, mean change of velocity (oscillation)
            jerk = np.abs(np.diff(step, axis=0)).mean(0)
            motion_features.append(np.concatenate([step.mean(0), np.abs(step).mean(0), jerk]))
            labels.append(label)
    labels = np.array(labels)
    assert nearest_centroid_accuracy(np.array(position_features), labels) < 0.7
    assert nearest_centroid_accuracy(np.array(motion_features), labels) == 1.0


def test_partial_action_moves_only_during_a_sub_interval():
    spec = SynthSpec(partial_action=True)
    for clip in range(1, 6):
        frames = render_video(spec, "GreenRight", 1, clip)
        moving = np.abs(np.diff(frames.astype(int), axis=0)).reshape(spec.num_frames - 1, -1).max(1) > 0
        steps = np.flatnonzero(moving)
        assert spec.num_frames // 4 - 1 <= len(steps) <= spec.num_frames // 2 - 1
        assert np.array_equal(steps, np.arange(steps[0], steps[-1] + 1))  # one contiguous interval


def test_options_leave_the_actor_trajectory_unchanged():
    """Each random component has its own generator: adding clutter keeps the same disc path."""
    plain = render_video(SynthSpec(), "RedRight", 2, 1)
    cluttered = render_video(SynthSpec(clutter=3), "RedRight", 2, 1)
    on_disc = (plain == APPEARANCES["Red"]).all(-1)  # (T, H, W) fully covered disc pixels
    assert on_disc.sum(axis=(1, 2)).min() > 50
    assert (cluttered[on_disc] == APPEARANCES["Red"]).all()
    assert (cluttered != plain).any()  # the distractors are there


def test_accuracy_bounds_and_readme(datasets):
    assert accuracy_bounds(SynthSpec()) == {"appearance_only": 0.5, "motion_only": 0.5, "both": 1.0, "chance": 0.25}
    bounds = accuracy_bounds(SynthSpec(appearances=("Red", "Green", "Blue"), motions=("Left", "Right", "Up", "Down")))
    assert bounds == pytest.approx({"appearance_only": 1 / 4, "motion_only": 1 / 3, "both": 1.0, "chance": 1 / 12})
    readme = (datasets["a"] / "README.md").read_text()
    assert "| appearance only (RGB single frames) | 50.0% |" in readme
    assert "| motion only (optical flow) | 50.0% |" in readme and "| chance | 25.0% |" in readme


@pytest.mark.parametrize(
    "overrides, field",
    [({"appearances": ("Red", "Teal")}, "appearances"),
     ({"appearances": ("Red", "Red")}, "appearances"),
     ({"appearances": ["Red", "Green"]}, "appearances"),
     ({"motions": ()}, "motions"),
     ({"motions": ("Sideways",)}, "motions"),
     ({"appearances": ("Red",), "motions": ("Left",)}, "appearances"),
     ({"groups": 2}, "groups"),
     ({"clips_per_group": 0}, "clips_per_group"),
     ({"num_frames": 4}, "num_frames"),
     ({"height": 63}, "height"),
     ({"width": 8}, "width"),
     ({"width": 48}, "width"),  # decord cannot read it back
     ({"fps": 0}, "fps"),
     ({"object_size": 40}, "object_size"),
     ({"camera_motion": -1.0}, "camera_motion"),
     ({"clutter": -1}, "clutter"),
     ({"noise_std": -0.5}, "noise_std"),
     ({"texture": -2.0}, "texture")],
)
def test_invalid_spec_names_the_field_and_writes_nothing(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        write_synthetic_ucf(tmp_path / "out", SynthSpec(**overrides), progress=False)
    assert not (tmp_path / "out").exists()


def test_extended_tables_are_checked(monkeypatch):
    monkeypatch.setitem(APPEARANCES, "Teal", (0, 128, 128))  # Y = 89.7: not isoluminant
    monkeypatch.setitem(MOTIONS, "Diagonal", MOTIONS["Right"]._replace(dy_px_per_frame=2.5))
    with pytest.raises(ValueError, match="appearances: 'Teal' has luma"):
        write_synthetic_ucf("unused", SynthSpec(appearances=("Red", "Teal")), progress=False)
    monkeypatch.setitem(APPEARANCES, "Teal", (0, 158, 237))  # Y = 119.8
    frames = render_video(SynthSpec(appearances=("Teal",), motions=("Left", "Diagonal")), "TealDiagonal", 1, 1)
    assert frames.shape == (32, 64, 64, 3)


def test_refuses_to_write_over_existing_videos(datasets):
    with pytest.raises(FileExistsError, match="UCF101"):
        write_synthetic_ucf(datasets["a"], progress=False)
