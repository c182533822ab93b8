"""Stacked bidirectional LSTMs and 1-D convs of the MagnaTagATune top-50 reproduction (Table 3)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LSTMTagger"]


class _KerasLSTM(nn.Module):
    """Bidirectional LSTM with one bias vector per gate, as Keras has (PyTorch's has two).

    The bias is the last input column of an LSTM without biases, fed a constant 1: the gates
    compute the same function as Keras's, and the parameters are exactly Keras's,
    4 × units × (inputs + units + 1) per direction.
    """

    def __init__(self, input_size: int, units: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size + 1, units, batch_first=True, bidirectional=True, bias=False)
        with torch.no_grad():
            # Keras's initial bias: zeros, with the forget gate (PyTorch order i, f, g, o) at 1.
            for weight in (self.lstm.weight_ih_l0, self.lstm.weight_ih_l0_reverse):
                weight[:, -1] = 0.0
                weight[units : 2 * units, -1] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(x.size(0), x.size(1), 1, dtype=x.dtype, device=x.device)
        out, _ = self.lstm(torch.cat([x, ones], dim=2))
        return out


class LSTMTagger(nn.Module):
    """Recurrent tagger of the MagnaTagATune top-50 reproduction (Table 3).

    Two bidirectional LSTMs of 100 units returning sequences, three 1-D convolutions of 50
    filters (kernel 3, valid, ReLU) over time, flatten, a dense layer to the tags (logits). At
    128 mels × 227 frames it has 1,021,700 parameters, as in Keras:

    - LSTM 1: 2 × 4 × 100 × (128 + 100 + 1) = 183,200
    - LSTM 2: 2 × 4 × 100 × (200 + 100 + 1) = 240,800
    - convs: (3 × 200 × 50 + 50) + 2 × (3 × 50 × 50 + 50) = 30,050 + 15,100 = 45,150
    - dense: 227 → 225 → 223 → 221 steps, 221 × 50 = 11,050 inputs; 11,050 × 50 + 50 = 552,550

    Keras LSTMs have one bias per gate where PyTorch's have two, so ``_KerasLSTM`` carries the
    bias as a weight column on a constant input: the same function and the same trainable
    parameter count, 1,021,700 (no batch norm, so ``keras_param_count`` agrees).

    Input: ``(batch, n_mels, n_frames)`` (mels first, as every log-mel model here), exactly the
    size it was built for (the dense layer fixes it); default 128 × 227.

    Options: ``n_mels`` (128), ``n_frames`` (227), ``units`` (100), ``filters`` (50).
    """

    input_kind = "logmel"
    default_input = (128, 227)
    min_input = (128, 227)

    def __init__(
        self,
        n_tags: int,
        n_mels: int = 128,
        n_frames: int = 227,
        units: int = 100,
        filters: int = 50,
    ) -> None:
        super().__init__()
        steps = n_frames - 3 * 2
        if steps < 1:
            raise ValueError(f"lstm needs n_frames >= 7, got {n_frames}")
        self.lstm1 = _KerasLSTM(n_mels, units)
        self.lstm2 = _KerasLSTM(2 * units, units)
        self.conv = nn.Sequential(
            nn.Conv1d(2 * units, filters, 3),
            nn.ReLU(),
            nn.Conv1d(filters, filters, 3),
            nn.ReLU(),
            nn.Conv1d(filters, filters, 3),
            nn.ReLU(),
        )
        self.dense = nn.Linear(filters * steps, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.lstm2(self.lstm1(x.transpose(1, 2)))
        return self.dense(self.conv(seq.transpose(1, 2)).flatten(1))
