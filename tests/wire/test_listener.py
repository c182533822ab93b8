"""Listening sockets that time out (docs/security.md, "Listener limits"): a real daemon whose
metrics port is flooded with idle half-sent requests, from more connections than its open-files
limit allows, keeps answering its probes and control and keeps tagging its station; the
dashboard's per-address cap on pages; /history.json's quantised, cached, bounded answers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

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
from support.helpers import http_get as get

import streamtag
from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like

pytest.importorskip("websockets", reason="the listeners need websockets: pip install websockets")

from streamtag.web.server import DEFAULT_MAX_CLIENTS_PER_ADDRESS  # noqa: E402

FILES_LIMIT = 256  # the daemon's open-files limit (RLIMIT_NOFILE) in the flood test
FLOOD = FILES_LIMIT + 64  # half-sent requests: more than the daemon could hold open
MAX_CONNECTIONS = 32
PER_ADDRESS = 8
HEADER_TIMEOUT_S = 1.5
HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"  # never ends


def streamtag_env() -> dict[str, str]:
    """The environment of a command that runs the streamtag this test imports."""
    return {**os.environ, "PYTHONPATH": str(Path(streamtag.__file__).resolve().parent.parent)}


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def half_sent(port: int, source: str) -> socket.socket | None:
    """A connection from `source` (a loopback address) that sends part of a request head and
    then nothing; None where the server's side would not take it."""
    sock = socket.socket()
    sock.settimeout(0.3)
    try:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(HALF_SENT)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (end of file, or reset); what it answered is read."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:  # reset: closed with our unread bytes in its buffer
        return True


def lower_files_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES_LIMIT, FILES_LIMIT))


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_flood_of_half_sent_requests_leaves_probes_control_and_stations_serving(
        tmp_path, processes):
    """One daemon, or a supervisor of two workers (its port serves what one daemon's would)."""
    publish = f"tcp://127.0.0.1:{free_port()}"
    control = f"tcp://127.0.0.1:{free_port()}"
    port = free_port()
    token_file = tmp_path / "control.token"
    audio = tmp_path / "station.flac"
    write_audio(audio, music_like(20.0, 16000, seed=5), 16000)
    config = daemon_config_file(
        tmp_path / "daemon.toml", tiny_model_file(tmp_path / "tiny.pt"), audio, ["honest"],
        publish=publish, loop=True,
        sections=f'[control]\nendpoint = "{control}"\ntoken_file = "{token_file}"\n\n'
                 f"[metrics]\nport = {port}\nmax_connections = {MAX_CONNECTIONS}\n"
                 f"max_connections_per_address = {PER_ADDRESS}\n"
                 f"header_timeout_s = {HEADER_TIMEOUT_S}\n\n")
    env = {**streamtag_env(), "STREAMTAG_HOME": str(tmp_path / "home")}
    daemon = run_streamtag("run", "--config", str(config), "--processes", str(processes),
                           popen=True, env=env, preexec_fn=lower_files_limit)
    feed = Feed(publish)
    flood: list[socket.socket] = []
    try:
        wait_until(lambda: daemon.poll() is not None or is_ready(port), 120,
                   "the daemon to be ready")
        assert daemon.poll() is None, "the daemon exited"
        wait_until(lambda: feed.count("honest") > 0, 30, "the honest station's first window")
        before = descriptors(daemon.pid)

        # From eight loopback addresses, past both caps and past the open-files limit (a
        # daemon that stops accepting, its descriptors spent, ends the flood early).
        refused = 0
        for i in range(FLOOD):
            sock = half_sent(port, f"127.0.0.{2 + i % 8}")
            if sock is not None:
                flood.append(sock)
            refused = 0 if sock is not None else refused + 1
            if refused == 3:
                break
        flooded = time.monotonic()

        # What the orchestrator, the operator and the listeners ask meanwhile is answered.
        assert get(port, "/healthz") == (200, "serving\n")
        assert get(port, "/readyz")[0] == 200
        held = descriptors(daemon.pid)
        assert held <= before + MAX_CONNECTIONS + 8, (before, held)
        status = run_streamtag("status", "--control", control, "--token-file",
                               str(token_file), "--json", env=env, timeout=60)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["streams"]["honest"]["state"] == "running"
        count = feed.count("honest", since=flooded)
        wait_until(lambda: feed.count("honest", since=flooded) >= count + 5, 30,
                   "the honest station's windows during the flood")

        # Every half-sent request is closed: to make room, or at the header timeout.
        wait_until(lambda: all(closed_by_peer(s) for s in flood), HEADER_TIMEOUT_S + 15,
                   "the half-sent requests to be closed")
        wait_until(lambda: descriptors(daemon.pid) <= before + 4, 15,
                   "the daemon's descriptors to come back")
        metrics = get(port, "/metrics")[1]
        late = re.search(r'streamtag_http_closed_connections_total\{reason="head_late"\} (\S+)',
                         metrics)
        assert late is not None and float(late.group(1)) >= 1, metrics[-2000:]
    finally:
        for sock in flood:
            sock.close()
        feed.close()
        stop_process(daemon, timeout=20)
        stderr = daemon.communicate(timeout=10)[1]  # and closes the pipes
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "EMFILE" not in stderr and "Too many open files" not in stderr, stderr[-3000:]
    # one line for the flood, not one per connection
    assert 1 <= stderr.count("connections closed or refused") <= 2, stderr[-3000:]


def test_past_the_caps_the_oldest_unanswered_connection_makes_room():
    from http import HTTPStatus

    from streamtag.wire.listener import HttpListener, ListenerLimits, plain

    async def answer(request):
        return plain(HTTPStatus.OK, "serving\n")

    listener = HttpListener("127.0.0.1", 0, answer, ListenerLimits(
        max_connections=6, max_per_address=3, header_timeout_s=30.0), "test port")
    try:
        first = [half_sent(listener.port, "127.0.0.2") for _ in range(3)]
        # a fourth from the same address: its oldest is closed, the others stay
        fourth = half_sent(listener.port, "127.0.0.2")
        wait_until(lambda: closed_by_peer(first[0]), 5, "the oldest to be closed")
        others = [half_sent(listener.port, "127.0.0.3") for _ in range(3)]
        # the port is full (6): a probe from a third address closes the oldest of all
        assert get(listener.port, "/healthz") == (200, "serving\n")
        wait_until(lambda: closed_by_peer(first[1]), 5, "the oldest of all to be closed")
        assert not any(closed_by_peer(s) for s in [first[2], fourth, *others])
        assert listener.limiter.closed() == {"room_per_address": 1, "room": 1}
        for sock in [*first, fourth, *others]:
            sock.close()
    finally:
        listener.close()


def test_scrapes_dropped_by_their_clients_log_no_traceback(tmp_path, capfd, caplog):
    """Clients that send part of a request, or a whole one, and reset the connection: the
    port goes on, and neither stderr nor the log gets a traceback for them."""
    from streamtag.daemon.config import (
        ControlConfig,
        DaemonConfig,
        MetricsConfig,
        ModelConfig,
        PublishConfig,
    )
    from streamtag.daemon.daemon import Daemon

    daemon = Daemon(DaemonConfig(
        model=ModelConfig(path=str(tiny_model_file(tmp_path / "tiny.pt")), device="cpu"),
        publish=PublishConfig(endpoint="tcp://127.0.0.1:*"),
        control=ControlConfig(endpoint="tcp://127.0.0.1:*"),
        metrics=MetricsConfig(port=free_port()))).start()
    port = daemon.config.metrics.port
    try:
        for i in range(40):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(HALF_SENT if i % 2 else HALF_SENT + b"\r\n\r\n")
                time.sleep(0.01)  # the server is reading it
                # close with a reset (no linger): the answer has nowhere to go
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert get(port, "/healthz") == (200, "serving\n")
        assert "streamtag_batches_total" in get(port, "/metrics")[1]
    finally:
        daemon.stop()
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.exc_info], caplog.text[-2000:]


# ---------------------------------------------------------------- the dashboard


@pytest.fixture
def dashboards():
    """Dashboards (DashboardThread) stopped at the end of the test."""
    started: list = []
    yield started
    for dashboard in reversed(started):
        dashboard.stop()


def page_from(url: str, source: str):
    """A websocket to the dashboard's /ws from `source` (a loopback address)."""
    from websockets.sync.client import connect

    where = urllib.parse.urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=5,
                                    source_address=(source, 0))
    return connect(url, sock=sock, open_timeout=5)


def test_pages_from_one_address_past_its_cap_are_refused_and_another_address_is_served(
        dashboards):
    from support.dashboard import DashboardThread
    from websockets.exceptions import InvalidStatus

    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}")  # the default caps
    dashboards.append(dashboard)
    with contextlib.ExitStack() as pages:
        admitted, refused = 0, 0
        for _ in range(40):  # idle pages from one address
            try:
                page = pages.enter_context(page_from(dashboard.ws_url, "127.0.0.1"))
            except InvalidStatus as exc:
                assert exc.response.status_code == 503
                assert b"per address" in exc.response.body
                refused += 1
            else:
                assert json.loads(page.recv(timeout=5))["type"] == "hello"
                admitted += 1
        assert admitted == DEFAULT_MAX_CLIENTS_PER_ADDRESS and refused == 40 - admitted
        # another screen, from another address, is let in while they stay
        with page_from(dashboard.ws_url, "127.0.0.2") as screen:
            assert json.loads(screen.recv(timeout=5))["type"] == "hello"


def test_half_sent_requests_to_the_dashboard_are_closed_and_its_pages_still_load(dashboards):
    from support.dashboard import DashboardThread

    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}",
                                header_timeout_s=HEADER_TIMEOUT_S)
    dashboards.append(dashboard)
    before = descriptors(os.getpid())  # the dashboard serves in this process
    flood = [s for i in range(300)
             if (s := half_sent(dashboard.port, f"127.0.0.{2 + i % 8}")) is not None]
    try:
        status, body = get(dashboard.port, "/healthz")
        assert status == 200
        # the server's ends of the flood: no more than its pages and their spare
        held = descriptors(os.getpid()) - before - len(flood)
        assert held <= 32 + 64 + 4, held
        assert json.loads(body)["connections"] <= 32 + 64
        assert get(dashboard.port, "/")[0] == 200
        wait_until(lambda: all(closed_by_peer(s) for s in flood), HEADER_TIMEOUT_S + 15,
                   "the half-sent requests to be closed")
        assert json.loads(get(dashboard.port, "/healthz")[1])["connections"] <= 1
    finally:
        for sock in flood:
            sock.close()


# ---------------------------------------------------------------- /history.json


@pytest.fixture(scope="module")
def history_db(tmp_path_factory):
    """Two minutes of two streams, recorded by a real recorder ten minutes ago."""
    from support.history_station import record

    url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'tags.db'}"
    record(url, lambda station: [m for s in ("radio-1", "radio-2")
                                 for m in station.play(s, range(120), time.time() - 600)])
    return url


def test_history_answers_any_float_span_from_a_few_cached_ones(history_db, dashboards):
    from support.dashboard import DashboardThread

    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}", db=history_db)
    dashboards.append(dashboard)
    answers = []
    for i in range(20):  # a new float each time, all within one minute of an hour
        status, body = get(dashboard.port, f"/history.json?hours={1 + i * 1e-5:.6f}")
        assert status == 200
        answers.append(json.loads(body))
    assert {a["hours"] for a in answers} == {1.0}
    assert len({a["until"] for a in answers}) == 1  # one reading of the database
    assert set(answers[0]["streams"]) == {"radio-1", "radio-2"}
    counts = json.loads(get(dashboard.port, "/healthz")[1])["history_answers"]
    assert counts["computed"] == 1 and counts["cached"] == 19


def test_history_spans_past_the_waiting_bound_are_refused_at_once(history_db, dashboards):
    """Many spans asked together: a few are read, one at a time, the rest refused with 503
    at once; what was read before is still answered from the cache meanwhile."""
    from support.dashboard import DashboardThread

    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}", db=history_db)
    dashboards.append(dashboard)
    assert get(dashboard.port, "/history.json?minutes=60")[0] == 200  # the screen's span
    results: list[int] = []

    def ask(minutes: int) -> None:
        results.append(get(dashboard.port, f"/history.json?minutes={minutes}")[0])

    # 20 at once, and the screen's: under the 24 connections one address may hold, so that
    # every refusal here is the waiting bound's
    askers = [threading.Thread(target=ask, args=(10 + i,)) for i in range(20)]
    for asker in askers:
        asker.start()
    screen = get(dashboard.port, "/history.json?minutes=60")[0]
    for asker in askers:
        asker.join(60)
    assert screen == 200
    assert set(results) <= {200, 503} and len(results) == 20
    counts = json.loads(get(dashboard.port, "/healthz")[1])["history_answers"]
    assert counts["computed"] == 1 + results.count(200)
    assert counts["busy"] == results.count(503)
    assert counts["cached"] >= 1
