"""`actionlab data synth`: a seeded synthetic action data set in the exact UCF-101 layout.

Every class is one cell of an appearance x motion grid: a disc of one colour (`APPEARANCES`) or with
one two-colour pattern inside (`SHAPES`), moving one way (`MOTIONS`), e.g. `RedLeft`, `GreenLeft`,
`RedRight`, `GreenRight`. Pairs of classes differ only in appearance (like UCF's brushing hair vs.
brushing teeth) or only in motion (like front crawl vs. breast stroke), so the two-stream ablation
(Simonyan & Zisserman, 2014) means something:

- All colours have the same luminance Y = 0.299 R + 0.587 G + 0.114 B (`OBJECT_LUMA`), brighter
  than the grey background, so grey frames -- and the optical flow computed on them -- are
  identical in distribution for every colour: flow carries no appearance cue.
- Shapes keep it so: the outline is always the disc, painted in the two isoluminant
  `shape_colours`, each on exactly half of its area. Grey frames, flow and the disc's mean colour are
  the same for every shape; only the layout of the colours inside the disc differs.
- The disc starts at a uniformly random position and wraps around the frame edges (a torus), so its
  position in any single frame is uniform whatever the motion: a frame carries no motion cue.

Accuracy bounds (Bayes-optimal, balanced classes; `accuracy_bounds`), for A appearances x M motions:

    appearance_only  1/M    a model seeing single frames knows the colour, and nothing of the motion
    motion_only      1/A    a model seeing grey-level motion (flow) knows the motion, not the colour
    both             1.0    colour and motion together name the class
    chance           1/(A*M)

With the default 2 x 2 grid: RGB-only and flow-only models top out at 50 %, two-stream at 100 %,
chance is 25 %. The bounds hold with every option on; the options only make the bound harder to
reach (up to codec artefacts, which are tiny at crf 18 / qscale 2):

- `camera_motion`: the whole scene (textured background and objects) pans at this speed in a
  random direction per video, adding a global component to the flow.
- `partial_action`: the disc moves only during a random run of `action_fraction` (1/4 to 1/2 by
  default) of the video and stands still elsewhere -- TSN's segments (Wang et al., 2016) are meant
  for this. A TSN model sees the motion only if a sampled flow field falls in that run: its ceiling
  for K segments x L fields is `segment_ceiling`.
- `clutter`: that many smaller square distractors, colours and motions drawn uniformly from the
  spec's own palette and motions, independent of the class: uninformative for both streams.
- `noise_std`: Gaussian pixel noise, std in grey levels.
- `texture`: contrast (std, grey levels) of a smooth random grey background texture.
- `codec`: "h264" (x264, crf 18) or "mpeg4" (MPEG-4 Part 2 with fourcc XVID, as the real UCF-101
  files), always in .avi.

Presets (`PRESETS`; `spec_from_options({"preset": "camera", ...})`, `actionlab data synth --preset`),
each isolating one claim. Ceilings are best video accuracy, RGB single frames / flow / both / chance:

| preset | claim it isolates | RGB | flow | both | chance |
|---|---|---|---|---|---|
| colour | the two streams are complementary (the default 2 colours x Left, Right) | 50.0% | 50.0% | 100.0% | 25.0% |
| shape | RGB recognises appearance by shape, not colour (TopHalf, BottomHalf in Red/Green) | 50.0% | 50.0% | 100.0% | 25.0% |
| long | TSN (TPAMI 2018): K = 8 training segments beat K = 3 when the action fills part of the video | 25.0% | 50.0% | 100.0% | 12.5% |
| camera | warped flow's mechanism: removing a strong camera pan restores the actor's direction | 25.0% | 50.0% | 100.0% | 12.5% |
| mpeg4 | the pipeline reads real UCF-101's codec (default classes, MPEG-4 Part 2 .avi) | 50.0% | 50.0% | 100.0% | 25.0% |
| shape_source | pretraining source: 8 two-colour patterns, 288 videos, seed 1 | 100.0% | 12.5% | 100.0% | 12.5% |
| shape_small | few-shot target: the 4 axis halves, 6 labelled videos per class | 100.0% | 25.0% | 100.0% | 25.0% |
| colour_source | the control source: 6 plain colours, 288 videos, seed 2 | 100.0% | 16.7% | 100.0% | 16.7% |

- shape: 64x64, 14-px disc, as colour; only the appearance cue changes. Measured on H.264-decoded
  single frames (tests/test_synth.py, 24 videos per shape): a nearest-centroid template on the
  disc's red-minus-green patch separates the shapes (100 % held out, classes 65 std apart; also
  100 % after MPEG-4, measured once), the disc's mean colour does not (46 %, chance 50 %).
- long: 64 frames, the disc (2 colours x 4 directions) moves during 6-9 of them (action_fraction
  0.1..0.15). A flow stream tested on K segments x L = 5 fields (`tsn_test_indices`, one view)
  reaches at most (`segment_ceiling`, checked against rendered videos by the tests; a ceiling in
  expectation over the action's random timing, which a finite test list can miss either way by chance):

      K = 1: 19.4 %   K = 3: 33.1 %   K = 8: 50.0 %   (a field sees the motion in 18.3 / 54.9 / 100 %)

  and a two-stream model 38.7 / 66.2 / 100 %. Those are test coverage as much as K: TSN tests every
  model on 25 snippets whatever K it trained with, and on 24 (`README_TEST_SNIPPETS`: 24 / K views of
  K snippets, `data.test_clips`) every K here reaches its bound, flow 50 % and two-stream 100 % -- the
  protocol experiments/claims.yaml tests the K claim with, so that only training-time K differs there.
  The flow bound 1/A = 50 % is for a model that sees every field. With one colour (`appearances: [Red]`,
  as experiments/claims.yaml isolates the claim) the flow ceilings are the two-stream ones.
- camera: a 4 px/frame pan (the disc moves at 2.5) over a texture of std 12 grey levels. Measured on
  40 H.264-decoded videos with Farneback flow, the red disc's mean flow points in its class's direction
  (nearest of the 4) in 50 % of videos with plain flow and 100 % with warped flow (`compute_flow(...,
  warp=True)`, `data.flow_warp: true`). The ceilings are the same for both: the background shows the
  pan, so a network could learn to subtract it; warped flow spares it the effort. This demonstrates the
  mechanism under a pan faster than the actor; it does not reproduce a TSN result (TSN's Table 2: flow
  87.2 %, warped flow 86.9 % on UCF-101; warped flow helped there only as a third stream).
- shape_source / shape_small / colour_source: pretraining (RGB; one motion, so single frames reach
  100 %). The target, shape_small, is the 4 axis halves with few labels: `train_groups` 2 of 3 clips,
  so a split trains on 6 videos per class (3 once `data.val` holds out one of the 2 groups) and tests
  on 9 (36 videos). The source, shape_source, shares its primitives -- red/green layouts inside a
  24-px disc, the same colours and size -- but none of its classes: the bands, the centre dot and
  ring, and the halves turned 45 degrees, 144 training videos. The control source, colour_source,
  has as many training videos (144) of a task as easy, plain discs of 6 other colours, whose cue
  (which colour) shares nothing with the target's (where the two colours lie). The ceilings do not
  depend on pretraining; it changes how close a model gets from 3 labelled videos per class.

Layout (UCF-101's own; splits are by group, as UCF's: split k tests a block of groups, so train and
test of a split never share a group -- with 25 groups exactly UCF's 1-7, 8-14, 15-21):

    <out>/UCF101/<Class>/v_<Class>_gXX_cYY.avi
    <out>/ucfTrainTestlist/classInd.txt          "1 GreenLeft"  (1-based, classes sorted as UCF's)
    <out>/ucfTrainTestlist/trainlist0{1,2,3}.txt "GreenLeft/v_GreenLeft_g03_c01.avi 1"
    <out>/ucfTrainTestlist/testlist0{1,2,3}.txt  "GreenLeft/v_GreenLeft_g01_c01.avi"
    <out>/README.md, <out>/spec.json
    <out>/manifest.json                          written first: by whom, the spec, whether complete

Each video is a pure function of (spec, class, group, clip) with its own seeded generator
(`render_video`), so any one video can be regenerated alone.

`<out>` must be new, empty, or a folder this command wrote (its manifest.json, or the spec.json of a
data set written before manifests): never a folder of other files, such as a real UCF-101 release.
A run that was interrupted (`"complete": false`) is finished by the same command; training refuses
such a folder meanwhile (`annotations.require_finished`).
"""
import dataclasses
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

OBJECT_LUMA = 120.0  # every palette colour's Y; well above the background so flow sees the disc
BACKGROUND_LUMA = 50.0  # grey background level (R = G = B)
NUM_SPLITS = 3  # UCF-101 has three train/test splits
# SynthSpec.codec -> what the README calls it; every codec goes in .avi, UCF-101's container.
CODECS = {"h264": "H.264", "mpeg4": "MPEG-4 Part 2 (fourcc XVID, real UCF-101's codec)"}
# decord 0.6.0 fails or mis-shapes frames of exactly these widths (measured over even widths 16-128).
DECORD_BAD_WIDTHS = (16, 24, 48, 72)

# Isoluminant colours, Y = 0.299 R + 0.587 G + 0.114 B = 120 +- 0.02; channels <= 231 so that YUV
# round trips rarely clip. Extend with any (R, G, B) whose Y is OBJECT_LUMA (validate_spec checks).
APPEARANCES: dict[str, tuple[int, int, int]] = {
    "Red": (229, 74, 71),
    "Green": (35, 180, 34),
    "Blue": (104, 107, 229),
    "Yellow": (132, 137, 1),
    "Magenta": (230, 43, 228),
    "Cyan": (2, 170, 172),
    "Orange": (218, 93, 2),
    "Purple": (168, 74, 231),
}


# Shape appearances: a two-colour pattern inside the disc. Each maps the offset (dx, dy) of a pixel
# from the disc's centre and the disc's radius (px) to the signed distance (px) from the pattern's
# boundary, negative where the first of `SynthSpec.shape_colours` goes; the second fills the rest.
# Every pattern gives each colour exactly half of the disc's area (the test checks it), so the disc's
# outline, grey level and mean colour are the same for every shape: only the layout differs.
# The four halves are rotations of one another, as are the four turned by 45 degrees and Band and Pillar,
# so within each family even a colour histogram of the disc is the same for every shape. Dot and Ring are
# not such a pair: the disc's anti-aliased rim blends the outer colour with the background, which a
# histogram can see.
BAND_HALF_WIDTH = 0.40397  # x radius: a band |dy| < h * r through a disc's centre covers half its area
SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "TopHalf": lambda dx, dy, radius: dy,  # first colour above the centre line (+y is down)
    "BottomHalf": lambda dx, dy, radius: -dy,
    "LeftHalf": lambda dx, dy, radius: dx,
    "RightHalf": lambda dx, dy, radius: -dx,
    "TopLeftHalf": lambda dx, dy, radius: (dx + dy) / np.sqrt(2),  # the halves turned by 45 degrees
    "TopRightHalf": lambda dx, dy, radius: (dy - dx) / np.sqrt(2),
    "BottomLeftHalf": lambda dx, dy, radius: (dx - dy) / np.sqrt(2),
    "BottomRightHalf": lambda dx, dy, radius: -(dx + dy) / np.sqrt(2),
    "Band": lambda dx, dy, radius: np.abs(dy) - BAND_HALF_WIDTH * radius,  # horizontal band
    "Pillar": lambda dx, dy, radius: np.abs(dx) - BAND_HALF_WIDTH * radius,  # vertical band
    "Dot": lambda dx, dy, radius: np.hypot(dx, dy) - radius / np.sqrt(2),  # centre disc of half the area
    "Ring": lambda dx, dy, radius: radius / np.sqrt(2) - np.hypot(dx, dy),  # the outer half: Dot's colours swapped
}


class Motion(NamedTuple):
    """A motion class: velocity in px/frame (image axes, +y is down); translate or oscillate.

    `period_frames` 0 translates at (dx, dy) for ever (wrapping around the frame); > 0 oscillates
    along (dx, dy) with that period, (dx, dy) being the peak velocity.
    """

    dx_px_per_frame: float
    dy_px_per_frame: float
    period_frames: float = 0.0


# Extend with any CamelCase name -> Motion. Speeds suit Farneback flow at 64x64 (1-5 px/frame).
MOTIONS: dict[str, Motion] = {
    "Left": Motion(-2.5, 0.0),
    "Right": Motion(2.5, 0.0),
    "Up": Motion(0.0, -2.5),
    "Down": Motion(0.0, 2.5),
    "SlowLeft": Motion(-1.25, 0.0),
    "SlowRight": Motion(1.25, 0.0),
    "FastLeft": Motion(-5.0, 0.0),
    "FastRight": Motion(5.0, 0.0),
    "Swing": Motion(2.5, 0.0, period_frames=16.0),  # horizontal to and fro
    "Bob": Motion(0.0, 2.5, period_frames=16.0),  # vertical up and down
}


@dataclass(frozen=True)
class SynthSpec:
    """Everything that determines the data set; `validate_spec` checks it before anything is written."""

    appearances: tuple[str, ...] = ("Red", "Green")  # keys of APPEARANCES; 2 x 2 grid: bounds 50/50/100 %
    motions: tuple[str, ...] = ("Left", "Right")  # keys of MOTIONS; opposite directions: clear flow
    groups: int = 6  # UCF-style gXX; >= 3 so each of the 3 splits tests its own groups
    clips_per_group: int = 3  # UCF-style cYY; 6 x 3 x 4 classes = 72 videos, seconds to write
    num_frames: int = 32  # enough for 8 TSN segments x (frame, frame + 1) flow pairs
    height: int = 64  # small enough for CPU training, big enough for Farneback flow
    width: int = 64  # even (yuv420p)
    fps: int = 25  # UCF-101's frame rate
    seed: int = 0  # the whole data set is a pure function of the spec
    object_size: int = 14  # disc diameter in px: survives 64x64 Farneback flow
    camera_motion: float = 0.0  # px/frame pan of the whole scene, random direction per video
    partial_action: bool = False  # move only during a random 1/4..1/2 of the video
    clutter: int = 0  # number of distractor squares (half the disc's size)
    noise_std: float = 0.0  # Gaussian pixel noise, grey levels
    texture: float = 0.0  # background texture contrast (std, grey levels); 0 = flat grey
    action_fraction: tuple[float, float] = (0.25, 0.5)  # with partial_action: the action's share of the video
    shape_colours: tuple[str, str] = ("Red", "Green")  # SHAPES appearances are painted in these two colours
    codec: str = "h264"  # a key of CODECS: "h264" (x264), or "mpeg4" (MPEG-4 Part 2, real UCF-101's)
    # > 0: each split's training list keeps only its first N training groups (few labelled videos per
    # class, the test list unchanged); 0: every group outside the test fold trains, as UCF-101's
    train_groups: int = 0


# Named variants, each isolating one claim (the module docstring gives each one's ceilings):
# `spec_from_options({"preset": name, ...})` or `actionlab data synth --preset name`; explicit
# fields override the preset's.
PRESETS: dict[str, dict] = {
    # Two streams are complementary: RGB knows the colour, flow the direction (the default).
    "colour": {},
    # RGB recognises appearance by shape, not only colour: same outline, grey level and colours.
    "shape": {"appearances": ("TopHalf", "BottomHalf")},
    # TSN's segments: the action fills 10-15 % of a 64-frame video; 8 snippets always see it, 3 often miss it.
    "long": {"appearances": ("Red", "Green"), "motions": ("Left", "Right", "Up", "Down"), "num_frames": 64,
             "partial_action": True, "action_fraction": (0.1, 0.15)},
    # Warped flow's mechanism: a 4 px/frame pan (faster than the disc's 2.5) over a texture RANSAC can lock onto.
    "camera": {"appearances": ("Red", "Green"), "motions": ("Left", "Right", "Up", "Down"), "camera_motion": 4.0,
               "texture": 12.0},
    # The default classes as real UCF-101 stores them: MPEG-4 Part 2 in .avi.
    "mpeg4": {"codec": "mpeg4"},
    # Pretraining on a larger source set (RGB): 8 two-colour patterns (the bands, the centre disc and ring,
    # the halves turned 45 degrees), 36 videos each, in a 24-px disc (with the 14-px one, SGD taught them to
    # 59 % on val in 20 epochs, against 81 %: experiments/claims.yaml) ...
    "shape_source": {"appearances": ("Band", "Pillar", "Dot", "Ring", "TopLeftHalf", "TopRightHalf",
                                     "BottomLeftHalf", "BottomRightHalf"), "motions": ("Left",), "groups": 6,
                     "clips_per_group": 6, "object_size": 24, "seed": 1},
    # ... then fine-tuning on a few-shot target of the same primitives (red/green layouts inside the disc, same
    # colours and size) but other classes, the four axis halves: 2 training groups of 3 clips per class (3
    # videos once data.val holds out one of the groups), 9 test videos per class.
    "shape_small": {"appearances": ("TopHalf", "BottomHalf", "LeftHalf", "RightHalf"), "motions": ("Left",),
                    "groups": 9, "clips_per_group": 3, "train_groups": 2, "object_size": 24},
    # The control source: as many videos of 6 plain colours (neither of the patterns' red and green) at the same
    # size, a task as easy to learn whose cue shares nothing with the target's (where the colours lie in the disc).
    "colour_source": {"appearances": ("Blue", "Yellow", "Magenta", "Cyan", "Orange", "Purple"), "motions": ("Left",),
                      "groups": 6, "clips_per_group": 8, "object_size": 24, "seed": 2},
}


def validate_spec(spec: SynthSpec) -> None:
    """Raise ValueError naming the first invalid field of `spec`."""
    appearance_table = SHAPES if is_shape_spec(spec) else APPEARANCES
    for field, table in (("appearances", appearance_table), ("motions", MOTIONS)):
        names = getattr(spec, field)
        if not isinstance(names, tuple) or not names:
            raise ValueError(f"SynthSpec.{field} must be a non-empty tuple of names, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"SynthSpec.{field} has duplicates: {names!r}")
        for name in names:
            if name not in table:
                known = sorted(APPEARANCES) + sorted(SHAPES) if field == "appearances" else sorted(table)
                raise ValueError(f"SynthSpec.{field}: unknown name {name!r} (all colours or all shapes); "
                                 f"known: {known}")
            if not (name.isalnum() and name[0].isupper()):
                raise ValueError(f"SynthSpec.{field}: {name!r} is not CamelCase (UCF class names are)")
    colours = spec.appearances if appearance_table is APPEARANCES else ()
    for name in colours:  # the bounds rest on it: grey frames must not tell colours apart
        if abs(luma(APPEARANCES[name]) - OBJECT_LUMA) > 0.5:
            raise ValueError(f"SynthSpec.appearances: {name!r} has luma {luma(APPEARANCES[name]):.2f}, not {OBJECT_LUMA}")
    _validate_shape_colours(spec)
    if len(spec.appearances) * len(spec.motions) < 2:
        raise ValueError("SynthSpec.appearances x SynthSpec.motions must give at least 2 classes")
    if len(set(class_names(spec))) != len(spec.appearances) * len(spec.motions):
        raise ValueError("SynthSpec.appearances x SynthSpec.motions give ambiguous class names")
    minimums = {"groups": NUM_SPLITS, "clips_per_group": 1, "num_frames": 8, "fps": 1, "object_size": 2}
    for field, minimum in minimums.items():
        if getattr(spec, field) < minimum:
            raise ValueError(f"SynthSpec.{field} must be >= {minimum}, got {getattr(spec, field)}")
    for field in ("height", "width"):
        value = getattr(spec, field)
        if value < 16 or value % 2:
            raise ValueError(f"SynthSpec.{field} must be even and >= 16 (yuv420p), got {value}")
    if spec.width in DECORD_BAD_WIDTHS:
        raise ValueError(f"SynthSpec.width {spec.width} cannot be read back by decord 0.6; avoid {DECORD_BAD_WIDTHS}")
    if spec.object_size > min(spec.height, spec.width) // 2:
        raise ValueError(f"SynthSpec.object_size must be <= half the frame side, got {spec.object_size}")
    spare = spec.groups - len(fold_groups(spec.groups, 1))  # training groups of a split
    if not 0 <= spec.train_groups <= spare:
        raise ValueError(f"SynthSpec.train_groups must be 0 (all) to {spare} (a split's training groups), "
                         f"got {spec.train_groups}")
    for field in ("camera_motion", "clutter", "noise_std", "texture"):
        if getattr(spec, field) < 0:
            raise ValueError(f"SynthSpec.{field} must be >= 0, got {getattr(spec, field)}")
    _validate_action_fraction(spec)
    if spec.codec not in CODECS:
        raise ValueError(f"SynthSpec.codec must be one of {sorted(CODECS)}, got {spec.codec!r}")


def _validate_shape_colours(spec: SynthSpec) -> None:
    colours = spec.shape_colours
    if not is_shape_spec(spec):
        if colours != SynthSpec.shape_colours:  # a setting that would be ignored is a mistake
            raise ValueError("SynthSpec.shape_colours is set, but the appearances are colours, not SHAPES")
        return
    if not (isinstance(colours, tuple) and len(colours) == 2 and colours[0] != colours[1]):
        raise ValueError(f"SynthSpec.shape_colours must be two different colour names, got {colours!r}")
    for name in colours:
        if name not in APPEARANCES:
            raise ValueError(f"SynthSpec.shape_colours: unknown colour {name!r}; known: {sorted(APPEARANCES)}")
        if abs(luma(APPEARANCES[name]) - OBJECT_LUMA) > 0.5:  # the pattern must not show in grey frames
            raise ValueError(f"SynthSpec.shape_colours: {name!r} has luma {luma(APPEARANCES[name]):.2f}, "
                             f"not {OBJECT_LUMA}")


def _validate_action_fraction(spec: SynthSpec) -> None:
    fraction = spec.action_fraction
    if not spec.partial_action:
        if fraction != SynthSpec.action_fraction:  # a setting that would be ignored is a mistake
            raise ValueError("SynthSpec.action_fraction is set, but partial_action is false")
        return
    if not (isinstance(fraction, tuple) and len(fraction) == 2 and 0 < fraction[0] <= fraction[1] <= 1):
        raise ValueError(f"SynthSpec.action_fraction must be (low, high) with 0 < low <= high <= 1, got {fraction!r}")
    if action_lengths(spec)[0] < 2:
        raise ValueError(f"SynthSpec.action_fraction: {fraction[0]} of {spec.num_frames} frames is under 2 frames, "
                         "so some videos would not move at all")


def is_shape_spec(spec: SynthSpec) -> bool:
    """Whether the appearances are SHAPES (patterns in `shape_colours`) rather than APPEARANCES (colours)."""
    return isinstance(spec.appearances, tuple) and bool(spec.appearances) and spec.appearances[0] in SHAPES


def action_lengths(spec: SynthSpec) -> range:
    """Frames the disc's motion clock runs with `partial_action`, each equally likely: floor(low * T) to
    floor(high * T) of T = num_frames (1/4..1/2 by default); it moves in all but the last of them."""
    low, high = (math.floor(fraction * spec.num_frames + 1e-9) for fraction in spec.action_fraction)
    return range(low, high + 1)


def luma(rgb) -> float:
    """BT.601 luminance Y = 0.299 R + 0.587 G + 0.114 B (what cv2's RGB2GRAY computes)."""
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def class_names(spec: SynthSpec) -> list[str]:
    """Class names `<Appearance><Motion>` (e.g. 'RedLeft'), sorted as UCF-101's classInd is."""
    return sorted(a + m for a in spec.appearances for m in spec.motions)


def class_factors(spec: SynthSpec, class_name: str) -> tuple[str, str]:
    """The (appearance, motion) pair a class name stands for."""
    for appearance in spec.appearances:
        for motion in spec.motions:
            if appearance + motion == class_name:
                return appearance, motion
    raise ValueError(f"{class_name!r} is not a class of this spec; classes: {class_names(spec)}")


def accuracy_bounds(spec: SynthSpec) -> dict[str, float]:
    """Best video accuracy reachable from each cue (see the module docstring for why).

    Returns:
        {'appearance_only': 1/M, 'motion_only': 1/A, 'both': 1.0, 'chance': 1/(A*M)}.
    """
    num_appearances, num_motions = len(spec.appearances), len(spec.motions)
    return {
        "appearance_only": 1.0 / num_motions,
        "motion_only": 1.0 / num_appearances,
        "both": 1.0,
        "chance": 1.0 / (num_appearances * num_motions),
    }


class SegmentCeiling(NamedTuple):
    """Best video accuracy of TSN streams that see K segments x L flow fields of each test video."""

    p_hit: float  # chance that a sampled flow field falls where the disc moves
    motion_only: float  # flow-only stream: p_hit / A + (1 - p_hit) / (A * M)
    both: float  # two-stream (the RGB stream knows the appearance): p_hit + (1 - p_hit) / M


def action_timings(spec: SynthSpec) -> list[tuple[int, int, float]]:
    """Every (start_frame, length, probability) of the moving run `render_frames` can draw.

    The disc moves between frames start .. start + length - 1, i.e. in flow fields start ..
    start + length - 2 (field i is frame i -> i + 1). Without `partial_action`: one timing, the whole video.
    """
    num_frames = spec.num_frames
    if not spec.partial_action:
        return [(0, num_frames, 1.0)]
    lengths = action_lengths(spec)
    return [
        (start, length, 1.0 / len(lengths) / (num_frames - length + 1))
        for length in lengths
        for start in range(num_frames - length + 1)
    ]


def segment_ceiling(spec: SynthSpec, *, num_segments: int, frames_per_segment: int, num_clips: int = 1
                    ) -> SegmentCeiling:
    """Best accuracy of TSN flow / two-stream models whose test views are `tsn_test_indices` fields.

    A flow field either shows the disc moving (inside the action) or standing still. If any of the
    V x K x L fields sampled from the T - 1 flow fields falls inside the action, the flow stream can
    know the motion and reaches its bound 1/A; if none does, it has seen a still disc, which any of
    the A x M classes may be: chance 1/(A M). The timing is drawn independently of the class, so the
    exact mean over `action_timings` gives the ceiling in expectation: a finite test list's own
    timings put its best accuracy near it, either side, by chance. (With partial_action off, p_hit is 1.)

    Args:
        spec: the data set.
        num_segments: K; frames_per_segment: L flow fields per segment; num_clips: V test views.
    Returns:
        SegmentCeiling(p_hit, motion_only, both).
    """
    from orchestrator.data.sampling import tsn_test_indices

    fields = tsn_test_indices(spec.num_frames - 1, num_segments=num_segments,
                              frames_per_segment=frames_per_segment, num_clips=num_clips).ravel()  # (V * K * L,)
    p_hit = math.fsum(p for start, length, p in action_timings(spec)
                      if ((fields >= start) & (fields <= start + length - 2)).any())
    num_appearances, num_motions = len(spec.appearances), len(spec.motions)
    return SegmentCeiling(
        p_hit=p_hit,
        motion_only=p_hit / num_appearances + (1 - p_hit) / (num_appearances * num_motions),
        both=p_hit + (1 - p_hit) / num_motions,
    )


def fold_groups(num_groups: int, split: int) -> range:
    """1-based groups in the test fold of `split` (1..3): UCF's rule, 7 of 25 groups per fold.

    With 25 groups this is UCF-101's 1-7, 8-14, 15-21 (22-25 always train); with 6 groups, 2 each.
    """
    fold_size = max(1, round(7 * num_groups / 25))
    return range((split - 1) * fold_size + 1, split * fold_size + 1)


def video_relpath(class_name: str, group: int, clip: int) -> str:
    """'Class/v_Class_gXX_cYY.avi', the path UCF's split files list (relative to UCF101/)."""
    return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.avi"


def video_seed(spec: SynthSpec, class_name: str, group: int, clip: int) -> tuple[int, ...]:
    """The seed of one video: a pure function of (spec.seed, class, group, clip)."""
    return (spec.seed, zlib.crc32(class_name.encode()), group, clip)


def render_video(spec: SynthSpec, class_name: str, group: int, clip: int) -> np.ndarray:
    """The frames of one video, uint8 (T, H, W, 3), before encoding; regenerates it alone."""
    appearance, motion = class_factors(spec, class_name)
    look = appearance if is_shape_spec(spec) else APPEARANCES[appearance]
    return render_frames(spec, look, MOTIONS[motion], video_seed(spec, class_name, group, clip))


def render_frames(spec: SynthSpec, look, motion: Motion, seed: tuple[int, ...]) -> np.ndarray:
    """Render a disc that looks like `look` doing `motion` plus the spec's options, uint8 (T, H, W, 3).

    `look` is an (R, G, B) colour, or a SHAPES name: that pattern in `spec.shape_colours`.
    Each random component draws from its own child generator, so switching an option on (say
    clutter) leaves the others -- the actor's trajectory, the camera -- unchanged.
    """
    actor_rng, camera_rng, timing_rng, clutter_rng, texture_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)  # fresh: spawn() is stateful
    )
    t_frames, height, width = spec.num_frames, spec.height, spec.width
    times = np.arange(t_frames, dtype=np.float64)
    camera_xy = _camera_offsets(times, spec.camera_motion, camera_rng)  # (T, 2)
    actor_times = _partial_times(times, action_lengths(spec), timing_rng) if spec.partial_action else times
    actor_xy = _trajectory(motion, actor_times, height, width, actor_rng) + camera_xy

    frames = np.broadcast_to(_background(spec, camera_xy, texture_rng)[..., None], (t_frames, height, width, 3))
    frames = frames.astype(np.float32)
    palette = [APPEARANCES[name] for name in (spec.shape_colours if is_shape_spec(spec) else spec.appearances)]
    motions = [MOTIONS[name] for name in spec.motions]
    for _ in range(spec.clutter):  # behind the actor, so the actor is never hidden
        distractor_colour = palette[clutter_rng.integers(len(palette))]
        distractor_motion = motions[clutter_rng.integers(len(motions))]
        xy = _trajectory(distractor_motion, times, height, width, clutter_rng) + camera_xy
        alpha = _square_alpha(xy, spec.object_size / 2, height, width)
        frames = _paint(frames, alpha, distractor_colour)
    radius = spec.object_size / 2
    if isinstance(look, str):  # a shape: each pixel mixes the two colours by its share of the pattern
        first, second = (np.asarray(APPEARANCES[name], np.float32) for name in spec.shape_colours)
        share = _pattern_share(SHAPES[look], actor_xy, radius, height, width)[..., None]  # (T, H, W, 1)
        look = first * share + second * (1 - share)  # (T, H, W, 3)
    frames = _paint(frames, _disc_alpha(actor_xy, radius, height, width), look)
    if spec.noise_std > 0:
        frames = frames + noise_rng.normal(0.0, spec.noise_std, frames.shape).astype(np.float32)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _trajectory(motion: Motion, times: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Centre (x, y) per time, (T, 2), unwrapped: uniform random start (and phase), so any one
    frame's position, taken modulo the frame, is uniform whatever the motion."""
    start = rng.uniform(0.0, 1.0, size=2) * (width, height)
    velocity = np.array([motion.dx_px_per_frame, motion.dy_px_per_frame])
    if motion.period_frames == 0:
        return start + times[:, None] * velocity
    phase = rng.uniform(0.0, 2 * np.pi)
    omega = 2 * np.pi / motion.period_frames
    return start + (np.sin(omega * times + phase) / omega)[:, None] * velocity


def _partial_times(times: np.ndarray, lengths: range, rng: np.random.Generator) -> np.ndarray:
    """Motion clock that runs only during a random run of frames, still elsewhere: the run's length is
    uniform over `lengths`, then its start uniform over the places it fits (`action_timings`)."""
    num_frames = len(times)
    length = int(rng.integers(lengths.start, lengths.stop))
    start = int(rng.integers(0, num_frames - length + 1))
    return np.clip(times, start, start + length - 1) - start


def _camera_offsets(times: np.ndarray, speed: float, rng: np.random.Generator) -> np.ndarray:
    """Scene shift (x, y) per time, (T, 2): a pan at `speed` px/frame in a random direction."""
    angle = rng.uniform(0.0, 2 * np.pi)
    return times[:, None] * speed * np.array([np.cos(angle), np.sin(angle)])


def _background(spec: SynthSpec, camera_xy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey background per frame, float (T, H, W): flat, or a smooth periodic texture panned by the camera."""
    shape = (spec.num_frames, spec.height, spec.width)
    if spec.texture == 0:
        return np.full(shape, BACKGROUND_LUMA, np.float32)
    # Low-pass white noise in Fourier space: periodic, so panning wraps around seamlessly.
    fy = np.fft.fftfreq(spec.height)[:, None]
    fx = np.fft.fftfreq(spec.width)[None, :]
    spectrum = np.fft.fft2(rng.normal(size=shape[1:])) * np.exp(-((fx**2 + fy**2) * (spec.height / 4) ** 2))
    texture = np.fft.ifft2(spectrum).real
    texture = (texture - texture.mean()) / texture.std()
    # Shift by the camera offset with the Fourier shift theorem (exact sub-pixel, wraps around).
    shifted_spectrum = np.fft.fft2(texture)[None] * np.exp(
        -2j * np.pi * (fx[None] * camera_xy[:, 0, None, None] + fy[None] * camera_xy[:, 1, None, None])
    )
    frames = BACKGROUND_LUMA + spec.texture * np.fft.ifft2(shifted_spectrum).real
    return frames.astype(np.float32)


def _wrapped_offsets(xy: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance on the torus from each pixel to the centre per frame, (T, H, W) each for x and y."""
    xs = np.arange(width)[None, None, :] - xy[:, 0, None, None]
    ys = np.arange(height)[None, :, None] - xy[:, 1, None, None]
    return (xs + width / 2) % width - width / 2, (ys + height / 2) % height - height / 2


def _disc_alpha(xy: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage of a disc of `radius` at each centre, float (T, H, W) in [0, 1]."""
    dx, dy = _wrapped_offsets(xy, height, width)
    return np.clip(radius + 0.5 - np.hypot(dx, dy), 0.0, 1.0).astype(np.float32)


def _pattern_share(pattern, xy: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased share of each pixel in a SHAPES pattern's first-colour region, float (T, H, W) in [0, 1]."""
    dx, dy = _wrapped_offsets(xy, height, width)
    return np.clip(0.5 - pattern(dx, dy, radius), 0.0, 1.0).astype(np.float32)


def _square_alpha(xy: np.ndarray, side: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage of an axis-aligned square of `side` px, float (T, H, W) in [0, 1]."""
    dx, dy = _wrapped_offsets(xy, height, width)
    half = side / 2 + 0.5
    return (np.clip(half - np.abs(dx), 0.0, 1.0) * np.clip(half - np.abs(dy), 0.0, 1.0)).astype(np.float32)


def _paint(frames: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    """Alpha-blend `colour` over frames (T, H, W, 3) with coverage alpha (T, H, W)."""
    alpha = alpha[..., None]
    return frames * (1 - alpha) + np.asarray(colour, np.float32) * alpha


def split_lines(spec: SynthSpec, split: int) -> tuple[list[str], list[str]]:
    """UCF's trainlist / testlist lines of one split: 'Class/v_..avi <1-based label>' / 'Class/v_..avi'."""
    test = fold_groups(spec.groups, split)
    train = [group for group in range(1, spec.groups + 1) if group not in test]
    train = train[:spec.train_groups or None]  # the rest of the groups are in no list of this split
    train_lines, test_lines = [], []
    for label, name in enumerate(class_names(spec), start=1):
        for group in range(1, spec.groups + 1):
            for clip in range(1, spec.clips_per_group + 1):
                path = video_relpath(name, group, clip)
                if group in test:
                    test_lines.append(path)
                elif group in train:
                    train_lines.append(f"{path} {label}")
    return train_lines, test_lines


README_SEGMENTS = (1, 3, 8)  # TSN segment counts K whose ceilings the README tabulates (partial_action)
README_FLOW_FIELDS = 5  # L flow fields per segment, TSN's stack
# Snippets per test video in the README's second segment table and experiments/claims.yaml's K claim: TSN
# tests on 25 whatever K trained; a view holds exactly K snippets (models/tsn.py), and 24 is the count
# nearest 25 that K = 3 and K = 8 both divide (8 and 3 views).
README_TEST_SNIPPETS = 24


def readme_text(spec: SynthSpec) -> str:
    """The data set's README.md: what the classes are, the accuracy bounds and why."""
    bounds = accuracy_bounds(spec)
    names = class_names(spec)
    folds = "; ".join(
        f"split {k} tests groups {min(fold_groups(spec.groups, k))}-{max(fold_groups(spec.groups, k))}"
        for k in range(1, NUM_SPLITS + 1)
    )
    if is_shape_spec(spec):
        kind = "shape"
        looks = f"""A class is a disc showing one pattern of two colours ({" and ".join(spec.shape_colours)}) doing one motion.
Both colours have the same luminance (Y = 0.299 R + 0.587 G + 0.114 B = {OBJECT_LUMA:g}, background {BACKGROUND_LUMA:g}) and every
pattern gives each colour half of the disc, so the disc's outline, its grey level -- hence the optical flow --
and its mean colour are the same for every shape: only where the colours lie inside the disc tells shapes
apart."""
    else:
        kind = "colour"
        looks = f"""A class is a disc of one colour doing one motion. All colours have the same luminance
(Y = 0.299 R + 0.587 G + 0.114 B = {OBJECT_LUMA:g}, background {BACKGROUND_LUMA:g}), so grey frames and the optical flow
computed on them are the same for every colour."""
    if bounds["both"] > max(bounds["appearance_only"], bounds["motion_only"]):
        streams = "A two-stream model should beat both single streams"
    elif bounds["motion_only"] == bounds["both"]:
        streams = "With a single appearance the flow stream alone can reach the two-stream bound"
    else:
        streams = "With a single motion the RGB stream alone can reach the two-stream bound"
    trains = (f"the first {spec.train_groups} other groups train, the rest are in no list of that split: few labelled "
              "videos per class" if spec.train_groups else "the other groups train")
    low, high = spec.action_fraction
    return f"""# Synthetic UCF-101-style action data set (actionlab data synth)

{len(names)} classes = appearances {", ".join(spec.appearances)} x motions {", ".join(spec.motions)}:
{", ".join(names)}. {spec.groups} groups x {spec.clips_per_group} clips per class; {spec.num_frames} frames of \
{spec.width}x{spec.height} at {spec.fps} fps, {CODECS[spec.codec]} in .avi. Splits are by group, as in UCF-101 ({folds};
{trains}), so a split's train and test never share a group. spec.json holds the generating spec.

{looks} The disc starts at a uniformly random position and wraps
around the frame edges, so a single frame says nothing about the motion.

## Accuracy bounds (best possible video accuracy, balanced test set)

| cue | bound | why |
|---|---|---|
| appearance only (RGB single frames) | {bounds['appearance_only']:.1%} | knows the {kind}; the {len(spec.motions)} motions of that {kind} look alike in any one frame |
| motion only (optical flow) | {bounds['motion_only']:.1%} | knows the motion; flow on grey frames is blind to the {len(spec.appearances)} isoluminant {kind}s |
| both (two-stream) | {bounds['both']:.1%} | {kind} and motion together name the class |
| chance | {bounds['chance']:.1%} | 1 / {len(names)} classes |

{streams}; options below make the bounds harder to reach but do
not change them (up to codec artefacts, which are tiny at this quality).
{_readme_segments(spec)}{_readme_camera(spec)}
## Options used

camera_motion={spec.camera_motion} px/frame (whole scene pans, random direction per video),
partial_action={spec.partial_action} (disc moves only during a random {low:g}..{high:g} of the video),
clutter={spec.clutter} (smaller squares, colour and motion drawn from the palette independently of the class),
noise_std={spec.noise_std} (Gaussian, grey levels), texture={spec.texture} (background texture std, grey levels),
codec={spec.codec}.
"""


def _readme_segments(spec: SynthSpec) -> str:
    """README section on TSN segment ceilings, at one test view and at README_TEST_SNIPPETS snippets;
    empty without partial_action."""
    if not spec.partial_action:
        return ""
    lengths = action_lengths(spec)
    fitting = [k for k in README_SEGMENTS if k + README_FLOW_FIELDS - 1 <= spec.num_frames - 1]  # the sampler's need
    too_short = f"| (every K x {README_FLOW_FIELDS} needs more than {spec.num_frames - 1} flow fields) | | | |"

    def rows(views: dict[int, int], label: Callable[[int, int], str]) -> str:
        """One table row per {K: V test views}; label(K, V) is the first cell."""
        ceilings = ((k, v, segment_ceiling(spec, num_segments=k, frames_per_segment=README_FLOW_FIELDS, num_clips=v))
                    for k, v in views.items())
        return "\n".join(f"| {label(k, v)} | {c.p_hit:.1%} | {c.motion_only:.1%} | {c.both:.1%} |"
                         for k, v, c in ceilings) or too_short

    one_view = rows({k: 1 for k in fitting}, lambda k, v: f"{k} x {README_FLOW_FIELDS}")
    equal = rows({k: README_TEST_SNIPPETS // k for k in fitting if README_TEST_SNIPPETS % k == 0},
                 lambda k, v: f"{k} x {README_FLOW_FIELDS}, {v} views")
    return f"""
## The action fills part of each video: TSN segment ceilings

The disc moves during a random run of {lengths.start}..{lengths.stop - 1} of the {spec.num_frames} frames \
(action_fraction {spec.action_fraction[0]:g}..{spec.action_fraction[1]:g}) and
stands still elsewhere. A TSN stream tested on K segments x L flow fields (one view, each segment's centre:
`tsn_test_indices` of orchestrator/data/sampling.py) knows the motion only if one of its fields falls
inside that run; otherwise every class is alike. Best video accuracy, in expectation over the run's random
timing (`segment_ceiling`; a finite test list lands near it, either side, by chance):

| K x L | a field sees the motion | flow only | two-stream |
|---|---|---|---|
{one_view}

One view tests a K-segment model on K snippets, so these ceilings measure test coverage as much as K.
TSN tests every model on 25 snippets whatever its K. On {README_TEST_SNIPPETS} snippets (`data.test_clips`: \
{README_TEST_SNIPPETS} / K views of
K snippets, evenly spread; the count nearest 25 that K = 3 and 8 both divide) only training-time K differs:

| K x L, test views | a field sees the motion | flow only | two-stream |
|---|---|---|---|
{equal}
"""


def _readme_camera(spec: SynthSpec) -> str:
    """README section on camera motion and warped flow; empty without camera_motion."""
    if spec.camera_motion == 0:
        return ""
    speeds = sorted({float(np.hypot(MOTIONS[m].dx_px_per_frame, MOTIONS[m].dy_px_per_frame)) for m in spec.motions})
    texture = ("" if spec.texture > 0 else
               " With a flat background (texture=0) the pan shows only on the disc, so warping cannot find it.")
    return f"""
## Camera motion

The whole scene pans at {spec.camera_motion:g} px/frame in a random direction per video (disc speeds: \
{", ".join(f"{v:g}" for v in speeds)} px/frame), so the
flow on the disc is its own motion plus the pan. The bounds do not change -- the textured background shows
the pan, so a model could learn to subtract it -- but plain flow's direction cue is degraded; TSN's warped
flow (`data.flow_warp: true`) subtracts the pan, a RANSAC homography fitted to the flow, and restores it.{texture}
"""


def spec_from_options(options: bool | dict) -> SynthSpec | None:
    """The SynthSpec an experiment's `data.synth` asks for: None for false, the defaults for true,
    or a mapping of fields (lists become tuples), optionally with `preset` (a PRESETS name; the
    mapping's other fields override the preset's). Raises ValueError naming a bad field."""
    if options is False:
        return None
    options = {} if options is True else dict(options)
    preset = options.pop("preset", "colour")
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(SynthSpec)}
    for key in options:
        if key not in known:
            raise ValueError(f"{key}: unknown key; valid keys: {', '.join(sorted(known | {'preset'}))}")
    fields = {**PRESETS[preset], **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}}
    try:
        spec = SynthSpec(**fields)
    except TypeError as err:
        raise ValueError(str(err)) from None
    validate_spec(spec)
    return spec


SYNTH_MANIFEST = "manifest.json"  # as annotations.OUTPUT_MANIFEST, which require_finished reads
WRITTEN_BY = "actionlab data synth"


def _spec_fields(spec: SynthSpec) -> dict:
    """The spec as its JSON reads back (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _check_out_dir(out_dir: Path, spec: SynthSpec) -> None:
    """FileExistsError unless out_dir is new, empty (`paths.holds_files`), or ours and free for this spec
    (module docstring)."""
    from orchestrator.data.paths import holds_files

    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose another output folder")
    manifest, legacy_spec = out_dir / SYNTH_MANIFEST, out_dir / "spec.json"
    try:
        fields = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None
        legacy = json.loads(legacy_spec.read_text(encoding="utf-8")) if legacy_spec.is_file() else None
    except (ValueError, UnicodeDecodeError):
        fields = legacy = None
    ours = isinstance(fields, dict) and fields.get("written_by") == WRITTEN_BY
    ours_before_manifests = (fields is None and isinstance(legacy, dict)
                             and set(legacy) == {f.name for f in dataclasses.fields(SynthSpec)})
    if not (ours or ours_before_manifests):
        if holds_files(out_dir):
            raise FileExistsError(f"{out_dir} holds files that `actionlab data synth` did not write (no "
                                  f"{SYNTH_MANIFEST} of its own); choose a new or empty output folder")
        return
    video_root = out_dir / "UCF101"
    if video_root.exists():
        if ours and not fields.get("complete", True) and fields.get("spec") == _spec_fields(spec):
            return  # an interrupted run of this spec: finish it (every video is rewritten, byte for byte)
        raise FileExistsError(f"{video_root} already exists; delete it or choose another output folder")


def write_synthetic_ucf(out_dir: str | Path, spec: SynthSpec = SynthSpec(), *, progress: bool = True) -> Path:
    """Write the data set: videos under UCF101/, split files under ucfTrainTestlist/, README.md, spec.json.

    Args:
        out_dir: folder to create, or an empty one, or one this function wrote whose UCF101/ is gone
            or was left unfinished with this spec (no stale videos get mixed in); never a folder of
            other files (module docstring).
        spec: what to generate; validated before anything is written.
        progress: show a tqdm bar over the videos.
    Returns:
        out_dir, as a Path.
    Raises:
        ValueError naming a bad spec field; FileExistsError for an output folder it must not write.
    """
    from tqdm import tqdm

    from orchestrator.data.tasks import write_atomic
    from orchestrator.data.video_io import write_video

    validate_spec(spec)
    out_dir = Path(out_dir)
    video_root, list_dir = out_dir / "UCF101", out_dir / "ucfTrainTestlist"
    _check_out_dir(out_dir, spec)
    manifest = {"written_by": WRITTEN_BY, "spec": _spec_fields(spec), "complete": False}
    write_atomic(out_dir / SYNTH_MANIFEST, json.dumps(manifest, indent=2).encode())
    names = class_names(spec)
    jobs = [
        (name, group, clip)
        for name in names
        for group in range(1, spec.groups + 1)
        for clip in range(1, spec.clips_per_group + 1)
    ]
    for name, group, clip in tqdm(jobs, desc="synth videos", unit="video", disable=not progress):
        frames = render_video(spec, name, group, clip)
        write_video(video_root / video_relpath(name, group, clip), frames, fps=spec.fps, crf=18, deterministic=True,
                    codec=spec.codec)
    list_dir.mkdir(parents=True, exist_ok=True)
    (list_dir / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(names, start=1)))
    for split in range(1, NUM_SPLITS + 1):
        train_lines, test_lines = split_lines(spec, split)
        (list_dir / f"trainlist0{split}.txt").write_text("".join(line + "\n" for line in train_lines))
        (list_dir / f"testlist0{split}.txt").write_text("".join(line + "\n" for line in test_lines))
    (out_dir / "README.md").write_text(readme_text(spec))
    (out_dir / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2) + "\n")
    write_atomic(out_dir / SYNTH_MANIFEST, json.dumps({**manifest, "complete": True}, indent=2).encode())
    return out_dir
