"""musicnn and its VGG baseline (Pons & Serra, ISMIR 2019 late-breaking demo).

Both are laid out so that the published TensorFlow checkpoints map onto them one tensor to one
tensor (``streamtag.catalog.musicnn``); the TensorFlow conventions that matter are noted where
they apply. TensorFlow's ``tf.layers`` batch norm uses epsilon 1e-3 and momentum 0.99, i.e.
PyTorch momentum 0.01.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MusiCNN", "MusicnnPair", "MusiCNNVGG"]

_BN_EPS = 1e-3  # tf.layers.batch_normalization's default
_BN_MOMENTUM = 0.01  # PyTorch's convention for TensorFlow's momentum 0.99

TIMBRAL_HEIGHTS = (0.4, 0.7)  # timbral filters span these fractions of the mel bands
TEMPORAL_LENGTHS = (128, 64, 32)  # temporal filters span this many frames


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _bn1d(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _same_time_padding(length: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding along time for stride 1: the odd frame of an even kernel
    goes after (more padding at the end), unlike PyTorch's symmetric ``padding="same"``."""
    before = (length - 1) // 2
    return before, length - 1 - before


class _PooledConv(nn.Module):
    """Conv (with bias), ReLU, batch norm, then the maximum over all mel bands: (b, c, frames).

    ``time_padding`` zero-pads the frames (before, after) on the normalised input, as musicnn
    pads before its 'valid' timbral convolutions and as TensorFlow's 'same' pads the temporal
    ones."""

    def __init__(self, channels: int, kernel: tuple[int, int],
                 time_padding: tuple[int, int]) -> None:
        super().__init__()
        self.time_padding = time_padding
        self.conv = nn.Conv2d(1, channels, kernel)
        self.bn = _bn2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, self.time_padding[0], self.time_padding[1]))
        return self.bn(F.relu(self.conv(x))).amax(dim=3)


class _MidEndLayer(nn.Module):
    """A 1-D convolution of 7 frames over every channel, ReLU, batch norm (musicnn's mid-end
    layer: a 2-D convolution as wide as its input, which is a 1-D one)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, channels, 7, padding=3)
        self.bn = _bn1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class MusiCNN(nn.Module):
    """musicnn: a musically motivated front end, a dense 1-D mid-end, temporal pooling.

    Pons & Serra, "musicnn: pre-trained convolutional neural networks for music audio
    tagging", ISMIR 2019 late-breaking demo. Input ``(batch, n_mels, frames)`` log-mel
    (musicnn's features: the ``musicnn`` frontend preset), returns tag logits.

    - input batch norm (one channel);
    - front end: timbral filters of 7 frames × 40 % and × 70 % of the mel bands
      (``int(frontend_width × 128)`` each, the frames zero-padded by 3 so the length stays)
      and temporal filters of 128, 64 and 32 frames × 1 band (``int(frontend_width × 32)``
      each, TensorFlow 'same' padding); each conv has ReLU then batch norm and is max-pooled
      over all bands; the five maps are concatenated along channels;
    - mid-end: three 7-frame 1-D convolutions of ``midend_filters`` channels with ReLU and batch
      norm, the second and third with a residual connection; the front end and the three
      outputs are concatenated (the dense connection);
    - back end: per channel the maximum and the mean over frames, interleaved
      (max₀, mean₀, max₁, …, as TensorFlow's concat and flatten lay them out), batch norm,
      dropout, a dense layer of ``backend_units`` with ReLU, batch norm, dropout, the dense
      output layer.

    Any number of frames works (the back end pools over time); the published models saw 187
    (3 s at 16 kHz, hop 256). The published MTT and MSD models use the defaults; the "big" MSD
    model has ``midend_filters=512, backend_units=500``. With the defaults and 50 tags it has
    792,079 parameters (batch-norm statistics included, as ``keras_param_count`` counts).

    Options: ``n_mels`` (96: sets the timbral filter heights), ``frontend_width`` (1.6),
    ``midend_filters`` (64), ``backend_units`` (200), ``dropout`` (0.5).
    """

    input_kind = "logmel"
    default_input = (96, 187)
    min_input = (96, 1)

    def __init__(self, n_tags: int, n_mels: int = 96, frontend_width: float = 1.6,
                 midend_filters: int = 64, backend_units: int = 200,
                 dropout: float = 0.5) -> None:
        super().__init__()
        heights = [int(fraction * n_mels) for fraction in TIMBRAL_HEIGHTS]
        if min(heights) < 1:
            raise ValueError(f"musicnn needs at least 3 mel bands, got n_mels={n_mels}")
        timbral_filters = int(frontend_width * 128)
        temporal_filters = int(frontend_width * 32)
        if temporal_filters < 1:
            raise ValueError(f"frontend_width {frontend_width} leaves no temporal filters; "
                             "use at least 1/32")
        self.input_bn = _bn2d(1)
        self.timbral = nn.ModuleList(
            [_PooledConv(timbral_filters, (7, height), (3, 3)) for height in heights])
        self.temporal = nn.ModuleList(
            [_PooledConv(temporal_filters, (length, 1), _same_time_padding(length))
             for length in TEMPORAL_LENGTHS])
        frontend_channels = len(heights) * timbral_filters \
            + len(TEMPORAL_LENGTHS) * temporal_filters
        self.midend = nn.ModuleList([
            _MidEndLayer(frontend_channels, midend_filters),
            _MidEndLayer(midend_filters, midend_filters),
            _MidEndLayer(midend_filters, midend_filters),
        ])
        pooled = 2 * (frontend_channels + 3 * midend_filters)
        self.pool_bn = _bn1d(pooled)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(pooled, backend_units)
        self.dense_bn = _bn1d(backend_units)
        self.output = nn.Linear(backend_units, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, mels, frames) -> (batch, 1, frames, mels): TensorFlow's NHWC image had
        # frames as height and mels as width, and the kernels are laid out that way.
        x = self.input_bn(x.transpose(1, 2).unsqueeze(1))
        maps: list[torch.Tensor] = []
        for block in self.timbral:
            maps.append(block(x))
        for block in self.temporal:
            maps.append(block(x))
        frontend = torch.cat(maps, dim=1)  # (batch, channels, frames)
        features = [frontend]
        y = frontend
        for i, layer in enumerate(self.midend):
            out = layer(y)
            y = out if i == 0 else out + y
            features.append(y)
        dense = torch.cat(features, dim=1)
        pooled = torch.stack([dense.amax(dim=2), dense.mean(dim=2)], dim=2).flatten(1)
        hidden = self.dense_bn(F.relu(self.dense(self.dropout(self.pool_bn(pooled)))))
        return self.output(self.dropout(hidden))


VGG_POOLS = ((4, 1), (2, 2), (2, 2), (2, 2), (4, 4))  # (frames, mels); strides below
VGG_STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (4, 4))


def _vgg_map_size(n_mels: int, n_frames: int) -> tuple[int, int]:
    frames, mels = n_frames, n_mels
    for (pool_t, pool_f), (stride_t, stride_f) in zip(VGG_POOLS, VGG_STRIDES, strict=True):
        frames = (frames - pool_t) // stride_t + 1
        mels = (mels - pool_f) // stride_f + 1
        if frames < 1 or mels < 1:
            raise ValueError(f"musicnn_vgg's pools need at least 63 mels and 66 frames, got "
                             f"{n_mels} x {n_frames}")
    return frames, mels


class MusiCNNVGG(nn.Module):
    """The VGG-like baseline published with musicnn (Pons & Serra 2019).

    Input batch norm, then five 3×3 convolutions ('same' padding, ``filters`` channels, ReLU,
    batch norm) each max-pooled ((4,1) stride 2, then 2×2 three times, then 4×4; (frames, mels),
    'valid'), with dropout 0.25 between blocks; flatten in TensorFlow's (frames, mels, channels)
    order; dropout 0.5; one dense layer to the tags (logits). With the defaults and 50 tags it
    has 607,030 parameters (batch-norm statistics included).

    Input: ``(batch, n_mels, n_frames)``, exactly the size it was built for (the dense layer
    fixes it); default 96 × 187 (3 s of musicnn features).

    Options: ``n_mels`` (96), ``n_frames`` (187), ``filters`` (128), ``dropout`` (0.25, between
    blocks), ``dense_dropout`` (0.5).
    """

    input_kind = "logmel"
    default_input = (96, 187)
    min_input = (96, 187)

    def __init__(self, n_tags: int, n_mels: int = 96, n_frames: int = 187, filters: int = 128,
                 dropout: float = 0.25, dense_dropout: float = 0.5) -> None:
        super().__init__()
        frames, mels = _vgg_map_size(n_mels, n_frames)
        self.input_bn = _bn2d(1)
        layers: list[nn.Module] = []
        in_channels = 1
        for i, (pool, stride) in enumerate(zip(VGG_POOLS, VGG_STRIDES, strict=True)):
            if i > 0:
                layers.append(nn.Dropout(dropout))
            layers += [
                nn.Conv2d(in_channels, filters, 3, padding=1),  # 'same' is symmetric for 3
                nn.ReLU(),
                _bn2d(filters),
                nn.MaxPool2d(pool, stride),
            ]
            in_channels = filters
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dense_dropout)
        self.dense = nn.Linear(filters * frames * mels, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_bn(x.transpose(1, 2).unsqueeze(1))  # (batch, 1, frames, mels)
        x = self.features(x)
        # TensorFlow flattened (batch, frames, mels, channels); the dense kernel expects that.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.dense(self.dropout(x))



class MusicnnPair(nn.Module):
    """Two musicnn networks on one input, their tag lists merged into one: a tag both name
    scores the mean of their probabilities, every other tag its own network's.

    ``first`` and ``second`` are ``MusiCNN`` networks of ``first_tags`` and ``second_tags``
    outputs with the same options; ``first_mix`` (``first_tags`` × ``n_tags``) and
    ``second_mix`` place their probabilities in the merged list (weights 1, or 1/2 for a tag
    of both), set by whoever loads the weights. Returns the merged probabilities' logits, so
    that the model file's sigmoid gives them back (within float32 rounding).
    """

    input_kind = "logmel"
    default_input = MusiCNN.default_input
    min_input = MusiCNN.min_input

    def __init__(self, n_tags: int, first_tags: int = 50, second_tags: int = 50,
                 n_mels: int = 96, frontend_width: float = 1.6, midend_filters: int = 64,
                 backend_units: int = 200, dropout: float = 0.5) -> None:
        super().__init__()
        options = {"n_mels": n_mels, "frontend_width": frontend_width,
                   "midend_filters": midend_filters, "backend_units": backend_units,
                   "dropout": dropout}
        self.first = MusiCNN(first_tags, **options)
        self.second = MusiCNN(second_tags, **options)
        # until loaded: the first network's tags, then the second's, as far as n_tags goes
        first_mix, second_mix = torch.zeros(first_tags, n_tags), torch.zeros(second_tags, n_tags)
        for i in range(min(first_tags, n_tags)):
            first_mix[i, i] = 1.0
        for i in range(min(second_tags, max(0, n_tags - first_tags))):
            second_mix[i, first_tags + i] = 1.0
        self.register_buffer("first_mix", first_mix)
        self.register_buffer("second_mix", second_mix)

    def merge(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The merged probabilities of the two networks' probabilities."""
        return first @ self.first_mix + second @ self.second_mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = self.merge(torch.sigmoid(self.first(x)), torch.sigmoid(self.second(x)))
        # kept 1e-7 from 0 and 1 so that the logit is finite (as MeanOfProbabilities)
        return torch.logit(merged, eps=1e-7)
