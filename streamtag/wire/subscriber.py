"""Subscribing to a streamtag daemon (or a proxy): decoded messages with loss and restarts marked.

`Subscriber` yields `ReceivedMessage`s: protocol Messages plus what this receiver concluded,
`gap` (messages missing just before this one on its topic) and `restarted` (the stream's
publisher has a new session). The ``streamtag listen`` command is streamtag.commands.listen;
the control client is `streamtag.wire.control.control_request`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from streamtag.errors import ProtocolError
from streamtag.wire.protocol import (
    HEARTBEAT,
    MAX_FRAME_BYTES,
    MSG_TYPES,
    Decoder,
    Message,
    subscription_prefix,
    validate_stream_id,
)
from streamtag.wire.security import ClientCurve, make_client

__all__ = ["ALL_TOPICS", "ReceivedMessage", "Subscriber"]

ALL_TOPICS = MSG_TYPES
_WAIT_SLICE_MS = 250  # an unbounded wait still wakes up this often, so Ctrl-C is prompt
# A dropped connection that ZeroMQ does not say it retries within this is connected again.
_RETRY_GRACE_S = 1.0
_DEFAULT = object()

# What a subscriber remembers to judge gaps and restarts is bounded, whatever peers send
# (anyone who reaches a publisher's or proxy's socket can send messages of any session): the
# most recently heard streams, each with its most recent sessions, and the most recent
# daemon sessions of heartbeats. Far above what honest daemons use: a stream has one session
# per daemon start, and one subscriber hears thousands of streams at most.
MAX_STREAMS = 16384
MAX_SESSIONS_PER_STREAM = 16
MAX_HEARTBEAT_SESSIONS = 4096
MAX_FRESH_SESSIONS = 4096  # sessions seen starting
MAX_OWNED_TOPICS = 6 * MAX_STREAMS  # topics judged by `owns`: each stream's message types
# Messages of streams `owns` refuses skipped by one read-ahead at most: a flood of them never
# holds back the caller's own.
MAX_SKIPS_PER_READ = 1024

# What waits to be read is bounded in bytes as well as messages. ZeroMQ's own queue counts
# only messages, whatever their size, so it is kept short (SOCKET_RCVHWM messages, each frame
# at most MAX_FRAME_BYTES); each `recv` moves what ZeroMQ holds into the subscriber's own
# queue, bounded by `max_queue_bytes` (and `rcvhwm` messages), and past either stops reading,
# so the publisher's queue fills instead and drops what we cannot take: gaps, as ever.
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024  # 5,000 of the largest honest messages (3 kB)
SOCKET_RCVHWM = 8
# as plain ints: pyzmq's enum members cost more than the call they are passed to
_NOBLOCK, _RCVMORE = int(zmq.NOBLOCK), int(zmq.RCVMORE)


class _Session:
    """What a subscriber knows of one session of one stream (or of a daemon's heartbeats)."""

    __slots__ = ("fresh", "last")

    def __init__(self, fresh: bool = False) -> None:
        self.last: dict[str, int] = {}  # msg_type -> the highest seq received
        self.fresh = fresh  # this stream was seen restarting into this session


@dataclass(frozen=True)
class ReceivedMessage(Message):
    """A decoded Message and what the subscriber concluded about it; neither is on the wire.

    gap: how many messages of this topic (same session) went missing just before this one.
    restarted: the first message of a new session for a stream seen under another session.
    size: its bytes on the wire (its frames together), what a reader weighs it by.
    """

    gap: int = 0
    restarted: bool = False
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "gap": self.gap, "restarted": self.restarted}


class Subscriber:
    """A SUB socket that yields decoded messages, marking gaps and publisher restarts.

    endpoint: one endpoint or several (several daemons without a proxy).
    streams: stream ids to receive, or None for all. ZeroMQ filters by topic prefix; messages
        of other streams that share the prefix (``radio1`` vs ``radio10``) are dropped here.
    topics: which message types to subscribe to.
    owns: which streams' messages to take, by stream id (a recorder's shard of a fleet), or
        None for all. ZeroMQ cannot filter by it: the others are read and skipped by their
        topic frame, their other frames never copied nor decoded, and not counted anywhere.
    timeout_ms: how long `recv()` and iteration wait for a message; None waits for ever, and
        iteration ends at the first timeout otherwise.

    Sequence numbers count per topic within a session, so gaps are judged per (session,
    topic) and a subscription to any subset of topics still sees every loss in that subset.
    A message that cannot be decoded is skipped and counted in `invalid`.

    rcvhwm, max_queue_bytes: the messages, and their bytes on the wire, that may wait to be
        read, at most (one message may pass the bytes); past them nothing more is read until
        the caller takes some, and the publisher drops what does not fit in its own queue
        (seen here as gaps). ZeroMQ holds at most ``socket_rcvhwm`` messages more per endpoint
        (default ``SOCKET_RCVHWM``), each frame at most ``max_frame_bytes``: a reader of a busy
        feed lets it hold more of smaller frames (the recorder: `recorder.FEED_SOCKET_RCVHWM`),
        since it wakes each time ZeroMQ has filled what it may hold.

    What it remembers is bounded (``MAX_STREAMS`` streams, ``MAX_SESSIONS_PER_STREAM`` sessions
    of each, ``MAX_HEARTBEAT_SESSIONS``), the least recently heard forgotten first and counted
    in `pruned`. A forgotten stream that comes back is judged as one first heard (no gap on its
    first message, as for a subscriber that joined late), and a forgotten session that comes
    back on a stream still remembered as a new one (a restart). Honest streams are never
    forgotten below these bounds, so their judgement is the same. Frames over
    ``max_frame_bytes`` (the protocol's ``MAX_FRAME_BYTES``) are never read: ZeroMQ
    (``MAXMSGSIZE``) drops the connection that carries one, and the subscriber connects again
    (ZeroMQ would not), losing what was sent meanwhile, which shows as gaps.
    """

    def __init__(self, endpoint: str | Sequence[str], streams: Iterable[str] | None = None,
                 topics: Iterable[str] = ALL_TOPICS, timeout_ms: int | None = None, *,
                 rcvhwm: int = 10000, context: zmq.Context[Any] | None = None,
                 curve: ClientCurve | None = None,
                 max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
                 owns: Callable[[str], bool] | None = None,
                 socket_rcvhwm: int = SOCKET_RCVHWM, max_frame_bytes: int = MAX_FRAME_BYTES):
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not endpoints:
            raise ValueError("Subscriber needs at least one endpoint")
        topics = tuple(topics)
        unknown = [t for t in topics if t not in MSG_TYPES]
        if unknown or not topics:
            raise ValueError(f"topics must be among {', '.join(MSG_TYPES)}; got {topics!r}")
        self.streams = None if streams is None else frozenset(
            validate_stream_id(s) for s in ([streams] if isinstance(streams, str) else streams))
        self.topics = topics
        self.timeout_ms = timeout_ms
        if min(rcvhwm, max_queue_bytes, socket_rcvhwm, max_frame_bytes) < 1:
            raise ValueError(f"rcvhwm, max_queue_bytes, socket_rcvhwm and max_frame_bytes must "
                             f"be at least 1, got {rcvhwm}, {max_queue_bytes}, {socket_rcvhwm} "
                             f"and {max_frame_bytes}")
        self.rcvhwm = rcvhwm
        self.max_queue_bytes = max_queue_bytes
        # frames read from ZeroMQ and their bytes, waiting to be decoded
        self._waiting: deque[tuple[list[bytes], int]] = deque()
        self.waiting_bytes = 0
        self.subscriptions = sorted({
            subscription_prefix(t, s)
            for t in topics
            for s in ([None] if self.streams is None or t == HEARTBEAT else self.streams)})
        # What the subscriber concluded so far.
        self.received = 0
        self.gaps = 0       # messages that arrived after a gap
        self.missed = 0     # messages known to be missing, summed over gaps
        self.restarts = 0
        self.invalid = 0
        # called with the frames and the error of each message refused (listen -v says them)
        self.on_refused: Callable[[list[bytes], ProtocolError], None] | None = None
        self.pruned = 0     # streams and sessions forgotten to keep within the bounds
        self._decoder = Decoder()
        self._owns = owns
        self._owned_topics: dict[bytes, bool] = {}  # topic -> taken (owns asked once)
        # stream -> its sessions, least recently heard first; each session's last seqs
        self._streams: OrderedDict[str, dict[str, _Session]] = OrderedDict()
        self._heartbeats: OrderedDict[str, _Session] = OrderedDict()  # daemon session -> ...
        # Sessions seen from their start (a restart): each topic's first seq must be 0.
        self._fresh: OrderedDict[str, None] = OrderedDict()
        ctx = context if context is not None else zmq.Context.instance()
        self._socket = ctx.socket(zmq.SUB)
        self._monitor: zmq.Socket[Any] | None = None
        self._handshaken: set[str] = set()  # endpoints connected now
        self._dropped: dict[str, float] = {}  # endpoint -> when its connection dropped
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.RCVHWM, min(rcvhwm, socket_rcvhwm))
            # A bigger frame is never read: ZeroMQ drops the peer that sends it.
            self._socket.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
            if curve is not None:
                make_client(self._socket, curve)
            for prefix in self.subscriptions:
                self._socket.setsockopt(zmq.SUBSCRIBE, prefix)
            self._monitor = self._socket.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                | zmq.EVENT_CONNECT_RETRIED)
            self._monitor.setsockopt(zmq.LINGER, 0)
            for ep in endpoints:
                try:
                    self._socket.connect(ep)
                except zmq.ZMQError as exc:
                    raise OSError(exc.errno, f"cannot connect to {ep!r}: {exc}") from None
        except BaseException:
            self.close()
            raise
        self.endpoints = endpoints
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def recv(self, timeout_ms: Any = _DEFAULT) -> ReceivedMessage | None:
        """The next message, or None when `timeout_ms` (default: the constructor's) passes."""
        if timeout_ms is _DEFAULT:
            timeout_ms = self.timeout_ms
        deadline = None if timeout_ms is None else time.monotonic() + max(timeout_ms, 0) / 1e3
        while True:
            self.read_ahead()
            while self._waiting:
                frames, size = self._waiting.popleft()
                self.waiting_bytes -= size
                message = self._accept(frames, size)
                if message is not None:
                    return message
            if deadline is None:
                wait = _WAIT_SLICE_MS
            else:
                wait = max(0, math.ceil((deadline - time.monotonic()) * 1e3))
            if self._dropped:
                wait = min(wait, self._connect_dropped())
            ready = dict(self._poller.poll(wait))
            if self._monitor in ready:
                self._watch_connections()
            if self._socket not in ready and deadline is not None \
                    and time.monotonic() >= deadline:
                return None

    def recv_many(self, most: int, timeout_ms: Any = _DEFAULT) -> list[ReceivedMessage]:
        """The next message (waiting as `recv` does) and those already arrived behind it, up
        to ``most``; [] when `timeout_ms` passes. Judged as `recv` judges them one by one."""
        first = self.recv(timeout_ms)
        if first is None:
            return []
        out = [first]
        waiting = self._waiting
        while len(out) < most:
            if not waiting:
                self.read_ahead()
                if not waiting:
                    break
            frames, size = waiting.popleft()
            self.waiting_bytes -= size
            message = self._accept(frames, size)
            if message is not None:
                out.append(message)
        return out

    def read_ahead(self) -> None:
        """Moves the messages ZeroMQ holds into the subscriber's queue, within its bounds,
        without decoding them (`recv` does this first). A caller that will not call `recv`
        for a while (a recorder waiting for its database) calls this to keep reading."""
        socket, waiting = self._socket, self._waiting
        skips = 0
        while (len(waiting) < self.rcvhwm and self.waiting_bytes < self.max_queue_bytes
               and skips < MAX_SKIPS_PER_READ):
            try:  # (asking ZeroMQ first whether one waits costs as much as reading it)
                frames = [socket.recv(_NOBLOCK)]
            except zmq.Again:
                break
            # another shard's message: its other frames are never copied, nor kept
            skipped = self._owns is not None and not self._takes(frames[0])
            while socket.get(_RCVMORE):  # (get: getsockopt less its enum conversion)
                if len(frames) < 3 and not skipped:
                    frames.append(socket.recv())
                else:  # a fourth makes it malformed; more are never kept (nor copied)
                    socket.recv(copy=False)
                    if len(frames) < 4 and not skipped:
                        frames.append(b"")
            if skipped:
                skips += 1
                continue
            size = sum(map(len, frames))
            waiting.append((frames, size))
            self.waiting_bytes += size

    def __iter__(self) -> Iterator[ReceivedMessage]:
        while True:
            message = self.recv()
            if message is None:
                return
            yield message

    def _watch_connections(self) -> None:
        """Notes connections dropped after their handshake. ZeroMQ retries a connection that
        failed, and says so at once (CONNECT_RETRIED); one it dropped for a frame over
        MAXMSGSIZE it drops for good, saying nothing more: `_connect_dropped` connects that
        one again."""
        assert self._monitor is not None
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            endpoint = event["endpoint"].decode("utf-8", "replace")
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshaken.add(endpoint)
                self._dropped.pop(endpoint, None)
            elif event["event"] == zmq.EVENT_DISCONNECTED and endpoint in self._handshaken:
                self._handshaken.discard(endpoint)
                self._dropped[endpoint] = time.monotonic()
            elif event["event"] == zmq.EVENT_CONNECT_RETRIED:
                self._dropped.pop(endpoint, None)

    def _connect_dropped(self) -> int:
        """Connects again to each endpoint dropped for good; the milliseconds until the next
        one is due."""
        self._watch_connections()  # a retry said since is heard before anything is done
        now = time.monotonic()
        due_ms = _WAIT_SLICE_MS
        for endpoint, since in list(self._dropped.items()):
            left_s = since + _RETRY_GRACE_S - now
            if left_s > 0:
                due_ms = min(due_ms, math.ceil(left_s * 1e3))
                continue
            del self._dropped[endpoint]
            if endpoint in self.endpoints:
                # ZeroMQ keeps the endpoint, whose session is gone, and would not connect it
                # again: forgotten first. (Only here: disconnecting a live session whose pipe
                # still holds messages trips an assertion in libzmq.)
                try:
                    self._socket.disconnect(endpoint)
                except zmq.ZMQError:
                    pass
                self._socket.connect(endpoint)
        return due_ms

    def _accept(self, frames: list[bytes], size: int = 0) -> ReceivedMessage | None:
        try:
            message = self._decoder.decode(frames)
        except ProtocolError as exc:
            self.invalid += 1
            if self.on_refused is not None:
                self.on_refused(frames, exc)
            return None
        if (self.streams is not None and message.msg_type != HEARTBEAT
                and message.stream not in self.streams):
            return None  # a longer stream id that shares the subscribed prefix
        self.received += 1
        return self._judge(message, size)

    def _takes(self, topic: Any) -> bool:
        """Whether a message of this topic is of a stream ``owns`` takes; a topic without a
        stream (a heartbeat) or that is no topic at all is taken, for decode to judge."""
        taken = self._owned_topics.get(topic) if type(topic) is bytes else None
        if taken is None:
            try:
                _, dot, stream = bytes(topic).decode("utf-8").partition(".")
            except (TypeError, ValueError):
                return True
            taken = not dot or self._owns is None or bool(self._owns(stream))
            if len(self._owned_topics) >= MAX_OWNED_TOPICS:
                self._owned_topics.clear()
            self._owned_topics[bytes(topic)] = taken
        return taken

    def _judge(self, message: Message, size: int = 0) -> ReceivedMessage:
        session, seq = message.session, message.seq
        restarted = False
        # Restarts are judged per stream: behind a proxy, several daemons' heartbeats
        # interleave under the one stream "", so a new heartbeat session proves nothing.
        if message.msg_type == HEARTBEAT:
            state = self._heartbeat_session(session)
        else:
            sessions = self._stream_sessions(message.stream)
            found = sessions.get(session)
            if found is None:
                if sessions:
                    restarted = True
                    self.restarts += 1
                    self._mark_fresh(session)
                state = self._add_session(sessions, session, fresh=restarted)
            else:
                state = found
                if len(sessions) > 1:
                    sessions[session] = sessions.pop(session)  # the most recently heard last
        last = state.last.get(message.msg_type)
        if last is None:
            # Joining mid-session tells nothing; a session seen starting should begin at 0.
            gap = seq if state.fresh or session in self._fresh else 0
        else:
            gap = max(seq - last - 1, 0)
        if last is None or seq > last:
            state.last[message.msg_type] = seq
        if gap:
            self.gaps += 1
            self.missed += gap
        # built as a dataclass's __init__ would, without checking the message again
        received = object.__new__(ReceivedMessage)
        received.__dict__.update(header=message.header, body=message.body, gap=gap,
                                 restarted=restarted, size=size)
        return received

    # -- the bounded memory of streams and sessions

    def _stream_sessions(self, stream: str) -> dict[str, _Session]:
        sessions = self._streams.get(stream)
        if sessions is None:
            sessions = self._streams[stream] = {}
            if len(self._streams) > MAX_STREAMS:
                _, forgotten = self._streams.popitem(last=False)
                self.pruned += 1
                for old in forgotten:
                    self._unfresh(old)
        else:
            self._streams.move_to_end(stream)
        return sessions

    def _add_session(self, sessions: dict[str, _Session], session: str,
                     fresh: bool = False) -> _Session:
        state = sessions[session] = _Session(fresh)
        if len(sessions) > MAX_SESSIONS_PER_STREAM:
            old = next(iter(sessions))
            del sessions[old]
            self.pruned += 1
            self._unfresh(old)
        return state

    def _heartbeat_session(self, session: str) -> _Session:
        state = self._heartbeats.get(session)
        if state is None:
            state = self._heartbeats[session] = _Session()
            if len(self._heartbeats) > MAX_HEARTBEAT_SESSIONS:
                old, _ = self._heartbeats.popitem(last=False)
                self.pruned += 1
                self._unfresh(old)
        else:
            self._heartbeats.move_to_end(session)
        return state

    def _mark_fresh(self, session: str) -> None:
        self._fresh[session] = None
        self._fresh.move_to_end(session)
        if len(self._fresh) > MAX_FRESH_SESSIONS:
            self._fresh.popitem(last=False)

    def _unfresh(self, session: str) -> None:
        """A session's seqs were forgotten somewhere: its topics heard again must not be
        judged from seq 0, which would invent a gap of the whole session so far."""
        self._fresh.pop(session, None)

    def resume(self, last_seq: Mapping[tuple[str, str], int],
               sessions: Mapping[str, Iterable[str]],
               restarted_sessions: Iterable[str] = ()) -> None:
        """Judge on from what an earlier run saw (a recorder restarting from its database):
        the last seq per (session, topic), the sessions seen per stream, and the sessions seen
        starting (after a restart), whose first seq of a topic should be 0. Within the bounds:
        the sessions that ``last_seq`` names are kept before the others."""
        restarted = set(restarted_sessions)
        for stream, seen in sessions.items():
            known = self._stream_sessions(stream)
            for session in seen:
                if session not in known:
                    self._add_session(known, session, fresh=session in restarted)
        for (session, topic), seq in last_seq.items():
            if topic == HEARTBEAT:
                state = self._heartbeat_session(session)
                msg_type = HEARTBEAT
            else:
                msg_type, _, stream = topic.partition(".")
                known = self._stream_sessions(stream)
                popped = known.pop(session, None)
                if popped is None:
                    state = self._add_session(known, session, fresh=session in restarted)
                else:
                    state = known[session] = popped  # the most recently heard last
            state.last[msg_type] = max(seq, state.last.get(msg_type, -1))
        for session in restarted:
            self._mark_fresh(session)

    @property
    def closed(self) -> bool:
        return bool(self._socket.closed)

    def close(self) -> None:
        if self._monitor is not None and not self._socket.closed:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
        self._socket.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
