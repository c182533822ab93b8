"""Many daemons, one endpoint for subscribers: a ZeroMQ XSUB/XPUB proxy (the command is
``streamtag proxy``, streamtag.commands.proxy).

Daemons reach the proxy either way round: a daemon whose Publisher binds is listed in
`upstream` and the proxy connects to it; a daemon whose Publisher connects (``connect=True``)
connects to `frontend`, which the proxy binds. Subscribers connect to `backend`. Frames pass
through untouched, so the proxy serves every protocol version; subscriptions flow back up, so
daemons only send what someone wants.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

from streamtag.wire.sockets import bind_or_connect

DEFAULT_FRONTEND = "tcp://127.0.0.1:5558"
DEFAULT_BACKEND = "tcp://127.0.0.1:5559"
_CONTROL_IDS = itertools.count()


@dataclass
class ProxyStats:
    forwarded: int = 0       # message frames, daemons -> subscribers (a streamtag message is 3)
    subscriptions: int = 0   # (un)subscribe notices, subscribers -> daemons


def run_proxy(frontend: str | None = DEFAULT_FRONTEND, backend: str = DEFAULT_BACKEND,
              stop_event: threading.Event | None = None, *, upstream: Sequence[str] = (),
              sndhwm: int = 1000, context: zmq.Context | None = None, poll_ms: int = 100,
              ready: Callable[[str | None, str], None] | None = None) -> ProxyStats:
    """Forward messages until `stop_event` is set (or Ctrl-C when there is none).

    frontend: XSUB endpoint to bind for daemons that connect, or None for none.
    upstream: daemon PUB endpoints to connect to.
    backend: XPUB endpoint to bind for subscribers.
    ready: called with the bound (frontend, backend) endpoints once they accept connections;
        ``*`` ports come back resolved.
    poll_ms: how often `stop_event` is looked at.
    Subscribers that do not keep up lose messages at `sndhwm`; the proxy never blocks.
    Messages move in libzmq's own proxy loop (``zmq_proxy_steerable``), not in Python: every
    message of every daemon passes here, and a Python loop moved 1.2-1.7x fewer per second
    (benchmarks/proxy.py, its "pyloop" peer).
    """
    if frontend is None and not upstream:
        raise ValueError("the proxy needs a frontend to bind or upstream endpoints to connect to")
    ctx = context if context is not None else zmq.Context.instance()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    control = ctx.socket(zmq.REP)  # the steering socket: STATISTICS, then TERMINATE
    control_endpoint = f"inproc://streamtag-proxy-{next(_CONTROL_IDS)}"
    stats = ProxyStats()
    watcher = None
    try:
        for sock in (xsub, xpub, control):
            sock.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.SNDHWM, sndhwm)
        control.bind(control_endpoint)
        bound_frontend = None
        if frontend is not None:
            bound_frontend = bind_or_connect(xsub, frontend, False, "proxy frontend (XSUB)")
        for endpoint in upstream:
            bind_or_connect(xsub, endpoint, True, "proxy frontend (XSUB)")
        bound_backend = bind_or_connect(xpub, backend, False, "proxy backend (XPUB)")
        if stop_event is not None:
            watcher = threading.Thread(target=_steer, name="streamtag-proxy-stop", daemon=True,
                                       args=(ctx, control_endpoint, stop_event, poll_ms, stats))
            watcher.start()
        if ready is not None:
            ready(bound_frontend, bound_backend)
        zmq.proxy_steerable(xsub, xpub, None, control)
    finally:
        if watcher is not None:
            watcher.join(5)
        for sock in (xsub, xpub, control):
            sock.close(linger=0)
    return stats


def _steer(ctx: zmq.Context, control_endpoint: str, stop_event: threading.Event, poll_ms: int,
           stats: ProxyStats) -> None:
    """Waits for `stop_event`, reads the proxy's counters into `stats`, and stops it."""
    while not stop_event.wait(poll_ms / 1000.0):
        pass
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)  # a proxy that already ended does not answer
        sock.connect(control_endpoint)
        sock.send(b"STATISTICS")
        # Eight counters: frontend in (messages, bytes), out, then the backend's the same.
        counters = [int.from_bytes(frame, "little") for frame in sock.recv_multipart()]
        stats.forwarded, stats.subscriptions = counters[6], counters[4]
        sock.send(b"TERMINATE")
        sock.recv_multipart()
    except zmq.Again:
        pass
    finally:
        sock.close(linger=0)
