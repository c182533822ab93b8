"""A ten-hour file streamed through a real daemon at full speed: memory stays flat (VmRSS of
this process, where the daemon runs), the stream ends with its full duration and every window,
and a subscriber receives them all. Slow: run with -m slow."""

from __future__ import annotations

import threading
import time

import pytest
from support.helpers import make_config, started

from streamtag.daemon.config import SourceConfig
from tests.reliability.faultkit import expected_windows, load_model, require_tools, rss_kib

HOURS = 10
RATE = 8000  # a low rate keeps the file small; the source resamples it to the model's 16 kHz


def ten_hour_flac(folder) -> tuple:
    """Ten minutes of beeps and silence made by ffmpeg, joined 6 * HOURS times without
    re-encoding (FLAC stores the silence in a few bytes a frame)."""
    import subprocess

    require_tools("ffmpeg")
    piece = folder / "ten_minutes.flac"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"aevalsrc=exprs='0.5*sin(2*PI*440*t)*lt(mod(t\\,2)\\,0.25)':s={RATE}:d=600",
                    "-c:a", "flac", str(piece)], check=True, timeout=120)
    listing = folder / "pieces.txt"
    listing.write_text("".join(f"file '{piece}'\n" for _ in range(6 * HOURS)))
    long = folder / "ten_hours.flac"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-c", "copy", str(long)], check=True, timeout=300)
    return long, HOURS * 3600.0


class Counter:
    """Counts scores and seq gaps on a thread (it must keep up with a full-speed daemon)."""

    def __init__(self, sub) -> None:
        self.sub, self.scores, self.final = sub, 0, None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 3600
        while self.final is None and time.monotonic() < deadline:
            msg = self.sub.recv(200)
            if msg is None or msg.header.stream != "long":
                continue
            if msg.header.msg_type == "scores":
                self.scores += 1
            elif msg.header.msg_type == "status" and msg.body.state in ("ended", "failed"):
                self.final = msg.body

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@pytest.mark.slow
def test_a_ten_hour_file_streams_with_flat_memory(model_path, tmp_path):
    path, seconds = ten_hour_flac(tmp_path)
    daemon, sub = started(make_config(model_path, tmp_path))
    counter = Counter(sub)
    samples_needed = seconds * 16000
    rss: list[tuple[int, int]] = []  # (samples taken, VmRSS KiB)
    try:
        daemon.add_source(SourceConfig("long", str(path)))
        deadline = time.monotonic() + 1800
        while not daemon.idle() and time.monotonic() < deadline:
            counters = daemon.status()["streams"]["long"]["counters"]
            rss.append((counters.get("samples", 0), rss_kib()))
            time.sleep(1.0)
        assert daemon.idle(), "the ten hours did not stream within 30 minutes"
        counter.join(60)
    finally:
        daemon.stop()
        sub.close()
    final = counter.final
    assert final is not None and final.state == "ended", final
    samples = final.counters["samples"]
    assert abs(samples - samples_needed) <= 4
    windows = expected_windows(samples, load_model(model_path))
    assert final.counters["windows"] == windows == counter.scores
    assert sub.gaps == 0
    # Flat: from the first hour on, the resident set grows by less than 5 % (and 32 MiB).
    warm = next(kib for taken, kib in rss if taken >= samples_needed / HOURS)
    peak = max(kib for _, kib in rss)
    print(f"ten hours: VmRSS {rss[0][1] / 1024:.1f} MiB at the start, {warm / 1024:.1f} MiB "
          f"after an hour, peak {peak / 1024:.1f} MiB, {counter.scores} windows")
    assert peak - warm < min(0.05 * warm, 32 * 1024), (warm, peak, rss[:: max(1, len(rss) // 20)])
