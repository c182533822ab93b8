"""Streaming conversion of any input (rate, channels, chunking) to mono float32 at one rate."""

from __future__ import annotations

import numpy as np

from streamtag.audio.files import mix_down

# The largest sample magnitude passed on: 18 dB over full scale, more than any real audio's
# overs (decoded MP3 reaches about 1.2); a float stream may declare anything up to 3.4e38.
SAMPLE_LIMIT = 8.0


class Resampler:
    """Averages channels to mono and resamples with one ``soxr.ResampleStream``.

    Output does not depend on how the input is chunked (soxr keeps its filter state), and
    ``samples_out`` counts every output sample, so it is the absolute index of the next one.
    When the input rate changes mid-stream the current stream is flushed (its delayed tail is
    returned) and a new one is started at the new rate. Input at the target rate passes through
    untouched, sample for sample, as long as it is finite and within ``SAMPLE_LIMIT``. NaN and
    infinite samples are replaced by 0 (soxr would smear each over its filter; a decoder's
    glitch is a dropout), counted in ``nonfinite``; finite ones beyond the limit by the limit
    of their sign, counted in ``beyond_limit``: a float stream of ±3e38 is a blast, not
    silence (``mix_down`` averages such channels without overflowing).
    """

    def __init__(self, target_rate: float, quality: str = "HQ") -> None:
        if target_rate <= 0:
            raise ValueError(f"target_rate must be positive, got {target_rate}")
        self.target_rate = float(target_rate)
        self.quality = quality
        self.samples_out = 0
        self.nonfinite = 0
        self.beyond_limit = 0
        self._rate: float | None = None
        self._stream = None

    def process(self, samples: np.ndarray, rate: float) -> np.ndarray:
        """``samples``: 1-D mono or 2-D (frames, channels); returns mono float32 output."""
        mono = _to_mono(samples)
        rate = float(rate)
        if rate <= 0:
            raise ValueError(f"input sample rate must be positive, got {rate}")
        head = None
        if rate != self._rate:
            head = self.flush()  # counts its own output
            self._rate = rate
            if rate != self.target_rate:
                import soxr

                self._stream = soxr.ResampleStream(rate, self.target_rate, 1, dtype="float32",
                                                   quality=self.quality)
        mono = self._within_limit(mono)
        if self._stream is None:
            body = mono.copy()
        else:
            body = np.asarray(self._stream.resample_chunk(mono), dtype=np.float32)
        self.samples_out += body.size
        if head is not None and head.size:
            return np.concatenate([head, body])
        return body

    def _within_limit(self, mono: np.ndarray) -> np.ndarray:
        """``mono``, or a copy with NaN and infinity made 0 and what lies beyond ±SAMPLE_LIMIT
        made the limit; two reductions over sane audio."""
        if not mono.size:
            return mono
        low, high = float(mono.min()), float(mono.max())  # NaN propagates into both
        if -SAMPLE_LIMIT <= low and high <= SAMPLE_LIMIT:
            return mono
        finite = np.isfinite(mono)
        self.nonfinite += int(mono.size - np.count_nonzero(finite))
        clean = np.where(finite, mono, np.float32(0))
        self.beyond_limit += int(np.count_nonzero(np.abs(clean) > SAMPLE_LIMIT))
        return np.clip(clean, -SAMPLE_LIMIT, SAMPLE_LIMIT).astype(np.float32)

    def flush(self) -> np.ndarray:
        """Ends the current input: returns the resampler's delayed tail, starts afresh."""
        out = np.zeros(0, np.float32)
        if self._stream is not None:
            out = np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True),
                             dtype=np.float32)
        self._stream = None
        self._rate = None
        self.samples_out += out.size
        return out


def _to_mono(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 2:  # (frames, channels): their mean, column by column (audio.files.mix_down)
        x = np.asarray(x, dtype=np.float32)
        x = mix_down([x[:, c] for c in range(x.shape[1])])
    elif x.ndim != 1:
        raise ValueError(f"expected 1-D mono or 2-D (frames, channels) samples, got {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)
