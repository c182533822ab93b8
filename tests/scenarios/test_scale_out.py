"""Three sharded daemons behind one ``streamtag proxy``, as real processes on 127.0.0.1.

Each daemon is given the same 12 file sources (played at real speed, so the streams run side
by side) and ``--shard K/3``; they publish by connecting to the proxy's frontend, and one
subscriber on the proxy's backend sees everything. What must hold: every stream comes from
exactly one daemon, the one its hash names, with its seq unbroken, whatever order the daemons
start in; a daemon killed with SIGKILL stops only its own streams, and restarted with the same
shard it resumes them under a new session while the others never pause. And the proxy, whose
forwarding runs inside libzmq, still stops on SIGTERM and refuses a busy port in one line.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import pytest
from support.helpers import (
    Feed,
    daemon_config_file,
    free_port,
    is_ready,
    run_streamtag,
    stop_process,
    tiny_model_file,
    wait_until,
)

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.daemon.shard import shard_of
from streamtag.wire.control import control_request
from streamtag.wire.subscriber import Subscriber

SHARDS = 3
STREAMS = [f"radio-{i:02d}" for i in range(12)]
MAX_PAUSE_S = 5.0  # a stream of the tiny model publishes every 0.26 s; 5 s is a pause


class Daemon:
    """``streamtag run --shard K/3`` with the shared config, its control and probe ports."""

    def __init__(self, config_path, shard: int) -> None:
        self.shard = shard
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.metrics_port = free_port()
        self.process = run_streamtag(
            "run", "--config", str(config_path), "--shard", f"{shard}/{SHARDS}",
            "--control", self.control, "--metrics-port", str(self.metrics_port), popen=True)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"shard {self.shard} exited: {self.process.stderr.read()}")
        return is_ready(self.metrics_port)

    def status(self) -> dict:
        return control_request(self.control, {"cmd": "status"}, timeout_ms=5000)

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale_out")
    model = tiny_model_file(root / "tiny.pt")
    audio = root / "station.flac"
    write_audio(audio, music_like(120.0, 16000, seed=4), 16000)
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = daemon_config_file(root / "daemon.toml", model, audio, STREAMS, publish=frontend,
                                connect=True)
    return config, frontend, backend


@pytest.fixture
def proxy(setup):
    _, frontend, backend = setup
    process = run_streamtag("proxy", "--frontend", frontend, "--backend", backend, popen=True)
    yield backend
    stop_process(process)
    process.stdout.close()
    process.stderr.close()


def start(config, order: list[int], daemons: dict[int, Daemon]) -> None:
    """Daemons started one after another in `order` into `daemons`, each ready before the next
    starts."""
    for shard in order:
        daemons[shard] = Daemon(config, shard)
        wait_until(daemons[shard].ready, 60, f"shard {shard} to be ready")


@contextlib.contextmanager
def shards(config, proxy: str, order: list[int], windows: int):
    """The proxy's feed and the daemons started in `order`, once every stream has published
    `windows` windows through the proxy since then: (feed, daemons, then). Every daemon in
    `daemons` (one started again too) is stopped after."""
    feed = Feed(proxy)
    daemons: dict[int, Daemon] = {}
    try:
        start(config, order, daemons)
        t0 = time.monotonic()
        wait_until(lambda: feed.advanced(STREAMS, t0, windows), 60,
                   "every stream to publish through the proxy")
        yield feed, daemons, t0
    finally:
        for daemon in daemons.values():
            daemon.stop()
        feed.close()


def serving(feed: Feed, daemons: dict[int, Daemon], since: float) -> dict[str, int]:
    """Which shard each stream's scores came from (by session), checking there is one."""
    sessions = {daemon.status()["session"]: shard for shard, daemon in daemons.items()}
    return {stream: sessions[session]
            for stream, session in feed.sessions_of(STREAMS, since).items()}


@pytest.mark.slow
def test_three_shards_serve_every_stream_once_and_a_killed_one_resumes_alone(setup, proxy):
    config, _, _ = setup
    expected = {sid: shard_of(sid, SHARDS) for sid in STREAMS}
    assert set(expected.values()) == set(range(SHARDS))  # every daemon has streams to serve
    with shards(config, proxy, [2, 0, 1], 4) as (feed, daemons, t0):
        assert serving(feed, daemons, t0) == expected

        # SIGKILL shard 1: nothing drains, its streams just stop.
        victim = daemons[1]
        victim_session = victim.status()["session"]
        theirs = [s for s in STREAMS if expected[s] == 1]
        others = [s for s in STREAMS if expected[s] != 1]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        killed_at = time.monotonic()
        # Messages already on the wire may still land; once the others have each published
        # 4 more windows, anything of the killed daemon would have arrived.
        wait_until(lambda: feed.advanced(others, killed_at, 4), 30,
                   "the other shards' streams to go on")
        frozen = {s: feed.count(s, victim_session) for s in theirs}
        mark = time.monotonic()
        wait_until(lambda: feed.advanced(others, mark, 4), 30,
                   "the other shards' streams to go on")
        assert {s: feed.count(s, victim_session) for s in theirs} == frozen
        assert all(feed.count(s, since=mark) == 0 for s in theirs)

        # The same shard again: the same streams come back, under a new session.
        victim.stop()
        start(config, [1], daemons)
        back = time.monotonic()
        wait_until(lambda: feed.advanced(theirs, back, 4), 60,
                   "the restarted shard's streams to resume")
        new_session = daemons[1].status()["session"]
        assert new_session != victim_session
        # Shard 1 now started after 0 and 2 (first it started last but one): same assignment.
        assert serving(feed, daemons, back) == expected
        assert {m.header.stream for _, m in feed.of("scores", back)
                if m.header.session == new_session} == set(theirs)
        restarted = {m.header.stream for _, m in feed.messages
                     if getattr(m, "restarted", False)}
        assert restarted == set(theirs)  # the subscriber saw the new session of those alone
        end = time.monotonic()
        for stream in others:  # they never paused, through the kill and the restart
            pause = feed.longest_pause(stream, t0 + 1.0, end)
            assert pause < MAX_PAUSE_S, f"{stream} paused {pause:.1f} s"
        feed.assert_seq_unbroken()


@pytest.mark.slow  # the fast test above already starts the shards in two orders
def test_the_assignment_does_not_depend_on_the_order_the_daemons_start_in(setup, proxy):
    config, _, _ = setup
    with shards(config, proxy, [1, 2, 0], 2) as (feed, daemons, t0):
        assert serving(feed, daemons, t0) == {sid: shard_of(sid, SHARDS) for sid in STREAMS}
        feed.assert_seq_unbroken()



def test_the_proxy_stops_on_sigterm_while_messages_flow():
    # Its forwarding loop runs inside libzmq, which does not look at signals: SIGTERM (a pod
    # being stopped) must still end it, with exit code 0, mid-stream.
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    proxy = run_streamtag("proxy", "--frontend", frontend, "--backend", backend, popen=True)
    stop = threading.Event()
    subscriber = Subscriber(backend)
    try:
        assert "daemons publish to" in proxy.stderr.readline()

        def publish() -> None:
            from streamtag.wire.publisher import Publisher

            with Publisher(frontend, connect=True, linger_ms=0) as publisher:
                while not stop.is_set():
                    publisher.heartbeat(1)

        sender = threading.Thread(target=publish, daemon=True)
        sender.start()
        wait_until(lambda: subscriber.recv(100) is not None, 30, "messages through the proxy")
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(30) == 0, proxy.stderr.read()
    finally:
        stop.set()
        subscriber.close()
        stop_process(proxy)
        proxy.stdout.close()
        proxy.stderr.close()


def test_a_proxy_endpoint_in_use_is_one_line_and_exit_code_2():
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    first = run_streamtag("proxy", "--frontend", frontend, "--backend", backend, popen=True)
    try:
        assert "daemons publish to" in first.stderr.readline()
        second = run_streamtag("proxy", "--frontend", frontend, "--backend",
                               f"tcp://127.0.0.1:{free_port()}", timeout=60)
    finally:
        stop_process(first)
        first.stdout.close()
        first.stderr.close()
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtag proxy: ")
    assert frontend in lines[0] and "in use" in lines[0]


def test_the_proxy_says_the_daemons_it_connects_to():
    """With --upstream, its start line named only the frontend it binds by default."""
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    upstream = f"tcp://127.0.0.1:{free_port()}"
    proxy = run_streamtag("proxy", "--frontend", frontend, "--backend", backend, "--upstream",
                          upstream, popen=True)
    try:
        assert (f"daemons publish to {frontend} and it connects to {upstream}, subscribers "
                f"connect to {backend}") in proxy.stderr.readline()
    finally:
        proxy.terminate()
        proxy.communicate(timeout=30)
