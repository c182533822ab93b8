"""The daemon's control socket, both sides: `ControlServer` answers JSON requests on a ROUTER
socket in a thread of its own; `control_request` is the client, one request and its reply."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from streamtag.wire.protocol import (
    PROTOCOL_VERSION,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    error_reply,
)
from streamtag.wire.ready_thread import ReadyThread
from streamtag.wire.security import ClientCurve, CurveKeys, make_client, make_server
from streamtag.wire.sockets import DEFAULT_CONTROL_ENDPOINT, bind_or_connect

log = logging.getLogger(__name__)


Handler = Callable[[dict[str, Any]], Mapping[str, Any] | None]


class ControlServer:
    """Answers control requests on a ROUTER socket, in its own thread.

    Requests are JSON objects {"cmd": NAME, ...args}; `handlers[NAME](request)` returns a dict
    merged into the reply {"ok": true, ...}. An unknown command, a malformed request or a
    handler that raises gets {"ok": false, "error": ...} and the server keeps serving. A
    built-in "ping" (unless a handler takes the name) answers with the protocol version and the
    known commands. Handlers run in the server thread one at a time: keep them short, or hand
    long work (a model reload) to the daemon and reply at once.
    """

    def __init__(self, endpoint: str = DEFAULT_CONTROL_ENDPOINT,
                 handlers: Mapping[str, Handler] | None = None, *,
                 context: zmq.Context | None = None, poll_ms: int = 100,
                 curve: CurveKeys | None = None):
        self._handlers: dict[str, Handler] = {"ping": self._ping}
        for name, handler in (handlers or {}).items():
            if not isinstance(name, str) or not callable(handler):
                raise TypeError(f"handlers maps command names to callables; got {name!r}")
            self._handlers[name] = handler
        self._requested = endpoint
        self._curve = curve
        self._context = context
        self._poll_ms = poll_ms
        self.endpoint: str | None = None  # the bound endpoint, once started
        self.served = 0
        self._worker = ReadyThread(self._run, "streamtag-control")

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    def _ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "commands": self.commands}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The reply to one decoded request; never raises."""
        cmd = request.get("cmd")
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return error_reply(f"unknown command {cmd!r}; known commands: "
                               f"{', '.join(self.commands)}")
        try:
            result = handler(request)
        except Exception as exc:  # a failing handler must not take the server down
            log.warning("control command %r failed", cmd, exc_info=True)
            return error_reply(f"command {cmd!r} failed: {type(exc).__name__}: {exc}")
        if result is None:
            result = {}
        if not isinstance(result, Mapping):
            return error_reply(f"command {cmd!r} returned {type(result).__name__}, not a dict")
        return {"ok": True, **result}

    def handle_bytes(self, data: bytes) -> bytes:
        """The reply frame to one request frame; never raises."""
        try:
            request = decode_request(data)
        except ValueError as exc:  # ProtocolError
            return encode_reply(error_reply(str(exc)))
        reply = self.handle(request)
        try:
            return encode_reply(reply)
        except ValueError as exc:
            return encode_reply(error_reply(f"command {request['cmd']!r} gave a reply that "
                                            f"cannot be sent: {exc}"))

    def start(self, timeout_s: float = 5.0) -> ControlServer:
        """Bind and serve in a background thread; returns once bound (raises OSError if the
        endpoint cannot be bound)."""
        if self._worker.started:
            raise RuntimeError("the control server was already started")
        self._worker.start(timeout_s, f"the control server did not bind {self._requested!r}")
        return self

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop serving; returns whether the thread ended within `timeout_s`."""
        return self._worker.stop(timeout_s)

    def _run(self) -> None:
        ctx = self._context if self._context is not None else zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            if self._curve is not None:
                make_server(sock, self._curve)
            try:
                self.endpoint = bind_or_connect(sock, self._requested, False, "control server")
            except OSError as exc:
                self._worker.error = exc
                return
            finally:
                self._worker.ready.set()
            while not self._worker.stopping.is_set():
                if not sock.poll(self._poll_ms, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart(zmq.NOBLOCK)
                # A REQ peer sends [identity, b"", request]; a DEALER may omit the delimiter.
                split = frames.index(b"") + 1 if b"" in frames else 1
                envelope, payload = frames[:split], frames[split:]
                if len(payload) == 1:
                    reply = self.handle_bytes(payload[0])
                else:
                    reply = encode_reply(error_reply(
                        f"a control request is one frame of JSON, got {len(payload)} frames"))
                try:
                    sock.send_multipart([*envelope, reply], flags=zmq.NOBLOCK)
                except zmq.Again:
                    log.warning("control reply dropped: the client is not reading")
                self.served += 1
        finally:
            sock.close(linger=0)

    def __enter__(self) -> ControlServer:
        return self if self._worker.started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def control_request(endpoint: str, request: Mapping[str, Any], timeout_ms: int = 2000, *,
                    context: zmq.Context | None = None,
                    curve: ClientCurve | None = None) -> dict[str, Any]:
    """Send one control request and return the reply dict ({"ok": ..., ...}).

    Raises TimeoutError when no reply comes within `timeout_ms`, and ProtocolError for a
    request that is not an object with a string "cmd" or a reply that is not valid.
    """
    payload = encode_request(request)
    ctx = context if context is not None else zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            make_client(sock, curve)
        bind_or_connect(sock, endpoint, True, "control client")
        # Wait for a ready connection within the same budget: a peer that is not there yet,
        # or that refuses our CURVE key, leaves no pipe to send on (send would raise Again).
        deadline = time.monotonic() + timeout_ms / 1000
        if sock.poll(timeout_ms, zmq.POLLOUT):
            sock.send(payload, flags=zmq.NOBLOCK)
            left_ms = max(0, int(1000 * (deadline - time.monotonic())))
            if sock.poll(left_ms, zmq.POLLIN):
                return decode_reply(sock.recv(zmq.NOBLOCK))
        raise TimeoutError(f"no reply from the control socket at {endpoint} within "
                           f"{timeout_ms} ms; is the daemon running, is that its control "
                           "endpoint, and (with keys) is this client's key allowed?")
    finally:
        sock.close(linger=0)
