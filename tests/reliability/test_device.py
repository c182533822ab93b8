"""A capture device whose sound server dies: a private PulseAudio server is killed during
capture and started again. The daemon reports the loss ("reconnecting" with the reason) and
reopens the device when the server returns; with reconnect=false the stream fails instead."""

from __future__ import annotations

import time

import numpy as np
import pytest
from support.helpers import assert_no_gaps, make_config, started, wait_until
from support.servers import pulse_session

from streamtag.daemon.config import SourceConfig
from tests.reliability.faultkit import of_stream
from tests.reliability.test_network import Watcher


@pytest.fixture
def pulse_server(monkeypatch):
    with pulse_session(monkeypatch, music=True) as server:
        yield server


def test_the_sound_server_dies_during_capture_and_returns(pulse_server, model_path, tmp_path):
    daemon, sub = started(make_config(model_path, tmp_path))
    watcher = Watcher(sub)
    device = {"device_rate": 48000, "channels": 1, "blocksize": 512, "stall_timeout_s": 2.0}
    try:
        daemon.add_source(SourceConfig("room", "device:pulse", {
            **device, "initial_backoff_s": 0.1, "max_backoff_s": 0.4}))
        daemon.add_source(SourceConfig("strict", "device:pulse", {**device,
                                                                   "reconnect": False}))
        watcher.wait_scores("room", 3, 20)
        watcher.wait_scores("strict", 3, 20)
        pulse_server.kill()
        at = watcher.wait_state("room", "reconnecting", 0, 10)
        watcher.wait_state("strict", "failed", 0, 10)
        wait_until(lambda: watcher.states("room").count("reconnecting") >= 3, 10,
                   "reopen attempts while the server is gone")
        before = watcher.scores("room")
        time.sleep(0.3)
        assert watcher.scores("room") == before  # no audio while it is gone
        pulse_server.start()
        watcher.wait_state("room", "running", at, 15)
        watcher.wait_scores("room", before + 3, 20)
        daemon.stop()
        wait_until(lambda: watcher.states("room")[-1:] == ["ended"], 10, "room to end")
    finally:
        daemon.stop()
        messages = watcher.stop()
        sub.close()
    room = of_stream(messages, "room")
    states = [m.body.state for m in room if m.header.msg_type == "status"]
    collapsed = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert collapsed == ["starting", "running", "reconnecting", "running", "ended"], states
    lost = next(m.body for m in room if m.header.msg_type == "status"
                and m.body.state == "reconnecting")
    assert "stopped delivering audio" in lost.error and "pulse" in lost.error
    back = [m.body for m in room if m.header.msg_type == "status" and m.body.state == "running"]
    assert back[-1].counters["reconnects"] >= 1
    assert_no_gaps(room)
    scores = [m.body for m in room if m.header.msg_type == "scores"]
    starts = [s.start_sample for s in scores]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert np.isfinite([s.raw for s in scores]).all()
    strict = [m.body for m in of_stream(messages, "strict", "status")]
    assert [s.state for s in strict] == ["starting", "running", "failed"]
    assert "pulse" in strict[-1].error and "stopped delivering audio" in strict[-1].error
