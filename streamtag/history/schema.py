"""The history database: its tables (SQLAlchemy Core, one schema for SQLite and PostgreSQL),
opening a database URL, and bringing its schema to the version this code writes.

The schema is versioned with Alembic (migrations/versions/, one file per revision). The
recorder upgrades a database it opens; readers (``streamtag history``, the dashboard) refuse a
database whose schema is older or newer than this code's and say what to run. docs/history.md
documents every table.

Windows (scores messages) are stored packed per stream and minute in `window_blocks`
(history.blocks: the format, its precision, and the one function readers read them through),
with a per-minute rollup of each in `window_rollups`. Tracks' and snapshots' scores are
float32 arrays (little-endian bytes) in the order of their model's tags, which the `models`
table holds once per model.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from streamtag.errors import ConfigError

DEFAULT_DB_URL = "sqlite:///tags.db"
MIGRATIONS = Path(__file__).with_name("migrations")
SCORE_DTYPE = np.dtype("<f4")

metadata = sa.MetaData()


def _message_columns() -> list[sa.Column]:
    """What every stored stream message keeps of its header."""
    return [sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
            sa.Column("stream", sa.String(128), nullable=False),
            sa.Column("session", sa.String(128), nullable=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("sent_at", sa.Float, nullable=False)]


models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),  # JSON array: the order of every score array
    sa.UniqueConstraint("name", "hash", "tags", name="uq_models"))

events = sa.Table(
    "events", metadata, *_message_columns(),
    sa.Column("tag", sa.Text, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("time_s", sa.Float, nullable=False),
    sa.Column("sample", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("stream", "session", "seq", name="uq_events"),
    sa.Index("ix_events_stream_sent_at", "stream", "sent_at"))

statuses = sa.Table(
    "statuses", metadata, *_message_columns(),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("title", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("counters", sa.Text, nullable=False),  # JSON object
    sa.Column("station", sa.Text),  # since revision 0004 (protocol 1.2): icy-name
    # since revision 0007 (protocol 1.5): whether the title's track was heard from its start,
    # where the source knew (NULL: not known)
    sa.Column("heard_from_start", sa.Boolean),
    sa.UniqueConstraint("stream", "session", "seq", name="uq_statuses"),
    sa.Index("ix_statuses_stream_sent_at", "stream", "sent_at"))

tracks = sa.Table(
    "tracks", metadata, *_message_columns(),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("title", sa.Text),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("start_s", sa.Float, nullable=False),
    sa.Column("end_s", sa.Float, nullable=False),
    sa.Column("start_sample", sa.BigInteger, nullable=False),
    sa.Column("end_sample", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Column("windows", sa.BigInteger, nullable=False),
    sa.Column("mean_raw", sa.LargeBinary, nullable=False),       # float32 per tag
    sa.Column("mean_smoothed", sa.LargeBinary, nullable=False),  # float32 per tag
    sa.Column("active_share", sa.LargeBinary, nullable=False),   # float32 per tag
    sa.Column("active", sa.Text, nullable=False),                # JSON array of tag names
    sa.Column("heard_from_start", sa.Boolean),  # since revision 0007, as in statuses
    # since revision 0011 (protocol 1.10): the track's integrated loudness (LUFS), where the
    # daemon measured it
    sa.Column("loudness_lufs", sa.Float),
    sa.UniqueConstraint("stream", "session", "seq", name="uq_tracks"),
    sa.Index("ix_tracks_stream_started_at", "stream", "started_at"))

# A stream seen under a session for the first time; `previous_session` set means the daemon
# restarted (or, with `restarted` false, the recorder first met it after its own restart).
sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("stream", sa.String(128), nullable=False),
    sa.Column("session", sa.String(128), nullable=False),
    sa.Column("first_sent_at", sa.Float, nullable=False),
    sa.Column("previous_session", sa.String(128)),
    sa.Column("restarted", sa.Boolean, nullable=False),
    sa.UniqueConstraint("stream", "session", name="uq_sessions"))

# Messages known to be missing: `missed` messages of one topic from seq `first_seq` on.
# cause "seq": a jump in seq (lost on the way, or published while the recorder was down);
# "overflow": received but dropped because the recorder's queue was full.
gaps = sa.Table(
    "gaps", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("stream", sa.String(128), nullable=False),  # "" for heartbeats
    sa.Column("session", sa.String(128), nullable=False),
    sa.Column("msg_type", sa.String(16), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("missed", sa.BigInteger, nullable=False),
    sa.Column("cause", sa.String(16), nullable=False),
    sa.Column("detected_at", sa.Float, nullable=False),
    sa.UniqueConstraint("stream", "session", "msg_type", "first_seq", "cause", name="uq_gaps"),
    sa.Index("ix_gaps_stream_detected_at", "stream", "detected_at"))

# One row per daemon session that sent heartbeats, updated by each.
daemons = sa.Table(
    "daemons", metadata,
    sa.Column("session", sa.String(128), primary_key=True),
    sa.Column("first_sent_at", sa.Float, nullable=False),
    sa.Column("last_sent_at", sa.Float, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("uptime_s", sa.Float, nullable=False),
    sa.Column("streams", sa.Integer, nullable=False))

# A daemon's control-socket snapshot, taken when the recorder starts: the tag states at that
# moment, which the events missed while it was down would have told.
snapshots = sa.Table(
    "snapshots", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("taken_at", sa.Float, nullable=False),
    sa.Column("control", sa.Text, nullable=False),
    sa.Column("session", sa.String(128), nullable=False),
    sa.Column("stream", sa.String(128), nullable=False),
    sa.Column("tags", sa.Text, nullable=False),      # JSON array
    sa.Column("smoothed", sa.LargeBinary, nullable=False),
    sa.Column("active", sa.Text, nullable=False),    # JSON array
    sa.Column("windows", sa.BigInteger, nullable=False),
    # since revision 0006: the stream's source state, title and source then, or NULL
    sa.Column("state", sa.String(16)),
    sa.Column("title", sa.Text),
    sa.Column("source", sa.Text))

# since revision 0003 (protocol 1.2): dead air. One row per silence message: "on" (time_s is
# where the silence began) and "off" (time_s where it ended); both carry the start, so an "off"
# row alone is a whole span [start_s, time_s] of the stream's audio time. cause: "silence" or
# "tone" (a stuck tone).
silences = sa.Table(
    "silences", metadata, *_message_columns(),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("time_s", sa.Float, nullable=False),
    sa.Column("sample", sa.BigInteger, nullable=False),
    sa.Column("start_s", sa.Float, nullable=False),
    sa.Column("start_sample", sa.BigInteger, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("threshold_dbfs", sa.Float, nullable=False),
    sa.Column("cause", sa.String(16), nullable=False, server_default="silence"),
    sa.UniqueConstraint("stream", "session", "seq", name="uq_silences"),
    sa.Index("ix_silences_stream_sent_at", "stream", "sent_at"))


# since revision 0009: a stream's windows (scores messages) packed per minute, one row per
# stream, daemon session, model and minute (history.blocks holds the format and its precision).
# Since 0010, in PostgreSQL this table is partitioned by day of first_sent_at and
# window_rollups by month of minute_at (history.partitions), their primary and unique keys
# holding that column too.
window_blocks = sa.Table(
    "window_blocks", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id"), nullable=False),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("windows", sa.Integer, nullable=False),
    sa.Column("first_sent_at", sa.Float, nullable=False),
    sa.Column("last_sent_at", sa.Float, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("session_id", "first_seq", name="uq_window_blocks"),
    sa.Index("ix_window_blocks_first_sent_at", "first_sent_at"))

# since revision 0009: per block (so per stream and minute, more than one where a session or
# model changed, or the recorder wrote a quiet stream's block early), what reports over months
# need: each tag's mean smoothed score (a byte, 1/255) and the windows it was active in.
window_rollups = sa.Table(
    "window_rollups", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id"), nullable=False),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("minute_at", sa.Float, nullable=False),   # the minute's start, Unix seconds
    sa.Column("windows", sa.Integer, nullable=False),
    sa.Column("first_sent_at", sa.Float, nullable=False),
    sa.Column("last_sent_at", sa.Float, nullable=False),
    sa.Column("mean_smoothed", sa.LargeBinary, nullable=False),   # uint8 per tag, x/255
    sa.Column("active_windows", sa.LargeBinary, nullable=False),  # uint16 per tag
    sa.Column("rms_dbfs", sa.Float),         # mean
    sa.Column("peak_dbfs", sa.Float),        # highest
    sa.Column("short_term_lufs", sa.Float),  # power mean
    sa.Column("content", sa.Text),           # JSON object: windows per content
    sa.UniqueConstraint("session_id", "first_seq", name="uq_window_rollups"),
    sa.Index("ix_window_rollups_minute_at", "minute_at"),
    sa.Index("ix_window_rollups_session_minute", "session_id", "minute_at"))  # since 0010

MESSAGE_TABLES = {"event": events, "status": statuses, "track": tracks, "silence": silences}
# What a table of blocks stores, by message type
BLOCK_TABLES = {"scores": window_blocks}

# The windows' table before revision 0009, one row per window: what 0009 moves into blocks.
legacy_metadata = sa.MetaData()
legacy_scores = sa.Table(
    "scores", legacy_metadata, *_message_columns(),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("start_s", sa.Float, nullable=False),
    sa.Column("end_s", sa.Float, nullable=False),
    sa.Column("start_sample", sa.BigInteger, nullable=False),
    sa.Column("end_sample", sa.BigInteger, nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),       # float32 per tag
    sa.Column("smoothed", sa.LargeBinary, nullable=False),  # float32 per tag
    sa.Column("active", sa.Text, nullable=False),           # JSON array of tag names
    sa.Column("latency_ms", sa.Float, nullable=False),
    # since revision 0002 (protocol 1.2): the window's audio and the stream's mood, or NULL
    sa.Column("rms_dbfs", sa.Float),
    sa.Column("peak_dbfs", sa.Float),
    sa.Column("clipped", sa.BigInteger),
    sa.Column("onset_rate_hz", sa.Float),
    sa.Column("energy", sa.Float),
    sa.Column("mood", sa.Text),  # JSON array of the mood's words
    sa.Column("valence", sa.Float),
    sa.Column("arousal", sa.Float),
    # since revision 0005 (protocol 1.3): EBU R128 loudness at the window's end, or NULL
    sa.Column("momentary_lufs", sa.Float),
    sa.Column("short_term_lufs", sa.Float),
    # since revision 0008 (protocol 1.7): music, speech, silence, tone or noise, or NULL
    sa.Column("content", sa.String(16)),
    sa.UniqueConstraint("stream", "session", "seq", name="uq_scores"),
    sa.Index("ix_scores_stream_sent_at", "stream", "sent_at"))



# ---------------------------------------------------------------- values

def pack_scores(values: Iterable[float]) -> bytes:
    return np.asarray(list(values), dtype=SCORE_DTYPE).tobytes()


def unpack_scores(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=SCORE_DTYPE).astype(np.float64)


def pack_names(names: Sequence[str]) -> str:
    return json.dumps(list(names), ensure_ascii=False, separators=(",", ":"))


def unpack_names(text: str) -> list[str]:
    return json.loads(text)


# ---------------------------------------------------------------- opening

def normalise_url(url: str) -> sa.URL:
    """A database URL with streamtag's drivers: psycopg 3 for ``postgresql://``."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"--db {url!r} is not a database URL; use sqlite:///PATH (e.g. "
                          f"{DEFAULT_DB_URL}) or postgresql://USER@HOST:PORT/DBNAME") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"--db {url!r}: streamtag stores history in SQLite (sqlite:///PATH) "
                          "or PostgreSQL (postgresql://...), not "
                          f"{parsed.get_backend_name()}")
    return parsed


# How long an SQLite connection waits for another's lock (the recorder's, an upgrader's).
SQLITE_BUSY_TIMEOUT_MS = 5000


def sqlite_file(url: sa.URL) -> str | None:
    """The file an SQLite URL names; None for an in-memory database or another backend."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (history, the dashboard) read while the recorder writes; NORMAL
    # synchronous is durable across a process crash (not an OS crash) and much faster.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_db_engine(url: str, reader: bool = False) -> Engine:
    """An SQLAlchemy engine for a history URL (nothing is connected yet). A `reader` (history,
    the dashboard) opens an SQLite file read-only and writes nothing to it, not even its
    journal mode: an archive on a read-only disk or a file without write permission reads."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(f"--db {url!r} needs the psycopg driver: pip install "
                              "'psycopg[binary]'") from None
        # pre-ping: a connection from before a server restart is noticed and replaced.
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2)
    path = sqlite_file(parsed)
    if reader and path is not None:
        # the URL names the file in messages; the creator opens it
        return sa.create_engine(parsed, creator=lambda: _read_only_sqlite(path))
    engine = sa.create_engine(parsed)
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _read_only_sqlite(path: str):
    """A connection that cannot write: read-only (mode=ro); where even that cannot open the
    file (a database in WAL mode whose folder no one may write: SQLite cannot make its shared
    memory file), as an immutable file, which no one can be writing then either."""
    import sqlite3
    from urllib.parse import quote

    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"
    connection = None
    try:
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if connection is not None:
            # closed now: left to the garbage collector, it held the file open (a disk that
            # could not be unmounted) until the collector's next pass
            connection.close()
        if "unable to open" not in str(exc) and "readonly" not in str(exc):
            raise
        connection = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return connection


def require_existing(url: str) -> None:
    """Readers must not create an SQLite file where a mistyped path points."""
    parsed = normalise_url(url)
    if sqlite_file(parsed) is not None:
        if not Path(parsed.database).exists():
            raise ConfigError(f"there is no history database at {parsed.database}; check the "
                              "path, or record one with 'streamtag record --connect ENDPOINT "
                              f"--db {url}'")


def describe_url(engine: Engine) -> str:
    """The URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


# ---------------------------------------------------------------- schema versions

def _alembic_config(connection: sa.Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    config = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Create the schema, or migrate it to this code's revision; returns that revision. The
    whole upgrade is one transaction, one upgrader at a time: one killed midway leaves the
    database as it was, and a second recorder starting meanwhile waits, then finds it done."""
    from alembic import command

    head = head_revision()
    with _migrating(engine) as connection:
        current = current_revision(connection)
        if current == head:
            return head
        _refuse_newer(current, engine)
        command.upgrade(_alembic_config(connection), "head")
    return head


# The PostgreSQL advisory lock upgraders take (any number of this database's own: "stag").
UPGRADE_LOCK = 0x73746167


@contextlib.contextmanager
def _migrating(engine: Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds the schema: on PostgreSQL under an advisory
    lock; on SQLite begun with BEGIN IMMEDIATE by the driver's connection left to us (Python's
    sqlite3 commits before DDL on its own, so each ALTER of an upgrade killed midway stayed
    while the revision it belonged to did not)."""
    if engine.url.get_backend_name() != "sqlite":
        with engine.begin() as connection:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": UPGRADE_LOCK})
            yield connection
        return
    if sqlite_file(engine.url) is None:  # in memory: a database of this engine's own
        with engine.begin() as connection:
            yield connection
        return
    own = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    sa.event.listen(own, "connect", _sqlite_pragmas)
    sa.event.listen(own, "connect", _sqlite_manual_transactions)
    sa.event.listen(own, "begin", lambda connection: connection.exec_driver_sql(
        "BEGIN IMMEDIATE"))
    try:
        with own.begin() as connection:
            # a write that changes nothing: a file this process may not write is refused now,
            # not at the first message (SQLite opens it read-only without a word)
            version = connection.exec_driver_sql("PRAGMA user_version").scalar()
            connection.exec_driver_sql(f"PRAGMA user_version = {int(version)}")
            yield connection
    finally:
        own.dispose()


def _sqlite_manual_transactions(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # no BEGIN or COMMIT of the driver's own


def _refuse_newer(current: str | None, engine: Engine) -> None:
    from alembic.script import ScriptDirectory

    if current is None:
        return
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise ConfigError(f"the history database {describe_url(engine)} has schema revision "
                          f"{current}, which this streamtag does not know (a newer one wrote "
                          "it); upgrade streamtag")


def not_a_database(exc: sa.exc.DBAPIError, engine: Engine) -> str | None:
    """The error, with its fix, when an SQLite --db names a file that is something else;
    None otherwise."""
    if (engine.url.get_backend_name() == "sqlite"
            and getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_NOTADB"):
        return (f"{engine.url.database!r} is not an SQLite database "
                f"({str(exc.orig).strip()[:200]}); name a history database, or a file that "
                "does not exist yet for a new one, in --db sqlite:///PATH")
    return None


def check_readable(engine: Engine) -> None:
    """Raise ConfigError unless the database holds this code's schema revision."""
    head = head_revision()
    try:
        with engine.connect() as connection:
            current = current_revision(connection)
    except sa.exc.DatabaseError as exc:
        raise ConfigError(not_a_database(exc, engine)
                          or f"cannot open the history database {describe_url(engine)}: "
                             f"{str(exc.orig).strip()}") from None
    if current == head:
        return
    if current is None:
        raise ConfigError(f"{describe_url(engine)} holds no streamtag history; record one "
                          "with 'streamtag record --connect ENDPOINT --db URL'")
    _refuse_newer(current, engine)
    raise ConfigError(f"the history database {describe_url(engine)} has the older schema "
                      f"revision {current}; upgrade it with 'streamtag record --db URL "
                      "--upgrade' (the recorder also upgrades it when it starts)")
