"""Streaming conversion of any input (rate, channels, chunking) to mono float32 at one rate."""

from __future__ import annotations

import numpy as np

from streamtag.audio.files import mix_down


class Resampler:
    """Averages channels to mono and resamples with one ``soxr.ResampleStream``.

    Output does not depend on how the input is chunked (soxr keeps its filter state), and
    ``samples_out`` counts every output sample, so it is the absolute index of the next one.
    When the input rate changes mid-stream the current stream is flushed (its delayed tail is
    returned) and a new one is started at the new rate. Input at the target rate passes through
    untouched, sample for sample. Input that is resampled has its NaN and infinite samples
    replaced by 0 first (counted in ``nonfinite``): soxr would smear each over its filter.
    """

    def __init__(self, target_rate: float, quality: str = "HQ") -> None:
        if target_rate <= 0:
            raise ValueError(f"target_rate must be positive, got {target_rate}")
        self.target_rate = float(target_rate)
        self.quality = quality
        self.samples_out = 0
        self.nonfinite = 0
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
        if self._stream is None:
            body = mono.copy()
        else:
            finite = np.isfinite(mono)
            if not finite.all():
                self.nonfinite += int(mono.size - np.count_nonzero(finite))
                mono = np.where(finite, mono, np.float32(0))
            body = np.asarray(self._stream.resample_chunk(mono), dtype=np.float32)
        self.samples_out += body.size
        if head is not None and head.size:
            return np.concatenate([head, body])
        return body

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
