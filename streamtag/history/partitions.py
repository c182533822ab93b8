"""PostgreSQL's windows and rollups partitioned by time: `window_blocks` by day of
`first_sent_at`, `window_rollups` by month of `minute_at` (docs/history.md says why).

Each partitioned table has a DEFAULT partition, so a row is never refused for want of one: rows
whose day or month has no partition yet (a daemon whose clock is off, a recorder that was down
at midnight) wait there. `ensure` creates the partitions of today and the next AHEAD_DAYS days,
and of the recent days rows wait for in the default partition, moving those rows in; the
recorder runs it at start and with every round of retention. Expiry drops whole partitions
whose range ends before the cut (`drop_expired`): a block or rollup never straddles a
partition's bounds (both are whole minutes of UTC time), so a dropped partition holds only
rows the cut expires, and rows of the partition the cut falls in stay until it expires whole.

pg_partman is not used: it partitions by timestamp, date or integer columns, and these tables'
times are Unix seconds in double precision columns, which every reader uses.

SQLite keeps plain tables; every function here does nothing there.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

DAY_S = 86400.0
AHEAD_DAYS = 3          # partitions made ahead of today, so midnight never waits for one
LOCK_TIMEOUT_MS = 2000  # how long DDL waits for a table's lock before trying next round
MOST_FROM_DEFAULT = 64  # partitions made per round for rows waiting in the default one
# The PostgreSQL advisory lock partition maintenance takes ("part"): one recorder at a time.
PARTITION_LOCK = 0x70617274

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scheme:
    """How one table is partitioned: by `column`'s UTC day or month."""

    table: str
    column: str
    unit: str  # "day" or "month"

    @property
    def default(self) -> str:
        return f"{self.table}_default"

    def start(self, at: float) -> float:
        """The start of the range that holds `at`."""
        if self.unit == "day":
            return math.floor(at / DAY_S) * DAY_S
        day = dt.datetime.fromtimestamp(math.floor(at / DAY_S) * DAY_S, dt.UTC)
        return float(calendar.timegm((day.year, day.month, 1, 0, 0, 0)))

    def end(self, start: float) -> float:
        """The end of the range that begins at `start` (exclusive)."""
        if self.unit == "day":
            return start + DAY_S
        day = dt.datetime.fromtimestamp(start, dt.UTC)
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return float(calendar.timegm((year, month, 1, 0, 0, 0)))

    def name(self, start: float) -> str:
        day = dt.datetime.fromtimestamp(start, dt.UTC)
        return f"{self.table}_p{day:%Y%m%d}" if self.unit == "day" \
            else f"{self.table}_p{day:%Y%m}"

    def starts(self, since: float, until: float) -> list[float]:
        """The starts of the ranges that meet [since, until]."""
        out, at = [], self.start(since)
        while at <= until:
            out.append(at)
            at = self.end(at)
        return out

    def parse(self, name: str) -> float | None:
        """The start of the range a partition's name says; None for another table."""
        found = re.fullmatch(re.escape(self.table) + r"_p(\d{4})(\d{2})(\d{2})?", name)
        if found is None or (self.unit == "day") != (found.group(3) is not None):
            return None
        year, month, day = int(found.group(1)), int(found.group(2)), int(found.group(3) or 1)
        return float(calendar.timegm((year, month, day, 0, 0, 0)))


BLOCKS = Scheme("window_blocks", "first_sent_at", "day")
ROLLUPS = Scheme("window_rollups", "minute_at", "month")
SCHEMES = (BLOCKS, ROLLUPS)


def partitioned(engine_or_conn: Engine | sa.Connection) -> bool:
    """Whether this database partitions (PostgreSQL does, SQLite does not)."""
    return engine_or_conn.dialect.name == "postgresql"


def partitions(conn: sa.Connection, scheme: Scheme) -> dict[str, float]:
    """The table's partitions by name, with the start of their ranges (not the default)."""
    names = conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:parent AS regclass)"), {"parent": scheme.table}).scalars()
    return {name: start for name in names if (start := scheme.parse(name)) is not None}


def create_default(conn: sa.Connection, scheme: Scheme) -> None:
    conn.exec_driver_sql(f"CREATE TABLE {scheme.default} PARTITION OF {scheme.table} DEFAULT")


def create(conn: sa.Connection, scheme: Scheme, start: float) -> bool:
    """The partition of the range that begins at `start`, unless it exists; rows of that range
    waiting in the default partition move into it. True if it was made."""
    name = scheme.name(start)
    if conn.execute(sa.text("SELECT to_regclass(:name)"), {"name": name}).scalar() is not None:
        return False
    end = scheme.end(start)
    # the default partition first: inserts lock the parent, then the partition they go to
    conn.exec_driver_sql(f"LOCK TABLE {scheme.default} IN ACCESS EXCLUSIVE MODE")
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {scheme.table} INCLUDING DEFAULTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {scheme.default} WHERE {scheme.column} >= {start!r} "
        f"AND {scheme.column} < {end!r} RETURNING *) INSERT INTO {name} SELECT * FROM moved")
    # ATTACH takes a lock that lets inserts and reads of the other partitions go on
    conn.exec_driver_sql(f"ALTER TABLE {scheme.table} ATTACH PARTITION {name} "
                         f"FOR VALUES FROM ({start!r}) TO ({end!r})")
    return True


def _locked(conn: sa.Connection) -> None:
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITION_LOCK})
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")


def ensure(engine: Engine, now: float, kept: dict[str, float | None] | None = None) -> list[str]:
    """The partitions of today and the next AHEAD_DAYS days (their month for rollups), and of
    the ranges rows wait for in the default partition from `kept[table]` seconds before `now`
    on (the ranges retention would drop at once are left to it); each made in its own
    transaction. Returns the names made."""
    if not partitioned(engine):
        return []
    made = []
    for scheme in SCHEMES:
        wanted = scheme.starts(now, now + AHEAD_DAYS * DAY_S)
        keep = (kept or {}).get(scheme.table)
        since = now - keep if keep is not None else -math.inf
        with engine.connect() as conn:
            waiting = conn.execute(sa.text(
                f"SELECT DISTINCT floor({scheme.column} / {DAY_S!r}) * {DAY_S!r} "
                f"FROM {scheme.default} WHERE {scheme.column} >= :since "
                f"AND {scheme.column} < :until"),
                {"since": scheme.start(max(since, 0.0)),  # none before 1970
                 "until": now + AHEAD_DAYS * DAY_S}).scalars().all()
        waiting_starts = sorted({scheme.start(day) for day in waiting}, reverse=True)
        for start in sorted(set(wanted) | set(waiting_starts[:MOST_FROM_DEFAULT])):
            if keep is not None and scheme.end(start) <= since:
                continue
            try:
                with engine.begin() as conn:
                    _locked(conn)
                    if create(conn, scheme, start):
                        made.append(scheme.name(start))
            except sa.exc.ProgrammingError as exc:  # a login that may not: nothing is lost
                _refused(engine, "make", scheme.name(start), exc)
                return made
    if made:
        log.info("partitions made: %s", ", ".join(made))
    return made


_told: set[tuple[str, str]] = set()  # (what, database) refused, logged once each


def _refused(engine: Engine, verb: str, name: str, exc: sa.exc.ProgrammingError) -> None:
    where = engine.url.render_as_string(hide_password=True)
    if (verb, where) in _told:
        return
    _told.add((verb, where))
    log.warning("cannot %s the partition %s in %s (%s): %s; run the recorder as the tables' "
                "owner (the login that upgraded the database)", verb, name, where,
                str(exc.orig).strip().splitlines()[0][:200],
                "rows of days without a partition wait in the default partition, which grows, "
                "and expire row by row" if verb == "make" else
                "expired windows and rollups stay until it can")


def drop_expired(engine: Engine, scheme: Scheme, cutoff: float) -> tuple[int, int]:
    """DETACH and DROP each partition whose range ends at or before `cutoff`, one a
    transaction; returns (partitions, rows) dropped."""
    if not partitioned(engine):
        return 0, 0
    with engine.connect() as conn:
        expired = sorted(name for name, start in partitions(conn, scheme).items()
                         if scheme.end(start) <= cutoff)
    dropped = rows = 0
    for name in expired:
        try:
            with engine.begin() as conn:
                _locked(conn)
                if conn.execute(sa.text("SELECT to_regclass(:name)"),
                                {"name": name}).scalar() is None:
                    continue  # another recorder dropped it
                conn.exec_driver_sql(f"ALTER TABLE {scheme.table} DETACH PARTITION {name}")
                rows += conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar() or 0
                conn.exec_driver_sql(f"DROP TABLE {name}")
        except sa.exc.ProgrammingError as exc:  # a login that may not; the rest expires
            _refused(engine, "drop", name, exc)
            break
        dropped += 1
    return dropped, rows


def partition_table(scheme: Scheme, columns: Iterable[str]) -> sa.TableClause:
    """The default partition as a table to read or delete from."""
    return sa.table(scheme.default, *(sa.column(name) for name in columns))


def is_partition(name: str) -> bool:
    """Whether a table's name is one of the partitions' (what a comparison of the schema with
    the code's tables leaves out)."""
    return any(name == scheme.default or scheme.parse(name) is not None for scheme in SCHEMES)
