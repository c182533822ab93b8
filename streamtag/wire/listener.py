"""HTTP listeners with bounds: the metrics and probe port of ``run`` (and of its supervisor)
and of ``record``, and the dashboard's pages (docs/security.md, "Listener limits").

Each is a websockets server on an asyncio loop: a connection costs a descriptor and a few
kilobytes, never a thread, and a plain HTTP request is answered by its ``process_request``
(websockets parses the head with its own caps: 8 KiB a line, 128 headers, no body).
`ConnectionLimiter` admits every TCP connection:

- its request head must arrive within ``header_timeout_s`` of the connection, else it is closed;
- at most ``max_connections`` at once, ``max_per_address`` from one address. Past either, the
  oldest connection still in its request and answer (of that address, for the second) is
  closed to make room: a flood of half-sent requests never keeps out a probe, which sends its
  request at once and is answered within the same turn of the loop. Only when every
  connection is an open websocket (a page, bounded apart by the dashboard) is the newcomer
  answered 503 and closed;
- the answer must be on its way within ``answer_timeout_s`` (websockets' ``open_timeout``
  covers the head and the answer together), and a client has ``CLOSE_TIMEOUT_S`` to close
  after it.

Connections closed so are counted (`ConnectionLimiter.closed`) and logged as one line a minute
at most, never a traceback each.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import gzip
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import OPEN

log = logging.getLogger(__name__)
# websockets' own logger, given to every listener: its line per request (INFO) would flood a
# daemon's log at a probe every few seconds; what goes wrong it says as a warning or worse.
QUIET = logging.getLogger("streamtag.wire.listener.websockets")
QUIET.setLevel(logging.WARNING)

CLOSE_TIMEOUT_S = 5.0
REPORT_EVERY_S = 60.0
# why a connection was closed or refused (the reason label of the metric): what the log says
REASONS = {"head_late": "closed: request head not sent in time",
           "room": "closed to make room past the connection cap",
           "room_per_address": "closed to make room past the cap for one address",
           "refused": "refused with 503: every connection an open page"}
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 36\r\nConnection: close\r\n\r\ntoo many connections; try again soon\n")


@dataclasses.dataclass(frozen=True)
class ListenerLimits:
    """The bounds of one listening port (docs/security.md, "Listener limits")."""

    max_connections: int = 64
    max_per_address: int = 16
    header_timeout_s: float = 10.0
    answer_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_address", "header_timeout_s",
                     "answer_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)!r}")

    @property
    def open_timeout_s(self) -> float:
        """websockets' ``open_timeout``: the head, then the answer."""
        return self.header_timeout_s + self.answer_timeout_s


class ConnectionLimiter:
    """Admits the connections of one websockets server (`connection_factory` as its
    ``create_connection``) within `limits`; see the module's words. Used on the server's loop
    only."""

    def __init__(self, limits: ListenerLimits, name: str) -> None:
        self.limits = limits
        self.name = name
        # connection -> its peer's address, oldest first
        self._open: collections.OrderedDict[LimitedConnection, str] = collections.OrderedDict()
        self._per_address: collections.Counter[str] = collections.Counter()
        # why connections were closed or refused: since the start (read by a scrape's thread,
        # `closed`), and since the last report
        self._counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()
        self._unreported: collections.Counter[str] = collections.Counter()
        self._report: asyncio.TimerHandle | None = None
        self._last_report = -float("inf")

    def connection_factory(self, *args: Any, **kwargs: Any) -> LimitedConnection:
        return LimitedConnection(self, *args, **kwargs)

    @property
    def open(self) -> int:
        return len(self._open)

    def closed(self) -> dict[str, int]:
        """Connections closed or refused since the start, by reason (REASONS); from any
        thread."""
        with self._counts_lock:
            return dict(self._counts)

    def admit(self, connection: LimitedConnection, address: str) -> bool:
        """Whether `connection` may go on; room is made by closing the oldest exchange where
        needed. A refused one is answered 503 and closed here."""
        for full, among in ((self._per_address[address] >= self.limits.max_per_address,
                             address),
                            (len(self._open) >= self.limits.max_connections, None)):
            if not full:
                continue
            victim = next((c for c, a in self._open.items()
                           if (among is None or a == among) and c.protocol.state is not OPEN),
                          None)
            if victim is None:
                self.note("refused")
                connection.transport.write(BUSY)
                connection.transport.close()
                return False
            self.forget(victim)
            self.note("room" if among is None else "room_per_address")
            victim.transport.abort()
        self._open[connection] = address
        self._per_address[address] += 1
        return True

    def forget(self, connection: LimitedConnection) -> None:
        """`connection` no longer counts (it closed, or is being closed); idempotent."""
        address = self._open.pop(connection, None)
        if address is not None:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def note(self, why: str) -> None:
        """Counts a connection closed or refused (`why`, a key of REASONS), for the next
        report line."""
        with self._counts_lock:
            self._counts[why] += 1
        self._unreported[why] += 1
        if self._report is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last_report + REPORT_EVERY_S - time.monotonic())
            self._report = loop.call_later(delay, self._say)

    def _say(self) -> None:
        self._report = None
        self._last_report = time.monotonic()
        said = ", ".join(f"{n} {REASONS[why]}" for why, n in sorted(self._unreported.items()))
        self._unreported.clear()
        log.warning("%s: connections closed or refused (bounds: %d at once, %d from one "
                    "address, request head within %g s): %s", self.name,
                    self.limits.max_connections, self.limits.max_per_address,
                    self.limits.header_timeout_s, said)

    def close(self) -> None:
        if self._report is not None:
            self._report.cancel()
            self._report = None


class LimitedConnection(ServerConnection):
    """A websockets server connection admitted by a `ConnectionLimiter`, closed when its
    request head is late."""

    def __init__(self, limiter: ConnectionLimiter, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = limiter
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self.limiter.admit(self, address):
            self._head_timer = self.loop.call_later(self.limiter.limits.header_timeout_s,
                                                    self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.request is None:
            self.limiter.forget(self)
            self.limiter.note("head_late")
            self.transport.abort()

    def process_event(self, event: Any) -> None:
        if self.request is None and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.limiter.forget(self)
        super().connection_lost(exc)


def quiet_exception_handler(name: str
                            ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop's exception handler that says socket errors (``socket.accept() out of
    system resource`` when descriptors run out, which the loop retries every second) in one
    line a minute at most, not a traceback each; anything else as the loop would."""
    last = [-float("inf")]
    missed = [0]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not isinstance(context.get("exception"), OSError):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - last[0] < REPORT_EVERY_S:
            missed[0] += 1
            return
        exc = context.get("exception")
        log.warning("%s: %s%s%s", name, context.get("message", "error in the event loop"),
                    f" ({exc})" if exc is not None else "",
                    f"; {missed[0]} more since the last such line" if missed[0] else "")
        last[0], missed[0] = now, 0

    return handler


def response(status: HTTPStatus, body: bytes, content_type: str,
             headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status.value, status.phrase,
                    Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                             *headers]), body)


def plain(status: HTTPStatus, text: str) -> Response:
    return response(status, text.encode(), "text/plain; charset=utf-8")


Answer = Callable[[Request], Awaitable[Response]]


class HttpListener:
    """Serves ``answer(request)`` (a coroutine function, run on the listener's own loop) on
    address:port from a thread of its own, within `limits`. The address family follows the
    address (IPv6 needs AF_INET6; "::" takes IPv4 too where the system can). Raises OSError
    (socket.gaierror for a name that does not resolve) when it cannot listen."""

    def __init__(self, address: str, port: int, answer: Answer, limits: ListenerLimits,
                 name: str) -> None:
        family, _, _, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        dual = (family == socket.AF_INET6 and sockaddr[0] == "::"
                and socket.has_dualstack_ipv6())
        self._socket = socket.create_server((sockaddr[0], port), family=family,
                                            dualstack_ipv6=dual)
        self.port = self._socket.getsockname()[1]
        self.limiter = ConnectionLimiter(limits, name)
        self._answer = answer
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(quiet_exception_handler(name))
        self._stop: asyncio.Event | None = None
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name=f"streamtag-{name}", daemon=True)
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._socket.close()
            raise

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(started))
        except BaseException as exc:  # it could not start: the caller raises it
            if not started.done():
                started.set_exception(exc)
        finally:
            self._loop.close()

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        limits = self.limiter.limits

        async def nothing(connection: ServerConnection) -> None:  # every request is answered
            await connection.close()

        async def process_request(connection: ServerConnection, request: Request) -> Response:
            try:
                return await self._answer(request)
            except Exception as exc:  # one line: websockets would log a traceback each
                log.warning("%s: %s failed: %s", self.limiter.name, request.path[:200],
                            exc)
                return plain(HTTPStatus.INTERNAL_SERVER_ERROR, f"failed: {exc}\n")

        async with serve(nothing, sock=self._socket, process_request=process_request,
                         # websockets calls it as it would the class: a factory serves
                         create_connection=self.limiter.connection_factory,  # type: ignore[arg-type]
                         open_timeout=limits.open_timeout_s, close_timeout=CLOSE_TIMEOUT_S,
                         server_header=None, logger=QUIET, max_size=1 << 12,
                         # asyncio accepts up to its backlog (100) connections in one turn,
                         # before the cap closes any: a flood would hold that many descriptors
                         # past the cap; the cap's worth per turn keeps them within twice it
                         backlog=limits.max_connections) as server:
            started.set_result(None)
            await self._stop.wait()
            server.close()
            await server.wait_closed()
        self.limiter.close()

    def close(self) -> None:
        """Stops listening and closes every connection; returns once done."""
        if self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(CLOSE_TIMEOUT_S + 5.0)


class MetricsExposition:
    """Prometheus exposition of `registry` for an `HttpListener`: the text (or OpenMetrics,
    gzip where accepted) made on one thread of its own, so that a slow collection never holds
    the loop; scrapes that ask together share one collection, and past `most_waiting` kinds of
    answer waiting a scrape is answered 503 at once."""

    def __init__(self, registry: Any, most_waiting: int = 4) -> None:
        self.registry = registry
        self.most_waiting = most_waiting
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="streamtag-scrape")
        self._flights: dict[tuple[str, bool], asyncio.Future[tuple[bytes, str]]] = {}

    async def answer(self, request: Request) -> Response:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        zipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        key = (content_type, zipped)
        flight = self._flights.get(key)
        if flight is None:
            if len(self._flights) >= self.most_waiting:
                return plain(HTTPStatus.SERVICE_UNAVAILABLE, "busy: scrapes are waiting; try "
                                                             "again soon\n")

            def collect() -> tuple[bytes, str]:
                body = encoder(self.registry)
                return (gzip.compress(body) if zipped else body), content_type

            flight = asyncio.get_running_loop().run_in_executor(self._executor, collect)
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        body, kind = await asyncio.shield(flight)
        return response(HTTPStatus.OK, body, kind,
                        (("Content-Encoding", "gzip"),) if zipped else ())

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
