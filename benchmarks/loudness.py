"""What EBU R128 loudness metering costs a stream, beside the work each stream already does.

For --seconds of stereo music-like audio (``testsignals.music_like``, a different seed per
channel) at 44.1 kHz and at 48 kHz, fed in chunks of --chunk-ms (100 ms: a live source's
block), single-threaded, the seconds per pass of:

- meter: ``streamtag.audio.loudness.LoudnessMeter`` over the stereo chunk at its own rate
  (``accept`` + ``pop_blocks``), as a source measures before the downmix;
- resample: the source's existing per-chunk work, the mono downmix and soxr to 16 kHz
  (``streamtag.sources.resample.Resampler.process``);
- frontend: the default model's C++ log-mel (models/default/MODEL_CARD.md: n_fft 2048, hop 512,
  192 mels) over the resampler's 16 kHz output (``accept_waveform`` + ``pop``).

The three alternate chunk by chunk (which goes first rotating with the chunk), so all see the
same machine state; each is the best of --repeats passes (on a shared machine the others carry
other processes' load). Printed: each one's seconds per pass and µs per second of audio, and
the meter's cost as % of resample, of frontend and of both. ``meter, one call`` is the meter
over the whole signal in one ``accept_waveform`` (the C++ alone, without a Python call per
chunk).

    python benchmarks/loudness.py [--seconds 60] [--repeats 5] [--chunk-ms 100]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from streamtag import _core  # noqa: E402
from streamtag.audio.loudness import LoudnessMeter  # noqa: E402
from streamtag.audio.testsignals import music_like  # noqa: E402
from streamtag.frontend import LogMelOptions, OnlineLogMel  # noqa: E402
from streamtag.sources.resample import Resampler  # noqa: E402

RATES = (44100, 48000)
# The default model's frontend (models/default/MODEL_CARD.md), as benchmarks/frontend_level.py
# configures it.
DEFAULT_MODEL = LogMelOptions(sample_rate=16000, n_fft=2048, hop_length=512, center=True,
                              pad_mode="reflect", n_mels=192, fmax=8000.0, log="log1p")
METER, RESAMPLE, FRONTEND = range(3)
NAMES = ("meter", "resample", "frontend")


def stereo(seconds: float, sample_rate: int) -> np.ndarray:
    """(frames, 2) float32: two music-like signals, about -20 LUFS."""
    return np.stack([0.3 * music_like(seconds, sample_rate, seed=seed) for seed in (1, 2)],
                    axis=1)


def one_pass(chunks: list[np.ndarray], sample_rate: int, order: int) -> list[float]:
    """Seconds of the meter, the resampler and the frontend over the chunks, alternating."""
    meter = LoudnessMeter()
    resampler = Resampler(DEFAULT_MODEL.sample_rate)
    frontend = OnlineLogMel(DEFAULT_MODEL)
    clock = time.perf_counter
    spent = [0.0, 0.0, 0.0]
    for k, chunk in enumerate(chunks):
        # The frontend takes the resampler's output, so it follows it; the meter goes first,
        # between or last, in turn.
        turn = [[METER, RESAMPLE, FRONTEND], [RESAMPLE, METER, FRONTEND],
                [RESAMPLE, FRONTEND, METER]][(k + order) % 3]
        mono = None
        for which in turn:
            start = clock()
            if which == METER:
                meter.accept(chunk, sample_rate)
                meter.pop_blocks()
            elif which == RESAMPLE:
                mono = resampler.process(chunk, sample_rate)
            else:
                frontend.accept_waveform(mono)
                frontend.pop()
            spent[which] += clock() - start
    return spent


def one_call(signal: np.ndarray, sample_rate: int) -> float:
    meter = _core.LoudnessMeter(sample_rate, [1.0, 1.0])
    start = time.perf_counter()
    meter.accept_waveform(signal)
    meter.pop_blocks()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-ms", type=float, default=100.0)
    args = parser.parse_args()
    print(f"{args.seconds:.0f} s of stereo music-like audio in {args.chunk_ms:g} ms chunks, "
          f"best of {args.repeats} passes, single thread")
    print(f"{'input':10s} {'':16s} {'s/pass':>9s} {'µs per s':>9s}")
    for sample_rate in RATES:
        signal = stereo(args.seconds, sample_rate)
        step = int(round(args.chunk_ms / 1000 * sample_rate))
        chunks = [signal[i:i + step] for i in range(0, len(signal), step)]
        one_pass(chunks[:30], sample_rate, 0)  # warm up
        best = [float("inf")] * 3
        best_one_call = float("inf")
        for r in range(args.repeats):
            for which, seconds in enumerate(one_pass(chunks, sample_rate, r)):
                best[which] = min(best[which], seconds)
            best_one_call = min(best_one_call, one_call(signal, sample_rate))
        label = f"{sample_rate / 1000:g} kHz"
        rows = [*zip(NAMES, best, strict=True), ("meter, one call", best_one_call)]
        for name, seconds in rows:
            print(f"{label:10s} {name:16s} {seconds:9.4f} {1e6 * seconds / args.seconds:9.1f}")
            label = ""
        meter, resample, frontend = best
        print(f"{'':10s} meter / resample {100 * meter / resample:6.1f} %   "
              f"/ frontend {100 * meter / frontend:6.1f} %   "
              f"/ (resample + frontend) {100 * meter / (resample + frontend):6.1f} %")


if __name__ == "__main__":
    main()
