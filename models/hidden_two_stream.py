"""Hidden two-stream networks: a MotionNet predicts optical flow from raw frames for the temporal stream.

A two-stream network's temporal stream needs optical flow, which is slow to compute and store.
Here a small encoder-decoder CNN (MotionNet) predicts the L flow fields between T = L + 1
consecutive RGB frames, and a 2D ConvNet classifies the predicted flow stack as a temporal stream
would classify real flow. MotionNet needs no flow labels: its loss is unsupervised (warp frame
t+1 back with the predicted flow, compare with frame t, keep the flow smooth), and it is returned
by `auxiliary_loss()` for the training loop to add to the cross-entropy, which trains the whole
thing end to end.

Input clip (B, 3, T, H, W), modality "rgb" only: the flow is computed inside the model.

Zhu et al., "Hidden Two-Stream Convolutional Networks for Action Recognition", ACCV 2018
(arXiv:1704.00389, 2017).
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models._api import register_model
from models.backbones import resnet_features, scale_channels


# --- unsupervised flow loss -------------------------------------------------------------------

def charbonnier(x: torch.Tensor, alpha: float = 0.45, eps: float = 1e-3) -> torch.Tensor:
    """Generalised Charbonnier penalty (x^2 + eps^2)^alpha: a robust, differentiable |x|.

    alpha < 0.5 grows slower than L1, so occlusions and brightness changes (where no flow can
    explain the pixel) do not dominate the loss.
    """
    return (x * x + eps * eps) ** alpha


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `image` at x + flow(x) with bilinear interpolation.

    If flow is the motion from frame t to frame t+1, warping frame t+1 reconstructs frame t.

    Args:
        image: (N, C, H, W).
        flow: (N, 2, H, W) in pixels, channel 0 horizontal (x), channel 1 vertical (y).
    Returns:
        warped (N, C, H, W), and inside (N, 1, H, W) bool: where x + flow(x) lies in the image.
        Outside it the reconstruction is padding, not evidence against the flow.
    """
    _, _, H, W = flow.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=flow.dtype, device=flow.device),
                            torch.arange(W, dtype=flow.dtype, device=flow.device), indexing="ij")
    x = xs + flow[:, 0]  # (N, H, W) sampling positions in pixels
    y = ys + flow[:, 1]
    # grid_sample wants [-1, 1] coordinates; with align_corners=True, -1 and 1 are pixel centres 0 and W-1.
    grid = torch.stack([2 * x / max(W - 1, 1) - 1, 2 * y / max(H - 1, 1) - 1], dim=-1)  # (N, H, W, 2)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = ((x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)).unsqueeze(1)
    return warped, inside


def photometric_loss(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Charbonnier error between `first` and `second` warped back by `flow`, over in-image pixels.

    Args:
        first, second: (N, C, H, W) consecutive frames.
        flow: (N, 2, H, W) motion from `first` to `second`, in pixels.
    Returns:
        scalar mean penalty.
    """
    warped, inside = backward_warp(second, flow)
    mask = inside.to(first.dtype).expand_as(first)
    return (charbonnier(first - warped) * mask).sum() / mask.sum().clamp_min(1.0)


def smoothness_loss(flow: torch.Tensor) -> torch.Tensor:
    """Charbonnier penalty on horizontal and vertical flow differences: (N, 2, H, W) -> scalar.

    Textureless regions give the photometric loss nothing to match; this fills them in from
    their neighbours.
    """
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    return charbonnier(dx).mean() + charbonnier(dy).mean()


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a flow field and rescale its values, which are in pixels of the old size."""
    h, w = flow.shape[-2:]
    resized = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / w, size[0] / h], dtype=flow.dtype, device=flow.device)
    return resized * scale.repeat(flow.shape[1] // 2)[:, None, None]  # (x, y) pairs along channels


def unsupervised_flow_loss(frames: torch.Tensor, flows: list[torch.Tensor], *,
                           smoothness_weight: float) -> torch.Tensor:
    """Multi-scale photometric + smoothness loss of the flows predicted for a clip.

    Args:
        frames: (B, 3, T, H, W) the clip.
        flows: one (B, 2L, h, w) prediction per scale, L = T - 1, fine to coarse; flow l is the
            motion from frame l to frame l + 1 in pixels of that scale.
        smoothness_weight: weight of the smoothness term against the photometric term.
    Returns:
        scalar, averaged over scales: the coarse scales give the decoder a signal before the fine
        ones can match anything (large motions are small there).
    """
    pixels = rearrange(frames, "b c t h w -> b (t c) h w")
    total = frames.new_zeros(())
    for flow in flows:
        # Area averaging: the frames seen at a coarse scale are the blurred frames, not a subsample.
        scaled = rearrange(F.adaptive_avg_pool2d(pixels, flow.shape[-2:]), "b (t c) h w -> b c t h w", c=3)
        first = rearrange(scaled[:, :, :-1], "b c l h w -> (b l) c h w")  # (B*L, 3, h, w)
        second = rearrange(scaled[:, :, 1:], "b c l h w -> (b l) c h w")
        pair_flow = rearrange(flow, "b (l two) h w -> (b l) two h w", two=2)  # (B*L, 2, h, w)
        total = total + photometric_loss(first, second, pair_flow) + smoothness_weight * smoothness_loss(pair_flow)
    return total / len(flows)


# --- MotionNet --------------------------------------------------------------------------------

def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    # Leaky ReLU as in FlowNet-style decoders: flow is signed, and dead units would clip it.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, padding=1), nn.LeakyReLU(0.1))


class MotionNet(nn.Module):
    """Encoder-decoder CNN: (B, 3T, H, W) stacked frames -> T-1 flow fields at every scale.

    The encoder halves the resolution at each level; the decoder goes back up, at each level
    concatenating the encoder's skip features and the coarser flow (upsampled), and predicting
    the flow at that level, coarse to fine (FlowNet's "refinement"). The decoder upsamples and
    then convolves instead of using a transposed convolution (a choice of this implementation):
    that avoids checkerboard artefacts, which the smoothness loss would otherwise fight.

    Args:
        num_frames: T.
        channels: per level, fine to coarse; level 0 is at full resolution.
    """

    def __init__(self, num_frames: int, channels: tuple[int, ...]):
        super().__init__()
        flow_channels = 2 * (num_frames - 1)
        in_channels = [3 * num_frames, *channels[:-1]]
        self.encoder = nn.ModuleList(
            nn.Sequential(conv3x3(c_in, c, stride=1 if level == 0 else 2), conv3x3(c, c))
            for level, (c_in, c) in enumerate(zip(in_channels, channels)))
        self.up = nn.ModuleList(conv3x3(channels[level + 1], channels[level]) for level in range(len(channels) - 1))
        self.fuse = nn.ModuleList(conv3x3(2 * channels[level] + flow_channels, channels[level])
                                  for level in range(len(channels) - 1))
        self.predict = nn.ModuleList(nn.Conv2d(c, flow_channels, 3, padding=1) for c in channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """
        Args:
            x: (B, 3T, H, W) frames stacked frame-major along channels.
        Returns:
            flows fine to coarse, flows[0] (B, 2(T-1), H, W) at full resolution, flows[i] at
            about H / 2^i; channels are (x_1, y_1, x_2, y_2, ...) in pixels of that scale.
        """
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        features = skips[-1]
        flows = [self.predict[-1](features)]
        for level in reversed(range(len(skips) - 1)):
            size = skips[level].shape[-2:]
            features = self.up[level](F.interpolate(features, size=size, mode="nearest"))
            coarse_flow = resize_flow(flows[0], size)
            features = self.fuse[level](torch.cat([skips[level], features, coarse_flow], dim=1))
            flows.insert(0, self.predict[level](features))
        return flows


# --- the network ------------------------------------------------------------------------------

class HiddenTwoStream(nn.Module):
    """MotionNet -> temporal stream on the predicted flow; optionally + a spatial stream.

    Args:
        motion_net: MotionNet for `num_frames` frames.
        temporal: 2D feature extractor on 2(T-1) flow channels, (B, 2(T-1), H, W) -> (B, D).
        spatial: 2D feature extractor on one RGB frame, or None for the temporal stream alone.
        num_classes: N.
        num_frames: T.
        dropout: before each stream's classifier.
        motion_loss_weight: scales the unsupervised loss in `auxiliary_loss()`.
        smoothness_weight: smoothness against photometric term inside that loss.
    """

    def __init__(self, motion_net: MotionNet, temporal: nn.Module, spatial: nn.Module | None, *,
                 num_classes: int, num_frames: int, dropout: float, motion_loss_weight: float,
                 smoothness_weight: float):
        super().__init__()
        self.num_frames = num_frames
        self.motion_loss_weight, self.smoothness_weight = motion_loss_weight, smoothness_weight
        self.motion_net = motion_net
        self.temporal = temporal
        self.temporal_fc = nn.Linear(temporal.out_features, num_classes)
        self.spatial = spatial
        self.spatial_fc = nn.Linear(spatial.out_features, num_classes) if spatial is not None else None
        self.dropout = nn.Dropout(dropout)
        self._motion_loss: torch.Tensor | None = None  # set by forward, read by auxiliary_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, 3, T, H, W) consecutive RGB frames, T = num_frames.
        Returns:
            (B, num_classes) logits: the temporal stream's, or the mean of both streams' logits
            (late fusion) when built with the spatial stream.
        """
        if x.shape[1] != 3 or x.shape[2] != self.num_frames:
            raise ValueError(f"hidden two-stream expects (B, 3, {self.num_frames}, H, W) RGB frames, "
                             f"got {tuple(x.shape)}")
        flows = self.motion_net(rearrange(x, "b c t h w -> b (t c) h w"))  # fine to coarse
        self._motion_loss = unsupervised_flow_loss(x, flows, smoothness_weight=self.smoothness_weight)
        # Not detached: the classification loss also shapes the flow (end-to-end training).
        logits = self.temporal_fc(self.dropout(self.temporal(flows[0])))  # (B, N)
        if self.spatial is None:
            return logits
        centre = x[:, :, self.num_frames // 2]  # (B, 3, H, W): the spatial stream sees one frame
        spatial_logits = self.spatial_fc(self.dropout(self.spatial(centre)))  # (B, N)
        return (logits + spatial_logits) / 2

    def auxiliary_loss(self) -> torch.Tensor:
        """motion_loss_weight * the unsupervised flow loss of the last forward (a scalar)."""
        if self._motion_loss is None:
            raise RuntimeError("auxiliary_loss() is computed by forward(); call the model first")
        return self.motion_loss_weight * self._motion_loss


@register_model("hidden_two_stream")
def hidden_two_stream(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
                      pretrained: str | None = None, num_flows: int = 10, with_spatial: bool = False,
                      backbone: str = "resnet50", motion_loss_weight: float = 1.0,
                      smoothness_weight: float = 0.01) -> HiddenTwoStream:
    """Hidden two-stream network from Zhu et al., "Hidden Two-Stream Convolutional Networks for
    Action Recognition", ACCV 2018 (arXiv:1704.00389).

    The paper's MotionNet takes 11 frames and predicts 10 flow fields (num_flows = 10), and its
    stream CNNs are VGG-16 / BN-Inception; ResNets from `models.backbones` stand in for them. Its
    loss also has an SSIM term, left out here: Charbonnier photometric + smoothness at every scale.

    Args:
        num_classes: number of action classes.
        modality: "rgb" only: the input is the raw frames, the flow is predicted inside.
        width: channel multiplier of MotionNet and the stream backbones.
        dropout: before each classifier.
        pretrained: local torchvision checkpoint for the stream backbones (the temporal stream's
            first layer is adapted to 2 * num_flows channels); MotionNet starts from scratch.
        num_flows: L; the clip has T = L + 1 frames.
        with_spatial: add a spatial stream on the centre frame and average the two streams' logits.
        backbone: "resnet50", "resnet34" or "resnet18" for both streams.
        motion_loss_weight: weight of the unsupervised loss returned by `auxiliary_loss()`.
        smoothness_weight: weight of the smoothness term inside it.
    """
    if modality != "rgb":
        raise ValueError(f"hidden_two_stream supports modality rgb (it predicts flow itself); got {modality!r}")
    if backbone not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"hidden_two_stream backbone must be resnet18, resnet34 or resnet50, got {backbone!r}")
    if num_flows < 1:
        raise ValueError(f"hidden_two_stream num_flows must be >= 1, got {num_flows}")
    num_frames = num_flows + 1
    # FlowNet-like widths, five levels: full resolution down to 1/16.
    channels = tuple(scale_channels(c, width) for c in (64, 128, 256, 512, 512))
    motion_net = MotionNet(num_frames, channels)
    temporal = resnet_features(backbone, width=width, in_channels=2 * num_flows, weights=pretrained)
    spatial = resnet_features(backbone, width=width, in_channels=3, weights=pretrained) if with_spatial else None
    return HiddenTwoStream(motion_net, temporal, spatial, num_classes=num_classes, num_frames=num_frames,
                           dropout=dropout, motion_loss_weight=motion_loss_weight,
                           smoothness_weight=smoothness_weight)
