"""Network faults between a real daemon and real servers: nothing listening, a server that
stalls mid-stream, a server restart, an Icecast mount whose feeder goes away and comes back.
The stream recovers each time and the status topic reports every transition."""

from __future__ import annotations

import http.server
import threading
import time

import numpy as np
import pytest
from support.helpers import assert_no_gaps, free_port, make_config, started, wait_until
from support.servers import AudioServer, Feeder, icecast_server

from streamtag.audio.testsignals import music_like
from streamtag.daemon.config import SourceConfig
from streamtag.sources import HttpSource
from tests.reliability.faultkit import ffmpeg_encode, of_stream
from tests.sources.test_sources import TARGET, read_all

FAST = {"initial_backoff_s": 0.05, "max_backoff_s": 0.3}


class Watcher:
    """Reads a subscriber on a thread, keeping every message, so tests can wait for states."""

    def __init__(self, sub) -> None:
        self.sub, self.messages = sub, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.sub.recv(100)
            if msg is not None:
                self.messages.append(msg)

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(5)
        return list(self.messages)

    def states(self, stream: str) -> list[str]:
        return [m.body.state for m in list(self.messages)
                if m.header.stream == stream and m.header.msg_type == "status"]

    def scores(self, stream: str) -> int:
        return sum(1 for m in list(self.messages)
                   if m.header.stream == stream and m.header.msg_type == "scores")

    def wait_state(self, stream: str, state: str, after: int, timeout: float) -> int:
        """Waits for `state` among the stream's statuses past index `after`; its index."""
        def seen() -> bool:
            return state in self.states(stream)[after:]
        wait_until(seen, timeout, f"status {state!r} of {stream} (so far {self.states(stream)})")
        states = self.states(stream)
        return after + states[after:].index(state)

    def wait_scores(self, stream: str, more_than: int, timeout: float) -> int:
        wait_until(lambda: self.scores(stream) > more_than, timeout,
                   f"scores of {stream} (states {self.states(stream)})")
        return self.scores(stream)


@pytest.fixture
def live_daemon(model_path, tmp_path):
    daemon, sub = started(make_config(model_path, tmp_path))
    watcher = Watcher(sub)
    yield daemon, watcher
    daemon.stop()
    time.sleep(0.3)  # the final statuses reach the watcher
    watcher.stop()
    sub.close()


def finish(daemon, watcher, stream: str) -> list:
    """Stops the daemon and returns the stream's messages (ending with its final status)."""
    daemon.stop()
    wait_until(lambda: watcher.states(stream)[-1:] in (["ended"], ["failed"]), 10,
               f"the final status of {stream}")
    return of_stream(watcher.messages, stream)


def check_recovered_stream(messages) -> None:
    assert_no_gaps(messages)
    starts = [m.body.start_sample for m in messages if m.header.msg_type == "scores"]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # time goes on
    assert np.isfinite([m.body.raw for m in messages if m.header.msg_type == "scores"]).all()


def test_nothing_listening_then_a_server_appears(live_daemon, media):
    daemon, watcher = live_daemon
    server = AudioServer(media["mp3_5s"].read_bytes(), radio=True, bytes_per_s=64000)
    server.port = free_port()  # nothing listens there yet
    daemon.add_source(SourceConfig("radio", server.url(), FAST))
    try:
        watcher.wait_state("radio", "reconnecting", 0, 10)
        time.sleep(0.5)  # a few refused attempts
        refused = [m.body for m in of_stream(watcher.messages, "radio", "status")
                   if m.body.state == "reconnecting"]
        assert len(refused) >= 2 and all("refused" in s.error for s in refused), refused
        assert watcher.scores("radio") == 0
        server.start()
        watcher.wait_state("radio", "running", 0, 10)
        watcher.wait_scores("radio", 2, 20)
        messages = finish(daemon, watcher, "radio")
    finally:
        server.stop()
    assert [s for s in watcher.states("radio") if s != "reconnecting"] == [
        "starting", "running", "ended"]
    check_recovered_stream(messages)


def test_a_server_that_is_never_there_fails_the_stream_and_the_id_can_be_reused(
        live_daemon, media):
    daemon, watcher = live_daemon
    server = AudioServer(media["mp3_5s"].read_bytes(), radio=True, bytes_per_s=64000)
    server.port = free_port()
    url = server.url()
    daemon.add_source(SourceConfig("radio", url, {**FAST, "max_reconnects": 3}))
    watcher.wait_state("radio", "failed", 0, 10)
    statuses = [m.body for m in of_stream(watcher.messages, "radio", "status")]
    assert [s.state for s in statuses] == ["starting"] + ["reconnecting"] * 3 + ["failed"]
    assert url in statuses[-1].error and "gave up after 3" in statuses[-1].error
    assert daemon.status()["streams"]["radio"]["state"] == "failed"
    # Once the server is up, the operator adds the source again under the same id.
    server.start()
    try:
        daemon.add_source(SourceConfig("radio", url, FAST))
        watcher.wait_state("radio", "running", len(statuses), 10)
        watcher.wait_scores("radio", 2, 20)
        messages = finish(daemon, watcher, "radio")
    finally:
        server.stop()
    assert watcher.states("radio")[len(statuses):] == ["starting", "running", "ended"]
    check_recovered_stream(messages)


class StallingServer:
    """Serves an mp3 like a radio at `bytes_per_s`, except that the first `stalls`
    connections get `stall_after` bytes and then nothing, the socket held open."""

    def __init__(self, data: bytes, stalls: int, stall_after: int = 24000,
                 bytes_per_s: float = 64000.0) -> None:
        self.data, self.stalls, self.stall_after = data, stalls, stall_after
        self.bytes_per_s = bytes_per_s
        self.requests = 0
        self._cut = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                stall = owner.requests <= owner.stalls
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.end_headers()
                try:
                    if stall:
                        self.wfile.write(owner.data[: owner.stall_after])
                        self.wfile.flush()
                        owner._cut.wait(60)  # silent, but connected
                        return
                    t0, sent = time.monotonic(), 0
                    while not owner._cut.is_set():
                        start = sent % len(owner.data)
                        piece = owner.data[start: start + 2048]
                        self.wfile.write(piece)
                        sent += len(piece)
                        owner._cut.wait(max(0.0, t0 + sent / owner.bytes_per_s
                                            - time.monotonic()))
                except OSError:
                    return

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/live.mp3"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._cut.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def test_a_server_that_stalls_mid_stream_is_given_up_on_and_reconnected(live_daemon, media):
    daemon, watcher = live_daemon
    server = StallingServer(media["mp3_5s"].read_bytes(), stalls=1)
    try:
        t0 = time.monotonic()
        daemon.add_source(SourceConfig("radio", server.url,
                                       {**FAST, "read_timeout_s": 1.0}))
        at = watcher.wait_state("radio", "running", 0, 10)
        at = watcher.wait_state("radio", "reconnecting", at, 10)
        stalled_for = time.monotonic() - t0
        watcher.wait_state("radio", "running", at, 10)
        before = watcher.scores("radio")
        watcher.wait_scores("radio", before + 3, 20)
        messages = finish(daemon, watcher, "radio")
    finally:
        server.stop()
    assert server.requests >= 2
    assert 0.9 < stalled_for < 6.0  # the read timeout, not forever
    assert watcher.states("radio") == ["starting", "running", "reconnecting", "running",
                                       "ended"]
    reconnecting = [m.body for m in messages if m.header.msg_type == "status"][2]
    assert "no data for 1 s (read_timeout_s)" in reconnecting.error
    assert reconnecting.counters["reconnects"] == 1
    check_recovered_stream(messages)


def test_a_server_restart_on_the_same_port(live_daemon, media):
    daemon, watcher = live_daemon
    server = AudioServer(media["mp3_5s"].read_bytes(), radio=True, bytes_per_s=64000)
    server.start()
    try:
        daemon.add_source(SourceConfig("radio", server.url(), FAST))
        watcher.wait_scores("radio", 2, 20)
        at = 0
        for _ in range(2):
            server.stop()
            at = watcher.wait_state("radio", "reconnecting", at, 10)
            time.sleep(0.3)  # down for a while: refused attempts
            server.start()
            at = watcher.wait_state("radio", "running", at, 10)
            before = watcher.scores("radio")
            watcher.wait_scores("radio", before + 2, 20)
        messages = finish(daemon, watcher, "radio")
    finally:
        server.stop()
    states = watcher.states("radio")
    collapsed = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert collapsed == ["starting", "running", "reconnecting", "running", "reconnecting",
                         "running", "ended"]
    check_recovered_stream(messages)


def test_unsigned_8_bit_pcm_over_http_decodes_centred(tmp_path):
    """Unsigned PCM is offset binary (128 is silence); read as signed it gains a DC of 0.5."""
    signal = music_like(1.0, TARGET, seed=41)
    path = ffmpeg_encode(signal, TARGET, tmp_path / "u8.wav", "-c:a", "pcm_u8")
    server = AudioServer(path.read_bytes(), radio=False)
    server.start()
    try:
        chunks = read_all(HttpSource(server.url(), reconnect=False), TARGET)
    finally:
        server.stop()
    out = np.concatenate([c.samples for c in chunks])
    assert out.size == signal.size
    assert np.max(np.abs(out - signal)) <= 1.5 / 128


# -- Icecast: the mount disappears when its feeder stops and returns when it restarts --------


@pytest.fixture
def icecast_feeder(media):
    with icecast_server() as (server, log):
        feeder = Feeder(server, media["mp3_5s"], log)
        try:
            feeder.start()
            yield server, feeder
        finally:
            feeder.stop()


def test_an_icecast_mount_that_disappears_and_returns(icecast_feeder, live_daemon):
    server, feeder = icecast_feeder
    daemon, watcher = live_daemon
    daemon.add_source(SourceConfig("radio", server.url, {**FAST, "read_timeout_s": 3.0}))
    watcher.wait_scores("radio", 2, 20)
    feeder.stop()  # the source client leaves: Icecast drops the mount and its listeners
    at = watcher.wait_state("radio", "reconnecting", 0, 10)
    wait_until(lambda: watcher.states("radio").count("reconnecting") >= 3, 10,
               "attempts while the mount is gone")
    gone = [m.body.error for m in of_stream(watcher.messages, "radio", "status")
            if m.body.state == "reconnecting"]
    assert any("404" in (e or "") for e in gone), gone  # the mount is not there
    feeder.start()
    at = watcher.wait_state("radio", "running", at, 15)
    before = watcher.scores("radio")
    watcher.wait_scores("radio", before + 2, 20)
    messages = finish(daemon, watcher, "radio")
    states = watcher.states("radio")
    assert states[:2] == ["starting", "running"] and states[-2:] == ["running", "ended"]
    assert "reconnecting" in states
    check_recovered_stream(messages)
