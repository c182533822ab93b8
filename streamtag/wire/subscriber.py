"""Subscribing to a streamtag daemon (or a proxy): decoded messages with loss and restarts marked.

`Subscriber` yields `ReceivedMessage`s: protocol Messages plus what this receiver concluded,
`gap` (messages missing just before this one on its topic) and `restarted` (the stream's
publisher has a new session). The ``streamtag listen`` command is streamtag.commands.listen;
the control client is `streamtag.wire.control.control_request`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from streamtag.errors import ProtocolError
from streamtag.wire.protocol import (
    HEARTBEAT,
    MSG_TYPES,
    Message,
    decode,
    subscription_prefix,
    validate_stream_id,
)
from streamtag.wire.security import ClientCurve, make_client

__all__ = ["ALL_TOPICS", "ReceivedMessage", "Subscriber"]

ALL_TOPICS = MSG_TYPES
_WAIT_SLICE_MS = 250  # an unbounded wait still wakes up this often, so Ctrl-C is prompt
_DEFAULT = object()


@dataclass(frozen=True)
class ReceivedMessage(Message):
    """A decoded Message and what the subscriber concluded about it; neither is on the wire.

    gap: how many messages of this topic (same session) went missing just before this one.
    restarted: the first message of a new session for a stream seen under another session.
    """

    gap: int = 0
    restarted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "gap": self.gap, "restarted": self.restarted}


class Subscriber:
    """A SUB socket that yields decoded messages, marking gaps and publisher restarts.

    endpoint: one endpoint or several (several daemons without a proxy).
    streams: stream ids to receive, or None for all. ZeroMQ filters by topic prefix; messages
        of other streams that share the prefix (``radio1`` vs ``radio10``) are dropped here.
    topics: which message types to subscribe to.
    timeout_ms: how long `recv()` and iteration wait for a message; None waits for ever, and
        iteration ends at the first timeout otherwise.

    Sequence numbers count per topic within a session, so gaps are judged per (session,
    topic) and a subscription to any subset of topics still sees every loss in that subset.
    A message that cannot be decoded is skipped and counted in `invalid`.
    """

    def __init__(self, endpoint: str | Sequence[str], streams: Iterable[str] | None = None,
                 topics: Iterable[str] = ALL_TOPICS, timeout_ms: int | None = None, *,
                 rcvhwm: int = 10000, context: zmq.Context | None = None,
                 curve: ClientCurve | None = None):
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
        self._last_seq: dict[tuple[str, str], int] = {}   # (session, topic) -> seq
        self._sessions: dict[str, set[str]] = {}          # stream -> sessions seen
        self._fresh: set[str] = set()  # sessions seen from their start: first seq must be 0
        ctx = context if context is not None else zmq.Context.instance()
        self._socket = ctx.socket(zmq.SUB)
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
            if curve is not None:
                make_client(self._socket, curve)
            for prefix in self.subscriptions:
                self._socket.setsockopt(zmq.SUBSCRIBE, prefix)
            for ep in endpoints:
                try:
                    self._socket.connect(ep)
                except zmq.ZMQError as exc:
                    raise OSError(exc.errno, f"cannot connect to {ep!r}: {exc}") from None
        except BaseException:
            self._socket.close(linger=0)
            raise
        self.endpoints = endpoints

    def recv(self, timeout_ms: Any = _DEFAULT) -> ReceivedMessage | None:
        """The next message, or None when `timeout_ms` (default: the constructor's) passes."""
        if timeout_ms is _DEFAULT:
            timeout_ms = self.timeout_ms
        deadline = None if timeout_ms is None else time.monotonic() + max(timeout_ms, 0) / 1e3
        while True:
            if deadline is None:
                wait = _WAIT_SLICE_MS
            else:
                wait = max(0, math.ceil((deadline - time.monotonic()) * 1e3))
            if self._socket.poll(wait, zmq.POLLIN):
                message = self._accept(self._socket.recv_multipart(zmq.NOBLOCK))
                if message is not None:
                    return message
            elif deadline is not None and time.monotonic() >= deadline:
                return None

    def __iter__(self) -> Iterator[ReceivedMessage]:
        while True:
            message = self.recv()
            if message is None:
                return
            yield message

    def _accept(self, frames: list[bytes]) -> ReceivedMessage | None:
        try:
            message = decode(frames)
        except ProtocolError:
            self.invalid += 1
            return None
        if (self.streams is not None and message.msg_type != HEARTBEAT
                and message.stream not in self.streams):
            return None  # a longer stream id that shares the subscribed prefix
        self.received += 1
        return self._judge(message)

    def _judge(self, message: Message) -> ReceivedMessage:
        session, stream, seq = message.session, message.stream, message.seq
        restarted = False
        # Restarts are judged per stream: behind a proxy, several daemons' heartbeats
        # interleave under the one stream "", so a new heartbeat session proves nothing.
        if message.msg_type != HEARTBEAT:
            seen = self._sessions.setdefault(stream, set())
            if session not in seen:
                if seen:
                    restarted = True
                    self.restarts += 1
                    self._fresh.add(session)
                seen.add(session)
        key = (session, message.topic)
        last = self._last_seq.get(key)
        if last is None:
            # Joining mid-session tells nothing; a session seen starting should begin at 0.
            gap = seq if session in self._fresh else 0
        else:
            gap = max(seq - last - 1, 0)
        if last is None or seq > last:
            self._last_seq[key] = seq
        if gap:
            self.gaps += 1
            self.missed += gap
        return ReceivedMessage(message.header, message.body, gap=gap, restarted=restarted)

    def resume(self, last_seq: Mapping[tuple[str, str], int],
               sessions: Mapping[str, Iterable[str]],
               restarted_sessions: Iterable[str] = ()) -> None:
        """Judge on from what an earlier run saw (a recorder restarting from its database):
        the last seq per (session, topic), the sessions seen per stream, and the sessions seen
        starting (after a restart), whose first seq of a topic should be 0."""
        for key, seq in last_seq.items():
            self._last_seq[key] = max(seq, self._last_seq.get(key, -1))
        for stream, seen in sessions.items():
            self._sessions.setdefault(stream, set()).update(seen)
        self._fresh.update(restarted_sessions)

    @property
    def closed(self) -> bool:
        return self._socket.closed

    def close(self) -> None:
        self._socket.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
