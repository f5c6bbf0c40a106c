"""Temporal Segment Networks (TSN): sparse segment sampling, a shared 2D ConvNet, segmental consensus.

A video is split into K segments; one short snippet per segment (1 RGB frame, L stacked flow
fields, or L stacked RGB differences) goes through the same 2D ConvNet, and a consensus function
turns the K snippet scores into one video score. Only the consensus sees more than one snippet,
so the loss is on the video-level prediction even though the network is an image network.

Input clip (B, C, T, H, W) with T = K * L and L = `frames_per_segment`:
    rgb      C = 3, L = 1   one frame per segment
    flow     C = 2, L = 5   L (x, y) fields per segment, stacked into 2L channels. TSN's "warped
                            optical flow" is the same tensor, computed upstream after compensating
                            camera motion, so it is modality "flow" here.
    rgbdiff  C = 3, L = 5   L consecutive RGB differences (computed before the model), 3L channels

Wang et al., "Temporal Segment Networks: Towards Good Practices for Deep Action Recognition",
ECCV 2016.
"""
from typing import Callable

import torch
from einops import rearrange
from torch import nn

from models._api import register_model
from models.backbones import resnet_features

MODALITY_CHANNELS = {"rgb": 3, "flow": 2, "rgbdiff": 3}
# TSN's snippet lengths: one RGB frame; five stacked flow fields or RGB differences.
DEFAULT_FRAMES_PER_SEGMENT = {"rgb": 1, "flow": 5, "rgbdiff": 5}


# --- segmental consensus: (B, K, N) segment scores -> (B, N) video scores ---------------------

class AvgConsensus(nn.Module):
    """Mean over segments: TSN's default and best-performing consensus."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:  # (B, K, N) -> (B, N)
        return scores.mean(dim=1)


class MaxConsensus(nn.Module):
    """Max over segments per class: the video is as much class c as its most class-c snippet."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:  # (B, K, N) -> (B, N)
        return scores.amax(dim=1)


class WeightedConsensus(nn.Module):
    """A learned weight per segment position (TSN's "weighted average"), initialised to the mean."""

    def __init__(self, num_segments: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_segments,), 1.0 / num_segments))  # (K,)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:  # (B, K, N) -> (B, N)
        return torch.einsum("bkn,k->bn", scores, self.weight)


class AttentionConsensus(nn.Module):
    """Content-dependent weights over segments: a single attention unit on the segment scores.

    a_k = softmax_k(w2 . tanh(W1 s_k + b1)), output = sum_k a_k s_k. Unlike "weighted", the weight
    of a segment depends on what the segment shows, so an uninformative snippet (a cut to the
    audience) can be ignored wherever it falls. This is the attention unit of Long et al.,
    "Attention Clusters: Purely Attention Based Local Feature Integration for Video
    Classification", CVPR 2018, with one cluster, applied to segment scores rather than features.
    """

    def __init__(self, num_classes: int, hidden: int = 64):
        super().__init__()
        self.hidden = nn.Linear(num_classes, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        nn.init.zeros_(self.score.weight)  # uniform attention at init: training starts from "avg"

    def forward(self, scores: torch.Tensor) -> torch.Tensor:  # (B, K, N) -> (B, N)
        attention = self.score(torch.tanh(self.hidden(scores))).softmax(dim=1)  # (B, K, 1)
        return (attention * scores).sum(dim=1)


# name -> factory(num_segments, num_classes) -> module; a sweep grids over the keys.
CONSENSUS: dict[str, Callable[[int, int], nn.Module]] = {
    "avg": lambda num_segments, num_classes: AvgConsensus(),
    "max": lambda num_segments, num_classes: MaxConsensus(),
    "weighted": lambda num_segments, num_classes: WeightedConsensus(num_segments),
    "learnable": lambda num_segments, num_classes: AttentionConsensus(num_classes),
}


# --- the network ------------------------------------------------------------------------------

class TSN(nn.Module):
    """Shared 2D backbone over K snippets, dropout + linear classifier per snippet, consensus.

    Args:
        backbone: a `models.backbones` feature extractor, (B, L*C, H, W) -> (B, D).
        num_classes: N.
        num_segments: K.
        frames_per_segment: L, frames folded into the channels of one snippet.
        consensus: a key of CONSENSUS.
        dropout: before the classifier; TSN adds it after global pooling against overfitting.
        partial_bn: freeze the statistics and affine parameters of every BatchNorm except the
            first. TSN does this when fine-tuning ImageNet weights on small video datasets: the
            pretrained statistics are better estimates than a few video mini-batches. The first
            BN stays trainable because a flow or RGB-diff input has a different distribution.
    """

    def __init__(self, backbone: nn.Module, *, num_classes: int, num_segments: int,
                 frames_per_segment: int, consensus: str = "avg", dropout: float = 0.5,
                 partial_bn: bool = False):
        super().__init__()
        self.num_segments, self.frames_per_segment, self.partial_bn = num_segments, frames_per_segment, partial_bn
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_features, num_classes)
        self.consensus = CONSENSUS[consensus](num_segments, num_classes)
        # Frozen here, at construction, not in train(): DistributedDataParallel records which
        # parameters need gradients when it wraps the model; a parameter frozen after that leaves
        # its reducer waiting for a gradient that never comes (step 2 fails under DDP).
        for bn in self._frozen_norms():
            bn.weight.requires_grad_(False)
            bn.bias.requires_grad_(False)

    def _frozen_norms(self) -> list[nn.BatchNorm2d]:
        """partial_bn: every BatchNorm of the backbone but the first (none without partial_bn)."""
        if not self.partial_bn:
            return []
        return [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)][1:]

    def train(self, mode: bool = True) -> "TSN":
        super().train(mode)
        if mode:
            for bn in self._frozen_norms():
                bn.eval()  # use and keep the running statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, C, T, H, W) with T = num_segments * frames_per_segment.
        Returns:
            (B, num_classes) video logits from the consensus of the segment logits.
        """
        K, L = self.num_segments, self.frames_per_segment
        if x.shape[2] != K * L:
            raise ValueError(f"TSN expects T = num_segments * frames_per_segment = {K} * {L} = {K * L} "
                             f"frames, got T = {x.shape[2]}")
        # Fold segments into the batch and each snippet's L frames into channels, frame-major so a
        # flow snippet reads (x1, y1, x2, y2, ...) as in TSN's stacked-flow input.
        snippets = rearrange(x, "b c (k l) h w -> (b k) (l c) h w", k=K, l=L)  # (B*K, L*C, H, W)
        features = self.backbone(snippets)  # (B*K, D)
        scores = self.fc(self.dropout(features))  # (B*K, N)
        scores = rearrange(scores, "(b k) n -> b k n", k=K)  # (B, K, N)
        return self.consensus(scores)  # (B, N)


@register_model("tsn")
def tsn(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
        pretrained: str | None = None, num_segments: int = 3, frames_per_segment: int | None = None,
        backbone: str = "resnet50", consensus: str = "avg", partial_bn: bool = False) -> TSN:
    """TSN from Wang et al., "Temporal Segment Networks: Towards Good Practices for Deep Action
    Recognition", ECCV 2016.

    The paper's backbone is BN-Inception, which torchvision does not ship; ResNet-50 (default) or
    ResNet-18 stand in for it. K = 3 segments is the paper's training setting.

    Args:
        num_classes: number of action classes.
        modality: "rgb", "flow" (also warped flow) or "rgbdiff".
        width: channel multiplier of the backbone.
        dropout: before the classifier.
        pretrained: local torchvision checkpoint for the backbone; a flow / RGB-diff first layer
            is initialised from it by averaging over RGB (TSN's cross-modality initialisation).
        num_segments: K.
        frames_per_segment: L; None = 1 for rgb and 5 for flow and rgbdiff (the paper's values).
            RGB TSN looks at one frame per segment, so rgb accepts only 1.
        backbone: "resnet50" or "resnet18".
        consensus: a key of CONSENSUS.
        partial_bn: see TSN; meant for fine-tuning `pretrained` weights.
    """
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"tsn supports modality {', '.join(MODALITY_CHANNELS)}; got {modality!r}")
    if backbone not in ("resnet50", "resnet18"):
        raise ValueError(f"tsn backbone must be 'resnet50' or 'resnet18', got {backbone!r}")
    if consensus not in CONSENSUS:
        raise ValueError(f"tsn consensus must be one of {', '.join(CONSENSUS)}, got {consensus!r}")
    if frames_per_segment is None:
        frames_per_segment = DEFAULT_FRAMES_PER_SEGMENT[modality]
    if modality == "rgb" and frames_per_segment != 1:
        raise ValueError(f"tsn frames_per_segment must be 1 for rgb, got {frames_per_segment}")
    if num_segments < 1 or frames_per_segment < 1:
        raise ValueError(f"tsn num_segments and frames_per_segment must be >= 1, "
                         f"got {num_segments} and {frames_per_segment}")
    in_channels = MODALITY_CHANNELS[modality] * frames_per_segment
    net = resnet_features(backbone, width=width, in_channels=in_channels, weights=pretrained)
    return TSN(net, num_classes=num_classes, num_segments=num_segments,
               frames_per_segment=frames_per_segment, consensus=consensus, dropout=dropout,
               partial_bn=partial_bn)
