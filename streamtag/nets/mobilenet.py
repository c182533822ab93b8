"""MobileNetV2 per 256-frame segment, alone or with self-attention over 16 segments (AMLAG team)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MobileNetV2Tagger", "MobileNetV2Attention", "mobilenet_v2_body", "two_head_loss"]

# MobileNetV2 inverted-residual stages at width 1.0: expansion t, channels c, repeats n, stride s.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
SEGMENT_FEATURES = 256
PROBABILITY_EPS = 1e-6


def _conv_bn_relu6(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expand (1×1), depthwise 3×3, project (1×1, linear); residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


def mobilenet_v2_body() -> nn.Sequential:
    """The MobileNetV2 feature extractor (Sandler et al. 2018), width 1.0, 3 → 1280 channels.

    Stem 3×3 conv with 32 channels and stride 2, the 17 inverted residuals of
    ``INVERTED_RESIDUAL_SETTING``, a 1×1 conv to 1280; overall stride 32. The module layout (and
    so the state-dict keys) is that of torchvision's ``mobilenet_v2().features``, so ImageNet
    weights saved from it load into this body.
    """
    layers: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, stride=2)]
    in_channels = 32
    for expansion, channels, repeats, stride in INVERTED_RESIDUAL_SETTING:
        for i in range(repeats):
            layers.append(
                InvertedResidual(in_channels, channels, stride if i == 0 else 1, expansion)
            )
            in_channels = channels
    layers.append(_conv_bn_relu6(in_channels, 1280, 1))
    body = nn.Sequential(*layers)
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return body


class _SegmentEncoder(nn.Module):
    """Log-mel segment → one 256-vector: 1×1 convs to 3 "colour" channels, MobileNetV2, conv
    1280→512 (3×3, valid) and 512→256 (1×1), global max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.to_rgb = nn.Sequential(
            nn.BatchNorm2d(1),
            nn.Conv2d(1, 10, 1),
            nn.ReLU(),
            nn.Conv2d(10, 3, 1),
            nn.ReLU(),
        )
        self.body = mobilenet_v2_body()
        self.reduce = nn.Sequential(
            nn.Conv2d(1280, 512, 3),
            nn.ReLU(),
            nn.Conv2d(512, SEGMENT_FEATURES, 1),
            nn.ReLU(),
        )

    def load_body_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
        """Load MobileNetV2 body weights (e.g. ImageNet ones).

        Takes the body's own state dict, or a whole torchvision ``mobilenet_v2`` state dict: its
        ``features.*`` entries are used and its classifier is ignored. Returns what
        ``load_state_dict`` returns.
        """
        if any(key.startswith("features.") for key in state_dict):
            prefix = len("features.")
            state_dict = {k[prefix:]: v for k, v in state_dict.items() if k.startswith("features.")}
        return self.body.load_state_dict(state_dict, strict=strict)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, n_mels, frames)`` → ``(n, 256)``."""
        x = self.reduce(self.body(self.to_rgb(x.unsqueeze(1))))
        return x.amax(dim=(2, 3))


class MobileNetV2Tagger(_SegmentEncoder):
    """MobileNetV2 segment tagger of Sukhavasi and Adapa (team AMLAG), MediaEval 2019, run 1.

    "Music theme recognition using CNN and self-attention". Batch norm on the input, 1×1 convs
    1 → 10 → 3 channels (so an ImageNet MobileNetV2 can be used), the MobileNetV2 body, conv
    1280 → 512 (3×3) and 512 → 256 (1×1) with ReLU, global max pooling to one 256-vector, dropout
    and a dense layer to the tags (logits).

    The body trains from scratch here; ``load_body_state_dict`` loads ImageNet (or any) weights
    for ``self.body``.

    Input: ``(batch, n_mels, frames)``, default 96 × 256 (one segment). The body divides both
    axes by 32 and the 3×3 conv needs 3 positions, so the smallest window is 65 × 65.

    Options: ``dropout`` (0.2, before the dense layer).
    """

    input_kind = "logmel"
    default_input = (96, 256)
    min_input = (65, 65)

    def __init__(self, n_tags: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(SEGMENT_FEATURES, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.dropout(self.embed(x)))


def _sinusoid_positions(n_positions: int, dim: int) -> torch.Tensor:
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table.float()


class _BertLayer(nn.Module):
    """Post-norm transformer encoder layer as in BERT (separate attention and hidden dropout)."""

    def __init__(
        self,
        hidden: int,
        n_heads: int,
        intermediate: int,
        attention_dropout: float,
        hidden_dropout: float,
    ) -> None:
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = hidden // n_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.hidden_dropout = nn.Dropout(hidden_dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        q = self._heads(self.query(x))
        k = self._heads(self.key(x))
        v = self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = self.attention_dropout(torch.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).transpose(1, 2).reshape(batch, length, hidden)
        x = self.attention_norm(x + self.hidden_dropout(self.attention_out(context)))
        h = self.output(F.gelu(self.intermediate(x)))
        return self.output_norm(x + self.hidden_dropout(h))


class _SegmentAttention(nn.Module):
    """A learned first token, sinusoidal positions, BERT layers; the first token's output goes
    through the BERT pooler (dense + tanh), dropout and a dense layer to the tags."""

    def __init__(
        self,
        n_tags: int,
        max_segments: int,
        n_layers: int,
        n_heads: int,
        intermediate: int,
        attention_dropout: float,
        hidden_dropout: float,
    ) -> None:
        super().__init__()
        hidden = SEGMENT_FEATURES
        self.first_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.register_buffer(
            "positions", _sinusoid_positions(max_segments + 1, hidden), persistent=False
        )
        self.layers = nn.ModuleList(
            _BertLayer(hidden, n_heads, intermediate, attention_dropout, hidden_dropout)
            for _ in range(n_layers)
        )
        self.pooler = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(hidden_dropout)
        self.out = nn.Linear(hidden, n_tags)

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        first = self.first_token.expand(segments.size(0), -1, -1)
        x = torch.cat([first, segments], dim=1)
        x = x + self.positions[: x.size(1)]
        for layer in self.layers:
            x = layer(x)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.out(self.dropout(pooled))


class MobileNetV2Attention(_SegmentEncoder):
    """MobileNetV2 + self-attention over segments, Sukhavasi and Adapa (AMLAG), MediaEval 2019.

    Their run 2 of "Music theme recognition using CNN and self-attention". The window is cut into
    segments of ``segment_frames`` (256) frames; each goes through the segment model of
    ``MobileNetV2Tagger`` (without its dense layer) to a 256-vector. Two heads read the sequence
    of segment vectors:

    - attention head: a learned first token ([CLS]-like) and sinusoidal positions, a BERT-style
      encoder (2 layers, hidden 256, 4 heads, intermediate 1024 with GELU, dropout 0.1 on
      attention probabilities and 0.2 on hidden states, post-norm), then the first token's
      output through a dense layer with tanh, dropout 0.2 and a dense layer to the tags (the
      authors pooled the first segment's output instead of a learned token);
    - segment head: dropout, dense 256, dropout, dense to the tags on every segment, and the mean
      of the segments' probabilities.

    ``forward_heads(x)`` gives both heads' logits for training (``two_head_loss`` averages their
    binary cross-entropies, the paper's combined loss). ``forward(x)`` gives logits whose sigmoid
    is the mean of the two heads' probabilities, for inference.

    Input: ``(batch, n_mels, frames)`` with ``frames`` a multiple of ``segment_frames`` of at most
    ``n_segments`` segments; default 96 × 4096 (16 segments). Segments need at least 65 frames
    and 65 mels.

    Options: ``segment_frames`` (256), ``n_segments`` (16, the most segments a window may hold),
    ``n_layers`` (2), ``n_heads`` (4), ``intermediate`` (1024), ``attention_dropout`` (0.1),
    ``hidden_dropout`` (0.2).
    """

    input_kind = "logmel"
    default_input = (96, 4096)
    min_input = (65, 256)

    def __init__(
        self,
        n_tags: int,
        segment_frames: int = 256,
        n_segments: int = 16,
        n_layers: int = 2,
        n_heads: int = 4,
        intermediate: int = 1024,
        attention_dropout: float = 0.1,
        hidden_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if segment_frames < 65:
            raise ValueError(f"segment_frames must be >= 65, got {segment_frames}")
        if n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {n_segments}")
        self.segment_frames = segment_frames
        self.n_segments = n_segments
        self.probability_eps = PROBABILITY_EPS
        self.attention_head = _SegmentAttention(
            n_tags, n_segments, n_layers, n_heads, intermediate, attention_dropout, hidden_dropout
        )
        self.segment_head = nn.Sequential(
            nn.Dropout(hidden_dropout),
            nn.Linear(SEGMENT_FEATURES, SEGMENT_FEATURES),
            nn.Dropout(hidden_dropout),
            nn.Linear(SEGMENT_FEATURES, n_tags),
        )

    @torch.jit.export
    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(batch, n_tags)`` of the attention head and of the segment-average head."""
        batch, n_mels, frames = x.shape
        count = frames // self.segment_frames
        if count < 1 or count > self.n_segments or count * self.segment_frames != frames:
            raise ValueError(
                "mobilenet_attn needs a whole number of segments, at most n_segments of them"
            )
        segments = (
            x.reshape(batch, n_mels, count, self.segment_frames)
            .permute(0, 2, 1, 3)
            .reshape(batch * count, n_mels, self.segment_frames)
        )
        vectors = self.embed(segments).view(batch, count, -1)
        attention_logits = self.attention_head(vectors)
        segment_probs = torch.sigmoid(self.segment_head(vectors)).mean(dim=1)
        return attention_logits, torch.logit(segment_probs, eps=self.probability_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention_logits, average_logits = self.forward_heads(x)
        probs = 0.5 * (torch.sigmoid(attention_logits) + torch.sigmoid(average_logits))
        return torch.logit(probs, eps=self.probability_eps)


def two_head_loss(heads: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Mean of the two heads' binary cross-entropies (``MobileNetV2Attention.forward_heads``)."""
    attention_logits, average_logits = heads
    targets = targets.to(attention_logits.dtype)
    return 0.5 * (
        F.binary_cross_entropy_with_logits(attention_logits, targets)
        + F.binary_cross_entropy_with_logits(average_logits, targets)
    )
