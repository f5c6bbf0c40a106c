"""I3D: Inception-v1 (GoogLeNet) inflated to 3D, one network per stream.

Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset",
CVPR 2017.

Every 2D layer of GoogLeNet becomes a 3D layer with the paper's temporal sizes (Fig. 3): the first
conv is 7x7x7 with stride 2 in time too; the first two max-pools are 1x3x3 with stride 1 in time,
because downsampling time early "may merge edges of fast moving objects"; the later pools are
3x3x3 and 2x2x2 with stride 2; every 3x3 conv inside the Inception blocks becomes 3x3x3. Layers
are named exactly as in torchvision's `GoogLeNet`, so its ImageNet state dict inflates straight
into a stream (`models.pretrained.inflate_state_dict`). Two streams, RGB and optical flow, are
trained separately and averaged at test time; here "rgb+flow" averages their softmax outputs.

The paper trains on 64-frame 224x224 clips: (B, 3, 64, 224, 224) for RGB, (B, 2, 64, 224, 224) for
flow (x and y displacement). At width 1.0 one stream has ~12M parameters.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models._api import register_model
from models.backbones import scale_channels

IN_CHANNELS = {"rgb": 3, "flow": 2}
MODALITIES = ("rgb", "flow", "rgb+flow")

# Inception-v1 blocks as in torchvision's GoogLeNet (Szegedy et al. 2015, Table 1):
# name: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj). torchvision (and DeepMind's I3D) use a
# 3x3 kernel in the "5x5" branch, so the inflated branch is 3x3x3.
INCEPTION_V1 = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class BasicConv3d(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU; torchvision's BasicConv2d in 3D, same names."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001)  # torchvision's (and TF's) eps

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception3d(nn.Module):
    """An inflated Inception block: four parallel branches concatenated over channels.

    (B, C_in, T, H, W) -> (B, ch1x1 + ch3x3 + ch5x5 + pool_proj, T, H, W).
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv3d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv3d(in_channels, ch3x3red, kernel_size=1),
            BasicConv3d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv3d(in_channels, ch5x5red, kernel_size=1),
            BasicConv3d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool3d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv3d(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionV1Inflated(nn.Module):
    """One I3D stream: inflated Inception-v1 and a linear classifier.

    Args:
        in_channels: 3 for RGB, 2 for optical flow (x, y).
        num_classes: size of the output.
        width: channel multiplier (1.0 = the published network).
        dropout: dropout probability before the classifier.
        transform_input: map ImageNet-normalised RGB to the [-1, 1] range that torchvision's
            GoogLeNet weights (ported from TensorFlow) expect; set it when loading them.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: float = 1.0, dropout: float = 0.5,
                 transform_input: bool = False):
        super().__init__()
        if transform_input and in_channels != 3:
            raise ValueError("transform_input maps RGB statistics and needs in_channels=3")
        self.transform_input = transform_input
        # minimum=1, not the usual 4: at width 1/8 the 16-channel Inception branches are 2 wide, as
        # they have always been here (a floor of 4 would change I3D's size at small widths).
        c64, c192 = scale_channels(64, width, minimum=1), scale_channels(192, width, minimum=1)
        self.conv1 = BasicConv3d(in_channels, c64, kernel_size=7, stride=2, padding=3)
        # Stride 1 in time for the first two pools: time is downsampled only from maxpool3 on.
        self.maxpool1 = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), ceil_mode=True)
        self.conv2 = BasicConv3d(c64, c64, kernel_size=1)
        self.conv3 = BasicConv3d(c64, c192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), ceil_mode=True)

        channels = c192
        blocks = {}
        for name, branch_channels in INCEPTION_V1.items():
            blocks[name] = Inception3d(channels, *(scale_channels(c, width, minimum=1) for c in branch_channels))
            channels = blocks[name].out_channels
        self.inception3a, self.inception3b = blocks["inception3a"], blocks["inception3b"]
        self.maxpool3 = nn.MaxPool3d(kernel_size=3, stride=2, ceil_mode=True)
        self.inception4a, self.inception4b = blocks["inception4a"], blocks["inception4b"]
        self.inception4c, self.inception4d = blocks["inception4c"], blocks["inception4d"]
        self.inception4e = blocks["inception4e"]
        self.maxpool4 = nn.MaxPool3d(kernel_size=2, stride=2, ceil_mode=True)
        self.inception5a, self.inception5b = blocks["inception5a"], blocks["inception5b"]

        # The paper average-pools 2x7x7 windows, classifies each with a 1x1x1 conv and averages the
        # logits over time; global average pooling then a linear layer is the same up to the edge
        # windows' weights, and also takes inputs smaller than 224x224.
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.out_features = channels

    def _transform_input(self, x: Tensor) -> Tensor:
        # torchvision GoogLeNet's `transform_input`: undo ImageNet mean/std, scale to [-1, 1].
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
        return (x * std + mean - 0.5) / 0.5

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T, H, W) -> logits (B, num_classes). Shapes below: width 1, 64x224x224 input."""
        if self.transform_input:
            x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))  # (B, 64, 32, 56, 56)
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, 32, 28, 28)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, 16, 14, 14)
        x = self.inception4c(self.inception4b(self.inception4a(x)))  # (B, 512, 16, 14, 14)
        x = self.maxpool4(self.inception4e(self.inception4d(x)))  # (B, 832, 8, 7, 7)
        x = self.inception5b(self.inception5a(x))  # (B, 1024, 8, 7, 7)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 1024)
        return self.fc(self.dropout(x))


class I3D(nn.Module):
    """One I3D stream per modality; two streams are fused late by averaging their softmax.

    Args:
        num_classes: size of the output.
        modality: "rgb", "flow", or "rgb+flow" (two streams).
        width, dropout: passed to each stream.
        transform_input: per modality, whether that stream maps ImageNet-normalised input to [-1, 1].

    Forward takes (B, C, T, H, W), or for "rgb+flow" a dict {"rgb": (B, 3, T, H, W), "flow":
    (B, 2, T, H, W)}, and returns (B, num_classes) logits. The two-stream logits are
    log(mean of the streams' softmax): their softmax is exactly the averaged class probabilities
    the paper fuses, and cross-entropy on them trains both streams.
    """

    def __init__(self, num_classes: int, *, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
                 transform_input: dict[str, bool] | None = None):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"i3d supports modality {' | '.join(MODALITIES)}, not {modality!r}")
        transform_input = transform_input or {}
        self.modality = modality
        self.streams = nn.ModuleDict({
            name: InceptionV1Inflated(IN_CHANNELS[name], num_classes, width=width, dropout=dropout,
                                      transform_input=transform_input.get(name, False))
            for name in modality.split("+")
        })

    def forward(self, x: Tensor | dict[str, Tensor]) -> Tensor:
        if len(self.streams) == 1:
            return self.streams[self.modality](x)
        log_probs = torch.stack([F.log_softmax(stream(x[name]), dim=1)
                                 for name, stream in self.streams.items()])  # (S, B, num_classes)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.streams))


@register_model("i3d")
def i3d(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
        pretrained: str | None = None) -> I3D:
    """Two-Stream Inflated 3D ConvNet from "Quo Vadis, Action Recognition? A New Model and the
    Kinetics Dataset" (Carreira & Zisserman, CVPR 2017).

    Args:
        num_classes: number of action classes.
        modality: "rgb", "flow" or "rgb+flow".
        width: channel multiplier (1.0 = the published network, ~12M parameters per stream).
        dropout: dropout probability before each stream's classifier.
        pretrained: a local torchvision GoogLeNet state dict (e.g. googlenet-1378be20.pth), or
            "imagenet" for torchvision's (`pretrained.resolve_weights`), inflated
            into every stream (the flow stream's first layer by cross-modality initialisation);
            its classifier and auxiliary heads are dropped. Needs width 1.0. The RGB stream then
            maps its ImageNet-normalised input to the [-1, 1] range those weights were trained on.
    """
    model = I3D(num_classes, modality=modality, width=width, dropout=dropout,
                transform_input={"rgb": pretrained is not None})
    if pretrained is not None:
        from models.pretrained import read_state_dict, inflate_state_dict

        state_2d = read_state_dict(pretrained, network="googlenet")
        for stream in model.streams.values():
            stream.load_state_dict(inflate_state_dict(state_2d, stream), strict=False)
    return model
