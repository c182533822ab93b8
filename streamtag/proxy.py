"""``streamtag proxy``: many daemons, one endpoint for subscribers (ZeroMQ XSUB/XPUB).

Daemons reach the proxy either way round: a daemon whose Publisher binds is listed in
`upstream` and the proxy connects to it; a daemon whose Publisher connects (``connect=True``)
connects to `frontend`, which the proxy binds. Subscribers connect to `backend`. Frames pass
through untouched, so the proxy serves every protocol version; subscriptions flow back up, so
daemons only send what someone wants.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

from streamtag.sockets import bind_or_connect

DEFAULT_FRONTEND = "tcp://127.0.0.1:5558"
DEFAULT_BACKEND = "tcp://127.0.0.1:5559"
_BATCH = 1000  # messages moved per socket per wake-up, so neither direction starves the other


@dataclass
class ProxyStats:
    forwarded: int = 0       # messages, daemons -> subscribers
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
    Subscribers that do not keep up lose messages at `sndhwm`; the proxy never blocks.
    """
    if frontend is None and not upstream:
        raise ValueError("the proxy needs a frontend to bind or upstream endpoints to connect to")
    ctx = context if context is not None else zmq.Context.instance()
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    stats = ProxyStats()
    try:
        for sock in (xsub, xpub):
            sock.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.SNDHWM, sndhwm)
        bound_frontend = None
        if frontend is not None:
            bound_frontend = bind_or_connect(xsub, frontend, False, "proxy frontend (XSUB)")
        for endpoint in upstream:
            bind_or_connect(xsub, endpoint, True, "proxy frontend (XSUB)")
        bound_backend = bind_or_connect(xpub, backend, False, "proxy backend (XPUB)")
        if ready is not None:
            ready(bound_frontend, bound_backend)
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        while stop_event is None or not stop_event.is_set():
            events = dict(poller.poll(poll_ms))
            if xsub in events:
                stats.forwarded += _move(xsub, xpub)
            if xpub in events:
                stats.subscriptions += _move(xpub, xsub)
    finally:
        xsub.close(linger=0)
        xpub.close(linger=0)
    return stats


def _move(source: zmq.Socket, sink: zmq.Socket) -> int:
    moved = 0
    while moved < _BATCH:
        try:
            frames = source.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            break
        try:
            sink.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass  # XPUB and XSUB drop rather than refuse; nothing to wait for
        moved += 1
    return moved
