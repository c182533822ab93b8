"""Connection caps on the ZeroMQ ports (docs/security.md, "ZeroMQ port limits"): idle peers on
the feed and on control, past a daemon's open-files limit, leave its descriptors below the limit;
an honest subscriber, a signed control request, a station's reconnection and /healthz are all
served meanwhile. Real sockets on loopback, a real daemon under a low limit; the guard's rule
(the oldest unauthenticated connection goes first) on a socket of the test's own."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.utils.monitor
from support.helpers import (
    Feed,
    OggStation,
    free_port,
    http_get,
    is_ready,
    run_python,
    run_streamtag,
    stop_process,
    tiny_model_file,
    wait_until,
)
from support.hostile_station import vorbis_ogg

import streamtag
from streamtag.wire.admission import FilterKeeper, program
from streamtag.wire.control import ControlServer, control_request, mac_of
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.guard import MIN_AGE_S, ConnectionGuard
from streamtag.wire.security import client_curve, generate_keys

pytest.importorskip("websockets", reason="the metrics port needs websockets: pip install "
                                         "websockets")

FILES_LIMIT = 256  # the daemon's open-files limit (RLIMIT_NOFILE) under the flood
FLOOD_ADDRESSES = 8  # loopback addresses 127.0.0.2-9 the flood comes from
ZMQ_PEERS = 120  # idle ZeroMQ peers on each port (SUB on the feed, DEALER on control)
RAW_PEERS = 60  # idle TCP connections on each port, which never greet
STATION_S = 3.0  # the station's Ogg, played once a request: the source reconnects after each


def lower_files_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES_LIMIT, FILES_LIMIT))


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_tcp(port: int, source: str, wait_s: float | None = 0.5) -> socket.socket | None:
    """A TCP connection from ``source`` that sends nothing (no ZeroMQ greeting); None when it
    was not taken within ``wait_s``. ``wait_s`` None: the connection is asked for and the
    socket returned at once, taken or not (the kernel keeps asking)."""
    sock = socket.socket()
    try:
        sock.bind((source, 0))
        if wait_s is None:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            return sock
        sock.settimeout(wait_s)
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def taken(sock: socket.socket) -> bool:
    """Whether a connection asked for without waiting was taken (and is still open)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return not closed_by_peer(sock)


def tcp_port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_a_flood_of_idle_zeromq_peers_leaves_feed_control_stations_and_probes_serving(
        tmp_path):
    publish = f"tcp://127.0.0.1:{free_port()}"
    control = f"tcp://127.0.0.1:{free_port()}"
    metrics = free_port()
    token_file = tmp_path / "control.token"
    station = OggStation(vorbis_ogg(STATION_S, 16000), STATION_S)
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'[model]\npath = "{tiny_model_file(tmp_path / "tiny.pt")}"\ndevice = "cpu"\n\n'
        f'[publish]\nendpoint = "{publish}"\nheartbeat_s = 0.2\n\n'
        f'[control]\nendpoint = "{control}"\ntoken_file = "{token_file}"\n\n'
        f"[metrics]\nport = {metrics}\nmax_connections = 16\n\n"
        f"[engine]\nmax_wait_ms = 5\n\n"
        f'[[sources]]\nid = "radio"\nspec = "{station.url}"\n')
    env = {**os.environ, "STREAMTAG_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(Path(streamtag.__file__).resolve().parent.parent)}
    daemon = run_streamtag("run", "--config", str(config), popen=True, env=env,
                           preexec_fn=lower_files_limit)
    context = zmq.Context()
    hostile: list[zmq.Socket] = []
    raw: list[socket.socket] = []
    feed = honest = None
    try:
        wait_until(lambda: daemon.poll() is not None or is_ready(metrics), 120,
                   "the daemon to be ready")
        assert daemon.poll() is None, "the daemon exited"
        feed = Feed(publish)
        wait_until(lambda: feed.count("radio") > 0, 60, "the station's first window")
        most = descriptors(daemon.pid)

        # Idle peers from eight loopback addresses, more than the daemon's limit in all:
        # ZeroMQ peers that greet and then say nothing (and connect again when ended), and
        # TCP connections that never greet.
        for kind, endpoint in ((zmq.SUB, publish), (zmq.DEALER, control)):
            for i in range(ZMQ_PEERS):
                peer = context.socket(kind)
                peer.setsockopt(zmq.LINGER, 0)
                source = f"127.0.0.{2 + i % FLOOD_ADDRESSES}"
                peer.connect(f"tcp://{source}:0;127.0.0.1:{tcp_port(endpoint)}")
                hostile.append(peer)
            for i in range(RAW_PEERS):
                sock = idle_tcp(tcp_port(endpoint), f"127.0.0.{2 + i % FLOOD_ADDRESSES}",
                                wait_s=None)
                if sock is not None:
                    raw.append(sock)
                most = max(most, descriptors(daemon.pid))
        assert len(hostile) + len(raw) > FILES_LIMIT
        flooded = time.monotonic()
        requests = station.requests

        def watched(predicate):
            def check() -> bool:
                nonlocal most
                most = max(most, descriptors(daemon.pid))
                return predicate()
            return check

        # A subscriber that joins now hears the station; the station, which ends its play
        # every few seconds, is reached again; the probes and a signed request are answered.
        honest = Feed(publish)
        wait_until(watched(lambda: honest.count("radio") >= 3), 60,
                   "the station's windows at a subscriber that joined during the flood")
        wait_until(watched(lambda: station.requests >= requests + 2), 60,
                   "the station to be reached again during the flood")
        wait_until(watched(lambda: feed.count("radio", since=time.monotonic() - 2) > 0
                           and station.requests >= requests + 2), 30,
                   "windows after the station's reconnection")
        assert http_get(metrics, "/healthz") == (200, "serving\n")
        status = run_streamtag("status", "--control", control, "--token-file",
                               str(token_file), "--json", env=env, timeout=60)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["streams"]["radio"]["state"] in ("running",
                                                                          "reconnecting")
        for _ in range(20):  # the flood goes on: ended ZeroMQ peers connect again
            most = max(most, descriptors(daemon.pid))
            time.sleep(0.05)
        assert most < FILES_LIMIT, most
        assert feed.count("radio", since=flooded) > 0
    finally:
        for peer in hostile:
            peer.close(linger=0)
        for sock in raw:
            sock.close()
        context.term()
        for reader in (feed, honest):
            if reader is not None:
                reader.close()
        stop_process(daemon, timeout=20)
        stderr = daemon.communicate(timeout=10)[1]
        station.close()
        print(stderr[-5000:])  # shown where the test failed: what the daemon said
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Too many open files" not in stderr and "EMFILE" not in stderr, stderr[-3000:]
    assert "ended to make room" in stderr, stderr[-3000:]
    # the caps fitted within the limit are said, with the fix
    assert "open-files limit (256)" in stderr and "LimitNOFILE" in stderr, stderr[-3000:]


def guarded(kind: int, caps: ConnectionCaps) -> tuple[zmq.Context, zmq.Socket,
                                                       ConnectionGuard, int]:
    context = zmq.Context()
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    guard = ConnectionGuard(sock, caps, "test")
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    guard.start()
    return context, sock, guard, port


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_past_the_cap_for_one_address_the_kernel_takes_no_more_from_it_and_others_come_in():
    # Ended connections connect again at once (ZeroMQ's every 100 ms): ending them was not
    # enough. An address at its cap is dropped by the kernel until it has an unauthenticated
    # connection MIN_AGE_S old to make room with; other addresses are taken as before.
    context, sock, guard, port = guarded(zmq.PUB, ConnectionCaps(64, 4))
    crowd: list[socket.socket] = []
    try:
        crowd = [idle_tcp(port, "127.0.0.3", wait_s=None) for _ in range(4)]
        wait_until(lambda: guard.open == 4, 10, "the crowded address's first four")
        wait_until(lambda: guard.blocked == frozenset({"127.0.0.3"}), 10,
                   "the kernel told to drop the crowded address")
        late = [idle_tcp(port, "127.0.0.3", wait_s=None) for _ in range(3)]
        crowd += late
        other = idle_tcp(port, "127.0.0.2", wait_s=2.0)
        assert other is not None, "another address was not taken"
        crowd.append(other)
        wait_until(lambda: guard.open == 5, 10, "the other address's connection")
        time.sleep(0.5)  # the late ones' requests were dropped: never accepted, none ended
        assert not any(taken(s) for s in late) and guard.ended() == {}
        assert all(taken(s) for s in crowd[:4])
        # once the crowd's connections have aged, a late one replaces the oldest
        wait_until(lambda: any(taken(s) for s in late), MIN_AGE_S + 10,
                   "a late connection taken once the oldest had aged")
        wait_until(lambda: closed_by_peer(crowd[0]), 10, "the oldest one's end")
        assert guard.ended().get("room_per_address", 0) >= 1
    finally:
        for s in crowd:
            s.close()
        guard.close()
        sock.close()
        context.term()



def test_past_the_port_cap_the_most_crowded_address_makes_room_not_an_older_reader():
    # A reader from an address of its own came first; a flood from one address fills the port.
    # A newcomer from a third address is taken, and the flood's oldest makes room for it: the
    # reader, though the oldest unauthenticated connection of all, stays.
    context, sock, guard, port = guarded(zmq.PUB, ConnectionCaps(8, 8))
    opened: list[socket.socket] = []
    try:
        reader = idle_tcp(port, "127.0.0.2", wait_s=2.0)
        assert reader is not None
        opened.append(reader)
        wait_until(lambda: guard.open == 1, 10, "the reader's connection")
        crowd = [idle_tcp(port, "127.0.0.3", wait_s=2.0) for _ in range(7)]
        opened += [s for s in crowd if s is not None]
        wait_until(lambda: guard.open == 8, 10, "the port full")
        newcomer = idle_tcp(port, "127.0.0.4", wait_s=2.0)
        assert newcomer is not None, "an address holding nothing was not taken at the cap"
        opened.append(newcomer)
        wait_until(lambda: guard.ended().get("room", 0) == 1, 10, "room made for the newcomer")
        wait_until(lambda: sum(closed_by_peer(s) for s in crowd if s is not None) == 1, 10,
                   "one of the flood's connections ended")
        assert taken(reader) and taken(newcomer)
        assert guard.open == 8
    finally:
        for s in opened:
            s.close()
        guard.close()
        sock.close()
        context.term()


GUARD_CLOSES_UNDER_UNREAD_EVENTS = """
import contextlib, socket, zmq
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.guard import ConnectionGuard

context = zmq.Context()
sock = context.socket(zmq.PUB)
sock.setsockopt(zmq.LINGER, 0)
guard = ConnectionGuard(sock, ConnectionCaps(4096, 4096), "test")  # never started
port = sock.bind_to_random_port("tcp://127.0.0.1")
made = 0
with contextlib.suppress(OSError):  # until the port takes no more, or 1500
    while made < 1500:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            made += 1  # an event as it is taken, one as it ends
print(made, flush=True)
guard.close()  # as a publisher closes: the guard, the socket, the context
sock.close(linger=0)
context.term()
print("closed", flush=True)
"""


GUARD_AT_THE_FILES_LIMIT = """
import os, resource, socket, time, zmq
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.guard import ConnectionGuard

hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
soft = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # a limit quick to fill
context = zmq.Context()
sock = context.socket(zmq.PUB)
sock.setsockopt(zmq.LINGER, 0)
guard = ConnectionGuard(sock, ConnectionCaps(2, 2), "test")  # its events read here, by hand
port = sock.bind_to_random_port("tcp://127.0.0.1")
guard.handle_events()  # the socket listens
before = len(os.listdir("/proc/self/fd"))
clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
deadline = time.monotonic() + 10
while len(os.listdir("/proc/self/fd")) < before + 8 and time.monotonic() < deadline:
    time.sleep(0.01)  # libzmq has taken all four (four ends here, four there)
filler = []
try:
    while True:  # the process at its open-files limit, as a flood's burst leaves it
        filler.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
guard.handle_events()  # four connections, past a cap of two
for fd in filler:
    os.close(fd)
ended = 0
for client in clients:  # libzmq's greeting, then the end of the connection where it was ended
    client.settimeout(2)
    try:
        while client.recv(4096):
            pass
        ended += 1
    except TimeoutError:
        pass
print(ended, guard.open, flush=True)
"""


def test_at_the_open_files_limit_the_guard_still_ends_connections_past_its_cap():
    # A flood's burst can take every descriptor before the guard has read of it; the guard
    # looks at each connection on a copy of its descriptor, and with none left to copy into it
    # must still end those past the cap, or they stay and the process stays at its limit
    ended, open_ = map(int, run_python(GUARD_AT_THE_FILES_LIMIT, timeout=60).split())
    assert (ended, open_) == (2, 2)


def test_a_guard_closes_when_the_events_it_has_not_read_fill_its_monitor():
    # libzmq sends each monitor event, the last one of disable_monitor included, with a
    # blocking send, and pyzmq's disable_monitor holds the interpreter meanwhile. With a couple
    # of thousand events unread (the guard's reading stopped as it closed, during a flood),
    # closing the guard waited for ever, every thread of the process with it. A guard that
    # never reads stands for one that stopped; in a process of its own, which is killed when
    # it waits.
    try:
        out = run_python(GUARD_CLOSES_UNDER_UNREAD_EVENTS, timeout=60).split()
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"closing waited for room in the guard's monitor (it printed "
                             f"{exc.stdout!r})") from None
    assert int(out[0]) >= 1000 and out[1:] == ["closed"], out  # 2,000 events at least, unread


MONITOR_HOLDS_UNREAD_EVENTS = """
import socket, time, zmq
from streamtag.wire.sockets import MONITOR_EVENTS_HELD, monitor_socket, stop_monitor

held = HELD_ARGUMENT
context = zmq.Context()
sock = context.socket(zmq.SUB)
sock.setsockopt(zmq.LINGER, 0)
monitor = monitor_socket(sock, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED, held)
port = sock.bind_to_random_port("tcp://127.0.0.1")
made = 0
try:  # an event as each is taken and one as it ends, none read
    while made < 1500:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            made += 1
except OSError:  # the port took no more: the monitor is full
    pass
time.sleep(1.0)  # for the I/O thread to see the last ones end
events = 0
while held == MONITOR_EVENTS_HELD and monitor.poll(0):
    events += len(monitor.recv_multipart()) // 2
stop_monitor(sock, monitor)  # what is left unread is dropped first
sock.close()
context.term()
print(made, events)
"""


@pytest.mark.parametrize("held", [None, 500])
def test_the_monitors_of_subscribers_and_clients_hold_a_bounded_number_of_unread_events(held):
    # A subscriber reads its monitor's events (reconnection attempts, every 100 ms while the
    # publisher is away) only as the program asks for messages. With libzmq's mark alone, a
    # program that asked for none for a few minutes stopped the I/O thread (its reconnections
    # with it), and closing the subscriber waited for ever. The monitor now holds
    # MONITOR_EVENTS_HELD more; past that the I/O thread waits still, and closing still ends.
    try:
        code = MONITOR_HOLDS_UNREAD_EVENTS.replace(
            "HELD_ARGUMENT", "MONITOR_EVENTS_HELD" if held is None else str(held))
        made, events = map(int, run_python(code, timeout=60).split())
    except subprocess.TimeoutExpired:
        raise AssertionError("closing waited for room in the monitor") from None
    if held is None:  # 3,000 events, past the two thousand or so of libzmq's mark alone
        assert made == 1500 and events >= 2500, (made, events)
    else:  # the port stopped short of 1,000 connections (852 measured; libzmq's mark alone
        # let 1,101 in), and closing ended
        assert 500 < made < 1000, made


def test_control_keeps_a_connection_that_made_a_signed_request_over_newer_idle_ones(tmp_path):
    token = "t" * 40
    server = ControlServer("tcp://127.0.0.1:*", token=token,
                           caps=ConnectionCaps(4, 4)).start()
    context = zmq.Context()
    signed = context.socket(zmq.REQ)
    crowd: list[socket.socket] = []
    try:
        assert server.endpoint is not None
        port = tcp_port(server.endpoint)
        # the oldest connection: idle, unauthenticated
        first = idle_tcp(port, "127.0.0.1")
        wait_until(lambda: server.guard is not None and server.guard.open == 1, 10,
                   "the idle connection")
        signed.setsockopt(zmq.LINGER, 0)
        signed.connect(server.endpoint)
        # a signed request on this REQ's connection, as control_request makes it
        signed.send(b'{"cmd": "challenge"}')
        assert signed.poll(5000)
        nonce = json.loads(signed.recv())["nonce"]
        payload = b'{"cmd": "ping"}'
        auth = json.dumps({"nonce": nonce, "mac": mac_of(token.encode(), nonce.encode(),
                                                         payload)}).encode()
        signed.send_multipart([auth, payload])
        assert signed.poll(5000)
        assert json.loads(signed.recv_multipart()[1])["ok"]
        # more idle ones than the cap, as fast as they come: the kernel holds them back until
        # the oldest idle one has aged, then each takes the place of the oldest idle one
        crowd = [idle_tcp(port, "127.0.0.1", wait_s=None) for _ in range(6)]
        wait_until(lambda: closed_by_peer(first), MIN_AGE_S + 15,
                   "the oldest idle connection's end")
        assert server.guard.ended().get("room_per_address", 0) >= 1
        assert control_request(server.endpoint, {"cmd": "ping"}, token=token,
                               timeout_ms=round((MIN_AGE_S + 15) * 1000))["ok"]
        # the signed connection still answers on the same socket
        signed.send(b'{"cmd": "challenge"}')
        assert signed.poll(5000), "the signed connection was ended"
        signed.recv()
        first.close()
    finally:
        for s in crowd:
            s.close()
        signed.close(linger=0)
        context.term()
        server.stop()


def test_the_kernel_drops_the_blocked_addresses_and_takes_the_rest():
    # the programs streamtag.wire.admission makes, on real listening sockets (IPv4, IPv6 and
    # IPv4 on a dual-stack socket)
    keeper = FilterKeeper()

    def takes(port: int, source: str) -> bool:
        sock = idle_tcp(port, source, 0.3)
        if sock is not None:
            sock.close()
        return sock is not None

    four = socket.socket()
    four.bind(("127.0.0.1", 0))
    four.listen(8)
    port = four.getsockname()[1]
    try:
        assert keeper.set_filter(four, program(["127.0.0.2", "127.0.0.5", "::1"]))
        assert [takes(port, f"127.0.0.{n}") for n in (2, 3, 5, 1)] == [False, True, False,
                                                                       True]
        keeper.set_filter(four, program(None))  # everyone
        assert not takes(port, "127.0.0.3")
        keeper.set_filter(four, None)
        assert takes(port, "127.0.0.2")
    finally:
        four.close()
    if not socket.has_ipv6:
        return
    six = socket.socket(socket.AF_INET6)
    try:
        six.bind(("::1", 0))
    except OSError:
        six.close()
        return  # no IPv6 loopback here
    six.listen(8)

    def from_six() -> bool:
        with socket.socket(socket.AF_INET6) as client:
            client.settimeout(0.3)
            try:
                client.connect(("::1", six.getsockname()[1]))
            except OSError:
                return False
            return True

    try:
        keeper.set_filter(six, program(["::1"]))
        assert not from_six()
        keeper.set_filter(six, program(["::2", "127.0.0.1"]))
        assert from_six()
    finally:
        six.close()


class ProxyUnderFlood:
    """``streamtag proxy`` with small caps (16 at once, 4 an address), a publisher of its own
    on the frontend sending a message every 50 ms, and a subscriber on the backend (CURVE
    when ``keys``) whose connection events are watched."""

    def __init__(self, tmp_path: Path, keys: dict | None = None) -> None:
        self.frontend = f"tcp://127.0.0.1:{free_port()}"
        self.backend = f"tcp://127.0.0.1:{free_port()}"
        curve = ([] if keys is None else
                 ["--server-key", str(keys["proxy_secret"]), "--client-keys",
                  str(keys["clients"])])
        self.proxy = run_streamtag("proxy", "--frontend", self.frontend, "--backend",
                                   self.backend, "--max-connections", "16",
                                   "--max-connections-per-address", "4", *curve, popen=True)
        self.context = zmq.Context()
        self.publisher = self.context.socket(zmq.PUB)
        self.publisher.setsockopt(zmq.LINGER, 0)
        self.publisher.connect(self.frontend)
        self.subscriber = self.context.socket(zmq.SUB)
        self.subscriber.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            curve_keys = client_curve(keys["proxy_public"], keys["client_secret"])
            self.subscriber.curve_serverkey = curve_keys.server_public
            self.subscriber.curve_publickey = curve_keys.client.public
            self.subscriber.curve_secretkey = curve_keys.client.secret
        self.subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        self.events = self.subscriber.get_monitor_socket(zmq.EVENT_DISCONNECTED
                                                         | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.subscriber.connect(self.backend)
        self.sent = 0
        self.log = ""  # the proxy's stderr, once closed
        self.disconnects = 0  # the subscriber's connections that ended, once closed

    def heard(self, timeout_s: float = 30.0) -> bool:
        """Whether a message sent from now on reaches the subscriber."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sent += 1
            self.publisher.send(b"msg %d" % self.sent)
            if self.subscriber.poll(50):
                while self.subscriber.poll(0):
                    self.subscriber.recv()
                return True
        return False

    def disconnected(self) -> int:
        """The subscriber's connections that ended, as its monitor told them."""
        count = 0
        while self.events.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(self.events)
            count += event["event"] == zmq.EVENT_DISCONNECTED
        return count

    def close(self) -> str:
        self.disconnects = self.disconnected()
        self.subscriber.disable_monitor()
        for sock in (self.events, self.subscriber, self.publisher):
            sock.close(linger=0)
        self.context.term()
        stop_process(self.proxy, timeout=10)
        stderr = self.proxy.stderr.read()
        self.proxy.stdout.close()
        self.proxy.stderr.close()
        return stderr


def flood_backend(port: int) -> list[socket.socket]:
    """Idle connections that never greet: 12 from one address (three times its cap of 4) and
    24 from six others (past the cap of 16 at once)."""
    opened = [idle_tcp(port, "127.0.0.2") for _ in range(12)]
    for n in range(24):
        opened.append(idle_tcp(port, f"127.0.0.{3 + n % 6}"))
    return [s for s in opened if s is not None]


@contextlib.contextmanager
def flooded(proxy: ProxyUnderFlood) -> Iterator[list[socket.socket]]:
    """The proxy's subscriber hears the feed, the flood comes (yielded), and the subscriber
    hears the feed after it; the flood and the proxy closed after, its log in ``log``."""
    flood: list[socket.socket] = []
    try:
        assert proxy.heard(), "the subscriber heard nothing before the flood"
        flood += flood_backend(tcp_port(proxy.backend))
        yield flood
        assert proxy.heard(), "the subscriber heard nothing after the flood"
    finally:
        for s in flood:
            s.close()
        proxy.log = proxy.close()
    assert "Traceback" not in proxy.log, proxy.log[-3000:]


def test_the_proxy_caps_its_backend_and_a_subscriber_still_hears_the_feed(tmp_path):
    proxy = ProxyUnderFlood(tmp_path)
    with flooded(proxy) as flood:
        # the crowded address keeps at most 4, and 16 at most stay open in all
        wait_until(lambda: sum(closed_by_peer(s) for s in flood) >= len(flood) - 16, 30,
                   "the proxy to end connections past its caps")
        # by the address they came from: a connection the kernel refused within half a second
        # (the address at its cap) is left out of the flood, so its first 12 are not all the
        # crowded address's
        crowded = [s for s in flood if s.getsockname()[0] == "127.0.0.2"]
        assert crowded and sum(not closed_by_peer(s) for s in crowded) <= 4
        assert descriptors(proxy.proxy.pid) < 16 + 128
        # an honest subscriber, ended as the oldest unauthenticated one or not, hears the feed
    assert "ended to make room" in proxy.log, proxy.log[-3000:]


def test_with_curve_the_proxy_ends_unauthenticated_peers_before_a_client_it_let_in(tmp_path):
    root = tmp_path / "keys"
    made = {name: generate_keys(root / name, name) for name in ("proxy", "client")}
    (root / "clients").mkdir()
    (root / "clients" / "client.key").write_bytes(made["client"][0].read_bytes())
    keys = {"proxy_public": made["proxy"][0], "proxy_secret": made["proxy"][1],
            "client_secret": made["client"][1], "clients": root / "clients"}
    proxy = ProxyUnderFlood(tmp_path, keys)
    with flooded(proxy) as flood:
        wait_until(lambda: sum(closed_by_peer(s) for s in flood) >= len(flood) - 15, 30,
                   "the proxy to end unauthenticated connections past its caps")
    # the client the proxy let in was never the one ended: its connection stayed up
    assert proxy.disconnects == 0
