"""What every ZeroMQ endpoint of streamtag shares: binding or connecting with an error that
says what to check, and the default endpoints every command and the daemon agree on. Used by
the publisher, the control server and client, and the proxy."""

from __future__ import annotations

from typing import Any

import zmq

# Loopback by default: a daemon is reachable from this host only unless told otherwise.
DEFAULT_FEED_ENDPOINT = "tcp://127.0.0.1:5556"
DEFAULT_CONTROL_ENDPOINT = "tcp://127.0.0.1:5557"


def endpoint_host(endpoint: str) -> tuple[str, str]:
    """(scheme, host) of an endpoint: the host of a tcp one without its port, interface part
    or IPv6 brackets (``*`` stays ``*``); "" for the other schemes."""
    scheme, _, rest = endpoint.partition("://")
    host = rest.rsplit(":", 1)[0].rsplit(";", 1)[-1].strip("[]") if scheme == "tcp" else ""
    return scheme, host


def bind_or_connect(sock: zmq.Socket[Any], endpoint: str, connect: bool, what: str) -> str:
    """Bind (or connect) and return the endpoint actually used (`*` ports resolved)."""
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
