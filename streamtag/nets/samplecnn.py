"""SampleCNN on raw waveform (Lee et al. 2017), the MagnaTagATune top-50 reproduction."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SampleCNN"]

# Channels of the nine conv-3 + max-pool-3 blocks. With the stride-3 first conv they divide
# 59049 = 3^10 samples down to 1. This list (one 128 block, seven 256, one 512) is the one that,
# with the final 1×1 conv of 512, gives the reproduction's ≈2.1 M parameters: 2,017,714 for 50
# tags. Lee et al.'s own 3^9 model has two 128 blocks and six 256 ones (1.87 M).
BLOCK_CHANNELS = (128, 256, 256, 256, 256, 256, 256, 256, 512)


class SampleCNN(nn.Module):
    """Sample-level deep CNN on raw waveform (Lee, Park, Kim and Nam 2017), "3^9 model".

    A conv of size 3 and stride 3 with 128 channels (batch norm, ReLU); nine blocks of conv-3
    (padding 1), batch norm, ReLU and max-pool 3 with ``BLOCK_CHANNELS``; a 1×1 conv with 512
    channels (batch norm, ReLU); global max pooling (a single position at the default input);
    dropout 0.5; a dense layer to the tags (logits).

    Input: ``(batch, samples)`` waveform at 22.05 kHz (the MagnaTagATune setup), default and
    minimum 59,049 samples (3^10, ≈2.7 s). Longer windows leave several positions, max-pooled.

    Options: ``dropout`` (0.5).
    """

    input_kind = "waveform"
    default_input = (59049,)
    min_input = (59049,)

    def __init__(self, n_tags: int, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv1d(1, 128, 3, stride=3),
            nn.BatchNorm1d(128),
            nn.ReLU(),
        ]
        in_channels = 128
        for channels in BLOCK_CHANNELS:
            layers += [
                nn.Conv1d(in_channels, channels, 3, padding=1),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.MaxPool1d(3),
            ]
            in_channels = channels
        layers += [nn.Conv1d(in_channels, 512, 1), nn.BatchNorm1d(512), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(512, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x.unsqueeze(1)).amax(dim=2)
        return self.dense(self.dropout(x))
