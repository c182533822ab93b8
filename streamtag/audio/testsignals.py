"""Deterministic music-like test signals: harmonic notes with envelopes, a bass line, noisy
percussion and a little background noise. Used by the tests and the benchmarks, so that parity and
speed are measured on audio that looks like music to a spectrogram (wide dynamic range, onsets,
harmonics), not on pure tones."""

from __future__ import annotations

import numpy as np


def music_like(seconds: float, sample_rate: float, seed: int = 0) -> np.ndarray:
    """Mono float32 in [-1, 1], ``round(seconds * sample_rate)`` samples."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    beat = 60.0 / rng.uniform(80, 140)
    # Melody and chords: notes of a scale, each with a few decaying harmonics.
    scale = 220.0 * 2.0 ** (np.array([0, 2, 3, 5, 7, 8, 10, 12]) / 12.0)
    start = 0.0
    while start < seconds:
        length = beat * rng.choice([0.5, 1, 2])
        i0, i1 = int(start * sample_rate), min(n, int((start + length) * sample_rate))
        tt = t[i0:i1] - start
        for f0 in rng.choice(scale, size=rng.integers(1, 4), replace=False):
            for h in range(1, 6):
                if f0 * h < sample_rate / 2:
                    out[i0:i1] += (0.15 / h) * np.sin(2 * np.pi * f0 * h * tt) * np.exp(-tt * 3)
        start += length
    # Bass on the beat and noise bursts (hi-hat like) on the off-beats.
    for k, onset in enumerate(np.arange(0.0, seconds, beat / 2)):
        i0 = int(onset * sample_rate)
        i1 = min(n, i0 + int(0.2 * sample_rate))
        tt = t[i0:i1] - onset
        if k % 2 == 0:
            out[i0:i1] += 0.3 * np.sin(2 * np.pi * 55.0 * tt) * np.exp(-tt * 12)
        else:
            out[i0:i1] += 0.1 * rng.standard_normal(i1 - i0) * np.exp(-tt * 40)
    out += 1e-3 * rng.standard_normal(n)
    peak = np.max(np.abs(out)) if n else 1.0
    return (0.9 * out / max(peak, 1e-9)).astype(np.float32)
