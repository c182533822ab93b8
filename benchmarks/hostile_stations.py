"""What one station costs the daemon's CPU, honest and hostile, side by side in one run
(docs/security.md, "A station is untrusted").

Each station of tests/support/hostile_station.py is read by an HTTP source at real time in a
process of its own for `--seconds`; printed per station: the source's CPU seconds (its
process's user and system time from opening the source to the end), the audio it decoded,
its connections and why each ended, and its CPU as a multiple of the honest MP3 station's.
Stations are measured in turn, `--rounds` times alternated, and the median is shown (the
machine is shared). The hostile ones:

- ``/flood``: ICY metadata every 256 audio bytes, each block a new title of 4 kB, at the
  station's real time;
- ``/chunk-ext``, ``/tiny-chunks``: chunked answers whose size lines carry 60 kB extensions
  per 100 bytes of audio, or whose chunks are one byte each;
- ``/continue-flood``, ``/trailer-flood``: "100 Continue" for ever, a trailer for ever;
- ``/m4a-title``, ``/wav-list``: 8 kB heads that declare a 1 GB title (peak memory shown).

    python benchmarks/hostile_stations.py [--seconds 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.hostile_station import HostileStation, bare_mp3, measure_in_subprocess  # noqa: E402

HONEST = ("/radio", "/chunked")
HOSTILE = ("/flood", "/chunk-ext", "/tiny-chunks", "/continue-flood", "/trailer-flood",
           "/m4a-title", "/wav-list")
ICY_BYTES_PER_S = 16000 / 256 * (256 + 1 + 4080)  # /flood's audio at 128 kbit/s, real time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamtag-hostile-") as folder:
        mp3 = bare_mp3(Path(folder) / "station.mp3")
        station = HostileStation(mp3, bytes_per_s=ICY_BYTES_PER_S)
        runs: dict[str, list[dict]] = {path: [] for path in HONEST + HOSTILE}
        try:
            for _ in range(args.rounds):
                for path in runs:
                    before = station.paths().count(path)
                    report = measure_in_subprocess(station.url(path), args.seconds)
                    report["connections"] = station.paths().count(path) - before
                    runs[path].append(report)
        finally:
            station.stop()
    honest_cpu = statistics.median(r["cpu_s"] for r in runs["/radio"])
    print(f"{args.seconds:g} s a station, median of {args.rounds} alternated rounds; "
          "CPU as a multiple of the honest MP3 station's")
    print(f"{'station':<16} {'CPU s':>6} {'x honest':>8} {'audio s':>8} {'conns':>6} "
          f"{'peak MB':>8}  why connections ended")
    for path, reports in runs.items():
        cpu = statistics.median(r["cpu_s"] for r in reports)
        audio = statistics.median(r["samples"] / 16000 for r in reports)
        connections = statistics.median(r["connections"] for r in reports)
        peak = max(r["growth_mb"] for r in reports)
        reasons = sorted({reason[:70] for r in reports for reason in r["reasons"]})
        print(f"{path:<16} {cpu:6.3f} {cpu / honest_cpu:8.2f} {audio:8.1f} {connections:6.0f} "
              f"{peak:8.1f}  {'; '.join(reasons) or '-'}")


if __name__ == "__main__":
    main()
