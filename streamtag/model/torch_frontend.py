"""The log-mel frontend as a TorchScript module: GPU features and waveform-input model files.

``LogMelFrontend`` computes the frames of ``streamtag.frontend.compute_logmel`` with torch ops, for
a batch of signals at once, in the layout models take: ``(batch, samples)`` float32 in,
``(batch, n_mels, frames)`` out. The framing, the padding, the window and the log forms follow
``csrc/online_log_mel.cc`` step by step, and the mel filters are the C++ core's own matrix, so the
two differ only by float32 rounding in the FFT and the sums (a few thousandths of a dB).
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from torch import Tensor, nn

from streamtag.frontend import LogMelOptions, mel_filterbank

__all__ = ["LogMelFrontend", "frontend_options", "hann_window"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def hann_window(options: LogMelOptions) -> np.ndarray:
    """The analysis window ``(n_fft,)`` float32, the numbers the C++ core uses.

    Periodic Hann (``0.5 - 0.5 cos(2 pi n / N)``) or symmetric (``N - 1`` in the denominator) of
    ``win_length`` samples, computed in float64 and rounded once to float32, zero-padded to
    ``n_fft`` with ``(n_fft - win_length) // 2`` zeros on the left.
    """
    win = options.win_length or options.n_fft
    denominator = win - 1 if options.window == "hann_symmetric" else win
    n = np.arange(win, dtype=np.float64)
    values = 0.5 - 0.5 * np.cos(2.0 * math.pi * n / denominator) if denominator > 0 else np.ones(1)
    window = np.zeros(options.n_fft, dtype=np.float32)
    left = (options.n_fft - win) // 2
    window[left: left + win] = values.astype(np.float32)
    return window


class LogMelFrontend(nn.Module):
    """Log-mel frames of a batch of signals; scriptable with ``torch.jit.script``.

    ``forward(waveform)`` takes ``(batch, samples)`` (other float dtypes are converted to
    float32; NaN and infinite samples count as 0, as in ``OnlineLogMel``) and returns
    ``(batch, n_mels, num_frames_for(samples))`` float32 on the input's device. An empty signal
    gives 0 frames. The options travel with the module as ``options_json`` (read them back with
    ``frontend_options(module)``, also from a scripted or loaded module).
    """

    # The Python-side view of the options; TorchScript keeps options_json instead.
    __jit_unused_properties__ = ["options"]

    def __init__(self, options: LogMelOptions) -> None:
        super().__init__()
        if not isinstance(options, LogMelOptions):
            raise TypeError(f"options must be a LogMelOptions, got {type(options).__name__}")
        self.options_json: str = json.dumps(options.to_dict(), sort_keys=True)
        self.n_fft: int = options.n_fft
        self.hop_length: int = options.hop_length
        self.n_mels: int = options.n_mels
        self.pad: int = options.n_fft // 2 if options.center else 0
        self.reflect: bool = options.center and options.pad_mode == "reflect"
        self.magnitude: bool = options.power == 1.0
        self.apply_log: bool = options.log != "none"
        # Every log form as scale * ln(clamp(gain * x + offset, floor, FLOAT_MAX)), as in C++.
        self.log_scale: float = 1.0
        self.log_gain: float = 1.0
        self.log_offset: float = 0.0
        self.log_floor: float = float(options.amin)
        self.log_ceiling: float = _FLOAT32_MAX  # an overflowed power stays finite
        if options.log == "db":
            self.log_scale = float(options.db_multiplier) / math.log(10.0)
        elif options.log == "log1p":
            self.log_scale = 1.0 / math.log(10.0)
            self.log_gain = float(options.log1p_gain)
            self.log_offset = 1.0
            self.log_floor = 1.0
        self.register_buffer("window", torch.from_numpy(hann_window(options)))
        # The C++ core's filters, so both frontends apply the same numbers.
        self.register_buffer("mel_basis", torch.from_numpy(mel_filterbank(options)))

    @property
    def options(self) -> LogMelOptions:
        return frontend_options(self)

    @torch.jit.export
    def num_frames_for(self, num_samples: int) -> int:
        """Frames a signal of ``num_samples`` yields: ``OnlineLogMel.num_frames_for``."""
        if num_samples <= 0:
            return 0
        span = num_samples + 2 * self.pad - self.n_fft
        if span < 0:
            return 0
        return 1 + span // self.hop_length

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.dim() != 2:
            raise ValueError(
                "LogMelFrontend takes a (batch, samples) waveform, got a tensor with "
                + str(waveform.dim()) + " dimensions"
            )
        x = torch.nan_to_num(waveform.to(self.window.dtype), nan=0.0, posinf=0.0, neginf=0.0)
        frames = self.num_frames_for(x.size(1))
        if frames == 0:
            return x.new_zeros((x.size(0), self.n_mels, 0))
        if self.pad > 0:
            x = self._pad(x)
        spectrum = torch.stft(
            x, self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
            window=self.window, center=False, onesided=True, return_complex=True,
        )
        parts = torch.view_as_real(spectrum)
        power = parts[..., 0] * parts[..., 0] + parts[..., 1] * parts[..., 1]
        if self.magnitude:
            power = torch.sqrt(power)
        mels = torch.matmul(self.mel_basis, power)  # (batch, n_mels, frames)
        if not self.apply_log:
            return mels
        v = mels * self.log_gain + self.log_offset if self.log_offset != 0.0 else mels
        return torch.log(torch.clamp(v, min=self.log_floor, max=self.log_ceiling)) * self.log_scale

    def _pad(self, x: Tensor) -> Tensor:
        """``pad`` samples each side: zeros, or numpy's 'reflect' repeated as far as needed."""
        if not self.reflect:
            return nn.functional.pad(x, [self.pad, self.pad])
        length = x.size(1)
        index = torch.arange(-self.pad, length + self.pad, device=x.device)
        if length == 1:
            index = torch.zeros_like(index)
        else:
            # Mirrored about both end samples with period 2 (length - 1), like the C++ SampleAt;
            # torch's own reflect padding refuses pads longer than the signal.
            period = 2 * (length - 1)
            index = torch.remainder(index, period)
            index = torch.where(index >= length, period - index, index)
        return x.index_select(1, index)


def frontend_options(module: nn.Module) -> LogMelOptions:
    """The ``LogMelOptions`` of a ``LogMelFrontend``, eager, scripted or loaded from a file."""
    try:
        text = module.options_json
    except AttributeError:
        name = type(module).__name__
        raise TypeError(f"{name} is not a LogMelFrontend (it has no options_json)") from None
    return LogMelOptions.from_dict(json.loads(text))
