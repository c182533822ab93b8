"""Subscribers that misbehave or come and go, against a real daemon: one that never reads, one
that connects late (the control snapshot gives it the current state), one whose link is cut
and restored (it is told exactly what it missed, and that the publisher did not restart)."""

from __future__ import annotations

import selectors
import socket
import threading
import time

import numpy as np
import pytest
import zmq
from support.helpers import collect, free_port, make_config, started, wait_for_heartbeat, wait_until

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.daemon.config import PublishConfig, SourceConfig
from streamtag.daemon.daemon import Daemon
from streamtag.engine.batching import EngineConfig
from streamtag.engine.smoothing import SmoothingConfig
from streamtag.wire.control import control_request
from streamtag.wire.subscriber import Subscriber
from tests.reliability.faultkit import final_statuses, of_stream


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    files = {}
    for i, seconds in enumerate((6.0, 5.0, 4.0)):
        files[i] = root / f"m{i}.flac"
        write_audio(files[i], music_like(seconds, 16000, seed=60 + i), 16000)
    return files


def catch_up(sub: Subscriber, limit_s: float = 20.0) -> list:
    """What a subscriber has queued: messages until only heartbeats come (three in a row)."""
    got, beats = [], 0
    deadline = time.monotonic() + limit_s
    while beats < 3 and time.monotonic() < deadline:
        msg = sub.recv(500)
        if msg is None:
            continue
        got.append(msg)
        beats = beats + 1 if msg.header.msg_type == "heartbeat" else 0
    assert beats == 3, "the subscriber did not catch up"
    return got


def test_a_subscriber_that_never_reads_loses_alone_and_is_told(model_path, music, tmp_path):
    long = {}
    for i in range(3):
        long[i] = tmp_path / f"long{i}.flac"
        write_audio(long[i], music_like(20.0, 16000, seed=70 + i), 16000)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = make_config(model_path, tmp_path, publish=PublishConfig(
        endpoint=endpoint, heartbeat_s=0.1, sndhwm=500),
        engine=EngineConfig(max_wait_ms=5, hop_seconds=0.016))  # a window every frame
    # Small kernel buffers on both ends (as on a slow link), so that what the stalled
    # subscriber does not read overflows the publisher's queue for it within seconds.
    shared = zmq.Context.instance()
    shared.setsockopt(zmq.SNDBUF, 16384)  # the default for sockets made from now on
    try:
        daemon = Daemon(config).start()
    finally:
        shared.setsockopt(zmq.SNDBUF, -1)  # the OS default again
    reader = Subscriber(endpoint)
    tiny = zmq.Context()
    tiny.setsockopt(zmq.RCVBUF, 4096)
    stalled = Subscriber(endpoint, rcvhwm=10, context=tiny)
    ids = {f"s{i}" for i in long}
    try:
        wait_for_heartbeat(reader)
        wait_for_heartbeat(stalled)  # subscribed; from here on it reads nothing
        # Played at five times real time (about 900 messages a second), not as fast as the
        # daemon can (over 4,000): a reader that keeps up is one that reads faster than the
        # daemon publishes, which a reader sharing the daemon's process on a busy machine
        # cannot promise against files read flat out.
        for i, path in long.items():
            daemon.add_source(SourceConfig(f"s{i}", str(path), {"realtime": True,
                                                                 "speed": 5.0}))
        first = collect(reader, ids)
        late = catch_up(stalled)  # it wakes up: its queues hold the oldest messages only
        # A second round on a reused id: the stalled subscriber now reads as it comes, in a
        # thread of its own (its queues hold a few hundred messages; what a stream read flat
        # out publishes while it waited for the other reader would not always fit).
        woke: list = []
        reading = threading.Thread(target=lambda: woke.extend(collect(stalled, {"s0"})))
        reading.start()
        try:
            daemon.add_source(SourceConfig("s0", str(music[2])))
            second = collect(reader, {"s0"})
        finally:
            reading.join(70)
        assert not reading.is_alive() and woke, "the woken subscriber heard no final status"
        late += woke + catch_up(stalled)
    finally:
        daemon.stop()
        reader.close()
        stalled.close()
        tiny.term()
    assert reader.gaps == 0 and reader.invalid == 0
    final = final_statuses(first)
    published = sum(final[s].counters["windows"] for s in ids)
    assert sum(m.header.msg_type == "scores" for m in first) == published
    assert final_statuses(second)["s0"].state == "ended"  # the id was reused
    got_first = [m for m in late if m.header.msg_type == "scores" and m.header.seq
                 < final[m.header.stream].counters["windows"]]
    assert len(got_first) < published  # it lost...
    assert stalled.gaps > 0 and stalled.missed > 0 and stalled.invalid == 0  # ...and knows
    second_round = of_stream(late, "s0", "scores")[-len(of_stream(second, "s0", "scores")):]
    assert [m.body.end_sample for m in second_round] == [
        m.body.end_sample for m in of_stream(second, "s0", "scores")]  # nothing lost now
    assert all(not m.restarted for m in late)


def test_a_late_subscriber_gets_the_current_state_from_the_snapshot(model_path, music,
                                                                    tmp_path):
    config = make_config(model_path, tmp_path, smoothing=SmoothingConfig())
    daemon, early = started(config)
    control = daemon.control.endpoint
    late = None
    try:
        daemon.add_source(SourceConfig("live", str(music[0]), {"realtime": True,
                                                               "speed": 2.0}))
        wait_until(lambda: daemon.status()["streams"]["live"]["counters"].get("windows", 0)
                   >= 5, 10, "five windows")
        late = Subscriber(daemon.publisher.endpoint)
        wait_for_heartbeat(late)
        snap = control_request(control, {"cmd": "snapshot"})
        got_late = collect(late, {"live"}, timeout_s=20)
        got_early = collect(early, {"live"}, timeout_s=5)
    finally:
        daemon.stop()
        early.close()
        if late is not None:
            late.close()
    assert snap["ok"] and snap["session"] == daemon.publisher.session
    state = snap["streams"]["live"]
    n = state["windows"]
    assert n >= 5 and state["tags"] == list(snap["model"]["tags"])
    early_scores = of_stream(got_early, "live", "scores")
    # The snapshot is the state after window n (or the one being scored as it was taken).
    candidates = [m.body for m in early_scores if m.header.seq in (n - 1, n)]
    assert any(np.allclose(state["smoothed"], c.smoothed, atol=1e-6)
               and state["active"] == list(c.active) for c in candidates), (state, candidates)
    late_scores = of_stream(got_late, "live", "scores")
    seqs = [m.header.seq for m in late_scores]
    assert seqs[0] > 0  # it really came late
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert seqs[-1] + 1 == final_statuses(got_late)["live"].counters["windows"]
    assert late.gaps == 0 and late.restarts == 0  # joining mid-session is not a loss


class TcpLink:
    """A TCP forwarder on 127.0.0.1 to `target_port` that can be cut (listener and every
    connection closed) and restored on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._down = threading.Event()

    def up(self) -> None:
        self._down.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)
        self._listener = listener
        self._spawn(self._accept, listener)

    def down(self) -> None:
        self._down.set()
        for thread in self._threads:
            thread.join(5)
            assert not thread.is_alive(), "a link thread did not stop"
        self._threads.clear()
        for sock in [self._listener, *self._conns]:
            sock.close()
        self._conns.clear()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._down.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [client, server]
            self._spawn(self._pump, client, server)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._down.is_set():
                for key, _ in sel.select(0.05):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()


def test_a_subscriber_whose_link_is_cut_counts_exactly_what_it_missed(model_path, music,
                                                                      tmp_path):
    daemon, direct = started(make_config(model_path, tmp_path))
    link = TcpLink(int(daemon.publisher.endpoint.rsplit(":", 1)[1]))
    link.up()
    sub = Subscriber(f"tcp://127.0.0.1:{link.port}")
    got = []
    try:
        wait_for_heartbeat(sub)
        daemon.add_source(SourceConfig("live", str(music[0]), {"realtime": True,
                                                               "speed": 2.0}))
        deadline = time.monotonic() + 10
        while sum(m.header.msg_type == "scores" for m in got) < 4:
            assert time.monotonic() < deadline, "no scores through the link"
            if (msg := sub.recv(100)) is not None:
                got.append(msg)
        link.down()
        time.sleep(1.0)  # about 15 windows are published while the link is down
        link.up()
        got += collect(sub, {"live"}, timeout_s=20)
        everything = collect(direct, {"live"}, timeout_s=5)
    finally:
        daemon.stop()
        link.down()
        sub.close()
        direct.close()
    windows = final_statuses(everything)["live"].counters["windows"]
    scores = of_stream(got, "live", "scores")
    after_gap = [m for m in scores if m.gap]
    assert len(after_gap) == 1 and after_gap[0].gap >= 5  # one hole, reported where it ends
    assert len(scores) + after_gap[0].gap == windows  # exactly what it missed
    assert sub.restarts == 0 and not any(m.restarted for m in got)  # same publisher
    heartbeat_gaps = [m.gap for m in got if m.header.msg_type == "heartbeat" and m.gap]
    assert heartbeat_gaps  # the heartbeat topic shows the outage as well
