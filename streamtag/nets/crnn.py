"""CRNN of the Innsbruck team (TaiInn, MediaEval 2019): four conv blocks, two GRUs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CRNN"]

CHANNELS = (64, 128, 128, 128)
POOLS = (2, 3, 4, 4)


class CRNN(nn.Module):
    """Convolutional recurrent network of Mayerl, Vötter, Hung et al., MediaEval 2019.

    "Recognizing Song Mood and Theme Using Convolutional Recurrent Neural Networks" (team TaiInn,
    Universität Innsbruck), after Choi et al.'s CRNN. The input is zero-padded by 37 frames on
    each side (1366 → 1440 frames); four blocks of 3×3 convolution, batch norm, ELU, max-pooling
    (2,2), (3,3), (4,4), (4,4) and dropout 0.1 with 64/128/128/128 channels leave 1 × 15 positions
    of 128 features; two GRUs of 32 units; dropout 0.3; a dense layer to the tags (logits).

    Options:

    - ``attention`` (False): the second GRU returns its sequence and a learned score per time step
      (dense layer, softmax over time) pools it — runs 3 and 5. Otherwise its last state is used.
    - ``n_features`` (0): K high-level features (the runs used AcousticBrainz/Essentia
      descriptors) are concatenated to the pooled GRU output and go through a dense layer of 128
      units with tanh before the output layer — runs 4 and 5. ``forward(x, features)`` then needs
      a ``(batch, K)`` tensor.
    - ``n_mels`` (96): decides the GRU input size (128 × n_mels // 96 features per step).
    - ``pad_frames`` (37), ``gru_units`` (32), ``dropout`` (0.3, after the GRUs).

    Input: ``(batch, n_mels, frames)``, default 96 × 1366. Any window with at least 96 mels and
    22 frames works (the padding brings 22 frames to the 96 the pools need).
    """

    input_kind = "logmel"
    default_input = (96, 1366)
    min_input = (96, 22)

    def __init__(
        self,
        n_tags: int,
        n_mels: int = 96,
        attention: bool = False,
        n_features: int = 0,
        pad_frames: int = 37,
        gru_units: int = 32,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        freq = n_mels
        for pool in POOLS:
            freq //= pool
        if freq < 1:
            raise ValueError(f"crnn needs n_mels >= 96, got {n_mels}")
        if n_features < 0:
            raise ValueError(f"n_features must be >= 0, got {n_features}")
        self.pad_frames = pad_frames
        self.attention = attention
        self.n_features = n_features

        layers: list[nn.Module] = []
        in_channels = 1
        for channels, pool in zip(CHANNELS, POOLS, strict=True):
            layers += [
                nn.Conv2d(in_channels, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
                nn.ELU(),
                nn.MaxPool2d(pool),
                nn.Dropout(0.1),
            ]
            in_channels = channels
        self.conv = nn.Sequential(*layers)
        self.gru1 = nn.GRU(in_channels * freq, gru_units, batch_first=True)
        self.gru2 = nn.GRU(gru_units, gru_units, batch_first=True)
        # Unused layers are Identity so that TorchScript can compile both branches of forward.
        self.attention_score = nn.Linear(gru_units, 1) if attention else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        if n_features > 0:
            self.fuse = nn.Linear(gru_units + n_features, 128)
            self.out = nn.Linear(128, n_tags)
        else:
            self.fuse = nn.Identity()
            self.out = nn.Linear(gru_units, n_tags)

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        x = F.pad(x.unsqueeze(1), (self.pad_frames, self.pad_frames))
        x = self.conv(x)
        batch, channels, freq, frames = x.shape
        seq = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * freq)
        seq, _ = self.gru1(seq)
        seq, last = self.gru2(seq)
        if self.attention:
            weights = torch.softmax(self.attention_score(seq), dim=1)
            h = (weights * seq).sum(dim=1)
        else:
            h = last[0]
        h = self.dropout(h)
        if self.n_features > 0:
            if features is None:
                raise ValueError("this crnn was built with n_features > 0: pass features")
            h = torch.tanh(self.fuse(torch.cat([h, features], dim=1)))
        elif features is not None:
            raise ValueError("this crnn was built with n_features=0: it takes no features")
        return self.out(h)
