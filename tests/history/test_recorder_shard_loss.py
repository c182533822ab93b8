"""Loss stays visible with several recorders: three recorders of ``record --shard K/3`` into
one database store what was lost on the way, outages, a daemon restart and the time one of
them was away exactly as one recorder that lived the same life stores them, and what its full
queue dropped as overflow gaps covering exactly the windows it did not store; every window is
stored once across the shards. Real Publisher, recorders, SQLite file and PostgreSQL."""

from __future__ import annotations

import collections
import contextlib
import sqlite3
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from support.helpers import wait_until
from support.history_station import Station, stored_keys, table_rows

from streamtag.daemon.shard import ShardConfig, shard_of
from streamtag.history import schema
from streamtag.history.recorder import Recorder
from streamtag.wire.protocol import SilenceBody, StatusBody, topic_for

SHARDS = 3
SESSION_A, SESSION_B, SESSION_C = "a" * 32, "b" * 32, "c" * 32  # the daemon's, restart to restart
BIG_QUEUE = 100_000
SMALL_QUEUE = 60  # the returning shard recorder's: a burst of 100 windows a stream overflows it
AWAY = 1  # the shard whose recorder goes away, comes back and overflows
SYNC_TYPE = "silence"  # the probe's message type: Station.play sends none


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request, tmp_path):
    def make(name: str) -> str:
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / name}"
        return request.getfixturevalue("postgres").new_database()
    return make


def first_of_shard(prefix: str, k: int, count: int = 1) -> list[str]:
    return [s for s in (f"{prefix}-{i}" for i in range(200)) if shard_of(s, SHARDS) == k][:count]


STREAMS = {k: first_of_shard("radio", k, 2) for k in range(SHARDS)}
PLAYED = sorted(s for shard in STREAMS.values() for s in shard)


class Fleet:
    """The recorders of one life: ``owners`` gives each recorder's streams (None: all)."""

    def __init__(self, url: str, station: Station,
                 owners: list[Callable[[str], bool] | None]) -> None:
        self.url, self.station, self.owners = url, station, owners
        self.probes = [first_of_shard("probe", k)[0] if owns else "probe-all"
                       for k, owns in enumerate(owners)]
        self.away: int | None = None
        self.recorders: list[Recorder] = []
        for i in range(len(owners)):
            self.recorders.append(self.start(i, BIG_QUEUE))

    def start(self, i: int, queue_size: int) -> Recorder:
        recorder = Recorder(schema.create_db_engine(self.url), self.station.endpoint,
                            owns=self.owners[i], heartbeats=i == 0, queue_size=queue_size,
                            batch_size=20, max_backoff_s=0.2, max_block_age_s=1.0).start()

        def heard() -> bool:  # subscribed: it hears its own probe stream
            self.station.send(self.probes[i], StatusBody(state="running"))
            time.sleep(0.05)
            return recorder.stats.received.get("status", 0) > 0

        wait_until(heard, 20, "a recorder to subscribe", interval=0.1)
        return recorder

    def sync(self) -> None:
        """Every recorder has received all sent so far (ZeroMQ keeps a publisher's order: its
        probe after them), whether it queued or dropped it. The probe is the one kind of
        message nothing else sends (a silence): a status would be counted when one sent before
        it arrived late, and the recorder stopped with the rest still on the way."""
        here = [i for i in range(len(self.recorders)) if i != self.away]
        before = {i: self.recorders[i].stats.received.get(SYNC_TYPE, 0) for i in here}
        for i in here:
            self.station.send(self.probes[i], SilenceBody(
                state="on", time_s=0.0, sample=0, start_s=0.0, start_sample=0, duration_s=0.0,
                threshold_dbfs=-50.0))
        wait_until(lambda: all(self.recorders[i].stats.received.get(SYNC_TYPE, 0) > before[i]
                               for i in here), 30, "the recorders to receive everything sent")

    def drained(self) -> None:
        wait_until(lambda: all(self.recorders[i].queue.empty() for i in range(len(self.recorders))
                               if i != self.away), 60, "the recorders' queues to drain")

    def leave(self, i: int) -> None:
        """Recorder `i` stops (writing what it holds) and is away until ``back``."""
        self.recorders[i].stop(10)
        self.recorders[i].engine.dispose()
        self.away = i

    def back(self, queue_size: int) -> None:
        assert self.away is not None
        self.recorders[self.away] = self.start(self.away, queue_size)
        self.away = None

    def stop(self, check: bool = True) -> None:
        """Each recorder here writes what it holds; `check`: and wrote all of it."""
        for i, recorder in enumerate(self.recorders):
            if i != self.away:
                wrote_all = recorder.stop(30 if check else 0)
                recorder.engine.dispose()
                assert wrote_all or not check
        self.recorders, self.away = [], None


@contextlib.contextmanager
def database_stalled(url: str):
    """No recorder can write while inside: SQLite locked by another connection, PostgreSQL's
    tables locked by another transaction."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = sa.create_engine(url)
    try:
        for _ in range(100):  # a recorder's transaction under way may take a table first
            conn = engine.connect()
            try:
                conn.begin()
                conn.exec_driver_sql("SET LOCAL lock_timeout = '500ms'")
                conn.exec_driver_sql(
                    "LOCK TABLE window_blocks, window_rollups, events, statuses, tracks, "
                    "silences, gaps, sessions, models, daemons IN ACCESS EXCLUSIVE MODE")
                break
            except sa.exc.OperationalError:  # a lock timeout, or the loser of a deadlock
                conn.close()
        else:
            raise AssertionError("could not lock the recorders' tables")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()
    finally:
        engine.dispose()


def live(url: str, t0: float, owners: list, away: int | None, back_queue: int = BIG_QUEUE) -> int:
    """A fleet's life recorded into `url`; `away`: the recorder that is stopped while the
    daemon restarts and comes back with a queue of `back_queue` messages. Returns how many
    messages that recorder dropped at its full queue."""
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    station = Station()
    station.session = SESSION_A
    fleet = None
    try:
        fleet = Fleet(url, station, owners)
        for stream in PLAYED:
            station.play(stream, range(0, 30), t0)
        for k in range(SHARDS):  # lost on the way: three windows of one stream per shard
            station._seq[topic_for("scores", STREAMS[k][0])] += 3
            # an outage: the station off air from 61 s to 75 s
            station.send(STREAMS[k][1], StatusBody(state="reconnecting", error="gone"),
                         t0 + 61)
            station.send(STREAMS[k][1], StatusBody(state="running"), t0 + 75)
        for stream in PLAYED:
            station.play(stream, range(33, 60), t0)
        fleet.sync()
        if away is not None:
            fleet.leave(away)
        for stream in PLAYED:  # missed by the one away
            station.play(stream, range(60, 70), t0)
        station.session = SESSION_B  # the daemon restarts, its seqs from 0
        station._seq.clear()
        for stream in PLAYED:
            station.play(stream, range(0, 10), t0 + 120)
        fleet.sync()
        if away is not None:
            fleet.back(back_queue)
        for stream in PLAYED:
            station.play(stream, range(10, 15), t0 + 120)
        fleet.sync()
        with database_stalled(url):  # a burst while nothing can be written
            for stream in PLAYED:
                station.play(stream, range(15, 115), t0 + 120)
            # the daemon restarts again: the first messages of its new session find the small
            # queue full, and with them goes what they tell (a restart, a seq gap)
            station.session = SESSION_C
            station._seq.clear()
            for stream in PLAYED:
                station.play(stream, range(0, 5), t0 + 300)
            station._seq[topic_for("scores", STREAMS[AWAY][0])] += 2  # lost on the way
            for stream in PLAYED:
                station.play(stream, range(7, 9), t0 + 300)
            fleet.sync()
        fleet.drained()  # room in the queue again
        for stream in PLAYED:
            station.play(stream, range(9, 20), t0 + 300)
        fleet.sync()
        dropped = fleet.recorders[away].stats.overflowed if away is not None else 0
        fleet.stop()
        return dropped
    finally:
        if fleet is not None:
            fleet.stop(check=False)
        station.close()


def of_streams(counter: collections.Counter, streams) -> collections.Counter:
    return collections.Counter({k: n for k, n in counter.items() if k[1] in streams})


def gap_rows(engine, streams, cause: str) -> list[tuple]:
    return sorted((g.stream, g.session, g.msg_type, g.first_seq, g.missed)
                  for g in table_rows(engine, schema.gaps)
                  if g.stream in streams and g.cause == cause)


def session_rows(engine, streams) -> list[tuple]:
    return sorted((s.stream, s.session, s.previous_session, s.restarted)
                  for s in table_rows(engine, schema.sessions) if s.stream in streams)


def overflow_covered(engine, streams) -> collections.Counter:
    covered = collections.Counter()
    for stream, session, msg_type, first, missed in gap_rows(engine, streams, "overflow"):
        for seq in range(first, first + missed):
            covered[(msg_type, stream, session, seq)] += 1
    return covered


def test_three_shard_recorders_record_loss_as_one_recorder_does(new_url):
    """Shard recorders 0/3, 1/3 and 2/3 into one database; the recorder of shard 1 is away
    while the daemon restarts and comes back with a small queue, which a burst overflows while
    the database is stalled. Against one recorder that stayed (shards 0 and 2's streams) and
    one that lived shard 1's recorder's life with a queue that holds the burst (shard 1's):
    the same seq gaps, sessions (the restart, and the one first met after the recorder's own
    restart), statuses of the outage and windows; shard 1's windows short by exactly what its
    overflow gaps cover; every window once."""
    t0 = round(time.time()) - 3600.0
    shards = new_url("shards.db")
    owners = [ShardConfig(k, SHARDS).owns for k in range(SHARDS)]
    dropped = live(shards, t0, owners, away=AWAY, back_queue=SMALL_QUEUE)
    stayed, away = new_url("stayed.db"), new_url("away.db")
    assert live(stayed, t0, [None], away=None) == 0
    assert live(away, t0, [None], away=0) == 0
    engines = {name: schema.create_db_engine(url) for name, url in
               (("shards", shards), ("stayed", stayed), ("away", away))}
    try:
        stored = {name: stored_keys(e) for name, e in engines.items()}
        assert set(stored["shards"].values()) == {1}  # every message once across the shards
        present = [s for k in range(SHARDS) if k != AWAY for s in STREAMS[k]]
        for reference, streams in (("stayed", present), ("away", STREAMS[AWAY])):
            assert gap_rows(engines["shards"], streams, "seq") == \
                gap_rows(engines[reference], streams, "seq")
            assert session_rows(engines["shards"], streams) == \
                session_rows(engines[reference], streams)
        # the shards that stayed: everything as the recorder that stayed has it
        assert of_streams(stored["shards"], present) == of_streams(stored["stayed"], present)
        assert gap_rows(engines["shards"], present, "overflow") == []
        # the shard that overflowed: the other's windows less exactly those its gaps cover
        covered = overflow_covered(engines["shards"], STREAMS[AWAY])
        # every message it dropped (its probe's too) is in a gap, and no other
        probe = first_of_shard("probe", AWAY)
        assert sum(overflow_covered(engines["shards"], [*STREAMS[AWAY], *probe]).values()) \
            == dropped > sum(covered.values()) > 0
        assert of_streams(stored["shards"], STREAMS[AWAY]) + covered == \
            of_streams(stored["away"], STREAMS[AWAY])
        assert not of_streams(stored["shards"], STREAMS[AWAY]) & covered
        # what was lost on the way and the time away are gaps of shard 1's streams too
        assert {g[0] for g in gap_rows(engines["shards"], STREAMS[AWAY], "seq")} == \
            set(STREAMS[AWAY])
    finally:
        for engine in engines.values():
            engine.dispose()
