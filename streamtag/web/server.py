"""The dashboard's server: the page, a websocket bridge from the ZeroMQ feed, a health check.

One asyncio loop serves the pages from the package (`PAGES`): ``GET /``, the dashboard of every
stream; ``/venue``, one stream's mood full screen for a room's screen (``?stream=ID``,
``&theme=dark|light``, ``&minutes=10..30`` of the mood's course); ``/history.html`` (its data
``/history.json?minutes=10..10080`` or ``?hours=H``, and ``&until=T`` for a span of the past,
as ``/history.html?until=T`` shows it); and their files. It also serves ``/ws`` (JSON
messages, below) and ``/healthz``. A `FeedThread` receives the daemon's messages and hands
them to the loop, where `FeedState` folds them into per-stream views and they are forwarded to
every page. With a control endpoint, a `snapshot` (and `status`) is fetched at start and
whenever a daemon session appears that no snapshot covers, so a page joining late draws at
once.

Every request, page or websocket, must name a host the dashboard answers to (`HostCheck`), and
a browser's ``Origin``, when sent, must be the page's own: a site elsewhere that points its own
name at this address (DNS rebinding) gets 403, not the feed. At most `max_clients` pages are
connected at once, `max_clients_per_address` from one address; the next is refused with 503.
Every connection is admitted by streamtag.wire.listener's `ConnectionLimiter`: its request
head within `header_timeout_s`, at most `max_clients` + `SPARE_CONNECTIONS` connections at
once (`max_clients_per_address` + `SPARE_PER_ADDRESS` from one address), the oldest that is
not a page closed to make room; a page that does not answer a ping within `PING_S` is closed.

Messages to the page, JSON objects with a ``type``:
    hello      on connecting: every stream's view (tags, timeline, last audio level and mood,
               the mood's course), the liveness of the daemon, the feed; with ``more``,
               the rest of the views follow in ``streams`` messages, the last with ``more``
               false
    message    one received protocol message: ``{topic, header, body, gap, restarted}``
    snapshot   stream views taken from a control snapshot
    tick       once a second: the bridge's clock and the daemon's liveness
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamtag.errors import ConfigError
from streamtag.history.timeparse import parse_time, zone_named
from streamtag.web.feed import DEFAULT_HISTORY_S, FeedState, FeedThread
from streamtag.web.history import DEFAULT_HOURS, HistoryBusy, HistoryNotYet, HistoryView
from streamtag.wire.control import ControlClient, read_token
from streamtag.wire.listener import (
    QUIET,
    ConnectionLimiter,
    ListenerLimits,
    quiet_exception_handler,
)
from streamtag.wire.protocol import MsgType
from streamtag.wire.security import ClientCurve

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
CONTROL_TIMEOUT_MS = 1000
SNAPSHOT_RETRY_S = 3.0
MAX_CLIENT_BUFFER = 1 << 20  # a page this far behind is closed; it reconnects to a fresh hello
MAX_BACKLOG_BYTES = 32 * 1024 * 1024  # feed messages waiting for the loop, on the wire
DEFAULT_MAX_CLIENTS = 32
# One screen is one page; a few per address leave room for a room's screens behind one NAT. A
# dashboard behind a reverse proxy sees every page from the proxy's address: raise it there.
DEFAULT_MAX_CLIENTS_PER_ADDRESS = 8
# Connections beyond the pages: the page's files, /history.json and /healthz, each one request
SPARE_CONNECTIONS = 64
SPARE_PER_ADDRESS = 16
HEADER_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 30.0  # /history.json of a week waits its turn behind a few others
PING_S = 20.0  # websockets' keepalive: a ping every PING_S, closed when unanswered in PING_S
# The names of this machine that no other site can take: a page reached by them is ours.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_HOST_HEADER = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

# path -> (file in static/, content type)
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/feed.js": ("feed.js", "text/javascript; charset=utf-8"),
    "/history.html": ("history.html", "text/html; charset=utf-8"),
    "/history.js": ("history.js", "text/javascript; charset=utf-8"),
    "/history.css": ("history.css", "text/css; charset=utf-8"),
    "/venue": ("venue.html", "text/html; charset=utf-8"),
    "/venue.js": ("venue.js", "text/javascript; charset=utf-8"),
    "/venue.css": ("venue.css", "text/css; charset=utf-8"),
}
# Everything the page uses is served from here; the browser is told to load nothing else.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

log = logging.getLogger(__name__)


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package."""
    root = importlib.resources.files("streamtag.web").joinpath("static")
    return {path: (root.joinpath(name).read_bytes(), kind)
            for path, (name, kind) in PAGES.items()}


def host_name(host: str) -> str | None:
    """The name (or address, without brackets) of a Host header, lower case; None when it is
    not a plain ``name[:port]`` or ``[v6]:port``."""
    if not _HOST_HEADER.fullmatch(host):
        return None
    name = urlsplit("//" + host).hostname
    return name.rstrip(".") if name else None


class HostCheck:
    """The hosts the dashboard answers to, against DNS rebinding: a page elsewhere whose name
    is made to resolve to this address is still asked for under its own name (Host), so it is
    refused, while the screen reaches the dashboard by loopback, the address it is bound to, or
    a name given with --allow-host. Bound to every interface (0.0.0.0, ::), any IP address is
    taken too: a browser names an address in Host only when the page was opened by that
    address, which no other site can be. Ports are not compared (a tunnel or a Service may map
    them); the Origin of a browser's request must be the page's own, port and all."""

    def __init__(self, bound_host: str, allow_hosts: Iterable[str] = ()) -> None:
        names = set(LOCAL_HOSTS)
        for given in allow_hosts:
            name = host_name(given.strip())
            if name is None:
                raise ValueError(f"--allow-host {given!r} is not a host name or address")
            names.add(name)
        self.any_address = bound_host.strip("[]") in WILDCARD_HOSTS
        if not self.any_address:
            bound = host_name(bound_host if ":" not in bound_host or bound_host.startswith("[")
                              else f"[{bound_host}]")
            if bound is not None:
                names.add(bound)
        self.names = frozenset(names)

    def allows(self, host: str) -> bool:
        name = host_name(host)
        if name is None:
            return False
        if name in self.names:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_address or address.is_loopback

    def refusal(self, request: Request) -> str | None:
        """Why `request` is refused, or None when it may go on."""
        hosts = request.headers.get_all("Host")
        if len(hosts) != 1 or not self.allows(hosts[0]):
            shown = hosts[0] if len(hosts) == 1 else f"{len(hosts)} Host headers"
            return (f"this dashboard does not answer to {shown!r}; start it with --allow-host "
                    "NAME for a screen that reaches it by another name")
        origins = request.headers.get_all("Origin")
        # Clients that name no origin are not browsers; the same-origin rule is a browser's.
        if origins and (len(origins) != 1
                        or urlsplit(origins[0]).netloc.lower() != hosts[0].lower()):
            return "cross-origin request refused: only the dashboard's own page may read it"
        return None


def reachable_address(wildcard: str) -> str:
    """For a server bound to every interface, an address of this machine that another one
    can reach (the one its route out leaves by; no packet is sent), else loopback."""
    family, probe, loopback = ((socket.AF_INET6, "2001:db8::1", "::1") if ":" in wildcard
                               else (socket.AF_INET, "192.0.2.1", "127.0.0.1"))
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))  # documentation addresses: a route is chosen, no traffic
            address = sock.getsockname()[0]
    except OSError:  # no route out: this machine alone
        return loopback
    return address if address not in WILDCARD_HOSTS else loopback


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       *SECURITY_HEADERS])
    return Response(status.value, status.phrase, headers, body)


def _request_snapshot(control: str, curve: ClientCurve | None, token_file: str | None = None,
                      ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    # the daemon's token from its own file, read each time (the daemon may make a new one);
    # without one, the client reads the default file
    token = read_token(token_file) if token_file else None
    client = ControlClient(control, curve=curve, token=token, attempt_ms=CONTROL_TIMEOUT_MS)
    snapshot = client.snapshot()
    try:  # stream states (failed, reconnecting) are a bonus; the snapshot is what counts
        status = client.status()
    except (TimeoutError, OSError, ValueError):
        status = None
    return snapshot, status if status and status.get("ok") else None


class Dashboard:
    """The bridge: a FeedState, the pages connected to it, and what keeps them current.

    curve: this client's CURVE keys and the server's, for the feed and the control requests.
    allow_hosts: names the page may be reached by besides loopback and the bound address.
    max_clients: pages connected at once; the next is refused.
    max_clients_per_address: pages connected at once from one address.
    token_file: the daemon's control token file, where it is not the default one.
    header_timeout_s: how long a connection may take to send its request head.
    """

    def __init__(self, connect: str | Iterable[str], control: str | None = None, *,
                 history_s: float = DEFAULT_HISTORY_S, tick_s: float = 1.0,
                 db: str | None = None, curve: ClientCurve | None = None,
                 allow_hosts: Iterable[str] = (), max_clients: int = DEFAULT_MAX_CLIENTS,
                 token_file: str | None = None,
                 max_clients_per_address: int = DEFAULT_MAX_CLIENTS_PER_ADDRESS,
                 header_timeout_s: float = HEADER_TIMEOUT_S):
        endpoints = [connect] if isinstance(connect, str) else list(connect)
        if not endpoints:
            raise ValueError("the dashboard needs at least one --connect endpoint")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        if max_clients_per_address < 1:
            raise ValueError("max_clients_per_address must be at least 1, got "
                             f"{max_clients_per_address}")
        self.state = FeedState(endpoints, control or None, history_s=history_s)
        self.control = control or None
        self.curve = curve
        self.token_file = token_file
        self.allow_hosts = tuple(allow_hosts)
        self.max_clients = max_clients
        self.max_clients_per_address = min(max_clients_per_address, max_clients)
        self.limiter = ConnectionLimiter(ListenerLimits(
            max_clients + SPARE_CONNECTIONS, self.max_clients_per_address + SPARE_PER_ADDRESS,
            header_timeout_s, ANSWER_TIMEOUT_S), "dashboard")
        self.hosts = HostCheck(DEFAULT_HOST, self.allow_hosts)  # run() names the bound one
        self.tick_s = tick_s
        self.clients: set[ServerConnection] = set()
        self.static = load_static()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fetching = False
        self._last_fetch = -float("inf")
        self._tasks: set[asyncio.Task] = set()
        # feed messages handed to the loop and not yet applied: their wire bytes
        self.backlog_bytes = 0
        self.behind = 0  # messages dropped for that
        self._backlog_lock = threading.Lock()
        # The history view (history.html) reads a recorder's database, when given one.
        self.history = HistoryView(db) if db else None

    # -- HTTP

    async def serve_request(self, connection: ServerConnection,
                            request: Request) -> Response | None:
        """`process_request`, with /history.json answered off the event loop, after the
        checks every request passes: the host it names and the origin of a browser's."""
        refused = self.hosts.refusal(request)
        if refused is not None:
            log.info("refused %s for Host %r, Origin %r: %s", request.path,
                     request.headers.get_all("Host"), request.headers.get_all("Origin"), refused)
            return _response(HTTPStatus.FORBIDDEN, (refused + "\n").encode(),
                             "text/plain; charset=utf-8")
        path, _, query = request.path.partition("?")
        if path != "/history.json":
            return self.process_request(connection, request)
        if self.history is None:
            return _response(HTTPStatus.NOT_FOUND, _dumps(
                {"error": "no history database: start the dashboard with --db URL (the "
                          "database streamtag record writes)"}).encode(), "application/json")
        try:
            asked = parse_qs(query)
            # the span as ?minutes=M (the page's) or ?hours=H
            key = "minutes" if "minutes" in asked else "hours"
            given = asked.get(key, [str(DEFAULT_HOURS)])[0]
            try:
                hours = float(given) / (60.0 if key == "minutes" else 1.0)
            except ValueError:
                raise ValueError(f"{key}={given!r} is not a number: give the span as "
                                 "minutes=10..10080 or hours=H") from None
            # ?until=T: the span ending then (Unix seconds, or an ISO 8601 time: UTC where
            # it gives no offset), as a link to a past span gives it; else the span up to now
            until = (parse_time(asked["until"][0], "until=", zone=zone_named("UTC"))
                     if "until" in asked else None)
            answer = await self.history.answer(hours, until)
        except (HistoryBusy, HistoryNotYet) as exc:  # busy, or no database yet: ask again
            return _response(HTTPStatus.SERVICE_UNAVAILABLE, _dumps({"error": str(exc)}).encode(),
                             "application/json")
        except (ValueError, ConfigError) as exc:
            return _response(HTTPStatus.BAD_REQUEST, _dumps({"error": str(exc)}).encode(),
                             "application/json")
        except Exception as exc:  # the database went away; the live view keeps going
            log.warning("history query failed", exc_info=True)
            return _response(HTTPStatus.SERVICE_UNAVAILABLE,
                             _dumps({"error": f"the history database failed: {exc}"}).encode(),
                             "application/json")
        return _response(HTTPStatus.OK, _dumps(answer).encode(), "application/json")

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The answer to a request that passed `serve_request`'s checks; None for a websocket
        handshake that may go on."""
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            full = self._full(connection)
            if full is not None:
                return _response(HTTPStatus.SERVICE_UNAVAILABLE, full.encode() + b"\n",
                                 "text/plain; charset=utf-8")
            return None  # go on with the websocket handshake
        if path == "/healthz":
            health = {"ok": True, "feed": self.state.endpoints, "control": self.control,
                      "history": self.history.url if self.history else None,
                      "pages": len(self.clients), "connections": self.limiter.open,
                      "streams": sorted(self.state.streams),
                      "dropped": {"oversized": self.state.oversized,
                                  "forgotten_streams": self.state.forgotten,
                                  "behind": self.behind},
                      "daemon": self.state.liveness()}
            if self.history is not None:
                health["history_answers"] = dict(self.history.counts)
            return _response(HTTPStatus.OK, _dumps(health).encode(), "application/json")
        page = self.static.get(path)
        if page is None:
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        return _response(HTTPStatus.OK, *page)

    # -- websocket

    @staticmethod
    def _address(connection: ServerConnection) -> str:
        peer = connection.remote_address
        return str(peer[0]) if isinstance(peer, tuple) and peer else "?"

    def _full(self, connection: ServerConnection) -> str | None:
        """Why one more page from `connection`'s address is refused, or None."""
        if len(self.clients) >= self.max_clients:
            return (f"too many pages open: this dashboard serves {self.max_clients} at once "
                    "(--max-clients); close one or try again later")
        address = self._address(connection)
        if sum(self._address(c) == address for c in self.clients) \
                >= self.max_clients_per_address:
            return (f"too many pages open from {address}: this dashboard serves "
                    f"{self.max_clients_per_address} per address (--max-clients-per-address); "
                    "close one or try again later")
        return None

    async def handle(self, connection: ServerConnection) -> None:
        full = self._full(connection)  # handshakes that passed the check together
        if full is not None:
            await connection.close(1013, full[:120])  # a close reason is 123 bytes
            return
        # Registering and writing the hello's first piece without awaiting in between: none
        # of the messages forwarded later is missed. The rest of the hello follows in pieces,
        # each made as it is sent, the loop free in between; the page sets aside what comes
        # meanwhile (static/feed.js).
        self.clients.add(connection)
        pieces = self.state.hello_pieces()
        broadcast([connection], next(pieces))
        try:
            for piece in pieces:
                await connection.send(piece)
            async for _ in connection:
                pass  # the page has nothing to say; reading notices its going away
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(connection)

    def send_all(self, payload: dict[str, Any]) -> None:
        # broadcast() never waits for a page; one that stops reading is dropped instead of
        # growing its buffer without bound, and gets the whole state again when it reconnects.
        for connection in list(self.clients):
            transport = connection.transport
            if transport is not None and transport.get_write_buffer_size() > MAX_CLIENT_BUFFER:
                self.clients.discard(connection)
                self._spawn(connection.close(1013, "too far behind; reconnect"))
        if self.clients:
            broadcast(self.clients, _dumps(payload))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the feed

    def deliver(self, message: dict[str, Any]) -> None:
        """Called in the feed thread; hands the message to the loop, unless those waiting for
        it weigh MAX_BACKLOG_BYTES already (then it is dropped, counted, logged once)."""
        loop = self._loop
        if loop is None:
            return
        size = int(message.get("size", 0))
        with self._backlog_lock:
            if self.backlog_bytes + size > MAX_BACKLOG_BYTES:
                self.behind += 1
                if self.behind == 1:
                    log.warning("the page bridge fell %d bytes behind the feed: messages are "
                                "dropped until it catches up (counted in /healthz)",
                                self.backlog_bytes)
                return
            self.backlog_bytes += size
        with contextlib.suppress(RuntimeError):  # the loop closed: we are shutting down
            loop.call_soon_threadsafe(self._on_message, message)

    def _on_message(self, message: dict[str, Any]) -> None:
        with self._backlog_lock:
            self.backlog_bytes -= int(message.get("size", 0))
        forward = self.state.apply_message(message)
        if forward is not None:
            self.send_all(forward)
        session = message["header"]["session"]
        if (self.control and message["header"]["msg_type"] == MsgType.HEARTBEAT
                and session not in self.state.snapshot_sessions):
            self.fetch_snapshot()

    def fetch_snapshot(self) -> None:
        """Ask the control socket for the current state, in the background."""
        loop = self._loop
        if self.control is None or loop is None or self._fetching:
            return
        if loop.time() - self._last_fetch < SNAPSHOT_RETRY_S:
            return
        self._fetching = True
        self._last_fetch = loop.time()
        self._spawn(self._fetch_snapshot())

    async def _fetch_snapshot(self) -> None:
        try:
            snapshot, status = await asyncio.get_running_loop().run_in_executor(
                None, _request_snapshot, self.control, self.curve, self.token_file)
        except (TimeoutError, OSError, ValueError) as exc:
            log.info("no snapshot from %s yet: %s", self.control, exc)
            return
        finally:
            self._fetching = False
        if not snapshot.get("ok"):
            log.warning("snapshot refused by %s: %s", self.control, snapshot.get("error"))
            return
        update = self.state.apply_snapshot(snapshot, status)
        if update is not None:
            self.send_all(update)

    # -- life

    async def run(self, host: str, port: int, ready: Callable[[str], None] | None,
                  stop_event: threading.Event | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(quiet_exception_handler("dashboard"))
        self.hosts = HostCheck(host, self.allow_hosts)
        feed = FeedThread(self.state.endpoints, self.deliver, curve=self.curve)
        feed.start()
        try:
            limits = self.limiter.limits
            async with serve(self.handle, host, port, process_request=self.serve_request,
                             max_size=1 << 16, create_connection=self.limiter.connection_factory,
                             open_timeout=limits.open_timeout_s, ping_interval=PING_S,
                             ping_timeout=PING_S, logger=QUIET) as server:
                bound = server.sockets[0].getsockname()
                address = (reachable_address(bound[0]) if bound[0] in WILDCARD_HOSTS
                           else bound[0])  # every interface: one a screen elsewhere can use
                shown = f"[{address}]" if ":" in address else address
                self.fetch_snapshot()
                if ready is not None:
                    ready(f"http://{shown}:{bound[1]}/")
                await self._tick_until(stop_event)
                server.close()  # pages see 1001 "going away" and reconnect on their own
                await server.wait_closed()
        finally:
            feed.stop()
            self.limiter.close()
            if self.history is not None:
                self.history.close()
            self._loop = None
            for task in list(self._tasks):
                task.cancel()

    async def _tick_until(self, stop_event: threading.Event | None) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while stop_event is None or not stop_event.is_set():
            if loop.time() >= next_tick:
                self.send_all(self.state.tick())
                next_tick = loop.time() + self.tick_s
            await asyncio.sleep(min(0.1, self.tick_s))


def run_dashboard(connect: str | Iterable[str], port: int = DEFAULT_PORT,
                  host: str = DEFAULT_HOST, control: str | None = None,
                  ready: Callable[[str], None] | None = None,
                  stop_event: threading.Event | None = None, *,
                  history_s: float = DEFAULT_HISTORY_S, db: str | None = None,
                  curve: ClientCurve | None = None, allow_hosts: Iterable[str] = (),
                  max_clients: int = DEFAULT_MAX_CLIENTS, token_file: str | None = None,
                  max_clients_per_address: int = DEFAULT_MAX_CLIENTS_PER_ADDRESS,
                  header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
    """Serve the dashboard until `stop_event` is set (for ever without one).

    connect: the daemon's (or proxy's) PUB endpoint, or several.
    port: 0 picks a free one; `ready(url)` is called with the address once listening.
    control: the daemon's control endpoint, for a snapshot at start; None for none.
    db: a history database URL (``streamtag record``'s) for the history view; None for none.
    curve: CURVE keys for the feed and the control requests (a daemon or proxy with keys).
    allow_hosts: names (Host) the page may be reached by besides loopback and `host`.
    max_clients: pages connected at once; the next websocket is refused with 503.
    max_clients_per_address: the same, from one address.
    token_file: the daemon's control token file, where it is not the default one.
    header_timeout_s: how long a connection may take to send its request head.
    Raises OSError when the port cannot be bound or an endpoint is not valid.
    """
    dashboard = Dashboard(connect, control, history_s=history_s, db=db, curve=curve,
                          allow_hosts=allow_hosts, max_clients=max_clients,
                          token_file=token_file, max_clients_per_address=max_clients_per_address,
                          header_timeout_s=header_timeout_s)
    asyncio.run(dashboard.run(host, port, ready, stop_event))
