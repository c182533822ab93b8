"""Many daemons, one endpoint for subscribers: a ZeroMQ XSUB/XPUB proxy (the command is
``streamtag proxy``, streamtag.commands.proxy).

Daemons reach the proxy either way round: a daemon whose Publisher binds is listed in
`upstream` and the proxy connects to it; a daemon whose Publisher connects (``connect=True``)
connects to `frontend`, which the proxy binds. Subscribers connect to `backend`. Frames pass
through untouched, so the proxy serves every protocol version; subscriptions flow back up, so
daemons only send what someone wants.

With keys, the proxy is a CURVE server to its subscribers and a CURVE client of its daemons:
one key pair of its own serves both sides. Subscribers present keys from `client_keys` (as they
would to a daemon); the daemons, whether the proxy binds the frontend or connects upstream,
must prove they hold the secret of `daemon_key` (a daemon's `[security] server_key`), and they
let the proxy in by its public key in their `client_keys`. Without keys, an endpoint beyond
loopback is refused unless `insecure` is set.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from streamtag.errors import ConfigError
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.exposure import MAX_SUBSCRIPTION_BYTES, refusal
from streamtag.wire.guard import ConnectionGuard, bind_guarded
from streamtag.wire.security import (
    FEED_DOMAIN,
    Authenticator,
    ClientCurve,
    CurveKeys,
    is_loopback_endpoint,
    make_client,
    make_server,
)
from streamtag.wire.sockets import (
    DEFAULT_BACKEND,
    DEFAULT_FRONTEND,
    MAX_MESSAGE_BYTES,
    bind_or_connect,
    wait_released,
)

FRONTEND_KEY_FLAGS = "--server-key/--daemon-key"
BACKEND_KEY_FLAGS = "--server-key/--client-keys"
_CONTROL_IDS = itertools.count()


@dataclass
class ProxyStats:
    forwarded: int = 0       # message frames, daemons -> subscribers (a streamtag message is 3)
    subscriptions: int = 0   # (un)subscribe notices, subscribers -> daemons


def open_endpoints(frontend: str | None, backend: str, *, daemon_key: bool,
                   client_keys: bool) -> list[tuple[str, str, str]]:
    """The endpoints the proxy would bind beyond loopback without keys: (endpoint, what anyone
    who reaches it can do, the flags that would close it) each."""
    found = []
    if frontend is not None and not daemon_key and not is_loopback_endpoint(frontend):
        found.append((frontend, "publish forged tags to every subscriber (the frontend, where "
                                "daemons publish)", FRONTEND_KEY_FLAGS))
    if not client_keys and not is_loopback_endpoint(backend):
        found.append((backend, "read every stream's tags (the backend, where subscribers "
                               "connect)", BACKEND_KEY_FLAGS))
    return found


def run_proxy(frontend: str | None = DEFAULT_FRONTEND, backend: str = DEFAULT_BACKEND,
              stop_event: threading.Event | None = None, *, upstream: Sequence[str] = (),
              sndhwm: int = 1000, context: zmq.Context[Any] | None = None, poll_ms: int = 100,
              ready: Callable[[str | None, str], None] | None = None,
              curve: CurveKeys | None = None, client_keys: str | Path | None = None,
              daemon_key: bytes | None = None, insecure: bool = False,
              max_message_bytes: int = MAX_MESSAGE_BYTES,
              caps: ConnectionCaps | None = None,
              frontend_caps: ConnectionCaps | None = None) -> ProxyStats:
    """Forward messages until `stop_event` is set (or Ctrl-C when there is none).

    frontend: XSUB endpoint to bind for daemons that connect, or None for none.
    upstream: daemon PUB endpoints to connect to.
    backend: XPUB endpoint to bind for subscribers.
    ready: called with the bound (frontend, backend) endpoints once they accept connections;
        ``*`` ports come back resolved.
    poll_ms: how often `stop_event` is looked at.
    curve, client_keys: the proxy's own key pair and the folder of the subscribers' public
        keys (*.key) it lets in on the backend; they go together.
    daemon_key: the daemons' public key; the frontend and `upstream` then take only daemons
        that hold its secret, and present `curve` to them (needs `curve`).
    insecure: bind beyond loopback without keys; otherwise that is a ConfigError.
    max_message_bytes: a daemon that sends a larger frame is disconnected (it reconnects).
    caps, frontend_caps: the connection caps of the backend and of a bound frontend
        (streamtag.wire.guard), kept by a thread each; None: no caps.
    Subscribers that do not keep up lose messages at `sndhwm`; the proxy never blocks.
    Messages move in libzmq's own proxy loop (``zmq_proxy_steerable``), not in Python: every
    message of every daemon passes here, and a Python loop moved 1.2-1.7x fewer per second
    (benchmarks/proxy.py, its "pyloop" peer).
    """
    if frontend is None and not upstream:
        raise ValueError("the proxy needs a frontend to bind or upstream endpoints to connect to")
    if (curve is None) != (client_keys is None):
        raise ConfigError(f"{BACKEND_KEY_FLAGS} go together: the proxy's secret key "
                          "(NAME.key_secret) and the folder of its subscribers' public keys")
    if daemon_key is not None and curve is None:
        raise ConfigError("--daemon-key needs --server-key/--client-keys: the proxy presents "
                          "its own key pair to the daemons")
    if not insecure:
        for endpoint, _, flags in open_endpoints(frontend, backend, daemon_key=bool(daemon_key),
                                                 client_keys=client_keys is not None):
            raise ConfigError(refusal(endpoint, flags))
    # The authenticator answers for a whole context: a context of our own keeps it from
    # judging other sockets of this process.
    own_context = context is None and client_keys is not None
    ctx = zmq.Context() if own_context else (context or zmq.Context.instance())
    auth = None
    try:
        if client_keys is not None:
            auth = Authenticator(ctx, {FEED_DOMAIN: ("--client-keys", client_keys)})
        return _serve(ctx, frontend, backend, stop_event, upstream, sndhwm, poll_ms, ready,
                      curve, daemon_key, max_message_bytes, (frontend_caps, caps))
    finally:
        if auth is not None:
            auth.stop()
        if own_context:
            ctx.term()


def _serve(ctx: zmq.Context[Any], frontend: str | None, backend: str,
           stop_event: threading.Event | None, upstream: Sequence[str], sndhwm: int,
           poll_ms: int, ready: Callable[[str | None, str], None] | None,
           curve: CurveKeys | None, daemon_key: bytes | None,
           max_message_bytes: int,
           caps: tuple[ConnectionCaps | None, ConnectionCaps | None]) -> ProxyStats:
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    control = ctx.socket(zmq.REP)  # the steering socket: STATISTICS, then TERMINATE
    control_endpoint = f"inproc://streamtag-proxy-{next(_CONTROL_IDS)}"
    stats = ProxyStats()
    watcher = None
    guards: list[ConnectionGuard] = []
    bound: list[str] = []  # endpoints to see released after closing
    try:
        for sock in (xsub, xpub, control):
            sock.setsockopt(zmq.LINGER, 0)
        # Options are taken at bind/connect: every cap and key is set before either.
        xsub.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        xpub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)  # it receives subscriptions
        control.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        xpub.setsockopt(zmq.SNDHWM, sndhwm)
        if curve is not None:
            make_server(xpub, curve)
        if daemon_key is not None and curve is not None:
            make_client(xsub, ClientCurve(daemon_key, curve))
        control.bind(control_endpoint)
        bound_frontend = None
        if frontend is not None:
            bound_frontend, guard = bind_guarded(xsub, frontend, caps[0], "proxy frontend",
                                                 "proxy frontend (XSUB)",
                                                 authenticates=daemon_key is not None)
            guards += [guard] if guard is not None else []
            bound.append(bound_frontend)
        for endpoint in upstream:
            bind_or_connect(xsub, endpoint, True, "proxy frontend (XSUB)")
        bound_backend, guard = bind_guarded(xpub, backend, caps[1], "proxy backend",
                                            "proxy backend (XPUB)",
                                            authenticates=curve is not None)
        guards += [guard] if guard is not None else []
        bound.append(bound_backend)
        for guard in guards:
            guard.start()
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
        for guard in guards:
            guard.close()
        for sock in (xsub, xpub, control):
            sock.close(linger=0)
        for endpoint in bound:
            wait_released(endpoint)
    return stats


def _steer(ctx: zmq.Context[Any], control_endpoint: str, stop_event: threading.Event, poll_ms: int,
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
