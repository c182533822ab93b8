"""What the audio level and onset features cost the frontend, per scored window.

For the default model's frontend (hop of 31 frames of 512 samples, windows of 93 frames) and
musicnn's (hop 62 frames of 256 samples, windows of 187 frames): two extractors are fed the
same music-like stream one window hop at a time, single-threaded; one without levels
(accept_waveform + pop), one with keep_levels on plus one window_level call per window. The
two alternate window by window (which goes first alternating too), so both see the same machine
state; each window's pair of timings gives one difference. Printed: µs per window of each,
their ratio, and the extra cost in µs and % of the frontend (the median of the per-window
differences, and the difference of the best passes). The target is <= 1 %.

    python benchmarks/frontend_level.py [--seconds 120] [--repeats 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from streamtag.audio.testsignals import music_like  # noqa: E402
from streamtag.frontend import LogMelOptions, OnlineLogMel  # noqa: E402

# name: (options, window frames, hop frames), as the two models are served: the default model's
# card (models/default/MODEL_CARD.md) and streamtag.catalog.musicnn's WINDOW_FRAMES and
# HOP_FRAMES (not imported: that module imports torch)
CONFIGS = {
    "default model": (LogMelOptions(sample_rate=16000, n_fft=2048, hop_length=512, center=True,
                                    pad_mode="reflect", n_mels=192, fmax=8000.0, log="log1p"),
                      93, 31),
    "musicnn": (LogMelOptions.preset("musicnn"), 187, 62),
}


def one_pass(options: LogMelOptions, window: int, chunks: list[np.ndarray],
             order: int) -> tuple[float, float, list[float]]:
    """Seconds without and with levels over the stream, and each window's difference."""
    plain, levels = OnlineLogMel(options), OnlineLogMel(options)
    levels.keep_levels(2 * window)
    clock = time.perf_counter
    total_plain = total_levels = 0.0
    differences = []
    for k, chunk in enumerate(chunks):
        first = (k + order) % 2
        for which in (first, 1 - first):
            start = clock()
            if which == 0:
                plain.accept_waveform(chunk)
                plain.pop()
                spent_plain = clock() - start
            else:
                levels.accept_waveform(chunk)
                levels.pop()
                ready = levels.frames_ready
                if ready >= window:
                    levels.window_level(ready, window)
                spent_levels = clock() - start
        total_plain += spent_plain
        total_levels += spent_levels
        differences.append(spent_levels - spent_plain)
    return total_plain, total_levels, differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.seconds:.0f} s of music-like audio, {args.repeats} passes, "
          "one window hop of audio per call, single thread")
    header = (f"{'frontend':14s} {'hop':>9s} {'plain µs':>9s} {'levels µs':>10s} {'ratio':>7s} "
              f"{'extra µs':>9s} {'extra %':>8s} {'best-pass %':>11s}")
    print(header)
    for name, (options, window, hop_frames) in CONFIGS.items():
        signal = music_like(args.seconds, options.sample_rate, seed=1)
        step = hop_frames * options.hop_length
        chunks = [signal[i:i + step] for i in range(0, len(signal) - step + 1, step)]
        one_pass(options, window, chunks[:20], 0)  # warm up
        plains, levels, differences = [], [], []
        for r in range(args.repeats):
            p, q, d = one_pass(options, window, chunks, r)
            plains.append(p / len(chunks))
            levels.append(q / len(chunks))
            differences.extend(d)
        plain_us, levels_us = min(plains) * 1e6, min(levels) * 1e6
        extra_us = statistics.median(differences) * 1e6
        print(f"{name:14s} {hop_frames:4d} fr. {plain_us:9.1f} {levels_us:10.1f} "
              f"{levels_us / plain_us:7.4f} {extra_us:9.2f} {100 * extra_us / plain_us:7.2f}% "
              f"{100 * (levels_us - plain_us) / plain_us:10.2f}%")


if __name__ == "__main__":
    main()
