"""Loudness as EBU R128 measures it: momentary (400 ms), short-term (3 s) and integrated (gated)
loudness in LUFS, after ITU-R BS.1770-4 and EBU Tech 3341.

The C++ meter (``csrc/loudness_meter``) K-weights each channel at the audio's own sample rate,
before any downmix or resampling, and yields one power per 100 ms block: the channels' mean
squares added with their BS.1770 weights (1.0 front, 1.41 surround, 0 LFE). Everything else is
arithmetic on those powers, here:

- momentary loudness: the mean power of the last ``MOMENTARY_BLOCKS`` blocks;
- short-term loudness: of the last ``SHORT_TERM_BLOCKS`` blocks;
- integrated loudness: 400 ms gating blocks every 100 ms (four blocks each, 75 % overlap);
  those above -70 LUFS (the absolute gate) give a first mean, those above it less 10 LU (the
  relative gate) the result.

``-0.691 + 10 log10(power)`` turns a power into LUFS: a 1 kHz sine of amplitude -23 dBFS in
both channels of a stereo signal reads -23.0 LUFS.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

import numpy as np

from streamtag import _core
from streamtag._core import SILENCE_LUFS, k_weighting, loudness_of_power

__all__ = [
    "ABSOLUTE_GATE_LUFS",
    "BLOCK_S",
    "MOMENTARY_BLOCKS",
    "RELATIVE_GATE_LU",
    "SHORT_TERM_BLOCKS",
    "SILENCE_LUFS",
    "LoudnessMeter",
    "channel_weights",
    "GatedLoudness",
    "integrated_lufs",
    "k_weighting",
    "loudness_of_power",
    "mean_lufs",
]

BLOCK_S = 0.1  # one block's length: the meter's unit of time
MOMENTARY_BLOCKS = 4  # 400 ms
SHORT_TERM_BLOCKS = 30  # 3 s
GATING_BLOCKS = 4  # a gating block is 400 ms, one starting every block (75 % overlap)
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0

# BS.1770-4's weights by channel position; FFmpeg's channel names (PyAV's AudioLayout).
_SURROUND = {"BL", "BR", "SL", "SR", "BC", "TBL", "TBR", "TSL", "TSR", "WL", "WR", "SDL", "SDR"}
_LOW_FREQUENCY = {"LFE", "LFE2", "LFE1"}
SURROUND_WEIGHT = 1.41


def channel_weights(channels: int, names: Sequence[str] | None = None) -> list[float]:
    """BS.1770's weight for each of ``channels``: 1.41 for the surrounds, 0 for low-frequency
    effects, 1.0 for the others (left, right, centre, or any channel without a known name);
    ``names``: the channels' names as FFmpeg gives them (``FL``, ``FR``, ``LFE``, ``SL``...)."""
    if names is None or len(names) != channels:
        return [1.0] * channels
    return [0.0 if name in _LOW_FREQUENCY else SURROUND_WEIGHT if name in _SURROUND else 1.0
            for name in names]


class LoudnessMeter:
    """One stream's meter: ``accept`` audio at its own rate and channels, ``pop_blocks`` the
    100 ms block powers completed. See ``_core.LoudnessMeter`` for the measuring part; this
    wrapper starts a new meter (a new segment) when the rate or the channels change."""

    def __init__(self) -> None:
        self._meter: _core.LoudnessMeter | None = None
        self._key: tuple | None = None
        self.segments = 0  # meters started: a change of rate or channels, or a reset

    def accept(self, samples: np.ndarray, sample_rate: float, planar: bool = False,
               names: Sequence[str] | None = None) -> None:
        """``samples``: 1-D mono, (frames, channels), or with ``planar`` (channels, frames)."""
        x = np.asarray(samples, dtype=np.float32)
        channels = 1 if x.ndim == 1 else x.shape[0 if planar else 1]
        key = (float(sample_rate), channels, tuple(names) if names else None)
        if key != self._key:
            self._meter = _core.LoudnessMeter(float(sample_rate), channel_weights(channels, names))
            self._key = key
            self.segments += 1
        self._meter.accept_waveform(x, planar)

    def reset(self) -> None:
        """A gap in the audio: the filters and the partial block start afresh."""
        self._meter = None
        self._key = None

    @property
    def block_length(self) -> int | None:
        return None if self._meter is None else self._meter.block_length

    @property
    def sample_rate(self) -> float | None:
        return None if self._meter is None else self._meter.sample_rate

    @property
    def blocks_completed(self) -> int:
        """Blocks completed by the current segment's meter."""
        return 0 if self._meter is None else self._meter.blocks_completed

    def pop_blocks(self) -> np.ndarray:
        """The block powers completed since the last call (float64)."""
        if self._meter is None:
            return np.zeros(0)
        return self._meter.pop_blocks()


def mean_lufs(powers: Sequence[float] | np.ndarray) -> float:
    """The loudness of the mean of block powers (momentary of 4, short-term of 30);
    ``SILENCE_LUFS`` for none."""
    p = np.asarray(powers, dtype=np.float64)
    return SILENCE_LUFS if p.size == 0 else loudness_of_power(float(p.mean()))


def integrated_lufs(powers: Sequence[float] | np.ndarray) -> float | None:
    """Integrated (programme) loudness of consecutive 100 ms block powers, gated as BS.1770-4
    says; None when nothing is above the absolute gate (silence, or under 400 ms)."""
    p = np.asarray(powers, dtype=np.float64)
    if p.size < GATING_BLOCKS:
        return None
    gating = np.convolve(p, np.ones(GATING_BLOCKS) / GATING_BLOCKS, mode="valid")
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10.0 * np.log10(gating)
    above = gating[loudness > ABSOLUTE_GATE_LUFS]
    if above.size == 0:
        return None
    relative = loudness_of_power(float(above.mean())) + RELATIVE_GATE_LU
    kept = gating[(loudness > ABSOLUTE_GATE_LUFS) & (loudness > relative)]
    return loudness_of_power(float(kept.mean())) if kept.size else None


# A programme's gating blocks are kept as they are for its first EXACT_BLOCKS (10 minutes,
# 48 kB), and past them as a histogram of their loudness: bins of HISTOGRAM_LU from the absolute
# gate up, the one the relative gate falls in taken as spread evenly across it (within 0.01 LU
# of the blocks' own integrated loudness with that many blocks).
EXACT_BLOCKS = 6000
HISTOGRAM_LU = 0.1
HISTOGRAM_TOP_LUFS = 10.0  # louder blocks (past full scale) count in the top bin


class GatedLoudness:
    """A programme's integrated loudness (BS.1770-4's gating, as ``integrated_lufs``) from its
    100 ms block powers as they come, in bounded memory whatever its length (module text)."""

    BINS = round((HISTOGRAM_TOP_LUFS - ABSOLUTE_GATE_LUFS) / HISTOGRAM_LU)

    def __init__(self) -> None:
        self._exact: array.array | None = array.array("d")  # gating blocks' powers, or None
        self._counts: np.ndarray | None = None  # the histogram, once past EXACT_BLOCKS
        self._powers: np.ndarray | None = None
        self._last: list[float] = []  # the last GATING_BLOCKS blocks

    def add(self, powers: Sequence[float] | np.ndarray) -> None:
        """The next blocks' powers; a few at a time, as a stream's chunks bring them (plain
        arithmetic: a numpy call per chunk would cost more than the blocks)."""
        last = self._last
        for power in powers:
            last.append(float(power))
            if len(last) < GATING_BLOCKS:
                continue
            if len(last) > GATING_BLOCKS:
                del last[0]
            gating = sum(last) / GATING_BLOCKS
            if gating <= 0 or -0.691 + 10.0 * math.log10(gating) <= ABSOLUTE_GATE_LUFS:
                continue
            if self._exact is not None:
                self._exact.append(gating)
                if len(self._exact) > EXACT_BLOCKS:
                    self._to_histogram()
            else:
                self._count(gating)

    def _to_histogram(self) -> None:
        self._counts = np.zeros(self.BINS, dtype=np.int64)
        self._powers = np.zeros(self.BINS, dtype=np.float64)
        exact, self._exact = self._exact, None
        for gating in exact or ():
            self._count(gating)

    def _count(self, gating: float) -> None:
        assert self._counts is not None and self._powers is not None
        loudness = -0.691 + 10.0 * math.log10(gating)
        b = min(int((loudness - ABSOLUTE_GATE_LUFS) / HISTOGRAM_LU), self.BINS - 1)
        self._counts[b] += 1
        self._powers[b] += gating

    def lufs(self) -> float | None:
        """The integrated loudness so far; None when no gating block passed the absolute gate
        (silence, or under 400 ms)."""
        if self._exact is not None:
            if not self._exact:
                return None
            kept = np.frombuffer(self._exact, dtype=np.float64)
            relative = loudness_of_power(float(kept.mean())) + RELATIVE_GATE_LU
            with np.errstate(divide="ignore"):
                kept = kept[-0.691 + 10.0 * np.log10(kept) > relative]
            return loudness_of_power(float(kept.mean())) if kept.size else None
        assert self._counts is not None and self._powers is not None
        total = int(self._counts.sum())
        relative = loudness_of_power(float(self._powers.sum()) / total) + RELATIVE_GATE_LU
        # the bins past the relative gate, and of the one it falls in the share above it
        edge = max(0.0, (relative - ABSOLUTE_GATE_LUFS) / HISTOGRAM_LU)
        cut = min(int(edge), self.BINS - 1)
        share = 1.0 - (edge - cut)
        count = float(self._counts[cut + 1:].sum()) + share * float(self._counts[cut])
        if count <= 0:
            return None
        power = float(self._powers[cut + 1:].sum()) + share * float(self._powers[cut])
        return loudness_of_power(power / count)
