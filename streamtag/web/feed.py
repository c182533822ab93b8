"""What the dashboard knows of a daemon's feed: per-stream state, a short timeline, liveness.

`FeedState` is plain data, fed from one thread (the event loop's); it turns protocol messages
(as `ReceivedMessage.to_dict()` dicts) and control replies into the views a page draws, so a
page that connects late gets the current state at once: the tags on, a short timeline of them,
what the audio is (protocol 1.7's content: while it is not music, no tag is shown on), the
last audio level and mood, whether it is silent (dead air) and since when, and the mood's
course over the last half hour (the venue page's ribbon). `FeedThread` runs a
`streamtag.wire.subscriber.Subscriber` in a background thread and hands each message to a
callback. Nothing here knows audio, models or HTTP.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from streamtag.engine.content import MUSIC
from streamtag.wire.protocol import CONTENT_KINDS, MsgType
from streamtag.wire.ready_thread import ReadyThread
from streamtag.wire.security import ClientCurve
from streamtag.wire.subscriber import Subscriber

DEFAULT_HISTORY_S = 300.0       # the timeline strip: the last five minutes
DEFAULT_HEARTBEAT_S = 2.0       # the daemon's default, until heartbeats show the real interval
MIN_SILENCE_S = 1.0             # never call a daemon lost sooner than this
MISSED_HEARTBEATS = 3           # the protocol: three missed intervals mean the daemon is gone
_BIN_S = 1.0                    # timeline resolution: one column per second
LAST_TRACKS = 5                 # finished tracks a stream's panel lists
MOOD_COURSE_S = 30 * 60.0       # the mood's course a venue page can draw: the last half hour
MOOD_SLICE_S = 5.0              # one point of that course per slice of this many seconds
# A point for every slice of the course, and a few more: a clock set back cannot grow it.
MOOD_POINTS = int(MOOD_COURSE_S / MOOD_SLICE_S) + 2

# What the dashboard keeps is bounded, whatever a feed without CURVE keys carries (anyone who
# reaches a proxy's frontend can publish there): at most MAX_STREAMS streams, each message
# kept at most MAX_KEPT_MESSAGE_BYTES on the wire, and MAX_KEPT_BYTES of views in all (bodies
# weighed at KEPT_WEIGHT times their wire bytes, timelines at what their lists take); past a
# bound the least recently heard streams are forgotten, and a page learns them again from
# their next message. Honest views are small: a 56-tag model's scores are 3 kB on the wire, a
# stream's five-minute timeline some 45 kB, so 1,024 streams weigh about 80 MB.
MAX_STREAMS = 4096
MAX_KEPT_MESSAGE_BYTES = 64 * 1024  # a model of about 1,000 tags
MAX_KEPT_BYTES = 256 * 1024 * 1024
KEPT_WEIGHT = 4  # a decoded body takes some 4 times its JSON in memory
_VIEW_WEIGHT = 2048  # a view's dict, deques and numbers
_BIN_WEIGHT = 160  # a timeline bin: its lists and start time, before its tags (8 bytes each)
_MOOD_WEIGHT = 120  # a point of the mood's course
# A page's hello is sent in pieces of about this many bytes, each made as it is sent.
HELLO_PIECE_BYTES = 256 * 1024

log = logging.getLogger(__name__)


def _blank_stream(stream: str) -> dict[str, Any]:
    return {"id": stream, "session": None, "model": None, "tags": [], "smoothed": [],
            "active": [], "thresholds": None, "status": None, "updated_at": None,
            "gaps": 0, "restarted_at": None, "history": deque(), "tracks": [],
            "audio": None, "mood": None, "moods": deque(maxlen=MOOD_POINTS),
            "silence": None, "content": None}


def carries_tags(content: str | None) -> bool:
    """Whether a window of this content shows its tags: music, or not known (a daemon
    without [content]); speech and dead air show none, whatever the window lists."""
    return content is None or content == MUSIC


class _Weight:
    """What one stream's view weighs (FeedState's bounds): its latest body of each type and
    its tracks by their wire bytes, its timelines by their bins and the tags in them."""

    __slots__ = ("bodies", "tracks", "history")

    def __init__(self) -> None:
        self.bodies: dict[str, int] = {}
        self.tracks: deque[int] = deque(maxlen=LAST_TRACKS)
        self.history = 0

    def total(self) -> int:
        return (KEPT_WEIGHT * (sum(self.bodies.values()) + sum(self.tracks)) + self.history
                + _VIEW_WEIGHT)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _bin_weight(tags: list[str]) -> int:
    return _BIN_WEIGHT + 8 * len(tags)


def _reset(view: dict[str, Any]) -> None:
    """Forget a stream's state but keep its timelines (tags and mood), last tracks and loss
    count."""
    view.update({k: v for k, v in _blank_stream(view["id"]).items()
                 if k not in ("history", "gaps", "tracks", "moods")})


def _rounded(value: Any) -> float | None:
    # Three decimals are more than a colour shows, and keep a page's hello small.
    return round(float(value), 3) if isinstance(value, (int, float)) else None


def _add_tracks(view: dict[str, Any], tracks: Iterable[Mapping[str, Any]]) -> None:
    view["tracks"] = [*view["tracks"], *(dict(t) for t in tracks)][-LAST_TRACKS:]


class FeedState:
    """The dashboard's picture of the feed, updated message by message.

    Times are this process's wall clock (`clock`), so a page can draw every stream's timeline
    on one axis whatever the daemons' clocks say; liveness uses `monotonic`.
    """

    def __init__(self, endpoints: Sequence[str], control: str | None = None, *,
                 history_s: float = DEFAULT_HISTORY_S,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        if history_s <= 0:
            raise ValueError(f"history_s must be > 0, got {history_s!r}")
        self.endpoints = list(endpoints)
        self.control = control
        self.history_s = float(history_s)
        # stream -> its view, the least recently heard first
        self.streams: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._weights: dict[str, _Weight] = {}
        self.kept_bytes = 0       # what the views weigh together (MAX_KEPT_BYTES)
        self.oversized = 0        # messages too big to keep, neither kept nor forwarded
        self.forgotten = 0        # streams forgotten to keep within the bounds
        self.snapshot_sessions: set[str] = set()   # daemon sessions a snapshot was taken of
        self.thresholds: dict[str, list[float]] = {}  # model hash -> per-tag thresholds
        self._clock = clock
        self._monotonic = monotonic
        self._last_seen: float | None = None        # monotonic time of the last message
        self._last_heartbeat: dict[str, float] = {}  # session -> monotonic arrival
        self._intervals: deque[float] = deque(maxlen=8)
        self.heartbeat_session: str | None = None

    # -- messages

    def apply_message(self, message: Mapping[str, Any],
                      size: int = 0) -> dict[str, Any] | None:
        """Apply one received message (ReceivedMessage.to_dict(), and its bytes on the wire,
        `size` or the dict's "size" as FeedThread gives it); returns what to forward, or None
        for a message too big to keep."""
        now = self._clock()
        self._last_seen = self._monotonic()
        if "size" in message:  # as FeedThread hands it on: not for the page
            size = size or int(message["size"])
            message = {k: v for k, v in message.items() if k != "size"}
        header, body = message["header"], message["body"]
        msg_type = header["msg_type"]
        if size > MAX_KEPT_MESSAGE_BYTES and msg_type != MsgType.HEARTBEAT:
            self.oversized += 1
            if self.oversized == 1:
                log.warning("a %s message of stream %s is %d bytes, over the %d the dashboard "
                            "keeps: not kept nor shown (no model an honest daemon serves comes "
                            "near; a feed without CURVE keys can be forged). Further ones are "
                            "counted in /healthz, not logged", msg_type, header["stream"],
                            size, MAX_KEPT_MESSAGE_BYTES)
            return None
        if msg_type == MsgType.HEARTBEAT:
            self._heartbeat(header["session"])
        else:
            stream = header["stream"]
            view = self._stream(stream)
            weight = self._weights[stream]
            if message.get("restarted") or view["session"] not in (None, header["session"]):
                # A new daemon session: tag states start again, all off (the protocol says so).
                _reset(view)
                view["restarted_at"] = now
            view["session"] = header["session"]
            view["gaps"] += int(message.get("gap", 0))
            before = weight.total()
            match msg_type:
                case MsgType.SCORES:
                    self._scores(view, body, now)
                    weight.bodies[msg_type] = size
                case MsgType.EVENT:
                    self._event(view, body)
                case MsgType.STATUS:
                    view["status"] = dict(body)
                    weight.bodies[msg_type] = size
                case MsgType.TRACK:
                    _add_tracks(view, [body])
                    weight.tracks.append(size)
                case MsgType.SILENCE:
                    view["silence"] = self._silence(body, now)
            weight.history = (sum(_bin_weight(tags) for _, tags in view["history"])
                              + _MOOD_WEIGHT * len(view["moods"]))
            self._weigh(stream, weight.total() - before)
        return {"type": "message", "received_at": now, "message": dict(message)}

    def _weigh(self, stream: str, change: int) -> None:
        """Adds a view's change of weight; forgets the least recently heard other streams
        while the views weigh more than MAX_KEPT_BYTES."""
        self.kept_bytes += change
        while self.kept_bytes > MAX_KEPT_BYTES and len(self.streams) > 1:
            oldest = next(iter(self.streams))
            if oldest == stream:  # heard just now: the next oldest goes
                self.streams.move_to_end(stream)
                continue
            self._forget(oldest, "the dashboard's views would weigh more than "
                                 f"{MAX_KEPT_BYTES // (1024 * 1024)} MiB")

    def _forget(self, stream: str, why: str) -> None:
        self.streams.pop(stream)
        self.kept_bytes -= self._weights.pop(stream).total()
        self.forgotten += 1
        if self.forgotten == 1:
            log.warning("forgot stream %s, the least recently heard: %s (a feed without CURVE "
                        "keys can be forged); a stream forgotten is shown again from its next "
                        "message. Further ones are counted in /healthz, not logged", stream,
                        why)

    def _heartbeat(self, session: str) -> None:
        arrival = self._monotonic()
        last = self._last_heartbeat.get(session)
        if last is not None:
            self._intervals.append(arrival - last)
        self._last_heartbeat[session] = arrival
        self.heartbeat_session = session

    def _scores(self, view: dict[str, Any], body: Mapping[str, Any], now: float) -> None:
        model = body.get("model") or {}
        audio, mood = body.get("audio"), body.get("mood")  # since protocol 1.2; may be absent
        # The same tags as before keep the same strings, which the timeline's bins share.
        tags = view["tags"] if view["tags"] == body["tags"] else list(body["tags"])
        names = {tag: tag for tag in tags}
        content = body.get("content")  # since protocol 1.7
        content = content if content in CONTENT_KINDS else None
        view.update(tags=tags, smoothed=list(body["smoothed"]),
                    active=[names.get(tag, tag) for tag in body["active"]]
                    if carries_tags(content) else [], model=dict(model), content=content,
                    updated_at=now,
                    thresholds=self._thresholds_for(model.get("hash"), body["tags"]),
                    audio=dict(audio) if isinstance(audio, Mapping) else None,
                    mood=dict(mood) if isinstance(mood, Mapping) else None)
        self._record(view, now)
        self._record_mood(view, now)

    @staticmethod
    def _silence(body: Mapping[str, Any], now: float) -> dict[str, Any] | None:
        """A stream's silence (protocol 1.2): None once it ended; while on, when it began by
        this process's clock (the message arrives ``duration_s`` of audio after the start)."""
        if body.get("state") != "on":
            return None
        duration = body.get("duration_s")
        duration = float(duration) if isinstance(duration, (int, float)) else 0.0
        return {"since": now - max(0.0, duration), "start_s": body.get("start_s"),
                "threshold_dbfs": body.get("threshold_dbfs"),
                "cause": "tone" if body.get("cause") == "tone" else "silence"}

    @staticmethod
    def _event(view: dict[str, Any], body: Mapping[str, Any]) -> None:
        # Events are folded into the active set so a page shows a change at once, before the
        # next scores message confirms it.
        active = [t for t in view["active"] if t != body["tag"]]
        if body["state"] == "on" and carries_tags(view["content"]):
            active.append(body["tag"])
        view["active"] = active

    def _record(self, view: dict[str, Any], now: float) -> None:
        history: deque = view["history"]
        start = math.floor(now / _BIN_S) * _BIN_S
        if history and history[-1][0] == start:
            merged = set(history[-1][1]) | set(view["active"])
            history[-1][1] = [t for t in view["tags"] if t in merged]
        else:
            history.append([start, list(view["active"])])
        while history and history[0][0] < now - self.history_s - _BIN_S:
            history.popleft()

    def _record_mood(self, view: dict[str, Any], now: float) -> None:
        """One point of the mood's course per slice, the slice's last mood:
        ``[slice start (wall clock), valence, arousal, energy or None, first word or None]``."""
        mood = view["mood"]
        if mood is None:
            return
        audio = view["audio"] or {}
        words = mood.get("words") or []
        start = math.floor(now / MOOD_SLICE_S) * MOOD_SLICE_S
        point = [start, _rounded(mood.get("valence")), _rounded(mood.get("arousal")),
                 _rounded(audio.get("energy")), words[0] if words else None]
        moods: deque = view["moods"]
        if moods and moods[-1][0] == start:
            moods[-1] = point
        else:
            moods.append(point)
        while moods and moods[0][0] < now - MOOD_COURSE_S - MOOD_SLICE_S:
            moods.popleft()

    # -- control replies

    def apply_snapshot(self, snapshot: Mapping[str, Any],
                       status: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Apply a control `snapshot` reply (and optionally a `status` reply).

        A stream already seen live in the snapshot's session keeps its live state: the live
        messages are at least as new. Returns the message to forward, or None if nothing
        changed.
        """
        session = snapshot.get("session")
        if isinstance(session, str):
            self.snapshot_sessions.add(session)
        # `run --processes`: each worker's session, and each stream's own
        sessions = snapshot.get("sessions")
        if isinstance(sessions, list):
            self.snapshot_sessions.update(s for s in sessions if isinstance(s, str))
        model = snapshot.get("model") if isinstance(snapshot.get("model"), Mapping) else {}
        if isinstance(model.get("hash"), str) and isinstance(model.get("thresholds"), list):
            self.thresholds[model["hash"]] = list(model["thresholds"])
        now = self._clock()
        changed: dict[str, dict[str, Any]] = {}
        states = (status or {}).get("streams") or {}
        for stream, snap in (snapshot.get("streams") or {}).items():
            own = snap.get("session")
            stream_session = own if isinstance(own, str) else session
            view = self.streams.get(stream)
            if view is not None and view["session"] == stream_session and view["updated_at"]:
                # live already, and as new: only what the snapshot alone says, the thresholds
                # (pages take them from views; live scores that came first had none to carry)
                thresholds = self._thresholds_for((view["model"] or {}).get("hash"),
                                                  view["tags"])
                if thresholds is not None and thresholds != view["thresholds"]:
                    view["thresholds"] = thresholds
                    changed[stream] = self.view(stream)
                continue
            if view is None:
                view = self._stream(stream)
            elif view["session"] != stream_session:
                _reset(view)
            view.update(session=stream_session, tags=list(snap.get("tags", [])),
                        smoothed=list(snap.get("smoothed", [])),
                        active=list(snap.get("active", [])),
                        model={"name": model.get("name"), "hash": model.get("hash")},
                        thresholds=self._thresholds_for(model.get("hash"), snap.get("tags")))
            silence = snap.get("silence")  # since protocol 1.2: the silence under way
            view["silence"] = (self._silence({**silence, "state": "on"}, now)
                               if isinstance(silence, Mapping) else None)
            state = states.get(stream)
            if isinstance(state, Mapping) and view["status"] is None:
                view["status"] = {k: state.get(k) for k in
                                  ("state", "error", "title", "source", "counters",
                                   "station")}
            if isinstance(state, Mapping) and not view["tracks"]:
                _add_tracks(view, [t for t in state.get("tracks") or []
                                   if isinstance(t, Mapping)])
            self._record(view, now)
            changed[stream] = self.view(stream)
        # Streams with a state but no scores to snapshot (a source that failed, or never got
        # audio, before this bridge heard the feed): known by their state.
        for stream, state in states.items():
            if stream in changed or not isinstance(state, Mapping) or not isinstance(stream, str):
                continue
            view = self.streams.get(stream)
            if view is None:
                view = self._stream(stream)
                view["session"] = session
            if view["status"] is not None:
                continue
            view["status"] = {k: state.get(k) for k in
                              ("state", "error", "title", "source", "counters", "station")}
            changed[stream] = self.view(stream)
        if not changed:
            return None
        return {"type": "snapshot", "received_at": now, "session": session, "streams": changed}

    def _thresholds_for(self, model_hash: Any, tags: Any) -> list[float] | None:
        thresholds = self.thresholds.get(model_hash) if isinstance(model_hash, str) else None
        if thresholds is None or not isinstance(tags, list) or len(tags) != len(thresholds):
            return None
        return thresholds

    # -- what a page gets

    def _stream(self, stream: str) -> dict[str, Any]:
        """A stream's view, the most recently heard now; a new one forgets the least
        recently heard past MAX_STREAMS."""
        view = self.streams.get(stream)
        if view is None:
            if len(self.streams) >= MAX_STREAMS:
                self._forget(next(iter(self.streams)),
                             f"the dashboard keeps at most {MAX_STREAMS} streams")
            view = self.streams[stream] = _blank_stream(stream)
            weight = self._weights[stream] = _Weight()
            self.kept_bytes += weight.total()
        else:
            self.streams.move_to_end(stream)
        return view

    def view(self, stream: str) -> dict[str, Any]:
        view = self.streams[stream]
        return {**view, "history": [list(entry) for entry in view["history"]],
                "moods": [list(point) for point in view["moods"]]}

    def liveness(self) -> dict[str, Any]:
        """Whether the daemon is heard from: seen, seconds since, and the limit used."""
        interval = (statistics.median(self._intervals) if self._intervals
                    else DEFAULT_HEARTBEAT_S)
        timeout_s = max(MISSED_HEARTBEATS * interval, MIN_SILENCE_S)
        age_s = None if self._last_seen is None else self._monotonic() - self._last_seen
        return {"seen": age_s is not None, "age_s": age_s, "timeout_s": timeout_s,
                "alive": age_s is not None and age_s <= timeout_s,
                "session": self.heartbeat_session}

    def tick(self) -> dict[str, Any]:
        return {"type": "tick", "now": self._clock(), "daemon": self.liveness()}

    def hello(self) -> dict[str, Any]:
        """Everything a page needs to draw at once."""
        return {"type": "hello", "now": self._clock(), "feed": self.endpoints,
                "control": self.control, "history_s": self.history_s,
                "daemon": self.liveness(),
                "streams": {stream: self.view(stream) for stream in sorted(self.streams)}}

    def hello_pieces(self, piece_bytes: int | None = None) -> Iterator[str]:
        """The hello as JSON texts of about `piece_bytes` each, so that none is built whole
        on the event loop: the hello with the first streams' views, then ``{"type":
        "streams", "streams": {...}, "more": bool}`` for the rest (the hello's ``more`` says
        whether any follow). Each piece's views are taken when it is made, so messages sent
        before it are already in it; the page sets aside messages until the last piece."""
        head = {"type": "hello", "now": self._clock(), "feed": self.endpoints,
                "control": self.control, "history_s": self.history_s,
                "daemon": self.liveness()}
        piece_bytes = HELLO_PIECE_BYTES if piece_bytes is None else piece_bytes
        pending = deque(sorted(self.streams))
        first = True
        while first or pending:
            parts: list[str] = []
            size = 0
            while pending and size < piece_bytes:
                stream = pending.popleft()
                if stream in self.streams:  # else forgotten since the hello began
                    parts.append(f"{_dumps(stream)}:{_dumps(self.view(stream))}")
                    size += len(parts[-1])
            fields = _dumps({**head, "more": bool(pending)}) if first else \
                f'{{"more":{_dumps(bool(pending))},"type":"streams"}}'
            yield f'{fields[:-1]},"streams":{{{",".join(parts)}}}}}'
            first = False


class FeedThread:
    """Runs a Subscriber in a background thread, calling `deliver(message_dict)` per message
    (its ``to_dict()``, and its bytes on the wire as ``"size"``).

    ZeroMQ reconnects the SUB socket by itself, so a restarted daemon on the same endpoint is
    picked up without help; the Subscriber marks its first messages `restarted`.
    curve: this client's CURVE keys and the server's, for a daemon (or proxy) with keys.
    """

    def __init__(self, endpoints: str | Iterable[str],
                 deliver: Callable[[dict[str, Any]], None], *, poll_ms: int = 200,
                 curve: ClientCurve | None = None):
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self._deliver = deliver
        self._curve = curve
        self._poll_ms = poll_ms
        self._worker = ReadyThread(self._run, "streamtag-dashboard-feed")

    def start(self, timeout_s: float = 5.0) -> FeedThread:
        """Start; returns once subscribed (raises what the Subscriber raised, e.g. OSError)."""
        self._worker.start(timeout_s, "the feed subscriber did not start")
        return self

    def stop(self, timeout_s: float = 2.0) -> bool:
        return self._worker.stop(timeout_s)

    def _run(self) -> None:
        try:
            subscriber = Subscriber(self.endpoints, curve=self._curve)
        except (OSError, ValueError) as exc:
            self._worker.error = exc
            self._worker.ready.set()
            return
        self._worker.ready.set()
        with subscriber:
            while not self._worker.stopping.is_set():
                message = subscriber.recv(self._poll_ms)
                if message is not None:
                    self._deliver({**message.to_dict(), "size": message.size})
