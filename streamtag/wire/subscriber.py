"""Subscribing to a streamtag daemon (or a proxy): decoded messages with loss and restarts marked.

`Subscriber` yields `ReceivedMessage`s: protocol Messages plus what this receiver concluded,
`gap` (messages missing just before this one on its topic) and `restarted` (the stream's
publisher has a new session). The ``streamtag listen`` command is streamtag.commands.listen;
the control client is `streamtag.wire.control.control_request`.
"""

from __future__ import annotations

import logging
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
    MAX_REPLAY_TOPICS,
    MSG_TYPES,
    Decoder,
    Message,
    subscription_prefix,
    topic_for,
    validate_stream_id,
)
from streamtag.wire.replay import ReplayClient
from streamtag.wire.security import ClientCurve, make_client
from streamtag.wire.sockets import monitor_socket, stop_monitor

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
# A replay socket that did not answer is not asked again for this long: a gap is then a gap.
REPLAY_RETRY_S = 5.0
LOST_LOG_EVERY_S = 10.0  # messages the ring no longer held are said this often at most

log = logging.getLogger(__name__)


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
    replayed: it came from the daemon's replay socket (a stream's state on joining, or a
        message the feed lost), not from the feed.
    """

    gap: int = 0
    restarted: bool = False
    size: int = 0
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {**super().to_dict(), "gap": self.gap, "restarted": self.restarted}
        if self.replayed:
            out["replayed"] = True
        return out


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

    replay: the daemons' replay sockets (``[publish] replay_endpoint``; streamtag.wire.replay),
        one per daemon, or None. With them, the first ``recv`` hands out each stream's latest
        status, scores and silence (``replayed``) before anything from the feed, and a gap is
        filled before the message that showed it: the missing messages are asked for and
        handed out first, in order, so the caller sees none (``recovered`` counts them). What
        the daemon's ring no longer holds stays a gap, counted in ``unrecovered`` as well and
        said in the log. After a connection dropped (and after ``resume``), every topic known
        is caught up at once, and again at the first heartbeat after a loss (the last
        messages of a topic leave no gap until its next one, which may never come). A message
        already handed out is not handed out again
        (``duplicates``). Each request waits ``replay_timeout_ms`` at most; a socket that did
        not answer is left alone for ``REPLAY_RETRY_S``.
    """

    def __init__(self, endpoint: str | Sequence[str], streams: Iterable[str] | None = None,
                 topics: Iterable[str] = ALL_TOPICS, timeout_ms: int | None = None, *,
                 rcvhwm: int = 10000, context: zmq.Context[Any] | None = None,
                 curve: ClientCurve | None = None,
                 max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
                 owns: Callable[[str], bool] | None = None,
                 socket_rcvhwm: int = SOCKET_RCVHWM, max_frame_bytes: int = MAX_FRAME_BYTES,
                 replay: str | Sequence[str] | None = None, replay_timeout_ms: int = 2000):
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
        self.replayed = 0   # messages handed out from replay sockets (state and recovered)
        self.recovered = 0  # of them, messages the feed had lost
        self.unrecovered = 0  # messages lost that the replay socket no longer held
        self.duplicates = 0  # messages dropped as handed out already (with replay)
        self._decoder = Decoder()
        self._owns = owns
        self._owned_topics: dict[bytes, bool] = {}  # topic -> taken (owns asked once)
        # stream -> its sessions, least recently heard first; each session's last seqs
        self._streams: OrderedDict[str, dict[str, _Session]] = OrderedDict()
        self._heartbeats: OrderedDict[str, _Session] = OrderedDict()  # daemon session -> ...
        # Sessions seen from their start (a restart): each topic's first seq must be 0.
        self._fresh: OrderedDict[str, None] = OrderedDict()
        ctx = context if context is not None else zmq.Context.instance()
        self._replayers: list[ReplayClient] = []
        self._replay_down: dict[int, float] = {}  # replayer -> until when it is left alone
        self._ready: deque[ReceivedMessage] = deque()  # judged, to hand out before the rest
        self._join_due = replay is not None  # the state, and catching up, at the next recv
        self._catch_up_due = False
        self._dirty = False  # a gap since the last catch-up: the next heartbeat catches up
        self._restarted_sessions: set[str] = set()  # seen starting since the last catch-up
        self._lost_unsaid = 0
        self._lost_said_at = -math.inf
        self._socket = ctx.socket(zmq.SUB)
        self._monitor: zmq.Socket[Any] | None = None
        self._handshaken: set[str] = set()  # endpoints connected now
        self._ever_handshaken: set[str] = set()  # a handshake again: a reconnection
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
            self._monitor = monitor_socket(self._socket, zmq.EVENT_HANDSHAKE_SUCCEEDED
                                           | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
            for ep in endpoints:
                try:
                    self._socket.connect(ep)
                except zmq.ZMQError as exc:
                    raise OSError(exc.errno, f"cannot connect to {ep!r}: {exc}") from None
            for ep in [replay] if isinstance(replay, str) else list(replay or ()):
                self._replayers.append(ReplayClient(ep, curve=curve, context=ctx,
                                                    timeout_ms=replay_timeout_ms))
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
            if self._join_due or self._catch_up_due:
                self._join()
            if self._ready:
                return self._ready.popleft()
            self.read_ahead()
            while self._waiting:
                frames, size = self._waiting.popleft()
                self.waiting_bytes -= size
                message = self._accept(frames, size)
                if message is not None:
                    return message
                if self._ready:  # a gap filled: the messages it lacked, then the one after
                    return self._ready.popleft()
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
        waiting, ready = self._waiting, self._ready
        while len(out) < most:
            if ready:
                out.append(ready.popleft())
                continue
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
                if endpoint in self._ever_handshaken and self._replayers:
                    self._catch_up_due = True  # what was published meanwhile: asked for
                self._ever_handshaken.add(endpoint)
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

    def _judge(self, message: Message, size: int = 0, replayed: bool = False,
               fill: bool = True) -> ReceivedMessage | None:
        """The message with what was concluded of it; None for one handed out already (with
        replay). A gap that a replay socket fills: None, and the messages it lacked and this
        one wait in ``_ready``, in order."""
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
                    if self._replayers:  # what of it came before this one: asked for
                        self._restarted_sessions.add(session)
                        self._catch_up_due = True
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
            if seq <= last and self._replayers:  # the feed's copy of a message replayed
                self.duplicates += 1
                return None
            gap = max(seq - last - 1, 0)
        if self._replayers:
            if gap:
                self._dirty = True
            elif message.msg_type == HEARTBEAT and self._dirty:
                # a topic's last messages lost leave no gap until its next one, which may
                # never come (a stream's final status): caught up after loss, at a heartbeat
                self._dirty, self._catch_up_due = False, True
        # (a state's message may show one too: a daemon restarted while this one was away)
        if gap and fill and self._replayers:
            filled = self._fill(message, seq - gap)
            if filled:
                if restarted:  # the first of the new session handed out says so
                    filled[0].__dict__["restarted"] = True
                current = self._judge(message, size, replayed, fill=False)
                self._ready.extend(filled)
                if current is not None:
                    self._ready.append(current)
                return None
        if last is None or seq > last:
            state.last[message.msg_type] = seq
        if gap:
            self.gaps += 1
            self.missed += gap
            if replayed or self._replayers:
                self._lost(message, gap)
        if replayed:
            self.replayed += 1
        # built as a dataclass's __init__ would, without checking the message again
        received = object.__new__(ReceivedMessage)
        received.__dict__.update(header=message.header, body=message.body, gap=gap,
                                 restarted=restarted, size=size, replayed=replayed)
        return received

    # -- replay (streamtag.wire.replay)

    def _wanted(self, message: Message) -> bool:
        """Whether a replayed message is one this subscriber takes from the feed."""
        if message.msg_type not in self.topics:
            return False
        if message.msg_type == HEARTBEAT:
            return True
        return ((self.streams is None or message.stream in self.streams)
                and (self._owns is None or bool(self._owns(message.stream))))

    def _fill(self, message: Message, first: int) -> list[ReceivedMessage]:
        """The messages of ``message``'s topic from seq ``first`` up to it, as a replay socket
        gives them back, judged (each one's gap: what the ring no longer held)."""
        topic, session = message.topic, message.session
        got = self._ask_replay(session, {topic: (first, message.seq)})
        out = []
        for replayed, size in got:
            if replayed.topic != topic or not first <= replayed.seq < message.seq:
                continue  # not what was asked: trusted no further
            judged = self._judge(replayed, size, replayed=True, fill=False)
            if judged is not None:
                out.append(judged)
        self.recovered += len(out)
        return out

    def _ask_replay(self, session: str, topics: Mapping[str, tuple[int, int | None]]
                    ) -> list[tuple[Message, int]]:
        """What the replay socket serving ``session`` gives back for ``topics``: the one that
        said it serves it is asked first, then the others, until one does (a daemon that
        restarted serves a new session; the others answer with theirs)."""
        now = time.monotonic()
        order = sorted(range(len(self._replayers)),
                       key=lambda i: self._replayers[i].session != session)
        for index in order:
            client = self._replayers[index]
            if self._replay_down.get(index, 0.0) > now:
                continue
            try:
                got = client.replay(session, topics)
            except (TimeoutError, ProtocolError, zmq.ZMQError) as exc:
                self._replay_failed(index, exc)
                continue
            if client.session == session:
                return [(m, size) for m, size in got if m.session == session]
        return []

    def _replay_failed(self, index: int, exc: BaseException) -> None:
        self._replay_down[index] = time.monotonic() + REPLAY_RETRY_S
        log.warning("replay socket %s: %s; gaps stay gaps for %g s",
                    self._replayers[index].endpoint, exc, REPLAY_RETRY_S)

    def _lost(self, message: Message, missing: int) -> None:
        """Messages that were lost and that no replay socket gave back: counted, and said at
        most every LOST_LOG_EVERY_S."""
        self.unrecovered += missing
        self._lost_unsaid += missing
        now = time.monotonic()
        if now - self._lost_said_at >= LOST_LOG_EVERY_S:
            self._lost_said_at = now
            log.warning("%d messages lost (the latest before %s seq %d) that the daemon's replay "
                        "ring no longer held, or that no replay socket answered for; %d in all "
                        "so far", self._lost_unsaid, message.topic, message.seq,
                        self.unrecovered)
            self._lost_unsaid = 0

    def _join(self) -> None:
        """Asks each replay socket for the streams' state (on the first recv), and catches up
        what is known of its session (after ``resume``, or a connection dropped): those
        messages first, then the state's, judged as they come (duplicates dropped)."""
        joining, self._join_due, self._catch_up_due = self._join_due, False, False
        restarted, self._restarted_sessions = self._restarted_sessions, set()
        now = time.monotonic()
        for index, client in enumerate(self._replayers):
            if self._replay_down.get(index, 0.0) > now:
                continue
            state: list[tuple[Message, int]] = []
            try:
                if joining or client.session is None:
                    state = client.state()
                for session in {s for s in (client.session, *restarted) if s is not None}:
                    self._catch_up(client, session)
            except (TimeoutError, ProtocolError, zmq.ZMQError) as exc:
                self._replay_failed(index, exc)
                continue
            for message, size in state:
                if self._wanted(message):
                    judged = self._judge(message, size, replayed=True)
                    if judged is not None:
                        self._ready.append(judged)

    def _catch_up(self, client: ReplayClient, session: str) -> None:
        """Everything after the last seq known of each topic of ``session`` that ``client``
        holds (nothing when it serves another)."""
        topics: dict[str, tuple[int, int | None]] = {}
        for stream, sessions in self._streams.items():
            known = sessions.get(session)
            if known is None:
                continue
            # a session seen starting: its topics not heard yet are asked for from seq 0
            fresh = known.fresh or session in self._fresh
            for msg_type in self.topics:
                last = known.last.get(msg_type)
                if last is not None or (fresh and msg_type != HEARTBEAT):
                    topics[topic_for(msg_type, stream)] = (
                        0 if last is None else last + 1, None)
        beats = self._heartbeats.get(session)
        if beats is not None and HEARTBEAT in beats.last:
            topics[HEARTBEAT] = (beats.last[HEARTBEAT] + 1, None)
        names = list(topics)
        taken = 0  # bytes handed to _ready: past max_queue_bytes, the rest waits for its gaps
        for at in range(0, len(names), MAX_REPLAY_TOPICS):
            if taken >= self.max_queue_bytes:
                break
            chunk = {name: topics[name] for name in names[at:at + MAX_REPLAY_TOPICS]}
            for message, size in client.replay(session, chunk):
                if message.session == session and message.topic in chunk \
                        and self._wanted(message):
                    judged = self._judge(message, size, replayed=True, fill=False)
                    if judged is not None:
                        self.recovered += 1
                        self._ready.append(judged)
                        taken += size

    def positions(self) -> tuple[dict[tuple[str, str], int], dict[str, list[str]]]:
        """What this subscriber has heard: the last seq per (session, topic), and the sessions
        per stream; what ``resume`` takes, for a subscriber that goes on from here later."""
        last_seq: dict[tuple[str, str], int] = {}
        sessions: dict[str, list[str]] = {}
        for stream, known in self._streams.items():
            sessions[stream] = list(known)
            for session, state in known.items():
                for msg_type, seq in state.last.items():
                    last_seq[(session, topic_for(msg_type, stream))] = seq
        for session, state in self._heartbeats.items():
            if HEARTBEAT in state.last:
                last_seq[(session, HEARTBEAT)] = state.last[HEARTBEAT]
        return last_seq, sessions

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
        if self._replayers:
            self._catch_up_due = True

    @property
    def closed(self) -> bool:
        return bool(self._socket.closed)

    def close(self) -> None:
        if self._monitor is not None and not self._socket.closed:
            stop_monitor(self._socket, self._monitor)
        self._socket.close(linger=0)
        for client in self._replayers:
            client.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
