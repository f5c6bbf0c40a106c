"""2D ResNet feature extractors shared by the frame-level architectures.

At `width=1.0` these are exactly torchvision's ResNet-18/34/50 (same module names, so torchvision
weights load into them); a smaller `width` scales every stage's channels so tests and laptops can
build tiny versions of the same design. `in_channels` != 3 makes a flow (2L channels) or RGB-diff
first layer, initialised by `models.pretrained.cross_modality_init` when weights are loaded.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

RESNET_LAYOUTS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def scale_channels(channels: int, width: float, *, minimum: int = 4) -> int:
    """The size of a layer of the published network (`channels` at width 1.0) at `width`.

    Every model scales its layers with this one function, so a `width` means the same in every
    file. The floor is there for tiny widths: rounding would shrink a thin layer (a 45-channel stem,
    a 16-channel Inception branch) to 0-3 channels, and a 0-wide layer cannot be built while a
    1-3 wide one is a bottleneck that starves everything after it.

    Args:
        channels: the layer's size at width 1.0.
        width: channel multiplier (1.0 = the published network).
        minimum: the smallest size returned. I3D passes 1: its thin Inception branches have always
            gone below 4 at width 1/8, and its parameter counts there depend on it.
    Returns:
        round(channels * width), at least `minimum`.
    """
    return max(minimum, int(round(channels * width)))


class ResNetFeatures(ResNet):
    """torchvision's ResNet with scaled stage widths and no classifier: (B, C, H, W) -> (B, D)."""

    def __init__(self, name: str = "resnet18", *, width: float = 1.0, in_channels: int = 3):
        block, layers = RESNET_LAYOUTS[name]
        super().__init__(block, layers)
        planes = [scale_channels(p, width) for p in (64, 128, 256, 512)]
        if width != 1.0:  # rebuild the stages at the scaled widths; torchvision hard-codes 64..512
            self.inplanes = planes[0]
            self.conv1 = nn.Conv2d(3, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(planes[0])
            self.layer1 = self._make_layer(block, planes[0], layers[0])
            self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
            self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
            self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
        for m in self.modules():  # torchvision's initialisation, for the stages rebuilt above too
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.out_features = planes[3] * block.expansion
        self.fc = nn.Identity()
        self.name, self.in_channels = name, in_channels

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> last conv feature map (B, D, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> pooled features (B, D)."""
        return torch.flatten(self.avgpool(self.forward_maps(x)), 1)


def resnet_features(name: str = "resnet18", *, width: float = 1.0, in_channels: int = 3,
                    weights: str | Path | None = None) -> ResNetFeatures:
    """Build a ResNet feature extractor, optionally initialised from a torchvision state dict file.

    Args:
        name: one of RESNET_LAYOUTS.
        width: channel multiplier (1.0 = the published network).
        in_channels: 3 for RGB, 2L for L stacked flow fields, 3 for RGB-difference.
        weights: a local torchvision checkpoint (e.g. ~/.cache/torch/hub/checkpoints/resnet18-*.pth),
            or "imagenet" / a torchvision weights name (`pretrained.resolve_weights`). The RGB first layer is adapted to `in_channels` by averaging
            over its input channels (TSN's cross-modality initialisation).
    """
    net = ResNetFeatures(name, width=width, in_channels=in_channels)
    if weights is not None:
        from models.pretrained import load_2d_weights

        load_2d_weights(net, weights, network=name)
    return net
