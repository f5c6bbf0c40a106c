"""`actionlab data synth`: a seeded synthetic action data set in the exact UCF-101 layout.

Every class is one cell of an appearance x motion grid: a disc of one colour (`APPEARANCES`)
moving one way (`MOTIONS`), e.g. `RedLeft`, `GreenLeft`, `RedRight`, `GreenRight`. Pairs of classes
differ only in appearance (like UCF's brushing hair vs. brushing teeth) or only in motion (like
front crawl vs. breast stroke), so the two-stream ablation (Simonyan & Zisserman, 2014) means
something:

- All colours have the same luminance Y = 0.299 R + 0.587 G + 0.114 B (`OBJECT_LUMA`), brighter
  than the grey background, so grey frames -- and the optical flow computed on them -- are
  identical in distribution for every colour: flow carries no appearance cue.
- The disc starts at a uniformly random position and wraps around the frame edges (a torus), so its
  position in any single frame is uniform whatever the motion: a frame carries no motion cue.

Accuracy bounds (Bayes-optimal, balanced classes; `accuracy_bounds`), for A appearances x M motions:

    appearance_only  1/M    a model seeing single frames knows the colour, and nothing of the motion
    motion_only      1/A    a model seeing grey-level motion (flow) knows the motion, not the colour
    both             1.0    colour and motion together name the class
    chance           1/(A*M)

With the default 2 x 2 grid: RGB-only and flow-only models top out at 50 %, two-stream at 100 %,
chance is 25 %. The bounds hold with every option on; the options only make the bound harder to
reach (up to codec artefacts, which are tiny at crf 18):

- `camera_motion`: the whole scene (textured background and objects) pans at this speed in a
  random direction per video, adding a global component to the flow.
- `partial_action`: the disc moves only during a random sub-interval of 1/4 to 1/2 of the video and
  stands still elsewhere -- TSN's segments (Wang et al., 2016) are meant for this.
- `clutter`: that many smaller square distractors, colours and motions drawn uniformly from the
  spec's own palette and motions, independent of the class: uninformative for both streams.
- `noise_std`: Gaussian pixel noise, std in grey levels.
- `texture`: contrast (std, grey levels) of a smooth random grey background texture.

Layout (UCF-101's own; splits are by group, as UCF's: split k tests a block of groups, so train and
test of a split never share a group -- with 25 groups exactly UCF's 1-7, 8-14, 15-21):

    <out>/UCF101/<Class>/v_<Class>_gXX_cYY.avi
    <out>/ucfTrainTestlist/classInd.txt          "1 GreenLeft"  (1-based, classes sorted as UCF's)
    <out>/ucfTrainTestlist/trainlist0{1,2,3}.txt "GreenLeft/v_GreenLeft_g03_c01.avi 1"
    <out>/ucfTrainTestlist/testlist0{1,2,3}.txt  "GreenLeft/v_GreenLeft_g01_c01.avi"
    <out>/README.md, <out>/spec.json

Each video is a pure function of (spec, class, group, clip) with its own seeded generator
(`render_video`), so any one video can be regenerated alone.
"""
import dataclasses
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

OBJECT_LUMA = 120.0  # every palette colour's Y; well above the background so flow sees the disc
BACKGROUND_LUMA = 50.0  # grey background level (R = G = B)
NUM_SPLITS = 3  # UCF-101 has three train/test splits
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


def validate_spec(spec: SynthSpec) -> None:
    """Raise ValueError naming the first invalid field of `spec`."""
    for field, table in (("appearances", APPEARANCES), ("motions", MOTIONS)):
        names = getattr(spec, field)
        if not isinstance(names, tuple) or not names:
            raise ValueError(f"SynthSpec.{field} must be a non-empty tuple of names, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"SynthSpec.{field} has duplicates: {names!r}")
        for name in names:
            if name not in table:
                raise ValueError(f"SynthSpec.{field}: unknown name {name!r}; known: {sorted(table)}")
            if not (name.isalnum() and name[0].isupper()):
                raise ValueError(f"SynthSpec.{field}: {name!r} is not CamelCase (UCF class names are)")
    for name in spec.appearances:  # the bounds rest on it: grey frames must not tell colours apart
        if abs(luma(APPEARANCES[name]) - OBJECT_LUMA) > 0.5:
            raise ValueError(f"SynthSpec.appearances: {name!r} has luma {luma(APPEARANCES[name]):.2f}, not {OBJECT_LUMA}")
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
    for field in ("camera_motion", "clutter", "noise_std", "texture"):
        if getattr(spec, field) < 0:
            raise ValueError(f"SynthSpec.{field} must be >= 0, got {getattr(spec, field)}")


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
    return render_frames(spec, APPEARANCES[appearance], MOTIONS[motion], video_seed(spec, class_name, group, clip))


def render_frames(spec: SynthSpec, colour, motion: Motion, seed: tuple[int, ...]) -> np.ndarray:
    """Render a disc of `colour` doing `motion` plus the spec's options, uint8 (T, H, W, 3).

    Each random component draws from its own child generator, so switching an option on (say
    clutter) leaves the others -- the actor's trajectory, the camera -- unchanged.
    """
    actor_rng, camera_rng, timing_rng, clutter_rng, texture_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)  # fresh: spawn() is stateful
    )
    t_frames, height, width = spec.num_frames, spec.height, spec.width
    times = np.arange(t_frames, dtype=np.float64)
    camera_xy = _camera_offsets(times, spec.camera_motion, camera_rng)  # (T, 2)
    actor_times = _partial_times(times, timing_rng) if spec.partial_action else times
    actor_xy = _trajectory(motion, actor_times, height, width, actor_rng) + camera_xy

    frames = np.broadcast_to(_background(spec, camera_xy, texture_rng)[..., None], (t_frames, height, width, 3))
    frames = frames.astype(np.float32)
    palette = [APPEARANCES[name] for name in spec.appearances]
    motions = [MOTIONS[name] for name in spec.motions]
    for _ in range(spec.clutter):  # behind the actor, so the actor is never hidden
        distractor_colour = palette[clutter_rng.integers(len(palette))]
        distractor_motion = motions[clutter_rng.integers(len(motions))]
        xy = _trajectory(distractor_motion, times, height, width, clutter_rng) + camera_xy
        alpha = _square_alpha(xy, spec.object_size / 2, height, width)
        frames = _paint(frames, alpha, distractor_colour)
    frames = _paint(frames, _disc_alpha(actor_xy, spec.object_size / 2, height, width), colour)
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


def _partial_times(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Motion clock that runs only during a random interval of 1/4..1/2 of the video, still elsewhere."""
    num_frames = len(times)
    length = int(rng.integers(num_frames // 4, num_frames // 2 + 1))
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
    test = set(fold_groups(spec.groups, split))
    train_lines, test_lines = [], []
    for label, name in enumerate(class_names(spec), start=1):
        for group in range(1, spec.groups + 1):
            for clip in range(1, spec.clips_per_group + 1):
                path = video_relpath(name, group, clip)
                if group in test:
                    test_lines.append(path)
                else:
                    train_lines.append(f"{path} {label}")
    return train_lines, test_lines


def readme_text(spec: SynthSpec) -> str:
    """The data set's README.md: what the classes are, the accuracy bounds and why."""
    bounds = accuracy_bounds(spec)
    names = class_names(spec)
    folds = "; ".join(
        f"split {k} tests groups {min(fold_groups(spec.groups, k))}-{max(fold_groups(spec.groups, k))}"
        for k in range(1, NUM_SPLITS + 1)
    )
    return f"""# Synthetic UCF-101-style action data set (actionlab data synth)

{len(names)} classes = appearances {", ".join(spec.appearances)} x motions {", ".join(spec.motions)}:
{", ".join(names)}. {spec.groups} groups x {spec.clips_per_group} clips per class; {spec.num_frames} frames of \
{spec.width}x{spec.height} at {spec.fps} fps, H.264 in .avi. Splits are by group, as in UCF-101 ({folds};
the other groups train), so a split's train and test never share a group. spec.json holds the generating spec.

A class is a disc of one colour doing one motion. All colours have the same luminance
(Y = 0.299 R + 0.587 G + 0.114 B = {OBJECT_LUMA:g}, background {BACKGROUND_LUMA:g}), so grey frames and the optical flow
computed on them are the same for every colour. The disc starts at a uniformly random position and wraps
around the frame edges, so a single frame says nothing about the motion.

## Accuracy bounds (best possible video accuracy, balanced test set)

| cue | bound | why |
|---|---|---|
| appearance only (RGB single frames) | {bounds['appearance_only']:.1%} | knows the colour; the {len(spec.motions)} motions of that colour look alike in any one frame |
| motion only (optical flow) | {bounds['motion_only']:.1%} | knows the motion; flow on grey frames is blind to the {len(spec.appearances)} isoluminant colours |
| both (two-stream) | {bounds['both']:.1%} | colour and motion together name the class |
| chance | {bounds['chance']:.1%} | 1 / {len(names)} classes |

A two-stream model should beat both single streams; options below make the bounds harder to reach but do
not change them (up to codec artefacts, which are tiny at crf 18).

## Options used

camera_motion={spec.camera_motion} px/frame (whole scene pans, random direction per video),
partial_action={spec.partial_action} (disc moves only during a random 1/4..1/2 of the video),
clutter={spec.clutter} (smaller squares, colour and motion drawn from the palette independently of the class),
noise_std={spec.noise_std} (Gaussian, grey levels), texture={spec.texture} (background texture std, grey levels).
"""


def spec_from_options(options: bool | dict) -> SynthSpec | None:
    """The SynthSpec an experiment's `data.synth` asks for: None for false, the defaults for true,
    or the given fields (lists become tuples). Raises ValueError naming a bad field."""
    if options is False:
        return None
    options = {} if options is True else options
    known = {f.name for f in dataclasses.fields(SynthSpec)}
    for key in options:
        if key not in known:
            raise ValueError(f"{key}: unknown key; valid keys: {', '.join(sorted(known))}")
    try:
        spec = SynthSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    except TypeError as err:
        raise ValueError(str(err)) from None
    validate_spec(spec)
    return spec


def write_synthetic_ucf(out_dir: str | Path, spec: SynthSpec = SynthSpec(), *, progress: bool = True) -> Path:
    """Write the data set: videos under UCF101/, split files under ucfTrainTestlist/, README.md, spec.json.

    Args:
        out_dir: folder to create; its UCF101/ must not exist yet (no stale videos get mixed in).
        spec: what to generate; validated before anything is written.
        progress: show a tqdm bar over the videos.
    Returns:
        out_dir, as a Path.
    """
    from tqdm import tqdm

    from orchestrator.data.video_io import write_video

    validate_spec(spec)
    out_dir = Path(out_dir)
    video_root, list_dir = out_dir / "UCF101", out_dir / "ucfTrainTestlist"
    if video_root.exists():
        raise FileExistsError(f"{video_root} already exists; delete it or choose another output folder")
    names = class_names(spec)
    jobs = [
        (name, group, clip)
        for name in names
        for group in range(1, spec.groups + 1)
        for clip in range(1, spec.clips_per_group + 1)
    ]
    for name, group, clip in tqdm(jobs, desc="synth videos", unit="video", disable=not progress):
        frames = render_video(spec, name, group, clip)
        write_video(video_root / video_relpath(name, group, clip), frames, fps=spec.fps, crf=18, deterministic=True)
    list_dir.mkdir(parents=True, exist_ok=True)
    (list_dir / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(names, start=1)))
    for split in range(1, NUM_SPLITS + 1):
        train_lines, test_lines = split_lines(spec, split)
        (list_dir / f"trainlist0{split}.txt").write_text("".join(line + "\n" for line in train_lines))
        (list_dir / f"testlist0{split}.txt").write_text("".join(line + "\n" for line in test_lines))
    (out_dir / "README.md").write_text(readme_text(spec))
    (out_dir / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2) + "\n")
    return out_dir
