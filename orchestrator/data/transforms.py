"""Spatial transforms of uint8 clips, applied identically to every frame and every modality.

Clips stay uint8 through resizing, cropping and flipping (cheap to move to the training device);
`normalize_clip` turns them into floats on that device.

Crop geometry is computed by small pure functions returning `CropBox`es, so the pixel boxes are
testable on their own; the ops then apply one box to all frames of a (T, C, H, W) clip.

Optical flow is stored quantised as uint8 with 127.5 as zero: q = round(f / bound * 127.5 + 127.5),
channel 0 the x-component, channel 1 y. Negating x is then exactly `255 - q` on channel 0, which
is what a horizontal flip of a flow clip needs (motion to the right becomes motion to the left).
Resizing does not rescale the flow values (TSN convention: they stay in units of the bound).
"""
from typing import NamedTuple

import einops
import numpy as np
import torch
import torchvision.transforms.v2.functional as F

CROPS = ("random", "multiscale", "center", "three", "ten")
TRAIN_CROPS = ("random", "multiscale")
TEST_CROPS = ("center", "three", "ten")
TEST_CROP_VIEWS = {"center": 1, "three": 3, "ten": 10}  # views a test crop makes of each sampled clip
MODALITIES = ("rgb", "flow", "rgbdiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TSN's GroupMultiScaleCrop: crop sides as fractions of the short side.
MULTISCALE_SCALES = (1.0, 0.875, 0.75, 0.66)
FLOW_ZERO = 127.5


class CropBox(NamedTuple):
    top: int
    left: int
    height: int
    width: int


class ClipParams(NamedTuple):
    """One item's random spatial transform, shared by all its modalities (`ClipTransform.draw`)."""
    height: int  # every modality is first resized to (height, width)
    width: int
    box: CropBox | None  # the training crop's box; None for test crops (fixed by the size)
    flip: bool


# ---- crop geometry (pure) --------------------------------------------------------------------


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H', W') with the shorter side equal to `short_side` and the aspect ratio kept (long side rounded half up)."""
    if height <= width:
        return short_side, (2 * width * short_side + height) // (2 * height)
    return (2 * height * short_side + width) // (2 * width), short_side


def _check_fits(height: int, width: int, crop_size: int) -> None:
    if not 1 <= crop_size <= min(height, width):
        raise ValueError(f"crop_size {crop_size} does not fit a {height}x{width} frame")


def center_crop_box(height: int, width: int, crop_size: int) -> CropBox:
    """The square crop in the middle (offsets floored when the slack is odd)."""
    _check_fits(height, width, crop_size)
    return CropBox((height - crop_size) // 2, (width - crop_size) // 2, crop_size, crop_size)


def random_crop_box(height: int, width: int, crop_size: int, rng: np.random.Generator) -> CropBox:
    """A square crop at a uniformly random position (top drawn first, then left)."""
    _check_fits(height, width, crop_size)
    top = int(rng.integers(0, height - crop_size + 1))
    left = int(rng.integers(0, width - crop_size + 1))
    return CropBox(top, left, crop_size, crop_size)


def three_crop_boxes(height: int, width: int, crop_size: int) -> tuple[CropBox, CropBox, CropBox]:
    """Start, middle and end square crops along the long side, centred on the short side.

    The usual test views of SlowFast/X3D (short side resized to the crop size, so the three crops
    together cover the whole frame). A square frame counts as wide.
    """
    centre = center_crop_box(height, width, crop_size)
    if width >= height:
        return tuple(CropBox(centre.top, left, crop_size, crop_size) for left in (0, centre.left, width - crop_size))
    return tuple(CropBox(top, centre.left, crop_size, crop_size) for top in (0, centre.top, height - crop_size))


def five_crop_boxes(height: int, width: int, crop_size: int) -> tuple[CropBox, ...]:
    """The four corners then the centre, in torchvision's `five_crop` order: tl, tr, bl, br, centre."""
    centre = center_crop_box(height, width, crop_size)
    bottom, right = height - crop_size, width - crop_size
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right)]
    return tuple(CropBox(top, left, crop_size, crop_size) for top, left in corners) + (centre,)


def multiscale_crop_sizes(
    height: int, width: int, *, scales: tuple[float, ...] = MULTISCALE_SCALES, max_distort: int = 1
) -> tuple[tuple[int, int], ...]:
    """Candidate (crop_h, crop_w) of TSN's multi-scale crop (Wang et al. 2016).

    Sides are `int(short_side * scale)`; height and width take scales at most `max_distort` apart
    in the list, which bounds the aspect-ratio jitter to neighbouring scales. Row-major over
    (height scale, width scale).
    """
    sides = [int(min(height, width) * scale) for scale in scales]
    return tuple(
        (crop_h, crop_w)
        for i, crop_h in enumerate(sides)
        for j, crop_w in enumerate(sides)
        if abs(i - j) <= max_distort
    )


def fixed_crop_offsets(height: int, width: int, crop_h: int, crop_w: int) -> tuple[tuple[int, int], ...]:
    """(top, left) of TSN's fixed crop positions: upper-left, upper-right, lower-left, lower-right, centre.

    As in TSN's `fill_fix_offset`, positions are multiples of a quarter of the slack, floored, so
    the "right"/"lower" crops may stop up to 3 pixels short of the edge.
    """
    h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
    return ((0, 0), (0, 4 * w_step), (4 * h_step, 0), (4 * h_step, 4 * w_step), (2 * h_step, 2 * w_step))


def random_multiscale_crop_box(
    height: int, width: int, rng: np.random.Generator, *, scales: tuple[float, ...] = MULTISCALE_SCALES,
    max_distort: int = 1,
) -> CropBox:
    """TSN's GroupMultiScaleCrop box: a random candidate size at a random fixed offset.

    Draws the size index, then the offset index. The caller resizes the crop to the network input.
    """
    sizes = multiscale_crop_sizes(height, width, scales=scales, max_distort=max_distort)
    crop_h, crop_w = sizes[int(rng.integers(len(sizes)))]
    offsets = fixed_crop_offsets(height, width, crop_h, crop_w)
    top, left = offsets[int(rng.integers(len(offsets)))]
    return CropBox(top, left, crop_h, crop_w)


# ---- ops on uint8 clips (T, C, H, W) ------------------------------------------------------------


def crop(clip: torch.Tensor, box: CropBox) -> torch.Tensor:
    """(T, C, H, W) -> (T, C, box.height, box.width), the same box in every frame."""
    return F.crop(clip, *box)


def center_crop(clip: torch.Tensor, crop_size: int) -> torch.Tensor:
    """(T, C, H, W) -> (T, C, crop_size, crop_size)."""
    return crop(clip, center_crop_box(*clip.shape[-2:], crop_size))


def horizontal_flip(clip: torch.Tensor, *, is_flow: bool = False) -> torch.Tensor:
    """Mirror left-right; for quantised flow (channel 0 = x) also negate x exactly: q -> 255 - q.

    Args:
        clip: uint8 (T, C, H, W).
        is_flow: the clip holds flow fields, not images.
    """
    flipped = F.horizontal_flip(clip)
    if is_flow:
        if clip.dtype != torch.uint8:
            raise ValueError(f"flow must be quantised uint8 to flip, got {clip.dtype}")
        flipped[:, 0] = 255 - flipped[:, 0]
    return flipped


def three_crop(clip: torch.Tensor, crop_size: int) -> list[torch.Tensor]:
    """(T, C, H, W) -> 3 clips (T, C, crop_size, crop_size) along the long side (see `three_crop_boxes`)."""
    return [crop(clip, box) for box in three_crop_boxes(*clip.shape[-2:], crop_size)]


def ten_crop(clip: torch.Tensor, crop_size: int, *, is_flow: bool = False) -> list[torch.Tensor]:
    """(T, C, H, W) -> 10 clips: the five crops (tl, tr, bl, br, centre), then the same five flipped."""
    crops = [crop(clip, box) for box in five_crop_boxes(*clip.shape[-2:], crop_size)]
    return crops + [horizontal_flip(c, is_flow=is_flow) for c in crops]


# ---- normalisation (on the training device) ---------------------------------------------------


def normalize_clip(
    clip_uint8: torch.Tensor,
    modality: str,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    num_segments: int = 1,
) -> torch.Tensor:
    """uint8 (..., C, T, H, W) -> float32 network input.

    Args:
        clip_uint8: uint8 (..., C, T, H, W), on any device.
        modality: 'rgb': (x / 255 - mean) / std per channel; 'flow': (q - 127.5) / 127.5, the flow
            in units of its bound, in [-1, 1]; 'rgbdiff': normalised RGB, then the difference of
            consecutive frames along T (TSN's RGB difference, Wang et al. 2016).
        mean, std: per-channel RGB statistics ('rgb' and 'rgbdiff').
        num_segments: 'rgbdiff' only: T holds K segments of L + 1 frames each (segment-major, as the
            'tsn' sampler lays them out); differences are taken within each segment only.

    Returns:
        float32 (..., C, T, H, W); for 'rgbdiff' (..., C, T - K, H, W), i.e. T + 1 frames in, T out
        for one segment.
    """
    x = clip_uint8.float()
    if modality == "flow":
        return (x - FLOW_ZERO) / FLOW_ZERO
    if modality not in ("rgb", "rgbdiff"):
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None, None]  # (C, 1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None, None]
    x = (x / 255.0 - mean_t) / std_t
    if modality == "rgb":
        return x
    num_frames = x.shape[-3]
    if num_segments < 1 or num_frames % num_segments or num_frames // num_segments < 2:
        raise ValueError(f"num_segments {num_segments} must split T={num_frames} into segments of at least 2 frames")
    x = einops.rearrange(x, "... c (k l) h w -> ... c k l h w", k=num_segments)
    diff = x[..., 1:, :, :] - x[..., :-1, :, :]  # (..., C, K, L, H, W), within each segment
    return einops.rearrange(diff, "... c k l h w -> ... c (k l) h w")


# ---- the Dataset's composite ----------------------------------------------------------------


class ClipTransform:
    """Resize, crop and flip every modality of a sample with one set of random parameters.

    Called as `transform(inputs, rng)` with `inputs` a dict from modality ('rgb', 'flow',
    'rgbdiff') to uint8 (V, T, H, W, C), V sampled views; returns the same keys mapped to uint8
    (V', C, T, crop_size, crop_size), ready for `normalize_clip`.

    Each modality is resized so its short side is `short_side`; modalities stored at different
    resolutions of the same field of view are then all resized to the smallest such (H', W'), so
    that one crop box covers the same scene region in every stream. The crop (and flip) is drawn
    once per call from `rng` and applied to every view, frame and modality; a flip negates flow x.

    Training crops: 'random' (a square at a random position) or 'multiscale' (TSN's multi-scale
    crop, resized to crop_size); each followed by a flip with probability 1/2 if `flip`.
    Test crops (no randomness): 'center'; 'three' (V' = 3V); 'ten' (V' = 10V, the ten-crop includes
    flips). Views come out video-view-major: [view0 crop0, view0 crop1, ..., view1 crop0, ...].
    """

    def __init__(self, *, train: bool, short_side: int = 128, crop_size: int = 112, crop: str = "random",
                 flip: bool = True):
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if crop not in (TRAIN_CROPS if train else TEST_CROPS):
            raise ValueError(f"crop {crop!r} is for {'testing' if train else 'training'}; "
                             f"with train={train} use one of {TRAIN_CROPS if train else TEST_CROPS}")
        if not isinstance(short_side, int) or short_side < 1:
            raise ValueError(f"short_side must be a positive integer, got {short_side!r}")
        if not isinstance(crop_size, int) or not 1 <= crop_size <= short_side:
            raise ValueError(f"crop_size must be an integer in 1..short_side={short_side}, got {crop_size!r}")
        self.train, self.short_side, self.crop_size, self.crop, self.flip = train, short_side, crop_size, crop, flip

    def __repr__(self) -> str:
        return (f"ClipTransform(train={self.train}, short_side={self.short_side}, crop_size={self.crop_size}, "
                f"crop={self.crop!r}, flip={self.flip})")

    def __call__(self, inputs: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """{modality: uint8 (V, T, H, W, C)} -> {modality: uint8 (V', C, T, crop_size, crop_size)}: `draw`, then `apply`."""
        _check_inputs(inputs)
        return self.apply(inputs, self.draw([clip.shape[2:4] for clip in inputs.values()], rng))

    def draw(self, sizes: list[tuple[int, int]], rng: np.random.Generator) -> ClipParams:
        """The random parameters of one item whose modalities' frames are `sizes` (H, W): the common
        resized size, then the crop box, then the flip, drawn in that order from `rng`. Needs only the
        frame sizes, so a loader that leaves decoding to the GPU (data.decode_device) draws them too."""
        resized = [short_side_size(int(h), int(w), self.short_side) for h, w in sizes]
        height, width = min(h for h, _ in resized), min(w for _, w in resized)
        box = None  # test crops are fixed by the frame size
        if self.crop == "random":
            box = random_crop_box(height, width, self.crop_size, rng)
        elif self.crop == "multiscale":
            box = random_multiscale_crop_box(height, width, rng)
        return ClipParams(height, width, box, self.train and self.flip and bool(rng.random() < 0.5))

    def apply(self, inputs: dict[str, torch.Tensor], params: ClipParams) -> dict[str, torch.Tensor]:
        """{modality: uint8 (V, T, H, W, C)} -> {modality: uint8 (V', C, T, crop_size, crop_size)} by
        `params`, on whatever device the clips are (the loader's CPU, or the GPU that decoded them)."""
        _check_inputs(inputs)
        height, width, box, do_flip = params
        outputs = {}
        for key, clip in inputs.items():
            num_views = clip.shape[0]
            frames = einops.rearrange(clip, "v t h w c -> (v t) c h w")
            frames = F.resize(frames, [height, width], antialias=True)  # (V*T, C, H', W')
            is_flow = key == "flow"
            if self.crop == "random":
                crops = [crop(frames, box)]
            elif self.crop == "multiscale":
                crops = [F.resized_crop(frames, *box, size=[self.crop_size] * 2, antialias=True)]
            elif self.crop == "center":
                crops = [center_crop(frames, self.crop_size)]
            elif self.crop == "three":
                crops = three_crop(frames, self.crop_size)
            else:
                crops = ten_crop(frames, self.crop_size, is_flow=is_flow)
            if do_flip:
                crops = [horizontal_flip(c, is_flow=is_flow) for c in crops]
            stacked = torch.stack(crops)  # (N, V*T, C, h, w), N crops per view
            outputs[key] = einops.rearrange(stacked, "n (v t) c h w -> (v n) c t h w", v=num_views).contiguous()
        return outputs


def _check_inputs(inputs: dict[str, torch.Tensor]) -> None:
    for key, clip in inputs.items():
        if key not in MODALITIES:
            raise ValueError(f"input key must be one of {MODALITIES}, got {key!r}")
        if clip.dtype != torch.uint8 or clip.ndim != 5:
            raise ValueError(f"{key}: expected uint8 (V, T, H, W, C), got {clip.dtype} {tuple(clip.shape)}")
