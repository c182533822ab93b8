"""ZeroMQ publishing. Knows sockets, not audio or models.

`Publisher` owns one PUB socket: it builds messages with protocol.py, stamps the session and
the per-topic sequence numbers, and sends without ever blocking the caller. The control socket
is `streamtag.wire.control` (`ControlServer`, and `control_request` for clients).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import zmq

from streamtag.engine.tracks import SCORE_DECIMALS
from streamtag.errors import ProtocolError
from streamtag.wire.descriptors import ConnectionCaps
from streamtag.wire.exposure import MAX_SUBSCRIPTION_BYTES
from streamtag.wire.guard import ConnectionGuard, bind_guarded
from streamtag.wire.protocol import (
    HEARTBEAT,
    MAX_DETAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    SCORES,
    Body,
    EventBody,
    HeartbeatBody,
    Message,
    ModelRef,
    ScoresEncoder,
    StatusBody,
    canonical_json,
    encode,
    header_frame,
    new_msg_id,
    new_session_id,
    topic_for,
    validate_stream_id,
)
from streamtag.wire.replay import ReplayRing
from streamtag.wire.security import CurveKeys, make_server
from streamtag.wire.sockets import (
    DEFAULT_FEED_ENDPOINT,
    bind_or_connect,
    monitor_socket,
    stop_monitor,
    wait_released,
)

HWM_POLICIES = ("per_subscriber", "refuse")
SUBSCRIPTIONS_SETTLE_S = 0.05  # after the handshake: the peer's subscriptions follow at once
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)

log = logging.getLogger(__name__)


class Publisher:
    """Publishes streamtag messages on a ZeroMQ PUB socket; publishing never blocks.

    endpoint: bound by default (``tcp://127.0.0.1:*`` picks a free port; see `endpoint`), or
        connected with ``connect=True``, e.g. to the XSUB side of ``streamtag proxy``.
    sndhwm: messages queued per subscriber before ZeroMQ drops; set before bind/connect.
    session: the session id; a new one per Publisher unless given.
    hwm_policy: what happens when a subscriber's queue is full.
        "per_subscriber" (PUB, the default): that subscriber alone loses the message; the
            others still get it. The publisher cannot see such drops; the subscriber sees
            them as gaps in `seq`.
        "refuse" (XPUB with XPUB_NODROP): ZeroMQ refuses the message, so it is dropped for
            every subscriber and counted in `dropped`. Meant for a publisher connected to a
            single proxy, where one link carries everything and a count is worth having.

    caps: the bound socket's connection caps (streamtag.wire.guard), kept by a thread of its
        own that watches the socket; None: no caps. ``guard`` is that keeper.
    ring_bytes: keep what is published in a `ReplayRing` of this many bytes (``ring``), for a
        replay socket to answer from (streamtag.wire.replay); None: no ring.

    Thread safety: any thread may publish; a lock serialises stamping and sending, so
    sequence numbers leave the socket in order.
    """

    def __init__(self, endpoint: str = DEFAULT_FEED_ENDPOINT, sndhwm: int = 1000,
                 session: str | None = None, *, connect: bool = False, linger_ms: int = 1000,
                 hwm_policy: str = "per_subscriber", context: zmq.Context[Any] | None = None,
                 curve: CurveKeys | None = None, connected_wait_s: float = 0.0,
                 caps: ConnectionCaps | None = None, ring_bytes: int | None = None):
        if hwm_policy not in HWM_POLICIES:
            raise ValueError(f"hwm_policy must be one of {', '.join(HWM_POLICIES)}, "
                             f"got {hwm_policy!r}")
        if sndhwm < 0 or linger_ms < -1:
            raise ValueError("sndhwm must be >= 0 and linger_ms >= -1 (-1: wait forever)")
        self.session = new_session_id() if session is None else session
        if not isinstance(self.session, str) or not 0 < len(self.session) <= MAX_ID_LENGTH:
            raise ValueError(f"session must be a string of 1 to {MAX_ID_LENGTH} characters, "
                             f"got {self.session!r}")
        self.hwm_policy = hwm_policy
        self.ring = None if ring_bytes is None else ReplayRing(ring_bytes, self.session)
        self.sent = 0
        self.dropped = 0
        self._linger_ms = linger_ms
        self._seq: dict[bytes, int] = {}  # next seq per topic
        self._topics: dict[tuple[str, str], bytes] = {}  # (type, checked stream id) -> topic
        self._scores: dict[tuple[Any, ...], ScoresEncoder] = {}  # by (tags, model name, model hash)
        self._lock = threading.Lock()
        self._holds = 0  # held() contexts open; while any is, messages wait in _held
        self._held: list[list[bytes]] = []
        self._started = time.monotonic()
        self._closed = False
        self.guard: ConnectionGuard | None = None
        ctx = context if context is not None else zmq.Context.instance()
        refuse = hwm_policy == "refuse"
        self._socket = ctx.socket(zmq.XPUB if refuse else zmq.PUB)
        try:
            self._socket.setsockopt(zmq.SNDHWM, sndhwm)  # must precede bind/connect
            self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)  # all it receives
            self._socket.setsockopt(zmq.LINGER, linger_ms)
            if refuse:
                self._socket.setsockopt(zmq.XPUB_NODROP, 1)
            if curve is not None:
                make_server(self._socket, curve)
            monitor = (monitor_socket(self._socket, zmq.EVENT_HANDSHAKE_SUCCEEDED)
                       if connect and connected_wait_s > 0 else None)
            self._connect = connect
            if connect:
                self.endpoint = bind_or_connect(self._socket, endpoint, True, "publisher")
            else:
                self.endpoint, self.guard = bind_guarded(self._socket, endpoint, caps, "feed",
                                                         "publisher",
                                                         authenticates=curve is not None)
            if self.guard is not None:
                self.guard.start()
            if monitor is not None:
                self._wait_connected(monitor, connected_wait_s)
        except BaseException:
            if self.guard is not None:
                self.guard.close()
            self._socket.close(linger=0)
            raise

    # -- building and sending

    def publish_scores(self, stream: str, *, start_s: float, end_s: float, start_sample: int,
                       end_sample: int, tags: Iterable[str], raw: Iterable[float],
                       smoothed: Iterable[float], active: Iterable[str],
                       model: ModelRef | Mapping[str, str], latency_ms: float,
                       audio: Mapping[str, Any] | None = None,
                       mood: Mapping[str, Any] | None = None,
                       content: str | None = None) -> bool:
        """Scores of one window. raw/smoothed: one value per tag, in the order of `tags`;
        audio and mood: the protocol's optional objects (1.2), content what the audio is
        (1.6), left out when None.

        The message is what ``publish(stream, ScoresBody(...))`` sends, written by the model's
        ``ScoresEncoder``, which checks and writes the tags and the model once."""
        body = self._scores_encoder(tags, model).body_frame(
            start_s=start_s, end_s=end_s, start_sample=start_sample, end_sample=end_sample,
            raw=raw, smoothed=smoothed, active=active, latency_ms=round(float(latency_ms), 3),
            decimals=SCORE_DECIMALS, audio=audio, mood=mood, content=content)
        return self._publish_frame(SCORES, stream, body)

    def _scores_encoder(self, tags: Iterable[str],
                        model: ModelRef | Mapping[str, str]) -> ScoresEncoder:
        if (type(tags) is not tuple and isinstance(tags, Iterable)
                and not isinstance(tags, (str, bytes, bytearray, Mapping))):
            tags = tuple(tags)  # one pass over an iterator serves the key and the encoder
        try:
            key = (tags, *((model.name, model.hash) if isinstance(model, ModelRef)
                           else (model["name"], model["hash"])))
            return self._scores[key]
        except (KeyError, TypeError):  # a new model, or one the encoder's checks will refuse
            encoder = ScoresEncoder(tags, model)
        if len(self._scores) >= 16:  # models come and go on reloads; a few at a time
            self._scores.clear()
        self._scores[(encoder.tags, encoder.model.name, encoder.model.hash)] = encoder
        return encoder

    def publish_event(self, stream: str, *, tag: str, state: str, score: float, time_s: float,
                      sample: int) -> bool:
        """A tag turned "on" or "off" at audio time `time_s` (sample index `sample`)."""
        body = EventBody(tag=tag, state=state, score=round(float(score), SCORE_DECIMALS),
                         time_s=time_s, sample=sample)
        return self.publish(stream, body)

    def publish_status(self, stream: str, *, state: str, error: str | None = None,
                       counters: Mapping[str, int | float] | None = None,
                       title: str | None = None, source: str | None = None,
                       station: str | None = None,
                       heard_from_start: bool | None = None) -> bool:
        """A stream's source state: starting, running, reconnecting, ended or failed. Texts
        longer than the protocol carries are cut (an error that quotes a long response must
        still be published, not refused)."""
        body = StatusBody(state=state, error=_cut(error, MAX_DETAIL_LENGTH), counters=counters,
                          title=_cut(title, MAX_TEXT_LENGTH),
                          source=_cut(source, MAX_DETAIL_LENGTH),
                          station=_cut(station, MAX_TEXT_LENGTH),
                          heard_from_start=heard_from_start)
        return self.publish(stream, body)

    def heartbeat(self, streams: int, interval_s: float | None = None) -> bool:
        """Tell subscribers the daemon is alive; call it every ``interval_s`` seconds, which
        the heartbeat says (protocol 1.8)."""
        uptime_s = round(time.monotonic() - self._started, 3)
        self._drain_subscriptions()
        return self.publish("", HeartbeatBody(uptime_s=uptime_s, streams=streams,
                                              interval_s=interval_s))

    def publish(self, stream: str, body: Body) -> bool:
        """Stamp `body` with the session and the topic's next seq and send it.

        Returns True when ZeroMQ took the message, False when it was dropped (counted in
        `dropped`). A dropped message still uses its seq, so subscribers see the gap.
        """
        if not isinstance(body, Body):
            raise ProtocolError(f"not a message body: {type(body).__name__}")
        return self._publish_frame(body.msg_type, stream, canonical_json(body.to_dict()))

    def _publish_frame(self, msg_type: str, stream: str, body: bytes) -> bool:
        """Stamps a body frame with a header (the session, the topic's next seq) and sends."""
        topic = self._topics.get((msg_type, stream)) if type(stream) is str else None
        if topic is None:
            topic = self._checked_topic(msg_type, stream)
        with self._lock:
            self._check_open()
            seq = self._seq.get(topic, 0)
            header = header_frame(msg_type, session=self.session, stream=stream, seq=seq,
                                  sent_at=time.time(), msg_id=new_msg_id())
            self._seq[topic] = seq + 1
            frames = [topic, header, body]
            if self.ring is not None:  # kept even if ZeroMQ drops it: a reader may ask
                self.ring.add(topic, seq, frames)
            return self._send(frames)

    def send_message(self, message: Message) -> bool:
        """Send a message exactly as built (its own session and seq), e.g. to replay a log."""
        frames = encode(message)
        with self._lock:
            self._check_open()
            return self._send(frames)

    def next_seq(self, msg_type: str, stream: str = "") -> int:
        """The seq the next message of this type and stream will carry."""
        return self._seq.get(topic_for(msg_type, stream).encode("utf-8"), 0)

    def _checked_topic(self, msg_type: str, stream: str) -> bytes:
        """The topic frame for a stream id, checked once and kept."""
        if msg_type == HEARTBEAT:
            if stream != "":
                raise ProtocolError(f'a heartbeat\'s stream must be "", got {stream!r}')
        else:
            validate_stream_id(stream)
        topic = topic_for(msg_type, stream).encode("utf-8")
        if len(self._topics) >= 4096:  # streams come and go in a long-running daemon
            self._topics.clear()
        self._topics[(msg_type, stream)] = topic
        return topic

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Messages published inside (by any thread) leave together at its end, in the order
        they were published; nested, at the outermost end. ZeroMQ wakes its I/O thread for a
        message sent while that thread sleeps: a burst wakes it once, not once a message (the
        daemon holds each engine turn's messages: docs/benchmarks/). Publishing a
        held message returns True; where the ``refuse`` policy drops it at the end, ``dropped``
        counts it then."""
        with self._lock:  # closed: what is published inside raises as it would outside
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                if not self._holds:
                    self._send_held()

    def _send_held(self) -> None:
        held, self._held = self._held, []
        for frames in held:
            self._send_now(frames)

    def _send(self, frames: list[bytes]) -> bool:
        if self._holds:
            self._held.append(frames)
            return True
        return self._send_now(frames)

    def _send_now(self, frames: list[bytes]) -> bool:
        # Frame by frame as send_multipart does, with plain int flags: its arithmetic on
        # pyzmq's flag enums cost more than the sends themselves (2.8 against 1.1 us).
        send = self._socket.send
        try:
            for frame in frames[:-1]:
                send(frame, _MORE)
            send(frames[-1], _LAST)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def _wait_connected(self, monitor: zmq.Socket[Any], timeout_s: float) -> None:
        """A connecting PUB drops what it sends before its peer is there and has sent the
        subscriptions it forwards (ZeroMQ's slow joiner): after a restart behind a proxy, a
        stream's first status would be lost and its subscribers would see a gap. So wait,
        at most ``timeout_s``, for the handshake, then briefly for the subscriptions."""
        try:
            if monitor.poll(round(timeout_s * 1000)):
                time.sleep(SUBSCRIPTIONS_SETTLE_S)
            else:
                log.warning("publisher %s: no connection after %g s; publishing anyway (ZeroMQ "
                            "keeps trying, and drops what it sends until then)", self.endpoint,
                            timeout_s)
        finally:
            stop_monitor(self._socket, monitor)

    def _drain_subscriptions(self) -> None:
        # An XPUB queues subscription notices for the application; nobody here needs them.
        if self.hwm_policy != "refuse":
            return
        with self._lock:
            while not self._closed and self._socket.poll(0, zmq.POLLIN):
                self._socket.recv_multipart(zmq.NOBLOCK)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the publisher is closed")

    # -- life

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket, giving queued messages up to `linger_ms` to leave (default: the
        constructor's). Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._send_held()  # a hold still open when closing loses nothing
            self._closed = True
            if self.guard is not None:
                self.guard.close()
            self._socket.close(linger=self._linger_ms if linger_ms is None else linger_ms)
            if not self._connect:
                wait_released(self.endpoint)  # the port free again once this returns

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Publisher({self.endpoint!r}, session={self.session!r}, sent={self.sent}, "
                f"dropped={self.dropped})")


def _cut(text: str | None, longest: int) -> str | None:
    return text if text is None or len(text) <= longest else text[: longest - 1] + "…"
