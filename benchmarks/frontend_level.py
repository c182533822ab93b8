"""What the audio level and onset features cost the frontend, per scored window.

For the default model's frontend (hop of 31 frames of 512 samples, windows of 93 frames) and
musicnn's (hop 62 frames of 256 samples, windows of 187 frames): two extractors are fed the
same music-like stream one window hop at a time, single-threaded; one without levels
(accept_waveform + pop), one with keep_levels on plus one window_level call per window. The
two alternate window by window (which goes first alternating too), so both see the same machine
state; each window's pair of timings gives one difference. Printed: µs per window of each,
their ratio, and the extra cost in µs and % of the frontend (the median of the per-window
differences, and the difference of the best passes). The target is <= 1 %.

Timings on a shared 2-core machine move by more than the difference; ``--instructions`` counts
instead (valgrind's callgrind, the same count on every run of the same build and input): the
frontend's C++ instructions per window without and with levels, each in a process of its own.
The count leaves out the Python call per window (``window_level``'s binding), which the timings
include.

    python benchmarks/frontend_level.py [--seconds 120] [--repeats 5]
    python benchmarks/frontend_level.py --instructions [--seconds 20]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

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


def child(name: str, levels: bool, seconds: float) -> None:
    """The stream through one extractor, as one_pass feeds it (run under callgrind)."""
    options, window, hop_frames = CONFIGS[name]
    signal = music_like(seconds, options.sample_rate, seed=1)
    step = hop_frames * options.hop_length
    extractor = OnlineLogMel(options)
    if levels:
        extractor.keep_levels(2 * window)
    for i in range(0, len(signal) - step + 1, step):
        extractor.accept_waveform(signal[i:i + step])
        extractor.pop()
        ready = extractor.frames_ready
        if levels and ready >= window:
            extractor.window_level(ready, window)


# The frontend's entry points in the extension: everything it does runs inside them.
ENTRY = re.compile(r"^\s*([\d,]+) .*streamtag::OnlineLogMel::(AcceptWaveform|Pop|WindowLevel)\(")


def instructions(name: str, levels: bool, seconds: float) -> int:
    """The C++ instructions of the frontend's entry points over the stream, by callgrind."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, __file__, "--child", name, "--levels", str(int(levels)),
                        "--seconds", str(seconds)],
                       check=True, capture_output=True)
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                               str(out)], check=True, capture_output=True, text=True).stdout
    found = [int(m[1].replace(",", "")) for m in map(ENTRY.match, text.splitlines()) if m]
    if not found:
        raise SystemExit("callgrind named none of the frontend's functions (a stripped build?)")
    return sum(found)


def count_instructions(seconds: float) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind: apt-get install valgrind")
    print(f"{seconds:.0f} s of music-like audio, one window hop of audio per call; C++ "
          "instructions of the frontend (callgrind), per window")
    print(f"{'frontend':14s} {'plain':>10s} {'levels':>10s} {'extra':>8s} {'extra %':>8s}")
    for name, (options, _window, hop_frames) in CONFIGS.items():
        windows = int(seconds * options.sample_rate) // (hop_frames * options.hop_length)
        plain = instructions(name, False, seconds) / windows
        levels = instructions(name, True, seconds) / windows
        print(f"{name:14s} {plain:10.0f} {levels:10.0f} {levels - plain:8.0f} "
              f"{100 * (levels - plain) / plain:7.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with callgrind instead of timing")
    parser.add_argument("--child", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--levels", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, bool(args.levels), args.seconds)
    if args.instructions:
        return count_instructions(args.seconds)
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
