"""LRCN: a 2D CNN on every frame, an LSTM over the per-frame features, predictions averaged in time.

Donahue et al. feed CaffeNet fc6 features of each frame to an LSTM and average the per-step
predictions; Ng et al. stack deeper LSTMs on GoogLeNet features. Here the per-frame CNN is a
torchvision ResNet (`backbone`) so ImageNet checkpoints load, and the LSTM size and depth are
options.

With `attention=True` the LSTM reads, at each step, an attention-weighted average of the last conv
map instead of its global average (Sharma et al.): the weights over the K x K locations are a
softmax of a linear function of the previous hidden state, the initial state is predicted from the
clip's mean feature, and `auxiliary_loss()` is the paper's penalty pushing every location to be
attended for about one time step in total.

Donahue et al., "Long-term Recurrent Convolutional Networks for Visual Recognition and
Description", CVPR 2015 (arXiv 2014).
Ng et al., "Beyond Short Snippets: Deep Networks for Video Classification", CVPR 2015.
Sharma, Kiros, Salakhutdinov, "Action Recognition using Visual Attention", ICLR workshop 2016
(arXiv 2015).
"""
import torch
from einops import rearrange
from torch import nn

from models._api import register_model
from models.backbones import resnet_features, scale_channels

# Donahue et al. run the CNN on each frame, so a flow clip is a sequence of single flow fields.
IN_CHANNELS = {"rgb": 3, "rgbdiff": 3, "flow": 2}


class SpatialAttention(nn.Module):
    """Sharma et al.'s location softmax: where to look at step t, from the hidden state at t-1.

    The weights depend only on h_{t-1} (one logit per grid location), so the conv map is first
    pooled to a fixed K x K grid; at the paper's 224x224 input the map already is 7x7 and the pool
    is the identity.
    """

    def __init__(self, hidden_size: int, grid: int = 7):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.to_logits = nn.Linear(hidden_size, grid * grid)

    def grid_features(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) conv maps -> (N, K*K, D) location features."""
        return rearrange(self.pool(maps), "n d h w -> n (h w) d")

    def forward(self, features: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            features: (B, K*K, D) location features of one frame.
            hidden: (B, H) top-layer LSTM state from the previous step.
        Returns:
            the attended feature (B, D) and the attention weights (B, K*K).
        """
        weights = self.to_logits(hidden).softmax(dim=-1)  # (B, K*K)
        return torch.einsum("bk,bkd->bd", weights, features), weights


class LRCN(nn.Module):
    """Per-frame ResNet -> LSTM -> per-step classifier, averaged over the steps.

    Args:
        backbone: a ResNet feature extractor from `models.backbones.resnet_features`.
        num_classes: size of the output.
        hidden_size: LSTM units (Donahue et al.: 256; Ng et al.: 512; Sharma et al.: 1024).
        num_layers: stacked LSTM layers (Donahue: 1; Ng: 5; Sharma: 3).
        attention: read attention-weighted conv features (Sharma et al.) instead of pooled ones.
        attention_penalty: weight of Sharma et al.'s attention regulariser (their lambda).
        dropout: dropout on the LSTM output before the classifier (Donahue et al.: 0.5).
        feature_dropout: dropout on each frame's CNN feature before the LSTM (Donahue et al.: 0.9 after
            fc6); 0 leaves the features as they are.
    """

    def __init__(self, backbone: nn.Module, *, num_classes: int, hidden_size: int = 256,
                 num_layers: int = 1, attention: bool = False, attention_penalty: float = 1.0,
                 dropout: float = 0.5, feature_dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_features
        self.feature_dropout = nn.Dropout(feature_dropout)  # on what the LSTM reads: pooled or attended
        self.lstm = nn.LSTM(d, hidden_size, num_layers=num_layers, batch_first=True)
        self.attention = SpatialAttention(hidden_size) if attention else None
        if attention:
            # Sharma et al. predict (h_0, c_0) from the clip's mean feature rather than starting at
            # zero, so the first attention map already depends on the video.
            self.init_h = nn.Linear(d, num_layers * hidden_size)
            self.init_c = nn.Linear(d, num_layers * hidden_size)
        self.attention_penalty = attention_penalty
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, num_classes)
        self._attention_weights: torch.Tensor | None = None  # (B, T, K*K) from the last forward

    def _pooled_steps(self, maps: torch.Tensor, batch: int) -> torch.Tensor:
        """(B*T, D, h, w) -> LSTM outputs (B, T, H) from globally pooled frame features."""
        feats = rearrange(self.feature_dropout(maps.mean(dim=(2, 3))), "(b t) d -> b t d", b=batch)
        return self.lstm(feats)[0]

    def _attended_steps(self, maps: torch.Tensor, batch: int) -> torch.Tensor:
        """(B*T, D, h, w) -> LSTM outputs (B, T, H), one step at a time (step t attends with h_{t-1})."""
        locations = rearrange(self.attention.grid_features(maps), "(b t) k d -> b t k d", b=batch)
        mean_feature = locations.mean(dim=(1, 2))  # (B, D)
        layers = self.lstm.num_layers
        h = rearrange(torch.tanh(self.init_h(mean_feature)), "b (l h) -> l b h", l=layers).contiguous()
        c = rearrange(torch.tanh(self.init_c(mean_feature)), "b (l h) -> l b h", l=layers).contiguous()
        outputs, weights = [], []
        for t in range(locations.shape[1]):
            x_t, w_t = self.attention(locations[:, t], h[-1])  # (B, D), (B, K*K)
            out, (h, c) = self.lstm(self.feature_dropout(x_t)[:, None], (h, c))  # out: (B, 1, H)
            outputs.append(out)
            weights.append(w_t)
        self._attention_weights = torch.stack(weights, dim=1)  # (B, T, K*K)
        return torch.cat(outputs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: clip (B, C, T, H, W).
        Returns:
            logits (B, num_classes): the mean over time of the per-step logits.
        """
        b = x.shape[0]
        maps = self.backbone.forward_maps(rearrange(x, "b c t h w -> (b t) c h w"))  # (B*T, D, h, w)
        if self.attention is None:
            steps = self._pooled_steps(maps, b)  # (B, T, H)
        else:
            steps = self._attended_steps(maps, b)
        logits = self.fc(self.dropout(steps))  # (B, T, num_classes)
        # Every step predicts the video's label. Averaging logits is averaging log-probabilities up
        # to a per-step constant, i.e. a (normalised) geometric mean of the per-step softmaxes.
        return logits.mean(dim=1)

    def auxiliary_loss(self) -> torch.Tensor:
        """Sharma et al.'s attention penalty lambda * sum_i (1 - sum_t l_{t,i})^2, batch mean.

        It keeps the model from attending to one location at every step. Zero without attention.
        """
        if self._attention_weights is None:
            return self.fc.weight.new_zeros(())
        per_location = self._attention_weights.sum(dim=1)  # (B, K*K): total attention over time
        return self.attention_penalty * ((1 - per_location) ** 2).sum(dim=1).mean()


@register_model("lrcn")
def lrcn(*, num_classes: int, modality: str = "rgb", width: float = 1.0, dropout: float = 0.5,
         pretrained: str | None = None, backbone: str = "resnet18", hidden_size: int = 256,
         num_layers: int = 1, attention: bool = False, attention_penalty: float = 1.0,
         feature_dropout: float = 0.0) -> nn.Module:
    """LRCN (Donahue et al.) with an optional soft spatial attention (Sharma et al.).

    Donahue et al., "Long-term Recurrent Convolutional Networks for Visual Recognition and
    Description", CVPR 2015; Sharma et al., "Action Recognition using Visual Attention", 2015.
    The papers' inputs are 16-frame clips of 227x227 (CaffeNet) / 224x224 (GoogLeNet) crops.

    Args:
        modality: "rgb", "rgbdiff", or "flow" (one 2-channel flow field per step).
        width: scales the ResNet channels and the LSTM size together.
        dropout: on the LSTM's output (Donahue et al.: 0.5).
        feature_dropout: on each frame's CNN feature before the LSTM (Donahue et al.: 0.9, after fc6).
        pretrained: local torchvision checkpoint for the ResNet, or None.
    """
    if modality not in IN_CHANNELS:
        raise ValueError(f"lrcn supports modality in {sorted(IN_CHANNELS)}, got {modality!r}")
    cnn = resnet_features(backbone, width=width, in_channels=IN_CHANNELS[modality], weights=pretrained)
    return LRCN(cnn, num_classes=num_classes, hidden_size=scale_channels(hidden_size, width),
                num_layers=num_layers, attention=attention, attention_penalty=attention_penalty,
                dropout=dropout, feature_dropout=feature_dropout)
