"""The daemon's control socket, both sides: `ControlServer` answers JSON requests on a ROUTER
socket in a thread of its own; `control_request` is the client, one request and its reply.

Control needs authority, on loopback too: every request carries the daemon's control token
(``"token"``), a secret in a file only its owner may read (``control.token`` in streamtag's
folder, ``streamtag.places``; ``[control] token_file``). The daemon makes the file when it is
missing (``ensure_token``); the client reads it by itself when it talks to a daemon on this
machine. Under CURVE, the control socket lets in only administrators' keys, and a request from
one needs no token. Frames are bounded both ways (the protocol's ``MAX_REQUEST_BYTES`` and
``MAX_REPLY_BYTES``, as ZeroMQ ``MAXMSGSIZE``): libzmq drops a peer that sends a larger frame as
its size arrives, before any of it is kept.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from streamtag import places
from streamtag.errors import ConfigError, StreamtagError
from streamtag.wire.protocol import (
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    error_reply,
)
from streamtag.wire.ready_thread import ReadyThread
from streamtag.wire.security import (
    CONTROL_DOMAIN,
    ClientCurve,
    CurveKeys,
    make_client,
    make_server,
)
from streamtag.wire.sockets import DEFAULT_CONTROL_ENDPOINT, bind_or_connect, endpoint_host

log = logging.getLogger(__name__)

TOKEN_FILE = "control.token"  # in streamtag's folder (streamtag.places)
TOKEN_FIELD = "token"
TOKEN_BYTES = 32
MIN_TOKEN_LENGTH = 32  # characters of a token file written by hand
REFUSAL_LOG_INTERVAL_S = 60.0  # refused requests are logged at most this often


def default_token_file() -> Path:
    """Where the daemon keeps its control token unless ``[control] token_file`` says."""
    return places.home() / TOKEN_FILE


def read_token(path: str | os.PathLike) -> str | None:
    """The token in ``path``, or None when the file is missing or cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def _create_token(path: Path) -> None:
    """Writes a new random token to ``path`` unless the file appears first. The token is
    written whole to a file of mode 0600 made with O_EXCL (mkstemp) beside it, which is then
    linked to ``path``: a reader never sees half a token, and of two daemons starting at once
    the first link wins and the other uses its token."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(secrets.token_hex(TOKEN_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)


def ensure_token(path: str | os.PathLike) -> str:
    """The daemon's control token: read from ``path``, made first when the file is missing.
    ConfigError naming the file when it cannot be made or read, when another user owns it (who
    may have planted it, knowing the token), when group or others may read or write it (with
    the chmod that fixes it), or when it holds too short a token."""
    path = Path(path).expanduser()
    try:
        if not path.exists():
            _create_token(path)
        status = path.stat()
        mode = status.st_mode
    except OSError as exc:
        raise ConfigError(f"control token file {path}: cannot create or read it "
                          f"({exc.strerror or exc}); set [control] token_file (or "
                          f"${places.HOME_ENV}) to a writable place, or turn the control "
                          "socket off (control.endpoint = \"\")") from exc
    if status.st_uid != os.geteuid():
        raise ConfigError(f"control token file {path} belongs to another user (uid "
                          f"{status.st_uid}, not this daemon's {os.geteuid()}): whoever made "
                          "it knows the token and would control the daemon; remove it (the "
                          "daemon makes a new one) or set [control] token_file to a file of "
                          "your own")
    if mode & 0o077:
        raise ConfigError(f"control token file {path} is open to group or others (mode "
                          f"{mode & 0o777:04o}): anyone who reads it controls the daemon; run "
                          f"`chmod 600 {path}` and start again")
    token = read_token(path)
    if token is None or len(token) < MIN_TOKEN_LENGTH or not token.isascii() \
            or any(c.isspace() for c in token):
        raise ConfigError(f"control token file {path} holds no usable token (at least "
                          f"{MIN_TOKEN_LENGTH} ASCII characters without blanks); remove it and "
                          "the daemon makes a new one")
    return token


def _is_this_machine(endpoint: str) -> bool:
    """Whether ``endpoint`` is served on this machine (ipc, inproc, or tcp to one of its own
    addresses): the default token is sent only there, never to another host."""
    scheme, host = endpoint_host(endpoint)
    if scheme != "tcp":
        return scheme in ("ipc", "inproc")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        return False
    for family, kind, proto, _, address in infos:
        if ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
            return True
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind((address[0], 0, *address[2:]))  # only an own address binds
                return True
            except OSError:
                continue
    return False


Handler = Callable[[dict[str, Any]], Mapping[str, Any] | None]


def _refusal_text(token_file: str | os.PathLike | None) -> str:
    """What a request without the token is told: where the token is, and how a client finds
    it (by itself in the default file, else with --token-file)."""
    if token_file is None:
        return "not authorised: give the daemon's control token (its token file)"
    found = Path(token_file).expanduser() == default_token_file()
    return (f"not authorised: give the daemon's control token (the file {token_file}"
            + (", found by the streamtag commands themselves: run them as the daemon's user)"
               if found else f"; pass --token-file {token_file})"))


class ControlServer:
    """Answers control requests on a ROUTER socket, in its own thread.

    Requests are JSON objects {"cmd": NAME, ...args}; `handlers[NAME](request)` returns a dict
    merged into the reply {"ok": true, ...}. An unknown command, a malformed request or a
    handler that raises gets {"ok": false, "error": ...} and the server keeps serving. A
    built-in "ping" (unless a handler takes the name) answers with the protocol version and the
    known commands. Handlers run in the server thread one at a time: keep them short, or hand
    long work (a model reload) to the daemon and reply at once.

    With a ``token`` (the daemon always gives one), a request is served only when its "token"
    matches, or when it came from a CURVE client that the authenticator let in (in
    ``curve_domain``); any other gets one refusal and nothing runs, "ping" included. The token
    never reaches a handler. Without a token (a server in a test) every request is served.
    """

    def __init__(self, endpoint: str = DEFAULT_CONTROL_ENDPOINT,
                 handlers: Mapping[str, Handler] | None = None, *,
                 context: zmq.Context | None = None, poll_ms: int = 100,
                 curve: CurveKeys | None = None, curve_domain: str = CONTROL_DOMAIN,
                 token: str | None = None, token_file: str | os.PathLike | None = None):
        self._handlers: dict[str, Handler] = {"ping": self._ping}
        for name, handler in (handlers or {}).items():
            if not isinstance(name, str) or not callable(handler):
                raise TypeError(f"handlers maps command names to callables; got {name!r}")
            self._handlers[name] = handler
        self._requested = endpoint
        self._curve = curve
        self._curve_domain = curve_domain
        self._token = token.encode() if token is not None else None
        self._refusal_text = _refusal_text(token_file)  # the same for every refusal
        self._context = context
        self._poll_ms = poll_ms
        self.endpoint: str | None = None  # the bound endpoint, once started
        self.served = 0
        self.refused = 0  # requests without authority
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL_S
        self._worker = ReadyThread(self._run, "streamtag-control")

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    def _ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "commands": self.commands}

    def authorised(self, request: dict[str, Any], curve_client: bool = False) -> bool:
        """Whether ``request`` may run: it carries the token, or it came from a client that
        CURVE authenticated (``curve_client``), or this server has no token."""
        if self._token is None or curve_client:
            return True
        given = request.get(TOKEN_FIELD)
        # the token file's text as read, its newline too, is the token (a client in another
        # language reads the file whole)
        return isinstance(given, str) and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), self._token)

    def _refusal(self) -> dict[str, Any]:
        self.refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            self._refusal_logged_at = now
            log.warning("control request refused: no valid token (%d refused so far)",
                        self.refused)
        return error_reply(self._refusal_text)

    def handle(self, request: dict[str, Any], curve_client: bool = False) -> dict[str, Any]:
        """The reply to one decoded request; never raises."""
        if not self.authorised(request, curve_client):
            return self._refusal()
        request = {k: v for k, v in request.items() if k != TOKEN_FIELD}
        cmd = request.get("cmd")
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return error_reply(f"unknown command {cmd!r}; known commands: "
                               f"{', '.join(self.commands)}")
        try:
            result = handler(request)
        except StreamtagError as exc:  # a request refused with its reason, said as it is
            log.info("control command %r refused: %s", cmd, exc)
            return error_reply(str(exc))
        except Exception as exc:  # a failing handler must not take the server down
            log.warning("control command %r failed", cmd, exc_info=True)
            return error_reply(f"command {cmd!r} failed: {type(exc).__name__}: {exc}")
        if result is None:
            result = {}
        if not isinstance(result, Mapping):
            return error_reply(f"command {cmd!r} returned {type(result).__name__}, not a dict")
        return {"ok": True, **result}

    def handle_bytes(self, data: bytes, curve_client: bool = False) -> bytes:
        """The reply frame to one request frame; never raises."""
        try:
            request = decode_request(data)
        except ValueError as exc:  # ProtocolError
            return encode_reply(error_reply(str(exc)))
        try:
            reply = self.handle(request, curve_client)
        except Exception:  # noqa: BLE001 - whatever a request does, the server serves on
            log.warning("control request could not be answered", exc_info=True)
            return encode_reply(error_reply("the control server could not answer this "
                                            "request; its log says why"))
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
            # A larger frame makes libzmq drop the peer as the frame's size arrives, before
            # any of it is kept; the client sees no reply.
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
            if self._curve is not None:
                make_server(sock, self._curve, self._curve_domain)
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
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                frames = [part.bytes for part in parts]
                # A REQ peer sends [identity, b"", request]; a DEALER may omit the delimiter.
                split = frames.index(b"") + 1 if b"" in frames else 1
                envelope, payload = frames[:split], frames[split:]
                if len(payload) == 1:
                    reply = self.handle_bytes(payload[0], self._curve_client(parts[-1]))
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

    def _curve_client(self, frame: zmq.Frame) -> bool:
        """Whether the frame came from a client that CURVE and the authenticator let in: such
        frames carry the client's key as their User-Id."""
        if self._curve is None:
            return False
        try:
            return bool(frame.get("User-Id"))
        except zmq.ZMQError:
            return False

    def __enter__(self) -> ControlServer:
        return self if self._worker.started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def control_request(endpoint: str, request: Mapping[str, Any], timeout_ms: int = 2000, *,
                    context: zmq.Context | None = None, curve: ClientCurve | None = None,
                    token: str | None = None,
                    max_reply_bytes: int = MAX_REPLY_BYTES) -> dict[str, Any]:
    """Send one control request and return the reply dict ({"ok": ..., ...}).

    The request carries the daemon's control token: ``token``, else the one in the default
    token file (``default_token_file``) when the endpoint is on this machine (a token is never
    sent to another host unasked), unless the request has a "token" already; a request that
    went without one, the file not made yet, and was refused is sent once more if the file has
    appeared meanwhile (a daemon's first start makes it just before binding). A reply larger
    than ``max_reply_bytes`` is dropped by libzmq, which then reads as no reply.

    Raises TimeoutError when no reply comes within `timeout_ms`, and ProtocolError for a
    request that is not an object with a string "cmd" or a reply that is not valid.
    """
    request = dict(request) if isinstance(request, Mapping) else request
    looked_up = False  # the token, if any, came from the default token file
    if isinstance(request, dict) and TOKEN_FIELD not in request:
        if token is None and _is_this_machine(endpoint):
            token = read_token(default_token_file())
            looked_up = True
        if token is not None:
            request[TOKEN_FIELD] = token
    reply = _ask(endpoint, encode_request(request), timeout_ms, context, curve, max_reply_bytes)
    if looked_up and token is None and not reply.get("ok"):
        # Asked before a daemon's first start made its token file: ZeroMQ held the request,
        # without a token, until the daemon bound, and it was refused. Once more, with it.
        token = read_token(default_token_file())
        if token is not None:
            request[TOKEN_FIELD] = token
            reply = _ask(endpoint, encode_request(request), timeout_ms, context, curve,
                         max_reply_bytes)
    return reply


def _ask(endpoint: str, payload: bytes, timeout_ms: int, context: zmq.Context | None,
         curve: ClientCurve | None, max_reply_bytes: int) -> dict[str, Any]:
    """One request on a socket of its own: the reply, or TimeoutError."""
    ctx = context if context is not None else zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_reply_bytes)
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
                           "endpoint, (with keys) is this client's key an admin key, and is the "
                           f"request under {MAX_REQUEST_BYTES} bytes?")
    finally:
        sock.close(linger=0)
