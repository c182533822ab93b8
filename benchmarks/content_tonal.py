"""Recorded ambience against music: the content network's ten features alone, and beside three
tonal numbers measured at the FFT's resolution, in a music-or-noise check on the material of
benchmarks/content_fit.py (its packages installed as its docstring says).

    python benchmarks/content_tonal.py [--cache DIR]

Held notes are sinusoids that stay within a bin or two for frames on end; a crowd, rain,
traffic, a machine or an animal call have spectral peaks that come and go, and the content
frames (64 mel bands) are too coarse to tell. Per frame of a 1024-point FFT every 32 ms at
16 kHz (Hann window), the peaks between 100 Hz and 5 kHz that stand over their two neighbours
each side and 10 dB over the frame's median; a peak is stable when the two frames before it
hold a peak within a bin of it. Per 3-s window: the share of the band's power in stable peaks,
stable peaks per frame, and their share of all peaks.

The fit and held-out split is content_fit.py's (every other music piece; the ambience of
``FIT_AMBIENCE`` fitted, ``HELD_AMBIENCE`` held out; sox noise at the fit's and the held-out
levels); the classifier is scikit-learn's MLP of sixteen tanh units on standardized features,
music (0) or noise (1). Printed: each held-out source's share of windows called noise, at even
odds and where noise must be 95 % likely.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import content_fit as cf  # benchmarks/content_fit.py, beside this script
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RATE = cf.RATE
FFT_SIZE, FFT_HOP = 1024, 512
BAND_HZ = (100.0, 5000.0)
OVER_MEDIAN_DB = 10.0


def tonal_rows(audio: np.ndarray, frames: int) -> np.ndarray:
    """(frames, 4): each frame's band power, peaks, stable peaks and their power, on the
    content frontend's frame grid (frames centred every FFT_HOP samples)."""
    padded = np.pad(audio, (FFT_SIZE // 2, FFT_SIZE // 2))
    framed = sliding_window_view(padded, FFT_SIZE)[::FFT_HOP][:frames] * np.hanning(FFT_SIZE)
    power = np.abs(np.fft.rfft(framed, axis=1)) ** 2 + 1e-12
    lo, hi = (round(f * FFT_SIZE / RATE) for f in BAND_HZ)
    band = power[:, lo:hi]
    db = 10.0 * np.log10(band)
    peak = np.ones_like(db, bool)
    for shift in (1, 2):
        peak &= (db > np.roll(db, shift, axis=1)) & (db > np.roll(db, -shift, axis=1))
    peak &= db > np.median(db, axis=1, keepdims=True) + OVER_MEDIAN_DB
    near = peak | np.roll(peak, 1, axis=1) | np.roll(peak, -1, axis=1)
    stable = peak.copy()
    stable[2:] &= near[1:-1] & near[:-2]
    stable[:2] = False
    return np.stack([band.sum(axis=1), peak.sum(axis=1), stable.sum(axis=1),
                     (band * stable).sum(axis=1)], axis=1)


def windows(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ten features (content_fit.windows) and the three tonal numbers of each window."""
    ten = cf.windows(audio)
    options = cf.content_options(RATE)
    rate = RATE / options.hop_length
    width, hop = round(cf.WINDOW_S * rate), round(cf.HOP_S * rate)
    frames = width + hop * (len(ten) - 1)
    rows = tonal_rows(audio, frames)
    tonal = []
    for end in range(width, frames + 1, hop):
        w = rows[end - width: end]
        tonal.append([w[:, 3].sum() / w[:, 0].sum(), w[:, 2].mean(),
                      w[:, 2].sum() / max(1.0, w[:, 1].sum())])
    return ten, np.array(tonal).reshape(-1, 3)


def main() -> int:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) /
                        "streamtag-content-material",
                        help="the decoded material, shared with content_fit.py")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    items = [(kind, split, cf.source_of(kind, name), audio)
             for kind, split, name, audio in cf.material(args.cache, fit_ambience=True)
             if kind in ("music", "noise") and " + " not in name]
    ten, tonal, noise, split, source = [], [], [], [], []
    for kind, part, src, audio in items:
        if len(audio) < (cf.WINDOW_S + 1) * RATE:
            continue
        a, b = windows(audio)
        ten.append(a)
        tonal.append(b)
        noise += [kind == "noise"] * len(a)
        split += [part] * len(a)
        source += [src] * len(a)
    x10, x13 = np.concatenate(ten), np.concatenate([np.concatenate(ten), np.concatenate(tonal)],
                                                   axis=1)
    y, fitted, named = np.array(noise), np.array(split) == "fit", np.array(source)
    print("| held-out source | windows | ten features: noise | at 95 % | with the tonal three: "
          "noise | at 95 % |")
    print("|---|---|---|---|---|---|")
    shares = {}
    for label, x in (("ten", x10), ("thirteen", x13)):
        model = make_pipeline(StandardScaler(), MLPClassifier(
            (16,), activation="tanh", alpha=1e-3, max_iter=3000, random_state=0))
        model.fit(x[fitted], y[fitted])
        shares[label] = model.predict_proba(x)[:, 1]
    for src in sorted(set(named[~fitted])):
        held = (named == src) & ~fitted
        cells = [f"{np.mean(shares[k][held] > t):.0%}" for k in ("ten", "thirteen")
                 for t in (0.5, 0.95)]
        print(f"| {src} | {held.sum()} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
