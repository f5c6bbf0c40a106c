"""3D ConvNets on raw clips: C3D, and R(2+1)D with every 3x3x3 conv factorised into 2D + 1D.

C3D (Tran et al. 2015) is VGG-like with 3x3x3 convolutions everywhere: 8 convs, 5 max pools, 2 fc
layers, on 16-frame 112x112 clips. Its first pool is spatial only so early layers keep the full
temporal resolution; pools 2-5 halve time too, leaving 1 x 4 x 4 at pool5 (16 x 112 x 112 ->
16x56x56 -> 8x28x28 -> 4x14x14 -> 2x7x7 -> 1x4x4), and fc6 maps those 512 * 4 * 4 = 8192 values to
4096. Pools use ceil mode like the original Caffe layers (that is how 7 becomes 4 at pool5).

R(2+1)D (Tran et al. 2018) replaces each t x d x d convolution by a 1 x d x d spatial conv, BN,
ReLU, and a t x 1 x 1 temporal conv, with the middle width M chosen so the pair has the 3D conv's
parameter count: M = t d^2 N_in N_out / (d^2 N_in + t N_out). Factorising in space and time was
first proposed as F_STCN (Sun et al. 2015). The model is torchvision's `VideoResNet` with its
`BasicBlock`, `Conv2Plus1D` and R(2+1)D stem, so at `width=1.0` torchvision's `r2plus1d_18`
Kinetics checkpoint loads by name; `width` scales every stage for tiny test models, which
torchvision's hard-coded widths do not allow.

Both models can start from a local checkpoint with their own module names (`pretrained`):
torchvision's `r2plus1d_18` state dict, or a PyTorch port of the Sports-1M C3D weights.

Tran, Bourdev, Fergus, Torresani, Paluri, "Learning Spatiotemporal Features with 3D Convolutional
Networks", ICCV 2015 (arXiv 2014).
Tran, Wang, Torresani, Ray, LeCun, Paluri, "A Closer Look at Spatiotemporal Convolutions for Action
Recognition", CVPR 2018.
Sun, Jia, Yeung, Shi, "Human Action Recognition using Factorized Spatio-Temporal Convolutional
Networks", ICCV 2015.
"""
import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from models._api import register_model
from models.backbones import scale_channels

# A 3D net sees time directly, so a flow clip is just a 2-channel clip (Tran et al. 2018 train
# R(2+1)D on flow this way).
IN_CHANNELS = {"rgb": 3, "rgbdiff": 3, "flow": 2}


# ----------------------------------------------------------------------------------------------
# C3D


class C3D(nn.Module):
    """C3D: 8 3x3x3 convs, 5 max pools, fc6-fc7-fc8.

    Args:
        num_classes: size of fc8.
        in_channels: 3 (RGB, RGB difference) or 2 (flow).
        width: channel multiplier for every conv and fc layer (1.0 = the paper's 64..512, 4096).
        dropout: dropout after fc6 and fc7, as in the paper.
    """

    # pool5's output grid at the paper's 16x112x112 input. fc6 always reads this grid (an adaptive
    # average pool, the identity at the paper's size), so fc6 keeps the paper's 8192 inputs, and
    # the Sports-1M weights, whatever the clip size; a tiny 8x32x32 clip's 1x1x1 map is repeated.
    GRID = (1, 4, 4)

    def __init__(self, *, num_classes: int, in_channels: int = 3, width: float = 1.0,
                 dropout: float = 0.5):
        super().__init__()
        c1, c2, c3, c4, c5 = (scale_channels(c, width) for c in (64, 128, 256, 512, 512))
        fc = scale_channels(4096, width)
        conv = dict(kernel_size=3, padding=1)
        self.conv1 = nn.Conv3d(in_channels, c1, **conv)
        self.pool1 = nn.MaxPool3d((1, 2, 2), ceil_mode=True)  # space only: keep early motion
        self.conv2 = nn.Conv3d(c1, c2, **conv)
        self.pool2 = nn.MaxPool3d(2, ceil_mode=True)
        self.conv3a = nn.Conv3d(c2, c3, **conv)
        self.conv3b = nn.Conv3d(c3, c3, **conv)
        self.pool3 = nn.MaxPool3d(2, ceil_mode=True)
        self.conv4a = nn.Conv3d(c3, c4, **conv)
        self.conv4b = nn.Conv3d(c4, c4, **conv)
        self.pool4 = nn.MaxPool3d(2, ceil_mode=True)
        self.conv5a = nn.Conv3d(c4, c5, **conv)
        self.conv5b = nn.Conv3d(c5, c5, **conv)
        self.pool5 = nn.MaxPool3d(2, ceil_mode=True)
        self.grid = nn.AdaptiveAvgPool3d(self.GRID)
        self.fc6 = nn.Linear(c5 * self.GRID[0] * self.GRID[1] * self.GRID[2], fc)
        self.fc7 = nn.Linear(fc, fc)
        self.fc8 = nn.Linear(fc, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: clip (B, C, T, H, W); the paper's is (B, 3, 16, 112, 112).
        Returns:
            logits (B, num_classes).
        """
        x = self.pool1(self.relu(self.conv1(x)))  # (B, 64, T, H/2, W/2)
        x = self.pool2(self.relu(self.conv2(x)))  # (B, 128, T/2, H/4, W/4)
        x = self.pool3(self.relu(self.conv3b(self.relu(self.conv3a(x)))))  # (B, 256, T/4, H/8, W/8)
        x = self.pool4(self.relu(self.conv4b(self.relu(self.conv4a(x)))))  # (B, 512, T/8, H/16, W/16)
        x = self.pool5(self.relu(self.conv5b(self.relu(self.conv5a(x)))))  # (B, 512, T/16, H/32, W/32)
        x = torch.flatten(self.grid(x), 1)  # (B, 512 * 1 * 4 * 4)
        x = self.dropout(self.relu(self.fc6(x)))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.fc8(x)


# ----------------------------------------------------------------------------------------------
# R(2+1)D


class ScaledR2Plus1dStem(R2Plus1dStem):
    """torchvision's R(2+1)D stem, the 3x7x7 stride-(1, 2, 2) conv factorised into a (1, 7, 7)
    spatial and a (3, 1, 1) temporal conv (time keeps its resolution here), with the input and
    the widths as arguments: torchvision hard-codes 3 -> 45 -> 64.
    """

    def __init__(self, in_channels: int = 3, midplanes: int = 45, out_planes: int = 64):
        nn.Sequential.__init__(  # R2Plus1dStem.__init__ would build the fixed-size layers
            self,
            nn.Conv3d(in_channels, midplanes, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(midplanes), nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(out_planes), nn.ReLU(inplace=True),
        )


class R2Plus1D(VideoResNet):
    """torchvision's VideoResNet built as R(2+1)D: the (2+1)D stem, four stages of basic blocks of
    `Conv2Plus1D` (each block's middle width M matches a full 3x3x3 conv's parameter count), global
    average pool, fc; with a channel `width`, `in_channels` and dropout before fc.

    Args:
        num_classes: size of the output.
        layers: blocks per stage ([2, 2, 2, 2] = R(2+1)D-18, [3, 4, 6, 3] = R(2+1)D-34).
        in_channels: 3 (RGB, RGB difference) or 2 (flow).
        width: channel multiplier (1.0 = 64, 128, 256, 512).
        dropout: dropout before fc (torchvision has none; 0.0 reproduces it).
    """

    def __init__(self, *, num_classes: int, layers: tuple[int, int, int, int] = (2, 2, 2, 2),
                 in_channels: int = 3, width: float = 1.0, dropout: float = 0.5):
        # Not VideoResNet.__init__, which hard-codes 3 input and 64..512 channels: the same attributes
        # (so the same module names, and torchvision checkpoints load by name) at the scaled widths,
        # its `_make_layer` building the stages.
        nn.Module.__init__(self)
        planes = [scale_channels(c, width) for c in (64, 128, 256, 512)]
        self.stem = ScaledR2Plus1dStem(in_channels, scale_channels(45, width), planes[0])
        self.inplanes = planes[0]  # `_make_layer` reads it, and moves it on to each stage's width
        self.layer1 = self._make_layer(BasicBlock, Conv2Plus1D, planes[0], layers[0], stride=1)
        # stages 2-4 halve T, H and W (Conv2Plus1D strides space in its first conv, time in its second)
        self.layer2 = self._make_layer(BasicBlock, Conv2Plus1D, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, Conv2Plus1D, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, Conv2Plus1D, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(planes[3], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """VideoResNet's forward with dropout before fc.

        Args:
            x: clip (B, C, T, H, W); the paper's is (B, 3, 8 or 16 or 32, 112, 112).
        Returns:
            logits (B, num_classes).
        """
        x = self.stem(x)  # (B, 64, T, H/2, W/2)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, T/8, H/16, W/16)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# ----------------------------------------------------------------------------------------------
# Builders


def _in_channels(name: str, modality: str) -> int:
    if modality not in IN_CHANNELS:
        raise ValueError(f"{name} supports modality in {sorted(IN_CHANNELS)}, got {modality!r}")
    return IN_CHANNELS[modality]


@register_model("c3d")
def c3d(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
        pretrained: str | None = None) -> nn.Module:
    """C3D: 3x3x3 convs over 16-frame 112x112 clips.

    Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015.

    Args:
        pretrained: a local state dict with C3D's module names (conv1 ... fc8, e.g. a PyTorch port
            of the Sports-1M weights), loaded by `models.pretrained.load_checkpoint`: fc8 stays
            random when its number of classes differs. None = random init.
    """
    model = C3D(num_classes=num_classes, in_channels=_in_channels("c3d", modality), width=width,
                dropout=dropout)
    if pretrained is not None:
        from models.pretrained import load_checkpoint

        load_checkpoint(model, pretrained)
    return model


@register_model("r2plus1d")
def r2plus1d(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
             pretrained: str | None = None, depth: int = 18) -> nn.Module:
    """R(2+1)D-18 or -34: a 3D ResNet with every 3x3x3 conv factorised into (2+1)D.

    Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition", CVPR 2018.

    Args:
        pretrained: a local torchvision `r2plus1d_18` checkpoint (same module names), loaded by
            `models.pretrained.load_checkpoint`: fc stays random when its number of classes
            differs. None = random init.
        depth: 18 or 34.
    """
    layouts = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
    if depth not in layouts:
        raise ValueError(f"r2plus1d depth must be one of {sorted(layouts)}, got {depth}")
    model = R2Plus1D(num_classes=num_classes, layers=layouts[depth],
                     in_channels=_in_channels("r2plus1d", modality), width=width, dropout=dropout)
    if pretrained is not None:
        from models.pretrained import load_checkpoint

        load_checkpoint(model, pretrained)
    return model
