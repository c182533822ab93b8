"""Recorded ambience against music: the content network's ten features alone, and beside the
three tonal ones and the pulse (csrc/tonal_peaks.h, csrc/content_features.h, as the tracker
served beside the speech detector computes them), in a music-or-noise check on the material of
benchmarks/content_fit.py (its packages installed as its docstring says).

    python benchmarks/content_tonal.py [--cache DIR]

Held notes are sinusoids that stay within a bin or two for frames on end; a crowd, rain,
traffic, a machine or an animal call have spectral peaks that come and go, and the content
frames (64 mel bands) are too coarse to tell. Per frame of the content frontend's FFT (1024
points every 32 ms at 16 kHz), the peaks between 100 Hz and 5 kHz that stand over their two
neighbours each side and 10 dB over the band's median; a peak is stable when the two frames
before it hold a peak within a bin of it. Per 3-s window: the share of the band's power in
stable peaks, stable peaks per frame, and their share of all peaks. And the pulse: over the last
10 s, the strongest autocorrelation of the onset envelope at lags of 0.3-1.5 s (a beat).

The fit and held-out split is content_fit.py's (every other music piece; the ambience of
``FIT_AMBIENCE`` fitted, ``HELD_AMBIENCE`` held out; sox noise at the fit's and the held-out
levels); the classifier is scikit-learn's MLP of sixteen tanh units on standardized features,
music (0) or noise (1). Printed: each held-out source's share of windows called noise, at even
odds and where noise must be 95 % likely, the held-out music pieces whose windows are most
often called noise, and what the tonal rows cost the content frontend (its frames of a minute of
music fed in 4000-sample chunks, with and without them, alternated, best of five).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import content_fit as cf  # benchmarks/content_fit.py, beside this script
import numpy as np

SPECTRAL = len(cf.SPECTRAL_FEATURES)
CHUNK = 4000


def frontend_seconds(audio: np.ndarray, tonal: bool) -> float:
    """Seconds the content frontend takes over ``audio``, fed in chunks as a source feeds it."""
    frontend = cf.OnlineLogMel(cf.content_options(cf.RATE))
    frontend.keep_tonal(tonal)
    start = time.perf_counter()
    for i in range(0, len(audio), CHUNK):
        frontend.accept_waveform(audio[i:i + CHUNK])
        frontend.pop()
        frontend.pop_tonal()
    return time.perf_counter() - start


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
    items = [(kind, split, name, audio)
             for kind, split, name, audio in cf.material(args.cache, fit_ambience=True)
             if kind in ("music", "noise") and " + " not in name]
    rows, noise, split, source, piece = [], [], [], [], []
    for kind, part, name, audio in items:
        if len(audio) < (cf.WINDOW_S + 1) * cf.RATE:
            continue
        x = cf.windows(audio, extended=True)
        rows.append(x)
        noise += [kind == "noise"] * len(x)
        split += [part] * len(x)
        source += [cf.source_of(kind, name)] * len(x)
        piece += [f"{kind}: {name}"] * len(x)
    x14 = np.concatenate(rows)
    y, fitted = np.array(noise), np.array(split) == "fit"
    named, pieces = np.array(source), np.array(piece)
    shares = {}
    for label, x in (("ten", x14[:, :SPECTRAL]), ("fourteen", x14)):
        model = make_pipeline(StandardScaler(), MLPClassifier(
            (16,), activation="tanh", alpha=1e-3, max_iter=3000, random_state=0))
        model.fit(x[fitted], y[fitted])
        shares[label] = model.predict_proba(x)[:, 1]
    print("| held-out source | windows | ten features: noise | at 95 % | with the tonal three and "
          "the pulse: noise | at 95 % |")
    print("|---|---|---|---|---|---|")
    for src in sorted(set(named[~fitted])):
        held = (named == src) & ~fitted
        cells = [f"{np.mean(shares[k][held] > t):.0%}" for k in ("ten", "fourteen")
                 for t in (0.5, 0.95)]
        print(f"| {src} | {held.sum()} | " + " | ".join(cells) + " |")
    print("\nheld-out music pieces with a tenth of their windows or more called noise:")
    for name in sorted(set(pieces[~fitted & ~y])):
        held = (pieces == name) & ~fitted
        worst = max(np.mean(shares[k][held] > 0.5) for k in shares)
        if worst >= 0.1:
            print(f"  {name:48} " + ", ".join(f"{k} {np.mean(shares[k][held] > t):.0%}"
                                              f"{' at 95 %' if t > 0.5 else ''}"
                                              for k in shares for t in (0.5, 0.95)))
    minute = next(a for k, sp, n, a in items if k == "music" and len(a) >= 60 * cf.RATE)
    minute = minute[: 60 * cf.RATE]
    best = {False: float("inf"), True: float("inf")}
    for _ in range(5):
        for tonal in (False, True):
            best[tonal] = min(best[tonal], frontend_seconds(minute, tonal))
    print(f"\ncontent frontend, a minute of music: {1e3 * best[False]:.1f} ms without the tonal "
          f"rows, {1e3 * best[True]:.1f} ms with them ({best[True] / best[False]:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
