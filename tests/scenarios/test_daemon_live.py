"""The daemon on live inputs: a real Icecast mount and a PulseAudio capture device.

The servers come from the sources tests' fixtures (they skip, naming the Debian packages, where
icecast2/ffmpeg or PulseAudio are not installed).
"""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
from support.helpers import collect, make_config, started

from streamtag.audio.testsignals import music_like
from streamtag.daemon.config import SourceConfig


def scores_for(sub, stream: str, count: int, timeout_s: float) -> list:
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        msg = sub.recv(200)
        if msg is not None and msg.header.stream == stream and msg.header.msg_type == "scores":
            got.append(msg)
    return got


def test_the_daemon_tags_an_icecast_mount(icecast, model_path, tmp_path):  # noqa: F811
    daemon, sub = started(make_config(model_path, tmp_path))
    try:
        daemon.add_source(SourceConfig("radio", icecast.url,
                                       {"initial_backoff_s": 0.1, "read_timeout_s": 5.0}))
        scores = scores_for(sub, "radio", 4, timeout_s=30)
        assert len(scores) == 4, "no scores from the Icecast stream"
        assert daemon.status()["streams"]["radio"]["state"] == "running"
    finally:
        daemon.stop()
    final = [m for m in collect(sub, {"radio"}, timeout_s=10) if m.header.stream == "radio"]
    sub.close()
    assert final[-1].body.state == "ended"
    starts = [m.body.start_sample for m in scores]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(len(m.body.raw) == 4 for m in scores)


def test_the_daemon_tags_a_pulseaudio_capture(pulse, model_path, tmp_path):  # noqa: F811
    daemon, sub = started(make_config(model_path, tmp_path))
    try:
        daemon.add_source(SourceConfig("room", "device:pulse",
                                       {"device_rate": 48000, "channels": 1}))
        player = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--device=testsink", "--format=float32le",
             "--rate=48000", "--channels=1"], stdin=subprocess.PIPE,
            env={**os.environ, **pulse})
        player.communicate(music_like(4.0, 48000, seed=5).tobytes(), timeout=20)
        scores = scores_for(sub, "room", 5, timeout_s=30)
        assert len(scores) == 5, "no scores from the capture device"
    finally:
        daemon.stop()
    final = [m for m in collect(sub, {"room"}, timeout_s=10) if m.header.stream == "room"]
    sub.close()
    assert final[-1].body.state == "ended"
    assert final[-1].body.counters["dropped_windows"] == 0
    assert np.all(np.isfinite([m.body.raw for m in scores]))
