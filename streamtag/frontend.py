"""The log-mel frontend: options, the streaming extractor, the batch call and the frame ring.

A thin layer over the C++ extension ``streamtag._core``. ``LogMelOptions`` is the contract that a
model file carries (``to_dict``/``from_dict``), so the daemon and the trainer build identical
frontends from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from streamtag import _core
from streamtag._core import FrameRing

__all__ = [
    "FrameRing",
    "LogMelOptions",
    "OnlineLogMel",
    "compute_logmel",
    "mel_filterbank",
]


@dataclasses.dataclass(frozen=True)
class LogMelOptions:
    """Every number that decides the log-mel frames. Validated on construction.

    ``log`` is ``"db"`` (``db_multiplier * log10(max(amin, mel))``: 10 gives librosa's
    ``power_to_db(ref=1.0, top_db=None)``, 20 the MTG-Jamendo files), ``"log1p"``
    (``log10(1 + log1p_gain * mel)``, musicnn), ``"ln"`` (``ln(max(amin, mel))``) or ``"none"``.
    ``fmax=None`` means ``sample_rate / 2``; ``win_length=None`` means ``n_fft``.
    ``allow_empty_filters``: a mel filter that covers no FFT bin is an error unless this is
    set; it then gives a band of zeros, as librosa (with a warning) and torchaudio do.
    """

    sample_rate: float = 16000.0
    n_fft: int = 512
    win_length: int | None = None
    hop_length: int = 256
    window: str = "hann"
    center: bool = True
    pad_mode: str = "constant"
    n_mels: int = 96
    fmin: float = 0.0
    fmax: float | None = None
    mel_scale: str = "slaney"
    norm: str | None = "slaney"
    power: float = 2.0
    log: str = "db"
    amin: float = 1e-10
    db_multiplier: float = 10.0
    log1p_gain: float = 10000.0
    allow_empty_filters: bool = False

    def __post_init__(self) -> None:
        self._core_options().validate()  # ValueError naming the option

    @classmethod
    def preset(cls, name: str) -> LogMelOptions:
        """Options by name: ``mtg_jamendo``, ``musicnn``, ``librosa``, ``cp_jku``."""
        return cls._from_core(_core.LogMelOptions.preset(name))

    @staticmethod
    def preset_names() -> list[str]:
        return list(_core.LogMelOptions.preset_names())

    def replace(self, **changes: Any) -> LogMelOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogMelOptions:
        """Inverse of ``to_dict``; an unknown key is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown frontend option(s) {unknown}; known options: {sorted(known)}"
            )
        return cls(**data)

    @property
    def frame_seconds(self) -> float:
        """Seconds between frames (the hop)."""
        return self.hop_length / self.sample_rate

    def _core_options(self) -> _core.LogMelOptions:
        o = _core.LogMelOptions()
        o.sample_rate = float(self.sample_rate)
        o.n_fft = int(self.n_fft)
        o.win_length = 0 if self.win_length is None else int(self.win_length)
        o.hop_length = int(self.hop_length)
        o.window = self.window
        o.center = bool(self.center)
        o.pad_mode = self.pad_mode
        o.n_mels = int(self.n_mels)
        o.fmin = float(self.fmin)
        o.fmax = -1.0 if self.fmax is None else float(self.fmax)
        o.mel_scale = self.mel_scale
        o.norm = "none" if self.norm is None else self.norm
        o.power = float(self.power)
        o.log = self.log
        o.amin = float(self.amin)
        o.db_multiplier = float(self.db_multiplier)
        o.log1p_gain = float(self.log1p_gain)
        o.allow_empty_filters = bool(self.allow_empty_filters)
        return o

    @classmethod
    def _from_core(cls, o: _core.LogMelOptions) -> LogMelOptions:
        return cls(
            sample_rate=o.sample_rate,
            n_fft=o.n_fft,
            win_length=None if o.win_length == 0 else o.win_length,
            hop_length=o.hop_length,
            window=o.window,
            center=o.center,
            pad_mode=o.pad_mode,
            n_mels=o.n_mels,
            fmin=o.fmin,
            fmax=None if o.fmax < 0 else o.fmax,
            mel_scale=o.mel_scale,
            norm=None if o.norm == "none" else o.norm,
            power=o.power,
            log=o.log,
            amin=o.amin,
            db_multiplier=o.db_multiplier,
            log1p_gain=o.log1p_gain,
            allow_empty_filters=o.allow_empty_filters,
        )


class OnlineLogMel(_core.OnlineLogMel):
    """Streaming log-mel of one stream.

    ``accept_waveform(x)`` takes 1-D audio (converted to float32, not rescaled), ``pop()``
    returns the ready frames as a fresh ``(n, n_mels)`` float32 array, ``input_finished()``
    applies the tail padding. ``frames_ready`` is the absolute count of frames produced.
    NaN/Inf samples become 0 and are counted in ``nonfinite_samples``.
    """

    def __init__(self, options: LogMelOptions) -> None:
        if not isinstance(options, LogMelOptions):
            raise TypeError(f"options must be a LogMelOptions, got {type(options).__name__}")
        super().__init__(options._core_options())
        self.options = options


def compute_logmel(samples: np.ndarray, options: LogMelOptions) -> np.ndarray:
    """Log-mel frames ``(T, n_mels)`` of a whole signal: exactly what any chunking yields."""
    return _core.compute_logmel(np.asarray(samples, dtype=np.float32), options._core_options())


def mel_filterbank(options: LogMelOptions) -> np.ndarray:
    """The mel filter matrix ``(n_mels, n_fft // 2 + 1)`` the frontend applies."""
    return _core.mel_filterbank(options._core_options())
