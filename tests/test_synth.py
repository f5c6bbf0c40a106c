"""The synthetic UCF-101 data set: exact layout, group-disjoint splits, determinism, and the
design's premise (single frames carry no motion cue, grey frames no appearance cue), and what each
preset claims: shapes survive the codec, TSN segment ceilings, warped flow under a pan, MPEG-4 .avi."""
import dataclasses
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import orchestrator.data.synth as synth
from orchestrator.cli import main
from orchestrator.data.flow import compute_flow
from orchestrator.plan import plan
from orchestrator.data.sampling import make_sampler, tsn_test_indices
from orchestrator.data.synth import (
    APPEARANCES,
    BACKGROUND_LUMA,
    MOTIONS,
    OBJECT_LUMA,
    PRESETS,
    SHAPES,
    SynthSpec,
    accuracy_bounds,
    action_lengths,
    class_names,
    fold_groups,
    luma,
    readme_text,
    render_frames,
    render_video,
    segment_ceiling,
    spec_from_options,
    write_synthetic_ucf,
)
from orchestrator.data.video_io import write_video
from orchestrator.preflight import load_experiment

# Every option on, non-square, few videos: exercises the whole render path through the encoder.
OPTIONS_SPEC = SynthSpec(
    appearances=("Blue", "Orange", "Cyan"), motions=("Swing", "FastRight"), groups=3, clips_per_group=1,
    num_frames=12, height=32, width=80, object_size=10,
    camera_motion=1.0, partial_action=True, clutter=2, noise_std=4.0, texture=8.0,
)
MPEG4_SPEC = spec_from_options({"preset": "mpeg4", "groups": 3, "clips_per_group": 1})
CLASS_IND = re.compile(r"^(\d+) ([A-Z][A-Za-z0-9]*)$")
TRAIN_LINE = re.compile(r"^([A-Za-z0-9]+)/v_\1_g(\d\d)_c(\d\d)\.avi (\d+)$")
TEST_LINE = re.compile(r"^([A-Za-z0-9]+)/v_\1_g(\d\d)_c(\d\d)\.avi$")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Default spec twice (seed 0), once with seed 1, the all-options spec and a small MPEG-4 one."""
    root = tmp_path_factory.mktemp("synth")
    return {
        "a": write_synthetic_ucf(root / "a", progress=False),
        "b": write_synthetic_ucf(root / "b", progress=False),
        "seed1": write_synthetic_ucf(root / "seed1", SynthSpec(seed=1), progress=False),
        "options": write_synthetic_ucf(root / "options", OPTIONS_SPEC, progress=False),
        "mpeg4": write_synthetic_ucf(root / "mpeg4", MPEG4_SPEC, progress=False),
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


@pytest.mark.parametrize("name, spec", [("a", SynthSpec()), ("options", OPTIONS_SPEC), ("mpeg4", MPEG4_SPEC)])
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


@pytest.mark.parametrize("name, spec", [("a", SynthSpec()), ("options", OPTIONS_SPEC), ("mpeg4", MPEG4_SPEC)])
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
     ({"texture": -2.0}, "texture"),
     ({"appearances": ("TopHalf", "Red")}, "appearances"),  # colours and shapes do not mix
     ({"appearances": ("Red", "TopHalf")}, "appearances"),
     ({"shape_colours": ("Red", "Blue")}, "shape_colours"),  # would be ignored: the appearances are colours
     ({"appearances": ("TopHalf", "Ring"), "shape_colours": ("Red", "Red")}, "shape_colours"),
     ({"appearances": ("TopHalf", "Ring"), "shape_colours": ("Red", "Teal")}, "shape_colours"),
     ({"action_fraction": (0.1, 0.2)}, "action_fraction"),  # would be ignored: partial_action is off
     ({"partial_action": True, "action_fraction": (0.5, 0.25)}, "action_fraction"),
     ({"partial_action": True, "action_fraction": (0.0, 0.5)}, "action_fraction"),
     ({"partial_action": True, "action_fraction": (0.5, 1.5)}, "action_fraction"),
     ({"partial_action": True, "action_fraction": (0.03, 0.1)}, "action_fraction"),  # under 2 of 32 frames
     ({"codec": "vp9"}, "codec"),
     ({"train_groups": -1}, "train_groups"),
     ({"train_groups": 5}, "train_groups")],  # 6 groups: a split tests 2, so 4 can train
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


# --- presets ------------------------------------------------------------------------------------

def test_every_preset_is_valid_and_its_ceilings_are_documented():
    """Each preset's row of the module docstring's table gives its `accuracy_bounds`."""
    assert list(PRESETS)[0] == "colour" and PRESETS["colour"] == {}  # the default benchmark
    rows = {line.split("|")[1].strip(): line for line in synth.__doc__.splitlines() if line.startswith("| ")}
    for name in PRESETS:
        spec = spec_from_options({"preset": name})
        bounds = accuracy_bounds(spec)
        expected = " | ".join(f"{bounds[k]:.1%}" for k in ("appearance_only", "motion_only", "both", "chance"))
        assert rows[name].endswith(f"| {expected} |"), name
        assert "## Accuracy bounds" in readme_text(spec)


def test_preset_fields_are_overridden_by_explicit_ones():
    spec = spec_from_options({"preset": "camera", "clips_per_group": 5, "motions": ["Left", "Right"]})
    assert spec == SynthSpec(**{**PRESETS["camera"], "clips_per_group": 5, "motions": ("Left", "Right")})
    assert spec_from_options(True) == spec_from_options({"preset": "colour"}) == SynthSpec()
    with pytest.raises(ValueError, match="preset: unknown preset 'huge'"):
        spec_from_options({"preset": "huge"})
    with pytest.raises(ValueError, match="shape_colours"):
        spec_from_options({"preset": "colour", "shape_colours": ["Red", "Blue"]})


@pytest.mark.parametrize("split", [1, 2, 3])
def test_train_groups_keeps_the_first_training_groups_and_every_test_video(split):
    spec = SynthSpec(groups=9, clips_per_group=2, train_groups=2)
    train, test = synth.split_lines(spec, split)
    all_train, all_test = synth.split_lines(dataclasses.replace(spec, train_groups=0), split)
    assert test == all_test  # the test list is the whole fold's
    kept = [g for g in range(1, 10) if g not in fold_groups(9, split)][:2]
    assert train == [line for line in all_train if int(TRAIN_LINE.match(line)[2]) in kept]
    assert len(train) == 2 * 2 * len(class_names(spec))  # 2 groups x 2 clips per class
    assert "the first 2 other groups train" in readme_text(spec)


def test_pretraining_presets_share_primitives_not_classes_and_the_control_shares_neither():
    """shape_small: few labelled videos per class; shape_source: other patterns in the same colours and size;
    colour_source: as many training videos of plain discs in other colours."""
    source, small, control = (spec_from_options({"preset": name})
                              for name in ("shape_source", "shape_small", "colour_source"))
    train, test = synth.split_lines(small, 1)
    assert (len(train), len(test)) == (6 * 4, 9 * 4)  # per class: 2 groups x 3 clips train, 3 groups x 3 test
    assert all(synth.is_shape_spec(s) for s in (source, small)) and not synth.is_shape_spec(control)
    assert not set(source.appearances) & set(small.appearances)  # no class of the target is in the source
    shared = ("shape_colours", "object_size", "motions", "num_frames", "height", "width")
    assert all(getattr(source, f) == getattr(small, f) for f in shared)  # the primitives are the same
    assert not set(control.appearances) & set(small.shape_colours)  # neither red nor green
    assert control.object_size == small.object_size and control.motions == small.motions
    source_train, control_train = (synth.split_lines(s, 1)[0] for s in (source, control))
    assert len(source_train) == len(control_train) == 192  # equal pretraining data (144 once data.val takes a group)
    assert accuracy_bounds(small)["appearance_only"] == 1.0  # one motion: single RGB frames can reach 100 %


def test_pretraining_claim_changes_only_the_initial_weights():
    """experiments/claims.yaml's small_pretrained, small_unrelated and small_scratch train the same
    recipe on the same shape_small lists; only the source they start from differs, and both sources
    are trained with one recipe on as many videos."""
    variants = plan(load_experiment(Path(__file__).parents[1] / "experiments" / "claims.yaml")).runs
    scratch, related, unrelated, shapes, colours = (
        variants[f"{name}/seed0"].config
        for name in ("small_scratch", "small_pretrained", "small_unrelated", "shape_source", "colour_source"))
    assert (related.model.init_checkpoint, unrelated.model.init_checkpoint) == ("variant:shape_source",
                                                                                "variant:colour_source")
    for cfg in (related, unrelated):
        assert cfg.model.model_copy(update={"init_checkpoint": None}) == scratch.model
        assert cfg.data == scratch.data and cfg.optim == scratch.optim
    assert spec_from_options(scratch.data.synth) == spec_from_options({"preset": "shape_small"})
    assert shapes.optim == colours.optim and shapes.model == colours.model
    assert shapes.data.model_copy(update={k: getattr(colours.data, k) for k in ("root", "annotations", "synth")}) \
        == colours.data


# --- shapes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_gives_each_colour_half_the_disc(shape):
    radius = 100.0  # large, so the anti-aliased boundary is negligible
    ys, xs = np.mgrid[-128:128, -128:128] + 0.5
    share = np.clip(0.5 - SHAPES[shape](xs, ys, radius), 0.0, 1.0)
    assert share[np.hypot(xs, ys) < radius].mean() == pytest.approx(0.5, abs=1e-3)


def test_shapes_have_the_same_outline_grey_level_and_mean_colour():
    spec = spec_from_options({"preset": "shape"})
    grey = {n: np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in render_frames(spec, n, MOTIONS["Left"], (7, 1))])
            for n in SHAPES}
    means = {n: render_frames(spec, n, MOTIONS["Left"], (7, 1)).reshape(-1, 3).mean(0) for n in SHAPES}
    for name in SHAPES:
        assert np.abs(grey[name].astype(int) - grey["TopHalf"]).max() <= 1, name  # rounding only
        assert np.abs(means[name] - means["TopHalf"]).max() < 0.05, name  # grey levels, over ~1 % of disc pixels
    top = render_frames(spec, "TopHalf", MOTIONS["Left"], (7, 1)).astype(int)
    assert (top[..., 0] - top[..., 1]).max() > 150 and (top[..., 1] - top[..., 0]).max() > 100  # both colours there
    assert accuracy_bounds(spec) == accuracy_bounds(SynthSpec())


def disc_patch(frame: np.ndarray, side: int) -> np.ndarray:
    """Red minus green in a side x side window centred on the disc (found in grey levels), flattened."""
    height, width, _ = frame.shape
    x, y = np.rint(object_xy(frame)).astype(int)
    centred = np.roll(frame.astype(np.float32), (height // 2 - y, width // 2 - x), axis=(0, 1))
    window = centred[height // 2 - side // 2:height // 2 + side // 2, width // 2 - side // 2:width // 2 + side // 2]
    return (window[..., 0] - window[..., 1]).ravel()


def decoded_disc_features(spec: SynthSpec, folder: Path, videos_per_class: int):
    """Per H.264-decoded single frame: the disc_patch, the disc's mean colour and the class index
    (its appearance's), `videos_per_class` videos of every appearance, 8 frames each."""
    decord = pytest.importorskip("decord")
    spec = dataclasses.replace(spec, num_frames=8)
    patches, mean_colours, labels = [], [], []
    for label, shape in enumerate(spec.appearances):
        for group in range(1, videos_per_class + 1):
            frames = render_video(spec, shape + spec.motions[group % len(spec.motions)], group, 1)
            path = write_video(folder / "v.avi", frames, crf=18, deterministic=True)
            frame = decord.VideoReader(str(path)).get_batch([group % 8]).asnumpy()[0]
            patches.append(disc_patch(frame, spec.object_size + 4))
            on_disc = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) > (BACKGROUND_LUMA + OBJECT_LUMA) / 2
            mean_colours.append(frame[on_disc].mean(0))
            labels.append(label)
    return np.array(patches), np.array(mean_colours), np.array(labels)


def test_shapes_survive_h264_chroma_subsampling(tmp_path):
    """The shape preset's patterns are in chroma only, which yuv420p halves: a nearest-centroid template on
    decoded single frames still separates them (measured 100 %, gap 65 std), the disc's mean colour does not."""
    patches, mean_colours, labels = decoded_disc_features(spec_from_options({"preset": "shape"}), tmp_path, 24)
    train = np.arange(len(labels)) % 2 == 0  # centroids from half the videos, scored on the other half
    assert held_out_centroid_accuracy(patches, labels, train) == 1.0
    direction = patches[train & (labels == 0)].mean(0) - patches[train & (labels == 1)].mean(0)
    projected = patches[~train] @ direction
    gap = projected[labels[~train] == 0].min() - projected[labels[~train] == 1].max()
    assert gap > 20 * projected[labels[~train] == 0].std()  # measured 65: far apart
    assert held_out_centroid_accuracy(mean_colours, labels, train) <= 0.75  # measured 0.46; chance is 0.5


@pytest.mark.parametrize("preset", ["shape_small", "shape_source"])
def test_pretraining_patterns_survive_h264(tmp_path, preset):
    """The source's and the target's cue is the same kind: on decoded single frames a template of the
    disc separates every pattern of either (measured 100 %)."""
    patches, _, labels = decoded_disc_features(spec_from_options({"preset": preset}), tmp_path, 8)
    assert held_out_centroid_accuracy(patches, labels, np.arange(len(labels)) % 2 == 0) == 1.0


def test_shape_small_is_told_apart_by_layout_not_colour(tmp_path):
    """The target's 4 halves have the same mean colour: a model must learn where the colours lie."""
    _, mean_colours, labels = decoded_disc_features(spec_from_options({"preset": "shape_small"}), tmp_path, 8)
    train = np.arange(len(labels)) % 2 == 0
    assert held_out_centroid_accuracy(mean_colours, labels, train) <= 0.5  # measured 0.31; chance is 0.25


def held_out_centroid_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    """Accuracy on ~train of a nearest-class-mean classifier fitted on train."""
    centroids = np.stack([features[train & (labels == k)].mean(0) for k in range(labels.max() + 1)])
    predicted = np.argmin(((features[~train][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((predicted == labels[~train]).mean())


# --- partial action: TSN segment ceilings -------------------------------------------------------

def test_action_fraction_sets_the_moving_run():
    spec = SynthSpec(num_frames=40, partial_action=True, action_fraction=(0.1, 0.2))
    assert action_lengths(spec) == range(4, 9)
    assert action_lengths(SynthSpec(partial_action=True)) == range(8, 17)  # the default, 1/4..1/2 of 32
    for clip in range(1, 9):
        frames = render_video(spec, "RedRight" if clip % 2 else "GreenLeft", 1, clip)
        moving = np.flatnonzero(np.abs(np.diff(frames.astype(int), axis=0)).reshape(39, -1).max(1) > 0)
        assert 4 - 1 <= len(moving) <= 8 - 1  # a run of L frames moves in L - 1 steps
        assert np.array_equal(moving, np.arange(moving[0], moving[-1] + 1))


@pytest.mark.parametrize(
    "overrides, num_segments, p_hit",
    [({}, 1, 1.0),  # no partial action: every field moves
     # 16 frames, run of exactly 4 frames (3 moving fields) at 13 equally likely starts; one centred
     # 5-field window (fields 5..9 of 15) meets fields s..s+2 for s = 3..9: 7 of 13.
     ({"num_frames": 16, "partial_action": True, "action_fraction": (0.25, 0.25)}, 1, 7 / 13)],
)
def test_segment_ceiling_by_hand(overrides, num_segments, p_hit):
    spec = SynthSpec(**overrides)
    ceiling = segment_ceiling(spec, num_segments=num_segments, frames_per_segment=5)
    assert ceiling.p_hit == pytest.approx(p_hit)
    assert ceiling.motion_only == pytest.approx(p_hit / 2 + (1 - p_hit) / 4)  # 2 x 2: bound 1/2, chance 1/4
    assert ceiling.both == pytest.approx(p_hit + (1 - p_hit) / 2)


def test_long_preset_ceilings_match_rendered_videos_and_the_docs():
    """Monte Carlo over rendered videos (small frames, same timings): the share whose moving fields meet
    the real test sampler's fields is `segment_ceiling`'s p_hit; the documented figures are its own."""
    spec = spec_from_options({"preset": "long"})
    small = dataclasses.replace(spec, height=16, width=32, object_size=6)  # timings do not depend on size
    fields = {k: tsn_test_indices(spec.num_frames - 1, num_segments=k, frames_per_segment=5)[0] for k in (1, 3, 8)}
    hits = {k: [] for k in fields}
    for name in class_names(small):
        for group in range(1, 401):
            frames = render_video(small, name, group, 1)
            moving = (np.diff(frames.astype(np.int16), axis=0) != 0).any(axis=(1, 2, 3))  # (T - 1,) per field
            for k in fields:
                hits[k].append(moving[fields[k]].any())
    ceilings = {k: segment_ceiling(spec, num_segments=k, frames_per_segment=5) for k in fields}
    for k in fields:
        assert np.mean(hits[k]) == pytest.approx(ceilings[k].p_hit, abs=0.04), k  # 1600 videos: SE <= 0.0125
    documented = {1: (0.183, 0.194), 3: (0.549, 0.331), 8: (1.0, 0.5)}  # module docstring and README
    for k, (p_hit, flow) in documented.items():
        assert ceilings[k].p_hit == pytest.approx(p_hit, abs=5e-4) and ceilings[k].motion_only == pytest.approx(
            flow, abs=5e-4)
    assert ceilings[8].motion_only - ceilings[3].motion_only > 0.15  # the claim has room to show
    assert "| 3 x 5 | 54.9% | 33.1% | 66.2% |" in readme_text(spec)
    assert "K = 1: 19.4 %   K = 3: 33.1 %   K = 8: 50.0 %" in synth.__doc__
    # TSN's test protocol, ~25 snippets whatever K: README_TEST_SNIPPETS / K views of K reach the bound
    for k, views in ((1, 24), (3, 8), (8, 3)):
        equal = segment_ceiling(spec, num_segments=k, frames_per_segment=5, num_clips=views)
        assert (equal.p_hit, equal.motion_only, equal.both) == pytest.approx((1.0, 0.5, 1.0)), k
        assert f"| {k} x 5, {views} views | 100.0% | 50.0% | 100.0% |" in readme_text(spec)


def test_k_claim_tests_both_variants_on_the_same_snippets():
    """experiments/claims.yaml's long_k8 vs long_k3 differ in training-time K only: as parsed, both are
    tested on README_TEST_SNIPPETS snippets (TSN tests on 25 whatever K), at the same evenly spaced
    positions up to one field of rounding, so both flow ceilings are 100 %."""
    variants = plan(load_experiment(Path(__file__).parents[1] / "experiments" / "claims.yaml")).runs
    k3, k8 = (variants[f"{name}/seed0"].config for name in ("long_k3", "long_k8"))
    assert (k3.data.num_segments, k8.data.num_segments) == (3, 8)
    assert k3.model == k8.model and k3.optim == k8.optim
    assert k3.data.model_copy(update={"num_segments": 8, "test_clips": k8.data.test_clips}) == k8.data
    spec = spec_from_options(k3.data.synth)
    starts = {}
    for cfg in (k3, k8):
        d = cfg.data
        sampler = make_sampler(kind=d.sampler, train=False, num_segments=d.num_segments,
                               frames_per_segment=d.frames_per_segment, num_clips=d.test_clips)
        fields = sampler(spec.num_frames - 1, np.random.default_rng(0))  # (V, K * L) flow fields
        snippets = fields.reshape(-1, d.frames_per_segment)  # (V * K, L), one row per snippet
        assert len(snippets) == synth.README_TEST_SNIPPETS, d.num_segments
        starts[d.num_segments] = np.sort(snippets[:, 0])
        ceiling = segment_ceiling(spec, num_segments=d.num_segments, frames_per_segment=d.frames_per_segment,
                                  num_clips=d.test_clips)
        assert ceiling.motion_only == pytest.approx(1.0), d.num_segments  # one colour: flow's = two-stream's
    assert np.abs(starts[3] - starts[8]).max() <= 1  # the same 24 positions, floors apart


# --- camera motion: plain vs warped flow ----------------------------------------------------------

def test_camera_preset_plain_flow_loses_the_direction_warped_flow_keeps_it(tmp_path):
    """On H.264-decoded camera-preset videos, the disc's mean Farneback flow points (nearest of the 4
    directions) the class's way in ~half the videos with plain flow, in all of them once warped."""
    decord = pytest.importorskip("decord")
    spec = spec_from_options({"preset": "camera"})
    directions = np.array([[MOTIONS[m].dx_px_per_frame, MOTIONS[m].dy_px_per_frame] for m in spec.motions])
    agree = {False: [], True: []}
    for label, motion in enumerate(spec.motions):
        for group in range(1, 11):
            path = write_video(tmp_path / "v.avi", render_video(spec, "Red" + motion, group, 1), deterministic=True)
            frames = decord.VideoReader(str(path)).get_batch(list(range(spec.num_frames))).asnumpy()
            on_disc = frames[:-1, :, :, 0].astype(int) - frames[:-1, :, :, 1] > 60  # red disc, grey background
            for warp in (False, True):
                flow = compute_flow(frames, warp=warp)  # (T - 1, H, W, 2)
                disc_flow = flow[on_disc].mean(0)  # (2,) over every field's disc pixels
                agree[warp].append(np.argmax(directions @ disc_flow) == label)
    assert np.mean(agree[False]) <= 0.65  # measured 0.50 (chance 0.25): the pan hides the direction
    assert np.mean(agree[True]) >= 0.95  # measured 1.00


# --- MPEG-4 Part 2 ------------------------------------------------------------------------------

def test_mpeg4_videos_are_xvid_avi_that_decord_reads_back(datasets, tmp_path):
    av = pytest.importorskip("av")
    decord = pytest.importorskip("decord")
    path = datasets["mpeg4"] / "UCF101/GreenRight/v_GreenRight_g02_c01.avi"
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        assert (container.format.name, context.name, context.codec_tag) == ("avi", "mpeg4", "XVID")
    reader = decord.VideoReader(str(path))
    assert (len(reader), reader[0].shape) == (MPEG4_SPEC.num_frames, (64, 64, 3))
    decoded = reader.get_batch(list(range(MPEG4_SPEC.num_frames))).asnumpy().astype(int)
    assert np.abs(decoded - render_video(MPEG4_SPEC, "GreenRight", 2, 1)).mean() < 2.0  # measured 0.9
    again = write_video(tmp_path / "again.avi", render_video(MPEG4_SPEC, "GreenRight", 2, 1), codec="mpeg4")
    assert again.read_bytes() == path.read_bytes()  # a pure function of (spec, class, group, clip)


def test_cli_preset_with_overrides(tmp_path, capsys):
    """`actionlab data synth --preset`: given options override the preset's, even a seed of 0."""
    out = tmp_path / "out"
    assert main(["data", "synth", "--out", str(out), "--preset", "colour_source", "--seed", "0", "--motions", "Up",
                 "Down", "--groups", "3", "--clips-per-group", "1"]) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["appearances"] == ["Blue", "Yellow", "Magenta", "Cyan", "Orange", "Purple"]
    assert spec["motions"] == ["Up", "Down"] and spec["object_size"] == 24  # the preset's, where not given
    assert spec["seed"] == 0 and spec["groups"] == 3
    assert "chance 8%" in capsys.readouterr().out
