"""Listening sockets that time out (docs/security.md, "Listener limits"): a real daemon whose
metrics port is flooded with idle half-sent requests, from more connections than its open-files
limit allows, keeps answering its probes and control and keeps tagging its station; the
dashboard's per-address cap on pages; /history.json's quantised, cached, bounded answers."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import (
    Feed,
    daemon_config_file,
    free_port,
    is_ready,
    run_streamtag,
    stop_process,
    tiny_model_file,
    wait_until,
)

import streamtag
from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like

FILES_LIMIT = 256  # the daemon's open-files limit (RLIMIT_NOFILE) in the flood test
FLOOD = FILES_LIMIT + 64  # half-sent requests: more than the daemon could hold open
MAX_CONNECTIONS = 32
PER_ADDRESS = 8
HEADER_TIMEOUT_S = 1.5
HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"  # never ends


def streamtag_env() -> dict[str, str]:
    """The environment of a command that runs the streamtag this test imports."""
    return {**os.environ, "PYTHONPATH": str(Path(streamtag.__file__).resolve().parent.parent)}


def get(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, str]:
    """The status and body of GET http://127.0.0.1:PORT/PATH (503 is an answer too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


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


def test_a_flood_of_half_sent_requests_leaves_probes_control_and_stations_serving(tmp_path):
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
    daemon = run_streamtag("run", "--config", str(config), popen=True, env=env,
                           preexec_fn=lower_files_limit)
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
