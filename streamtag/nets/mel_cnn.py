"""Four-layer mel-spectrogram CNN of the MagnaTagATune top-50 reproduction (its Table 2)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MelCNN"]

CHANNELS = (32, 64, 64, 64)


def _flat_size(n_mels: int, n_frames: int) -> int:
    for _ in CHANNELS:
        n_mels, n_frames = (n_mels - 2) // 2, (n_frames - 2) // 2
    if n_mels < 1 or n_frames < 1:
        raise ValueError("mel_cnn needs at least 46 mels and 46 frames")
    return CHANNELS[-1] * n_mels * n_frames


class MelCNN(nn.Module):
    """Small 2-D CNN on log-mel spectrograms, MagnaTagATune top-50 reproduction (Table 2).

    Four blocks of a 3×3 "valid" convolution with bias and ReLU, batch norm, 2×2 max-pooling and
    dropout 0.1, with 32/64/64/64 channels; flatten; a dense layer to the tags (logits). This is
    the Keras ``Conv2D(activation="relu")``, ``BatchNormalization``, ``MaxPooling2D``,
    ``Dropout`` stack; at 128 × 261 it has 362,418 parameters counted as Keras counts them
    (batch-norm moving mean and variance included, see ``keras_param_count``):

    - convs: 320 + 18,496 + 36,928 + 36,928 = 92,672
    - batch norms: 4 × (32 + 64 + 64 + 64) = 896
    - dense: 128×261 → 126×259 → 63×129 → 61×127 → 30×63 → 28×61 → 14×30 → 12×28 → 6×14, so
      64 × 6 × 14 = 5,376 inputs; 5,376 × 50 + 50 = 268,850

    Input: ``(batch, n_mels, n_frames)``, exactly the size it was built for (the dense layer
    fixes it); default 128 × 261.

    Options: ``n_mels`` (128), ``n_frames`` (261), ``dropout`` (0.1).
    """

    input_kind = "logmel"
    default_input = (128, 261)
    min_input = (128, 261)

    def __init__(
        self, n_tags: int, n_mels: int = 128, n_frames: int = 261, dropout: float = 0.1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for channels in CHANNELS:
            layers += [
                nn.Conv2d(in_channels, channels, 3),
                nn.ReLU(),
                nn.BatchNorm2d(channels),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            ]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.dense = nn.Linear(_flat_size(n_mels, n_frames), n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(x.unsqueeze(1)).flatten(1))

    def rf_path(self) -> list[nn.Module]:
        """Convolutions and pools in the order the input meets them (for ``receptive_field``)."""
        return [m for m in self.features if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
