"""ActionVLAD: learnable VLAD pooling of 2D conv features over space and time.

Every sampled frame (or stack of flow fields) goes through a shared 2D ConvNet; the last conv
map gives one D-dim descriptor per location. Instead of averaging scores over frames (TSN's
consensus), ActionVLAD soft-assigns every descriptor of every frame to K learned "action words"
and sums the residuals to each word: a (K, D) video descriptor that keeps *which kinds* of
appearance/motion occur in the video, wherever and whenever they occur. Because the pooling is
an orderless sum, the descriptor is invariant to the order of frames and locations.

Input clip (B, C, T, H, W):
    rgb   C = 3: T frames, each a sample.
    flow  C = 2: T = S * L flow fields, S samples of L fields stacked into 2L channels.

Girdhar et al., "ActionVLAD: Learning spatio-temporal aggregation for action classification",
CVPR 2017.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models._api import register_model
from models.backbones import resnet_features

MODALITY_CHANNELS = {"rgb": 3, "flow": 2}


class VLADPooling(nn.Module):
    """NetVLAD-style pooling of a bag of descriptors into K residual sums.

    V[k] = sum_i a_k(x_i) (x_i - c_k), with soft assignment a(x) = softmax_k(w_k . x + b_k), then
    intra-normalisation (each V[k] to unit L2 norm, so a few bursty words cannot dominate) and a
    final L2 normalisation of the flattened (K*D) vector.

    Arandjelovic et al., "NetVLAD: CNN architecture for weakly supervised place recognition",
    CVPR 2016; used over space and time by ActionVLAD.
    """

    def __init__(self, dim: int, num_clusters: int):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(num_clusters, dim) / dim ** 0.5)  # (K, D)
        self.assign = nn.Linear(dim, num_clusters)  # the 1x1 conv w_k . x + b_k

    @torch.no_grad()
    def init_centres(self, centres: torch.Tensor, alpha: float = 100.0) -> None:
        """Start from given centres (ActionVLAD runs k-means on pretrained features).

        With w_k = 2 alpha c_k, b_k = -alpha |c_k|^2 the soft assignment is
        softmax_k(-alpha |x - c_k|^2): a large alpha makes it close to hard nearest-centre VLAD.

        Args:
            centres: (K, D).
        """
        self.centres.copy_(centres)
        self.assign.weight.copy_(2 * alpha * centres)
        self.assign.bias.copy_(-alpha * centres.pow(2).sum(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, N, D) descriptors, N = all locations of all frames.
        Returns:
            (B, K * D) L2-normalised VLAD vector.
        """
        assignment = self.assign(x).softmax(dim=-1)  # (B, N, K)
        # sum_i a_ik (x_i - c_k) = sum_i a_ik x_i - (sum_i a_ik) c_k, without a (B, N, K, D) tensor
        vlad = torch.einsum("bnk,bnd->bkd", assignment, x) - assignment.sum(dim=1)[..., None] * self.centres
        vlad = F.normalize(vlad, dim=2)  # intra-normalisation, (B, K, D)
        return F.normalize(rearrange(vlad, "b k d -> b (k d)"), dim=1)  # (B, K*D)


class ActionVLAD(nn.Module):
    """Per-sample 2D conv maps -> VLAD over (samples x locations) -> dropout -> linear classifier.

    Args:
        backbone: a `models.backbones` extractor with `.forward_maps` (B, L*C, H, W) -> (B, D, h, w).
        num_classes: N.
        num_clusters: K action words.
        frames_per_sample: L, frames folded into the channels of one backbone input (1 for rgb).
        dropout: on the VLAD vector before the classifier.
    """

    def __init__(self, backbone: nn.Module, *, num_classes: int, num_clusters: int,
                 frames_per_sample: int, dropout: float = 0.5):
        super().__init__()
        self.frames_per_sample = frames_per_sample
        self.backbone = backbone
        self.vlad = VLADPooling(backbone.out_features, num_clusters)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_clusters * backbone.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, C, T, H, W), T a multiple of frames_per_sample.
        Returns:
            (B, num_classes) logits.
        """
        L = self.frames_per_sample
        if x.shape[2] % L:
            raise ValueError(f"ActionVLAD expects T to be a multiple of frames_per_sample = {L}, "
                             f"got T = {x.shape[2]}")
        samples = rearrange(x, "b c (s l) h w -> (b s) (l c) h w", l=L)  # (B*S, L*C, H, W)
        maps = self.backbone.forward_maps(samples)  # (B*S, D, h, w)
        # One bag per video: every location of every sample, so VLAD pools over space *and* time.
        descriptors = rearrange(maps, "(b s) d h w -> b (s h w) d", b=x.shape[0])  # (B, S*h*w, D)
        return self.fc(self.dropout(self.vlad(descriptors)))  # (B, N)


@register_model("actionvlad")
def actionvlad(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
               pretrained: str | None = None, num_clusters: int = 64, frames_per_sample: int | None = None,
               backbone: str = "resnet18") -> ActionVLAD:
    """ActionVLAD from Girdhar et al., "ActionVLAD: Learning spatio-temporal aggregation for action
    classification", CVPR 2017.

    The paper pools VGG-16 conv5_3 (D = 512) with K = 64; torchvision ships no VGG in
    `models.backbones`, so ResNet-18's last conv map (also D = 512, same 64 x 512 VLAD) stands in.

    Args:
        num_classes: number of action classes.
        modality: "rgb" or "flow".
        width: channel multiplier of the backbone.
        dropout: on the VLAD vector.
        pretrained: local torchvision checkpoint for the backbone.
        num_clusters: K.
        frames_per_sample: L flow fields stacked per backbone input; None = 1 for rgb, 10 for flow
            (the stack of the two-stream temporal network ActionVLAD's flow stream builds on).
            rgb accepts only 1.
        backbone: "resnet18", "resnet34" or "resnet50".
    """
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"actionvlad supports modality {', '.join(MODALITY_CHANNELS)}; got {modality!r}")
    if backbone not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"actionvlad backbone must be resnet18, resnet34 or resnet50, got {backbone!r}")
    if frames_per_sample is None:
        frames_per_sample = 1 if modality == "rgb" else 10
    if modality == "rgb" and frames_per_sample != 1:
        raise ValueError(f"actionvlad frames_per_sample must be 1 for rgb, got {frames_per_sample}")
    if num_clusters < 1 or frames_per_sample < 1:
        raise ValueError(f"actionvlad num_clusters and frames_per_sample must be >= 1, "
                         f"got {num_clusters} and {frames_per_sample}")
    in_channels = MODALITY_CHANNELS[modality] * frames_per_sample
    net = resnet_features(backbone, width=width, in_channels=in_channels, weights=pretrained)
    return ActionVLAD(net, num_classes=num_classes, num_clusters=num_clusters,
                      frames_per_sample=frames_per_sample, dropout=dropout)
