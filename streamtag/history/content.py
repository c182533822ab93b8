"""What each recorded window's audio was (protocol 1.7's content: music, speech, silence, tone
or noise), as the history reads it. It is kept with each window in its block (history.blocks;
NULL for daemons that did not say, and for windows recorded before schema revision 0008);
every read of it goes through this module, so the reports, the plot and the dashboard do not
know where it lies.

A window carries tags only where it was music or its content is not known (a daemon without
``[content]``, a database from before 0008): speech and dead air show no music tag in any
view, whatever the window's ``active`` list says. (The daemon turns the tags off where a run
of speech began once it has lasted ``[content] min_s``, so the run's first windows may still
list them.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from streamtag.engine.content import CONTENT_KINDS, MUSIC
from streamtag.history import blocks, tiers
from streamtag.history.timeparse import Zone

__all__ = ["CONTENT_KINDS", "PERIODS", "QUARTER_S", "PeriodOf", "by_period", "by_quarter",
           "carries_tags", "content_bins", "counts", "floor_of", "period_end", "period_label",
           "period_start", "shares"]

PERIODS = ("hour", "day")
# Windows are grouped in the database by quarter hour (UTC), then each quarter is given to the
# hour or day of the zone it begins in: the offsets of today's zones are whole quarter hours
# (+05:45, +12:45), so no quarter straddles a local hour.
QUARTER_S = 900.0
_STEP_S = {"hour": 3600.0, "day": 25.5 * 3600}


def carries_tags(content: str | None) -> bool:
    """Whether a window of this content may show a tag on: music, or not known."""
    return content is None or content == MUSIC


def shares(counted: dict[str, int]) -> dict[str, float]:
    """Each content's share of the windows whose content is known, most first."""
    known = sum(counted.values())
    return {kind: n / known for kind, n in sorted(counted.items(),
                                                  key=lambda kv: (-kv[1], kv[0]))} if known \
        else {}


def _where(sc: Any, streams: Sequence[str] | None, since: float | None,
           until: float | None) -> list:
    out: list[sa.ColumnElement[bool]] = [sc.stream.in_(list(streams))] if streams else []
    if since is not None:
        out.append(sc.sent_at >= since)
    if until is not None:
        out.append(sc.sent_at <= until)
    return out


def floor_of(dialect: str, value) -> Any:
    """floor(value) as an integer in SQL, spelled per dialect: SQLite's CAST truncates (the
    same for values >= 0), PostgreSQL's rounds."""
    return sa.func.floor(value) if dialect == "postgresql" else sa.cast(value, sa.Integer)


def counts(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
           until: float | None) -> dict[str, dict[str, int]]:
    """Stream -> content -> windows sent in [since, until] (those whose content is known)."""
    sc = blocks.windows(conn, streams, since, until).c
    out: dict[str, dict[str, int]] = {}
    for row in conn.execute(sa.select(sc.stream, sc.content, sa.func.count().label("n"))
                            .where(*_where(sc, streams, since, until), sc.content.is_not(None))
                            .group_by(sc.stream, sc.content)):
        out.setdefault(row.stream, {})[row.content] = row.n
    return out


def period_start(zone: Zone, unix_s: float, period: str) -> float:
    """The start of the hour or day holding `unix_s`, in `zone` (of a repeated hour, the one
    it is in)."""
    when = zone.at(unix_s)
    if period == "hour":
        return when.replace(minute=0, second=0, microsecond=0).timestamp()
    return zone.day_start(when.date())


def period_end(zone: Zone, start: float, period: str) -> float:
    """The end of the hour or day that begins at `start` (the next one's start)."""
    end = period_start(zone, start + _STEP_S[period], period)
    return end if end > start else start + _STEP_S[period]


class PeriodOf:
    """`period_start` of many times in time order: the last period's bounds are kept, so that
    a year of quarter hours costs the zone's arithmetic once a day, not once a quarter."""

    def __init__(self, zone: Zone, period: str) -> None:
        self.zone, self.period = zone, period
        self.start, self.end = math.inf, -math.inf  # no period yet

    def __call__(self, unix_s: float) -> float:
        if not self.start <= unix_s < self.end:
            self.start = period_start(self.zone, unix_s, self.period)
            self.end = period_end(self.zone, self.start, self.period)
        return self.start


def period_label(zone: Zone, start: float, period: str, reference: float) -> str:
    """"2026-11-20 14:00" (with the zone's abbreviation where its offset is not the one at
    `reference`, as in the hour repeated when clocks go back) or "2026-11-20 (Fri)"."""
    when = zone.at(start)
    if period == "hour":
        return f"{when:%Y-%m-%d %H:%M}{zone.mark(start, reference)}"
    return f"{when:%Y-%m-%d} ({when:%a})"


def _quarters(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
              until: float | None, tier: str = tiers.WINDOWS):
    """(stream, quarter hour (Unix seconds / QUARTER_S), content or None, windows) of the
    windows sent in [since, until], counted by the database (from their rollups' minutes with
    `tier` "rollups")."""
    if tier == tiers.ROLLUPS:
        yield from tiers.quarters(conn, streams, since, until, QUARTER_S)
        return
    sc = blocks.windows(conn, streams, since, until).c
    quarter = floor_of(conn.dialect.name, sc.sent_at / QUARTER_S).label("quarter")
    for row in conn.execute(sa.select(sc.stream, quarter, sc.content, sa.func.count().label("n"))
                            .where(*_where(sc, streams, since, until))
                            .group_by(sc.stream, quarter, sc.content)):
        yield row.stream, int(row.quarter), row.content, row.n


def by_quarter(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
               until: float | None, tier: str = tiers.WINDOWS) -> dict[str, list[list[Any]]]:
    """Stream -> ``[start (Unix seconds), {content: windows}]`` per quarter hour (UTC) with
    windows of known content in [since, until], in time order: what a reader in any zone of
    whole quarter-hour offsets adds up into its own hours (from `tier`)."""
    out: dict[str, dict[int, dict[str, int]]] = {}
    for stream, q, kind, n in _quarters(conn, streams, since, until, tier):
        if kind is not None:
            counted = out.setdefault(stream, {}).setdefault(q, {})
            counted[kind] = counted.get(kind, 0) + n
    return {stream: [[q * QUARTER_S, counted] for q, counted in sorted(quarters.items())]
            for stream, quarters in out.items()}


def by_period(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
              until: float | None, zone: Zone, period: str, reference: float,
              tier: str = tiers.WINDOWS) -> list[dict[str, Any]]:
    """Per stream and hour or day of `zone` with windows in [since, until]: ``{stream,
    period (its label), start, end (Unix seconds), windows (all), counts {content: windows},
    content {content: share of those known}}``, in order of stream and time. The database
    counts the windows per quarter hour and content (from `tier`, "windows" or "rollups")."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
    groups: dict[tuple[str, float], dict[str, Any]] = {}
    period_of = PeriodOf(zone, period)
    for stream, q, kind, n in _quarters(conn, streams, since, until, tier):
        start = period_of(q * QUARTER_S)
        group = groups.setdefault((stream, start),
                                  {"stream": stream, "start": start, "windows": 0,
                                   "counts": Counter()})
        group["windows"] += n
        if kind is not None:
            group["counts"][kind] += n
    out = []
    for (_, start), group in sorted(groups.items()):
        counted = dict(group["counts"])
        out.append({"stream": group["stream"],
                    "period": period_label(zone, start, period, reference),
                    "start": start, "end": period_end(zone, start, period),
                    "windows": group["windows"],
                    "counts": {k: counted[k] for k in CONTENT_KINDS if k in counted},
                    "content": {k: round(v, 6) for k, v in shares(counted).items()}})
    return out


def content_bins(engine: sa.Engine, stream: str, since: float, until: float,
                 bins: int, tier: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(windows per bin, windows per CONTENT_KINDS kind and bin) of `stream` in [since, until]
    cut into `bins` equal bins (no kind counted where the windows' content is not known), from
    `tier` (None: as history.tiers.choose says)."""
    counted = np.zeros((len(CONTENT_KINDS), bins))
    windows = np.zeros(bins)
    index = {kind: i for i, kind in enumerate(CONTENT_KINDS)}
    width = (until - since) / bins
    with engine.connect() as conn:
        if (tier or tiers.choose(conn, [stream], since, until)) == tiers.ROLLUPS:
            windows, _, kinds = tiers.bins(conn, stream, since, until, bins)
            for b, counted_b in enumerate(kinds):
                for kind, n in counted_b.items():
                    if kind in index:
                        counted[index[kind], b] += n
            return windows, counted
        sc = blocks.windows(conn, [stream], since, until).c
        bin_of = floor_of(engine.dialect.name, (sc.sent_at - sa.literal(since, sa.Float))
                          / sa.literal(width, sa.Float)).label("bin")
        for row in conn.execute(sa.select(bin_of, sc.content, sa.func.count().label("n"))
                                .where(sc.stream == stream, sc.sent_at >= since,
                                       sc.sent_at <= until)
                                .group_by(bin_of, sc.content)):
            b = min(max(int(row.bin), 0), bins - 1)
            windows[b] += row.n
            if row.content in index:
                counted[index[row.content], b] += row.n
    return windows, counted
