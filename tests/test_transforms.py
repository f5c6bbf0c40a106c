"""Tests of clip transforms: exact crop boxes, flips (flow x negated exactly), stream alignment."""
import numpy as np
import pytest
import torch

from orchestrator.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    CropBox,
    center_crop,
    center_crop_box,
    crop,
    five_crop_boxes,
    fixed_crop_offsets,
    horizontal_flip,
    multiscale_crop_sizes,
    normalize_clip,
    random_crop_box,
    random_multiscale_crop_box,
    short_side_size,
    ten_crop,
    three_crop,
    three_crop_boxes,
)


def coordinate_clip(num_frames: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    """uint8 (T, C, H, W) whose channel 0 holds the row, channel 1 the column, channel 2 the frame index."""
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    frames = [torch.stack([rows, cols, torch.full_like(rows, t)][:channels]) for t in range(num_frames)]
    return torch.stack(frames).to(torch.uint8)


def box_of(crop_tchw: torch.Tensor) -> CropBox:
    """Recover the crop box of an unflipped crop of a `coordinate_clip`."""
    return CropBox(int(crop_tchw[0, 0, 0, 0]), int(crop_tchw[0, 1, 0, 0]), crop_tchw.shape[-2], crop_tchw.shape[-1])


def quantise_flow(flow_in_bounds: torch.Tensor) -> torch.Tensor:
    return torch.round(flow_in_bounds * 127.5 + 127.5).clamp(0, 255).to(torch.uint8)


def dequantise_flow(q: torch.Tensor) -> torch.Tensor:
    return (q.double() - 127.5) / 127.5


# ---- crop geometry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, short_side, expected",
    [
        (240, 320, 128, (128, 171)),  # 170.67 rounds up
        (256, 340, 128, (128, 170)),
        (320, 240, 128, (171, 128)),  # tall
        (128, 128, 64, (64, 64)),
        (100, 301, 50, (50, 151)),  # 150.5 rounds half up
    ],
)
def test_short_side_size(height, width, short_side, expected):
    assert short_side_size(height, width, short_side) == expected


@pytest.mark.parametrize(
    "height, width, crop_size, expected",
    [
        (128, 171, 112, CropBox(8, 29, 112, 112)),  # odd slack: floored
        (112, 112, 112, CropBox(0, 0, 112, 112)),
        (10, 15, 4, CropBox(3, 5, 4, 4)),
    ],
)
def test_center_crop_box(height, width, crop_size, expected):
    assert center_crop_box(height, width, crop_size) == expected


@pytest.mark.parametrize(
    "height, width, crop_size, expected",
    [
        (128, 171, 112, [(8, 0), (8, 29), (8, 59)]),  # wide: along the width
        (171, 128, 112, [(0, 8), (29, 8), (59, 8)]),  # tall: along the height
        (112, 200, 112, [(0, 0), (0, 44), (0, 88)]),  # short side == crop: covers the whole frame
        (112, 112, 112, [(0, 0), (0, 0), (0, 0)]),
    ],
)
def test_three_crop_boxes(height, width, crop_size, expected):
    boxes = three_crop_boxes(height, width, crop_size)
    assert [(b.top, b.left) for b in boxes] == expected
    assert all(b.height == b.width == crop_size for b in boxes)


@pytest.mark.parametrize(
    "height, width, crop_size, expected",
    [
        (128, 171, 112, [(0, 0), (0, 59), (16, 0), (16, 59), (8, 29)]),  # tl, tr, bl, br, centre
        (8, 8, 4, [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]),
    ],
)
def test_five_crop_boxes(height, width, crop_size, expected):
    assert [(b.top, b.left) for b in five_crop_boxes(height, width, crop_size)] == expected


@pytest.mark.parametrize(
    "height, width, max_distort, expected",
    [
        (128, 170, 1, [(128, 128), (128, 112), (112, 128), (112, 112), (112, 96),
                       (96, 112), (96, 96), (96, 84), (84, 96), (84, 84)]),  # 0.66 * 128 = 84.48 -> 84
        (256, 340, 0, [(256, 256), (224, 224), (192, 192), (168, 168)]),
        (340, 256, 0, [(256, 256), (224, 224), (192, 192), (168, 168)]),  # scales of the short side
    ],
)
def test_multiscale_crop_sizes(height, width, max_distort, expected):
    assert list(multiscale_crop_sizes(height, width, max_distort=max_distort)) == expected


@pytest.mark.parametrize(
    "height, width, crop_h, crop_w, expected",
    [
        (128, 170, 96, 112, [(0, 0), (0, 56), (32, 0), (32, 56), (16, 28)]),  # w step 58 // 4 = 14
        (128, 170, 128, 128, [(0, 0), (0, 40), (0, 0), (0, 40), (0, 20)]),
        (128, 128, 84, 84, [(0, 0), (0, 44), (44, 0), (44, 44), (22, 22)]),
    ],
)
def test_fixed_crop_offsets(height, width, crop_h, crop_w, expected):
    assert list(fixed_crop_offsets(height, width, crop_h, crop_w)) == expected


def test_random_multiscale_crop_box_draws_only_tsn_candidates_and_all_of_them():
    rng = np.random.default_rng(0)
    sizes, boxes = set(), set()
    for _ in range(500):
        box = random_multiscale_crop_box(128, 170, rng)
        assert (box.top, box.left) in fixed_crop_offsets(128, 170, box.height, box.width)
        assert box.top + box.height <= 128 and box.left + box.width <= 170
        sizes.add((box.height, box.width))
        boxes.add(box)
    assert sizes == set(multiscale_crop_sizes(128, 170))
    assert len(boxes) > 30  # offsets vary too


def test_random_crop_box_covers_every_position_and_is_seeded():
    rng = np.random.default_rng(0)
    positions = {random_crop_box(6, 7, 4, rng)[:2] for _ in range(400)}
    assert positions == {(top, left) for top in range(3) for left in range(4)}
    first = [random_crop_box(128, 171, 112, np.random.default_rng(3)) for _ in range(2)]
    assert first[0] == first[1]


@pytest.mark.parametrize("height, width, crop_size", [(100, 200, 101), (200, 100, 101), (100, 100, 0)])
def test_crop_too_big_raises(height, width, crop_size):
    with pytest.raises(ValueError, match="crop_size"):
        center_crop_box(height, width, crop_size)


# ---- ops on clips ------------------------------------------------------------------------------


def test_crops_take_the_same_box_in_every_frame():
    clip = coordinate_clip(5, 40, 60)
    box = random_crop_box(40, 60, 16, np.random.default_rng(0))
    cropped = crop(clip, box)  # (T, C, 16, 16)
    assert box_of(cropped) == box
    for t in range(5):
        torch.testing.assert_close(cropped[t, :2], clip[0, :2, box.top:box.top + 16, box.left:box.left + 16])
        assert torch.all(cropped[t, 2] == t)
    assert box_of(center_crop(clip, 16)) == CropBox(12, 22, 16, 16)
    assert [box_of(c) for c in three_crop(clip, 40)] == list(three_crop_boxes(40, 60, 40))


@pytest.mark.parametrize("is_flow, channels", [(False, 3), (True, 2)])
def test_flip_twice_is_identity(is_flow, channels):
    clip = torch.randint(0, 256, (4, channels, 9, 13), dtype=torch.uint8)
    torch.testing.assert_close(horizontal_flip(horizontal_flip(clip, is_flow=is_flow), is_flow=is_flow), clip)


def test_flip_rgb_mirrors_columns_only():
    clip = coordinate_clip(2, 5, 7)
    flipped = horizontal_flip(clip)
    torch.testing.assert_close(flipped[:, 1, 0], torch.arange(6, -1, -1, dtype=torch.uint8).expand(2, 7))
    torch.testing.assert_close(flipped[:, 0], clip[:, 0])


def test_flip_negates_flow_x_exactly():
    flow = torch.rand(3, 2, 6, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1  # in units of the bound
    q = quantise_flow(flow)
    flipped = horizontal_flip(q, is_flow=True)
    mirrored = dequantise_flow(q).flip(-1)
    torch.testing.assert_close(dequantise_flow(flipped[:, 0]), -mirrored[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(dequantise_flow(flipped[:, 1]), mirrored[:, 1], rtol=0, atol=0)


def test_ten_crop_views_and_flipped_flow():
    clip = coordinate_clip(2, 12, 16, channels=2)
    views = ten_crop(clip, 8, is_flow=True)
    assert len(views) == 10 and all(v.shape == (2, 2, 8, 8) for v in views)
    assert [box_of(v) for v in views[:5]] == list(five_crop_boxes(12, 16, 8))
    for plain, flipped in zip(views[:5], views[5:]):
        torch.testing.assert_close(flipped[:, 0], 255 - plain[:, 0].flip(-1))  # x negated
        torch.testing.assert_close(flipped[:, 1], plain[:, 1].flip(-1))


# ---- normalize_clip ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 255, 100])
def test_normalize_rgb_values(value):
    clip = torch.full((2, 3, 4, 5, 5), value, dtype=torch.uint8)  # (B, C, T, H, W)
    out = normalize_clip(clip, "rgb")
    assert out.shape == clip.shape and out.dtype == torch.float32
    for c in range(3):
        expected = (value / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[:, c], torch.full_like(out[:, c], expected))


@pytest.mark.parametrize(
    "q, expected", [(0, -1.0), (255, 1.0), (127, -0.5 / 127.5), (128, 0.5 / 127.5), (191, 63.5 / 127.5)]
)
def test_normalize_flow_values(q, expected):
    out = normalize_clip(torch.full((2, 3, 4, 4), q, dtype=torch.uint8), "flow")  # (C, T, H, W)
    torch.testing.assert_close(out, torch.full((2, 3, 4, 4), expected))


def test_normalize_custom_mean_std():
    out = normalize_clip(torch.full((1, 2, 1, 1), 51, dtype=torch.uint8), "rgb", mean=(0.0,), std=(0.5,))
    torch.testing.assert_close(out, torch.full((1, 2, 1, 1), 0.4))


@pytest.mark.parametrize(
    "num_frames, num_segments, out_frames",
    [(5, 1, 4), (6, 2, 4), (9, 3, 6)],  # K segments of L + 1 frames -> K * L differences
)
def test_normalize_rgbdiff_shape_and_values(num_frames, num_segments, out_frames):
    # Frame t has value 10 * t, plus 50 per segment: only within-segment differences appear.
    per_segment = num_frames // num_segments
    values = [10 * t + 50 * (t // per_segment) for t in range(num_frames)]
    clip = torch.tensor(values, dtype=torch.uint8)[None, None, :, None, None].expand(2, 3, num_frames, 4, 4)
    out = normalize_clip(clip, "rgbdiff", num_segments=num_segments)
    assert out.shape == (2, 3, out_frames, 4, 4)
    for c in range(3):
        torch.testing.assert_close(out[:, c], torch.full_like(out[:, c], 10 / 255 / IMAGENET_STD[c]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(modality="depth"), "modality"),
        (dict(modality="rgbdiff", num_segments=2), "num_segments"),  # T = 5 does not split into 2
        (dict(modality="rgbdiff", num_segments=5), "num_segments"),  # 1 frame per segment: no difference
    ],
)
def test_normalize_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        normalize_clip(torch.zeros(3, 5, 2, 2, dtype=torch.uint8), **kwargs)


# ---- ClipTransform -----------------------------------------------------------------------------


def sample_inputs(num_views: int = 2, num_frames: int = 3, height: int = 40, width: int = 60) -> dict:
    """rgb and flow of the same coordinate-coded scene, as the Dataset delivers them: (V, T, H, W, C)."""
    rgb = coordinate_clip(num_frames, height, width).permute(0, 2, 3, 1)  # (T, H, W, C)
    flow = coordinate_clip(num_frames, height, width, channels=2).permute(0, 2, 3, 1)
    return {"rgb": rgb.expand(num_views, *rgb.shape), "flow": flow.expand(num_views, *flow.shape)}


def test_train_random_crop_aligns_views_frames_and_modalities():
    transform = ClipTransform(train=True, short_side=40, crop_size=16, crop="random")
    flips = set()
    for seed in range(12):
        out = transform(sample_inputs(), np.random.default_rng(seed))
        rgb, flow = out["rgb"], out["flow"]  # (V, C, T, 16, 16)
        assert rgb.shape == (2, 3, 3, 16, 16) and flow.shape == (2, 2, 3, 16, 16)
        assert rgb.dtype == flow.dtype == torch.uint8
        flipped = bool(rgb[0, 1, 0, 0, 0] > rgb[0, 1, 0, 0, -1])
        flips.add(flipped)
        cols = rgb[0, 1, 0, 0].flip(-1) if flipped else rgb[0, 1, 0, 0]
        # The box is the one drawn first from the rng.
        assert (int(rgb[0, 0, 0, 0, 0]), int(cols[0])) == random_crop_box(40, 60, 16, np.random.default_rng(seed))[:2]
        for v in range(2):
            for t in range(3):
                torch.testing.assert_close(rgb[v, :2, t], rgb[0, :2, 0])  # same box in every view and frame
                assert torch.all(rgb[v, 2, t] == t)
                # Same box for flow (its channels hold rows, columns like rgb's first two) ...
                torch.testing.assert_close(flow[v, 1, t], rgb[0, 1, 0])
                # ... and on a flip its x-component (channel 0) is negated: q -> 255 - q.
                expected_x = 255 - rgb[0, 0, 0] if flipped else rgb[0, 0, 0]
                torch.testing.assert_close(flow[v, 0, t], expected_x)
    assert flips == {False, True}


def test_flip_disabled_never_flips():
    transform = ClipTransform(train=True, short_side=40, crop_size=16, flip=False)
    for seed in range(8):
        rgb = transform(sample_inputs(), np.random.default_rng(seed))["rgb"]
        assert torch.all(rgb[0, 1, 0, 0, 1:] > rgb[0, 1, 0, 0, :-1])


def test_modalities_at_different_resolutions_share_the_crop():
    # The same smooth scene stored at full size for rgb and at half size for flow.
    height, width = 64, 96
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    scene = torch.stack([rows * 2, cols * 2, rows + cols])  # (3, H, W), values < 256
    half = torch.nn.functional.interpolate(scene[None], scale_factor=0.5, mode="bilinear", antialias=True)[0]
    rgb = scene.round().to(torch.uint8).permute(1, 2, 0)[None, None]  # (1, 1, H, W, 3)
    flow = half[:2].round().to(torch.uint8).permute(1, 2, 0)[None, None]  # (1, 1, H/2, W/2, 2)
    transform = ClipTransform(train=True, short_side=64, crop_size=32, crop="multiscale", flip=False)
    out = transform({"rgb": rgb, "flow": flow}, np.random.default_rng(2))
    assert out["rgb"].shape == (1, 3, 1, 32, 32) and out["flow"].shape == (1, 2, 1, 32, 32)
    diff = (out["rgb"][:, :2].float() - out["flow"].float()).abs()
    assert diff.mean() < 0.5  # same region: only interpolation error (a box 1 px off gives about 1)


@pytest.mark.parametrize(
    "crop, views_per_input",
    [("center", 1), ("three", 3), ("ten", 10)],
)
def test_test_crops_multiply_views(crop, views_per_input):
    transform = ClipTransform(train=False, short_side=40, crop_size=32, crop=crop)
    out = transform(sample_inputs(num_views=2), np.random.default_rng(0))
    assert out["rgb"].shape == (2 * views_per_input, 3, 3, 32, 32)
    assert out["flow"].shape == (2 * views_per_input, 2, 3, 32, 32)
    rgb = out["rgb"]
    # Video-view-major order: crop n of view 0 is index n, of view 1 index views_per_input + n.
    torch.testing.assert_close(rgb[:views_per_input], rgb[views_per_input:])
    expected = {"center": [center_crop_box(40, 60, 32)], "three": list(three_crop_boxes(40, 60, 32)),
                "ten": list(five_crop_boxes(40, 60, 32))}[crop]
    assert [box_of(v.transpose(0, 1)) for v in rgb[:len(expected)]] == expected
    if crop == "ten":
        flow = out["flow"]
        torch.testing.assert_close(flow[5:10, 0], 255 - flow[:5, 0].flip(-1))
        torch.testing.assert_close(rgb[5:10], rgb[:5].flip(-1))


@pytest.mark.parametrize("crop", ["random", "multiscale"])
def test_deterministic_given_rng(crop):
    inputs = {"rgb": torch.randint(0, 256, (1, 4, 48, 64, 3), dtype=torch.uint8),
              "flow": torch.randint(0, 256, (1, 4, 24, 32, 2), dtype=torch.uint8)}
    transform = ClipTransform(train=True, short_side=32, crop_size=24, crop=crop)
    first = transform(inputs, np.random.default_rng(11))
    second = transform(inputs, np.random.default_rng(11))
    for key in inputs:
        torch.testing.assert_close(first[key], second[key])
    outputs = [transform(inputs, np.random.default_rng(seed))["rgb"] for seed in range(6)]
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


def test_inputs_are_not_modified():
    inputs = sample_inputs()
    inputs = {key: value.clone() for key, value in inputs.items()}
    before = {key: value.clone() for key, value in inputs.items()}
    for seed in range(4):
        ClipTransform(train=True, short_side=40, crop_size=16)(inputs, np.random.default_rng(seed))
    ClipTransform(train=False, short_side=40, crop_size=16, crop="ten")(inputs, np.random.default_rng(0))
    for key in inputs:
        torch.testing.assert_close(inputs[key], before[key])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(train=True, crop="zoom"), "crop"),
        (dict(train=True, crop="center"), "crop"),
        (dict(train=False, crop="random"), "crop"),
        (dict(train=False, crop="multiscale"), "crop"),
        (dict(train=True, short_side=0), "short_side"),
        (dict(train=True, short_side=128, crop_size=129), "crop_size"),
        (dict(train=True, crop_size=0), "crop_size"),
    ],
)
def test_clip_transform_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ClipTransform(**kwargs)


@pytest.mark.parametrize(
    "inputs, name",
    [
        ({"depth": torch.zeros(1, 2, 8, 8, 3, dtype=torch.uint8)}, "depth"),
        ({"rgb": torch.zeros(1, 2, 8, 8, 3)}, "rgb"),  # float, not uint8
        ({"rgb": torch.zeros(2, 8, 8, 3, dtype=torch.uint8)}, "rgb"),  # no view dimension
    ],
)
def test_clip_transform_rejects_bad_inputs(inputs, name):
    with pytest.raises(ValueError, match=name):
        ClipTransform(train=True, short_side=8, crop_size=4)(inputs, np.random.default_rng(0))
