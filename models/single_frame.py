"""Karpathy et al.'s single-frame, early, late and slow fusion networks.

The paper asks one question, *where in the network should time be fused?*, and answers it by
keeping one AlexNet-like image network fixed and changing only how its first layers see the
frames. This file does the same: `FUSION_IN_TIME` names the four variants (so a sweep can grid over
the names), each a `FusionInTime` row saying how many towers run, which frames they see and the
temporal (extent, stride) of conv1-conv3; `KarpathyNet` builds any row from `Conv3d` layers.

We keep the paper's own network (not a ResNet) for all four variants because slow fusion *is* a
change to the conv stack: a temporal extent of 4, then 2, then 2 in conv1-conv3 has no ResNet
equivalent, and the comparison is only meaningful when every variant shares the same image net.
At `width=1.0` and 170x170 input the layers are the paper's:

    C(96,11,3)-N-P-C(256,5,1)-N-P-C(384,3,1)-C(384,3,1)-C(256,3,1)-P-FC(4096)-FC(4096)

(C(d,f,s): d filters of f x f at stride s; N: local response normalisation as in AlexNet; P: 2x2
max pooling). A temporal extent of 1 makes `Conv3d` an ordinary per-frame 2D convolution, so the
single-frame and late-fusion towers have exactly the 2D net's parameters.

Karpathy, Toderici, Shetty, Leung, Sukthankar, Fei-Fei, "Large-scale Video Classification with
Convolutional Neural Networks", CVPR 2014.
"""
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from models._api import register_model
from models.backbones import scale_channels

IN_CHANNELS = {"rgb": 3, "rgbdiff": 3, "flow": 2}


class FusionInTime(NamedTuple):
    description: str
    frames: str  # which frames of the clip the network sees: "middle", "first_last" or "all"
    clip_frames: int | None  # clip length the conv stack is built for (None: any length)
    towers: int  # copies of the conv stack, with shared weights, merged at fc6
    time: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (extent, stride) of conv1-3


FUSION_IN_TIME = {
    "single": FusionInTime(
        "one frame (the clip's middle one) through the 2D net; the paper's appearance baseline",
        frames="middle", clip_frames=None, towers=1, time=((1, 1), (1, 1), (1, 1))),
    "early": FusionInTime(
        "all 10 frames fused at the pixels: conv1 filters are 11x11x3x10, the rest is the 2D net",
        frames="all", clip_frames=10, towers=1, time=((10, 1), (1, 1), (1, 1))),
    "late": FusionInTime(
        "two single-frame towers with shared weights on the first and last frame (15 frames apart "
        "in the paper), merged only at fc6, so only the fc layers see motion",
        frames="first_last", clip_frames=None, towers=2, time=((1, 1), (1, 1), (1, 1))),
    "slow": FusionInTime(
        "10 frames fused gradually: conv1 extent 4 stride 2 (-> 4 steps), conv2 and conv3 extent 2 "
        "stride 2 (-> 2 -> 1 step), so conv3 and above see the whole clip",
        frames="all", clip_frames=10, towers=1, time=((4, 2), (2, 2), (2, 2))),
}


class KarpathyNet(nn.Module):
    """The paper's AlexNet-like net with time fused as `FUSION_IN_TIME[fusion]` says.

    Args:
        fusion: a key of FUSION_IN_TIME.
        num_classes: size of the output.
        in_channels: 3 (RGB, RGB difference) or 2 (one flow field per frame, treated as a frame).
        width: channel multiplier for every conv and fc layer (1.0 = the paper's net).
        dropout: dropout before fc7 and fc8, as in AlexNet.
    """

    # fc6 always sees a 6x6 grid: exactly the pool5 output at the paper's 170x170 input (an adaptive
    # pool is then the identity), and a fixed fc6 size at any other input so tiny test clips work.
    GRID = (6, 6)

    def __init__(self, fusion: str, *, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 dropout: float = 0.5):
        super().__init__()
        self.fusion, self.spec = fusion, FUSION_IN_TIME[fusion]
        (t1, s1), (t2, s2), (t3, s3) = self.spec.time
        c1, c2, c3, c4, c5 = (scale_channels(c, width) for c in (96, 256, 384, 384, 256))
        fc = scale_channels(4096, width)
        # The paper pads nothing in conv1 (170 -> 54 -> pool 27) and keeps sizes in conv2-5 (27 -> 13
        # -> 6), which is AlexNet's padding; pools and LRN act on each time step separately.
        pool = dict(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, c1, (t1, 11, 11), stride=(s1, 3, 3)), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(**lrn), nn.MaxPool3d(**pool),
            nn.Conv3d(c1, c2, (t2, 5, 5), stride=(s2, 1, 1), padding=(0, 2, 2)), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(**lrn), nn.MaxPool3d(**pool),
            nn.Conv3d(c2, c3, (t3, 3, 3), stride=(s3, 1, 1), padding=(0, 1, 1)), nn.ReLU(inplace=True),
            nn.Conv3d(c3, c4, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(inplace=True),
            nn.Conv3d(c4, c5, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(inplace=True),
            nn.MaxPool3d(**pool),
            nn.AdaptiveAvgPool3d((1, *self.GRID)),
        )
        self.classifier = nn.Sequential(
            nn.Linear(self.spec.towers * c5 * self.GRID[0] * self.GRID[1], fc), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(fc, fc), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(fc, num_classes),
        )

    def select_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> the frames this variant sees, (B, C, T_seen, H, W)."""
        t = x.shape[2]
        if self.spec.clip_frames is not None and t != self.spec.clip_frames:
            raise ValueError(f"{self.fusion} fusion needs clips of {self.spec.clip_frames} frames, got {t}")
        if self.spec.frames == "middle":
            return x[:, :, t // 2: t // 2 + 1]
        if self.spec.frames == "first_last":
            return x[:, :, [0, t - 1]]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: clip (B, C, T, H, W); T = 10 for early and slow fusion, any T >= 1 otherwise;
                H, W >= 32 (three 2x2 pools after the stride-3 conv1), 170 in the paper.
        Returns:
            logits (B, num_classes).
        """
        x = self.select_frames(x)  # (B, C, T_seen, H, W)
        # Late fusion runs each frame through its own tower (shared weights): fold towers into batch.
        x = rearrange(x, "b c (n t) h w -> (b n) c t h w", n=self.spec.towers)
        x = self.features(x)  # (B * towers, C5, 1, 6, 6)
        x = rearrange(x, "(b n) c t h w -> b (n c t h w)", n=self.spec.towers)  # merge towers at fc6
        return self.classifier(x)


@register_model("single_frame")
def single_frame(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
                 pretrained: str | None = None, fusion: str = "single") -> nn.Module:
    """Karpathy et al.'s CNN with time fused as `fusion` says ("single", "early", "late", "slow").

    Karpathy et al., "Large-scale Video Classification with Convolutional Neural Networks", CVPR 2014.
    The paper's input is 170x170 crops; early and slow fusion take 10-frame clips.

    Args:
        modality: "rgb", "rgbdiff", or "flow" (each flow field is treated as a 2-channel frame).
        pretrained: must be None: the paper's AlexNet-like net has no torchvision checkpoint.
        fusion: a key of FUSION_IN_TIME.
    """
    if modality not in IN_CHANNELS:
        raise ValueError(f"single_frame supports modality in {sorted(IN_CHANNELS)}, got {modality!r}")
    if fusion not in FUSION_IN_TIME:
        raise ValueError(f"fusion must be one of {sorted(FUSION_IN_TIME)}, got {fusion!r}")
    if pretrained is not None:
        raise ValueError("single_frame is the paper's own AlexNet-like net; no torchvision 2D checkpoint "
                         "fits it, so pretrained must be None")
    return KarpathyNet(fusion, num_classes=num_classes, in_channels=IN_CHANNELS[modality], width=width,
                       dropout=dropout)
