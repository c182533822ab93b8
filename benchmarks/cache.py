"""Feature cache throughput: decoding (PyAV), resampling (soxr) and log-mel (our frontend) of
whole tracks into the trainer's float16 cache, in × real time per core, for one worker and for
all cores, on a generated set of tracks written as MP3 at 44.1 kHz (what datasets ship).

    python benchmarks/cache.py [--tracks 16] [--seconds 30] [--presets mtg_jamendo musicnn]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.frontend import LogMelOptions
from streamtag.train.cache import FeatureCache
from streamtag.train.datasets import Track


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--presets", nargs="+", default=["mtg_jamendo", "musicnn"])
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="streamtag-cache-bench-") as folder:
        root = Path(folder)
        tracks = []
        for i in range(args.tracks):
            path = root / f"{i:03d}.mp3"
            write_audio(path, music_like(args.seconds, 44100, seed=i), 44100)
            tracks.append(Track(id=f"{i:03d}", tags=[], split="train", audio_path=path))
        print(f"{args.tracks} MP3 tracks of {args.seconds:g} s at 44.1 kHz; {cores} cores")
        print(f"{'preset':14s} {'workers':>7s} {'wall s':>7s} {'x realtime':>11s} "
              f"{'x realtime/core':>16s}")
        for preset in args.presets:
            options = LogMelOptions.preset(preset)
            for workers in sorted({1, cores}):
                cache = FeatureCache(root / f"cache-{preset}-{workers}", options)
                report = cache.build(tracks, workers=workers, progress=False)
                assert not report.failures, report.failures
                print(f"{preset:14s} {workers:7d} {report.wall_seconds:7.2f} "
                      f"{report.realtime_factor:11.0f} {report.realtime_factor_per_core:16.0f}")


if __name__ == "__main__":
    main()
