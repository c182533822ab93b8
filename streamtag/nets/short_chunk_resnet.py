"""Short-chunk CNN with residual connections (Won et al. 2020), the natural streaming model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ShortChunkResNet"]

CHANNELS = (128, 128, 256, 256, 256, 256, 512)


class ResBlock2d(nn.Module):
    """conv 3×3 (stride s), BN, ReLU, conv 3×3, BN, plus the input (through a 3×3 conv of stride
    s and BN when the stride or width changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class ShortChunkResNet(nn.Module):
    """Short-chunk CNN + residual connections of Won, Ferraro, Bogdanov and Serra (2020).

    "Evaluation of CNN-based automatic music tagging models" (SMC 2020): the best model on
    MTG-Jamendo top-50 there (ROC-AUC 0.832, PR-AUC 0.295). Batch norm on the input; seven
    residual blocks of 3×3 convolutions with 128/128/256/256/256/256/512 channels, each halving
    both axes; global max pooling over what is left of frequency and time; dense 512, batch
    norm, ReLU, dropout 0.5; a dense layer to the tags (logits).

    ``downsample="stride"`` (default) halves the axes as the authors' code does, with stride 2
    in the block's first conv and in its 3×3 shortcut conv. ``downsample="maxpool"`` keeps the
    blocks at stride 1 and follows each with 2×2 max-pooling, the short-chunk CNN's pooling.

    Input: ``(batch, 128, frames)``. Default 128 × 231: the paper's 59,049-sample chunks (3.69 s)
    at 16 kHz with n_fft 512 and hop 256 give 1 + 59049 // 256 = 231 centred frames. With
    strides any window works (≥ 1 × 1); with max-pooling at least 128 × 128.

    Options: ``downsample`` ("stride"), ``dropout`` (0.5).
    """

    input_kind = "logmel"
    default_input = (128, 231)
    min_input = (1, 1)

    def __init__(self, n_tags: int, downsample: str = "stride", dropout: float = 0.5) -> None:
        super().__init__()
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f'downsample must be "stride" or "maxpool", got {downsample!r}')
        stride = 2 if downsample == "stride" else 1
        self.input_bn = nn.BatchNorm2d(1)
        layers: list[nn.Module] = []
        in_channels = 1
        for channels in CHANNELS:
            layers.append(ResBlock2d(in_channels, channels, stride))
            if downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            in_channels = channels
        self.blocks = nn.Sequential(*layers)
        self.dense1 = nn.Linear(in_channels, in_channels)
        self.bn = nn.BatchNorm1d(in_channels)
        self.dropout = nn.Dropout(dropout)
        self.dense2 = nn.Linear(in_channels, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.input_bn(x.unsqueeze(1))).amax(dim=(2, 3))
        x = self.dropout(F.relu(self.bn(self.dense1(x))))
        return self.dense2(x)

    def rf_path(self) -> list[nn.Module]:
        """Convolutions and pools along the longest path (for ``receptive_field``)."""
        path: list[nn.Module] = []
        for m in self.blocks:
            if isinstance(m, ResBlock2d):
                path += [m.conv1, m.conv2]
            else:
                path.append(m)
        return path
