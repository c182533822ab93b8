"""The dashboard's server: the page, a websocket bridge from the ZeroMQ feed, a health check.

One asyncio loop serves ``GET /`` (and the page's two files) from the package, ``/ws`` (JSON
messages, below) and ``/healthz``. A `FeedThread` receives the daemon's messages and hands them
to the loop, where `FeedState` folds them into per-stream views and they are forwarded to every
page. With a control endpoint, a `snapshot` (and `status`) is fetched at start and whenever a
daemon session appears that no snapshot covers, so a page joining late draws at once.

Messages to the page, JSON objects with a ``type``:
    hello      on connecting: every stream's view, the liveness of the daemon, the feed
    message    one received protocol message: ``{topic, header, body, gap, restarted}``
    snapshot   stream views taken from a control snapshot
    tick       once a second: the bridge's clock and the daemon's liveness
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamtag.web.feed import DEFAULT_HISTORY_S, FeedState, FeedThread
from streamtag.web.history import DEFAULT_HOURS, HistoryView
from streamtag.wire.control import control_request

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
CONTROL_TIMEOUT_MS = 1000
SNAPSHOT_RETRY_S = 3.0
MAX_CLIENT_BUFFER = 1 << 20  # a page this far behind is closed; it reconnects to a fresh hello

# path -> (file in static/, content type)
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/history.html": ("history.html", "text/html; charset=utf-8"),
    "/history.js": ("history.js", "text/javascript; charset=utf-8"),
    "/history.css": ("history.css", "text/css; charset=utf-8"),
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


def _same_origin(request: Request) -> bool:
    """A browser names the page's origin: only our own page may open the feed, so another
    site open in the same browser cannot read it. Clients that name no origin are not
    browsers, and the same-origin rule does not apply to them."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("Host", "").lower()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       *SECURITY_HEADERS])
    return Response(status.value, status.phrase, headers, body)


def _request_snapshot(control: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    snapshot = control_request(control, {"cmd": "snapshot"}, CONTROL_TIMEOUT_MS)
    try:  # stream states (failed, reconnecting) are a bonus; the snapshot is what counts
        status = control_request(control, {"cmd": "status"}, CONTROL_TIMEOUT_MS)
    except (TimeoutError, OSError, ValueError):
        status = None
    return snapshot, status if status and status.get("ok") else None


class Dashboard:
    """The bridge: a FeedState, the pages connected to it, and what keeps them current."""

    def __init__(self, connect: str | Iterable[str], control: str | None = None, *,
                 history_s: float = DEFAULT_HISTORY_S, tick_s: float = 1.0,
                 db: str | None = None):
        endpoints = [connect] if isinstance(connect, str) else list(connect)
        if not endpoints:
            raise ValueError("the dashboard needs at least one --connect endpoint")
        self.state = FeedState(endpoints, control or None, history_s=history_s)
        self.control = control or None
        self.tick_s = tick_s
        self.clients: set[ServerConnection] = set()
        self.static = load_static()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fetching = False
        self._last_fetch = -float("inf")
        self._tasks: set[asyncio.Task] = set()
        # The history view (history.html) reads a recorder's database, when given one.
        self.history = HistoryView(db) if db else None

    # -- HTTP

    async def serve_request(self, connection: ServerConnection,
                            request: Request) -> Response | None:
        """`process_request`, with /history.json answered off the event loop."""
        path, _, query = request.path.partition("?")
        if path != "/history.json":
            return self.process_request(connection, request)
        if self.history is None:
            return _response(HTTPStatus.NOT_FOUND, _dumps(
                {"error": "no history database: start the dashboard with --db URL (the "
                          "database streamtag record writes)"}).encode(), "application/json")
        try:
            hours = float(parse_qs(query).get("hours", [DEFAULT_HOURS])[0])
            answer = await asyncio.get_running_loop().run_in_executor(
                None, self.history.answer, hours)
        except ValueError as exc:
            return _response(HTTPStatus.BAD_REQUEST, _dumps({"error": str(exc)}).encode(),
                             "application/json")
        except Exception as exc:  # the database went away; the live view keeps going
            log.warning("history query failed", exc_info=True)
            return _response(HTTPStatus.SERVICE_UNAVAILABLE,
                             _dumps({"error": f"the history database failed: {exc}"}).encode(),
                             "application/json")
        return _response(HTTPStatus.OK, _dumps(answer).encode(), "application/json")

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            if not _same_origin(request):
                return _response(HTTPStatus.FORBIDDEN, b"cross-origin websocket refused\n",
                                 "text/plain; charset=utf-8")
            return None  # go on with the websocket handshake
        if path == "/healthz":
            health = {"ok": True, "feed": self.state.endpoints, "control": self.control,
                      "history": self.history.url if self.history else None,
                      "pages": len(self.clients), "streams": sorted(self.state.streams),
                      "daemon": self.state.liveness()}
            return _response(HTTPStatus.OK, _dumps(health).encode(), "application/json")
        page = self.static.get(path)
        if page is None:
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        return _response(HTTPStatus.OK, *page)

    # -- websocket

    async def handle(self, connection: ServerConnection) -> None:
        # Registering and writing the hello without awaiting in between: every message
        # forwarded later is newer than the hello, and none is missed.
        self.clients.add(connection)
        broadcast([connection], _dumps(self.state.hello()))
        try:
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
        """Called in the feed thread; hands the message to the loop."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: we are shutting down
            loop.call_soon_threadsafe(self._on_message, message)

    def _on_message(self, message: dict[str, Any]) -> None:
        self.send_all(self.state.apply_message(message))
        session = message["header"]["session"]
        if (self.control and message["header"]["msg_type"] == "heartbeat"
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
                None, _request_snapshot, self.control)
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
        feed = FeedThread(self.state.endpoints, self.deliver)
        feed.start()
        try:
            async with serve(self.handle, host, port, process_request=self.serve_request,
                             max_size=1 << 16) as server:
                bound = server.sockets[0].getsockname()
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                self.fetch_snapshot()
                if ready is not None:
                    ready(f"http://{shown}:{bound[1]}/")
                await self._tick_until(stop_event)
                server.close()  # pages see 1001 "going away" and reconnect on their own
                await server.wait_closed()
        finally:
            feed.stop()
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
                  history_s: float = DEFAULT_HISTORY_S, db: str | None = None) -> None:
    """Serve the dashboard until `stop_event` is set (for ever without one).

    connect: the daemon's (or proxy's) PUB endpoint, or several.
    port: 0 picks a free one; `ready(url)` is called with the address once listening.
    control: the daemon's control endpoint, for a snapshot at start; None for none.
    db: a history database URL (``streamtag record``'s) for the history view; None for none.
    Raises OSError when the port cannot be bound or an endpoint is not valid.
    """
    dashboard = Dashboard(connect, control, history_s=history_s, db=db)
    asyncio.run(dashboard.run(host, port, ready, stop_event))
