"""The streamtag wire protocol: the only module that knows the bytes on the wire.

docs/protocol.md is the authoritative description and carries the same PROTOCOL_VERSION; this
module implements it. A logical `Message` (a `Header` and a typed body) is kept apart from its
frames: `encode` and `decode` are pure functions between the two, and sockets live elsewhere
(publisher.py, subscriber.py). Every check a reader makes is also made when a message is built, so a
publisher cannot put on the wire what a subscriber would refuse.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from json.encoder import encode_basestring as _json_str  # json.dumps' str, non-ASCII kept
from numbers import Integral
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import orjson

from streamtag import _core, values
from streamtag.engine.tracks import TRACK_ACTIVE_SHARE
from streamtag.errors import ProtocolError

PROTOCOL_VERSION = "1.10"
# Majors this code reads. A reader accepts any minor of these: minors only add.
READABLE_MAJORS = (int(PROTOCOL_VERSION.split(".")[0]),)


class MsgType(StrEnum):
    """The message types. A consumer dispatches on a message with one ``match``: on its body's
    class where it holds a decoded `Message` (``case ScoresBody():``), on this where it holds
    the message's JSON (``match header["msg_type"]: case MsgType.SCORES:``)."""

    SCORES = "scores"
    EVENT = "event"
    STATUS = "status"
    HEARTBEAT = "heartbeat"
    TRACK = "track"  # since 1.1
    SILENCE = "silence"  # since 1.2


# The same as plain strings, which headers carry and the writers' fast paths expect.
SCORES, EVENT, STATUS = MsgType.SCORES.value, MsgType.EVENT.value, MsgType.STATUS.value
HEARTBEAT, TRACK, SILENCE = MsgType.HEARTBEAT.value, MsgType.TRACK.value, MsgType.SILENCE.value
MSG_TYPES = (SCORES, EVENT, STATUS, HEARTBEAT, TRACK, SILENCE)
STREAM_MSG_TYPES = (SCORES, EVENT, STATUS, TRACK, SILENCE)

EVENT_STATES = ("on", "off")
SILENCE_CAUSES = ("silence", "tone")  # what a silence message's dead air is made of
# what a window's audio is (since 1.7), as streamtag.engine.content decides it
CONTENT_KINDS = ("music", "speech", "silence", "tone", "noise")
STATUS_STATES = ("starting", "running", "reconnecting", "ended", "failed")
DOWN_STATES = ("reconnecting", "failed")  # the source is down: no audio comes
TRACK_REASONS = ("title_change", "end")
STREAM_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
MAX_ID_LENGTH = 128  # msg_id and session are opaque to readers, within this length

# Bounds of what a reader takes (docs/protocol.md, "Bounds"), far above any honest message: a
# peer that can reach a publisher's or a proxy's socket can send anything, and a reader must
# neither hold nor store nor show without end what it sends.
MAX_FRAME_BYTES = 4 * 1024 * 1024  # any frame a socket takes (ZeroMQ MAXMSGSIZE)
# Tighter caps per frame, checked before its JSON is parsed: what the largest honest frame of
# each kind needs, with room (docs/protocol.md, Bounds), so a forged one costs a reader little
# to hold, parse (about 25 times a frame's size for a moment) and keep.
MAX_HEADER_BYTES = 4 * 1024  # seven short fields: about 250 bytes
MAX_BODY_BYTES = {
    "scores": 1024 * 1024,  # 4096 tags of 64 characters, all active: about 0.62 MB
    "track": 1024 * 1024,   # the same tags, three means each: about 0.66 MB
    "status": 256 * 1024,   # error and source at 16384 characters, title and station at 4096
    "event": 32 * 1024,     # one tag name of 4096 characters
    "silence": 4 * 1024,    # numbers and two words: about 250 bytes
    "heartbeat": 4 * 1024,  # two numbers
}
MAX_TOPIC_BYTES = 256  # a topic is at most "heartbeat" or a type, ".", a 128-character id
MAX_INTEGER = 2**63 - 1  # seq, sample indices, windows, counters: what an int64 column holds
MAX_STREAM_COUNT = 2**31 - 1  # a heartbeat's streams: the recorder's 32-bit column
MAX_TAGS = 4096  # tag names of one model, so also every per-tag array and list of tags
MAX_TEXT_LENGTH = 4096  # characters of a title, a tag name, a model name or hash, a counter name
MAX_DETAIL_LENGTH = 16384  # characters of a status error or source: they hold paths and URLs
MAX_COUNTERS = 1024  # entries of a status's counters
MAX_REQUEST_BYTES = 64 * 1024  # a control request frame
MAX_REPLY_BYTES = 64 * 1024 * 1024  # a control reply frame: a status reply lists every stream
MAX_MOOD_WORDS = 4  # a mood's words (a display shows one or two)
MAX_MOOD_GENRES = 8  # the genre tags a mood names
MIN_DBFS = -120.0  # the floor of a level: digital silence
# A loudness reading's range: digital silence's floor, and what a float sample can carry
MIN_LUFS, MAX_LUFS = -120.0, 800.0

_STREAM_ID = re.compile(STREAM_ID_PATTERN)
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")


def validate_stream_id(stream: Any) -> str:
    """Return `stream` if it is a valid stream id, else raise ProtocolError saying what is."""
    if not isinstance(stream, str) or not _STREAM_ID.fullmatch(stream):
        raise ProtocolError(f"invalid stream id {values.show(stream)}: use 1 to 128 of the "
                            "characters A-Z a-z 0-9 _ . : -")
    return stream


def parse_version(version: Any) -> tuple[int, int]:
    """(major, minor) of a protocol version string such as "1.0"; ProtocolError otherwise."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ProtocolError(f"header version must be a string MAJOR.MINOR such as "
                            f"{PROTOCOL_VERSION!r}, got {values.show(version)}")
    major, minor = version.split(".")
    return int(major), int(minor)


def check_version(version: Any) -> str:
    """Return `version` if this code reads it (a known major, any minor), else ProtocolError."""
    major, _ = parse_version(version)  # so a string
    if major not in READABLE_MAJORS:
        readable = ", ".join(str(m) for m in READABLE_MAJORS)
        raise ProtocolError(f"protocol version {version} is not supported: this reader reads "
                            f"major version {readable} (it speaks {PROTOCOL_VERSION}); upgrade "
                            "the subscriber or run a daemon that speaks that major version")
    return str(version)


def topic_for(msg_type: str, stream: str) -> str:
    """The topic frame of a message: ``<msg_type>.<stream>``, or ``heartbeat``."""
    return HEARTBEAT if msg_type == HEARTBEAT else f"{msg_type}.{stream}"


def subscription_prefix(msg_type: str, stream: str | None = None) -> bytes:
    """The ZeroMQ subscription prefix for one message type, for one stream or all of them.

    Prefix matching is by bytes, so ``scores.radio1`` also matches ``scores.radio10``: a
    subscriber to one stream must still compare the header's stream (subscriber.py does).
    """
    values.choice(msg_type, "message type", ProtocolError, MSG_TYPES)
    if msg_type == HEARTBEAT:
        return HEARTBEAT.encode()
    if stream is None:
        return f"{msg_type}.".encode()
    return topic_for(msg_type, validate_stream_id(stream)).encode()


def new_session_id() -> str:
    """A fresh session id; one per daemon start, so receivers can tell a restart."""
    return uuid.uuid4().hex


def new_msg_id() -> str:
    """A random UUID4 as 32 hex digits. The bits come from the random module (seeded by the
    OS, reseeded after a fork): an id need only be unique, and uuid4's system call for every
    message cost more than the rest of the header."""
    bits = random.getrandbits(128)
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)  # the RFC 4122 variant
    bits = (bits & ~(0xF000 << 64)) | (4 << 76)  # version 4
    return f"{bits:032x}"


def tag_names(names: Any, where: str) -> tuple[str, ...]:
    """An array of tag names: at most MAX_TAGS, none empty or longer than MAX_TEXT_LENGTH."""
    return values.texts(names, where, ProtocolError, empty=False, longest=MAX_TEXT_LENGTH,
                        most=MAX_TAGS)


# ---------------------------------------------------------------- logical message

class _Part:
    """Shared dict conversion of the header and the bodies (their fields are the wire fields)."""

    _what: ClassVar[str] = "part"
    # Fields added by a later minor that are left out of the bytes when None, so a message
    # without them is the same bytes an older writer wrote.
    _omitted_when_none: ClassVar[tuple[str, ...]] = ()
    # Field name -> default (MISSING when required), in wire order; set by _register below,
    # once per class, so that encode and decode need not call dataclasses.fields each time.
    _defaults: ClassVar[dict[str, Any]]

    @classmethod
    def _register(cls) -> None:
        cls._defaults = {f.name: f.default
                         for f in fields(cls)}  # type: ignore[arg-type]  # each part is a dataclass

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Build from a decoded JSON object; unknown keys are ignored, missing ones an error."""
        if not isinstance(data, Mapping):
            raise ProtocolError(f"{cls._what} must be a JSON object, got {values.kind(data)}")
        given = {}
        for name, default in cls._defaults.items():
            if name in data:
                given[name] = data[name]
            elif default is not MISSING:
                given[name] = default
            else:
                raise ProtocolError(f"{cls._what} is missing the field {name!r}")
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for name in self._defaults:
            value = getattr(self, name)
            if value is None and name in self._omitted_when_none:
                continue
            if type(value) is tuple:
                value = list(value)
            elif type(value) in (ModelRef, AudioLevel, Mood):
                value = value.to_dict()
            elif type(value) is dict:
                value = dict(value)
            out[name] = value
        return out


@dataclass(frozen=True)
class Header(_Part):
    """The header every message carries (frame 2 on the wire)."""

    version: str
    msg_type: str
    msg_id: str
    session: str
    stream: str
    seq: int
    sent_at: float

    _what: ClassVar[str] = "header"

    def __post_init__(self) -> None:
        check_version(self.version)
        values.choice(self.msg_type, "header msg_type", ProtocolError, MSG_TYPES)
        for name in ("msg_id", "session"):
            value = values.text(getattr(self, name), f"header {name}", ProtocolError, empty=False)
            if len(value) > MAX_ID_LENGTH:
                raise ProtocolError(f"header {name} is longer than {MAX_ID_LENGTH} characters")
        if self.msg_type == HEARTBEAT:
            if self.stream != "":
                raise ProtocolError(f"a heartbeat's header stream must be \"\", "
                                    f"got {values.show(self.stream)}")
        else:
            validate_stream_id(self.stream)
        values.set_field(self, "seq", values.integer(self.seq, "header seq", ProtocolError,
                                                     minimum=0, maximum=MAX_INTEGER))
        values.set_field(self, "sent_at",
                         values.number(self.sent_at, "header sent_at", ProtocolError, minimum=0))

    @property
    def major(self) -> int:
        return parse_version(self.version)[0]


HEADER_FIELDS = tuple(f.name for f in fields(Header))


@dataclass(frozen=True)
class ModelRef:
    """Which model produced a scores message: its name and content hash."""

    name: str
    hash: str

    def __post_init__(self) -> None:
        values.text(self.name, "model name", ProtocolError, longest=MAX_TEXT_LENGTH)
        values.text(self.hash, "model hash", ProtocolError, longest=MAX_TEXT_LENGTH)

    @classmethod
    def coerce(cls, value: Any, what: str = "scores model") -> ModelRef:
        if isinstance(value, ModelRef):
            return value
        if not isinstance(value, Mapping):
            raise ProtocolError(f"{what} must be an object {{name, hash}}, got "
                                f"{values.kind(value)}")
        for key in ("name", "hash"):
            if key not in value:
                raise ProtocolError(f"{what} is missing the field {key!r}")
        return cls(value["name"], value["hash"])

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "hash": self.hash}


def _object_fields(cls: type, value: Any, what: str) -> dict[str, Any]:
    """The fields of a small JSON object (unknown keys ignored, missing ones an error)."""
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{what} must be a JSON object, got {values.kind(value)}")
    given = {}
    for f in fields(cls):
        if f.name in value:
            given[f.name] = value[f.name]
        elif f.default is MISSING:
            raise ProtocolError(f"{what} is missing the field {f.name!r}")
    return given


@dataclass(frozen=True)
class AudioLevel:
    """The level and liveliness of a window's audio (protocol 1.2): RMS and peak in dBFS (a
    full-scale square wave is 0 dBFS, a full-scale sine -3.01 dBFS RMS; digital silence is
    MIN_DBFS), samples at full scale, onsets per second, and the energy (0 to 1) made of them;
    since 1.3, where the daemon measures it, EBU R128 momentary and short-term loudness in LUFS
    (left out when None)."""

    rms_dbfs: float
    peak_dbfs: float
    clipped: int
    onset_rate_hz: float
    energy: float
    momentary_lufs: float | None = None  # since 1.3
    short_term_lufs: float | None = None  # since 1.3

    def __post_init__(self) -> None:
        for name in ("rms_dbfs", "peak_dbfs"):
            values.set_field(self, name, values.number(getattr(self, name), f"scores audio "
                                                       f"{name}", ProtocolError,
                                                       minimum=MIN_DBFS))
        values.set_field(self, "clipped", values.integer(self.clipped, "scores audio clipped",
                                                         ProtocolError, minimum=0,
                                                         maximum=MAX_INTEGER))
        values.set_field(self, "onset_rate_hz", values.number(
            self.onset_rate_hz, "scores audio onset_rate_hz", ProtocolError, minimum=0))
        values.set_field(self, "energy", values.number(self.energy, "scores audio energy",
                                                       ProtocolError, minimum=0, maximum=1))
        for name in ("momentary_lufs", "short_term_lufs"):
            if getattr(self, name) is not None:
                values.set_field(self, name, values.number(
                    getattr(self, name), f"scores audio {name}", ProtocolError,
                    minimum=MIN_LUFS, maximum=MAX_LUFS))

    @classmethod
    def coerce(cls, value: Any) -> AudioLevel:
        if isinstance(value, AudioLevel):
            return value
        return cls(**_object_fields(cls, value, "scores audio"))

    def to_dict(self) -> dict[str, Any]:
        out = {"clipped": self.clipped, "energy": self.energy,
               "onset_rate_hz": self.onset_rate_hz, "peak_dbfs": self.peak_dbfs,
               "rms_dbfs": self.rms_dbfs}
        if self.momentary_lufs is not None:
            out["momentary_lufs"] = self.momentary_lufs
        if self.short_term_lufs is not None:
            out["short_term_lufs"] = self.short_term_lufs
        return out


@dataclass(frozen=True)
class Mood:
    """The mood of the music at a window (protocol 1.2): one or two words to show, the point
    on the valence/arousal plane (each -1 to 1) they were chosen by, the audio time the words
    have held since, and the active genre tags, strongest first. No words: nothing to judge
    (silence, or a model with no mood-bearing tags)."""

    words: tuple[str, ...]
    valence: float
    arousal: float
    since_s: float
    genres: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values.set_field(self, "words", values.texts(self.words, "scores mood words",
                                                     ProtocolError, empty=False,
                                                     longest=MAX_TEXT_LENGTH,
                                                     most=MAX_MOOD_WORDS))
        for name in ("valence", "arousal"):
            values.set_field(self, name, values.number(getattr(self, name), f"scores mood "
                                                       f"{name}", ProtocolError, minimum=-1,
                                                       maximum=1))
        values.set_field(self, "since_s", values.number(self.since_s, "scores mood since_s",
                                                        ProtocolError, minimum=0))
        values.set_field(self, "genres", values.texts(self.genres, "scores mood genres",
                                                      ProtocolError, empty=False,
                                                      longest=MAX_TEXT_LENGTH,
                                                      most=MAX_MOOD_GENRES))

    @classmethod
    def coerce(cls, value: Any) -> Mood:
        if isinstance(value, Mood):
            return value
        return cls(**_object_fields(cls, value, "scores mood"))

    def to_dict(self) -> dict[str, Any]:
        return {"arousal": self.arousal, "genres": list(self.genres), "since_s": self.since_s,
                "valence": self.valence, "words": list(self.words)}


@dataclass(frozen=True)
class ScoresBody(_Part):
    """Per-tag scores of one window of audio: samples [start_sample, end_sample)."""

    start_s: float
    end_s: float
    start_sample: int
    end_sample: int
    tags: tuple[str, ...]
    raw: tuple[float, ...]
    smoothed: tuple[float, ...]
    active: tuple[str, ...]
    model: ModelRef
    latency_ms: float
    audio: AudioLevel | None = None  # since 1.2
    mood: Mood | None = None  # since 1.2
    content: str | None = None  # since 1.7: one of CONTENT_KINDS, left out when None

    msg_type: ClassVar[str] = SCORES
    _what: ClassVar[str] = "scores body"
    _omitted_when_none: ClassVar[tuple[str, ...]] = ("audio", "mood", "content")

    def __post_init__(self) -> None:
        values.set_field(self, "start_s", values.number(self.start_s, "scores start_s",
                                                        ProtocolError, minimum=0))
        values.set_field(self, "end_s", values.number(self.end_s, "scores end_s", ProtocolError,
                                                      minimum=self.start_s))
        values.set_field(self, "start_sample", values.integer(
            self.start_sample, "scores start_sample", ProtocolError, minimum=0,
            maximum=MAX_INTEGER))
        values.set_field(self, "end_sample", values.integer(
            self.end_sample, "scores end_sample", ProtocolError, minimum=self.start_sample,
            maximum=MAX_INTEGER))
        values.set_field(self, "tags", tag_names(self.tags, "scores tags"))
        if len(set(self.tags)) != len(self.tags):
            raise ProtocolError("scores tags must not repeat a name")
        for name in ("raw", "smoothed"):
            checked = values.numbers(getattr(self, name), f"scores {name}", ProtocolError,
                                     most=MAX_TAGS)
            if len(checked) != len(self.tags):
                raise ProtocolError(f"scores {name} has {len(checked)} values for "
                                    f"{len(self.tags)} tags; they must match one to one")
            values.set_field(self, name, checked)
        values.set_field(self, "active", tag_names(self.active, "scores active"))
        unknown = set(self.active) - set(self.tags)
        if unknown:
            raise ProtocolError(f"scores active names tags not in tags: {sorted(unknown)}")
        values.set_field(self, "model", ModelRef.coerce(self.model))
        values.set_field(self, "latency_ms", values.number(self.latency_ms, "scores latency_ms",
                                                           ProtocolError))
        if self.audio is not None:
            values.set_field(self, "audio", AudioLevel.coerce(self.audio))
        if self.mood is not None:
            values.set_field(self, "mood", Mood.coerce(self.mood))
        if self.content is not None:
            values.choice(self.content, "scores content", ProtocolError, CONTENT_KINDS)


@dataclass(frozen=True)
class EventBody(_Part):
    """A tag turned on or off at an audio time."""

    tag: str
    state: str
    score: float
    time_s: float
    sample: int

    msg_type: ClassVar[str] = EVENT
    _what: ClassVar[str] = "event body"

    def __post_init__(self) -> None:
        values.text(self.tag, "event tag", ProtocolError, empty=False, longest=MAX_TEXT_LENGTH)
        values.choice(self.state, "event state", ProtocolError, EVENT_STATES)
        values.set_field(self, "score", values.number(self.score, "event score", ProtocolError))
        values.set_field(self, "time_s",
                         values.number(self.time_s, "event time_s", ProtocolError, minimum=0))
        values.set_field(self, "sample",
                         values.integer(self.sample, "event sample", ProtocolError, minimum=0,
                                        maximum=MAX_INTEGER))


def _optional_flag(value: Any, where: str) -> None:
    if value is not None:
        values.boolean(value, where, ProtocolError)


@dataclass(frozen=True)
class StatusBody(_Part):
    """The state of one stream's source, sent on every change."""

    state: str
    error: str | None = None
    counters: Mapping[str, int | float] | None = None
    title: str | None = None
    source: str | None = None
    station: str | None = None  # since 1.2: the station's name (icy-name), left out when None
    # since 1.5: whether the track `title` names was heard from its start, where the source
    # knows (an Ogg link's first page tells; MP3 does not): left out when not known
    heard_from_start: bool | None = None

    msg_type: ClassVar[str] = STATUS
    _what: ClassVar[str] = "status body"
    _omitted_when_none: ClassVar[tuple[str, ...]] = ("station", "heard_from_start")

    def __post_init__(self) -> None:
        values.choice(self.state, "status state", ProtocolError, STATUS_STATES)
        _optional_flag(self.heard_from_start, "status heard_from_start")
        for name, longest in (("error", MAX_DETAIL_LENGTH), ("title", MAX_TEXT_LENGTH),
                              ("source", MAX_DETAIL_LENGTH), ("station", MAX_TEXT_LENGTH)):
            if getattr(self, name) is not None:
                values.text(getattr(self, name), f"status {name}", ProtocolError,
                            longest=longest)
        counters = {} if self.counters is None else self.counters
        if not isinstance(counters, Mapping):
            raise ProtocolError(f"status counters must be an object, got {values.kind(counters)}")
        if len(counters) > MAX_COUNTERS:
            raise values.too_many("status counters", ProtocolError, len(counters), MAX_COUNTERS)
        clean: dict[str, int | float] = {}
        for key, value in counters.items():
            values.text(key, "status counters key", ProtocolError, longest=MAX_TEXT_LENGTH)
            what = f"status counters[{values.show(key)}]"
            if isinstance(value, Integral) and not isinstance(value, bool):
                clean[key] = values.integer(value, what, ProtocolError, minimum=-MAX_INTEGER - 1,
                                            maximum=MAX_INTEGER)
            else:
                clean[key] = values.number(value, what, ProtocolError)
        values.set_field(self, "counters", clean)


@dataclass(frozen=True)
class HeartbeatBody(_Part):
    """The daemon is alive: its uptime and how many streams it serves; since 1.8, the seconds
    between its heartbeats (left out when None), so a reader knows when one is late."""

    uptime_s: float
    streams: int
    interval_s: float | None = None  # since 1.8

    msg_type: ClassVar[str] = HEARTBEAT
    _what: ClassVar[str] = "heartbeat body"
    _omitted_when_none: ClassVar[tuple[str, ...]] = ("interval_s",)

    def __post_init__(self) -> None:
        values.set_field(self, "uptime_s", values.number(self.uptime_s, "heartbeat uptime_s",
                                                         ProtocolError, minimum=0))
        values.set_field(self, "streams", values.integer(self.streams, "heartbeat streams",
                                                         ProtocolError, minimum=0,
                                                         maximum=MAX_STREAM_COUNT))
        if self.interval_s is not None:
            values.set_field(self, "interval_s", values.number(
                self.interval_s, "heartbeat interval_s", ProtocolError, positive=True))


@dataclass(frozen=True)
class TrackBody(_Part):
    """The summary of one track (protocol 1.1): the audio between two title changes.

    A track is [start_sample, end_sample) of the stream's audio; `reason` says what ended it.
    The means and active shares are over the `windows` windows of the track, one value per tag
    in the order of `tags`; a track too short for any window has no tags and no means.
    """

    title: str | None
    reason: str
    start_s: float
    end_s: float
    start_sample: int
    end_sample: int
    started_at: float
    ended_at: float
    windows: int
    tags: tuple[str, ...]
    mean_raw: tuple[float, ...]
    mean_smoothed: tuple[float, ...]
    active_share: tuple[float, ...]
    active: tuple[str, ...]
    model: ModelRef
    # since 1.5: whether the track's audio began at its start (False: listening began midway),
    # where the source knew; left out when not known
    heard_from_start: bool | None = None
    # since 1.10: EBU R128 integrated loudness (gated) of the track's own audio, where the
    # daemon measured it; left out otherwise
    loudness_lufs: float | None = None

    msg_type: ClassVar[str] = TRACK
    _what: ClassVar[str] = "track body"
    _omitted_when_none: ClassVar[tuple[str, ...]] = ("heard_from_start", "loudness_lufs")

    def __post_init__(self) -> None:
        _optional_flag(self.heard_from_start, "track heard_from_start")
        if self.loudness_lufs is not None:
            values.set_field(self, "loudness_lufs", values.number(
                self.loudness_lufs, "track loudness_lufs", ProtocolError, minimum=MIN_LUFS,
                maximum=MAX_LUFS))
        if self.title is not None:
            values.text(self.title, "track title", ProtocolError, longest=MAX_TEXT_LENGTH)
        values.choice(self.reason, "track reason", ProtocolError, TRACK_REASONS)
        values.set_field(self, "start_s", values.number(self.start_s, "track start_s",
                                                        ProtocolError, minimum=0))
        values.set_field(self, "end_s", values.number(self.end_s, "track end_s", ProtocolError,
                                                      minimum=self.start_s))
        values.set_field(self, "start_sample", values.integer(
            self.start_sample, "track start_sample", ProtocolError, minimum=0,
            maximum=MAX_INTEGER))
        values.set_field(self, "end_sample", values.integer(
            self.end_sample, "track end_sample", ProtocolError, minimum=self.start_sample,
            maximum=MAX_INTEGER))
        # Wall clocks may step back (NTP), so the two times are not ordered here.
        for name in ("started_at", "ended_at"):
            values.set_field(self, name, values.number(getattr(self, name), f"track {name}",
                                                       ProtocolError, minimum=0))
        values.set_field(self, "windows",
                         values.integer(self.windows, "track windows", ProtocolError, minimum=0,
                                        maximum=MAX_INTEGER))
        values.set_field(self, "tags", tag_names(self.tags, "track tags"))
        if len(set(self.tags)) != len(self.tags):
            raise ProtocolError("track tags must not repeat a name")
        if self.windows == 0 and self.tags:
            raise ProtocolError("a track of 0 windows has no means: its tags must be empty")
        for name in ("mean_raw", "mean_smoothed", "active_share"):
            checked = values.numbers(getattr(self, name), f"track {name}", ProtocolError,
                                     most=MAX_TAGS)
            if len(checked) != len(self.tags):
                raise ProtocolError(f"track {name} has {len(checked)} values for "
                                    f"{len(self.tags)} tags; they must match one to one")
            values.set_field(self, name, checked)
        for tag, share in zip(self.tags, self.active_share, strict=True):
            if not 0.0 <= share <= 1.0:
                raise ProtocolError(f"track active_share of {tag!r} must be in [0, 1], "
                                    f"got {share!r}")
        values.set_field(self, "active", tag_names(self.active, "track active"))
        most = {tag for tag, share in zip(self.tags, self.active_share, strict=True)
                if share > TRACK_ACTIVE_SHARE}
        if set(self.active) != most or len(self.active) != len(most):
            raise ProtocolError(f"track active must name each tag whose active_share is over "
                                f"{TRACK_ACTIVE_SHARE} once ({sorted(most)}), got "
                                f"{list(self.active)}")
        values.set_field(self, "model", ModelRef.coerce(self.model, "track model"))


@dataclass(frozen=True)
class SilenceBody(_Part):
    """A stream fell silent (dead air) or sound came back (protocol 1.2).

    "on" is sent once the audio has stayed below ``threshold_dbfs`` for the daemon's
    ``[health] silence_s``; its ``time_s``/``sample`` are where the silence began. "off" is
    sent when sound comes back (or the stream ends), its ``time_s``/``sample`` where the
    silence ended; ``start_s``/``start_sample`` are where it began in both, so either message
    alone gives the span. ``duration_s``: how long it had lasted ("on"), or in all ("off").
    ``cause``: "silence" (below the threshold) or "tone" (a stuck tone: a steady tone with
    no onset for as long, above the threshold; ``[health] tone_crest_db``). ``ended`` (1.4,
    "off" only): true when the stream ended while silent, false when sound came back (None:
    an "on", or a writer from before 1.4).
    """

    state: str
    time_s: float
    sample: int
    start_s: float
    start_sample: int
    duration_s: float
    threshold_dbfs: float
    cause: str = "silence"
    ended: bool | None = None  # since 1.4, in "off" only

    msg_type: ClassVar[str] = SILENCE
    _what: ClassVar[str] = "silence body"
    _omitted_when_none: ClassVar[tuple[str, ...]] = ("ended",)

    def __post_init__(self) -> None:
        values.choice(self.state, "silence state", ProtocolError, EVENT_STATES)
        values.choice(self.cause, "silence cause", ProtocolError, SILENCE_CAUSES)
        if self.ended is not None:
            if not isinstance(self.ended, bool):
                raise ProtocolError(f"silence ended must be true or false, got "
                                    f"{self.ended!r}")
            if self.state != "off":
                raise ProtocolError("silence ended is only in an \"off\" message: whether "
                                    "the stream ended while silent")
        for name in ("start_s", "duration_s"):
            values.set_field(self, name, values.number(getattr(self, name), f"silence {name}",
                                                       ProtocolError, minimum=0))
        values.set_field(self, "time_s", values.number(self.time_s, "silence time_s",
                                                       ProtocolError, minimum=self.start_s))
        values.set_field(self, "start_sample", values.integer(
            self.start_sample, "silence start_sample", ProtocolError, minimum=0,
            maximum=MAX_INTEGER))
        values.set_field(self, "sample", values.integer(
            self.sample, "silence sample", ProtocolError, minimum=self.start_sample,
            maximum=MAX_INTEGER))
        values.set_field(self, "threshold_dbfs", values.number(
            self.threshold_dbfs, "silence threshold_dbfs", ProtocolError, minimum=MIN_DBFS,
            maximum=0))


Body = ScoresBody | EventBody | StatusBody | HeartbeatBody | TrackBody | SilenceBody
BODY_TYPES: dict[str, type[Body]] = {b.msg_type: b for b in (ScoresBody, EventBody, StatusBody,
                                                        HeartbeatBody, TrackBody, SilenceBody)}
for _part in (Header, *BODY_TYPES.values()):
    _part._register()


# ---------------------------------------------------------------- what each field may hold

@dataclass(frozen=True)
class Rule:
    """What one wire field may hold beyond its Python type, in the constants the checks above
    use. The dataclasses give each field's name, type and whether it is required (no default)
    or optional; these rules give the rest, and streamtag.wire.schema makes the JSON Schema
    and the AsyncAPI document from both (`streamtag protocol schema`). For an array, the
    bounds of a value apply to each entry and ``most`` to the entries."""

    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # above 0
    closed: tuple[str, ...] | None = None  # the values there are: any other is refused
    # the values this version knows of a set that minors extend (message types: a reader
    # skips a type it does not know, counted as refused, and goes on)
    known: tuple[str, ...] | None = None
    nonempty: bool = False  # a text (or each text of an array) has at least one character
    longest: int | None = None  # characters of a text, or of each text of an array
    most: int | None = None  # entries of an array or an object
    pattern: str | None = None  # a text matches this regular expression whole
    unique: bool = False  # an array's entries do not repeat
    at_least: str | None = None  # another field of the same object this one is not below
    since: str | None = None  # the protocol version that added the field


_SAMPLE = Rule(minimum=0, maximum=MAX_INTEGER)
_TAG_NAMES = Rule(nonempty=True, longest=MAX_TEXT_LENGTH, most=MAX_TAGS)
_PER_TAG = Rule(most=MAX_TAGS)

# Field name -> Rule, per dataclass of the wire; a field without one takes any value of its
# type. tests/wire/test_schema.py checks that every rule names a field, and that a value past
# each bound is refused by decode and by the schema alike.
RULES: dict[type, dict[str, Rule]] = {
    Header: {
        "version": Rule(pattern=r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"),
        "msg_type": Rule(known=MSG_TYPES),
        "msg_id": Rule(nonempty=True, longest=MAX_ID_LENGTH),
        "session": Rule(nonempty=True, longest=MAX_ID_LENGTH),
        "stream": Rule(pattern=STREAM_ID_PATTERN),  # "" in a heartbeat
        "seq": _SAMPLE,
        "sent_at": Rule(minimum=0),
    },
    ModelRef: {"name": Rule(longest=MAX_TEXT_LENGTH), "hash": Rule(longest=MAX_TEXT_LENGTH)},
    AudioLevel: {
        "rms_dbfs": Rule(minimum=MIN_DBFS), "peak_dbfs": Rule(minimum=MIN_DBFS),
        "clipped": _SAMPLE, "onset_rate_hz": Rule(minimum=0),
        "energy": Rule(minimum=0, maximum=1),
        "momentary_lufs": Rule(minimum=MIN_LUFS, maximum=MAX_LUFS, since="1.3"),
        "short_term_lufs": Rule(minimum=MIN_LUFS, maximum=MAX_LUFS, since="1.3"),
    },
    Mood: {
        "words": Rule(nonempty=True, longest=MAX_TEXT_LENGTH, most=MAX_MOOD_WORDS),
        "valence": Rule(minimum=-1, maximum=1), "arousal": Rule(minimum=-1, maximum=1),
        "since_s": Rule(minimum=0),
        "genres": Rule(nonempty=True, longest=MAX_TEXT_LENGTH, most=MAX_MOOD_GENRES),
    },
    ScoresBody: {
        "start_s": Rule(minimum=0), "end_s": Rule(minimum=0, at_least="start_s"),
        "start_sample": _SAMPLE,
        "end_sample": Rule(minimum=0, maximum=MAX_INTEGER, at_least="start_sample"),
        "tags": Rule(nonempty=True, longest=MAX_TEXT_LENGTH, most=MAX_TAGS, unique=True),
        "raw": _PER_TAG, "smoothed": _PER_TAG, "active": _TAG_NAMES,
        "audio": Rule(since="1.2"), "mood": Rule(since="1.2"),
        "content": Rule(closed=CONTENT_KINDS, since="1.7"),
    },
    EventBody: {
        "tag": Rule(nonempty=True, longest=MAX_TEXT_LENGTH), "state": Rule(closed=EVENT_STATES),
        "time_s": Rule(minimum=0), "sample": _SAMPLE,
    },
    StatusBody: {
        "state": Rule(closed=STATUS_STATES), "error": Rule(longest=MAX_DETAIL_LENGTH),
        # keys: texts of at most MAX_TEXT_LENGTH; integer values: int64
        "counters": Rule(longest=MAX_TEXT_LENGTH, most=MAX_COUNTERS,
                         minimum=-MAX_INTEGER - 1, maximum=MAX_INTEGER),
        "title": Rule(longest=MAX_TEXT_LENGTH), "source": Rule(longest=MAX_DETAIL_LENGTH),
        "station": Rule(longest=MAX_TEXT_LENGTH, since="1.2"),
        "heard_from_start": Rule(since="1.5"),
    },
    HeartbeatBody: {
        "uptime_s": Rule(minimum=0), "streams": Rule(minimum=0, maximum=MAX_STREAM_COUNT),
        "interval_s": Rule(positive=True, since="1.8"),
    },
    TrackBody: {
        "title": Rule(longest=MAX_TEXT_LENGTH), "reason": Rule(closed=TRACK_REASONS),
        "start_s": Rule(minimum=0), "end_s": Rule(minimum=0, at_least="start_s"),
        "start_sample": _SAMPLE,
        "end_sample": Rule(minimum=0, maximum=MAX_INTEGER, at_least="start_sample"),
        "started_at": Rule(minimum=0), "ended_at": Rule(minimum=0), "windows": _SAMPLE,
        "tags": Rule(nonempty=True, longest=MAX_TEXT_LENGTH, most=MAX_TAGS, unique=True),
        "mean_raw": _PER_TAG, "mean_smoothed": _PER_TAG,
        "active_share": Rule(minimum=0, maximum=1, most=MAX_TAGS), "active": _TAG_NAMES,
        "heard_from_start": Rule(since="1.5"),
        "loudness_lufs": Rule(minimum=MIN_LUFS, maximum=MAX_LUFS, since="1.10"),
    },
    SilenceBody: {
        "state": Rule(closed=EVENT_STATES), "time_s": Rule(minimum=0, at_least="start_s"),
        "sample": Rule(minimum=0, maximum=MAX_INTEGER, at_least="start_sample"),
        "start_s": Rule(minimum=0), "start_sample": _SAMPLE, "duration_s": Rule(minimum=0),
        "threshold_dbfs": Rule(minimum=MIN_DBFS, maximum=0),
        "cause": Rule(closed=SILENCE_CAUSES), "ended": Rule(since="1.4"),
    },
}


@dataclass(frozen=True)
class Message:
    """One logical message: a header and the body its msg_type names. The topic follows."""

    header: Header
    body: Body

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header):
            raise ProtocolError(f"message header must be a Header, got {values.kind(self.header)}")
        expected = BODY_TYPES[self.header.msg_type]
        if type(self.body) is not expected:
            raise ProtocolError(f"a {self.header.msg_type} message needs a {expected.__name__} "
                                f"body, got {values.kind(self.body)}")

    @property
    def topic(self) -> str:
        return topic_for(self.header.msg_type, self.header.stream)

    @property
    def msg_type(self) -> str:
        return self.header.msg_type

    @property
    def stream(self) -> str:
        return self.header.stream

    @property
    def seq(self) -> int:
        return self.header.seq

    @property
    def session(self) -> str:
        return self.header.session

    @property
    def sent_at(self) -> float:
        return self.header.sent_at

    def to_dict(self) -> dict[str, Any]:
        """The logical form, {topic, header, body}, as JSON-ready dicts."""
        return {"topic": self.topic, "header": self.header.to_dict(),
                "body": self.body.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Message:
        """Inverse of to_dict; the same checks as decode."""
        if not isinstance(data, Mapping):
            raise ProtocolError(f"a message must be an object, got {values.kind(data)}")
        for key in ("topic", "header", "body"):
            if key not in data:
                raise ProtocolError(f"a message is missing {key!r}")
        return _from_parts(data["topic"], data["header"], data["body"])


def make_message(body: Body, *, session: str, stream: str, seq: int,
                 sent_at: float | None = None, msg_id: str | None = None,
                 version: str = PROTOCOL_VERSION) -> Message:
    """A message for `body`, with a fresh msg_id and the current time unless given."""
    msg_type = getattr(body, "msg_type", None)
    if msg_type not in BODY_TYPES:
        raise ProtocolError(f"not a message body: {values.kind(body)}")
    header = Header(version=version, msg_type=msg_type,
                    msg_id=new_msg_id() if msg_id is None else msg_id, session=session,
                    stream=stream, seq=seq, sent_at=time.time() if sent_at is None else sent_at)
    return Message(header, body)


# ---------------------------------------------------------------- bytes

def canonical_json(value: Any) -> bytes:
    """The one JSON spelling on the wire: sorted keys, no spaces, UTF-8, no NaN."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ProtocolError(f"cannot write as JSON: {exc}") from None


def header_frame(msg_type: str, *, session: str, stream: str, seq: int, sent_at: float,
                 msg_id: str, version: str = PROTOCOL_VERSION) -> bytes:
    """The header frame ``encode`` writes for a Header of these values, without building one:
    for a publisher stamping its own messages, which checked the session, the stream id and
    the type once and counts seq itself (``Header`` checks them in every message)."""
    if (type(seq) is int and type(sent_at) is float and math.isfinite(sent_at)
            and all(type(v) is str for v in (msg_id, msg_type, session, stream, version))):
        # canonical_json's bytes, keys in sorted order, in a quarter of its time
        try:
            return (f'{{"msg_id":{_json_str(msg_id)},"msg_type":{_json_str(msg_type)},'
                    f'"sent_at":{sent_at!r},"seq":{seq},"session":{_json_str(session)},'
                    f'"stream":{_json_str(stream)},"version":{_json_str(version)}}}').encode()
        except UnicodeEncodeError:  # a lone surrogate: canonical_json says so below
            pass
    return canonical_json({"msg_id": msg_id, "msg_type": msg_type, "sent_at": sent_at,
                           "seq": seq, "session": session, "stream": stream,
                           "version": version})


class ScoresEncoder:
    """The body frames of scores messages for one model: byte for byte what ``encode``
    writes for a ``ScoresBody`` of the same values, with the same checks and errors, but the
    tags and the model, the same in every window, are checked and written once, and no body
    object is built (a daemon writes one such frame per window)."""

    def __init__(self, tags: Iterable[str], model: ModelRef | Mapping[str, str]) -> None:
        self.tags = tag_names(tags, "scores tags")
        if len(set(self.tags)) != len(self.tags):
            raise ProtocolError("scores tags must not repeat a name")
        self.model = ModelRef.coerce(model)
        self._tag_json = {tag: canonical_json(tag).decode("utf-8") for tag in self.tags}
        self._model_json = canonical_json(self.model.to_dict()).decode("utf-8")
        self._tags_json = canonical_json(list(self.tags)).decode("utf-8")

    def body_frame(self, *, start_s: float, end_s: float, start_sample: int, end_sample: int,
                   raw: Iterable[float], smoothed: Iterable[float], active: Iterable[str],
                   latency_ms: float, decimals: int | None = None,
                   audio: AudioLevel | Mapping[str, Any] | None = None,
                   mood: Mood | Mapping[str, Any] | None = None,
                   content: str | None = None) -> bytes:
        """decimals: round raw and smoothed to this many places first, as numpy.round does
        (a publisher's SCORE_DECIMALS). A 1-D float array of one value per tag is then
        rounded and written by the C++ core (repr's digits, an eighth of json's cost)."""
        start_s = values.number(start_s, "scores start_s", ProtocolError, minimum=0)
        end_s = values.number(end_s, "scores end_s", ProtocolError, minimum=start_s)
        start_sample = values.integer(start_sample, "scores start_sample", ProtocolError,
                                      minimum=0, maximum=MAX_INTEGER)
        end_sample = values.integer(end_sample, "scores end_sample", ProtocolError,
                                    minimum=start_sample, maximum=MAX_INTEGER)
        written = []
        for name, numbers_ in (("raw", raw), ("smoothed", smoothed)):
            text = None
            if decimals is not None:
                if (type(numbers_) is np.ndarray and numbers_.ndim == 1
                        and numbers_.dtype.kind == "f" and len(numbers_) == len(self.tags)):
                    text = _core.rounded_json_array(numbers_, decimals)  # None: not finite
                if text is None:  # the checks below name what is wrong (an overflow too)
                    with np.errstate(over="ignore", invalid="ignore"):
                        numbers_ = np.round(np.asarray(numbers_, dtype=np.float64),
                                            decimals).tolist()
            if text is None:
                checked = values.numbers(numbers_, f"scores {name}", ProtocolError,
                                         most=MAX_TAGS)
                if len(checked) != len(self.tags):
                    raise ProtocolError(f"scores {name} has {len(checked)} values for "
                                        f"{len(self.tags)} tags; they must match one to one")
                text = canonical_json(list(checked)).decode("utf-8")
            written.append(text)
        try:
            if isinstance(active, (str, bytes, bytearray, Mapping)):
                raise TypeError  # not an array of names: the full check says so
            active = tuple(active)  # an iterator is read once, here
            if len(active) > MAX_TAGS:
                raise values.too_many("scores active", ProtocolError, len(active), MAX_TAGS)
            active_json = ",".join([self._tag_json[tag] for tag in active])
        except (KeyError, TypeError):  # not a known tag: the full check names it
            names = tag_names(active, "scores active")
            unknown = set(names) - set(self.tags)
            raise ProtocolError(f"scores active names tags not in tags: {sorted(unknown)}") \
                from None
        latency_ms = values.number(latency_ms, "scores latency_ms", ProtocolError)
        audio_json = ("" if audio is None else
                      '"audio":' + canonical_json(AudioLevel.coerce(audio).to_dict())
                      .decode("utf-8") + ",")
        mood_json = ("" if mood is None else
                     '"mood":' + canonical_json(Mood.coerce(mood).to_dict()).decode("utf-8")
                     + ",")
        content_json = ""
        if content is not None:
            values.choice(content, "scores content", ProtocolError, CONTENT_KINDS)
            content_json = f'"content":"{content}",'
        # canonical_json's order (sorted keys) and spelling: floats as float.__repr__
        return checked_frame((
            f'{{"active":[{active_json}],{audio_json}{content_json}"end_s":{end_s!r},'
            f'"end_sample":{end_sample},"latency_ms":{latency_ms!r},'
            f'"model":{self._model_json},{mood_json}"raw":{written[0]},'
            f'"smoothed":{written[1]},"start_s":{start_s!r},"start_sample":{start_sample},'
            f'"tags":{self._tags_json}}}').encode(), "scores body", MAX_BODY_BYTES[SCORES])


def checked_frame(frame: bytes, what: str, most: int = MAX_FRAME_BYTES) -> bytes:
    """``frame`` if a reader takes its size, else ProtocolError: a writer refuses what a
    reader would."""
    if len(frame) > most:
        raise ProtocolError(f"{what} would be {len(frame)} bytes, over the {most} a reader "
                            "takes (docs/protocol.md, Bounds)")
    return frame


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _bytes_of(data: Any, what: str, most: int) -> bytes:
    """The bytes of one frame (bytes, bytearray, zmq.Frame), refused unread when over
    ``most``: its size is known before a byte of it is copied or parsed."""
    if type(data) is bytes:  # what recv_multipart gives: nothing to copy
        if len(data) <= most:
            return data
        size = len(data)
    else:
        try:
            view = memoryview(data)
        except TypeError:
            raise ProtocolError(f"{what} is not bytes but {values.kind(data)}") from None
        size = view.nbytes
        if size <= most:
            return view.tobytes()
    raise ProtocolError(f"{what} is {size} bytes, over the {most} a reader takes "
                        "(docs/protocol.md, Bounds)")


def parse_json(data: Any, what: str, most: int = MAX_FRAME_BYTES) -> Any:
    """Decode one UTF-8 JSON frame of at most ``most`` bytes; ProtocolError for anything
    else."""
    try:
        text = _bytes_of(data, what, most).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not UTF-8 text: {exc}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ProtocolError(f"{what} is not valid JSON: {str(exc)[:200]}") from None


_FRAME_NAMES = ("topic frame", "header frame", "body frame")
_FRAME_CAPS = (MAX_TOPIC_BYTES, MAX_FRAME_BYTES, MAX_FRAME_BYTES)


def _frame_bytes(frames: Any) -> list[bytes]:
    """The first three frames' bytes, each refused over the socket's cap before it is copied;
    frames past the third are counted, never read."""
    if not isinstance(frames, (list, tuple)):
        raise ProtocolError(f"frames must be a list of bytes, got {values.kind(frames)}")
    out = []
    for frame, name, most in zip(frames, _FRAME_NAMES, _FRAME_CAPS, strict=False):
        out.append(_bytes_of(frame, name, most))
    return out


def _from_parts(topic: Any, header: Any, body: Any) -> Message:
    if not isinstance(header, Mapping):
        raise ProtocolError(f"header must be a JSON object, got {values.kind(header)}")
    check_version(header.get("version"))
    msg_type = header.get("msg_type")
    if not isinstance(msg_type, str) or msg_type not in BODY_TYPES:
        raise ProtocolError(f"unknown msg_type {values.show(msg_type)}; this reader knows "
                            f"{', '.join(MSG_TYPES)}")
    message = Message(Header.from_dict(header), BODY_TYPES[msg_type].from_dict(body))
    if topic != message.topic:
        raise ProtocolError(f"topic {values.show(topic)} does not match the header (msg_type "
                            f"{msg_type!r}, stream {message.stream!r}): expected "
                            f"{message.topic!r}")
    return message


def encode(message: Message) -> list[bytes]:
    """The frames [topic, header, body] of a message, in canonical JSON."""
    if not isinstance(message, Message):
        raise ProtocolError(f"encode takes a Message, got {values.kind(message)}")
    return [message.topic.encode("utf-8"),
            checked_frame(canonical_json(message.header.to_dict()), "header frame",
                          MAX_HEADER_BYTES),
            checked_frame(canonical_json(message.body.to_dict()),
                          f"{message.msg_type} body frame", MAX_BODY_BYTES[message.msg_type])]


def decode(frames: Any) -> Message:
    """The Message in `frames`; ProtocolError (and nothing else) for anything malformed.

    The version is checked first, so a message of an unknown major version is reported as such
    even if its shape changed: frame 1 being a JSON header with `version` holds across majors.
    """
    parts = _frame_bytes(frames)
    if len(parts) < 2:
        raise ProtocolError(f"expected 3 frames [topic, header, body], got {len(frames)}")
    try:
        topic = parts[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("topic frame is not UTF-8 text") from None
    header = parse_json(parts[1], "header frame", MAX_HEADER_BYTES)
    if not isinstance(header, dict):
        raise ProtocolError(f"header frame must be a JSON object, got {values.kind(header)}")
    check_version(header.get("version"))
    if len(frames) != 3:
        raise ProtocolError(f"expected 3 frames [topic, header, body], got {len(frames)}")
    msg_type = header.get("msg_type")
    if isinstance(msg_type, str) and msg_type in MAX_BODY_BYTES:
        body = parse_json(parts[2], f"{msg_type} body frame", MAX_BODY_BYTES[msg_type])
    else:  # an unknown type: refused by name below
        body = parse_json(parts[2], "body frame")
    return _from_parts(topic, header, body)



# Opening brackets a frame may hold for orjson to parse it: some versions recurse without a
# bound (a frame of a million "[" crashes them), so a frame that could nest deeper goes to the
# standard library's parser, which refuses deep nesting. Honest frames hold a handful.
_ORJSON_MOST_BRACKETS = 64
DECODER_MOST_HEADERS = 65536  # (version, type, session, stream) checked: 10,000 streams' 5 types
DECODER_MOST_MODELS = 256  # (tags, name, hash) of scores checked ...
DECODER_MOST_MODEL_CHARS = 16 * 1024 * 1024  # ... and their characters together


_T = TypeVar("_T")
_FLOAT = {float}
_FLOAT_ARRAYS = ("raw", "smoothed")  # the float arrays of a scores body
# A decoded ScoresBody's raw and smoothed as float64 bytes in native order, raw then smoothed,
# where the Decoder's C++ path read them (an attribute of the body, not one of its fields):
# `scores_f64` gives them.
SCORES_F64 = "_scores_f64"
_TAGS_MEMBER = b',"tags":['  # how the last member of a canonical scores body begins


def _built(cls: type[_T], fields_: dict[str, Any]) -> _T:
    """A frozen dataclass of fields already checked as its ``__post_init__`` would."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields_)
    return obj


class Decoder:
    """``decode`` for a reader of many messages (a subscriber): the same Message for the same
    frames and the same ProtocolError for malformed ones, in a fraction of the time. What
    repeats from message to message is checked once and remembered: a stream's header fields
    (version, type, session, stream id and so its topic) and a model's tags, name and hash.
    Scores, events and heartbeats whose every field has the type a publisher writes are parsed
    by orjson and built from those checks; anything else, and anything the short way doubts,
    takes ``decode``. What it remembers is bounded (``DECODER_MOST_*``), whatever peers send:
    past a bound it forgets everything and checks anew."""

    def __init__(self) -> None:
        self._topics: dict[tuple[str, str, str, str], str] = {}  # header key -> its topic
        self._models: dict[tuple[Any, ...],
                           tuple[tuple[str, ...], frozenset[str], ModelRef]] = {}
        self._model_chars = 0
        # the closing bytes of a scores frame (its tags, last) -> the tags, checked before
        self._tails: dict[bytes, tuple[str, ...]] = {}

    def decode(self, frames: Any) -> Message:
        if type(frames) is list and len(frames) == 3:
            try:
                message = self._short(frames)
            except Exception:  # noqa: BLE001 - doubts only: decode says what is wrong
                message = None
            if message is not None:
                return message
        return decode(frames)

    def _short(self, frames: list[Any]) -> Message | None:
        topic, header_frame_, body_frame = frames
        if (type(topic) is not bytes or type(header_frame_) is not bytes
                or type(body_frame) is not bytes or len(topic) > MAX_TOPIC_BYTES
                or len(header_frame_) > MAX_HEADER_BYTES):
            return None
        header = _orjson_object(header_frame_)
        if header is None:
            return None
        key: tuple[Any, Any, Any, Any] = (header.get("version"), header.get("msg_type"),
                                          header.get("session"), header.get("stream"))
        expected_topic = self._topics.get(key)
        msg_id, seq, sent_at = header.get("msg_id"), header.get("seq"), header.get("sent_at")
        if not (type(msg_id) is str and 0 < len(msg_id) <= MAX_ID_LENGTH and msg_id.isascii()
                and type(seq) is int and 0 <= seq <= MAX_INTEGER
                and type(sent_at) is float and 0 <= sent_at < math.inf):
            return None
        msg_type = key[1]
        if msg_type not in (SCORES, EVENT, HEARTBEAT) \
                or len(body_frame) > MAX_BODY_BYTES[msg_type]:
            return None
        if expected_topic is None:
            Header(*key[:2], msg_id, *key[2:], seq, sent_at)  # ProtocolError: doubted
            expected_topic = topic_for(msg_type, key[3])
            if len(self._topics) >= DECODER_MOST_HEADERS:
                self._topics.clear()
            self._topics[key] = expected_topic
        if topic.decode("utf-8") != expected_topic:
            return None
        body: Body | None
        if msg_type == SCORES:
            body = self._scores_frame(body_frame)
        else:
            fields_ = _orjson_object(body_frame)
            if fields_ is None:
                return None
            body = _event(fields_) if msg_type == EVENT else \
                BODY_TYPES[msg_type].from_dict(fields_)
        if body is None:
            return None
        return _built(Message, {"header": _built(Header, {
            "version": key[0], "msg_type": msg_type, "msg_id": msg_id, "session": key[2],
            "stream": key[3], "seq": seq, "sent_at": sent_at}), "body": body})

    def _scores_frame(self, frame: bytes) -> ScoresBody | None:
        """A scores body frame. Its tags, the same in every window of a model, end the frame
        as a writer of canonical JSON writes them (keys in order): a frame that ends with the
        bytes of tags checked before is parsed without them."""
        cut = frame.rfind(_TAGS_MEMBER)
        known = self._tails.get(frame[cut:]) if cut > 0 else None
        if known is None:
            fields_ = _orjson_object(frame)
            if fields_ is None:
                return None
            body = self._scores(fields_)
            if body is not None and cut > 0:
                tail = frame[cut:]
                if tail == _TAGS_MEMBER[:-1] + orjson.dumps(list(body.tags)) + b"}":
                    self._tails[tail] = body.tags
                    self._model_chars += len(tail)
            return body
        # the rest of the object, closed where the tags began; its float arrays read by the
        # C++ core (about half the time orjson and the checks of their values take), the
        # other members by orjson
        taken = _core.take_float_arrays(frame, cut, _FLOAT_ARRAYS)
        if taken is None:  # anything unusual in them: orjson reads them, and they are checked
            fields_ = _orjson_object(frame[:cut] + b"}")
        else:
            fields_ = _orjson_object(taken[2] + b"}")
            if fields_ is not None:
                if "raw" in fields_ or "smoothed" in fields_:  # within a value: can't be
                    return None
                fields_["raw"], fields_["smoothed"] = taken[0], taken[1]
        if fields_ is None or "tags" in fields_:  # a second "tags": the whole frame says
            return None
        model = fields_.get("model")
        if type(model) is not dict:
            return None
        found = self._models.get((known, model.get("name"), model.get("hash")))
        if found is None:
            return None
        body = self._scores_of(fields_, *found)
        if body is not None and taken is not None:
            # the same values as float64 bytes, raw then smoothed, for a reader that packs
            # them into arrays (the recorder's blocks: SCORES_F64); not a field of the body,
            # so neither compared nor sent
            body.__dict__[SCORES_F64] = taken[3]
        return body

    def _scores(self, body: dict[str, Any]) -> ScoresBody | None:
        tags, model = body.get("tags"), body.get("model")
        if type(tags) is not list or type(model) is not dict:
            return None
        key = (tuple(tags), model.get("name"), model.get("hash"))  # TypeError: doubted
        known = self._models.get(key)
        if known is None:
            checked = ScoresBody.from_dict(body)  # ProtocolError: doubted
            self._remember_model(key, checked)
            return checked
        return self._scores_of(body, *known)

    @staticmethod
    def _scores_of(body: dict[str, Any], tags_: tuple[str, ...], tag_set: frozenset[str],
                   model_ref: ModelRef) -> ScoresBody | None:
        """The body of a known model's tags, name and hash, if its other fields have the
        types a publisher writes. Its raw and smoothed: lists as orjson reads them, or tuples
        of finite floats as the C++ core reads them (take_float_arrays)."""
        start_s, end_s = body.get("start_s"), body.get("end_s")
        latency_ms = body.get("latency_ms")
        start_sample, end_sample = body.get("start_sample"), body.get("end_sample")
        raw, smoothed, active = body.get("raw"), body.get("smoothed"), body.get("active")
        audio, mood, content = body.get("audio"), body.get("mood"), body.get("content")
        if not (type(start_s) is float and type(end_s) is float and type(latency_ms) is float
                and 0 <= start_s <= end_s < math.inf and math.isfinite(latency_ms)
                and type(start_sample) is int and type(end_sample) is int
                and 0 <= start_sample <= end_sample <= MAX_INTEGER
                and type(active) is list and isinstance(raw, list | tuple)
                and isinstance(smoothed, list | tuple)
                and len(raw) == len(smoothed) == len(tags_) > 0
                and tag_set.issuperset(active)
                and (content is None or content in CONTENT_KINDS)):
            return None
        if type(raw) is not tuple or type(smoothed) is not tuple:
            if not (set(map(type, raw)) == _FLOAT and set(map(type, smoothed)) == _FLOAT
                    and math.isfinite(sum(raw)) and math.isfinite(sum(smoothed))):
                return None
            raw, smoothed = tuple(raw), tuple(smoothed)
        return _built(ScoresBody, {
            "start_s": start_s, "end_s": end_s, "start_sample": start_sample,
            "end_sample": end_sample, "tags": tags_, "raw": raw,
            "smoothed": smoothed, "active": tuple(active), "model": model_ref,
            "latency_ms": latency_ms,
            "audio": None if audio is None else AudioLevel.coerce(audio),
            "mood": None if mood is None else Mood.coerce(mood), "content": content})

    def _remember_model(self, key: tuple[Any, ...], checked: ScoresBody) -> None:
        chars = len(str(key[1])) + len(str(key[2])) + sum(map(len, checked.tags))
        if (len(self._models) >= DECODER_MOST_MODELS
                or self._model_chars + chars > DECODER_MOST_MODEL_CHARS):
            self._models.clear()
            self._tails.clear()
            self._model_chars = 0
        self._models[key] = (checked.tags, frozenset(checked.tags), checked.model)
        self._model_chars += chars


def scores_f64(body: ScoresBody) -> bytes | None:
    """The body's raw and smoothed scores as float64 bytes (native order, raw then smoothed),
    where a Decoder read them so; None otherwise."""
    return body.__dict__.get(SCORES_F64)


def _event(body: dict[str, Any]) -> EventBody | None:
    """An event body of the types a publisher writes, checked as EventBody checks it (a string
    orjson gives is valid Unicode); None for anything else."""
    tag, state, score = body.get("tag"), body.get("state"), body.get("score")
    time_s, sample = body.get("time_s"), body.get("sample")
    if not (type(tag) is str and 0 < len(tag) <= MAX_TEXT_LENGTH
            and type(state) is str and state in EVENT_STATES
            and type(score) is float and math.isfinite(score)
            and type(time_s) is float and 0 <= time_s < math.inf
            and type(sample) is int and 0 <= sample <= MAX_INTEGER):
        return None
    return _built(EventBody, {"tag": tag, "state": state, "score": score, "time_s": time_s,
                              "sample": sample})


def _orjson_object(frame: bytes) -> dict[str, Any] | None:
    """A JSON object parsed by orjson, or None for anything else (and for a frame that might
    nest deeper than orjson is trusted with)."""
    if frame.count(b"[") + frame.count(b"{") > _ORJSON_MOST_BRACKETS:
        return None
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return value if type(value) is dict else None

# ---------------------------------------------------------------- control socket

def encode_request(request: Mapping[str, Any]) -> bytes:
    """One control request frame: a JSON object with a string "cmd"."""
    if not isinstance(request, Mapping) or not isinstance(request.get("cmd"), str):
        raise ProtocolError('a control request is an object with a string "cmd", such as '
                            '{"cmd": "status"}')
    return checked_frame(canonical_json(dict(request)), "control request", MAX_REQUEST_BYTES)


def decode_request(data: Any) -> dict[str, Any]:
    usage = 'a control request is a JSON object with a string "cmd", such as {"cmd": "status"}'
    try:
        request = parse_json(data, "control request", MAX_REQUEST_BYTES)
    except ProtocolError as exc:
        raise ProtocolError(f"{exc}; {usage}") from None
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise ProtocolError(usage)
    return request


def error_reply(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """One control reply frame: a JSON object with a boolean "ok" (and "error" when false)."""
    if not isinstance(reply, Mapping) or not isinstance(reply.get("ok"), bool):
        raise ProtocolError('a control reply is an object with a boolean "ok"')
    if reply["ok"] is False and not isinstance(reply.get("error"), str):
        raise ProtocolError('a control reply with "ok": false needs a string "error"')
    return checked_frame(canonical_json(dict(reply)), "control reply", MAX_REPLY_BYTES)


def decode_reply(data: Any) -> dict[str, Any]:
    reply = parse_json(data, "control reply", MAX_REPLY_BYTES)
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ProtocolError('a control reply is a JSON object with a boolean "ok"')
    if reply["ok"] is False and not isinstance(reply.get("error"), str):
        raise ProtocolError('a control reply with "ok": false needs a string "error"')
    return reply


# ---------------------------------------------------------------- replay socket (since 1.9)
#
# A daemon's replay socket answers feed readers (docs/protocol.md, "Replay socket"): ``state``,
# each stream's latest status, scores and silence messages, so that a subscriber that joins
# draws at once; ``replay``, the messages of some topics from a seq on, out of the daemon's
# ring of what it published. A reply is a head frame (``ReplayReply``) and, per message, its
# three frames exactly as the feed carried them.

STATE_TYPES = (STATUS, SCORES, SILENCE)  # the messages that make a stream's current state
MAX_REPLAY_REQUEST_BYTES = 64 * 1024  # a request frame: 256 topics of ~170 bytes
MAX_REPLAY_TOPICS = 256  # topics one replay request names
MAX_REPLAY_MESSAGES = 4096  # messages of one reply
# the messages' bytes of one reply; a reply holds at least one message, whatever its size
MAX_REPLAY_REPLY_BYTES = 4 * 1024 * 1024
MAX_REPLAY_HEAD_BYTES = 4 * 1024  # a reply's head: a few fields
MAX_REPLAY_FRAMES = 1 + 3 * MAX_REPLAY_MESSAGES


@dataclass(frozen=True)
class StateRequest(_Part):
    """``state``: each stream's latest ``status``, ``scores`` and ``silence`` messages, the
    streams in the order of their ids; ``after``: only the streams after this id (the next
    page of a reply that said ``more``)."""

    after: str | None = None

    cmd: ClassVar[str] = "state"
    _what: ClassVar[str] = "state request"
    _omitted_when_none: ClassVar[tuple[str, ...]] = ("after",)

    def __post_init__(self) -> None:
        if self.after is not None:
            validate_stream_id(self.after)


@dataclass(frozen=True)
class ReplayRequest(_Part):
    """``replay``: the messages of ``session`` on each topic of ``topics`` (a topic -> ``[first,
    end]``: seqs from ``first``, up to but not including ``end``, or to the newest when
    ``end`` is null) that the daemon's ring still holds, in the order they were published."""

    session: str
    topics: Mapping[str, tuple[int, int | None]]

    cmd: ClassVar[str] = "replay"
    _what: ClassVar[str] = "replay request"

    def __post_init__(self) -> None:
        value = values.text(self.session, "replay session", ProtocolError, empty=False)
        if len(value) > MAX_ID_LENGTH:
            raise ProtocolError(f"replay session is longer than {MAX_ID_LENGTH} characters")
        if not isinstance(self.topics, Mapping):
            raise ProtocolError(f"replay topics must be an object, got "
                                f"{values.kind(self.topics)}")
        if not 0 < len(self.topics) <= MAX_REPLAY_TOPICS:
            raise ProtocolError(f"replay topics must name 1 to {MAX_REPLAY_TOPICS} topics, "
                                f"got {len(self.topics)}")
        clean: dict[str, tuple[int, int | None]] = {}
        for topic, span in self.topics.items():
            msg_type, dot, stream = str(topic).partition(".")
            if topic != HEARTBEAT and not (dot and msg_type in STREAM_MSG_TYPES
                                           and _STREAM_ID.fullmatch(stream)):
                raise ProtocolError(f"replay topic {values.show(topic)} is not a topic: write "
                                    "<msg_type>.<stream> or heartbeat")
            if not isinstance(span, (list, tuple)) or len(span) != 2:
                raise ProtocolError(f"replay topics[{topic!r}] must be [first, end] (end null "
                                    f"for the newest), got {values.show(span)}")
            first = values.integer(span[0], f"replay topics[{topic!r}] first", ProtocolError,
                                   minimum=0, maximum=MAX_INTEGER)
            end = None if span[1] is None else values.integer(
                span[1], f"replay topics[{topic!r}] end", ProtocolError, minimum=first,
                maximum=MAX_INTEGER)
            clean[topic] = (first, end)
        values.set_field(self, "topics", clean)


@dataclass(frozen=True)
class ReplayReply(_Part):
    """The head of a replay socket's reply: ``ok``; the daemon's ``session``; how many
    ``messages`` follow (three frames each); ``more``: the reply was cut at its bounds, ask
    again (a ``state`` from ``next``, a ``replay`` from the seqs after those received); a
    refusal's ``error``, and ``retry_after_s`` when the daemon was only busy."""

    ok: bool
    session: str | None = None
    messages: int = 0
    more: bool = False
    next: str | None = None
    error: str | None = None
    retry_after_s: float | None = None

    _what: ClassVar[str] = "replay reply"
    _omitted_when_none: ClassVar[tuple[str, ...]] = ("session", "next", "error",
                                                     "retry_after_s")

    def __post_init__(self) -> None:
        values.boolean(self.ok, "replay reply ok", ProtocolError)
        values.boolean(self.more, "replay reply more", ProtocolError)
        if self.session is not None:
            values.text(self.session, "replay reply session", ProtocolError, empty=False,
                        longest=MAX_ID_LENGTH)
        values.set_field(self, "messages", values.integer(
            self.messages, "replay reply messages", ProtocolError, minimum=0,
            maximum=MAX_REPLAY_MESSAGES))
        if self.next is not None:
            validate_stream_id(self.next)
        if self.error is not None:
            values.text(self.error, "replay reply error", ProtocolError,
                        longest=MAX_DETAIL_LENGTH)
        elif not self.ok:
            raise ProtocolError('a replay reply with "ok": false needs a string "error"')
        if self.retry_after_s is not None:
            values.set_field(self, "retry_after_s", values.number(
                self.retry_after_s, "replay reply retry_after_s", ProtocolError, minimum=0,
                maximum=60))


RULES.update({
    StateRequest: {"after": Rule(pattern=STREAM_ID_PATTERN)},
    # topics: topic -> [first, end]: seqs within 0 to MAX_INTEGER, end null or >= first
    ReplayRequest: {"session": Rule(nonempty=True, longest=MAX_ID_LENGTH),
                    "topics": Rule(most=MAX_REPLAY_TOPICS, minimum=0, maximum=MAX_INTEGER)},
    ReplayReply: {"session": Rule(nonempty=True, longest=MAX_ID_LENGTH),
                  "messages": Rule(minimum=0, maximum=MAX_REPLAY_MESSAGES),
                  "next": Rule(pattern=STREAM_ID_PATTERN),
                  "error": Rule(longest=MAX_DETAIL_LENGTH),
                  "retry_after_s": Rule(minimum=0, maximum=60)},
})
REPLAY_REQUESTS: dict[str, type[StateRequest] | type[ReplayRequest]] = {
    kind.cmd: kind for kind in (StateRequest, ReplayRequest)}
for _replay_part in (StateRequest, ReplayRequest, ReplayReply):
    _replay_part._register()


def encode_replay_request(request: StateRequest | ReplayRequest) -> bytes:
    """One replay socket request frame: the request's fields and its "cmd"."""
    return checked_frame(canonical_json({**request.to_dict(), "cmd": request.cmd}),
                         "replay request", MAX_REPLAY_REQUEST_BYTES)


def decode_replay_request(data: Any) -> StateRequest | ReplayRequest:
    """The request in one frame; ProtocolError saying what is wrong with anything else."""
    request = parse_json(data, "replay request", MAX_REPLAY_REQUEST_BYTES)
    cmd = request.get("cmd") if isinstance(request, dict) else None
    kind = REPLAY_REQUESTS.get(cmd) if isinstance(cmd, str) else None
    if kind is None:
        raise ProtocolError('a replay socket request is a JSON object whose "cmd" is '
                            f'{" or ".join(map(repr, REPLAY_REQUESTS))}, got {values.show(cmd)}')
    return kind.from_dict(request)


def encode_replay_reply(head: ReplayReply, messages: Iterable[list[bytes]] = ()) -> list[bytes]:
    """A reply's frames: its head, then each message's three frames as they were sent."""
    frames = [checked_frame(canonical_json(head.to_dict()), "replay reply head",
                            MAX_REPLAY_HEAD_BYTES)]
    for message in messages:
        frames.extend(message)
    return frames


def decode_replay_reply(frames: Any, decoder: Decoder | None = None
                        ) -> tuple[ReplayReply, list[tuple[Message, int]], int]:
    """The head, the messages (each with its frames' bytes) and how many of them were
    malformed (left out) of one reply; ProtocolError for a head that is not one, or frames
    that do not match it."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ProtocolError("a replay reply is a head frame and three frames per message")
    head = ReplayReply.from_dict(parse_json(frames[0], "replay reply head",
                                            MAX_REPLAY_HEAD_BYTES))
    if len(frames) != 1 + 3 * head.messages:
        raise ProtocolError(f"a replay reply of {head.messages} messages has "
                            f"{1 + 3 * head.messages} frames, got {len(frames)}")
    read = decoder.decode if decoder is not None else decode
    messages, invalid = [], 0
    for at in range(1, len(frames), 3):
        try:
            parts = list(frames[at:at + 3])
            messages.append((read(parts), sum(map(len, parts))))
        except ProtocolError:
            invalid += 1
    return head, messages, invalid
