"""Mixing channels down to mono, side by side: numpy's mean over the channel axis (what the
sources did) against ``streamtag.audio.files.mix_down`` (the channels added in order, divided
once: bitwise the same for up to 7 channels), on what the sources hand it.

- interleaved (frames, channels) float32, as a pipe or a sound card delivers it (the resampler's
  input), 2 and 6 channels;
- (channels, frames) rows of a packed 16-bit frame made float, as FLAC and WAV decode
  (a strided view: the frame's samples interleaved), 2 channels.

One thread, µs per second of 44.1 kHz audio in 0.5 s blocks, best of the repeats, the two
contenders in turn; the ratio is mean's time over mix_down's.

    python benchmarks/downmix.py [--seconds 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from streamtag.audio.files import mix_down

RATE = 44100
BLOCK = RATE // 2


def best_us_per_s(work: Callable[[np.ndarray], np.ndarray], blocks: list[np.ndarray],
                  seconds: float, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for block in blocks:
            work(block)
        best = min(best, time.perf_counter() - start)
    return best / seconds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = int(args.seconds * RATE)
    cases = {}
    for channels in (2, 6):
        x = (0.3 * rng.standard_normal((frames, channels))).astype(np.float32)
        cases[f"interleaved, {channels} channels"] = (
            [x[i:i + BLOCK] for i in range(0, frames, BLOCK)],
            lambda b: b.mean(axis=1, dtype=np.float32),
            lambda b: mix_down([b[:, c] for c in range(b.shape[1])]))
    packed = (rng.standard_normal(2 * frames) * 8000).astype(np.int16)
    cases["packed 16-bit, 2 channels"] = (
        [(packed[2 * i:2 * (i + BLOCK)].reshape(-1, 2).T.astype(np.float32) / 32768.0)
         for i in range(0, frames, BLOCK)],
        lambda b: b.mean(axis=0),
        lambda b: mix_down(list(b)))
    print(f"{args.seconds:g} s of 44.1 kHz audio in 0.5 s blocks, best of {args.repeats}, "
          "µs per second of audio")
    print(f"{'input':28s} {'numpy mean':>11s} {'mix_down':>9s} {'ratio':>6s}")
    for name, (blocks, mean, mixed) in cases.items():
        for block in blocks[:3]:  # the same numbers, bitwise
            assert np.array_equal(mean(block), mixed(block))
        a = best_us_per_s(mean, blocks, args.seconds, args.repeats)
        b = best_us_per_s(mixed, blocks, args.seconds, args.repeats)
        print(f"{name:28s} {a:11.0f} {b:9.0f} {a / b:5.1f}x")


if __name__ == "__main__":
    main()
