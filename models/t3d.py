"""T3D: a 3D DenseNet whose transitions look at several temporal ranges at once.

Diba et al., "Temporal 3D ConvNets: New Architecture and Transfer Learning for Video
Classification", arXiv:1711.08200, 2017.

DenseNet-121 (Huang et al., CVPR 2017) with 3D convolutions and pools ("DenseNet3D"), where each
transition between dense blocks is a Temporal Transition Layer (TTL): parallel 3D convolutions of
different temporal depths, concatenated, then 2x2x2 average pooling. A fixed temporal kernel sees
one time range; the TTL's short, middle and long kernels let every stage mix short-, mid- and
long-range motion. Each "conv" is the pre-activation BN -> ReLU -> Conv of DenseNet.

The paper trains on 32-frame 224x224 RGB clips: (B, 3, 32, 224, 224). Time and space are halved
five times (stem, pool, three TTLs), so a clip needs at least 32 frames of at least 32x32 pixels. Layers outside the
TTLs are named as in torchvision's `DenseNet`, so its ImageNet weights inflate into them
(`pretrained=`); the TTLs have no 2D counterpart and start from random weights.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models._api import register_model
from models.backbones import scale_channels

IN_CHANNELS = {"rgb": 3, "flow": 2}
MODALITIES = tuple(IN_CHANNELS)
MIN_CLIP_SIZE = 32  # frames, and pixels per side: five halvings must leave at least 1


class DenseLayer3d(nn.Module):
    """BN-ReLU-Conv1x1x1 (bottleneck) then BN-ReLU-Conv3x3x3: (B, C_in, T, H, W) -> (B, growth, T, H, W).

    Attribute names follow torchvision's `_DenseLayer`, so its 2D weights inflate into this layer.
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm3d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv3d(in_channels, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm3d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock3d(nn.ModuleDict):
    """`num_layers` dense layers, each fed the concatenation of the block input and all earlier
    layers' outputs: (B, C_in, T, H, W) -> (B, C_in + num_layers * growth, T, H, W)."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int):
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer3d(in_channels + i * growth_rate, growth_rate, bn_size)
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class TemporalTransition(nn.Module):
    """The Temporal Transition Layer: BN-ReLU, parallel convs of temporal depths `depths`,
    concatenated, then 2x2x2 average pooling.

    (B, C_in, T, H, W) -> (B, out_channels, T/2, H/2, W/2). The depth-1 branch is DenseNet's 1x1x1
    transition conv; deeper branches are d x 3 x 3. `out_channels` (DenseNet's halving
    compression) is split as evenly as possible between the branches, so the next dense block sees
    as many channels as in DenseNet-121. Every branch keeps T ("same" padding in time, one frame
    more after than before for an even depth), so their outputs line up for the concatenation.
    """

    def __init__(self, in_channels: int, out_channels: int, depths: tuple[int, ...]):
        super().__init__()
        self.norm = nn.BatchNorm3d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        split = [out_channels // len(depths) + (i < out_channels % len(depths)) for i in range(len(depths))]
        self.depths = tuple(depths)
        self.branches = nn.ModuleList(
            nn.Conv3d(in_channels, c, kernel_size=(1, 1, 1) if d == 1 else (d, 3, 3),
                      padding=(0, 0, 0) if d == 1 else (0, 1, 1), bias=False)
            for c, d in zip(split, depths)
        )
        self.pool = nn.AvgPool3d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.norm(x))  # (B, C_in, T, H, W)
        outputs = [branch(F.pad(x, (0, 0, 0, 0, (d - 1) // 2, d // 2)))  # each (B, c_i, T, H, W)
                   for branch, d in zip(self.branches, self.depths)]
        return self.pool(torch.cat(outputs, dim=1))  # (B, out_channels, T/2, H/2, W/2)


class T3D(nn.Module):
    """3D DenseNet with Temporal Transition Layers, and a linear classifier.

    Args:
        num_classes: size of the output.
        in_channels: 3 for RGB, 2 for optical flow (x, y).
        growth_rate: channels each dense layer adds (k in DenseNet).
        block_config: dense layers per block; (6, 12, 24, 16) is DenseNet-121.
        num_init_features: channels of the stem convolution.
        bn_size: bottleneck width, as a multiple of `growth_rate`.
        ttl_depths: temporal kernel depths of each TTL's branches, one tuple per transition.
        dropout: dropout probability before the classifier.

    Forward: (B, in_channels, T, H, W) -> logits (B, num_classes).
    """

    def __init__(self, num_classes: int, *, in_channels: int = 3, growth_rate: int = 32,
                 block_config: tuple[int, ...] = (6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, ttl_depths: tuple[tuple[int, ...], ...] = ((1, 3, 6), (1, 3, 4), (1, 3, 4)),
                 dropout: float = 0.5):
        super().__init__()
        if len(ttl_depths) != len(block_config) - 1:
            raise ValueError(f"ttl_depths needs one tuple per transition ({len(block_config) - 1}), "
                             f"got {len(ttl_depths)}")
        # Stem as in the authors' released code: 3x7x7 conv, stride 2 in time and space, then a
        # 3x3x3 max-pool with stride 2 (32x224x224 -> 8x56x56).
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv3d(in_channels, num_init_features, kernel_size=(3, 7, 7), stride=2,
                                padding=(1, 3, 3), bias=False)),
            ("norm0", nn.BatchNorm3d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool3d(kernel_size=3, stride=2, padding=1)),
        ]))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            block = DenseBlock3d(num_layers, channels, growth_rate, bn_size)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels = block.out_channels
            if i < len(block_config) - 1:  # TTL where DenseNet has a transition
                self.features.add_module(f"ttl{i + 1}", TemporalTransition(channels, channels // 2, ttl_depths[i]))
                channels = channels // 2
        self.features.add_module("norm5", nn.BatchNorm3d(channels))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        self.out_features = channels

        for m in self.modules():  # DenseNet's initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T, H, W) -> logits (B, num_classes); for 32x224x224 at width 1 the features
        are (B, 1024, 1, 7, 7) after the three TTLs halve 8x56x56 three times."""
        if min(x.shape[2:]) < MIN_CLIP_SIZE:
            raise ValueError(f"t3d needs clips of at least {MIN_CLIP_SIZE} frames of at least "
                             f"{MIN_CLIP_SIZE}x{MIN_CLIP_SIZE} pixels, got T, H, W = {tuple(x.shape[2:])}")
        x = F.relu(self.features(x))  # (B, D, T/32, H/32, W/32)
        x = x.mean(dim=(2, 3, 4))  # (B, D): the paper's 7x7 average pool over a 1x7x7 map
        return self.classifier(self.dropout(x))


@register_model("t3d")
def t3d(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
        pretrained: str | None = None, block_config: tuple[int, ...] = (6, 12, 24, 16),
        ttl_depths: tuple[tuple[int, ...], ...] = ((1, 3, 6), (1, 3, 4), (1, 3, 4))) -> T3D:
    """T3D-121 from "Temporal 3D ConvNets: New Architecture and Transfer Learning for Video
    Classification" (Diba et al., arXiv:1711.08200, 2017).

    Args:
        num_classes: number of action classes.
        modality: "rgb" or "flow" (2 channels).
        width: multiplier of the growth rate (32) and stem channels (64).
        dropout: dropout probability before the classifier.
        pretrained: a local torchvision DenseNet state dict of the same layout (densenet121 for the
            default `block_config` at width 1.0), or "imagenet" for torchvision's, inflated into the stem and dense blocks (the flow
            stem by cross-modality initialisation). The TTLs and classifier start from random
            weights; the paper's own 2D->3D supervision transfer is a training procedure, not a
            weight file.
        block_config: dense layers per block ((6, 12, 24, 16): DenseNet-121; T3D-169 uses
            (6, 12, 32, 32)).
        ttl_depths: temporal depths of each TTL's branches, one tuple per transition: (1, 3, 6) for
            the first (8 frames deep at 32 input frames), then (1, 3, 4), as we read the paper's
            Table 1; the authors' released code uses (1, 3, 4) throughout.
    """
    if modality not in MODALITIES:
        raise ValueError(f"t3d supports modality {' | '.join(MODALITIES)}, not {modality!r}")
    model = T3D(num_classes, in_channels=IN_CHANNELS[modality], growth_rate=scale_channels(32, width),
                block_config=tuple(block_config), num_init_features=scale_channels(64, width),
                ttl_depths=tuple(tuple(d) for d in ttl_depths), dropout=dropout)
    if pretrained is not None:
        from models.pretrained import inflate_state_dict, read_state_dict

        ttl_prefixes = tuple(f"features.ttl{i + 1}." for i in range(len(block_config) - 1))
        densenet = {(6, 12, 24, 16): "densenet121", (6, 12, 32, 32): "densenet169"}.get(tuple(block_config))
        state = inflate_state_dict(read_state_dict(pretrained, network=densenet), model,
                                   skip=("classifier.", *ttl_prefixes))
        model.load_state_dict(state, strict=False)
    return model
