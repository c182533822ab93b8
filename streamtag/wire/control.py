"""The daemon's control socket, both sides: `ControlServer` answers JSON requests on a ROUTER
socket in a thread of its own; `control_request` is the client, one request and its reply.

Control needs authority, on loopback too, and its secret never travels. The daemon's control
token is in a file only its user may read (``control.token`` in streamtag's folder,
``streamtag.places``; ``[control] token_file``), made anew at every start unless ``[control]
pin_token`` (``ensure_token``). A client first asks for a challenge: the daemon hands out a
fresh random nonce, good for one request of that connection within ``NONCE_LIFETIME_S``, at most
``MAX_NONCES`` outstanding. The client then sends two frames, ``{"nonce", "mac"}`` and the
request's exact bytes, where ``mac`` is HMAC-SHA256 keyed with the token over the nonce and the
request; the daemon answers with ``{"mac"}`` and the reply's bytes, its ``mac`` over the nonce,
the request's mac and the reply, so the client knows the daemon itself answered this very
request. A process squatting on the endpoint learns a mac for a nonce of its own choosing, good
for nothing: the daemon takes only nonces it issued, once each (docs/protocol.md). Under CURVE,
the control socket lets in only administrators' keys, which authenticate both ends; a request
from one needs no token. Frames are bounded both ways (the protocol's ``MAX_REQUEST_BYTES`` and
``MAX_REPLY_BYTES``, as ZeroMQ ``MAXMSGSIZE``): libzmq drops a peer that sends a larger frame as
its size arrives, before any of it is kept.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from streamtag import places
from streamtag.errors import ConfigError, ProtocolError, StreamtagError
from streamtag.fsutil import NotOursError, own_folder, read_own_file
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.guard import ConnectionGuard, bind_guarded
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
from streamtag.wire.requests import (
    AddSource,
    ClientRequest,
    Ping,
    ReloadModel,
    RemoveSource,
    Snapshot,
    Status,
)
from streamtag.wire.security import (
    CONTROL_DOMAIN,
    ClientCurve,
    CurveKeys,
    make_client,
    make_server,
)
from streamtag.wire.sockets import (
    DEFAULT_CONTROL_ENDPOINT,
    bind_or_connect,
    endpoint_host,
    monitor_socket,
    stop_monitor,
    wait_released,
)

log = logging.getLogger(__name__)

TOKEN_FILE = "control.token"  # in streamtag's folder (streamtag.places)
TOKEN_FIELD = "token"  # what a request carried in clear before protocol 1.6: now refused
TOKEN_BYTES = 32
MIN_TOKEN_LENGTH = 32  # characters of a token file written by hand
MAX_TOKEN_FILE_BYTES = 4096  # read no more of a token file than this
REFUSAL_LOG_INTERVAL_S = 60.0  # refused requests are logged at most this often
CHALLENGE = "challenge"  # the request for a nonce, served to anyone: it tells nothing
NONCE_BYTES = 32
# A nonce serves the one request its client sends at once: 10 s covers a request queued behind
# others in a busy daemon. At most MAX_NONCES wait (one per connection, the oldest given up
# first): 1024 are ~150 kB, and a peer must hold 1024 connections open to push out another's.
NONCE_LIFETIME_S = 10.0
MAX_NONCES = 1024
MAX_AUTH_BYTES = 512  # the frame that carries a nonce and a mac


def default_token_file() -> Path:
    """Where the daemon keeps its control token unless ``[control] token_file`` says."""
    return places.home() / TOKEN_FILE


def load_token(path: str | os.PathLike[str]) -> str:
    """The token in ``path``: the file's text with the blanks around it taken off, opened
    without following a link and checked on the opened file (this user's, read and written by
    no one else). ConfigError naming the file, the reason and the fix otherwise."""
    path = Path(path).expanduser()
    try:
        data = read_own_file(path, MAX_TOKEN_FILE_BYTES, private=True,
                             what="control token file")
        token = data.decode("utf-8").strip()
    except NotOursError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, ValueError) as exc:  # missing, unreadable, too long, not UTF-8
        raise ConfigError(f"control token file {path}: cannot read it "
                          f"({getattr(exc, 'strerror', None) or exc})") from None
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() \
            or any(c.isspace() for c in token):
        raise ConfigError(f"control token file {path} holds no usable token (at least "
                          f"{MIN_TOKEN_LENGTH} ASCII characters without blanks); remove it and "
                          "the daemon makes a new one")
    return token


def read_token(path: str | os.PathLike[str]) -> str | None:
    """The token in ``path`` (``load_token``), or None when it cannot be had."""
    try:
        return load_token(path)
    except ConfigError:
        return None


def _write_token(path: Path, replace: bool) -> None:
    """Writes a new random token to ``path``: whole, to a file of mode 0600 made with O_EXCL
    (mkstemp) beside it, then moved onto ``path`` (``replace``) or linked to it unless it
    appeared meanwhile (of two daemons making it at once, the first wins). A reader never sees
    half a token."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(secrets.token_hex(TOKEN_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temporary, path)
            return
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def ensure_token(path: str | os.PathLike[str], *, pin: bool = False) -> str:
    """The daemon's control token, in ``path``: a new one at every call (every start), unless
    ``pin`` keeps the one the file holds (made when missing). The folder is made 0700 when
    missing. ConfigError naming the place and the fix when the folder or an existing file is
    another user's or open to others, the file is a link, or it cannot be made or read: a
    refused file is never written over, since whoever planted it may be watching it."""
    path = Path(path).expanduser()
    try:
        exists = os.path.lexists(path)
        if exists:
            token = load_token(path)  # refuses a link, another user's file, one open to others
        own_folder(path.parent, what=f"streamtag's folder (${places.HOME_ENV})"
                   if path.parent == places.home() else "the control token's folder")
        if exists and pin:
            return token
        _write_token(path, replace=exists)
    except NotOursError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"control token file {path}: cannot create or read it "
                          f"({exc.strerror or exc}); set [control] token_file (or "
                          f"${places.HOME_ENV}) to a writable place, or turn the control "
                          "socket off (control.endpoint = \"\")") from exc
    return load_token(path)


class TokenSource:
    """The token a server checks requests against: a fixed one, or the one a token file holds
    now, read again whenever the file changes (daemons that share a token file share the token
    of the latest start). A file that cannot be read keeps the last token read."""

    def __init__(self, token: str | None = None, path: str | os.PathLike[str] | None = None):
        self._fixed = token.encode() if token is not None else None
        self.path = Path(path).expanduser() if path is not None else None
        self._seen: tuple[int, int, int, int] | None = None
        self._token: bytes | None = None
        self._lock = threading.Lock()

    def current(self) -> bytes | None:
        if self._fixed is not None or self.path is None:
            return self._fixed
        with self._lock:
            try:
                status = os.stat(self.path, follow_symlinks=False)
                seen = (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)
            except OSError:
                seen = None
            if seen is not None and seen != self._seen:
                try:
                    self._token = load_token(self.path).encode()
                    self._seen = seen
                except ConfigError as exc:
                    self._seen = seen
                    log.warning("control token: %s; %s", exc, "the last token read serves on"
                                if self._token is not None else "no request can be served")
            return self._token


def mac_of(token: bytes, *parts: bytes) -> str:
    """HMAC-SHA256 keyed with ``token`` over ``parts`` one after another, in hex."""
    digest = hmac.new(token, digestmod=hashlib.sha256)
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


class _Nonces:
    """The challenges handed out and not yet answered: one per connection (a new one replaces
    its old), each good once within NONCE_LIFETIME_S, at most MAX_NONCES (the oldest given up
    first)."""

    def __init__(self) -> None:
        self.limit, self.lifetime_s = MAX_NONCES, NONCE_LIFETIME_S
        self._waiting: collections.OrderedDict[bytes, tuple[str, float]] = \
            collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def issue(self, peer: bytes) -> str:
        now = time.monotonic()
        self._waiting.pop(peer, None)
        while self._waiting:  # oldest first: drop the expired, then room for one more
            oldest, (_, issued) = next(iter(self._waiting.items()))
            if now - issued <= self.lifetime_s and len(self._waiting) < self.limit:
                break
            del self._waiting[oldest]
        nonce = secrets.token_hex(NONCE_BYTES)
        self._waiting[peer] = (nonce, now)
        return nonce

    def take(self, peer: bytes, nonce: str) -> bool:
        """Whether ``nonce`` is the one ``peer`` was given and still good; it is used up
        either way."""
        waiting = self._waiting.pop(peer, None)
        if waiting is None:
            return False
        given, issued = waiting
        return (time.monotonic() - issued <= self.lifetime_s
                and hmac.compare_digest(given.encode(), nonce.encode("utf-8", "replace")))


def _is_this_machine(endpoint: str) -> bool:
    """Whether ``endpoint`` is served on this machine (ipc, inproc, or tcp to one of its own
    addresses): the default token signs requests only there, never to another host."""
    scheme, host = endpoint_host(endpoint)
    if scheme != "tcp":
        return scheme in ("ipc", "inproc")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        return False
    for family, kind, proto, _, address in infos:
        if ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback:
            return True
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind((address[0], 0, *address[2:]))  # only an own address binds
                return True
            except OSError:
                continue
    return False


Handler = Callable[[dict[str, Any]], Mapping[str, Any] | None]


def _refusal_text(token_file: str | os.PathLike[str] | None) -> str:
    """What a request without authority is told: where the token is, how a client finds it
    (by itself in the default file, else with --token-file), and that it is never sent."""
    never_sent = ("; the token itself is never sent: ask for a challenge and sign the request "
                  "with it (docs/protocol.md, Control socket)")
    if token_file is None:
        return ("not authorised: sign the request with the daemon's control token (its token "
                "file)" + never_sent)
    found = Path(token_file).expanduser() == default_token_file()
    return (f"not authorised: sign the request with the daemon's control token (the file "
            f"{token_file}"
            + (", found by the streamtag commands themselves: run them as the daemon's user)"
               if found else f"; pass --token-file {token_file})") + never_sent)


STALE_NONCE_REFUSAL = ("not authorised: the challenge's nonce is unknown, used or older than "
                       f"{NONCE_LIFETIME_S:g} s; ask for a new challenge on this connection and "
                       "sign with it")


class ControlServer:
    """Answers control requests on a ROUTER socket, in its own thread.

    Requests are JSON objects {"cmd": NAME, ...args}; `handlers[NAME](request)` returns a dict
    merged into the reply {"ok": true, ...}. An unknown command, a malformed request or a
    handler that raises gets {"ok": false, "error": ...} and the server keeps serving. A
    built-in "ping" (unless a handler takes the name) answers with the protocol version and the
    known commands. Handlers run in the server thread one at a time: keep them short, or hand
    long work (a model reload) to the daemon and reply at once.

    Authority: a request is served when it is signed with the control token over a nonce this
    server handed that connection (``{"cmd": "challenge"}``), and its reply is signed back; or
    when it came from a CURVE client that the authenticator let in (in ``curve_domain``). Any
    other gets one refusal and nothing runs, "ping" included. The token is ``token`` when
    given, else the one ``token_file`` holds now (the default token file when neither is
    given, made at start when missing), read again when the file changes.

    ``caps``: the socket's connection caps (streamtag.wire.guard), kept in the server's own
    thread; a connection that has made a request with authority goes after every one that
    has not. ``guard`` is their keeper once started.
    """

    def __init__(self, endpoint: str = DEFAULT_CONTROL_ENDPOINT,
                 handlers: Mapping[str, Handler] | None = None, *,
                 context: zmq.Context[Any] | None = None, poll_ms: int = 100,
                 curve: CurveKeys | None = None, curve_domain: str = CONTROL_DOMAIN,
                 token: str | None = None, token_file: str | os.PathLike[str] | None = None,
                 caps: ConnectionCaps | None = None):
        self._handlers: dict[str, Handler] = {"ping": self._ping}
        for name, handler in (handlers or {}).items():
            if not isinstance(name, str) or not callable(handler):
                raise TypeError(f"handlers maps command names to callables; got {name!r}")
            self._handlers[name] = handler
        self._requested = endpoint
        self._curve = curve
        self._curve_domain = curve_domain
        # neither: the default token file's (a server in a test), made at start if missing
        self._default_token = token is None and token_file is None
        if self._default_token:
            token_file = default_token_file()
        self._token = TokenSource(token, token_file)
        self._refusal_text = _refusal_text(token_file)  # the same for every refusal
        self._nonces = _Nonces()
        self._context = context
        self._poll_ms = poll_ms
        self._caps = caps
        self.guard: ConnectionGuard | None = None
        self.endpoint: str | None = None  # the bound endpoint, once started
        self.served = 0
        self.refused = 0  # requests without authority
        self._authorised = False  # whether the request being answered had authority
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL_S
        self._worker = ReadyThread(self._run, "streamtag-control")

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def challenges_waiting(self) -> int:
        """Nonces handed out and not yet used or expired (at most MAX_NONCES)."""
        return len(self._nonces)

    def _ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "commands": self.commands}

    def _refusal(self, text: str | None = None) -> dict[str, Any]:
        self.refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL_S:
            self._refusal_logged_at = now
            log.warning("control request refused: not signed with the control token (%d "
                        "refused so far)", self.refused)
        return error_reply(text or self._refusal_text)

    def handle(self, request: dict[str, Any], curve_client: bool = False,
               signed: bool = False) -> dict[str, Any]:
        """The reply to one decoded request, which ran only when ``signed`` (its mac was
        checked) or from an admitted CURVE client; never raises."""
        if not (signed or curve_client):
            return self._refusal()
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

    def handle_bytes(self, data: bytes, curve_client: bool = False,
                     signed: bool = False) -> bytes:
        """The reply frame to one request frame; never raises."""
        try:
            request = decode_request(data)
        except ValueError as exc:  # ProtocolError
            return encode_reply(error_reply(str(exc)))
        try:
            reply = self.handle(request, curve_client, signed)
        except Exception:  # noqa: BLE001 - whatever a request does, the server serves on
            log.warning("control request could not be answered", exc_info=True)
            return encode_reply(error_reply("the control server could not answer this "
                                            "request; its log says why"))
        try:
            return encode_reply(reply)
        except ValueError as exc:
            return encode_reply(error_reply(f"command {request['cmd']!r} gave a reply that "
                                            f"cannot be sent: {exc}"))

    def _challenge(self, peer: bytes) -> bytes:
        return encode_reply({"ok": True, "nonce": self._nonces.issue(peer),
                             "expires_s": self._nonces.lifetime_s, "protocol": PROTOCOL_VERSION})

    def _signed(self, peer: bytes, auth: bytes, data: bytes,
                curve_client: bool) -> list[bytes]:
        """The reply frames to a signed request ([auth, request]): [reply auth, reply] when
        its nonce is the one this peer was given and its mac is the token's, else a refusal."""
        try:
            fields = json.loads(auth) if len(auth) <= MAX_AUTH_BYTES else None
        except ValueError:
            fields = None
        nonce = fields.get("nonce") if isinstance(fields, dict) else None
        mac = fields.get("mac") if isinstance(fields, dict) else None
        if not isinstance(nonce, str) or not isinstance(mac, str):
            return [encode_reply(error_reply(
                'a signed control request\'s first frame is {"nonce": ..., "mac": ...} '
                f"(at most {MAX_AUTH_BYTES} bytes)"))]
        if not self._nonces.take(peer, nonce):
            return [encode_reply(self._refusal(STALE_NONCE_REFUSAL))]
        token = self._token.current()
        if token is None or not hmac.compare_digest(
                mac_of(token, nonce.encode(), data).encode(), mac.encode("utf-8", "replace")):
            return [encode_reply(self._refusal())]
        self._authorised = True
        reply = self.handle_bytes(data, curve_client, signed=True)
        return [json.dumps({"mac": mac_of(token, nonce.encode(), mac.encode(), reply)}).encode(),
                reply]

    def _answer(self, peer: bytes, payload: list[bytes], curve_client: bool) -> list[bytes]:
        """The reply frames to one request's frames; never raises."""
        if len(payload) == 2:
            return self._signed(peer, payload[0], payload[1], curve_client)
        if len(payload) != 1:
            return [encode_reply(error_reply(
                "a control request is one frame of JSON, or two when signed (the signature, "
                f"then the request), got {len(payload)} frames"))]
        if payload[0] == CHALLENGE_REQUEST:
            return [self._challenge(peer)]
        try:
            if decode_request(payload[0])["cmd"] == CHALLENGE:
                return [self._challenge(peer)]
        except ValueError:
            pass  # handle_bytes says what is wrong with it
        return [self.handle_bytes(payload[0], curve_client)]

    def start(self, timeout_s: float = 5.0) -> ControlServer:
        """Bind and serve in a background thread; returns once bound (raises OSError if the
        endpoint cannot be bound)."""
        if self._worker.started:
            raise RuntimeError("the control server was already started")
        if self._default_token and self._token.path is not None:
            ensure_token(self._token.path, pin=True)
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
                self.endpoint, self.guard = bind_guarded(sock, self._requested, self._caps,
                                                         "control", "control server")
            except OSError as exc:
                self._worker.error = exc
                return
            finally:
                self._worker.ready.set()
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            if self.guard is not None:
                poller.register(self.guard.monitor, zmq.POLLIN)
            while not self._worker.stopping.is_set():
                ready = dict(poller.poll(self._poll_ms))
                if self.guard is not None:
                    self.guard.handle_events()  # also says what was ended, a line a minute
                if sock not in ready:
                    continue
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                frames = [part.bytes for part in parts]
                # A REQ peer sends [identity, b"", request...]; a DEALER may omit the delimiter.
                split = frames.index(b"") + 1 if b"" in frames else 1
                envelope, payload = frames[:split], frames[split:]
                curve_client = self._curve_client(parts[-1])
                self._authorised = curve_client
                reply = self._answer(frames[0], payload, curve_client)
                if self._authorised and self.guard is not None:
                    self.guard.authenticate(_source_fd(parts[-1]))
                try:
                    sock.send_multipart([*envelope, *reply], flags=zmq.NOBLOCK)
                except zmq.Again:
                    log.warning("control reply dropped: the client is not reading")
                self.served += 1
        finally:
            if self.guard is not None:
                self.guard.close()
            sock.close(linger=0)
            if self.endpoint is not None:
                wait_released(self.endpoint)  # stop() returns with the port free again

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


def _source_fd(frame: zmq.Frame) -> int:
    """The descriptor of the connection ``frame`` came in on (libzmq's ZMQ_SRCFD); -1 where
    libzmq does not say."""
    try:
        return int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, AttributeError, ValueError):
        return -1


CHALLENGE_REQUEST = encode_request({"cmd": CHALLENGE})
_announced: set[tuple[str, str]] = set()  # (endpoint, token file) a client said it signs for
_announced_lock = threading.Lock()


def _announce(endpoint: str, token_file: Path, cmd: Any) -> None:
    """Logs, once per endpoint in a process, that a request found the token by itself and
    where it went: a recorder or a dashboard asks unasked, and its user should see where."""
    key = (endpoint, str(token_file))
    with _announced_lock:
        if key in _announced or len(_announced) >= 64:
            return
        _announced.add(key)
    log.info("control: asking the daemon at %s (first request %r), signed with the token in "
             "%s (the token itself is never sent)", endpoint, cmd, token_file)


def control_request(endpoint: str, request: Mapping[str, Any], timeout_ms: int = 2000, *,
                    context: zmq.Context[Any] | None = None, curve: ClientCurve | None = None,
                    token: str | None = None,
                    max_reply_bytes: int = MAX_REPLY_BYTES) -> dict[str, Any]:
    """Send one control request and return the reply dict ({"ok": ..., ...}).

    Without CURVE keys, the request is signed (the module's docstring): with ``token``, else
    the one in the default token file (``default_token_file``) when the endpoint is on this
    machine (it never signs for another host unasked; the file is read once the daemon has
    answered the challenge, so a daemon's first start that makes it is no race). A reply
    that is not signed with that token is not trusted: an impostor's ``ok`` becomes an error
    saying so; a refusal (``ok`` false) is passed on as the daemon's own words would be. With
    no token to sign with, the request goes unsigned and the daemon's refusal says where its
    token is. With ``curve``, CURVE authenticates both ends and nothing is signed. A reply
    larger than ``max_reply_bytes`` is dropped by libzmq, which then reads as no reply.

    Raises TimeoutError when no reply comes within `timeout_ms` (all round trips together),
    and ProtocolError for a request that is not an object with a string "cmd" or carries a
    token, or a reply that is not valid.
    """
    payload = encode_request(request)
    if TOKEN_FIELD in request:
        raise ProtocolError('a control request never carries its token ("token"); give '
                            "control_request token=, which signs the request with it")
    ctx = context if context is not None else zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_reply_bytes)
        if curve is not None:
            make_client(sock, curve)
        bind_or_connect(sock, endpoint, True, "control client")
        if curve is not None:
            return decode_reply(_curve_round_trip(sock, payload, deadline, endpoint,
                                                  timeout_ms)[-1])
        challenge = decode_reply(_round_trip(sock, [CHALLENGE_REQUEST], deadline, endpoint,
                                             timeout_ms)[-1])
        nonce = challenge.get("nonce")
        if not challenge.get("ok") or not isinstance(nonce, str) or not nonce:
            return error_reply(
                f"the control socket at {endpoint} gave no challenge to sign (it said: "
                f"{challenge.get('error', challenge)!s:.300}); a daemon of protocol 1.6 or "
                "later is needed, and this client never sends the token in clear")
        found = None
        if token is None and _is_this_machine(endpoint):
            found = default_token_file()
            token = read_token(found)
        if token is None:  # nothing to sign with: the daemon's refusal says where its token is
            reply = decode_reply(_round_trip(sock, [payload], deadline, endpoint,
                                             timeout_ms)[-1])
            return reply if not reply.get("ok") else _not_signed(endpoint)
        if found is not None:
            _announce(endpoint, found, request.get("cmd"))
        key = token.strip().encode()
        mac = mac_of(key, nonce.encode(), payload)
        auth = json.dumps({"nonce": nonce, "mac": mac}).encode()
        frames = _round_trip(sock, [auth, payload], deadline, endpoint, timeout_ms)
        if len(frames) == 1:
            reply = decode_reply(frames[0])
            return reply if not reply.get("ok") else _not_signed(endpoint)
        if len(frames) != 2 or not _reply_signed(key, nonce, mac, frames):
            return _not_signed(endpoint)
        return decode_reply(frames[1])
    finally:
        sock.close(linger=0)


class ControlClient:
    """A daemon's control socket as methods, one per request, each returning the reply dict
    (``{"ok": ...}``; a refusal is ``"ok": false`` with the daemon's ``"error"``).

    Every request goes as ``control_request`` sends it (signed with ``token`` or the default
    token file's, or under ``curve``), waiting ``attempt_ms`` for its reply. With ``wait_s``
    it is asked again until that many seconds have passed (a daemon that is still loading its
    model answers nothing yet), and ``on_wait`` is told once that the client waits. Raises the
    last attempt's TimeoutError; ProtocolError for a reply that is not valid."""

    def __init__(self, endpoint: str, *, curve: ClientCurve | None = None,
                 token: str | None = None, context: zmq.Context[Any] | None = None,
                 attempt_ms: int = 2000, wait_s: float = 0.0,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.endpoint = endpoint
        self.curve, self.token, self.context = curve, token, context
        self.attempt_ms, self.wait_s, self.on_wait = attempt_ms, wait_s, on_wait

    def ping(self) -> dict[str, Any]:
        return self.ask(Ping())

    def status(self, *, histograms: bool = False) -> dict[str, Any]:
        return self.ask(Status(histograms))

    def snapshot(self) -> dict[str, Any]:
        return self.ask(Snapshot())

    def add_source(self, stream_id: str, spec: str, *, title: str | None = None,
                   options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.ask(AddSource(stream_id, spec, title, dict(options or {})))

    def remove_source(self, stream_id: str) -> dict[str, Any]:
        return self.ask(RemoveSource(stream_id))

    def reload_model(self, path: str) -> dict[str, Any]:
        return self.ask(ReloadModel(path))

    def ask(self, request: ClientRequest | Mapping[str, Any]) -> dict[str, Any]:
        """The reply to ``request`` (typed, or a request object as the wire carries it)."""
        payload = request if isinstance(request, Mapping) else request.to_dict()
        deadline = time.monotonic() + max(0.0, self.wait_s)
        told = False
        timeout_ms = self.attempt_ms  # the first attempt waits this long, whatever wait_s
        while True:
            try:
                # (a daemon that came up while we waited: control_request reads the default
                # token file once the daemon has answered its challenge)
                return control_request(self.endpoint, payload, timeout_ms=timeout_ms,
                                       curve=self.curve, token=self.token,
                                       context=self.context)
            except KeyRefused:
                raise  # asking again gets the same refusal
            except TimeoutError as exc:
                if time.monotonic() >= deadline:
                    if not told:
                        raise
                    # the whole wait, not the last attempt's share of it
                    raise TimeoutError(str(exc).replace(
                        f"within {timeout_ms} ms", f"within {self.wait_s:g} s (--wait)",
                        1)) from None
                if self.on_wait is not None and not told:
                    self.on_wait(f"no answer from the daemon's control socket at "
                                 f"{self.endpoint} yet; waiting up to {self.wait_s:g} s "
                                 "(--wait)")
                told = True
                timeout_ms = max(200, min(self.attempt_ms,
                                          int(1000 * (deadline - time.monotonic()))))


def _reply_signed(key: bytes, nonce: str, mac: str, frames: list[bytes]) -> bool:
    """Whether ``frames`` ([auth, reply]) carry the mac of the daemon that holds ``key``."""
    try:
        given = json.loads(frames[0]) if len(frames[0]) <= MAX_AUTH_BYTES else None
    except ValueError:
        return False
    given = given.get("mac") if isinstance(given, dict) else None
    return isinstance(given, str) and hmac.compare_digest(
        mac_of(key, nonce.encode(), mac.encode(), frames[1]).encode(),
        given.encode("utf-8", "replace"))


def _not_signed(endpoint: str) -> dict[str, Any]:
    return error_reply(f"the reply from {endpoint} is not signed with the daemon's control "
                       "token, so it was not trusted: another process may hold the endpoint "
                       "(the daemon restarting?), or the token is not this daemon's")


def _round_trip(sock: zmq.Socket[Any], frames: list[bytes], deadline: float, endpoint: str,
                timeout_ms: int) -> list[bytes]:
    """Sends ``frames`` as one message on the REQ socket and returns the reply's frames, or
    TimeoutError once ``deadline`` has passed."""
    # Wait for a ready connection within the same budget: a peer that is not there yet, or
    # that refuses our CURVE key, leaves no pipe to send on (send would raise Again). A refused
    # key's pipe can also go between the poll and the send (its handshake failing then): the
    # send raises Again, and the wait goes on until the deadline.
    while sock.poll(_left_ms(deadline), zmq.POLLOUT):
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            if _left_ms(deadline) == 0:
                break
            continue
        if sock.poll(_left_ms(deadline), zmq.POLLIN):
            return sock.recv_multipart(zmq.NOBLOCK)
        break
    raise TimeoutError(f"no reply from the control socket at {endpoint} within "
                       f"{timeout_ms} ms; is the daemon running, is that its control "
                       "endpoint, (with keys) is this client's key an admin key, and is the "
                       f"request under {MAX_REQUEST_BYTES} bytes?")


class KeyRefused(TimeoutError):
    """No reply will come: the daemon refused this client's CURVE key at the handshake. A
    TimeoutError, as every request that gets no reply raises."""


def _curve_round_trip(sock: zmq.Socket[Any], payload: bytes, deadline: float, endpoint: str,
                      timeout_ms: int) -> list[bytes]:
    """``_round_trip`` for a CURVE client. A daemon whose control socket does not let this
    client's key in sends no reply at all; libzmq's monitor hears the daemon refuse the
    handshake, so that is said at once (KeyRefused: asking again will not help), and a
    silence with keys names what to check."""
    monitor = monitor_socket(sock, zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLOUT)
        poller.register(monitor, zmq.POLLIN)
        sent = False
        while ready := dict(poller.poll(_left_ms(deadline))):
            if monitor in ready:
                status = recv_monitor_message(monitor)["value"]
                raise KeyRefused(
                    f"no reply from the control socket at {endpoint}: the daemon refused this "
                    f"client's CURVE key (its handshake failed, status {status}), and answers "
                    "nothing to a key it refuses. Its control socket lets in only the keys in "
                    "its [security] admin_keys; a subscriber's key (client_keys) may listen "
                    "but not control. Give --client-key an administrator's key pair "
                    "(streamtag keys generate DIR --name admin, and its admin.key in the "
                    "daemon's admin_keys folder)")
            if sent:
                return sock.recv_multipart(zmq.NOBLOCK)
            try:
                sock.send_multipart([payload], flags=zmq.NOBLOCK)
            except zmq.Again:  # no pipe (yet, or its handshake failing): wait a moment
                monitor.poll(min(_left_ms(deadline), 10))
                continue
            sent = True
            poller.modify(sock, zmq.POLLIN)
        raise TimeoutError(
            f"no reply from the control socket at {endpoint} within {timeout_ms} ms with "
            "CURVE keys: is the daemon running there, is --server-key the daemon's public key "
            "(with another, the daemon answers nothing at all), and is this client's key in "
            "its [security] admin_keys?")
    finally:
        stop_monitor(sock, monitor)


def _left_ms(deadline: float) -> int:
    return max(0, int(1000 * (deadline - time.monotonic())))
