"""Two-stream fusion at a conv layer: an RGB tower and a flow tower merged into one network.

Feichtenhofer et al. keep Simonyan & Zisserman's two towers but fuse them inside the network, where
spatial correspondence still exists, so one head serves both and a pixel's appearance and motion
meet in the same filters. `FUSIONS` holds the fusion functions the paper compares (a dict of name
-> module class, so a sweep can grid over the names); each maps the two towers' maps
(B, C, T, h, w) to one map:

    sum, max       element-wise; C channels
    concat         stacked channels; 2C
    conv           concat, then a 1x1 conv 2C -> C that learns the correspondence (starts as sum)
    bilinear       outer product at each location, pooled over the locations; C*C, no grid left
    conv3d_pool3d  concat, 3x3x3 conv 2C -> C over time, 3D max pooling: fuses in space *and* time

The towers are torchvision ResNets (`backbone`, the paper uses VGG-16); `fusion_layer` = k fuses
after ResNet stage k (4, the last conv stage, corresponds to the paper's best, after conv5). The
spatial tower's stages after k continue as the single fused trunk; the flow tower's later stages
are dropped, which is the paper's parameter saving. Fusions that change the channel count (concat,
bilinear) can only fuse after the last stage.

A clip is T time steps: RGB frame t is paired with the t-th block of L flow fields (the flow clip
has T * L fields). The 2D fusions treat the steps independently and average them at the end (the
paper's test-time averaging); conv3d_pool3d fuses across them (the paper's final model, T = 5).

Feichtenhofer, Pinz, Zisserman, "Convolutional Two-Stream Network Fusion for Video Action
Recognition", CVPR 2016.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models._api import register_model
from models.backbones import resnet_features


class SumFusion(nn.Module):
    """y = a + b: the same channel of both towers is assumed to correspond."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class MaxFusion(nn.Module):
    """y = max(a, b), element-wise."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a, b)


class ConcatFusion(nn.Module):
    """y = [a, b] stacked on channels: no correspondence is assumed, later layers must learn it."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = 2 * channels

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], dim=1)


class ConvFusion(nn.Module):
    """y = 1x1 conv of [a, b] (2C -> C), learning which channels correspond.

    Initialised as two stacked identities, i.e. it starts as sum fusion (the paper's choice).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels
        self.conv = nn.Conv3d(2 * channels, channels, kernel_size=1)
        eye = torch.eye(channels)[:, :, None, None, None]  # (C, C, 1, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([eye, eye], dim=1))
            self.conv.bias.zero_()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([a, b], dim=1))


class BilinearFusion(nn.Module):
    """y = mean over locations of a_l b_l^T (C*C values per time step; the spatial grid is gone).

    Signed square root and L2 normalisation (Lin et al., "Bilinear CNN Models", 2015) keep the
    C*C products on a scale a linear classifier can train on.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels * channels

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bcthw,bdthw->btcd", a, b) / (a.shape[3] * a.shape[4])  # (B, T, C, C)
        y = rearrange(y, "b t c d -> b (c d) t")
        y = F.normalize(torch.sign(y) * torch.sqrt(y.abs() + 1e-12), dim=1)
        return y[..., None, None]  # (B, C*C, T, 1, 1)


class Conv3dPool3dFusion(nn.Module):
    """y = maxpool3d(conv3d([a, b])): a 3x3x3 conv (2C -> C) over the stacked time steps, then a
    2x2x2 max pool, so the fused features combine neighbouring steps as well as the two towers.

    Ceil-mode pooling keeps a single time step (or a 1x1 map) rather than failing on it.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = channels
        self.conv = nn.Conv3d(2 * channels, channels, kernel_size=3, padding=1)
        self.pool = nn.MaxPool3d(2, ceil_mode=True)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(torch.cat([a, b], dim=1)))  # (B, C, ceil(T/2), ceil(h/2), ceil(w/2))


FUSIONS = {
    "sum": SumFusion,
    "max": MaxFusion,
    "concat": ConcatFusion,
    "conv": ConvFusion,
    "bilinear": BilinearFusion,
    "conv3d_pool3d": Conv3dPool3dFusion,
}


def _stages(net: nn.Module) -> list[nn.Module]:
    """A torchvision-style ResNet as [stem, layer1, layer2, layer3, layer4]."""
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return [stem, net.layer1, net.layer2, net.layer3, net.layer4]


def _out_channels(stage: nn.Module) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class TwoStreamFusionNet(nn.Module):
    """RGB tower and flow tower up to stage `fusion_layer`, fused, then the RGB tower's remaining
    stages, global average pooling over space and time steps, and a linear classifier.

    Args:
        spatial, temporal: ResNet feature extractors for RGB (3 channels) and flow (2L channels).
        fusion: a key of FUSIONS.
        fusion_layer: fuse after this ResNet stage (1-4).
        flow_frames: L, the flow fields stacked per time step.
        num_classes: size of the output.
        dropout: dropout before the classifier.
    """

    def __init__(self, spatial: nn.Module, temporal: nn.Module, *, fusion: str, fusion_layer: int,
                 flow_frames: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        spatial_stages, temporal_stages = _stages(spatial), _stages(temporal)
        self.spatial_tower = nn.Sequential(*spatial_stages[:fusion_layer + 1])
        self.temporal_tower = nn.Sequential(*temporal_stages[:fusion_layer + 1])
        self.trunk = nn.Sequential(*spatial_stages[fusion_layer + 1:])  # empty when fusing last
        channels = _out_channels(spatial_stages[fusion_layer])
        self.fusion = FUSIONS[fusion](channels)
        if len(self.trunk) and self.fusion.out_channels != channels:
            raise ValueError(f"fusion {fusion!r} makes {self.fusion.out_channels} channels from {channels}, "
                             f"so the ResNet stages after it cannot follow; use fusion_layer=4 or a fusion "
                             f"that keeps the channel count")
        head_in = _out_channels(spatial_stages[-1]) if len(self.trunk) else self.fusion.out_channels
        self.flow_frames = flow_frames
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_in, num_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: {"rgb": (B, 3, T, H, W), "flow": (B, 2, T * L, H, W)}; flow block t goes with frame t.
                RGB read at the flow's own T * L instants (as actionlab's Dataset does for
                rgb+flow) is reduced to the centre frame of each block of L.
        Returns:
            logits (B, num_classes).
        """
        rgb, flow = x["rgb"], x["flow"]
        if self.flow_frames > 1 and rgb.shape[2] == flow.shape[2]:
            rgb = rgb[:, :, self.flow_frames // 2::self.flow_frames]  # (B, 3, T, H, W)
        b, steps = rgb.shape[0], rgb.shape[2]
        if flow.shape[2] != steps * self.flow_frames:
            raise ValueError(f"{steps} RGB frames need {steps} x flow_frames={self.flow_frames} flow "
                             f"fields, got {flow.shape[2]}")
        a = self.spatial_tower(rearrange(rgb, "b c t h w -> (b t) c h w"))  # (B*T, C, h, w)
        m = self.temporal_tower(rearrange(flow, "b c (t l) h w -> (b t) (l c) h w", l=self.flow_frames))
        fused = self.fusion(rearrange(a, "(b t) c h w -> b c t h w", b=b),
                            rearrange(m, "(b t) c h w -> b c t h w", b=b))  # (B, C', T', h', w')
        y = self.trunk(rearrange(fused, "b c t h w -> (b t) c h w"))  # (B*T', D, h'', w'')
        y = rearrange(y.mean(dim=(2, 3)), "(b t) d -> b t d", b=b).mean(dim=1)  # (B, D)
        return self.fc(self.dropout(y))


@register_model("two_stream_fusion")
def two_stream_fusion(*, num_classes: int, modality: str = "rgb+flow", width: float = 1.0,
                      dropout: float = 0.5, pretrained: str | None = None, backbone: str = "resnet18",
                      fusion: str = "conv3d_pool3d", fusion_layer: int = 4,
                      flow_frames: int = 10) -> nn.Module:
    """Two ResNet towers fused at a conv layer by one of FUSIONS.

    Feichtenhofer et al., "Convolutional Two-Stream Network Fusion for Video Action Recognition",
    CVPR 2016. The paper's input is 224x224 crops, L = 10 flow fields per step, T = 5 steps for
    3D fusion; its best model fuses after conv5 with conv3d_pool3d.

    Args:
        modality: "rgb+flow" only (the default, unlike other builders, because it is the only one).
        pretrained: local torchvision checkpoint for both towers (the flow tower's first layer is
            adapted to 2L channels), or None.
        fusion: a key of FUSIONS.
        fusion_layer: fuse after ResNet stage 1, 2, 3 or 4.
        flow_frames: L, flow fields stacked per time step.
    """
    if modality != "rgb+flow":
        raise ValueError(f"two_stream_fusion supports modality 'rgb+flow' only, got {modality!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {sorted(FUSIONS)}, got {fusion!r}")
    if fusion_layer not in (1, 2, 3, 4):
        raise ValueError(f"fusion_layer must be 1, 2, 3 or 4 (a ResNet stage), got {fusion_layer}")
    spatial = resnet_features(backbone, width=width, weights=pretrained)
    temporal = resnet_features(backbone, width=width, in_channels=2 * flow_frames, weights=pretrained)
    return TwoStreamFusionNet(spatial, temporal, fusion=fusion, fusion_layer=fusion_layer,
                              flow_frames=flow_frames, num_classes=num_classes, dropout=dropout)
