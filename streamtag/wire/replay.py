"""The replay socket, both sides: what a daemon remembers of what it published (`ReplayRing`),
the ROUTER socket that answers feed readers from it (`ReplayServer`), and the client a
subscriber asks with (`ReplayClient`). The requests and replies are streamtag.wire.protocol's
(``StateRequest``, ``ReplayRequest``, ``ReplayReply``); docs/protocol.md, "Replay socket", says
what they mean and how other languages use them (ZeroMQ's Clone pattern).

Who may ask: whoever may read the feed. Under CURVE the socket is in the feed's ZAP domain, so
only subscribers' keys get in; without keys, anyone who can reach it, as for the feed itself:
it hands out nothing the feed did not carry. Everything is bounded (docs/security.md,
"Replay socket"): the ring in bytes, each reply in messages and bytes, each connection and the
socket as a whole in requests and bytes a second, what waits for a peer that does not read to
one reply, and the connections by the feed's kind of caps (streamtag.wire.guard).
"""

from __future__ import annotations

import bisect
import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import zmq

from streamtag.errors import ProtocolError
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.guard import ConnectionGuard, bind_guarded
from streamtag.wire.protocol import (
    MAX_FRAME_BYTES,
    MAX_REPLAY_FRAMES,
    MAX_REPLAY_MESSAGES,
    MAX_REPLAY_REPLY_BYTES,
    MAX_REPLAY_REQUEST_BYTES,
    STATE_TYPES,
    Decoder,
    Message,
    ReplayReply,
    ReplayRequest,
    StateRequest,
    decode_replay_reply,
    decode_replay_request,
    encode_replay_reply,
    encode_replay_request,
)
from streamtag.wire.ready_thread import ReadyThread
from streamtag.wire.security import FEED_DOMAIN, ClientCurve, CurveKeys, make_client, make_server
from streamtag.wire.sockets import bind_or_connect, wait_released

log = logging.getLogger(__name__)

# What a kept message costs beyond its frames: the entry, its list and the bytes objects'
# headers (measured: about 330 bytes; counted high so the bound holds).
ENTRY_OVERHEAD = 400
MAX_STATE_STREAMS = 4096  # streams whose latest messages are kept, the latest updated
MAX_PEERS = 1024  # connections whose budgets are remembered, the latest heard

# The socket's budgets (docs/security.md, "Replay socket"). A request is answered only when its
# connection and the socket both have a request and (after) bytes left; a connection out of
# either is told to come back (``retry_after_s``), and past the socket's requests a second
# nothing more is read until the budget allows: ZeroMQ holds the rest, a few per connection.
REQUESTS_PER_S = 200.0  # the socket's, all connections together
PEER_REQUESTS_PER_S = 50.0  # one connection's
BYTES_PER_S = 32 * 1024 * 1024  # the socket's reply bytes, all connections together
PEER_BYTES_PER_S = 16 * 1024 * 1024  # one connection's
BURST_S = 0.25  # how much of a second's budget may go at once (at least one whole reply)
REQUEST_RCVHWM = 4  # requests ZeroMQ holds per connection before TCP pushes back
REPLY_SNDHWM = 1  # replies ZeroMQ holds per connection that does not read; past it: dropped
POLL_MS = 100
_STATE_TYPES = frozenset(t.encode() for t in STATE_TYPES)
RETRY_AFTER_S = 0.05  # what a busy refusal says at least
MAX_ERROR_CHARS = 1000  # of a refusal's error: it may quote the request


class _Entry(NamedTuple):
    order: int  # publish order across all topics (compared first: it is unique)
    seq: int
    frames: list[bytes]
    size: int
    topic: bytes


def _seq_of(entry: _Entry) -> int:
    return entry.seq


class _Topic:
    """One topic's kept messages, oldest first, from ``start`` on (the ring pushes out from
    the front; the list is cut now and then rather than at every message)."""

    __slots__ = ("entries", "start")

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.start = 0


class ReplayRing:
    """What the daemon published, kept for replay: every message within ``max_bytes`` in all
    (frames and ``ENTRY_OVERHEAD`` each; the oldest goes first), and apart from that, each
    stream's latest ``status``, ``scores`` and ``silence`` (``MAX_STATE_STREAMS`` streams, the
    least recently updated forgotten first). ``session``: the publisher's, which only its
    messages carry. Written by the publisher (``add``), read by the server; thread-safe. A
    request costs the ring's lock a search and what it returns, never a pass over the ring."""

    def __init__(self, max_bytes: int, session: str) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.session = session
        self.bytes = 0
        self.dropped = 0  # messages pushed out by newer ones
        self._order = 0
        self._lock = threading.Lock()
        self._all: collections.deque[_Entry] = collections.deque()
        self._topics: dict[bytes, _Topic] = {}
        self._latest: collections.OrderedDict[bytes, dict[bytes, _Entry]] = \
            collections.OrderedDict()  # stream -> msg_type -> its latest message
        self._sorted: list[bytes] | None = None  # the streams of _latest by id, when known

    def __len__(self) -> int:
        return len(self._all)

    def add(self, topic: bytes, seq: int, frames: list[bytes]) -> None:
        """One message as sent: its topic, seq and frames (bytes, kept as they are)."""
        size = len(frames[0]) + len(frames[1]) + len(frames[2]) + ENTRY_OVERHEAD
        msg_type, _, stream = topic.partition(b".")
        with self._lock:
            self._order += 1
            entry = _Entry(self._order, seq, frames, size, topic)
            if msg_type in _STATE_TYPES:
                latest = self._latest.get(stream)
                if latest is None:
                    latest = self._latest[stream] = {}
                    self._sorted = None
                    if len(self._latest) > MAX_STATE_STREAMS:
                        self._latest.popitem(last=False)
                else:
                    self._latest.move_to_end(stream)
                latest[msg_type] = entry
            if size > self.max_bytes:
                return
            self._all.append(entry)
            kept = self._topics.get(topic)
            if kept is None:
                kept = self._topics[topic] = _Topic()
            kept.entries.append(entry)
            self.bytes += size
            while self.bytes > self.max_bytes:
                self._push_out()

    def _push_out(self) -> None:
        old = self._all.popleft()
        kept = self._topics[old.topic]
        kept.start += 1  # the oldest of its topic too: both are kept in publish order
        if kept.start == len(kept.entries):
            del self._topics[old.topic]
        elif kept.start >= 64 and 2 * kept.start >= len(kept.entries):
            del kept.entries[:kept.start]
            kept.start = 0
        self.bytes -= old.size
        self.dropped += 1

    def replay(self, request: ReplayRequest, most_messages: int = MAX_REPLAY_MESSAGES,
               most_bytes: int = MAX_REPLAY_REPLY_BYTES) -> tuple[list[list[bytes]], bool]:
        """The messages ``request`` asks for that the ring holds, in the order they were
        published, within ``most_messages`` and ``most_bytes`` (at least one); and whether
        more were left out. Nothing for another session's (the daemon's before a restart)."""
        if request.session != self.session:
            return [], False
        runs = []
        with self._lock:
            for topic, (first, end) in request.topics.items():
                kept = self._topics.get(topic.encode())
                if kept is None:
                    continue
                entries = kept.entries
                at = bisect.bisect_left(entries, first, lo=kept.start, key=_seq_of)
                stop = len(entries) if end is None else bisect.bisect_left(
                    entries, end, lo=at, key=_seq_of)
                # more than a reply holds is never needed from one topic
                runs.append(entries[at:min(stop, at + most_messages + 1)])
        found = list(itertools.islice(heapq.merge(*runs), most_messages + 1))
        return _within(found, most_messages, most_bytes)

    def state(self, request: StateRequest, most_messages: int = MAX_REPLAY_MESSAGES,
              most_bytes: int = MAX_REPLAY_REPLY_BYTES
              ) -> tuple[list[list[bytes]], bool, str | None]:
        """Each stream's latest state messages, streams by id (after ``request.after``),
        each stream's in the order they were published; cut between streams at the bounds
        (a stream's whole state, at least one stream's, goes in one reply). Returns the
        messages, whether streams were left out, and the last stream given."""
        page: list[tuple[bytes, list[_Entry]]] = []
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(self._latest)
            streams = self._sorted
            at = 0 if request.after is None else bisect.bisect_right(
                streams, request.after.encode())
            count = 0
            for stream in streams[at:]:
                latest = self._latest.get(stream)
                if latest is None:  # forgotten since the list was made
                    continue
                page.append((stream, sorted(latest.values())))
                count += len(latest)
                if count > most_messages:
                    break
            left = at + len(page) < len(streams)
        out: list[list[bytes]] = []
        size, last = 0, None
        for stream, entries in page:
            adds = sum(e.size - ENTRY_OVERHEAD for e in entries)
            if out and (len(out) + len(entries) > most_messages or size + adds > most_bytes):
                return out, True, last
            out.extend(e.frames for e in entries)
            size += adds
            last = stream.decode()
        return out, left, last


def _within(found: list[_Entry], most_messages: int,
            most_bytes: int) -> tuple[list[list[bytes]], bool]:
    out: list[list[bytes]] = []
    size = 0
    for entry in found:
        adds = entry.size - ENTRY_OVERHEAD
        if out and (len(out) >= most_messages or size + adds > most_bytes):
            return out, True
        out.append(entry.frames)
        size += adds
    return out, False


class _Bucket:
    """A token bucket: ``rate`` a second, at most ``burst`` held."""

    __slots__ = ("burst", "level", "rate", "when")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.level, self.when = rate, burst, burst, time.monotonic()

    def fill(self, now: float) -> float:
        self.level = min(self.burst, self.level + (now - self.when) * self.rate)
        self.when = now
        return self.level

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` is there (0 when it is)."""
        return max(0.0, (amount - self.level) / self.rate)


class ReplayStats:
    """What the server did, for tests, metrics and the log."""

    def __init__(self) -> None:
        self.requests = 0  # read from the socket
        self.answered = 0  # with messages or an empty page
        self.busy = 0  # told to come back
        self.refused = 0  # malformed
        self.unsent = 0  # replies ZeroMQ would not queue (the peer did not read)
        self.bytes_sent = 0  # frames of every reply, heads included
        self.messages_sent = 0


class ReplayServer:
    """Answers ``state`` and ``replay`` requests from ``ring`` on a ROUTER socket bound to
    ``endpoint``, in a thread of its own. ``curve``: the daemon's keys; the socket then admits
    only the feed's subscribers' keys (``FEED_DOMAIN``). ``caps``: its connection caps, kept
    in the server's thread. ``requests_per_s``, ``bytes_per_s`` and their per-connection
    counterparts are the budgets (module constants by default)."""

    def __init__(self, endpoint: str, ring: ReplayRing, *, context: zmq.Context[Any] | None = None,
                 curve: CurveKeys | None = None, caps: ConnectionCaps | None = None,
                 requests_per_s: float = REQUESTS_PER_S,
                 peer_requests_per_s: float = PEER_REQUESTS_PER_S,
                 bytes_per_s: float = BYTES_PER_S, peer_bytes_per_s: float = PEER_BYTES_PER_S):
        self.ring = ring
        self.stats = ReplayStats()
        self.endpoint: str | None = None
        self.guard: ConnectionGuard | None = None
        self._requested = endpoint
        self._context, self._curve, self._caps = context, curve, caps
        self._rates = (requests_per_s, peer_requests_per_s, bytes_per_s, peer_bytes_per_s)
        # a burst holds at least one whole reply, else a large one could never be paid for
        self._requests = _Bucket(requests_per_s, max(1.0, requests_per_s * BURST_S))
        self._bytes = _Bucket(bytes_per_s, max(MAX_REPLAY_REPLY_BYTES, bytes_per_s * BURST_S))
        self._peers: collections.OrderedDict[bytes, tuple[_Bucket, _Bucket]] = \
            collections.OrderedDict()
        self._worker = ReadyThread(self._run, "streamtag-replay")

    @property
    def burst_bytes(self) -> float:
        """The most bytes the socket may send at once, past its rate."""
        return self._bytes.burst

    @property
    def burst_requests(self) -> float:
        return self._requests.burst

    def start(self, timeout_s: float = 5.0) -> ReplayServer:
        """Bind and serve; returns once bound (OSError when the endpoint cannot be)."""
        self._worker.start(timeout_s, f"the replay socket did not bind {self._requested!r}")
        return self

    def stop(self, timeout_s: float = 2.0) -> bool:
        return self._worker.stop(timeout_s)

    def _run(self) -> None:
        ctx = self._context if self._context is not None else zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLAY_REQUEST_BYTES)
            sock.setsockopt(zmq.RCVHWM, REQUEST_RCVHWM)
            sock.setsockopt(zmq.SNDHWM, REPLY_SNDHWM)
            # a reply for a peer whose queue is full raises (and is dropped) instead of being
            # dropped unseen: counted, and the peer's budget is not charged
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            if self._curve is not None:
                make_server(sock, self._curve, FEED_DOMAIN)
            try:
                self.endpoint, self.guard = bind_guarded(
                    sock, self._requested, self._caps, "replay", "replay socket",
                    authenticates=self._curve is not None)
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
                # past the socket's requests a second, nothing is read until there is one
                wait_s = self._requests.wait_s(1.0) if self._requests.fill(
                    time.monotonic()) < 1.0 else 0.0
                if wait_s > 0:
                    self._worker.stopping.wait(min(wait_s, POLL_MS / 1000))
                    if self.guard is not None:  # connections are kept within caps meanwhile
                        self.guard.handle_events()
                    continue
                ready = dict(poller.poll(POLL_MS))
                if self.guard is not None:
                    self.guard.handle_events()
                if sock not in ready:
                    continue
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                self._requests.level -= 1
                try:
                    self._serve(sock, frames)
                except Exception:  # noqa: BLE001 - whatever a request does, the socket serves on
                    log.warning("replay request could not be answered", exc_info=True)
        finally:
            if self.guard is not None:
                self.guard.close()
            sock.close(linger=0)
            if self.endpoint is not None:
                wait_released(self.endpoint)  # stop() returns with the port free again

    def _serve(self, sock: zmq.Socket[Any], frames: list[bytes]) -> None:
        self.stats.requests += 1
        # [identity, (a REQ's request id,) b"", request]: the envelope goes back as it came
        split = frames.index(b"") + 1 if b"" in frames else 1
        envelope, payload = frames[:split], frames[split:]
        peer = frames[0]
        now = time.monotonic()
        requests, sent = self._peer(peer, now)
        if len(payload) != 1:
            self._reply(sock, envelope, ReplayReply(
                ok=False, error="a replay socket request is one frame of JSON"), [], sent)
            self.stats.refused += 1
            return
        if requests.fill(now) < 1.0:
            self._busy(sock, envelope, requests.wait_s(1.0), sent)
            return
        requests.level -= 1
        try:
            request = decode_replay_request(payload[0])
        except ProtocolError as exc:
            self.stats.refused += 1
            self._reply(sock, envelope, ReplayReply(ok=False, error=str(exc)[:MAX_ERROR_CHARS]),
                        [], sent)
            return
        # what a reply may take: the smaller of what is left to the socket and to the peer; it
        # holds at least one message, so it may run both into debt, which later requests repay
        room = min(self._bytes.fill(now), sent.fill(now))
        if room <= 0:
            self._busy(sock, envelope, max(self._bytes.wait_s(1.0), sent.wait_s(1.0)), sent)
            return
        most_bytes = int(min(room, MAX_REPLAY_REPLY_BYTES))
        if isinstance(request, StateRequest):
            messages, more, last = self.ring.state(request, most_bytes=most_bytes)
            head = ReplayReply(ok=True, session=self.ring.session, messages=len(messages),
                               more=more, next=last if more else None)
        else:
            messages, more = self.ring.replay(request, most_bytes=most_bytes)
            head = ReplayReply(ok=True, session=self.ring.session, messages=len(messages),
                               more=more)
        self.stats.answered += 1
        self._reply(sock, envelope, head, messages, sent)

    def _peer(self, peer: bytes, now: float) -> tuple[_Bucket, _Bucket]:
        budgets = self._peers.get(peer)
        if budgets is None:
            _, peer_requests, _, peer_bytes = self._rates
            budgets = self._peers[peer] = (
                _Bucket(peer_requests, max(1.0, peer_requests * BURST_S)),
                _Bucket(peer_bytes, max(MAX_REPLAY_REPLY_BYTES, peer_bytes * BURST_S)))
            if len(self._peers) > MAX_PEERS:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return budgets

    def _busy(self, sock: zmq.Socket[Any], envelope: list[bytes], wait_s: float,
              sent: _Bucket) -> None:
        self.stats.busy += 1
        self._reply(sock, envelope, ReplayReply(
            ok=False, error="busy: the replay socket's budget is spent for now; ask again "
                            "after retry_after_s", retry_after_s=round(
                                min(60.0, max(RETRY_AFTER_S, wait_s)), 3)), [], sent)

    def _reply(self, sock: zmq.Socket[Any], envelope: list[bytes], head: ReplayReply,
               messages: Iterable[list[bytes]], sent: _Bucket) -> None:
        frames = [*envelope, *encode_replay_reply(head, messages)]
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # its queue is full (it does not read), or it has gone
            self.stats.unsent += 1
            return
        size = sum(map(len, frames))
        self._bytes.level -= size
        sent.level -= size
        self.stats.bytes_sent += size
        self.stats.messages_sent += head.messages

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ReplayClient:
    """Asks one daemon's replay socket; one request at a time, each waiting ``timeout_ms`` at
    most (all its pages and the waits a busy daemon asks for together). ``curve``: the feed's
    client keys (the replay socket lets in the feed's subscribers). ``session``: the daemon's,
    once a reply has said it."""

    def __init__(self, endpoint: str, *, curve: ClientCurve | None = None,
                 context: zmq.Context[Any] | None = None, timeout_ms: int = 1000) -> None:
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.session: str | None = None
        self.invalid = 0  # messages in replies that were malformed (left out)
        self._decoder = Decoder()
        ctx = context if context is not None else zmq.Context.instance()
        self._socket = ctx.socket(zmq.REQ)
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            # a request whose reply did not come may be followed by another; a late reply to
            # the first is then dropped, not taken for the second's
            self._socket.setsockopt(zmq.REQ_RELAXED, 1)
            self._socket.setsockopt(zmq.REQ_CORRELATE, 1)
            self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
            if curve is not None:
                make_client(self._socket, curve)
            bind_or_connect(self._socket, endpoint, True, "replay client")
        except BaseException:
            self._socket.close(linger=0)
            raise

    def state(self, most_pages: int = 8) -> list[tuple[Message, int]]:
        """Each stream's latest state messages, each with its bytes on the wire (every page,
        up to ``most_pages``: 32 MiB at most, the state of 4096 streams of a 56-tag model
        about 16 MiB)."""
        out: list[tuple[Message, int]] = []
        after = None
        for _ in range(most_pages):
            head, messages = self.ask(StateRequest(after))
            out.extend(messages)
            if not head.more or head.next is None:
                break
            after = head.next
        return out

    def replay(self, session: str, topics: Mapping[str, tuple[int, int | None]],
               most_pages: int = 4) -> list[tuple[Message, int]]:
        """The messages of ``topics`` (topic -> (first seq, end seq or None)) the daemon still
        holds, in the order they were published, each with its bytes on the wire (pages
        followed up to ``most_pages``: 16 MiB at most, a default ring's worth)."""
        wanted = dict(topics)
        out: list[tuple[Message, int]] = []
        for _ in range(most_pages):
            head, messages = self.ask(ReplayRequest(session, wanted))
            out.extend(messages)
            if not head.more or not messages:
                break
            for message, _ in messages:  # the next page: after what came, per topic
                topic = message.topic
                if topic in wanted:
                    wanted[topic] = (max(wanted[topic][0], message.seq + 1), wanted[topic][1])
            wanted = {t: span for t, span in wanted.items()
                      if span[1] is None or span[0] < span[1]}
            if not wanted:
                break
        return out

    def ask(self, request: StateRequest | ReplayRequest
            ) -> tuple[ReplayReply, list[tuple[Message, int]]]:
        """One request's reply, asked again while the daemon says it is busy; TimeoutError
        past ``timeout_ms``, ProtocolError for a refusal or a reply that is not one."""
        deadline = time.monotonic() + self.timeout_ms / 1000
        frame = encode_replay_request(request)
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(left_ms, zmq.POLLOUT):
                break
            self._socket.send(frame)
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._socket.poll(left_ms, zmq.POLLIN):
                break
            frames = self._socket.recv_multipart()
            if len(frames) > MAX_REPLAY_FRAMES:
                raise ProtocolError(f"a replay reply of {len(frames)} frames, over the "
                                    f"{MAX_REPLAY_FRAMES} a reply has at most")
            head, messages, invalid = decode_replay_reply(frames, self._decoder)
            self.invalid += invalid
            if head.ok:
                self.session = head.session
                return head, messages
            if head.retry_after_s is None:
                raise ProtocolError(f"the replay socket at {self.endpoint} refused: {head.error}")
            if time.monotonic() + head.retry_after_s >= deadline:
                break
            time.sleep(head.retry_after_s)
        raise TimeoutError(f"no reply from the replay socket at {self.endpoint} within "
                           f"{self.timeout_ms} ms")

    def close(self) -> None:
        self._socket.close(linger=0)

    def __enter__(self) -> ReplayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
