"""What a history database says about a time range (``streamtag history``). Per stream: each
tag's share of airtime, the as-run log (asrun.py: titles with start, end, length, partial,
leading tags, silence; the track now playing), play counts per title and tag (for the range,
or per day or week), the spans off air, silent and not recorded, the events, and what is known
to be missing (gaps, daemon restarts), as text, CSV or JSON; `plot.py` draws it.

Airtime: every scores window of a stream counts once (a daemon publishes one per hop), so a
tag's share of a stream's airtime is the share of its windows in the range in which the tag
was active. Times are wall-clock: a window or event is in the range when it was sent in it, a
track when it overlaps it. They are shown with their date in one zone (timeparse.Zone), named
in the report; the CSV writes ISO 8601 with the zone's offset.

Titles, tag names and sessions came from stations and peers: the text format keeps each on its
line (a line break in one becomes a space; the command strips what a terminal would act on),
and the CSV format writes them as cells a spreadsheet shows as text (``text.csv_text``).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gc
import io
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamtag.audio.loudness import ABSOLUTE_GATE_LUFS
from streamtag.history import asrun, blocks, content, schema, tiers
from streamtag.history.timeparse import Zone, local_zone, parse_time, span
from streamtag.text import counted, csv_text

__all__ = ["History", "StreamAirtime", "format_csv", "format_json", "format_text", "iso",
           "load_history", "parse_time", "strip_bins", "tag_share_bins"]

DEFAULT_TAGS = 5  # tags listed per stream and per track (--tags)
# A track's audio this much shorter than its span (an outage or a restart inside it) is shown
HEARD_SHOWN_S = 2.0


_paused_lock = threading.Lock()
_paused = [0, False]  # reports under way, and whether the collector was on before the first


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a report is built: a day of 100
    stations makes some millions of objects, none in a cycle, and the collector's full passes
    over them took a fifth of the report's time. It runs again (if it ran before) once the
    last report under way in the process is done, whether or not it failed, with a pass over
    what was made meanwhile: any cycle the report left (a connection, a file) goes then, not
    at some later pass."""
    with _paused_lock:
        if _paused[0] == 0:
            _paused[1] = gc.isenabled()
            gc.disable()
        _paused[0] += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused[0] -= 1
            resumed = _paused[0] == 0 and _paused[1]
            if resumed:
                gc.enable()
        if resumed:  # (outside the lock: a finaliser the pass runs may make a report)
            gc.collect(0)


def iso(unix_s: float, zone: Zone | None = None) -> str:
    """ISO 8601 with the zone's offset (UTC without one)."""
    return datetime.fromtimestamp(unix_s, UTC if zone is None else zone.tz).isoformat(
        timespec="milliseconds")


@dataclass
class StreamAirtime:
    windows: int = 0
    first_at: float | None = None
    last_at: float | None = None
    active: dict[str, int] = field(default_factory=dict)  # tag -> windows active
    tags: list[str] = field(default_factory=list)         # every tag its models name
    # what its windows were (protocol 1.7's content: music, speech, ...) -> windows; the
    # windows of daemons that did not say are in none
    content: dict[str, int] = field(default_factory=dict)

    def share(self, tag: str) -> float:
        return self.active.get(tag, 0) / self.windows if self.windows else 0.0

    def content_share(self) -> dict[str, float]:
        """Each content's share of the windows whose content is known, most first."""
        return content.shares(self.content)


# the `tracks` columns track_dicts reads, in this order
TRACK_COLUMNS = ("stream", "session", "title", "reason", "start_sample", "end_sample",
                 "heard_from_start", "started_at", "ended_at", "start_s", "end_s", "windows",
                 "active", "model_id", "mean_raw", "mean_smoothed", "active_share",
                 "loudness_lufs")


def track_dicts(rows: Sequence[Any], tags_of: dict[int, list[str]],
                top: int) -> list[dict[str, Any]]:
    """`tracks` rows (TRACK_COLUMNS) as the report's track dicts, in their order; the score
    arrays of each model's tracks unpacked, rounded and ranked at once."""
    if not rows:
        return []
    columns = list(zip(*rows, strict=True))  # column by column: 130,000 tracks a year
    models, blobs = columns[13], columns[14:17]
    # tracks read without their loudness (a database before revision 0011): none
    loudness = columns[17] if len(columns) > 17 else (None,) * len(rows)
    sizes = [np.fromiter(map(len, column), dtype=np.int64, count=len(rows)) for column in blobs]
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    if len(set(models)) == 1 and all((size == size[0]).all() for size in sizes):
        groups[(models[0], *(int(size[0]) for size in sizes))] = list(range(len(rows)))
    else:
        for i, key in enumerate(zip(models, *(size.tolist() for size in sizes), strict=True)):
            groups.setdefault(key, []).append(i)
    leading: list[Any] = [None] * len(rows)
    figures: list[Any] = [None] * len(rows)
    for (model_id, *_), members in groups.items():
        table = np.stack([np.frombuffer(b"".join([column[i] for i in members]),
                                        schema.SCORE_DTYPE).reshape(len(members), -1)
                          for column in blobs]).astype(np.float64)  # (3, tracks, tags)
        order = np.argsort(-table[1], axis=1, kind="stable")[:, :top]
        table = np.round(table, 6)
        values = np.take_along_axis(table[1], order, axis=1).tolist()
        table = table.transpose(1, 0, 2)  # (tracks, 3, tags)
        names = tags_of[model_id]
        index = {name: j for j, name in enumerate(names[:table.shape[2]])}
        ranked = np.array(names, dtype=object)[order].tolist()
        for k, i in enumerate(members):
            leading[i] = ranked[k]
            figures[i] = asrun.TrackTags(index, table[k],
                                         list(zip(ranked[k], values[k], strict=True)))
    names_of: dict[str, list[str]] = {}  # the active lists repeat: each text read once
    out = []
    for (stream, session, title, reason, start_sample, end_sample, heard_from_start,
         started_at, ended_at, start_s, end_s, windows, active_text, top_tags, figure,
         loudness_lufs) in zip(*columns[:13], leading, figures, loudness, strict=True):
        active = names_of.get(active_text)
        if active is None:
            active = names_of[active_text] = schema.unpack_names(active_text)
        out.append({
            "stream": stream, "session": session, "title": title, "reason": reason,
            "start_sample": start_sample, "end_sample": end_sample,
            "heard_from_start": heard_from_start, "started_at": started_at,
            "ended_at": ended_at, "start_s": start_s, "end_s": end_s, "windows": windows,
            "active": list(active), "top": top_tags, "tags": figure,
            "loudness_lufs": loudness_lufs})
    return out


@dataclass
class History:
    since: float | None
    until: float | None
    airtime: dict[str, StreamAirtime]
    tracks: list[dict[str, Any]]
    events: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    restarts: list[dict[str, Any]]
    # Control snapshots the recorder took when it (re)started: the tag states then.
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    zone: Zone = field(default_factory=local_zone)
    now: float = field(default_factory=time.time)
    top: int = DEFAULT_TAGS
    as_run: list[asrun.Entry] = field(default_factory=list)
    off_air: list[asrun.Span] = field(default_factory=list)
    silence: list[asrun.Span] = field(default_factory=list)
    speech: list[asrun.Span] = field(default_factory=list)  # windows of speech (1.7)
    not_recorded: list[asrun.Span] = field(default_factory=list)
    period: str | None = None  # plays per "day" or "week"; None: for the whole range
    plays: list[dict[str, Any]] = field(default_factory=list)
    # stream -> the station's name its latest status gave (icy-name), where it named one
    stations: dict[str, str] = field(default_factory=dict)
    # content shares per "hour" or "day" (content.by_period's rows); None: not asked for
    content_by: str | None = None
    content_periods: list[dict[str, Any]] = field(default_factory=list)
    # what it was read from: "windows", or "rollups" (per minute; history.tiers)
    tier: str = tiers.WINDOWS
    # each tag's airtime per "hour" or "day" (airtime_by_period's rows); None: not asked for
    airtime_by: str | None = None
    airtime_periods: list[dict[str, Any]] = field(default_factory=list)

    @functools.cached_property
    def reference_offset(self) -> timedelta | None:
        """The zone's offset at the range's end, which the text report's first line names."""
        return self.zone.at(_reference(self)).utcoffset()

    def streams(self) -> list[str]:
        return sorted(set(self.airtime) | {t["stream"] for t in self.tracks}
                      | {e.stream for e in self.as_run} | {s.stream for s in self.off_air}
                      | {e["stream"] for e in self.events})

    def to_dict(self, events: bool = True) -> dict[str, Any]:
        return {
            "since": self.since, "until": self.until, "tz": self.zone.name, "tier": self.tier,
            "streams": {s: {"windows": a.windows, "first_at": a.first_at, "last_at": a.last_at,
                            "station": self.stations.get(s),
                            "airtime": {t: a.share(t) for t in a.tags},
                            "content": a.content_share()}
                        for s, a in sorted(self.airtime.items())},
            "asrun": [e.to_dict() for e in self.as_run],
            "off_air": [s.to_dict() for s in self.off_air],
            "silence": [s.to_dict() for s in self.silence],
            "speech": [s.to_dict() for s in self.speech],
            "not_recorded": [s.to_dict() for s in self.not_recorded],
            "period": self.period, "plays": self.plays,
            "content_by": self.content_by, "content_periods": self.content_periods,
            "airtime_by": self.airtime_by, "airtime_periods": self.airtime_periods,
            "tracks": [{**t, "tags": {tag: t["tags"][tag] for tag in t["tags"]}}
                       for t in self.tracks], **({"events": self.events} if events else {}),
            "events_total": len(self.events), "gaps": self.gaps,
            "restarts": self.restarts, "snapshots": self.snapshots}


def _in_range(column, since: float | None, until: float | None) -> list:
    out = []
    if since is not None:
        out.append(column >= since)
    if until is not None:
        out.append(column <= until)
    return out


def _streams(column, streams: Sequence[str] | None) -> list:
    return [column.in_(list(streams))] if streams else []


def model_tags(conn: sa.Connection) -> dict[int, list[str]]:
    return {row.id: schema.unpack_names(row.tags)
            for row in conn.execute(sa.select(schema.models.c.id, schema.models.c.tags))}


@collector_paused()
def load_history(engine: Engine, streams: Sequence[str] | None = None,
                 since: float | None = None, until: float | None = None, *,
                 top: int = DEFAULT_TAGS, zone: Zone | None = None, period: str | None = None,
                 now: float | None = None, content_by: str | None = None,
                 tier: str | None = None, airtime_by: str | None = None) -> History:
    """The history of `streams` (all when None) in [since, until]; `top` tags per track and
    stream; play counts per `period` ("day", "week") in `zone`, or for the range (None);
    content shares per `content_by` ("hour", "day") in `zone` too, where asked, and each
    tag's airtime per `airtime_by` ("hour", "day") likewise. Read from
    `tier` ("windows" or "rollups"; None: as history.tiers.choose says)."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if period is not None and period not in asrun.PERIODS:
        raise ValueError(f"period must be one of {', '.join(asrun.PERIODS)}, got {period!r}")
    if content_by is not None and content_by not in content.PERIODS:
        raise ValueError(f"content_by must be one of {', '.join(content.PERIODS)}, got "
                         f"{content_by!r}")
    if airtime_by is not None and airtime_by not in content.PERIODS:
        raise ValueError(f"airtime_by must be one of {', '.join(content.PERIODS)}, got "
                         f"{airtime_by!r}")
    zone = zone or local_zone()
    now = time.time() if now is None else now
    s = schema
    airtime: dict[str, StreamAirtime] = {}
    if tier is not None and tier not in tiers.TIERS:
        raise ValueError(f"tier must be one of {', '.join(tiers.TIERS)}, got {tier!r}")
    with engine.connect() as conn:
        tags_of = model_tags(conn)
        tier = tier or tiers.choose(conn, streams, since, until)
        minutes = None  # the rollups' tags, read once for the airtime and per period
        if tier == tiers.ROLLUPS:
            minutes = tiers.active_minutes(conn, streams, since, until)
            airtime = rollup_airtime(conn, streams, since, until, tags_of, minutes)
            sc = blocks.load_none(conn, streams, since, until).c
        else:
            sc = blocks.windows(conn, streams, since, until).c
        # The database counts the windows per set of active tags (and content); there are
        # few such sets, so a day of 64 stations is aggregated where it lies rather than row
        # by row here.
        kinds = [sc.content]
        query = (sa.select(sc.stream, sc.model_id, sc.active, *kinds,
                           sa.func.count().label("n"),
                           sa.func.min(sc.sent_at).label("first_at"),
                           sa.func.max(sc.sent_at).label("last_at"))
                 .where(*_streams(sc.stream, streams), *_in_range(sc.sent_at, since, until))
                 .group_by(sc.stream, sc.model_id, sc.active, *kinds)
                 .order_by(sc.stream, sc.model_id, sc.active))
        for row in conn.execute(query) if tier == tiers.WINDOWS else ():
            a = airtime.get(row.stream)
            if a is None:
                a = airtime[row.stream] = StreamAirtime(first_at=row.first_at,
                                                        last_at=row.last_at)
            a.windows += row.n
            a.first_at = min(a.first_at, row.first_at)
            a.last_at = max(a.last_at, row.last_at)
            for tag in tags_of[row.model_id]:
                if tag not in a.active:
                    a.active[tag] = 0
                    a.tags.append(tag)
            if not content.carries_tags(getattr(row, "content", None)):
                continue  # speech and dead air are no tag's airtime
            for tag in schema.unpack_names(row.active):
                a.active[tag] += row.n
        if tier == tiers.WINDOWS:
            for stream, counted in content.counts(conn, streams, since, until).items():
                if stream in airtime:
                    airtime[stream].content = counted
        content_periods = ([] if content_by is None else content.by_period(
            conn, streams, since, until, zone, content_by, now if until is None else until,
            tier))
        airtime_periods = ([] if airtime_by is None else airtime_by_period(
            conn, streams, since, until, zone, airtime_by, now if until is None else until,
            tier, tags_of, airtime, minutes))

        tc = s.tracks.c
        overlap = []
        if since is not None:
            overlap.append(tc.ended_at >= since)
        if until is not None:
            overlap.append(tc.started_at <= until)
        tracks = track_dicts(conn.execute(
            sa.select(*(tc[name] for name in TRACK_COLUMNS))
            .where(*_streams(tc.stream, streams), *overlap)
            .order_by(tc.started_at, tc.stream)).all(), tags_of, top)

        ec = s.events.c
        events = [{"stream": r.stream, "sent_at": r.sent_at, "time_s": r.time_s, "tag": r.tag,
                   "state": r.state, "score": r.score}
                  for r in conn.execute(
                      sa.select(ec.stream, ec.sent_at, ec.time_s, ec.tag, ec.state, ec.score)
                      .where(*_streams(ec.stream, streams), *_in_range(ec.sent_at, since, until))
                      .order_by(ec.sent_at, ec.stream, ec.seq))]

        gc = s.gaps.c
        gaps = [{"stream": r.stream, "session": r.session, "msg_type": r.msg_type,
                 "first_seq": r.first_seq, "missed": r.missed, "cause": r.cause,
                 "detected_at": r.detected_at}
                for r in conn.execute(
                    sa.select(s.gaps).where(*_streams(gc.stream, streams),
                                            *_in_range(gc.detected_at, since, until),
                                            gc.msg_type != "heartbeat")
                    .order_by(gc.detected_at, gc.id))]

        rc = s.sessions.c
        restarts = [{"stream": r.stream, "session": r.session,
                     "previous_session": r.previous_session, "first_sent_at": r.first_sent_at}
                    for r in conn.execute(
                        sa.select(s.sessions).where(
                            *_streams(rc.stream, streams), rc.restarted.is_(True),
                            *_in_range(rc.first_sent_at, since, until))
                        .order_by(rc.first_sent_at))]

        pc = s.snapshots.c
        snapshots = [{"stream": r.stream, "session": r.session, "taken_at": r.taken_at,
                      "active": s.unpack_names(r.active), "windows": r.windows}
                     for r in conn.execute(
                         sa.select(s.snapshots).where(*_streams(pc.stream, streams),
                                                      *_in_range(pc.taken_at, since, until))
                         .order_by(pc.taken_at, pc.id))]
        # the outages at the edges of the range's tracks too: they end and cut them
        lo = min([since, *(t["started_at"] for t in tracks)]) if since is not None else None
        hi = (max([until, *(t["ended_at"] for t in tracks if t["ended_at"] is not None)])
              if until is not None else None)
        around = asrun.off_air_spans(conn, streams, lo, hi, now)
        off_air = [s for s in around if s.overlaps(-np.inf if since is None else since, until)]
        stations = station_names(conn, streams, until)
        silence = asrun.silence_spans(conn, streams, since, until, now)
        speech = asrun.speech_spans(conn, streams, since, until)
        not_recorded = asrun.gap_spans(conn, gaps)
        entries = asrun.as_run(conn, tracks, around, silence, streams, since, until, top,
                               now, tier)
    return History(since, until, airtime, tracks, events, gaps, restarts, snapshots, zone=zone,
                   now=now, top=top, as_run=entries, off_air=off_air, silence=silence,
                   speech=speech,
                   not_recorded=not_recorded, period=period,
                   plays=asrun.plays(entries, off_air, zone, period, now), stations=stations,
                   content_by=content_by, content_periods=content_periods, tier=tier,
                   airtime_by=airtime_by, airtime_periods=airtime_periods)


def rollup_airtime(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                   until: float | None, tags_of: dict[int, list[str]],
                   minutes: tiers.Minutes | None = None) -> dict[str, StreamAirtime]:
    """Each stream's airtime and content from its rollups (history.tiers; `minutes`: their
    tags, where read already)."""
    out = {}
    for stream, a in tiers.airtime(conn, streams, since, until, minutes).items():
        air = out[stream] = StreamAirtime(windows=a["windows"], first_at=a["first_at"],
                                          last_at=a["last_at"], content=a["content"])
        for model_id, counts in sorted(a["active"].items()):
            for tag, n in zip(tags_of[model_id], counts.tolist(), strict=False):
                if tag not in air.active:
                    air.active[tag] = 0
                    air.tags.append(tag)
                air.active[tag] += n
    return out


def airtime_by_period(conn: sa.Connection, streams: Sequence[str] | None,
                      since: float | None, until: float | None, zone: Zone, period: str,
                      reference: float, tier: str, tags_of: dict[int, list[str]],
                      airtime: dict[str, StreamAirtime],
                      minutes: tiers.Minutes | None = None) -> list[dict[str, Any]]:
    """Per stream and hour or day of `zone` with windows in [since, until]: ``{stream,
    period (its label), start, end (Unix seconds), windows, airtime {tag: share}}`` (every
    tag of the stream's `airtime`, in its order), in order of stream and time: each tag's
    share of the period's windows, as the range's airtime counts them. Windows are counted
    per quarter hour (UTC) and each quarter given to the period it begins in
    (history.content); from the rollups, as `tier` says, a minute lies in one quarter
    (`minutes`: tiers.active_minutes of the range, where read already)."""
    windows: dict[tuple[str, float], int] = {}
    active: dict[tuple[str, float], dict[str, int]] = {}
    starts = content.PeriodOf(zone, period)

    def period_of(q: int) -> float:
        return starts(q * content.QUARTER_S)

    if tier == tiers.ROLLUPS:
        if minutes is None:
            minutes = tiers.active_minutes(conn, streams, since, until)
        for (stream, model_id), (quarters, per_quarter, totals) in tiers.active_quarters(
                minutes, content.QUARTER_S).items():
            # the quarters in order, so each period's are a run: added up at once
            periods = np.array([period_of(q) for q in quarters.tolist()])
            runs = np.flatnonzero(np.r_[True, periods[1:] != periods[:-1]])
            for start, n, counts in zip(periods[runs].tolist(),
                                        np.add.reduceat(per_quarter, runs).tolist(),
                                        np.add.reduceat(totals, runs, axis=0).tolist(),
                                        strict=True):
                key = (stream, start)
                windows[key] = windows.get(key, 0) + n
                into = active.setdefault(key, {})
                for tag, m in zip(tags_of[model_id], counts, strict=False):
                    into[tag] = into.get(tag, 0) + m
    else:
        sc = blocks.windows(conn, streams, since, until).c
        quarter = content.floor_of(conn.dialect.name,
                                   sc.sent_at / content.QUARTER_S).label("quarter")
        for row in conn.execute(
                sa.select(sc.stream, quarter, sc.active, sc.content,
                          sa.func.count().label("n"))
                .where(*_streams(sc.stream, streams), *_in_range(sc.sent_at, since, until))
                .group_by(sc.stream, quarter, sc.active, sc.content)):
            key = (row.stream, period_of(int(row.quarter)))
            windows[key] = windows.get(key, 0) + row.n
            summed = active.setdefault(key, {})
            if content.carries_tags(row.content):  # speech and dead air: no tag's airtime
                for tag in schema.unpack_names(row.active):
                    summed[tag] = summed.get(tag, 0) + row.n
    out = []
    for (stream, start), n in sorted(windows.items()):
        tags = airtime[stream].tags if stream in airtime else []
        counted = active.get((stream, start), {})
        out.append({"stream": stream, "period": content.period_label(zone, start, period,
                                                                     reference),
                    "start": start, "end": content.period_end(zone, start, period),
                    "windows": n,
                    "airtime": {tag: round(counted.get(tag, 0) / n, 6) if n else 0.0
                                for tag in tags}})
    return out


def station_names(conn: sa.Connection, streams: Sequence[str] | None,
                  until: float | None) -> dict[str, str]:
    """Stream -> the station's name (icy-name) its latest status up to `until` that named one
    gave; none in a database from before schema revision 0004."""
    st = schema.statuses.c
    if "station" not in {c["name"] for c in sa.inspect(conn).get_columns("statuses")}:
        return {}
    latest = (sa.select(st.stream, sa.func.max(st.id).label("id"))
              .where(*_streams(st.stream, streams), st.station.is_not(None),
                     *([st.sent_at <= until] if until is not None else []))
              .group_by(st.stream).subquery())
    rows = conn.execute(sa.select(st.stream, st.station)
                        .join(latest, schema.statuses.c.id == latest.c.id))
    return {row.stream: row.station for row in rows}


def tag_share_bins(engine: Engine, stream: str, tags: list[str], since: float, until: float,
                   bins: int, tier: str | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """(bin edges in Unix seconds, windows per bin, share active per tag and bin); the
    database counts the windows per bin and set of active tags (and content: a window of
    speech or dead air has no tag on). From `tier` (None: as history.tiers.choose says)."""
    edges, counts, share, _ = strip_bins(engine, stream, tags, since, until, bins, tier)
    return edges, counts, share


def strip_bins(engine: Engine, stream: str, tags: list[str], since: float, until: float,
               bins: int, tier: str | None = None) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray, np.ndarray]:
    """A stream's strip, in one read: tag_share_bins' (edges, windows per bin, share active
    per tag and bin) and content_bins' windows per CONTENT_KINDS kind and bin."""
    edges = np.linspace(since, until, bins + 1)
    width = (until - since) / bins
    active = np.zeros((len(tags), bins))
    counts = np.zeros(bins)
    kinds = np.zeros((len(content.CONTENT_KINDS), bins))
    kind_of = {kind: i for i, kind in enumerate(content.CONTENT_KINDS)}
    index = {tag: i for i, tag in enumerate(tags)}
    with engine.connect() as conn:
        if (tier or tiers.choose(conn, [stream], since, until)) == tiers.ROLLUPS:
            counts, by_model, per_bin = tiers.bins(conn, stream, since, until, bins)
            tags_of = model_tags(conn)
            for model_id, table in by_model.items():
                for j, tag in enumerate(tags_of[model_id][:table.shape[1]]):
                    if tag in index:
                        active[index[tag]] += table[:, j]
            for b, counted in enumerate(per_bin):
                for kind, n in counted.items():
                    if kind in kind_of:
                        kinds[kind_of[kind], b] += n
        else:
            sc = blocks.windows(conn, [stream], since, until, margin_s=0.0).c
            offset = (sc.sent_at - sa.literal(since, sa.Float)) / sa.literal(width, sa.Float)
            bin_of = content.floor_of(engine.dialect.name, offset).label("bin")
            query = (sa.select(bin_of, sc.active, sc.content, sa.func.count().label("n"))
                     .where(sc.stream == stream, sc.sent_at >= since, sc.sent_at <= until)
                     .group_by(bin_of, sc.active, sc.content))
            for row in conn.execute(query):
                b = min(max(int(row.bin), 0), bins - 1)
                counts[b] += row.n
                if row.content in kind_of:
                    kinds[kind_of[row.content], b] += row.n
                if not content.carries_tags(row.content):
                    continue
                for tag in schema.unpack_names(row.active):
                    if tag in index:
                        active[index[tag], b] += row.n
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(counts > 0, active / np.maximum(counts, 1), np.nan)
    return edges, counts, share, kinds


# ---------------------------------------------------------------- formats

_LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def one_line(text: Any) -> str:
    """Text from outside kept on the line it is shown in."""
    return _LINE_BREAK.sub(" ", str(text))


def _names(names: Sequence[str]) -> str:
    return one_line(", ".join(names)) or "-"


def _reference(history: History) -> float:
    """The moment whose offset the report's first line names: the range's end."""
    return history.now if history.until is None else history.until


def _mark(history: History, when: datetime, unix_s: float) -> str:
    """The zone's mark of a time (Zone.mark against the range's end), the end's offset found
    once per report: an as-run log of a day of 100 stations shows 72,000 times."""
    reference = history.reference_offset
    if when.utcoffset() == reference:
        return ""
    return history.zone.mark(unix_s, _reference(history))


def _when(history: History, unix_s: float) -> str:
    """A time with its date; with its zone's abbreviation where the offset is not the one the
    first line names (clocks changed in the range)."""
    when = history.zone.at(unix_s)
    return when.strftime("%Y-%m-%d %H:%M:%S") + _mark(history, when, unix_s)


def _until(history: History, unix_s: float | None, start: float) -> str:
    """An end time: the clock alone when it falls on its start's date."""
    if unix_s is None:
        return "now"
    end, begin = history.zone.at(unix_s), history.zone.at(start)
    return (end.strftime("%H:%M:%S" if end.date() == begin.date() else "%Y-%m-%d %H:%M:%S")
            + _mark(history, end, unix_s))


def _range(history: History) -> str:
    if history.since is None and history.until is None:
        return "everything recorded"
    since = "the start" if history.since is None else _when(history, history.since)
    until = "now" if history.until is None else _when(history, history.until)
    return f"{since} to {until}"


def _spans(history: History, lines: list[str], what: str, spans: list[asrun.Span]) -> None:
    if not spans:
        return
    total = sum(s.length(history.now) for s in spans)
    lines.append(f"  {what} ({len(spans)}, {span(total)} in all):")
    for s in spans:
        end = "still" if s.end is None else _until(history, s.end, s.start)
        back = ""
        if s.back_within_s is not None and s.end is not None:  # off air: how sure its end is
            back = (f"  back at {_until(history, s.end, s.start)} (first audio heard; on air "
                    f"again within {s.back_within_s:.1f} s before)")
        lines.append(f"    {_when(history, s.start)} to {end}  {span(s.length(history.now)):>8}"
                     + (f"  {one_line(s.detail)}" if s.detail else "") + back)


def _content_table(history: History, lines: list[str], stream: str) -> None:
    """The stream's content shares per hour or day, one row each, a column per content
    heard (of the windows whose content is known) and the windows."""
    rows = [r for r in history.content_periods if r["stream"] == stream]
    if not rows:
        return
    kinds = [k for k in content.CONTENT_KINDS if any(k in r["counts"] for r in rows)]
    label = max(len(r["period"]) for r in rows)
    lines.append(f"  content per {history.content_by} (share of the windows whose content "
                 "is known):")
    lines.append(f"    {history.content_by:<{label}}" + "".join(f"  {k:>7}" for k in kinds)
                 + "  windows")
    for r in rows:
        cells = [f"{100 * r['content'][k]:6.1f}%" if k in r["content"] else f"{'-':>7}"
                 for k in kinds]
        lines.append(f"    {r['period']:<{label}}" + "".join(f"  {c}" for c in cells)
                     + f"  {r['windows']:>7}")


def _airtime_table(history: History, lines: list[str], stream: str) -> None:
    """The stream's airtime per hour or day: one row each, a column per leading tag of the
    range (--tags of them) and the windows."""
    rows = [r for r in history.airtime_periods if r["stream"] == stream]
    a = history.airtime.get(stream)
    if not rows or a is None:
        return
    tags = [t for t in sorted(a.tags, key=lambda t: -a.share(t))
            if a.share(t) >= 0.0005][:history.top]
    label = max(len(r["period"]) for r in rows)
    width = [max(7, len(one_line(t))) for t in tags]
    lines.append(f"  airtime per {history.airtime_by} (share of the windows; the range's "
                 f"top {len(tags)} tags):")
    lines.append(f"    {history.airtime_by:<{label}}"
                 + "".join(f"  {one_line(t):>{w}}" for t, w in zip(tags, width, strict=True))
                 + "  windows")
    for r in rows:
        lines.append(f"    {r['period']:<{label}}"
                     + "".join(f"  {100 * r['airtime'].get(t, 0.0):{w - 1}.1f}%"
                               for t, w in zip(tags, width, strict=True))
                     + f"  {r['windows']:>7}")


@collector_paused()
def format_text(history: History, events: bool = False) -> str:
    """The report for a person; `events`: list every tag on/off (else only their count)."""
    streams = history.streams()
    lines = [f"times in {history.zone.label(_reference(history))}; {_range(history)}"]
    if history.tier == tiers.ROLLUPS:
        lines.append("read from per-minute rollups (the range's windows are too many or no "
                     "longer kept): shares to the minute; no track under way, speech or "
                     "loudness per track")
    if not streams:
        return "\n".join(lines) + "\nnothing recorded in this range\n"
    as_run: dict[str, list[asrun.Entry]] = {}
    for e in history.as_run:
        as_run.setdefault(e.stream, []).append(e)
    for stream in streams:
        a = history.airtime.get(stream, StreamAirtime())
        when = (f"{_when(history, a.first_at)} to {_until(history, a.last_at, a.first_at)}"
                if a.windows else "no windows")
        station = history.stations.get(stream)
        named = f" ({one_line(station)})" if station else ""
        lines.append(f"{one_line(stream)}{named}: {counted(a.windows, 'window')}, {when}")
        if a.windows:
            heard = [t for t in sorted(a.tags, key=lambda t: -a.share(t))
                     if a.share(t) >= 0.0005]  # what rounds to 0.0 % says nothing
            shown = heard[:history.top]
            lines.append(f"  airtime (top {len(shown)} of {len(a.tags)} tags"
                         + (f"; {len(a.tags) - len(heard)} never active" if len(heard)
                            < len(a.tags) else "") + "): "
                         + ("  ".join(f"{one_line(t)} {100 * a.share(t):.1f}%" for t in shown)
                            or "none active"))
        if a.content:
            lines.append("  content: " + "  ".join(f"{one_line(kind)} {100 * share:.1f}%"
                                                   for kind, share in a.content_share().items()))
        _content_table(history, lines, stream)
        _airtime_table(history, lines, stream)
        entries = as_run.get(stream, [])
        if entries:
            lines.append(f"  as-run ({len(entries)}):")
        for e in entries:
            notes = []
            if e.now_playing:
                notes.append("NOW PLAYING")
            if e.partial:
                notes.append("partial: " + ", ".join(e.partial))
            if e.silence_s - e.tone_s >= 0.5:
                notes.append(f"silence {span(e.silence_s - e.tone_s)}")
            if e.tone_s >= 0.5:
                notes.append(f"stuck tone {span(e.tone_s)}")
            if e.loudness_lufs is not None:  # [health] loudness: EBU R128 from the windows
                notes.append(f"{e.loudness_lufs:.1f} LUFS")
            elif e.loudness_below_gate:
                notes.append(f"below {ABSOLUTE_GATE_LUFS:g} LUFS")
            # a finished track's mean smoothed scores; one no track message summed (playing,
            # or cut where its daemon was killed), its tags' shares of its windows
            top = _names([f"{name} {100 * value:.0f}%" if e.shares else f"{name} {value:.2f}"
                          for name, value in e.top])
            length = span((history.now if e.end is None else e.end) - e.start)
            if e.end is not None and e.audio_s < e.end - e.start - HEARD_SHOWN_S:
                notes.append(f"heard {span(e.audio_s)}")  # an outage or a restart inside
            lines.append(f"    {_when(history, e.start)}  {_until(history, e.end, e.start):>8}"
                         f"  {length:>8}  {one_line(e.title or '(untitled)')}"
                         + (f"  [{'; '.join(notes)}]" if notes else "") + f"  tags: {top}")
        _spans(history, lines, "OFF AIR", [s for s in history.off_air if s.stream == stream])
        _spans(history, lines, "silence", [s for s in history.silence if s.stream == stream
                                           and s.detail != asrun.STUCK_TONE])
        _spans(history, lines, "stuck tone (a steady tone, no music)",
               [s for s in history.silence if s.stream == stream
                and s.detail == asrun.STUCK_TONE])
        _spans(history, lines, "speech", [s for s in history.speech if s.stream == stream])
        _spans(history, lines, "not recorded (data lost)",
               [s for s in history.not_recorded if s.stream == stream])
        for g in (g for g in history.plays if g["stream"] == stream):
            period = f" {g['period']}" if g["period"] else ""
            head = f"  plays{period}: {counted(g['tracks'], 'track')}"
            if g["off_air"]:
                head += f", off air {g['off_air']}x ({span(g['off_air_s'])})"
            if g["silence_s"] >= 0.5:
                head += f", silence {span(g['silence_s'])}"
            lines.append(head)
            if g["titles"]:
                lines.append("    by title: " + _names(
                    [f"{title} {n}x" for title, n in g["titles"][:10]])
                    + (f" (and {len(g['titles']) - 10} more)" if len(g["titles"]) > 10 else ""))
            if g["tags"]:
                lines.append("    by tag (tracks it was on for): " + _names(
                    [f"{tag} {n}" for tag, n in g["tags"][:history.top]]))
        stream_events = [e for e in history.events if e["stream"] == stream]
        if stream_events and not events:
            lines.append(f"  events: {len(stream_events)} tag on/off (list them with --events)")
        elif stream_events:
            lines.append(f"  events ({len(stream_events)}):")
            for e in stream_events:
                lines.append(f"    {_when(history, e['sent_at'])}  {one_line(e['tag'])} "
                             f"{one_line(e['state'])}  score {e['score']:.2f} at "
                             f"{e['time_s']:.1f} s")
        for g in (g for g in history.gaps if g["stream"] == stream):
            lines.append(f"  MISSING {g['missed']} {one_line(g['msg_type'])} "
                         f"{'message' if g['missed'] == 1 else 'messages'} (seq "
                         f"{g['first_seq']} on, {one_line(asrun.gap_cause(g['cause']))}), noticed "
                         f"{_when(history, g['detected_at'])}")
        for r in (r for r in history.restarts if r["stream"] == stream):
            lines.append(f"  daemon restarted at {_when(history, r['first_sent_at'])} (session "
                         f"{one_line(r['session'][:8])}); audio times restart at 0")
        for p in (p for p in history.snapshots if p["stream"] == stream):
            lines.append(f"  recorder (re)started at {_when(history, p['taken_at'])}; the "
                         f"daemon's tags then: {_names(p['active'])}")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("kind", "stream", "start", "end", "duration_s", "title", "partial", "detail",
               "value", "loudness_lufs", "audio_s")
TAG_COLUMN = "tag:"  # a tag's column: "tag:calm" (never a fixed column's name, nor a formula)


def csv_tags(history: History) -> list[str]:
    """Every tag named in the range, in the order first met (airtime, then tracks)."""
    seen: dict[str, None] = {}
    for _, a in sorted(history.airtime.items()):
        seen.update(dict.fromkeys(a.tags))
    for t in history.tracks:
        seen.update(dict.fromkeys(t["tags"]))
    return list(seen)


@collector_paused()
def format_csv(history: History, events: bool = True) -> str:
    """Wide CSV: one row per track with one column per tag (``tag:NAME``: its mean smoothed
    score; for the track now playing, and one whose end was never recorded (kind
    "unfinished"), the share of its windows with the tag on; its EBU R128
    loudness in ``loudness_lufs`` where the daemon measured it), one airtime
    row per stream (the tags' shares), a content row per stream and content heard (``detail``
    the content, ``value`` its share), with ``content_by`` one per hour or day too (kind
    ``content_hour`` or ``content_day``), with ``airtime_by`` one per stream and hour or
    day (kind ``airtime_hour`` or ``airtime_day``: ``value`` its windows, each tag's share
    in its column), and rows of kind off_air, silence, speech,
    not_recorded, plays (per title), tag_plays, event (with `events`), gap and restart.
    Times are ISO 8601 with the report's zone offset. Text cells from outside (streams,
    titles, tags, sessions) are written as text a spreadsheet will not evaluate
    (``text.csv_text``); numbers as numbers."""
    cell = csv_text
    tags = csv_tags(history)
    column = {tag: i for i, tag in enumerate(tags)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # "tag:" first: a header cell no spreadsheet takes for a formula; on one line; a part
    # after a semicolon made text as any cell's is
    writer.writerow([*CSV_COLUMNS,
                     *(cell(TAG_COLUMN + re.sub(r"[\r\n]", " ", t)) for t in tags)])
    zone = history.zone

    def row(kind, stream, start, end, title="", partial="", detail="", value="", values=None,
            loudness=None, audio=None):
        cells = ["" for _ in tags]
        for tag, v in (values or {}).items():
            cells[column[tag]] = f"{v:.6f}"
        writer.writerow([kind, cell(stream), "" if start is None else iso(start, zone),
                         "" if end is None else iso(end, zone),
                         "" if start is None or end is None else f"{end - start:.3f}",
                         cell(title), partial, detail, value,
                         "" if loudness is None else f"{loudness:.2f}",
                         "" if audio is None else f"{audio:.3f}", *cells])

    for stream, a in sorted(history.airtime.items()):
        row("airtime", stream, a.first_at, a.last_at, value=a.windows,
            values={t: a.share(t) for t in a.tags})
    for stream, a in sorted(history.airtime.items()):
        for kind, share in a.content_share().items():
            row("content", stream, a.first_at, a.last_at, detail=cell(kind),
                value=f"{share:.6f}")
    for r in history.content_periods:
        for kind, share in r["content"].items():
            row(f"content_{history.content_by}", r["stream"], r["start"], r["end"],
                detail=cell(kind), value=f"{share:.6f}")
    for r in history.airtime_periods:
        row(f"airtime_{history.airtime_by}", r["stream"], r["start"], r["end"],
            value=r["windows"], values=r["airtime"])
    for e in history.as_run:
        values = {name: v for name, v in e.scores.items() if name in column}
        kind = "now_playing" if e.now_playing else "unfinished" if e.shares else "track"
        row(kind, e.stream, e.start, e.end,
            e.title or "", "; ".join(e.partial), cell("; ".join(e.active)), e.windows, values,
            e.loudness_lufs, e.audio_s)
    for kind, spans in (("off_air", history.off_air), ("silence", history.silence),
                        ("speech", history.speech), ("not_recorded", history.not_recorded)):
        for s in spans:
            row(kind, s.stream, s.start, s.end, detail=cell(s.detail))
    for g in history.plays:
        for title, n in g["titles"]:
            row("plays", g["stream"], g["start"], None, title, detail=g["period"] or "",
                value=n)
        for tag, n in g["tags"]:
            row("tag_plays", g["stream"], g["start"], None, detail=cell(tag), value=n)
    if events:
        for e in history.events:
            row("event", e["stream"], e["sent_at"], None, detail=cell(f"{e['tag']} {e['state']}"),
                value=f"{e['score']:.6f}")
    for g in history.gaps:
        row("gap", g["stream"], g["detected_at"], None,
            detail=cell(f"{g['msg_type']} {asrun.gap_cause(g['cause'])}"), value=g["missed"])
    for r in history.restarts:
        row("restart", r["stream"], r["first_sent_at"], None, detail=cell(r["session"]))
    return out.getvalue()


@collector_paused()
def format_json(history: History, events: bool = True) -> str:
    return json.dumps(history.to_dict(events), ensure_ascii=False, indent=1) + "\n"
