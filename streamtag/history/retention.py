"""How long the history keeps what: ``[retention]`` in record's file
(streamtag.history.config), overridden by ``streamtag record --keep windows=30d,rollups=400d``.

Windows (their blocks) are kept 30 days and their per-minute rollups 400 days by default;
tracks, events, statuses, silences, gaps, sessions and snapshots for ever unless a `--keep`
entry names them. Expiry deletes whole rows by time (a block is a stream's minute), a few
hundred at a time, each batch its own short transaction, so the recorder's writes go on
between them. In PostgreSQL, windows and rollups are partitioned by time (history.partitions):
their expiry drops whole partitions, and deletes rows only from the default partition, where
rows without a partition of their own wait.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from dataclasses import dataclass, fields

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamtag.errors import ConfigError
from streamtag.history import partitions, schema

DAY_S = 86400.0
DELETE_BATCH = 500          # rows per transaction
DEFAULT_EVERY_S = 300.0     # how often the recorder expires what is due
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S, "w": 7 * DAY_S, "y": 365 * DAY_S}
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhdwy])$")
SPAN_WORDS = "a number and a unit (s, m, h, d, w or y: 365 days), e.g. 30d, or 'forever'"
FOREVER = ("forever", "never")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """Seconds each kind of row is kept (None: for ever)."""

    windows: float | None = 30 * DAY_S
    rollups: float | None = 400 * DAY_S
    tracks: float | None = None
    events: float | None = None
    statuses: float | None = None
    silences: float | None = None
    gaps: float | None = None
    snapshots: float | None = None

    def __post_init__(self) -> None:
        if self.windows is not None and self.rollups is not None and \
                self.rollups < self.windows:
            raise ConfigError("rollups must be kept at least as long as windows (they are "
                              "what is left of the windows): lengthen rollups or shorten "
                              "windows")


def span_seconds(text: str) -> float | None:
    """A span of time as --keep and [retention] write it ("30d", "5y", "forever"): seconds, or
    None for ever; ValueError naming SPAN_WORDS otherwise."""
    value = text.strip().lower()
    if value in FOREVER:
        return None
    span = _SPAN.match(value)
    if span is None or float(span.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a span of time; give {SPAN_WORDS}")
    return float(span.group(1)) * _UNITS[span.group(2)]


def keep_entries(text: str) -> dict[str, str]:
    """``windows=30d,rollups=400d,events=90d`` (``record --keep``): each kind named and its
    span as written, each span checked (``span_seconds``)."""
    given: dict[str, str] = {}
    kinds = [f.name for f in fields(Retention)]
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip().lower()
        if not sep or name not in kinds:
            raise ConfigError(f"--keep {text!r}: {part!r} is not KIND=SPAN; the kinds are "
                              f"{', '.join(kinds)}, e.g. --keep windows=30d,rollups=400d")
        try:
            span_seconds(value)
        except ValueError as exc:
            raise ConfigError(f"--keep {text!r}: {exc}") from None
        given[name] = value
    return given


def parse_keep(text: str) -> Retention:
    """``--keep`` alone: the kinds it names, the others at their defaults."""
    given = {name: span_seconds(value) for name, value in keep_entries(text).items()}
    try:
        return Retention(**given)
    except ConfigError as exc:
        raise ConfigError(f"--keep: {exc}") from None


def kept_by_table(retention: Retention) -> dict[str, float | None]:
    """Seconds kept of the partitioned tables' rows, by table name."""
    return {schema.window_blocks.name: retention.windows,
            schema.window_rollups.name: retention.rollups}


def _expiring(retention: Retention, engine: Engine, now: float
              ) -> list[tuple[sa.Table | sa.TableClause, sa.ColumnElement, float]]:
    """(table, its time column, the cut) of what expires row by row. A partitioned table's
    rows go with their partition, once its whole range is older than the cut; of those
    waiting in its default partition, likewise the rows whose range is."""
    out: list = []
    if partitions.partitioned(engine):
        for scheme in partitions.SCHEMES:
            kept = kept_by_table(retention)[scheme.table]
            if kept is not None:
                default = partitions.partition_table(scheme, ("id", scheme.column))
                out.append((default, default.c[scheme.column], scheme.start(now - kept)))
        retention = dataclasses.replace(retention, windows=None, rollups=None)
    for table, column, kept in (
            (schema.window_blocks, schema.window_blocks.c.last_sent_at, retention.windows),
            (schema.window_rollups, schema.window_rollups.c.last_sent_at, retention.rollups),
            (schema.tracks, schema.tracks.c.ended_at, retention.tracks),
            (schema.events, schema.events.c.sent_at, retention.events),
            (schema.statuses, schema.statuses.c.sent_at, retention.statuses),
            (schema.silences, schema.silences.c.sent_at, retention.silences),
            (schema.gaps, schema.gaps.c.detected_at, retention.gaps),
            (schema.snapshots, schema.snapshots.c.taken_at, retention.snapshots)):
        if kept is not None:
            out.append((table, column, now - kept))
    return out


def expire(engine: Engine, retention: Retention, now: float,
           stop: threading.Event | None = None) -> dict[str, int]:
    """Deletes what is older than its kind is kept: whole partitions where the table is
    partitioned, else DELETE_BATCH rows per transaction; returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    for scheme in partitions.SCHEMES:
        kept = kept_by_table(retention)[scheme.table]
        if kept is not None and partitions.partitioned(engine):
            _, rows = partitions.drop_expired(engine, scheme, now - kept)
            if rows:
                deleted[scheme.table] = rows
    for table, column, cutoff in _expiring(retention, engine, now):
        while stop is None or not stop.is_set():
            with engine.begin() as conn:
                ids = conn.execute(sa.select(table.c.id).where(column < cutoff)
                                   .limit(DELETE_BATCH)).scalars().all()
                if ids:
                    conn.execute(sa.delete(table).where(table.c.id.in_(ids)))
            deleted[table.name] = deleted.get(table.name, 0) + len(ids)
            if len(ids) < DELETE_BATCH:
                break
    return deleted
