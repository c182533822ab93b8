"""What a history database says about a time range (``streamtag history``). Tracks with their
tags, each tag's share of airtime, the events, and what is known to be missing (gaps, daemon
restarts), as text, CSV or JSON; `plot.py` draws it.

Airtime: every scores window of a stream counts once (a daemon publishes one per hop), so a
tag's share of a stream's airtime is the share of its windows in the range in which the tag
was active. Times are wall-clock: a window or event is in the range when it was sent in it, a
track when it overlaps it.

Titles, tag names and sessions came from stations and peers: the text format keeps each on its
line (a line break in one becomes a space; the command strips what a terminal would act on),
and the CSV format writes them as cells a spreadsheet shows as text (``text.csv_text``).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamtag.errors import ConfigError
from streamtag.history import schema
from streamtag.text import csv_text

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)")
_AGO_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?")


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """Unix seconds from ISO 8601 (local time unless it names an offset), a time of day
    (today's, local), Unix seconds, or a span ago such as 90s, 30m, 2h, 1d."""
    value = text.strip()
    match = _AGO.fullmatch(value)
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _AGO_S[match[2]]
    try:
        return float(value)
    except ValueError:
        pass
    if _CLOCK.fullmatch(value):  # a time of day: today's, as "between 18:00 and 20:00" means
        base = datetime.fromtimestamp(time.time() if now is None else now)
        value = f"{base:%Y-%m-%d}T{value}"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a time: use ISO 8601 such as "
                          "2026-11-22T18:00 (local time) or 2026-11-22T18:00+00:00, a time of "
                          "day such as 18:00 (today), Unix seconds, or a span ago such as 30m, "
                          "2h, 1d") from None
    return when.timestamp()  # a naive time is local, as a person means it


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def _clock(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class StreamAirtime:
    windows: int = 0
    first_at: float | None = None
    last_at: float | None = None
    active: dict[str, int] = field(default_factory=dict)  # tag -> windows active
    tags: list[str] = field(default_factory=list)         # every tag its models name

    def share(self, tag: str) -> float:
        return self.active.get(tag, 0) / self.windows if self.windows else 0.0


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since, "until": self.until,
            "streams": {s: {"windows": a.windows, "first_at": a.first_at, "last_at": a.last_at,
                            "airtime": {t: a.share(t) for t in a.tags}}
                        for s, a in sorted(self.airtime.items())},
            "tracks": self.tracks, "events": self.events, "gaps": self.gaps,
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


def load_history(engine: Engine, streams: Sequence[str] | None = None,
                 since: float | None = None, until: float | None = None) -> History:
    s = schema
    airtime: dict[str, StreamAirtime] = {}
    with engine.connect() as conn:
        tags_of = model_tags(conn)
        sc = s.scores.c
        # The database counts the windows per set of active tags; there are few such sets,
        # so a day of 64 stations is aggregated where it lies rather than row by row here.
        query = (sa.select(sc.stream, sc.model_id, sc.active, sa.func.count().label("n"),
                           sa.func.min(sc.sent_at).label("first_at"),
                           sa.func.max(sc.sent_at).label("last_at"))
                 .where(*_streams(sc.stream, streams), *_in_range(sc.sent_at, since, until))
                 .group_by(sc.stream, sc.model_id, sc.active)
                 .order_by(sc.stream, sc.model_id, sc.active))
        for row in conn.execute(query):
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
            for tag in schema.unpack_names(row.active):
                a.active[tag] += row.n

        tc = s.tracks.c
        overlap = []
        if since is not None:
            overlap.append(tc.ended_at >= since)
        if until is not None:
            overlap.append(tc.started_at <= until)
        tracks = []
        for row in conn.execute(sa.select(s.tracks).where(*_streams(tc.stream, streams),
                                                          *overlap)
                                .order_by(tc.started_at, tc.stream)):
            names = tags_of[row.model_id]
            mean_raw = s.unpack_scores(row.mean_raw)
            mean_smoothed = s.unpack_scores(row.mean_smoothed)
            share = s.unpack_scores(row.active_share)
            order = np.argsort(-mean_smoothed, kind="stable")
            tracks.append({
                "stream": row.stream, "title": row.title, "reason": row.reason,
                "started_at": row.started_at, "ended_at": row.ended_at,
                "start_s": row.start_s, "end_s": row.end_s, "windows": row.windows,
                "active": s.unpack_names(row.active),
                "top": [names[i] for i in order[:3]],
                "tags": {name: {"mean_raw": round(float(mean_raw[i]), 6),
                                "mean_smoothed": round(float(mean_smoothed[i]), 6),
                                "active_share": round(float(share[i]), 6)}
                         for i, name in enumerate(names)}})

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
    return History(since, until, airtime, tracks, events, gaps, restarts, snapshots)


def tag_share_bins(engine: Engine, stream: str, tags: list[str], since: float, until: float,
                   bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin edges in Unix seconds, windows per bin, share active per tag and bin); the
    database counts the windows per bin and set of active tags."""
    edges = np.linspace(since, until, bins + 1)
    width = (until - since) / bins
    active = np.zeros((len(tags), bins))
    counts = np.zeros(bins)
    index = {tag: i for i, tag in enumerate(tags)}
    sc = schema.scores.c
    offset = (sc.sent_at - sa.literal(since, sa.Float)) / sa.literal(width, sa.Float)
    # floor, spelled per dialect: SQLite's CAST truncates (the same for offsets >= 0),
    # PostgreSQL's rounds.
    bin_of = (sa.func.floor(offset) if engine.dialect.name == "postgresql"
              else sa.cast(offset, sa.Integer)).label("bin")
    query = (sa.select(bin_of, sc.active, sa.func.count().label("n"))
             .where(sc.stream == stream, sc.sent_at >= since, sc.sent_at <= until)
             .group_by(bin_of, sc.active))
    with engine.connect() as conn:
        for row in conn.execute(query):
            b = min(max(int(row.bin), 0), bins - 1)
            counts[b] += row.n
            for tag in schema.unpack_names(row.active):
                if tag in index:
                    active[index[tag], b] += row.n
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(counts > 0, active / np.maximum(counts, 1), np.nan)
    return edges, counts, share


# ---------------------------------------------------------------- formats

_LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def _line(text: Any) -> str:
    """Text from outside kept on the line it is shown in."""
    return _LINE_BREAK.sub(" ", str(text))


def _names(names: Sequence[str]) -> str:
    return _line(", ".join(names)) or "-"


def format_text(history: History) -> str:
    lines = []
    streams = sorted(set(history.airtime) | {t["stream"] for t in history.tracks}
                     | {e["stream"] for e in history.events})
    if not streams:
        return "nothing recorded in this range\n"
    for stream in streams:
        a = history.airtime.get(stream, StreamAirtime())
        span = (f"{_clock(a.first_at)} to {_clock(a.last_at)}" if a.windows else "no windows")
        lines.append(f"{_line(stream)}: {a.windows} windows, {span}")
        if a.windows:
            ranked = sorted(a.tags, key=lambda t: -a.share(t))
            lines.append("  airtime: " + "  ".join(f"{_line(t)} {100 * a.share(t):.1f}%"
                                                   for t in ranked))
        tracks = [t for t in history.tracks if t["stream"] == stream]
        if tracks:
            lines.append(f"  tracks ({len(tracks)}):")
        for t in tracks:
            top = _names([f"{name} {t['tags'][name]['mean_smoothed']:.2f}"
                          for name in t["top"]])
            # The length is the audio's: a file tagged faster than real time takes less.
            lines.append(f"    {_clock(t['started_at'])}  {t['end_s'] - t['start_s']:7.1f}"
                         f" s  {_line(t['title'] or '(untitled)')}  active: "
                         f"{_names(t['active'])}  top: {top}")
        events = [e for e in history.events if e["stream"] == stream]
        if events:
            lines.append(f"  events ({len(events)}):")
        for e in events:
            lines.append(f"    {_clock(e['sent_at'])}  {_line(e['tag'])} {_line(e['state'])}  "
                         f"score {e['score']:.2f} at {e['time_s']:.1f} s")
        for g in (g for g in history.gaps if g["stream"] == stream):
            lines.append(f"  MISSING {g['missed']} {_line(g['msg_type'])} messages (seq "
                         f"{g['first_seq']}..., {_line(g['cause'])}), noticed "
                         f"{_clock(g['detected_at'])}")
        for r in (r for r in history.restarts if r["stream"] == stream):
            lines.append(f"  daemon restarted at {_clock(r['first_sent_at'])} (session "
                         f"{_line(r['session'][:8])}); audio times restart at 0")
        for p in (p for p in history.snapshots if p["stream"] == stream):
            lines.append(f"  recorder (re)started at {_clock(p['taken_at'])}; the daemon's tags "
                         f"then: {_names(p['active'])}")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("kind", "stream", "start", "end", "title", "tag", "state", "value", "share")


def format_csv(history: History) -> str:
    """Rows of kind airtime (share per tag), track (one per tag: mean smoothed score and active
    share), event, gap and restart; times in ISO 8601 UTC. Text cells from outside (streams,
    titles, tags, states, sessions) are written as text a spreadsheet will not evaluate
    (``text.csv_text``); numbers as numbers."""
    cell = csv_text
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for stream, a in sorted(history.airtime.items()):
        for tag in a.tags:
            writer.writerow(["airtime", cell(stream), iso(a.first_at), iso(a.last_at), "",
                             cell(tag), "", a.windows, f"{a.share(tag):.6f}"])
    for t in history.tracks:
        for tag, scores in t["tags"].items():
            writer.writerow(["track", cell(t["stream"]), iso(t["started_at"]),
                             iso(t["ended_at"]), cell(t["title"]), cell(tag),
                             "active" if tag in t["active"] else "",
                             f"{scores['mean_smoothed']:.6f}", f"{scores['active_share']:.6f}"])
    for e in history.events:
        writer.writerow(["event", cell(e["stream"]), iso(e["sent_at"]), "", "", cell(e["tag"]),
                         cell(e["state"]), f"{e['score']:.6f}", ""])
    for g in history.gaps:
        writer.writerow(["gap", cell(g["stream"]), iso(g["detected_at"]), "", "",
                         cell(g["msg_type"]), cell(g["cause"]), g["missed"], ""])
    for r in history.restarts:
        writer.writerow(["restart", cell(r["stream"]), iso(r["first_sent_at"]), "", "", "", "",
                         cell(r["session"]), ""])
    return out.getvalue()


def format_json(history: History) -> str:
    return json.dumps(history.to_dict(), ensure_ascii=False, indent=1) + "\n"
