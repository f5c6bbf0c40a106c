"""Two-stream ConvNet: a spatial net on one RGB frame, a temporal net on L stacked flow fields.

Simonyan & Zisserman split appearance and motion: the spatial stream is an image classifier on a
single frame (here the clip's middle one), the temporal stream sees L consecutive flow fields
stacked as 2L input channels (x and y displacement of field 1, then of field 2, ...), and the two
class scores are fused late. The paper trains the streams separately and fuses by averaging their
softmax scores (or an SVM on them); with `modality="rgb+flow"` this module holds both and returns
the fused score, so it can also be trained jointly.

Both streams here are torchvision ResNets (`backbone`) rather than the paper's CNN-M-2048: ImageNet
checkpoints exist for them and the temporal stream's 2L-channel first layer is initialised from
the RGB one by averaging (`models.pretrained`), as later two-stream work (TSN) does.

Simonyan, Zisserman, "Two-Stream Convolutional Networks for Action Recognition in Videos",
NeurIPS 2014.
"""
import torch
from einops import rearrange
from torch import nn

from models._api import register_model
from models.backbones import resnet_features

MODALITIES = ("rgb", "flow", "rgb+flow")


def _softmax_mean(scores: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The paper's fusion: the weighted mean of the streams' softmax, returned as its log.

    A log-probability is a valid logit (softmax gives the averaged probabilities back) and keeps
    `cross_entropy` usable on the fused output.
    """
    probs = sum(w * s.softmax(dim=-1) for w, s in zip(weights, scores)) / sum(weights)
    return probs.clamp_min(1e-12).log()


def _logit_mean(scores: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Weighted mean of the raw scores: a softer alternative that does not saturate like softmax."""
    return sum(w * s for w, s in zip(weights, scores)) / sum(weights)


SCORE_FUSIONS = {"softmax_mean": _softmax_mean, "logit_mean": _logit_mean}


class SpatialStream(nn.Module):
    """ResNet on the clip's middle RGB frame: (B, 3, T, H, W) -> logits (B, num_classes)."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_features, num_classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        frame = rgb[:, :, rgb.shape[2] // 2]  # (B, 3, H, W): one frame carries the appearance
        return self.fc(self.dropout(self.backbone(frame)))


class TemporalStream(nn.Module):
    """ResNet on L stacked flow fields: (B, 2, L, H, W) -> logits (B, num_classes)."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float, flow_frames: int):
        super().__init__()
        self.backbone = backbone
        self.flow_frames = flow_frames
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_features, num_classes)

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        if flow.shape[2] != self.flow_frames:
            raise ValueError(f"the temporal stream stacks flow_frames={self.flow_frames} flow fields, "
                             f"got a flow clip of {flow.shape[2]}")
        # The paper's channel order: (dx_1, dy_1, dx_2, dy_2, ...), i.e. time-major.
        stacked = rearrange(flow, "b c l h w -> b (l c) h w")  # (B, 2L, H, W)
        return self.fc(self.dropout(self.backbone(stacked)))


class TwoStream(nn.Module):
    """One or both streams; with both, their scores are fused by `SCORE_FUSIONS[fusion]`.

    Args:
        spatial, temporal: the streams (either may be None, not both).
        fusion: a key of SCORE_FUSIONS.
        flow_weight: weight of the temporal stream's score relative to the spatial one's.
    """

    def __init__(self, spatial: SpatialStream | None, temporal: TemporalStream | None, *,
                 fusion: str = "softmax_mean", flow_weight: float = 1.0):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.fuse = SCORE_FUSIONS[fusion]
        self.flow_weight = flow_weight

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: rgb clip (B, 3, T, H, W) for the spatial stream alone, flow clip (B, 2, L, H, W)
                for the temporal stream alone, or {"rgb": ..., "flow": ...} for both.
        Returns:
            logits (B, num_classes); for both streams the fused score.
        """
        if self.temporal is None:
            return self.spatial(x)
        if self.spatial is None:
            return self.temporal(x)
        scores = [self.spatial(x["rgb"]), self.temporal(x["flow"])]
        return self.fuse(scores, [1.0, self.flow_weight])


@register_model("two_stream")
def two_stream(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
               pretrained: str | None = None, backbone: str = "resnet18", flow_frames: int = 10,
               fusion: str = "softmax_mean", flow_weight: float = 1.0) -> nn.Module:
    """Two-stream ConvNet with ResNet streams; "rgb" / "flow" build one stream, "rgb+flow" both.

    Simonyan & Zisserman, "Two-Stream Convolutional Networks for Action Recognition in Videos",
    NeurIPS 2014. The paper's input is 224x224 crops and L = 10 flow fields.

    Args:
        pretrained: local torchvision checkpoint for both ResNets (the flow stream's first layer is
            adapted to 2L channels), or None.
        backbone: a ResNet name from `models.backbones.RESNET_LAYOUTS`.
        flow_frames: L, the stacked flow fields (the flow clip's T must equal it).
        fusion: how "rgb+flow" fuses the scores, a key of SCORE_FUSIONS.
        flow_weight: the temporal score's weight in the fusion (1.0 = the paper's plain average).
    """
    if modality not in MODALITIES:
        raise ValueError(f"two_stream supports modality in {list(MODALITIES)}, got {modality!r}")
    if fusion not in SCORE_FUSIONS:
        raise ValueError(f"fusion must be one of {sorted(SCORE_FUSIONS)}, got {fusion!r}")
    spatial = temporal = None
    if modality in ("rgb", "rgb+flow"):
        spatial = SpatialStream(resnet_features(backbone, width=width, weights=pretrained),
                                num_classes, dropout)
    if modality in ("flow", "rgb+flow"):
        net = resnet_features(backbone, width=width, in_channels=2 * flow_frames, weights=pretrained)
        temporal = TemporalStream(net, num_classes, dropout, flow_frames)
    return TwoStream(spatial, temporal, fusion=fusion, flow_weight=flow_weight)
