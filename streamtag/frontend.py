"""The log-mel frontend: options, the streaming extractor, the batch call and the frame ring,
and the audio's level and onset rate per window, measured as the frames are computed.

A thin layer over the C++ extension ``streamtag._core``. ``LogMelOptions`` is the contract that a
model file carries (``to_dict``/``from_dict``), so the daemon and the trainer build identical
frontends from it.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import TYPE_CHECKING, Any

from streamtag import _core
from streamtag._core import CLIP_LEVEL, FRAME_LEVEL_FIELDS, SILENCE_DBFS, FrameRing, WindowLevel

if TYPE_CHECKING:  # numpy loads with the first signal (the command line's parser needs none)
    import numpy as np

__all__ = [
    "CLIP_LEVEL",
    "FRAME_LEVEL_FIELDS",
    "NULLABLE_OPTIONS",
    "SILENCE_DBFS",
    "FrameRing",
    "LogMelOptions",
    "OnlineLogMel",
    "WindowLevel",
    "compute_logmel",
    "mel_filterbank",
    "window_level_of",
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
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                value = _UNSET_IN_CORE[field.name][0]
            # cast to the C++ field's own type (a float option given as an int, ...), once
            # the value is of that kind: True is not a count, "no" not a truth value
            kind = type(getattr(o, field.name))
            setattr(o, field.name, kind(_checked(field.name, value, kind)))
        return o

    @classmethod
    def _from_core(cls, o: _core.LogMelOptions) -> LogMelOptions:
        values = {}
        for field in dataclasses.fields(cls):
            value = getattr(o, field.name)
            unset = _UNSET_IN_CORE.get(field.name)
            values[field.name] = None if unset is not None and unset[1](value) else value
        return cls(**values)


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number",
               str: "a string"}


def _checked(name: str, value: Any, kind: type) -> Any:
    """``value`` when it is of the kind the C++ option takes (an int for a float too), else
    ValueError naming the option and what it takes."""
    fits = (isinstance(value, bool) if kind is bool
            else isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, numbers.Real) and not isinstance(value, bool)
            if kind is float else isinstance(value, kind))
    if not fits:
        raise ValueError(f"frontend option {name} must be {_KIND_WORDS.get(kind, kind.__name__)}"
                         f", got {value!r}")
    return value


# The fields of LogMelOptions are the table that drives the conversions to and from the C++
# struct (names, order, defaults and types; a test holds them equal to the C++ side). Options
# that Python spells None have a stand-in value in C++: (the value written, the test read back).
_UNSET_IN_CORE: dict[str, tuple[Any, Any]] = {
    "win_length": (0, lambda v: v <= 0),  # 0: n_fft
    "fmax": (-1.0, lambda v: v < 0),  # < 0: sample_rate / 2
    "norm": ("none", lambda v: v == "none"),
}
NULLABLE_OPTIONS: tuple[str, ...] = tuple(_UNSET_IN_CORE)


class OnlineLogMel(_core.OnlineLogMel):
    """Streaming log-mel of one stream.

    ``accept_waveform(x)`` takes 1-D audio (converted to float32, not rescaled), ``pop()``
    returns the ready frames as a fresh ``(n, n_mels)`` float32 array, ``input_finished()``
    applies the tail padding. ``frames_ready`` is the absolute count of frames produced.
    NaN/Inf samples become 0 and are counted in ``nonfinite_samples``.

    Levels (off by default, at no cost): ``keep_levels(frames)``, before the first frame or
    after ``reset()``, measures the audio as frames are computed and keeps what the last
    ``frames`` frames need; ``keep_levels(0)`` turns it off. ``window_level(end_frame, length)``
    returns the ``WindowLevel`` of frames ``[end_frame - length, end_frame)``: ``rms_dbfs``,
    ``peak_dbfs`` (dBFS of the float samples, full scale 1.0, floored at -120: a full-scale sine
    is 0 dBFS peak and -3.01 dBFS RMS), ``clipped`` (samples with ``|x| >= CLIP_LEVEL``),
    ``samples``, ``onsets`` and ``onset_rate_hz``. Levels are measured per level step of
    ``level_step`` frames, as many as fit in 32 ms (1 for 32-ms hops such as the default
    model's, 2 for musicnn's 16-ms hop; 1 when frames leave samples between them): step ``g``
    holds frames ``[g*k, g*k + k)`` and owns the samples ``[g*k*hop - hop//2, (g + 1)*k*hop -
    hop//2)`` (no ``hop//2`` without ``center``), padding never counted, and its onset flux is
    the mean rise of the log-mel bands from the last frame of the step before to its own last
    frame. A window takes the steps whose last frame is in it (so it holds at least one when
    ``length >= level_step``). After ``input_finished()`` the last step ends with the last frame
    and also owns the rest of the signal, so the steps of a finished signal count every sample
    once (for ``hop_length <= n_fft``). ``frame_levels(end_frame, length)`` returns those steps'
    features, a fresh ``(steps, 5)`` float32 array with the columns ``FRAME_LEVEL_FIELDS``. Any
    chunking gives bitwise the same levels. Asking for frames not computed yet or no longer kept
    raises ``IndexError`` naming what is kept; a range holding no step's last frame
    ``ValueError``; with levels off, ``RuntimeError``.

    Tonal rows (off by default, at no cost; the content classifier's, streamtag.engine.content):
    ``keep_tonal()``, before the first frame or after ``reset()`` (else ``RuntimeError``),
    adds a row per frame computed, read from its power spectrum (csrc/tonal_peaks.h): the power
    of 100 Hz-5 kHz, its spectral peaks, those of them the two frames before held within a bin,
    and their power. ``pop_tonal()`` returns the rows not popped yet, a fresh ``(n, 4)``
    float32 array, as ``pop()`` the frames; ``keep_tonal(False)`` turns it off.
    """

    def __init__(self, options: LogMelOptions) -> None:
        if not isinstance(options, LogMelOptions):
            raise TypeError(f"options must be a LogMelOptions, got {type(options).__name__}")
        super().__init__(options._core_options())
        self.options = options


def compute_logmel(samples: np.ndarray, options: LogMelOptions) -> np.ndarray:
    """Log-mel frames ``(T, n_mels)`` of a whole signal: exactly what any chunking yields."""
    import numpy as np

    return _core.compute_logmel(np.asarray(samples, dtype=np.float32), options._core_options())


def window_level_of(features: np.ndarray, hop_length: int, sample_rate: float) -> WindowLevel:
    """The ``WindowLevel`` of level rows ``(steps, 5)`` as ``frame_levels`` returns;
    ``hop_length`` is the samples per row (``level_step`` times the frontend's hop)."""
    import numpy as np

    return _core.window_level_of(np.asarray(features, dtype=np.float32), hop_length, sample_rate)


def mel_filterbank(options: LogMelOptions) -> np.ndarray:
    """The mel filter matrix ``(n_mels, n_fft // 2 + 1)`` the frontend applies."""
    return _core.mel_filterbank(options._core_options())
