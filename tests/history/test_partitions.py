"""PostgreSQL's windows and rollups partitioned by time (history.partitions), with a real
PostgreSQL cluster, streamtag's Publisher on 127.0.0.1 and the recorder: every earlier schema
revision upgrades into partitions, killed midway and started again; partitions are made ahead,
across months and years, and for rows that arrive for a day without one; retention running
while the recorder writes drops whole expired partitions and deletes no row of one."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa
from support.helpers import wait_until
from support.history_station import (
    MODEL,
    TAGS,
    Station,
    await_subscribed,
    keys,
    stored_keys,
    stored_windows,
)

from streamtag.history import partitions, schema
from streamtag.history.partitions import BLOCKS, DAY_S, ROLLUPS
from streamtag.history.recorder import Recorder
from streamtag.history.retention import Retention, expire
from tests.history.test_blocks import REVISIONS, _at_revision, _windows_at

# A recorder's blocks written half a second after their first window (not once their stream
# has been quiet for 2 s): the waits for what was sent end sooner.
BLOCK_AGE_S = 0.5


@pytest.fixture
def pg_url(postgres):
    return postgres.new_database()


def _names(engine, scheme) -> set[str]:
    with engine.connect() as conn:
        return set(partitions.partitions(conn, scheme))


def _misplaced(engine) -> list:
    """Rows in a partition other than that of their day or month (the default included)."""
    out = []
    with engine.connect() as conn:
        for scheme in partitions.SCHEMES:
            rows = conn.execute(sa.text(
                f"SELECT tableoid::regclass::text AS part, {scheme.column} AS at "
                f"FROM {scheme.table}")).all()
            out += [(r.part, r.at) for r in rows
                    if r.part != scheme.name(scheme.start(r.at))]
    return out


def _expected(scheme, times, now) -> set[str]:
    ahead = scheme.starts(now, now + partitions.AHEAD_DAYS * DAY_S)
    return {scheme.name(scheme.start(t)) for t in times} | {scheme.name(s) for s in ahead}


# ---------------------------------------------------------------- upgrades

@pytest.mark.parametrize("revision", [*REVISIONS, "0009"])
def test_every_revision_upgrades_into_partitions_even_when_killed_midway(pg_url, revision):
    """Windows across a midnight two days ago, and a stream forty days before: after the
    upgrade each block and rollup is in the partition of its day or month, today's and the
    next days' partitions are there, and every window reads back."""
    from alembic import command

    now = time.time()
    midnight = partitions.BLOCKS.start(now) - 2 * DAY_S
    engine = _at_revision(pg_url, min(revision, "0008"))
    rows = _windows_at(min(revision, "0008"), midnight - 100)
    for row in rows:
        if row["stream"] == "b":
            row["sent_at"] -= 40 * DAY_S
    with engine.begin() as conn:
        conn.execute(schema.models.insert(), {"id": 1, "name": MODEL["name"],
                                              "hash": MODEL["hash"],
                                              "tags": schema.pack_names(TAGS)})
        conn.execute(schema.legacy_scores.insert(), rows)
    if revision == "0009":
        with engine.begin() as conn:
            command.upgrade(schema._alembic_config(conn), "0009")
    before = sorted((w.stream, w.session, w.seq, w.sent_at) for w in stored_windows(engine)) \
        if revision == "0009" else None

    def killed_moving_the_rollups(conn, cursor, statement, *_):
        if statement.startswith("INSERT INTO window_rollups (") and " SELECT " in statement:
            raise RuntimeError("killed")

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", killed_moving_the_rollups)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            schema.upgrade(engine)
    finally:
        sa.event.remove(sa.engine.Engine, "after_cursor_execute", killed_moving_the_rollups)
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        assert schema.current_revision(conn) == revision
        assert not inspector.has_table("window_blocks_default")
        if revision == "0009":
            assert conn.execute(sa.select(sa.func.sum(schema.window_blocks.c.windows))
                                ).scalar() == len(rows)
    assert schema.upgrade(engine) == schema.head_revision()
    with engine.connect() as conn:
        kinds = dict(conn.execute(sa.text(
            "SELECT relname, relkind FROM pg_class WHERE relname IN "
            "('window_blocks', 'window_rollups')")).all())
        last_id = conn.execute(sa.text("SELECT last_value FROM window_blocks_id_seq")).scalar()
        most_id = conn.execute(sa.select(sa.func.max(schema.window_blocks.c.id))).scalar()
    assert kinds == {"window_blocks": "p", "window_rollups": "p"}
    assert last_id >= most_id  # new blocks' ids follow the old ones'
    times = [row["sent_at"] for row in rows]
    assert _names(engine, BLOCKS) == _expected(BLOCKS, times, now)
    assert _names(engine, ROLLUPS) == _expected(ROLLUPS, times, now)
    assert len({BLOCKS.start(t) for t in times}) == 3  # a midnight among the windows
    assert _misplaced(engine) == []
    stored = sorted((w.stream, w.session, w.seq, w.sent_at) for w in stored_windows(engine))
    assert len(stored) == len(rows)
    assert {(s, ses, q) for s, ses, q, _ in stored} == {
        (r["stream"], r["session"], r["seq"]) for r in rows}
    if before is not None:
        assert stored == before
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(schema.window_rollups.c.windows))
                            ).scalar() == len(rows)
    engine.dispose()


# ---------------------------------------------------------------- made ahead

def test_partitions_are_made_ahead_across_a_month_and_a_year(pg_url):
    engine = schema.create_db_engine(pg_url)
    schema.upgrade(engine)
    new_year = 1_830_297_600.0  # 2028-01-01 00:00 UTC
    made = partitions.ensure(engine, new_year - 1.5 * DAY_S)
    assert made == ["window_blocks_p20271230", "window_blocks_p20271231",
                    "window_blocks_p20280101", "window_blocks_p20280102",
                    "window_rollups_p202712", "window_rollups_p202801"]
    assert partitions.ensure(engine, new_year - 1.5 * DAY_S) == []  # there already
    engine.dispose()


def test_a_recorder_across_midnights_keeps_each_day_in_its_partition(pg_url):
    """Windows across tomorrow's midnight go into the partitions made ahead; windows across a
    midnight three days ago, which has none, wait in the default partition until the
    recorder makes theirs and moves them in. Every window is stored."""
    engine = schema.create_db_engine(pg_url)
    schema.upgrade(engine)
    now = time.time()
    tomorrow = BLOCKS.start(now) + DAY_S
    past = BLOCKS.start(now) - 3 * DAY_S
    station = Station()
    recorder = Recorder(engine, station.endpoint, retention_every_s=0.1,
                        max_block_age_s=BLOCK_AGE_S).start()
    try:
        await_subscribed(station, engine)
        station.play("ahead", range(0, 240), tomorrow - 120)
        station.play("late", range(0, 240), past - 120)
        wait_until(lambda: stored_keys(engine) == keys(station.sent) and not _misplaced(engine),
                   30, "every window stored in the partition of its day")
    finally:
        assert recorder.stop(10)
        station.close()
    sent = [m.header.sent_at for m in station.sent]
    assert {BLOCKS.name(BLOCKS.start(past - 1)), BLOCKS.name(past),
            BLOCKS.name(tomorrow - DAY_S), BLOCKS.name(tomorrow)} <= _names(engine, BLOCKS)
    assert _names(engine, BLOCKS) == _expected(BLOCKS, sent, now)
    assert _misplaced(engine) == []
    engine.dispose()


def test_a_login_that_may_not_make_partitions_loses_nothing_and_is_told_so(pg_url, caplog):
    """A recorder whose login may write the tables but not make or drop partitions (it does
    not own them), windows kept two days: windows of a day without a partition wait in the
    default one, kept; an expired partition stays; windows in the default partition older
    than two days go row by row. The log says once each what to do."""
    owner = schema.create_db_engine(pg_url)
    schema.upgrade(owner)
    now = time.time()
    partitions.ensure(owner, now - 100 * DAY_S)  # as a recorder running then made them
    with owner.begin() as conn:
        for statement in (
                "CREATE ROLE writer LOGIN", "GRANT USAGE ON SCHEMA public TO writer",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO writer",
                "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO writer",
                "GRANT TEMPORARY ON DATABASE " + pg_url.rsplit("/", 1)[1] + " TO writer"):
            conn.exec_driver_sql(statement)
    engine = schema.create_db_engine(pg_url.replace("//streamtag@", "//writer@"))
    late = BLOCKS.start(now) - DAY_S + 600  # yesterday: no partition, within two days
    station = Station()
    caplog.set_level(logging.WARNING, "streamtag.history.partitions")
    recorder = Recorder(engine, station.endpoint, retention=Retention(
        windows=2 * DAY_S, rollups=60 * DAY_S), retention_every_s=0.1,
        max_block_age_s=BLOCK_AGE_S).start()
    try:
        await_subscribed(station, engine)
        for stream, t0 in (("late", late), ("old", now - 5 * DAY_S),
                           ("ancient", now - 100 * DAY_S)):
            station.play(stream, range(0, 200), t0)
        kept = {k for k in keys(station.sent) if k[0] == "scores" and k[1] != "old"}
        wait_until(lambda: {k for k in stored_keys(engine) if k[0] == "scores"} == kept
                   and "cannot make" in caplog.text and "cannot drop" in caplog.text, 30,
                   "the windows kept stored, the old ones gone, and the warnings")
    finally:
        assert recorder.stop(10)
        station.close()
    assert BLOCKS.name(BLOCKS.start(late)) not in _names(owner, BLOCKS)
    assert BLOCKS.name(BLOCKS.start(now - 100 * DAY_S)) in _names(owner, BLOCKS)
    waiting = {part for part, _ in _misplaced(owner)}
    assert "window_blocks_default" in waiting
    assert waiting <= {"window_blocks_default", "window_rollups_default"}
    warnings = [r.getMessage() for r in caplog.records if "cannot " in r.getMessage()]
    assert sorted(w.split()[1] for w in warnings) == ["drop", "make"]
    assert all("run the recorder as the tables' owner" in w for w in warnings)
    engine.dispose()
    owner.dispose()


# ---------------------------------------------------------------- retention

def test_retention_while_the_recorder_writes_drops_only_expired_partitions(pg_url):
    """Windows kept two days and rollups sixty. A stream a hundred days old, whose day and
    month have partitions, loses both partitions; one five days old, whose day has none, loses
    its windows from the default partition and keeps its rollups; one in the day the windows'
    cut falls in keeps its windows, older than two days or not, until that day expires whole;
    a recent one keeps everything. No row of a partition is deleted one by one; tracks and
    events stay. Expiry runs every 0.1 s while the recorder writes."""
    engine = schema.create_db_engine(pg_url)
    schema.upgrade(engine)
    now = time.time()
    keep = Retention(windows=2 * DAY_S, rollups=60 * DAY_S)
    partitions.ensure(engine, now - 100 * DAY_S)  # as a recorder running then made them
    ancient_day = BLOCKS.name(BLOCKS.start(now - 100 * DAY_S))
    ancient_month = ROLLUPS.name(ROLLUPS.start(now - 100 * DAY_S))
    cut_day = BLOCKS.start(now - 2 * DAY_S)
    deletes: list[str] = []

    def deleting(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    sa.event.listen(engine, "before_cursor_execute", deleting)
    station = Station()
    recorder = Recorder(engine, station.endpoint, retention=keep,
                        retention_every_s=0.1, max_block_age_s=BLOCK_AGE_S).start()
    try:
        await_subscribed(station, engine)
        starts = {"ancient": now - 100 * DAY_S, "old": now - 5 * DAY_S,
                  "straddling": cut_day + 60, "recent": now - 900}
        for round_ in range(4):  # the streams interleaved, so expiry meets fresh writes
            for stream, t0 in starts.items():
                station.play(stream, range(round_ * 150, (round_ + 1) * 150), t0)

        def settled() -> bool:
            windows = {k[1] for k in stored_keys(engine) if k[0] == "scores"}
            return (recorder.queue.empty() and recorder.open_blocks == 0
                    and windows == {"straddling", "recent"}
                    and not _names(engine, BLOCKS) & {ancient_day}
                    and not _names(engine, ROLLUPS) & {ancient_month})

        wait_until(settled, 60, "the recorder to write and expiry to drop what is old")
    finally:
        assert recorder.stop(10)
        station.close()
        sa.event.remove(engine, "before_cursor_execute", deleting)
    expire(engine, keep, time.time())
    sent, stored = keys(station.sent), stored_keys(engine)
    assert {k for k in stored if k[0] == "scores"} == {
        k for k in sent if k[0] == "scores" and k[1] in ("straddling", "recent")}
    assert {k: n for k, n in stored.items() if k[0] != "scores"} == {
        k: n for k, n in sent.items() if k[0] != "scores"}
    with engine.connect() as conn:
        rollups = dict(conn.execute(
            sa.select(schema.sessions.c.stream, sa.func.sum(schema.window_rollups.c.windows))
            .join(schema.sessions).group_by(schema.sessions.c.stream)).all())
    assert rollups == {"old": 600, "straddling": 600, "recent": 600}
    assert BLOCKS.name(cut_day) in _names(engine, BLOCKS)
    assert _misplaced(engine) == []
    # rows went one by one only from the default partitions, and only those of "old"
    assert deletes and all(
        table in ("window_blocks_default", "window_rollups_default")
        for statement in deletes for table in [statement.split()[2]])
    engine.dispose()
