"""The daemon's broadcast: engine results become protocol messages, in the order a subscriber
reads them, over a real PUB socket on 127.0.0.1 (no daemon, no model)."""

from __future__ import annotations

import threading
import time

import numpy as np

from streamtag.daemon.broadcast import Broadcast
from streamtag.engine.health import SilenceEvent
from streamtag.engine.scoring import WindowResult
from streamtag.engine.smoothing import TagEvent
from streamtag.engine.tracks import SCORE_DECIMALS, TrackSummary
from streamtag.wire.protocol import (
    EventBody,
    HeartbeatBody,
    ScoresBody,
    SilenceBody,
    StatusBody,
    TrackBody,
)
from streamtag.wire.publisher import Publisher
from streamtag.wire.subscriber import ReceivedMessage, Subscriber

RATE = 16000.0
TAGS = ("rock", "calm")


def heard(sub: Subscriber, n: int, timeout_s: float = 5.0) -> list[ReceivedMessage]:
    """The next ``n`` messages that are not heartbeats."""
    got: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        message = sub.recv(100)
        if message is not None and not isinstance(message.body, HeartbeatBody):
            got.append(message)
    return got


def first_heartbeat(sub: Subscriber, timeout_s: float = 5.0) -> HeartbeatBody:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = sub.recv(100)
        if message is not None and isinstance(message.body, HeartbeatBody):
            return message.body
    raise AssertionError("no heartbeat arrived")


def window(silence: list[SilenceEvent], events: list[TagEvent]) -> WindowResult:
    return WindowResult(stream_id="radio-1", index=3, start_sample=48000, end_sample=96000,
                        sample_rate=RATE, tags=TAGS, raw=np.array([0.9, 0.2]),
                        smoothed=np.array([0.8, 0.1]), active=("rock",), events=events,
                        latency_ms=7.0, model_name="tiny", model_hash="sha256:ab",
                        silence=silence, content="music")


def track(title: str) -> TrackSummary:
    return TrackSummary(title=title, reason="title_change", start_s=0.0, end_s=3.0,
                        start_sample=0, end_sample=48000, started_at=1.0, ended_at=4.0,
                        windows=1, tags=TAGS, mean_raw=(0.91234567, 0.1), mean_smoothed=(0.8, 0.1),
                        active_share=(1.0, 0.0), active=("rock",), model_name="tiny",
                        model_hash="sha256:ab")


def test_a_window_goes_out_as_its_tracks_silence_events_then_scores():
    broadcast = Broadcast(Publisher("tcp://127.0.0.1:*"))
    try:
        with Subscriber(broadcast.publisher.endpoint) as sub:
            broadcast.start_heartbeat(0.02, lambda: 2)
            assert first_heartbeat(sub).streams == 2  # subscribed: nothing below is lost
            silence = SilenceEvent("on", start_sample=40000, end_sample=96000, sample_rate=RATE,
                                   threshold_dbfs=-50.0)
            event = TagEvent("rock", "on", 0.8, 6.0)
            bodies = broadcast.window(window([silence], [event]), [track("Song A")])
            got = heard(sub, 4)
    finally:
        broadcast.close()
    assert [type(m.body) for m in got] == [TrackBody, SilenceBody, EventBody, ScoresBody]
    assert all(m.stream == "radio-1" for m in got)
    played, dead_air, turned_on, scores = (m.body for m in got)
    assert bodies == [played] and played.title == "Song A"
    assert played.mean_raw[0] == round(0.91234567, SCORE_DECIMALS)  # as every published score
    assert (dead_air.state, dead_air.start_sample, dead_air.start_s) == ("on", 40000, 2.5)
    assert (turned_on.tag, turned_on.state, turned_on.sample) == ("rock", "on", 96000)
    assert scores.active == ("rock",) and scores.content == "music"
    assert (scores.start_sample, scores.end_sample) == (48000, 96000)
    assert broadcast.publisher.closed


def test_a_status_and_a_stream_end_reach_the_subscriber_and_close_stops_the_heartbeat():
    broadcast = Broadcast(Publisher("tcp://127.0.0.1:*"))
    with Subscriber(broadcast.publisher.endpoint) as sub:
        broadcast.start_heartbeat(0.02, lambda: 1)
        first_heartbeat(sub)
        broadcast.status("radio-1", state="running", error=None, counters={"samples": 5},
                         title="Song B", source="file:a.wav", station=None,
                         heard_from_start=True)
        broadcast.events("radio-1", [TagEvent("rock", "off", 0.2, 9.0)], RATE)
        end = SilenceEvent("off", start_sample=40000, end_sample=160000, sample_rate=RATE,
                           threshold_dbfs=-50.0, ended=True)
        broadcast.silence("radio-1", [end])
        status, off, ended = (m.body for m in heard(sub, 3))
        broadcast.close()
        broadcast.close()  # twice is harmless
        assert broadcast.publisher.closed
        assert not [t for t in threading.enumerate() if t.name == "streamtag-heartbeat"]
    assert isinstance(status, StatusBody) and (status.title, status.counters) == (
        "Song B", {"samples": 5})
    assert isinstance(off, EventBody) and (off.state, off.sample) == ("off", 144000)
    assert isinstance(ended, SilenceBody) and ended.ended is True


def test_each_heartbeat_says_its_interval():
    # protocol 1.8: a reader knows when a heartbeat is late without knowing the daemon's config
    broadcast = Broadcast(Publisher("tcp://127.0.0.1:*"))
    try:
        with Subscriber(broadcast.publisher.endpoint) as sub:
            broadcast.start_heartbeat(0.02, lambda: 3)
            beats = [first_heartbeat(sub)]
            while len(beats) < 3:
                msg = sub.recv(1000)
                assert msg is not None, "no heartbeat"
                if msg.header.msg_type == "heartbeat":
                    beats.append(msg.body)
    finally:
        broadcast.close()
    assert [(b.interval_s, b.streams) for b in beats] == [(0.02, 3)] * 3
