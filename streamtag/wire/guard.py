"""Connection caps on the ZeroMQ sockets streamtag binds (docs/security.md, "ZeroMQ port
limits"): the daemon's feed and control sockets, the proxy's frontend and backend, and the
supervisor's public feed and control.

libzmq accepts every TCP connection that arrives and holds a descriptor for each until the peer
leaves; past the open-files limit its accept loop spins on EMFILE and the process can open
nothing else (a station, a probe). A `ConnectionGuard` watches the socket through libzmq's
monitor (ACCEPTED and DISCONNECTED carry the connection's descriptor), learns each peer's
address from that descriptor, and keeps the connections within ``max_connections`` at once and
``max_per_address`` from one address. Past either, an unauthenticated connection is ended:
past the cap for one address, that address's oldest; past the port's cap, the oldest of the
address holding the most connections, so a flood's addresses make room with their own peers and
a reader from an address of its own is not ended for being older than them. ``shutdown`` on a
duplicate of libzmq's descriptor ends the TCP connection, libzmq sees it end and closes its own
descriptor. A newcomer is unauthenticated, so when every other connection is authenticated the
newcomer is the one ended.

Authenticated means: on a CURVE socket, past the handshake (a connection is known past it when
it alone was waiting for its handshake as one succeeded, or once it has stayed open longer than
libzmq's HANDSHAKE_IVL, which closes any connection still in its handshake); on the control
socket, having made a request with authority (``authenticate``, from the frame's source
descriptor). Without CURVE on a feed, nobody is: every subscriber may be the one ended.

Before ending a connection the guard checks that the descriptor is still that connection (the
same local port and peer address and port): libzmq may have closed it and given the number to
another connection, or to a file, before the guard read the event.

Ending connections is not enough against peers that connect again at once (ZeroMQ's do, every
100 ms): libzmq accepts them faster than a Python thread ends them. So the guard also tells the
kernel whom the listening socket takes (streamtag.wire.admission): an address at its cap is
blocked until one of its connections ends, and at the cap of the port every address that holds
a connection is (a newcomer from another address is still taken, and the most crowded
address makes room for it). A blocked peer's requests are dropped before a
descriptor is given for them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import socket
import threading
import time
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from streamtag.wire.admission import MAX_BLOCKED, FilterKeeper, program
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.sockets import bind_or_connect, stop_monitor

log = logging.getLogger(__name__)

REPORT_EVERY_S = 60.0  # connections ended are said in one line this often at most
# A connection that makes room for a newcomer has been open this long at least; while none has,
# the kernel keeps newcomers waiting (``_admit``): a peer ended to make room connects again at
# once, and would end the next one, thousands of times a second.
MIN_AGE_S = 5.0
POLL_MS = 200  # how often a guard's own thread looks at its stop event
# Connections the kernel completes for a guarded socket before libzmq takes them (its listen
# backlog; libzmq's own default is 100). libzmq takes what waits faster than the guard's thread
# ends those past the caps, so this bounds the burst a flood's first second puts in the process
# (two ports: 64 of the 128 descriptors in reserve); the rest of a flood's requests are
# dropped and retried by their kernels a second or more later, when the guard has caught up.
ACCEPT_BACKLOG = 32
EVENTS = (zmq.EVENT_LISTENING | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
          | zmq.EVENT_HANDSHAKE_SUCCEEDED)
# why a connection was ended (the metric's reason label): what the log says
REASONS = {"room": "ended to make room past the connection cap",
           "room_per_address": "ended to make room past the cap for one address"}


@dataclasses.dataclass
class _Peer:
    address: str  # as the caps count it: the IP address, or "local" for ipc
    peer: Any  # getpeername()'s answer, to know the descriptor is still this connection
    local_port: int | None
    accepted_at: float
    authenticated: bool = False
    in_handshake: bool = True


class ConnectionGuard:
    """Keeps the connections of ``sock`` within ``caps``; made before ``sock`` binds (the
    monitor must see it listen). ``authenticates``: the socket is a CURVE server, whose peers
    count as authenticated once past their handshake. The monitor's events are read by
    ``handle_events`` in whichever one thread polls ``monitor`` (the control server's own), or
    by ``start``'s thread of its own."""

    def __init__(self, sock: zmq.Socket[Any], caps: ConnectionCaps, name: str, *,
                 authenticates: bool = False) -> None:
        self.name = name
        self._caps = caps
        self._authenticates = authenticates
        sock.setsockopt(zmq.BACKLOG, ACCEPT_BACKLOG)  # before the socket binds, as this is
        interval_ms = int(sock.getsockopt(zmq.HANDSHAKE_IVL))
        self._handshake_s = interval_ms / 1000 if authenticates and interval_ms > 0 else None
        # libzmq's default mark on the monitor, not streamtag.wire.sockets.monitor_socket's
        # ten thousand more: while this guard is a couple of thousand events behind, libzmq's
        # I/O thread waits for it instead of taking connections it cannot see yet (under a
        # flood, with no mark, it fell further behind for ever and ended the wrong peers)
        self.monitor: zmq.Socket[Any] = sock.get_monitor_socket(EVENTS)
        self._socket = sock
        self._lock = threading.Lock()
        self._ports: set[int] = set()  # the ports it listens on
        self._listeners: dict[int, int] = {}  # listening descriptor -> its port
        self._filters = FilterKeeper()
        self._blocked: frozenset[str] | None = frozenset()  # None: every address; () none
        self._open: collections.OrderedDict[int, _Peer] = collections.OrderedDict()  # by fd
        self._leaving: dict[int, _Peer] = {}  # ended here, until libzmq says it closed
        self._per_address: collections.Counter[str] = collections.Counter()
        self._counts: collections.Counter[str] = collections.Counter()
        self._unreported: collections.Counter[str] = collections.Counter()
        self._last_report = -float("inf")
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False

    # -- what others ask

    @property
    def caps(self) -> ConnectionCaps:
        return self._caps

    def set_caps(self, caps: ConnectionCaps) -> None:
        """New bounds (the daemon's descriptor budget changed); applied at the next
        connection, and to the addresses the kernel takes at the next event."""
        with self._lock:
            self._caps = caps

    @property
    def blocked(self) -> frozenset[str] | None:
        """The addresses whose connections the kernel drops now (None: every address)."""
        with self._lock:
            return self._blocked

    @property
    def open(self) -> int:
        with self._lock:
            return len(self._open)

    def ended(self) -> dict[str, int]:
        """Connections ended since the start, by reason (REASONS); from any thread."""
        with self._lock:
            return dict(self._counts)

    def authenticate(self, fd: int) -> None:
        """The connection on descriptor ``fd`` made a request with authority: it goes after
        every unauthenticated one."""
        with self._lock:
            peer = self._open.get(fd)
            if peer is not None:
                peer.authenticated = True

    # -- the monitor's events

    def start(self) -> ConnectionGuard:
        """Reads the monitor's events on a thread of its own (a socket whose thread blocks
        elsewhere: a publisher's senders, the proxy's loop)."""
        self._thread = threading.Thread(target=self._serve, name=f"streamtag-guard-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if self.monitor.poll(POLL_MS, zmq.POLLIN):
                    self.handle_events()
                else:
                    with self._lock:
                        self._admit()  # connections age: an address may take newcomers again
                    self._report()
        except zmq.ZMQError:  # the context was terminated under it: nothing left to guard
            pass

    def handle_events(self) -> None:
        """Handles every event waiting on ``monitor``, without waiting for more."""
        while True:
            try:
                event = parse_monitor_message(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            kind, value = int(event["event"]), int(event["value"])
            with self._lock:
                if kind == zmq.EVENT_ACCEPTED:
                    self._accepted(value)
                    self._admit()
                elif kind in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                    self._gone(value)
                    self._listeners.pop(value, None)
                elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._handshake_succeeded()
                elif kind == zmq.EVENT_LISTENING:
                    self._listening(value)
        with self._lock:
            self._admit()
        self._report()

    def _admit(self) -> None:
        """Tells the kernel whom the listening sockets take, when that changed: an address at
        its cap, or at the port's cap every address that holds a connection, takes no
        newcomer while it has no unauthenticated connection open for MIN_AGE_S that a newcomer
        could replace. So a peer ended to make room, which connects again at once, waits in the
        kernel rather than ending the next one; an address that holds nothing is always taken
        (it makes room), and a newcomer from a crowded one once its connections have aged."""
        caps, now = self._caps, time.monotonic()
        oldest = self._oldest_unauthenticated()
        young = now - MIN_AGE_S
        full = len(self._open) >= caps.max_connections
        waiting = frozenset(
            address for address, n in self._per_address.items()
            if (full or n >= caps.max_per_address) and oldest.get(address, now) > young)
        # more addresses than a program names: every address waits
        blocked = None if len(waiting) > MAX_BLOCKED else waiting
        if blocked == self._blocked or not self._listeners:
            return
        if self._apply(program(blocked) if blocked != frozenset() else None):
            self._blocked = blocked

    def _apply(self, instructions: Any) -> bool:
        """Gives the listening sockets' kernel ``instructions`` (None: take everyone); False
        where it has no such filter."""
        for fd, port in list(self._listeners.items()):
            try:
                with _borrowed(fd) as sock:  # still the listener it was (not a reused number)
                    if (sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1
                            or sock.getsockname()[1] != port):
                        raise OSError("not the listener")
                    if not self._filters.set_filter(sock, instructions):
                        return False
            except (OSError, IndexError, TypeError):
                self._listeners.pop(fd, None)
        return True

    def _accepted(self, fd: int) -> None:
        self._gone(fd)  # a number libzmq reused: its last connection has gone
        try:
            with _borrowed(fd) as sock:
                local, peer = sock.getsockname(), sock.getpeername()
        except OSError:  # closed already; its DISCONNECTED follows
            return
        local_port = local[1] if isinstance(local, tuple) else None
        if local_port is not None and self._ports and local_port not in self._ports:
            return  # not this socket's (a descriptor reused before the event was read)
        address = _address_of(peer)
        self._open[fd] = _Peer(address, peer, local_port, time.monotonic())
        self._per_address[address] += 1
        caps = self._caps
        while self._per_address[address] > caps.max_per_address:
            self._end(self._victim(address), "room_per_address")
        while len(self._open) > caps.max_connections:
            self._end(self._victim(None), "room")

    def _victim(self, address: str | None) -> int:
        """The connection that makes room: past the cap for ``address``, its oldest
        unauthenticated one; past the port's cap (None), the oldest unauthenticated one of
        the address holding the most connections (the address whose unauthenticated
        connection is oldest first among equals), so a flood's addresses end their own and a
        reader from an address of its own is not ended for being older than every flooding
        peer. Where none is unauthenticated, the oldest (of ``address``)."""
        if self._handshake_s is not None:  # past the handshake interval: past the handshake
            old = time.monotonic() - self._handshake_s
            for peer in self._open.values():
                if peer.accepted_at < old:
                    peer.authenticated, peer.in_handshake = True, False
        if address is None:
            oldest = self._oldest_unauthenticated()
            if oldest:
                address = min(oldest, key=lambda a: (-self._per_address[a], oldest[a]))
        among = [(fd, p) for fd, p in self._open.items()
                 if address is None or p.address == address]
        return next((fd for fd, p in among if not p.authenticated), among[0][0])

    def _oldest_unauthenticated(self) -> dict[str, float]:
        """Each address's oldest unauthenticated connection: when it was accepted."""
        oldest: dict[str, float] = {}
        for peer in self._open.values():  # in the order they were accepted
            if not peer.authenticated:
                oldest.setdefault(peer.address, peer.accepted_at)
        return oldest

    def _end(self, fd: int, why: str) -> None:
        peer = self._open.pop(fd)
        self._forget_address(peer.address)
        self._leaving[fd] = peer
        self._counts[why] += 1
        self._unreported[why] += 1
        try:
            with _borrowed(fd) as sock:
                local, now = sock.getsockname(), sock.getpeername()
                if (isinstance(local, tuple) and local[1] == peer.local_port
                        and now == peer.peer) or (not isinstance(local, tuple)
                                                  and peer.local_port is None):
                    sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # gone meanwhile, or no longer a connection of this socket
            pass

    def _gone(self, fd: int) -> None:
        self._leaving.pop(fd, None)
        peer = self._open.pop(fd, None)
        if peer is not None:
            self._forget_address(peer.address)

    def _forget_address(self, address: str) -> None:
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    def _handshake_succeeded(self) -> None:
        """One connection finished its handshake; the event does not say which. When it alone
        was waiting for its handshake, it is that one."""
        waiting = [p for p in (*self._open.values(), *self._leaving.values()) if p.in_handshake]
        if len(waiting) == 1:
            waiting[0].in_handshake = False
            waiting[0].authenticated = self._authenticates

    def _report(self) -> None:
        with self._lock:
            if not self._unreported or time.monotonic() - self._last_report < REPORT_EVERY_S:
                return
            said = ", ".join(f"{n} {REASONS[why]}" for why, n in sorted(self._unreported.items()))
            self._unreported.clear()
            self._last_report = time.monotonic()
            caps = self._caps
        log.warning("%s: connections %s (bounds: %d at once, %d from one address; raise them "
                    "with the port's max_connections settings where these are honest peers)",
                    self.name, said, caps.max_connections, caps.max_per_address)

    def close(self) -> None:
        """Stops reading events and closes the monitor; before the socket closes, from the
        socket's thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(POLL_MS / 1000 * 10)
        # libzmq sends each event, disable_monitor's last one included, waiting for room in
        # the monitor, and pyzmq's disable_monitor holds the interpreter meanwhile: with the
        # events unread since the reading stopped filling the monitor, it would wait for ever.
        # So the kernel takes no more connections (no more events of their coming), what
        # waits is read and dropped, and the monitor is disabled at once, with room in it.
        self._drop_waiting()  # which learns the listening sockets, where still unknown
        with self._lock:
            self._apply(program(None))
        stop_monitor(self._socket, self.monitor)

    def _drop_waiting(self) -> None:
        """Reads the events waiting on the monitor, keeping only what says a socket listens."""
        with contextlib.suppress(zmq.ZMQError):
            while self.monitor.poll(0, zmq.POLLIN):
                event = parse_monitor_message(self.monitor.recv_multipart(zmq.NOBLOCK))
                if int(event["event"]) == zmq.EVENT_LISTENING:
                    with self._lock:
                        self._listening(int(event["value"]))

    def _listening(self, fd: int) -> None:
        """The socket listens on descriptor ``fd`` (under the lock)."""
        port = _local_port(fd)
        if port is not None:
            self._ports.add(port)
            self._listeners[fd] = port


def bind_guarded(sock: zmq.Socket[Any], endpoint: str, caps: ConnectionCaps | None,
                 name: str, what: str, *, authenticates: bool = False,
                 ) -> tuple[str, ConnectionGuard | None]:
    """Binds ``sock`` to ``endpoint`` (``bind_or_connect``, ``what`` naming it in an error)
    with ``caps`` kept by a guard made first, whose monitor must see the socket listen; the
    endpoint bound and the guard (named ``name`` and the endpoint; None without caps), for the
    caller to start or to poll. A bind that fails closes the guard and raises its OSError."""
    guard = (None if caps is None
             else ConnectionGuard(sock, caps, name, authenticates=authenticates))
    try:
        bound = bind_or_connect(sock, endpoint, False, what)
    except BaseException:
        if guard is not None:
            guard.close()
        raise
    if guard is not None:
        guard.name = f"{name} {bound}"
    return bound, guard


@contextlib.contextmanager
def _borrowed(fd: int):  # type: ignore[no-untyped-def]
    """A Python socket on a duplicate of libzmq's descriptor ``fd``, closed after (libzmq's
    own stays open). Where the process has no descriptor left to duplicate into (a flood's
    burst reached the open-files limit: when the guard is needed most), a Python socket on
    libzmq's descriptor itself, detached after so that it stays open."""
    try:
        copy = os.dup(fd)
    except OSError as error:
        if error.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        own = socket.socket(fileno=fd)
        try:
            yield own
        finally:
            own.detach()
        return
    try:
        sock = socket.socket(fileno=copy)
    except OSError:  # not a socket (a file that took the number)
        os.close(copy)
        raise
    try:
        yield sock
    finally:
        sock.close()


def _local_port(fd: int) -> int | None:
    try:
        with _borrowed(fd) as sock:
            local = sock.getsockname()
    except OSError:
        return None
    return local[1] if isinstance(local, tuple) else None


def _address_of(peer: Any) -> str:
    """The address a per-address cap counts: an IPv4 address mapped into IPv6 as IPv4."""
    if not isinstance(peer, tuple):
        return "local"
    address = str(peer[0])
    return address.removeprefix("::ffff:") if "." in address else address
