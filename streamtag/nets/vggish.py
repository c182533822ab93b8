"""The VGG-ish FCN baseline of the MediaEval 2019 Emotion and Theme task (MTG-Jamendo)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGGish"]

CHANNELS = (64, 128, 128, 128, 64)
POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))


class VGGish(nn.Module):
    """VGG-ish baseline of MediaEval 2019 "Emotion and Theme Recognition in Music Using Jamendo".

    Bogdanov et al., MediaEval 2019 task overview; the task's released baseline. Batch norm on
    the input, then five 3×3 convolutions with 64/128/128/128/64 channels, each followed by batch
    norm, ELU and max-pooling (2,4), (2,4), (2,4), (3,5), (4,4); dropout; one dense layer to the
    tags. Returns logits (the baseline's sigmoid belongs to the loss or the caller).

    Input: ``(batch, 96, 1366)`` log-mel. The pools shrink 96 × 1280 to 1 × 1, so that is the
    smallest window; more mels or frames leave a larger map, which is max-pooled globally (at
    96 × 1366 the map is already 1 × 1, as in the baseline).

    Options: ``dropout`` (0.5).
    """

    input_kind = "logmel"
    default_input = (96, 1366)
    min_input = (96, 1280)

    def __init__(self, n_tags: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.input_bn = nn.BatchNorm2d(1)
        layers: list[nn.Module] = []
        in_channels = 1
        for channels, pool in zip(CHANNELS, POOLS, strict=True):
            layers += [
                nn.Conv2d(in_channels, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
                nn.ELU(),
                nn.MaxPool2d(pool),
            ]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(in_channels, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_bn(x.unsqueeze(1)))
        x = x.amax(dim=(2, 3))
        return self.dense(self.dropout(x))

    def rf_path(self) -> list[nn.Module]:
        """Convolutions and pools in the order the input meets them (for ``receptive_field``)."""
        return [m for m in self.features if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
