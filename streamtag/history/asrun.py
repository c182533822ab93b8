"""What a station aired, as a radio monitor reports it: the as-run log (each title with its
start, end, length, whether it was heard whole, its leading tags and the silence in it), the
track now playing, the spans the station was off air or silent, the spans of data lost, and
play counts per title and per tag, over the whole range or per day or week.

Off air: the source's state changes (the ``statuses`` table). A span runs from the last audio
received before the source went down (its last scored window; the "reconnecting" or "failed"
status comes later, when the loss is noticed) to when audio resumed (the next "running"
status: the first audio heard again); a stream that ended or whose daemon stopped is not
monitored, which is not off air. A network source says how long before that audio the station
may have come back (``back_within_s``: the time since its last attempt found it off air; it
asks about once a second for an outage's first minute, sources/http.py).

Partial: a track is marked partial when it was not heard whole: "joined" (listening began
mid-track: as the source knew it, where it did (``heard_from_start``, protocol 1.5: an Ogg
link's first page tells), else the first track of a daemon session on a live source), "off
air" (an outage inside it, or at its end), "cut" (the daemon stopped, or the source was
removed, mid-track). The last track of a live stream that ended by itself (its daemon went on)
or whose audio ended as the station went off air is not "cut": its audio ended with the
stream's.

Silence: the ``silences`` table (schema revision 0003: dead air the daemon measured), when
the database has it; none otherwise.

Dead air and other audio that is not music: a track that was dead air (silence or a stuck
tone) for more than half its length, or most of whose windows were not music (speech, silence,
a tone or noise: their ``content``, schema revision 0008), has no leading tags and no scores:
what a model says of a voice, a tone or silence names no music, and a track's means are of its
music windows only (often one at its edge). The stuck tone is said as such (``tone_s``), apart
from silence.

Loudness: where the daemon measured EBU R128 loudness (``[health] loudness``), a finished
track's loudness is its integrated loudness (BS.1770-4, gated) as the daemon measured it on the
track's own audio and sent with the track (protocol 1.10, schema revision 0011). A track
without it (recorded from an older daemon, now playing, or with no track message) takes the
short-term readings of its windows (schema revision 0005) whose 3 s lie inside the track (a
reading near its start would measure the track before), gated and averaged in power as
BS.1770 gates its 400 ms blocks (absolute gate -70 LUFS, relative gate 10 LU below the mean of
what passes it): within 0.25 LU of the integrated loudness on steady music, but 1.5-2.2 LU low
on speech and dynamic piano, whose pauses 3 s readings average in. A track with readings none
of which passes the absolute gate (digital silence, or quieter than -70 LUFS) is "below -70
LUFS": no number (``loudness_lufs`` None, ``loudness_below_gate`` True).
"""

from __future__ import annotations

import bisect
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa

from streamtag.audio.loudness import (
    ABSOLUTE_GATE_LUFS,
    BLOCK_S,
    RELATIVE_GATE_LU,
    SHORT_TERM_BLOCKS,
    loudness_of_power,
)
from streamtag.engine.tracks import HEADLINE_FAMILIES, headline_tags
from streamtag.history import blocks, content, schema
from streamtag.history.timeparse import Zone
from streamtag.wire.protocol import DOWN_STATES

LIVE_SOURCE = re.compile(r"(https?://|device:|pipe:)", re.IGNORECASE)
MAX_GAP_SPANS = 1000      # gaps looked up for the span they lost; the rest keep their time
PERIODS = ("day", "week")
# From a period's start, a time inside the next one: a day is 23 to 25 hours long, a week 167
# to 169, where clocks change.
PERIOD_STEP_S = {"day": 25.5 * 3600, "week": (7 * 24 + 1.5) * 3600}
# A track without an end whose stream sent no window for this long is not playing: the
# recording stopped (the daemon or the recorder went away) and its end is its last window.
STALE_S = 60.0
# The windows of audio a source already had are scored within this of its "reconnecting"
# status (its reader notices the loss first); a window later than this without new audio
# was scored as the daemon stopped, not as the audio came.
LATE_WINDOW_S = 2.0
# A daemon heard from this long after one of its streams ended did not stop with it: that
# stream's last track ended with the stream (its audio ended), not cut by monitoring ending.
STREAM_ENDED_ALONE_S = 10.0
# A silence span's detail when its dead air was a stuck tone
STUCK_TONE = "stuck tone"
# A daemon restart shorter than this between two tracks of one title makes them one play.
RESTART_GAP_S = 120.0
# Statuses read past --until to find the end of an outage under way there (a station down
# for days repeats its "reconnecting" status on every change of reason, not on every try).
MAX_STATUSES_AFTER = 1000


@dataclass
class Span:
    """A stretch of wall-clock time on one stream; `end` None while it lasts."""

    stream: str
    kind: str                      # "off_air", "silence", "speech" or "not_recorded"
    start: float
    end: float | None
    detail: str = ""               # off air: the source's reasons; not recorded: the gap;
    #                                silence: "stuck tone" when the dead air was a tone
    # off air: where in its daemon session's audio the outage fell (the stream's sample count
    # when audio came back), when the status said so
    session: str | None = None
    sample: int | None = None
    # off air: its end is the first audio heard again; the station came back at most this
    # long before it (the time since the source's last attempt found it off air), where the
    # source said so (its "running" status's ``back_within_ms`` counter)
    back_within_s: float | None = None

    def length(self, now: float) -> float:
        return (now if self.end is None else self.end) - self.start

    def overlaps(self, start: float, end: float | None) -> bool:
        return (self.end is None or self.end > start) and (end is None or self.start < end)

    def to_dict(self) -> dict[str, Any]:
        out = {"stream": self.stream, "kind": self.kind, "start": self.start, "end": self.end,
               "detail": self.detail}
        if self.kind == "off_air":
            out["back_within_s"] = self.back_within_s
        return out


class TagValues(Mapping):
    """Tag -> a value, over a row of an array its report read at once, each value made when
    asked for: a day of 100 stations has 36,000 tracks of 50 tags, and most reports read a
    few of them. `index`: tag -> column, shared by the rows of one model."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: np.ndarray) -> None:
        self._index, self._values = index, values

    def __getitem__(self, tag: str) -> float:
        return float(self._values[self._index[tag]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def items(self):  # one conversion, not one per tag
        return zip(self._index, self._values.tolist(), strict=False)


class TrackTags(Mapping):
    """A track's figures per tag, ``{tag: {mean_raw, mean_smoothed, active_share}}`` (to 6
    decimals), over a row of its report's arrays, each made when asked for."""

    __slots__ = ("_index", "_figures", "leading")

    def __init__(self, index: dict[str, int], figures: np.ndarray,
                 leading: list[tuple[str, float]]) -> None:
        """`figures`: (3, tags) mean raw, mean smoothed and active share; `leading`: the
        track's top tags with their mean smoothed scores."""
        self._index, self._figures, self.leading = index, figures, leading

    def __getitem__(self, tag: str) -> dict[str, float]:
        raw, smoothed, share = self._figures[:, self._index[tag]].tolist()
        return {"mean_raw": raw, "mean_smoothed": smoothed, "active_share": share}

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def mean_smoothed(self) -> TagValues:
        return TagValues(self._index, self._figures[1])


@dataclass
class Entry:
    """One line of the as-run log."""

    stream: str
    title: str | None
    start: float
    end: float | None             # None: now playing
    audio_s: float                # the audio's length (a file may be tagged faster)
    windows: int
    top: list[tuple[str, float]]  # leading tags with their mean smoothed score (or share)
    active: list[str]
    partial: list[str] = field(default_factory=list)
    silence_s: float = 0.0
    # every tag's mean smoothed score (the track now playing: the share of its windows with
    # the tag on)
    scores: Mapping[str, float] = field(default_factory=dict)
    # its audio in its daemon session: [start_sample, end_sample); end None while it plays
    session: str | None = None
    start_sample: int = 0
    end_sample: int | None = None
    # the short-term loudness (LUFS) of its windows, where the daemon measured it
    short_term: list[float] = field(default_factory=list)
    # its integrated loudness as the daemon measured it on the track's audio (protocol 1.10)
    integrated_lufs: float | None = None
    # `top` and `scores` are shares of its windows with the tag on, not mean scores: no
    # track message summed it (it plays, or its end was never recorded)
    shares: bool = False
    tone_s: float = 0.0  # of `silence_s`, the stuck tone's
    # of its windows whose content the daemon said, those that were music, and all
    music_windows: int = 0
    said_windows: int = 0

    @property
    def loudness_below_gate(self) -> bool:
        """Measured, and no reading above the absolute gate: "below -70 LUFS"."""
        return bool(self.short_term) and self.loudness_lufs is None

    @property
    def loudness_lufs(self) -> float | None:
        """The track's integrated loudness as the daemon measured it, else from its windows'
        short-term readings (module docstring)."""
        if self.integrated_lufs is not None:
            return self.integrated_lufs
        return gated_loudness(self.short_term) if self.short_term else None

    def cut_by(self, span: Span) -> bool:
        """Whether an outage fell inside this track: by the audio's sample count where both
        know it (a track that starts as audio comes back was heard whole), else by time."""
        if span.stream != self.stream:
            return False
        if span.sample is not None and span.session == self.session:
            return self.start_sample < span.sample and (self.end_sample is None
                                                        or span.sample <= self.end_sample)
        return span.overlaps(self.start, self.end)

    def ended_into(self, span: Span) -> bool:
        """Whether its audio ended where an outage began (by the sample count): the station
        went off air at its end, and whatever ended the track later did not cut its audio."""
        return (span.stream == self.stream and span.sample is not None
                and span.session == self.session and self.end_sample is not None
                and self.start_sample < span.sample and self.end_sample <= span.sample
                and self.end is not None and span.start < self.end)

    @property
    def now_playing(self) -> bool:
        return self.end is None

    def to_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "title": self.title, "start": self.start,
                "end": self.end, "duration_s": None if self.end is None
                else round(self.end - self.start, 3), "audio_s": round(self.audio_s, 3),
                "windows": self.windows, "now_playing": self.now_playing, "shares": self.shares,
                "partial": self.partial, "top": [[t, round(v, 6)] for t, v in self.top],
                "active": self.active, "silence_s": round(self.silence_s, 3),
                "tone_s": round(self.tone_s, 3),
                "loudness_lufs": (None if self.loudness_lufs is None
                                  else round(self.loudness_lufs, 2)),
                "loudness_below_gate": self.loudness_below_gate}


def joined_loudness(first: Entry, second: Entry) -> float | None:
    """The integrated loudness of a play split in two by a restart: the parts' powers weighted
    by their audio (not BS.1770's gating over the whole, which needs the blocks; each part's
    own is); None unless both parts have theirs."""
    parts = [(e.integrated_lufs, e.audio_s) for e in (first, second)]
    if any(lufs is None for lufs, _ in parts) or sum(s for _, s in parts) <= 0:
        return None
    power = sum(10.0 ** ((lufs + 0.691) / 10.0) * s for lufs, s in parts if lufs is not None)
    return -0.691 + 10.0 * math.log10(power / sum(s for _, s in parts))


def gated_loudness(readings: Sequence[float]) -> float | None:
    """Loudness readings (LUFS) averaged in power after BS.1770's two gates; None when none
    passes the absolute gate."""
    lufs = np.asarray(readings, dtype=np.float64)
    kept = lufs[lufs > ABSOLUTE_GATE_LUFS]
    if kept.size == 0:
        return None
    power = np.power(10.0, (kept + 0.691) / 10.0)
    relative = loudness_of_power(float(power.mean())) + RELATIVE_GATE_LU
    return loudness_of_power(float(power[kept > relative].mean()))


def live_source(source: str | None) -> bool:
    return bool(source) and LIVE_SOURCE.match(source) is not None


def _streams(column, streams: Sequence[str] | None) -> list:
    return [column.in_(list(streams))] if streams else []


@dataclass
class _Down:
    """A stream off air while the statuses are read: its span, and what says when it ends."""

    span: Span
    reasons: list[str]
    session: str
    samples: int | None    # the source's sample count when the loss was noticed
    noticed: float         # the first status that said so


def off_air_spans(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                  until: float | None, now: float | None = None) -> list[Span]:
    """Spans off air that overlap [since, until], from every status up to `until`, and for
    one still under way at `until`, what ended it after (an --until inside an outage does not
    make it one still going).

    A span opens with a "reconnecting" or "failed" status and starts at the last audio
    received before it (_last_audio). It ends at the first of: audio back without its
    "running" status (the recorder was away: the source's sample count grew, in a later
    status or a window, _resumed); the "running" status of audio back; the daemon's "ended"
    status (it stopped while the station was off air: off air until then, not after); a
    status of another daemon session (the daemon was killed or restarted: off air until its
    last message); with `now`, its daemon session's silence for STALE_S (the daemon was
    killed and none followed: off air until its last message)."""
    st = schema.statuses.c
    # the statuses in the range, and each stream's last one before it (down: an outage that
    # began earlier)
    columns = (st.stream, st.session, st.sent_at, st.state, st.error, st.counters, st.seq)
    in_range = [*_streams(st.stream, streams),
                *([st.sent_at <= until] if until is not None else [])]
    if since is not None:
        before = (sa.select(sa.func.max(st.id)).where(*_streams(st.stream, streams),
                                                       st.sent_at < since)
                  .group_by(st.stream))
        in_range = [sa.or_(sa.and_(st.sent_at >= since, *in_range), st.id.in_(before))]
    query = sa.select(*columns).where(*in_range).order_by(st.stream, st.sent_at, st.seq)
    spans: list[Span] = []
    open_: dict[str, _Down] = {}  # stream -> its outage now

    def close(down: _Down, end: float, session: str | None, sample: int | None) -> None:
        down.span.start = _last_audio(conn, down)
        down.span.end = max(end, down.span.start)
        down.span.session, down.span.sample = session, sample
        del open_[down.span.stream]

    def ended_by(down: _Down, row: sa.Row) -> bool:
        """Whether the status `row` ends the outage `down` (closed where it does)."""
        samples = _samples(row.counters)
        if row.session != down.session:
            close(down, _session_end(conn, down, row.sent_at), down.session, down.samples)
        elif samples is not None and down.samples is not None and samples > down.samples:
            back = _resumed(conn, down, row.sent_at)
            close(down, row.sent_at if back is None else back, down.session, down.samples)
        elif row.state == "running":
            close(down, row.sent_at, row.session, samples)
            within = _counter(row.counters, "back_within_ms")
            down.span.back_within_s = None if within is None else within / 1000.0
        elif row.state == "ended":
            close(down, row.sent_at, down.session, down.samples)
        else:
            return False
        return True

    for row in conn.execute(query):
        samples = _samples(row.counters)
        down = open_.get(row.stream)
        if down is not None:
            ended_by(down, row)
        if row.state not in DOWN_STATES:
            continue
        if row.stream not in open_:
            span = Span(row.stream, "off_air", row.sent_at, None)
            open_[row.stream] = _Down(span, [], row.session, samples, row.sent_at)
            spans.append(span)
        down = open_[row.stream]
        if row.error and row.error not in down.reasons and len(down.reasons) < 3:
            down.reasons.append(row.error)
            down.span.detail = "; ".join(down.reasons)
    for down in list(open_.values()):  # off air at `until`: what ended it since, if anything
        if until is not None and any(ended_by(down, row) for row in conn.execute(
                sa.select(*columns).where(st.stream == down.span.stream, st.sent_at > until)
                .order_by(st.sent_at, st.seq).limit(MAX_STATUSES_AFTER))):
            continue
        back = _resumed(conn, down, None)
        if back is not None:
            close(down, back, down.session, down.samples)
            continue
        later = _session_end(conn, down, None, later=True)
        gone = None if later is not None or now is None else _gone(conn, down, now)
        if later is not None or gone is not None:
            close(down, later if later is not None else gone, down.session, down.samples)
        else:
            down.span.start = _last_audio(conn, down)
    return [s for s in spans if s.overlaps(since if since is not None else -np.inf, until)]


def _gone(conn: sa.Connection, down: _Down, now: float) -> float | None:
    """When an outage's daemon session was last heard from (its last heartbeat, else its
    last message for the stream), where that was over STALE_S before `now`: the daemon was
    killed, and monitoring ended then; None while it may still run."""
    dc = schema.daemons.c
    last = conn.execute(sa.select(dc.last_sent_at).where(dc.session == down.session)).scalar()
    last = max(last or 0.0, _session_end(conn, down, None))
    return last if now - last > STALE_S else None


def _samples(counters: str | None) -> int | None:
    return _counter(counters, "samples")


def _counter(counters: str | None, name: str) -> int | None:
    """An integer counter of a status's stored counters; None where it has none."""
    try:
        value = json.loads(counters or "{}").get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _last_audio(conn: sa.Connection, down: _Down) -> float:
    """When the last audio before an outage was received: the last window of its daemon
    session from before the loss was noticed, or scored within LATE_WINDOW_S of it (the
    windows of the audio the source already had may follow its status). A window sent later
    without new audio (the daemon scoring what was left as it stopped) is not audio
    received then; nor is a window of audio after the loss, once it came back."""
    sc = blocks.windows(conn).c
    before_back = ([sc.end_sample <= down.samples] if down.samples is not None else [])
    last = conn.execute(sa.select(sa.func.max(sc.sent_at)).where(
        sc.stream == down.span.stream, sc.session == down.session,
        sc.sent_at <= down.noticed + LATE_WINDOW_S, *before_back)).scalar()
    return down.noticed if last is None else min(last, down.noticed)


def _resumed(conn: sa.Connection, down: _Down, before: float | None) -> float | None:
    """When audio came back after an outage, from its windows where its "running" status
    was not recorded: the first window of its session with audio past the sample count at
    the loss, less the audio heard between (a live source's audio comes in real time);
    None when there is none, or the sample count is unknown."""
    if down.samples is None:
        return None
    sc = blocks.windows(conn).c
    first = conn.execute(sa.select(sc.sent_at, sc.end_s, sc.end_sample).where(
        sc.stream == down.span.stream, sc.session == down.session,
        sc.end_sample > down.samples, sc.sent_at > down.noticed,
        *([sc.sent_at <= before] if before is not None else []))
        .order_by(sc.sent_at).limit(1)).first()
    if first is None:
        return None
    heard = (first.end_s * (first.end_sample - down.samples) / first.end_sample
             if first.end_sample > 0 else 0.0)
    return max(down.noticed, first.sent_at - heard)


def _session_end(conn: sa.Connection, down: _Down, before: float | None,
                 later: bool = False) -> float | None:
    """The last message (status or window) of an outage's daemon session before `before`:
    when its monitoring ended, the daemon killed or restarted. With `later`, only when a
    later session of the stream sent something (else None: the session may still run)."""
    st, sc = schema.statuses.c, blocks.windows(conn).c
    stream = down.span.stream
    if later:
        newer = conn.execute(sa.select(sa.func.min(sc.sent_at)).where(
            sc.stream == stream, sc.session != down.session, sc.sent_at > down.noticed,
            *([sc.sent_at <= before] if before is not None else []))).scalar()
        if newer is None:
            return None
        before = newer
    ends = [conn.execute(sa.select(sa.func.max(t.sent_at)).where(
        t.stream == stream, t.session == down.session,
        *([t.sent_at < before] if before is not None else []))).scalar() for t in (st, sc)]
    return max([down.noticed, *[e for e in ends if e is not None]])


def _went_on(conn: sa.Connection, session: str, ended_at: float) -> bool:
    """Whether a daemon session went on after one of its streams ended: a window of any of
    its streams sent over STREAM_ENDED_ALONE_S later. Then the stream ended by itself, not as
    the daemon stopped."""
    st = schema.statuses.c
    streams = conn.execute(sa.select(st.stream).where(st.session == session)
                           .group_by(st.stream)).scalars().all()
    return blocks.sent_after(conn, streams, session, ended_at + STREAM_ENDED_ALONE_S)


def has_silences(conn: sa.Connection) -> bool:
    """Whether the database has the silences table (schema revision 0003 on)."""
    return sa.inspect(conn).has_table("silences")


def silence_spans(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                  until: float | None, now: float) -> list[Span]:
    """Dead air overlapping [since, until]: each "off" row of `silences` is a whole span,
    `duration_s` long from where its "on" row dates its start (else ending at its own
    `sent_at`); an "on" row without its "off" (same
    stream, session and start) is a silence under way, or, when its stream has sent no window
    for STALE_S, one that lasted as long as the recording did."""
    if not has_silences(conn):
        return []
    c, sc = schema.silences.c, blocks.windows(conn, streams, since, until).c
    # a silence longer than a day that began before the range is left out; `cause` only
    # where the database has it (revision 0007 adds it where 0003 lacked it)
    kept = {column["name"] for column in sa.inspect(conn).get_columns("silences")}
    cause = c.cause if "cause" in kept else sa.literal("silence")
    rows = conn.execute(sa.select(c.stream, c.session, c.sent_at, c.state, c.start_sample,
                                  c.duration_s, cause.label("cause"))
                        .where(*_streams(c.stream, streams),
                               *([c.sent_at >= since - 86400.0] if since is not None else []))
                        .order_by(c.sent_at, c.seq)).all()
    ended = {(r.stream, r.session, r.start_sample) for r in rows if r.state == "off"}
    # Where each silence began by its "on": sent with the window that ends where the silence
    # had lasted duration_s. An "off" comes a window after the silence's last quiet window
    # ends, so dating the start from it would put it a hop (and more) late.
    began = {(r.stream, r.session, r.start_sample): r.sent_at - r.duration_s
             for r in rows if r.state == "on"}
    spans = []
    for r in rows:
        start = r.sent_at - r.duration_s
        detail = STUCK_TONE if r.cause == "tone" else ""
        if r.state == "off":
            start = began.get((r.stream, r.session, r.start_sample), start)
            spans.append(Span(r.stream, "silence", start, min(r.sent_at, start + r.duration_s),
                              detail))
        elif r.state == "on" and (r.stream, r.session, r.start_sample) not in ended:
            last = conn.execute(sa.select(sa.func.max(sc.sent_at)).where(
                sc.stream == r.stream, sc.session == r.session)).scalar()
            end = None if last is None or now - last <= STALE_S else max(last, r.sent_at)
            spans.append(Span(r.stream, "silence", start, end, detail))
    return [s for s in spans if s.overlaps(since if since is not None else -np.inf, until)]


# Speech shorter than this is no span: the daemon's [content] min_s, the speech that turns
# the tags off.
SPEECH_MIN_S = 2.0


def speech_spans(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                 until: float | None) -> list[Span]:
    """Speech overlapping [since, until], from the windows whose content was speech
    (schema revision 0008): overlapping speech windows of one session make one span, from
    half way into its first window (where the daemon dates the speech's start) to its last
    window's end, in wall-clock time by when each window was sent; those of at least
    SPEECH_MIN_S of audio."""
    sc = blocks.windows(conn, streams, since, until).c
    rows = conn.execute(sa.select(sc.stream, sc.session, sc.sent_at, sc.start_s, sc.end_s)
                        .where(*_streams(sc.stream, streams), sc.content == "speech",
                               *([sc.sent_at >= since - 86400.0] if since is not None else []),
                               *([sc.sent_at <= until + 86400.0] if until is not None else []))
                        .order_by(sc.stream, sc.session, sc.start_s)).all()
    spans: list[Span] = []
    audio: list[float] = []  # each span's audio seconds, from its start to its last window's end
    last = None  # (stream, session, end_s) of the span being grown
    for r in rows:
        if last is not None and (r.stream, r.session) == last[:2] and r.start_s < last[2]:
            spans[-1].end = max(spans[-1].end, r.sent_at)
            audio[-1] += max(0.0, r.end_s - last[2])
            last = (r.stream, r.session, max(last[2], r.end_s))
        else:
            spans.append(Span(r.stream, "speech", r.sent_at - (r.end_s - r.start_s) / 2,
                              r.sent_at))
            audio.append((r.end_s - r.start_s) / 2)
            last = (r.stream, r.session, r.end_s)
    return [s for s, heard in zip(spans, audio, strict=True) if heard >= SPEECH_MIN_S
            and s.overlaps(since if since is not None else -np.inf, until)]


# "seq": a jump in seq, which says only that messages were published and not received
GAP_CAUSES = {"seq": "not received (lost on the way, or sent while the recorder was stopped)",
              "overflow": "dropped at the recorder's full queue",
              "rejected": "refused by the database", "failed": "not written"}


def gap_cause(cause: str) -> str:
    """A gap's cause in words (the `gaps` table's code, docs/history.md)."""
    return GAP_CAUSES.get(cause, cause)


def gap_spans(conn: sa.Connection, gaps: list[dict[str, Any]]) -> list[Span]:
    """For lost scores messages, the span of audio they covered: up to the window after the
    last one missing (or when the gap was noticed), from the window before the first one, or
    later by as much as the audio between the two windows where that is shorter (an outage
    between them, a live source's audio coming in real time, was not data lost)."""
    sc = blocks.windows(conn).c
    spans = []
    for gap in [g for g in gaps if g["msg_type"] == "scores"][:MAX_GAP_SPANS]:
        def window(seq: int) -> Any:
            return conn.execute(sa.select(sc.sent_at, sc.end_s).where(
                sc.stream == gap["stream"], sc.session == gap["session"],  # noqa: B023
                sc.seq == seq)).first()

        before = window(gap["first_seq"] - 1)
        after = window(gap["first_seq"] + gap["missed"])
        end = after.sent_at if after is not None else gap["detected_at"]
        start = before.sent_at if before is not None else end
        if before is not None and after is not None and after.end_s > before.end_s:
            start = min(end, max(start, end - (after.end_s - before.end_s)))
        spans.append(Span(gap["stream"], "not_recorded", start, end,
                          f"{gap['missed']} {gap['msg_type']} messages "
                          f"{gap_cause(gap['cause'])}"))
    return spans


def session_sources(conn: sa.Connection, sessions: set[str]) -> dict[tuple, str | None]:
    """(stream, session) -> the source its statuses name: whether it is live."""
    st = schema.statuses.c
    out: dict[tuple, str | None] = {}
    for row in conn.execute(sa.select(st.stream, st.session, st.source)
                            .where(st.session.in_(sorted(sessions)), st.source.is_not(None))
                            .group_by(st.stream, st.session, st.source)):
        out[(row.stream, row.session)] = row.source
    return out


def as_run(conn: sa.Connection, tracks: list[dict[str, Any]], off_air: list[Span],
           silence: list[Span], streams: Sequence[str] | None, since: float | None,
           until: float | None, top: int, now: float, tier: str = "windows") -> list[Entry]:
    """The as-run log: the tracks (load_history's, oldest first), each session's track after
    its last finished one (now playing, or cut where its end was never recorded), with what cut
    them and the silence in them; a play split by a daemon restart is one. With `tier`
    "rollups" (history.tiers), no window is read: no track under way, no loudness. On the
    report's connection: its windows, decoded once, serve it."""
    if tier == "rollups":
        blocks.load_none(conn, streams, since, until)
    else:
        blocks.windows(conn, streams, since, until)
    sources = session_sources(conn, {t["session"] for t in tracks})
    entries = []
    for t in tracks:
        source = sources.get((t["stream"], t["session"]))
        scores = t["tags"].mean_smoothed()
        entry = Entry(t["stream"], t["title"], t["started_at"], t["ended_at"],
                      t["end_s"] - t["start_s"], t["windows"],
                      list(t["tags"].leading),
                      list(headline_tags(t["active"], {
                          tag: t["tags"][tag]["active_share"] for tag in t["tags"]
                          if tag.lower() in HEADLINE_FAMILIES})), scores=scores,
                      session=t["session"], start_sample=t["start_sample"],
                      end_sample=t["end_sample"], integrated_lufs=t.get("loudness_lufs"))
        if live_source(source):
            if joined(t["start_sample"] == 0, t["heard_from_start"]):
                entry.partial.append("joined")
            if t["reason"] == "end" and not _went_on(conn, t["session"], t["ended_at"]):
                entry.partial.append("cut")
        entries.append(entry)
    if tier != "rollups":  # what only windows tell
        entries += open_tracks(conn, streams, since, until, top, now)
        add_loudness(conn, entries)
        add_content(conn, entries)
    outages, dead_air = _by_stream(off_air), _by_stream(silence)
    silent = {stream: _Spans(spans) for stream, spans in dead_air.items()}
    for entry in entries:
        down = outages.get(entry.stream, [])
        if "cut" in entry.partial and any(entry.ended_into(s) for s in down):
            entry.partial.remove("cut")  # its audio ended as the station went off air
        if any(entry.cut_by(s) for s in down):
            entry.partial.append("off air")
        for s in down:
            clip_to_air(entry, s)
        dead = [(s, min(entry.end if entry.end is not None else now,
                        s.end if s.end is not None else now) - max(entry.start, s.start))
                for s in (silent[entry.stream].overlapping(entry.start, entry.end)
                          if entry.stream in silent else ())]
        entry.silence_s = sum(inside for _, inside in dead)
        entry.tone_s = sum(inside for s, inside in dead if s.detail == STUCK_TONE)
        length = (entry.end if entry.end is not None else now) - entry.start
        mostly_not_music = entry.music_windows <= 0.5 * entry.said_windows
        if entry.silence_s > 0.5 * length or (entry.said_windows and mostly_not_music):
            entry.top, entry.active, entry.scores = [], [], {}
    return merge_restarts(entries)


class _Spans:
    """One stream's spans, found by the time they overlap without a look at each: a year of
    a station has 130,000 tracks and a silence or more a day."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = sorted(spans, key=lambda s: s.start)
        self.starts = [s.start for s in self.spans]
        # the latest end of the spans up to each (an open span: for ever)
        self.reach = np.maximum.accumulate(
            [np.inf if s.end is None else s.end for s in self.spans]).tolist()

    def overlapping(self, start: float, end: float | None) -> list[Span]:
        """The spans that overlap [start, end] (Span.overlaps), in order of their start."""
        j = len(self.spans) if end is None else bisect.bisect_left(self.starts, end)
        found = []
        while j > 0 and self.reach[j - 1] > start:  # none before j-1 reaches past `start`
            j -= 1
            if self.spans[j].overlaps(start, end):
                found.append(self.spans[j])
        return found[::-1]


def _by_stream(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in spans:
        out.setdefault(s.stream, []).append(s)
    return out


def clip_to_air(entry: Entry, span: Span) -> None:
    """A track's times within its audio, not an outage at its edge: one whose audio ended
    where an outage began ends when it began (the daemon closes a track when the stream ends
    or its title changes, maybe long after its audio stopped); one whose audio began where an
    outage ended (the station came on air after the daemon started, or came back) starts
    then. By the audio's sample count where both know it; else, for the end, by time."""
    if span.stream != entry.stream:
        return
    by_sample = span.sample is not None and span.session == entry.session
    if (by_sample and span.end is not None and entry.start_sample >= span.sample
            and entry.start < span.end and (entry.end is None or span.end < entry.end)):
        entry.start = span.end  # its audio began after the outage
    elif entry.end is not None and entry.start < span.start < entry.end:
        if by_sample and entry.end_sample is not None:
            ended_there = entry.end_sample <= span.sample
        else:
            ended_there = span.end is None or span.end >= entry.end
        if ended_there:
            entry.end = span.start


@dataclass
class _Status:
    state: str
    title: str | None
    source: str | None
    heard_from_start: bool | None


def _latest_status(conn: sa.Connection, stream: str, session: str) -> _Status | None:
    """The session's latest (state, title, source): from its last status message, or from a
    recorder's snapshot taken after it (a recorder started in the middle of a track missed the
    status that titled it; snapshots carry them since revision 0006); whether the title's
    track was heard from its start, as the status told it (a snapshot does not)."""
    st, pc = schema.statuses.c, schema.snapshots.c
    status = conn.execute(sa.select(st.state, st.title, st.source, st.sent_at.label("at"),
                                    st.heard_from_start)
                          .where(st.stream == stream, st.session == session)
                          .order_by(st.id.desc()).limit(1)).first()
    snapshot = conn.execute(sa.select(pc.state, pc.title, pc.source, pc.taken_at.label("at"))
                            .where(pc.stream == stream, pc.session == session,
                                   pc.state.is_not(None))
                            .order_by(pc.taken_at.desc()).limit(1)).first()
    if snapshot is not None and (status is None or snapshot.at > status.at):
        same = status is not None and status.title == snapshot.title
        return _Status(snapshot.state, snapshot.title, snapshot.source,
                       status.heard_from_start if same else None)
    return None if status is None else _Status(status.state, status.title, status.source,
                                               status.heard_from_start)


def joined(first_of_session: bool, heard_from_start: bool | None) -> bool:
    """Whether listening began after a track's start: as its source knew it, where it did;
    else for the first track of a daemon session (it began before the daemon listened, as far
    as anyone can tell)."""
    return heard_from_start is False or (heard_from_start is None and first_of_session)


def open_tracks(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                until: float | None, top: int, now: float) -> list[Entry]:
    """Per daemon session of each stream with windows in [since, until]: the track after its
    last finished one (the windows scored after it), titled by the session's latest status,
    its leading tags by the share of its windows in which they were active. On the stream's
    latest session, with its source up and windows within STALE_S, it is the track now
    playing; otherwise its end was never recorded (the daemon was killed, or stopped before the
    recorder heard its last track) and it ends at its last window, cut."""
    st, tc, sc = schema.statuses.c, schema.tracks.c, blocks.windows(conn, streams, since,
                                                                    until).c
    names = {row.id: schema.unpack_names(row.tags)
             for row in conn.execute(sa.select(schema.models.c.id, schema.models.c.tags))}
    sessions = conn.execute(
        sa.select(sc.stream, sc.session, sa.func.max(sc.sent_at).label("last_at"))
        .where(*_streams(sc.stream, streams),
               *([sc.sent_at <= until] if until is not None else []))
        .group_by(sc.stream, sc.session)
        .having(sa.func.max(sc.sent_at) >= (since if since is not None else 0.0))).all()
    newest: dict[str, float] = {}
    for row in sessions:
        newest[row.stream] = max(newest.get(row.stream, row.last_at), row.last_at)
    kinds = [sc.content]
    out = []
    for session in sessions:
        status = _latest_status(conn, session.stream, session.session)
        last = conn.execute(sa.select(tc.ended_at, tc.end_sample).where(
            tc.stream == session.stream, tc.session == session.session)
            .order_by(tc.end_sample.desc()).limit(1)).first()
        if until is not None and last is not None and last.ended_at > until:
            continue  # the track under way at `until` was finished: it is a track row
        # a window belongs to the track its end falls in; those up to `until` only
        after = [sc.end_sample > last.end_sample] if last is not None else []
        after += [sc.sent_at <= until] if until is not None else []
        counts: Counter[str] = Counter()
        windows = 0
        first_s = last_s = first_at = last_at = first_end_s = None
        for agg in conn.execute(
                sa.select(sc.model_id, sc.active, *kinds, sa.func.count().label("n"),
                          sa.func.min(sc.start_s).label("first_s"),
                          sa.func.max(sc.end_s).label("last_s"),
                          sa.func.min(sc.end_s).label("first_end_s"),
                          sa.func.min(sc.sent_at).label("first_at"),
                          sa.func.max(sc.sent_at).label("last_at"))
                .where(sc.stream == session.stream, sc.session == session.session, *after)
                .group_by(sc.model_id, sc.active, *kinds)):
            windows += agg.n
            for tag in names.get(agg.model_id, ()):
                counts.setdefault(tag, 0)
            first_s = agg.first_s if first_s is None else min(first_s, agg.first_s)
            last_s = agg.last_s if last_s is None else max(last_s, agg.last_s)
            first_at = agg.first_at if first_at is None else min(first_at, agg.first_at)
            first_end_s = (agg.first_end_s if first_end_s is None
                           else min(first_end_s, agg.first_end_s))
            last_at = agg.last_at if last_at is None else max(last_at, agg.last_at)
            if not content.carries_tags(getattr(agg, "content", None)):
                continue  # speech and dead air count for no tag
            for tag in schema.unpack_names(agg.active):
                counts[tag] += agg.n
        if not windows:
            continue
        if last is not None:
            start = last.ended_at
        else:  # the session's first track: its audio began a window before its first window
            began = conn.execute(sa.select(sa.func.min(st.sent_at)).where(
                st.stream == session.stream, st.session == session.session)).scalar()
            start = first_at - max(0.0, first_end_s or 0.0)
            if began is not None:  # not before the session (a file is read faster)
                start = max(start, min(began, first_at))
        ranked = [(tag, n / windows) for tag, n in counts.most_common(top) if n]
        entry = Entry(session.stream, status.title if status is not None else None, start,
                      None, (last_s - first_s) if first_s is not None else 0.0, windows, ranked,
                      list(headline_tags([tag for tag, share in ranked if share > 0.5],
                                         {tag: n / windows for tag, n in counts.items()})),
                      scores={tag: n / windows for tag, n in counts.items()},
                      session=session.session,
                      start_sample=last.end_sample if last is not None else 0, shares=True)
        source = status.source if status is not None else None
        if live_source(source) and joined(last is None, status.heard_from_start
                                          if status is not None else None):
            entry.partial.append("joined")
        playing = (session.last_at == newest[session.stream] and status is not None
                   and status.state not in ("ended", "failed") and now - last_at <= STALE_S
                   and (until is None or until >= now - 1.0))
        if not playing:  # its end was never recorded: it ends at its last window
            entry.end = last_at
            entry.partial.append("cut")
        out.append(entry)
    return out


def _by_session(entries: list[Entry]) -> dict[tuple[str, str | None], list[Entry]]:
    """Entries grouped by stream and session, the unit each window query reads."""
    groups: dict[tuple[str, str | None], list[Entry]] = {}
    for entry in entries:
        groups.setdefault((entry.stream, entry.session), []).append(entry)
    return groups


def add_loudness(conn: sa.Connection, entries: list[Entry]) -> None:
    """Each entry's windows' short-term loudness: one query per stream and session, the
    windows shared out by where they end (a window belongs to the track its end falls in)."""
    sc = blocks.windows(conn).c
    for (stream, session), group in _by_session(entries).items():
        rows = conn.execute(
            sa.select(sc.end_sample, sc.end_s, sc.short_term_lufs)
            .where(sc.stream == stream, sc.session == session,
                   sc.short_term_lufs.is_not(None))
            .order_by(sc.end_sample)).all()
        if not rows:
            continue
        ends = np.array([row.end_sample for row in rows])
        # a reading covers the 3 s before its window's end: one of a track lies inside it
        rate = next((row.end_sample / row.end_s for row in rows if row.end_s > 0), 0.0)
        reach = round(SHORT_TERM_BLOCKS * BLOCK_S * rate)
        for entry in group:
            first = int(np.searchsorted(ends, entry.start_sample + reach, side="left"))
            last = (len(ends) if entry.end_sample is None
                    else int(np.searchsorted(ends, entry.end_sample, side="right")))
            entry.short_term = [rows[i].short_term_lufs for i in range(first, last)]


def add_content(conn: sa.Connection, entries: list[Entry]) -> None:
    """How many of each entry's windows were music, of those whose content the daemon said:
    one query per stream and session, the windows shared out by where they end."""
    sc = blocks.windows(conn).c
    for (stream, session), group in _by_session(entries).items():
        rows = conn.execute(
            sa.select(sc.end_sample, sc.content)
            .where(sc.stream == stream, sc.session == session, sc.content.is_not(None))
            .order_by(sc.end_sample)).all()
        if not rows:
            continue
        ends = np.array([row.end_sample for row in rows])
        music = np.cumsum([0] + [row.content == "music" for row in rows])
        for entry in group:
            first = int(np.searchsorted(ends, entry.start_sample, side="right"))
            last = (len(ends) if entry.end_sample is None
                    else int(np.searchsorted(ends, entry.end_sample, side="right")))
            entry.said_windows = max(0, last - first)
            entry.music_windows = int(music[last] - music[first]) if last > first else 0


def merge_restarts(entries: list[Entry]) -> list[Entry]:
    """One play where a daemon restart split it: a track cut by its session's end followed,
    on the same stream within RESTART_GAP_S, by the first track of the next session with the
    same title. The merged play is marked "restart" (the restart's seconds were not heard);
    its leading tags are those of its longer part."""
    out: list[Entry] = []
    last: dict[str, Entry] = {}
    for entry in sorted(entries, key=operator.attrgetter("start", "stream")):
        before = last.get(entry.stream)
        if (before is not None and before.title is not None and entry.title == before.title
                and before.end is not None and "cut" in before.partial
                and "joined" in entry.partial and entry.session != before.session
                and 0.0 <= entry.start - before.end <= RESTART_GAP_S):
            longer = entry if entry.windows > before.windows else before
            before.end, before.end_sample = entry.end, entry.end_sample
            before.session = entry.session
            before.audio_s += entry.audio_s
            before.windows += entry.windows
            # the leading tags of the longer part (a finished part has mean scores, a part
            # whose end was never recorded the share of its windows with the tag on)
            before.scores, before.top, before.active = longer.scores, longer.top, longer.active
            before.shares = longer.shares
            before.silence_s += entry.silence_s
            before.short_term = before.short_term + entry.short_term
            before.integrated_lufs = joined_loudness(before, entry)
            kept = [p for p in before.partial if p != "cut"] + ["restart"]
            before.partial = kept + [p for p in entry.partial
                                     if p != "joined" and p not in kept]
            continue
        out.append(entry)
        last[entry.stream] = entry
    return out


# ---------------------------------------------------------------- play counts

def period_start(zone: Zone, unix_s: float, period: str) -> float:
    """The start of the day or ISO week (Monday) holding `unix_s`, in `zone`."""
    day = zone.at(unix_s).date()
    if period == "week":
        day -= timedelta(days=day.weekday())
    return zone.day_start(day)


def period_name(zone: Zone, start: float, period: str) -> str:
    when = zone.at(start)
    if period == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d} (from {when:%Y-%m-%d})"
    return f"{when:%Y-%m-%d} ({when:%a})"


def plays(entries: list[Entry], off_air: list[Span], zone: Zone, period: str | None,
          now: float) -> list[dict[str, Any]]:
    """Per stream and period (the whole range when `period` is None): tracks, plays per
    title and per tag (tracks in which the tag was active), time off air and silent. A track
    and an outage count in the period they started in; an outage's time is shared out over
    the periods it spans."""
    groups: dict[tuple[str, float | None], dict[str, Any]] = {}
    starts: dict[Any, float] = {}  # a day's start, found once (a year has 130,000 tracks)

    def start_of(at: float) -> float:
        day = zone.at(at).date()
        if period == "week":
            day -= timedelta(days=day.weekday())
        start = starts.get(day)
        if start is None:
            start = starts[day] = zone.day_start(day)
        return start

    def group(stream: str, at: float) -> dict[str, Any]:
        key = (stream, None if period is None else start_of(at))
        if key not in groups:
            groups[key] = {"stream": stream, "period": None if key[1] is None
                           else period_name(zone, key[1], period), "start": key[1],
                           "tracks": 0, "titles": Counter(), "tags": Counter(),
                           "off_air_s": 0.0, "off_air": 0, "silence_s": 0.0}
        return groups[key]

    for e in entries:
        g = group(e.stream, e.start)
        g["tracks"] += 1
        g["titles"][e.title or "(untitled)"] += 1
        g["tags"].update(e.active)
        g["silence_s"] += e.silence_s
    for s in off_air:
        group(s.stream, s.start)["off_air"] += 1  # counted where it began
        # its time shared out over the periods it spans (an outage over midnight: some in each)
        at, end = s.start, s.start + s.length(now)
        while at < end:
            upto = end if period is None else min(end, period_start(
                zone, period_start(zone, at, period) + PERIOD_STEP_S[period], period))
            group(s.stream, at)["off_air_s"] += upto - at
            at = upto
    out = []
    for (_, _), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        g["titles"] = g["titles"].most_common()
        g["tags"] = g["tags"].most_common()
        g["off_air_s"] = round(g["off_air_s"], 3)
        g["silence_s"] = round(g["silence_s"], 3)
        out.append(g)
    return out
