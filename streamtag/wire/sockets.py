"""What every ZeroMQ endpoint of streamtag shares: binding or connecting with an error that
says what to check, and the default endpoints every command and the daemon agree on. Used by
the publisher, the control server and client, and the proxy; the command line's parser reads
the defaults, so zmq loads only when a socket is bound."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import zmq

# Loopback by default: a daemon is reachable from this host only unless told otherwise.
DEFAULT_FEED_ENDPOINT = "tcp://127.0.0.1:5556"
DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5557"
# Connections at once to a bound feed (the daemon's PUB, the proxy's ports) and from one address
# (streamtag.wire.guard): a feed's readers are a few processes per machine (a recorder, a
# dashboard, bridges, a proxy), and each subscriber may hold up to sndhwm messages of the
# publisher's memory, so a few hundred is room enough without being a lever on memory.
FEED_MAX_CONNECTIONS = 256
FEED_MAX_CONNECTIONS_PER_ADDRESS = 32
# The control socket's: a request is one short connection, as on the metrics port.
CONTROL_MAX_CONNECTIONS = 64
CONTROL_MAX_CONNECTIONS_PER_ADDRESS = 16
# The replay socket's (streamtag.wire.replay): a feed reader asks when it joins and after a loss,
# one short request at a time, and each connection may hold a reply of up to 4 MiB waiting in
# the daemon's memory: fewer than the feed's, so that all of them together stay within 256 MiB.
REPLAY_MAX_CONNECTIONS = 64
REPLAY_MAX_CONNECTIONS_PER_ADDRESS = 16
# Bytes of published messages it keeps: a 56-tag model's scores message, with its level and mood,
# is about 2.5 kB kept, so a hundred streams at a window a second for about a minute, ten
# streams for ten minutes.
REPLAY_RING_BYTES = 16 * 1024 * 1024
# The proxy's (streamtag.wire.proxy)
DEFAULT_FRONTEND = "tcp://127.0.0.1:5558"
DEFAULT_BACKEND = "tcp://127.0.0.1:5559"
# The proxy's frontend receives whole feed messages. The largest honest one, a scores message of
# a 4096-tag model with 64-character tag names, all active, is 0.62 MB (1.15 MB with
# 128-character names); ZeroMQ disconnects a peer that sends a larger frame, before buffering
# it. The same as the protocol's MAX_FRAME_BYTES, past which a subscriber refuses a frame anyway
# (not imported: the parser reads this module, and the protocol's imports are not needed to
# parse).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# How long batch_context waits for its I/O thread to name itself (a thread just started)
IO_THREAD_WAIT_S = 1.0
# Monitor events a subscriber's or client's monitor holds unread (monitor_socket), past libzmq's
# own thousand: about 1.3 MB at most. A subscriber whose publisher is away hears a reconnection
# attempt every 100 ms, a peer that ends each connection at once two events more: a program
# that asks for no message for 15 minutes or more stops its reconnecting until it asks again.
MONITOR_EVENTS_HELD = 10_000
# How long closing a bound socket waits for libzmq's threads to release its port (wait_released)
RELEASE_WAIT_S = 2.0


def endpoint_host(endpoint: str) -> tuple[str, str]:
    """(scheme, host) of an endpoint: the host of a tcp one without its port, interface part
    or IPv6 brackets (``*`` stays ``*``); "" for the other schemes."""
    scheme, _, rest = endpoint.partition("://")
    host = rest.rsplit(":", 1)[0].rsplit(";", 1)[-1].strip("[]") if scheme == "tcp" else ""
    return scheme, host


def bind_or_connect(sock: zmq.Socket[Any], endpoint: str, connect: bool, what: str) -> str:
    """Bind (or connect) and return the endpoint actually used (`*` ports resolved)."""
    import zmq

    try:
        if connect:
            sock.connect(endpoint)
            return endpoint
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        verb = "connect" if connect else "bind"
        raise OSError(exc.errno, f"cannot {verb} the {what} to {endpoint!r}: {exc}; check the "
                                 "endpoint, or whether another process already uses it") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def wait_released(endpoint: str, timeout_s: float = RELEASE_WAIT_S) -> bool:
    """Waits until a just-closed socket's tcp ``endpoint`` (as bound: its port resolved) can be
    bound again; True when it can (at once for the other schemes). libzmq closes a listener in
    its own threads after ``close`` returns, so a daemon stopped and started again in one
    process on the same port (or any caller that rebinds at once) would otherwise find the port
    still held on a loaded machine. The probe binds as libzmq does (SO_REUSEADDR), so a
    connection left in TIME_WAIT does not count; a port that another process takes meanwhile
    is waited for ``timeout_s`` and then left to the bind's own error."""
    import socket

    scheme, host = endpoint_host(endpoint)
    port_text = endpoint.rpartition(":")[2]
    if scheme != "tcp" or not port_text.isdigit():
        return True
    host = {"*": "0.0.0.0", "": "0.0.0.0"}.get(host, host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port_text)))
                return True
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    return True  # not a name bound here (an interface): nothing to wait for
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def monitor_socket(sock: zmq.Socket[Any], events: int,
                   held: int = MONITOR_EVENTS_HELD) -> zmq.Socket[Any]:
    """The PAIR socket that receives ``sock``'s monitor ``events``, as pyzmq's
    ``get_monitor_socket`` makes it but holding ``held`` events more. libzmq's I/O thread
    sends each event with a blocking send: once the monitor is full (a reader busy, or one that
    reads only when its program asks) the I/O thread waits, with it every socket of the
    context (a port no longer accepts, a subscriber no longer reconnects), and
    ``disable_monitor`` waits for ever, holding the interpreter; ``stop_monitor`` makes room
    first. Closed with ``stop_monitor``."""
    import zmq

    address = f"inproc://streamtag-monitor-{id(sock):x}-{time.monotonic_ns():x}"
    sock.monitor(address, events)
    pair: zmq.Socket[Any] = sock.context.socket(zmq.PAIR)
    try:
        pair.setsockopt(zmq.RCVHWM, held)  # before connecting: the pipe's mark is fixed then
        pair.setsockopt(zmq.LINGER, 0)
        pair.connect(address)
    except BaseException:
        pair.close(linger=0)
        sock.disable_monitor()
        raise
    return pair


def stop_monitor(sock: zmq.Socket[Any], monitor: zmq.Socket[Any]) -> None:
    """Stops ``sock``'s monitor and closes ``monitor``, from ``sock``'s thread: the events
    waiting are read and dropped first, so that libzmq's last event has room."""
    import zmq

    with contextlib.suppress(zmq.ZMQError):
        while monitor.poll(0, zmq.POLLIN):
            monitor.recv_multipart(zmq.NOBLOCK)
        sock.disable_monitor()
    monitor.close(linger=0)


def batch_context() -> zmq.Context[Any]:
    """A new ZeroMQ context whose I/O thread runs as a batch job (Linux's SCHED_BATCH) where
    the system allows it: woken by data arriving, it does not preempt the process's own
    threads but reads what has arrived when its turn comes. For a reader of a heavy feed that
    need not answer within milliseconds (the recorder: on the core it shares with its I/O
    thread, every TCP read preempted the decoding thread); elsewhere, or refused, an ordinary
    context. The caller terminates it."""
    import zmq

    context: zmq.Context[Any] = zmq.Context()
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None:
        return context
    before = _thread_ids()
    context.socket(zmq.PAIR).close(linger=0)  # libzmq starts its threads with the first socket
    # each names itself once it runs, which may be a moment after: looked for until then
    # (within IO_THREAD_WAIT_S)
    new = _thread_ids() - before
    deadline = time.monotonic() + IO_THREAD_WAIT_S
    while new and time.monotonic() < deadline:
        for thread_id in list(new):
            try:
                name = Path(f"/proc/self/task/{thread_id}/comm").read_text()
            except OSError:  # gone
                new.discard(thread_id)
                continue
            if name.startswith("ZMQbg/IO"):
                try:
                    setter(thread_id, os.SCHED_BATCH, os.sched_param(0))
                except OSError:  # not allowed here: scheduled as any thread
                    pass
                return context  # its one I/O thread (ZeroMQ's default)
            if name.startswith("ZMQbg/"):  # its reaper
                new.discard(thread_id)
        time.sleep(0.001)
    return context


def _thread_ids() -> set[int]:
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return set()
