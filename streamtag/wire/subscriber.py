"""Subscribing to a streamtag daemon (or a proxy): decoded messages with loss and restarts marked.

`Subscriber` yields `ReceivedMessage`s: protocol Messages plus what this receiver concluded,
`gap` (messages missing just before this one on its topic) and `restarted` (the stream's
publisher has a new session). `listen_main` is the ``streamtag listen`` command.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import zmq

from streamtag.errors import ProtocolError
from streamtag.wire.protocol import (
    HEARTBEAT,
    MSG_TYPES,
    EventBody,
    HeartbeatBody,
    Message,
    ScoresBody,
    StatusBody,
    TrackBody,
    canonical_json,
    decode,
    decode_reply,
    encode_request,
    subscription_prefix,
    validate_stream_id,
)
from streamtag.wire.security import ClientCurve, make_client
from streamtag.wire.sockets import bind_or_connect

__all__ = ["NowPlaying", "ReceivedMessage", "Subscriber", "control_request", "format_message",
           "listen_main"]

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


# ---------------------------------------------------------------- streamtag listen

_BOLD, _GREEN, _RED, _RESET = "\033[1m", "\033[32m", "\033[31m", "\033[0m"


def _clock(unix_s: float) -> str:
    ms = int((unix_s % 1) * 1000)
    return time.strftime("%H:%M:%S", time.localtime(unix_s)) + f".{ms:03d}"


def _title(title: str | None) -> str:
    return "(untitled)" if title is None else f'"{title}"'


def _track_summary(body: TrackBody) -> str:
    """Windows, the tags active for most of the track and the top mean smoothed scores."""
    ranked = sorted(zip(body.mean_smoothed, body.tags, strict=True), reverse=True)[:3]
    top = ", ".join(f"{tag} {score:.2f}" for score, tag in ranked) or "-"
    return f"{body.windows} windows  mostly: {', '.join(body.active) or '-'}  mean: {top}"


def format_message(message: ReceivedMessage, color: bool = False) -> str:
    """One human-readable line for a message."""
    def paint(text: str, *codes: str) -> str:
        return "".join(codes) + text + _RESET if color else text

    head = f"{_clock(message.sent_at)}  {message.stream or '-':<12} #{message.seq:<6}"
    body = message.body
    if isinstance(body, ScoresBody):
        ranked = sorted(zip(body.smoothed, body.tags, strict=True), reverse=True)[:3]
        top = ", ".join(f"{tag} {score:.2f}" for score, tag in ranked) or "-"
        text = (f"{body.start_s:9.2f}-{body.end_s:.2f} s  active: "
                f"{', '.join(body.active) or '-'}  top: {top}  ({body.latency_ms:.0f} ms)")
    elif isinstance(body, EventBody):
        text = paint(f">>> {body.tag} {body.state.upper()}", _BOLD,
                     _GREEN if body.state == "on" else _RED)
        text += f"  score {body.score:.2f} at {body.time_s:.2f} s"
    elif isinstance(body, StatusBody):
        text = paint(f"status {body.state}", _BOLD, *([_RED] if body.state == "failed" else []))
        if body.error:
            text += f"  error: {body.error}"
        if body.title:
            text += f'  title: "{body.title}"'
        if body.source:
            text += f"  source: {body.source}"
        if body.counters:
            text += "  " + " ".join(f"{k}={v}" for k, v in sorted(body.counters.items()))
    elif isinstance(body, TrackBody):
        text = paint(f"track {_title(body.title)}", _BOLD)
        text += f"  {body.start_s:.2f}-{body.end_s:.2f} s  {_track_summary(body)}  ({body.reason})"
    elif isinstance(body, HeartbeatBody):
        text = (f"heartbeat  session {message.session[:8]}  up {body.uptime_s:.0f} s  "
                f"{body.streams} streams")
    else:  # pragma: no cover - decode only returns the types above
        text = message.msg_type
    if message.gap:
        text += paint(f"  [{message.gap} lost before this]", _RED)
    if message.restarted:
        text += paint(f"  [publisher restarted: session {message.session[:8]}]", _BOLD)
    return head + " " + text


class NowPlaying:
    """Each stream's current title and its last tracks, from status and track messages (and a
    control `status` reply for a late start): what ``streamtag listen --tracks`` prints."""

    def __init__(self, keep: int = 5, streams: frozenset[str] | None = None) -> None:
        self.keep = keep
        self.streams = streams  # None: every stream
        self.titles: dict[str, str | None] = {}
        self.tracks: dict[str, list[TrackBody]] = {}

    def apply(self, message: Message) -> list[str]:
        """Lines to print for one message: a new title, a finished track, or nothing."""
        body, stream = message.body, message.stream
        if isinstance(body, StatusBody):
            if self.titles.get(stream) == body.title:
                self.titles[stream] = body.title
                return []  # no title yet, or the same one
            self.titles[stream] = body.title
            return [f"{_clock(message.sent_at)}  {stream:<12} now playing {_title(body.title)}"]
        if isinstance(body, TrackBody):
            last = self.tracks.setdefault(stream, [])
            last.append(body)
            del last[:-self.keep]
            return [f"{_clock(message.sent_at)}  {stream:<12} played {_title(body.title)}  "
                    f"{_span(body.start_s, body.end_s)}  {_track_summary(body)}"]
        return []

    def apply_status_reply(self, reply: dict[str, Any]) -> list[str]:
        """The daemon's view at the start: current titles and the last tracks it lists."""
        lines = []
        for stream, state in sorted((reply.get("streams") or {}).items()):
            if self.streams is not None and stream not in self.streams:
                continue
            for fields in (state.get("tracks") or [])[-self.keep:]:
                try:
                    body = TrackBody(**fields)
                except (TypeError, ProtocolError):
                    continue  # a daemon of another version: its tracks are not ours to show
                self.tracks.setdefault(stream, []).append(body)
                lines.append(f"{'earlier':<12}  {stream:<12} played {_title(body.title)}  "
                             f"{_span(body.start_s, body.end_s)}  {_track_summary(body)}")
            self.titles[stream] = state.get("title")
            lines.append(f"{'now':<12}  {stream:<12} now playing {_title(state.get('title'))}")
        return lines


def _span(start_s: float, end_s: float) -> str:
    def clock(seconds: float) -> str:
        minutes, secs = divmod(seconds, 60.0)
        return f"{int(minutes)}:{secs:04.1f}"
    return f"{clock(start_s)}-{clock(end_s)}"


def listen_main(endpoint: str | Sequence[str], streams: Iterable[str] | None = None,
                as_json: bool = False, count: int | None = None, duration: float | None = None,
                out: TextIO | None = None, *, topics: Iterable[str] = ALL_TOPICS,
                context: zmq.Context | None = None, curve: ClientCurve | None = None,
                tracks: bool = False, control: str | None = None) -> int:
    """``streamtag listen``: print received messages until `count` or `duration` or Ctrl-C.

    One line per message: human-readable, or with `as_json` one JSON object per line with the
    keys topic, header, body, gap and restarted. With `tracks`, only what is playing: a line
    per title change ("now playing") and per finished track, after the daemon's current
    titles and last tracks when `control` (its control endpoint) is given; `count` then
    counts those lines. Returns the exit status.
    """
    if tracks:
        topics = ("status", "track")
    out = sys.stdout if out is None else out
    color = not as_json and bool(getattr(out, "isatty", lambda: False)())
    deadline = None if duration is None else time.monotonic() + duration
    printed = 0
    try:
        subscriber = Subscriber(endpoint, streams, topics, context=context, curve=curve)
    except (ValueError, OSError) as exc:
        print(f"streamtag listen: {exc}", file=sys.stderr)
        return 2
    playing = NowPlaying(streams=subscriber.streams) if tracks else None
    try:
        with subscriber:
            if playing is not None and control is not None:
                try:
                    reply = control_request(control, {"cmd": "status"}, context=context,
                                            curve=curve)
                except (TimeoutError, OSError, ProtocolError) as exc:
                    print(f"streamtag listen: no current titles from {control}: {exc}",
                          file=sys.stderr)
                else:
                    if reply.get("ok"):
                        lines = playing.apply_status_reply(reply)
                        for line in lines:
                            out.write(line + "\n")
                        out.flush()
                        printed += len(lines)
            while count is None or printed < count:
                wait_ms = 500
                if deadline is not None:
                    left_ms = (deadline - time.monotonic()) * 1e3
                    if left_ms <= 0:
                        break
                    wait_ms = min(wait_ms, math.ceil(left_ms))
                message = subscriber.recv(wait_ms)
                if message is None:
                    continue
                if as_json:
                    lines = [canonical_json(message.to_dict()).decode("utf-8")]
                elif playing is not None:
                    lines = playing.apply(message)
                else:
                    lines = [format_message(message, color)]
                for line in lines:
                    out.write(line + "\n")
                out.flush()
                printed += len(lines)
    except KeyboardInterrupt:
        pass  # the usual way to end a live view
    return 0


def control_request(endpoint: str, request: Mapping[str, Any], timeout_ms: int = 2000, *,
                    context: zmq.Context | None = None,
                    curve: ClientCurve | None = None) -> dict[str, Any]:
    """Send one control request and return the reply dict ({"ok": ..., ...}).

    Raises TimeoutError when no reply comes within `timeout_ms`, and ProtocolError for a
    request that is not an object with a string "cmd" or a reply that is not valid.
    """
    payload = encode_request(request)
    ctx = context if context is not None else zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
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
                           "endpoint, and (with keys) is this client's key allowed?")
    finally:
        sock.close(linger=0)
