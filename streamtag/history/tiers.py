"""Which store a report reads, windows or per-minute rollups, and the rollups' readers.

The rule: a report reads the windows (history.blocks) where every window of its range is still
kept and there are at most WINDOWS_AT_MOST of them (100 stations for 40 minutes, one station
for 2.9 days at a window a second); otherwise the rollups (`window_rollups`, a row per stream
and minute). From rollups, a report's airtime and content shares, its content per hour or day
and its plot are those of whole minutes: a minute counts where any of its windows was sent in
the range, so the range's two edges are read to the minute (at most a minute of each stream
more, at each edge); shares within that are exact (windows counted, not sampled), and a plot
bin takes each minute whole, in the bin its start falls in. What only windows tell (the track
under way, speech spans, loudness per track, the span of lost windows) is left out, and the
report says it was read from rollups.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from streamtag.history import schema
from streamtag.history.blocks import BLOCK_S

WINDOWS = "windows"
ROLLUPS = "rollups"
TIERS = (WINDOWS, ROLLUPS)
WINDOWS_AT_MOST = 250_000
# (stream, model_id) -> (minute_at, windows, windows active per tag (minutes, tags))
Minutes = dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _where(table: sa.Table, streams: Sequence[str] | None, since: float | None,
           until: float | None) -> list:
    """A block's or rollup's windows sent in [since, until]; its indexed time column bounds
    the search on both sides (a block or rollup holds one minute of sent_at)."""
    c, s = table.c, schema.sessions.c
    indexed = c.minute_at if "minute_at" in c else c.first_sent_at
    return [*([s.stream.in_(list(streams))] if streams else []),
            *([c.last_sent_at >= since, indexed >= since - 2 * BLOCK_S]
              if since is not None else []),
            *([c.first_sent_at <= until, indexed <= until] if until is not None else [])]


def _windows_in(conn: sa.Connection, table: sa.Table, streams: Sequence[str] | None,
                since: float | None, until: float | None) -> int:
    c, s = table.c, schema.sessions.c
    return int(conn.execute(  # type: ignore[arg-type]  # coalesce: never NULL
        sa.select(sa.func.coalesce(sa.func.sum(c.windows), 0))
        .join_from(table, schema.sessions, c.session_id == s.id)
        .where(*_where(table, streams, since, until))).scalar())


def choose(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
           until: float | None) -> str:
    """WINDOWS or ROLLUPS for a report of `streams` over [since, until] (the module's rule):
    both counts come from the blocks' and rollups' headers, nothing is decoded."""
    # the rollups first: their rows are small, and past WINDOWS_AT_MOST of them the rule says
    # rollups whatever is kept (rollups above it, or windows above it)
    rolled = _windows_in(conn, schema.window_rollups, streams, since, until)
    if rolled > WINDOWS_AT_MOST:
        return ROLLUPS
    kept = _windows_in(conn, schema.window_blocks, streams, since, until)
    return ROLLUPS if kept > WINDOWS_AT_MOST or rolled > kept else WINDOWS


def rollup_rows(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                until: float | None, *columns: str):
    """The rollups of `streams` with a window sent in [since, until]: stream, model_id,
    minute_at, windows, first_sent_at, last_sent_at and `columns`, in order of stream and
    minute."""
    r, s = schema.window_rollups.c, schema.sessions.c
    return conn.execute(
        sa.select(s.stream, r.model_id, r.minute_at, r.windows, r.first_sent_at,
                  r.last_sent_at, *(r[name] for name in columns))
        .join_from(schema.window_rollups, schema.sessions, r.session_id == s.id)
        .where(*_where(schema.window_rollups, streams, since, until))
        .order_by(s.stream, r.minute_at))


def airtime(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
            until: float | None, minutes: Minutes | None = None) -> dict[str, dict[str, Any]]:
    """Stream -> {windows, first_at, last_at, active {model_id: windows active per tag},
    content {content: windows}} from the rollups; the database adds up all but the tags
    (`minutes`: active_minutes of the same range, where the caller read them)."""
    r, s = schema.window_rollups.c, schema.sessions.c

    def select(*columns):
        return (sa.select(s.stream, *columns)
                .join_from(schema.window_rollups, schema.sessions, r.session_id == s.id)
                .where(*_where(schema.window_rollups, streams, since, until)))

    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(select(sa.func.sum(r.windows).label("windows"),
                                   sa.func.min(r.first_sent_at).label("first_at"),
                                   sa.func.max(r.last_sent_at).label("last_at"))
                            .group_by(s.stream)):
        out[row.stream] = {"windows": int(row.windows), "first_at": row.first_at,
                           "last_at": row.last_at, "active": {}, "content": {}}
    # a minute's content counts repeat (60 windows of music): each text is read once
    for row in conn.execute(select(r.content, sa.func.count().label("n"))
                            .where(r.content.is_not(None)).group_by(s.stream, r.content)):
        counted = out[row.stream]["content"]
        for kind, n in json.loads(row.content).items():
            counted[kind] = counted.get(kind, 0) + n * row.n
    if minutes is None:
        minutes = active_minutes(conn, streams, since, until)
    for (stream, model_id), (_, _, active) in minutes.items():
        out[stream]["active"][model_id] = active.sum(axis=0, dtype=np.int64)
    return out


class _ContentTexts(dict):
    """Rollups' content texts, each parsed once: a minute's content repeats (60 windows of
    music), and a year holds 525,600 minutes."""

    def __missing__(self, text: str) -> dict[str, int]:
        parsed = self[text] = json.loads(text)
        return parsed


def plain_rows(conn: sa.Connection, statement: sa.Select) -> Sequence[tuple]:
    """The rows of `statement` as the database driver gives them, plain tuples: for reads of
    numbers and bytes by the hundred thousand (a year of a station's minutes), where a
    SQLAlchemy Row apiece costs more than the read. Only for columns the driver returns as
    they are meant (numbers, text, bytes)."""
    result = conn.execute(statement)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def active_minutes(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
                   until: float | None) -> Minutes:
    """(stream, model_id) -> (minute_at, windows, windows active per tag (minutes, tags)) of
    the rollups with a window sent in [since, until], in one read; a model's rows of another
    size than its first are left out (not its tags)."""
    r, s = schema.window_rollups.c, schema.sessions.c
    rows = plain_rows(conn, sa.select(r.session_id, r.model_id, r.minute_at, r.windows,
                                      r.active_windows)
                      .join_from(schema.window_rollups, schema.sessions, r.session_id == s.id)
                      .where(*_where(schema.window_rollups, streams, since, until)))
    if not rows:
        return {}
    # column by column, and grouped by numbers (a year of a station is 525,600 rows)
    session_id, model_id, minute_at, windows, active = zip(*rows, strict=True)
    sizes = np.fromiter(map(len, active), dtype=np.int64, count=len(active))
    key = (np.array(session_id, dtype=np.int64) << 32) | np.array(model_id, dtype=np.int64)
    stream_of = dict(conn.execute(sa.select(s.id, s.stream).where(
        s.id.in_(sorted(set(session_id))))).all())
    minute_at_all = np.array(minute_at, dtype=np.float64)
    windows_all = np.array(windows, dtype=np.int64)
    # a model's rows: those of its first row's size
    firsts: dict[tuple[str, int], int] = {}
    chosen: dict[tuple[str, int], list[np.ndarray]] = {}
    found, first_at, where = np.unique(key, return_index=True, return_inverse=True)
    grouped = np.split(np.argsort(where, kind="stable"),
                       np.cumsum(np.bincount(where, minlength=found.size))[:-1])
    for g in np.argsort(first_at, kind="stable").tolist():  # in order of first appearance
        k = int(found[g])
        name = (stream_of[k >> 32], k & 0xFFFFFFFF)
        members = grouped[g]
        size = firsts.setdefault(name, int(sizes[first_at[g]]))
        chosen.setdefault(name, []).append(members[sizes[members] == size])
    out: Minutes = {}
    for name, parts in chosen.items():
        members = np.sort(np.concatenate(parts))
        size = firsts[name]
        blob = b"".join([active[i] for i in members.tolist()])
        out[name] = (minute_at_all[members], windows_all[members],
                     np.frombuffer(blob, "<u2").reshape(members.size, size // 2))
    return out


def active_quarters(minutes: Minutes, quarter_s: float) -> Minutes:
    """active_minutes' `minutes` added up per quarter hour, as `quarters` counts them (a
    minute lies in one quarter hour): (stream, model_id) -> (quarter hours (Unix seconds /
    quarter_s) in order, windows, windows active per tag)."""
    out = {}
    for key, (minute_at, windows, active) in minutes.items():
        quarter = np.floor(minute_at / quarter_s).astype(np.int64)
        order = np.argsort(quarter, kind="stable")
        quarter = quarter[order]
        starts = np.flatnonzero(np.r_[True, quarter[1:] != quarter[:-1]])
        summed = np.add.reduceat(active[order], starts, axis=0, dtype=np.int64)
        counted = np.add.reduceat(windows[order], starts)
        out[key] = (quarter[starts], counted, summed)
    return out


def quarters(conn: sa.Connection, streams: Sequence[str] | None, since: float | None,
             until: float | None, quarter_s: float):
    """(stream, quarter hour (Unix seconds / quarter_s), content or None, windows) from the
    rollups, as history.content counts windows (a minute lies in one quarter hour). The
    database groups the minutes by quarter and content text (a year is 35,000 quarters)."""
    r, s = schema.window_rollups.c, schema.sessions.c
    ratio = r.minute_at / quarter_s
    quarter = (sa.func.floor(ratio) if conn.dialect.name == "postgresql"
               else sa.cast(ratio, sa.Integer)).label("quarter")
    counted: dict[tuple[str, int, str | None], int] = {}
    texts = _ContentTexts()
    for stream, q, text, windows, rows in plain_rows(
            conn, sa.select(s.stream, quarter, r.content, sa.func.sum(r.windows),
                            sa.func.count())
            .join_from(schema.window_rollups, schema.sessions, r.session_id == s.id)
            .where(*_where(schema.window_rollups, streams, since, until))
            .group_by(s.stream, quarter, r.content)):
        q = int(q)
        kinds = texts[text] if text else {}
        for kind, n in kinds.items():
            counted[(stream, q, kind)] = counted.get((stream, q, kind), 0) + n * rows
        unknown = int(windows) - rows * sum(kinds.values())
        if unknown:
            counted[(stream, q, None)] = counted.get((stream, q, None), 0) + unknown
    for (stream, q, kind), n in counted.items():
        yield stream, q, kind, n


def bins(conn: sa.Connection, stream: str, since: float, until: float,
         n_bins: int) -> tuple[np.ndarray, dict[int, np.ndarray], list[dict[str, int]]]:
    """(windows per bin, model_id -> windows active per bin and tag (bins, tags), content
    counts per bin) of `stream` from its rollups, each minute in the bin its start is in."""
    width = (until - since) / n_bins
    windows = np.zeros(n_bins)
    active: dict[int, np.ndarray] = {}
    kinds: list[dict[str, int]] = [{} for _ in range(n_bins)]
    rows = rollup_rows(conn, [stream], since, until, "active_windows", "content").all()
    if not rows:
        return windows, active, kinds
    minute_at = np.array([row.minute_at for row in rows], dtype=np.float64)
    counts = np.array([row.windows for row in rows], dtype=np.float64)
    where = np.clip(((np.maximum(minute_at, since) - since) // width).astype(np.int64), 0,
                    n_bins - 1)
    np.add.at(windows, where, counts)
    by_model: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(rows):
        by_model.setdefault((row.model_id, len(row.active_windows)), []).append(i)
    for (model_id, size), members in by_model.items():
        table = active.setdefault(model_id, np.zeros((n_bins, size // 2)))
        if table.shape[1] != size // 2:
            continue  # a model's rows of another size than its first: not its tags
        joined = np.frombuffer(b"".join([rows[i].active_windows for i in members]), "<u2")
        np.add.at(table, where[members], joined.reshape(len(members), -1))
    texts = _ContentTexts()
    for b, row in zip(where.tolist(), rows, strict=True):
        if row.content:
            counted = texts[row.content]
            into = kinds[b]
            for kind, n in counted.items():
                into[kind] = into.get(kind, 0) + n
    return windows, active, kinds
