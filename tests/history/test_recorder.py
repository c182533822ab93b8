"""The recorder and the history, with real parts: streamtag's Publisher on 127.0.0.1, the
recorder in-process or as a real ``streamtag record`` process, SQLite files and a real
PostgreSQL cluster (Debian's server, started here as an unprivileged process)."""

from __future__ import annotations

import collections
import csv
import io
import json
import logging
import os
import re
import signal
import sqlite3
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from support.helpers import free_port, run_streamtag, stop_process, wait_until
from support.history_station import (
    MODEL,
    TAGS,
    TRACK_WINDOWS,
    Station,
    await_subscribed,
    history,
    keys,
    record,
    stored_keys,
    stored_windows,
    table_rows,
    wait_stored,
)
from support.postgres import PostgresServer

from streamtag import values
from streamtag.cli import main
from streamtag.history import partitions, schema
from streamtag.history.recorder import Recorder
from streamtag.history.report import parse_time
from streamtag.wire.control import ControlServer
from streamtag.wire.protocol import (
    EventBody,
    ScoresBody,
    SilenceBody,
    StatusBody,
    TrackBody,
    make_message,
)
from streamtag.wire.proxy import run_proxy
from streamtag.wire.subscriber import ReceivedMessage

# ---------------------------------------------------------------- databases

def new_database(server: PostgresServer) -> str:
    return server.new_database()


@pytest.fixture
def engine(db_url):
    engine = schema.create_db_engine(db_url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def _not_a_partition(name, kind, _parent) -> bool:
    return kind != "table" or not partitions.is_partition(name)


def _partitioned_keys(engine) -> dict:
    """PostgreSQL's partitioned tables' unique keys, which hold their partition column too."""
    if not partitions.partitioned(engine):
        return {}
    inspector = sa.inspect(engine)
    return {scheme.table: [(u["name"], u["column_names"])
                           for u in inspector.get_unique_constraints(scheme.table)]
            for scheme in partitions.SCHEMES}


def _not_a_partitioned_key(engine):
    keys = {(table, name) for table, found in _partitioned_keys(engine).items()
            for name, _ in found}
    return lambda obj, name, kind, *_: not (
        kind == "unique_constraint" and (obj.table.name, name) in keys)


def test_migrations_build_exactly_the_tables_the_code_writes(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "include_name": _not_a_partition,
            "include_object": _not_a_partitioned_key(engine)})
        assert compare_metadata(context, schema.metadata) == []
        assert schema.current_revision(conn) == schema.head_revision()
    if partitions.partitioned(engine):
        assert _partitioned_keys(engine) == {
            "window_blocks": [("uq_window_blocks", ["session_id", "first_seq", "first_sent_at"])],
            "window_rollups": [("uq_window_rollups", ["session_id", "first_seq", "minute_at"])]}
    assert schema.upgrade(engine) == schema.head_revision()  # a second upgrade changes nothing
    schema.check_readable(engine)



def _at_revision(url: str, revision: str) -> sa.Engine:
    """A new database built up to an older revision, as an older streamtag left it."""
    from alembic import command

    engine = schema.create_db_engine(url)
    with engine.begin() as conn:
        command.upgrade(schema._alembic_config(conn), revision)
    return engine


def test_an_upgrade_that_fails_midway_leaves_the_database_as_it_was(db_url):
    """Each revision's ALTERs and its version are one transaction (on SQLite too, where the
    driver committed each ALTER on its own: an upgrade killed midway left columns of a
    revision the database did not say it had, and no upgrade could go on from there)."""
    engine = _at_revision(db_url, "0005")
    count = {"n": 0}

    def fail_at_the_second_alter(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("ALTER TABLE"):
            count["n"] += 1
            if count["n"] == 2:
                raise RuntimeError("killed")

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", fail_at_the_second_alter)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            schema.upgrade(engine)
    finally:
        sa.event.remove(sa.engine.Engine, "after_cursor_execute", fail_at_the_second_alter)
    with engine.connect() as conn:
        assert schema.current_revision(conn) == "0005"
        assert "state" not in {c["name"] for c in sa.inspect(conn).get_columns("snapshots")}
    assert schema.upgrade(engine) == schema.head_revision()
    engine.dispose()


def test_a_database_an_older_upgrade_left_half_done_is_refused_naming_the_fix(tmp_path,
                                                                              capsys):
    # Older streamtags' SQLite upgrades committed each ALTER on its own: one killed midway
    # left a column of a revision the database did not claim, and every upgrade after failed
    # on it with "cannot reach" (and the recorder waited for ever)
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = _at_revision(url, "0005")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE snapshots ADD COLUMN state VARCHAR(16)")
    engine.dispose()
    for args in (["--upgrade"], ["--connect", "tcp://127.0.0.1:9"]):
        capsys.readouterr()
        assert main(["record", "--db", url, *args]) == 2
        err = capsys.readouterr().err
        assert "was left half-upgraded (duplicate column name: state)" in err, err
        assert "restore the database from a backup, or drop that column" in err
        # the command to run, whole: this file, that table and column, this URL
        assert (f"(sqlite3 {tmp_path / 'tags.db'} 'ALTER TABLE snapshots DROP COLUMN state') "
                f"and run 'streamtag record --db {url} --upgrade' again") in err, err


def test_two_upgraders_at_once_one_upgrades_the_other_finds_it_done(db_url):
    engine = _at_revision(db_url, "0003")
    engine.dispose()
    results, errors = [], []

    def upgrade() -> None:
        own = schema.create_db_engine(db_url)
        try:
            results.append(schema.upgrade(own))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and results == [schema.head_revision()] * 2


def test_a_database_whose_silences_lack_the_cause_column_gets_it(tmp_path):
    """Revision 0003 gained silences.cause after databases were made with it; those kept a
    silences table without it, where the recorder could store no silence (on SQLite it
    stopped storing anything)."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = _at_revision(url, "0006")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE silences DROP COLUMN cause")
    schema.upgrade(engine)
    with engine.connect() as conn:
        assert "cause" in {c["name"] for c in sa.inspect(conn).get_columns("silences")}
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), schema.metadata) == []
    engine.dispose()


def test_readers_write_nothing_and_read_an_archive_on_a_read_only_disk(tmp_path, capsys):
    """history and the dashboard open SQLite read-only: they set WAL mode on every connection
    (a write), so an archive on a read-only disk, or a file they may not write, did not open."""
    import gc
    import hashlib
    import os
    import shutil
    import subprocess

    folder = tmp_path / "archive"
    folder.mkdir()
    path = folder / "tags.db"
    engine = schema.create_db_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    engine.dispose()
    sqlite = sqlite3.connect(path, isolation_level=None)
    sqlite.execute("PRAGMA journal_mode=DELETE")  # as an archive made by VACUUM INTO
    sqlite.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["history", "--db", f"sqlite:///{path}"]) == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in folder.iterdir()) == ["tags.db"]  # no -wal, no -shm
    # On a read-only mount, in WAL mode too (where SQLite cannot make its shared memory file)
    sqlite = sqlite3.connect(path, isolation_level=None)
    sqlite.execute("PRAGMA journal_mode=WAL")
    sqlite.close()
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "--bind", "-o", "ro", str(folder), str(mounted)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only mount here (needs root)")
    try:
        capsys.readouterr()
        # with the garbage collector off: a connection left to it stays open (the first,
        # refused attempt's did, and the disk could not be unmounted)
        gc.disable()
        try:
            assert main(["history", "--db", f"sqlite:///{mounted / 'tags.db'}"]) == 0, \
                capsys.readouterr().err
            held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                    if os.path.exists(f"/proc/self/fd/{fd}")]
        finally:
            gc.enable()
        assert not [p for p in held if p.startswith(str(mounted))], held
    finally:
        subprocess.run(["umount", str(mounted)], check=True)



def test_the_recorder_refuses_a_database_it_may_not_write_at_once(tmp_path):
    """A file at this code's revision that this user may not write: the recorder said it was
    recording, and failed at the first message, retrying for ever."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    path = tmp_path / "tags.db"
    engine = schema.create_db_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    engine.dispose()
    path.chmod(0o444)
    command = [sys.executable, "-m", "streamtag", "record", "--db", f"sqlite:///{path}",
               "--connect", "tcp://127.0.0.1:9"]
    if os.geteuid() == 0:  # root writes any file: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop the right to write any file")
        caps = "-dac_override,-dac_read_search,-fowner"
        setpriv = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
        if subprocess.run([*setpriv, "true"], capture_output=True).returncode != 0:
            pytest.skip("setpriv cannot drop capabilities here")
        command = [*setpriv, *command]
    # from outside the source tree, as helpers.run_streamtag does (it says why)
    result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            cwd=tempfile.gettempdir())
    assert result.returncode == 2, result.stderr
    assert "readonly database" in result.stderr and "may write there" in result.stderr


def test_a_table_that_lacks_a_column_refuses_those_messages_and_stores_the_others(tmp_path):
    """SQLite says a missing column as an operational error: the recorder took it for the
    database being down and retried that batch for ever, storing nothing more. It is a
    refusal of those messages, kept as gaps, as PostgreSQL's UndefinedColumn is."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE silences DROP COLUMN cause")
    station = Station()
    recorder = Recorder(engine, station.endpoint).start()
    try:
        await_subscribed(station, engine)
        now = time.time()
        station.send("r", SilenceBody(state="on", time_s=10.0, sample=160000, start_s=10.0,
                                      start_sample=160000, duration_s=10.0,
                                      threshold_dbfs=-50.0), now)
        station.send("r", StatusBody(state="running", title="after the silence"), now + 1)

        def stored() -> bool:
            with engine.connect() as conn:
                return (conn.execute(sa.select(sa.func.count()).select_from(
                    schema.statuses)).scalar() == 1 and conn.execute(sa.select(
                        sa.func.count()).select_from(schema.gaps)).scalar() == 1)

        wait_until(stored, 30, "the status stored and the silence kept as a gap")
    finally:
        recorder.stop(5)
        station.close()
    with engine.connect() as conn:
        gap = conn.execute(sa.select(schema.gaps.c.msg_type, schema.gaps.c.cause)).one()
    engine.dispose()
    assert tuple(gap) == ("silence", "rejected")

def test_every_message_is_stored_exactly_once_even_when_received_twice(engine):
    # The recorder hears the station directly and through a proxy: every message arrives
    # twice, and the database must still hold each exactly once, with its values.
    station = Station()
    stop = threading.Event()
    backend = f"tcp://127.0.0.1:{free_port()}"
    proxy = threading.Thread(target=run_proxy, args=(None, backend, stop),
                             kwargs={"upstream": [station.endpoint], "sndhwm": 0})
    proxy.start()
    recorder = Recorder(engine, [station.endpoint, backend]).start()
    try:
        await_subscribed(station, engine)
        time.sleep(0.3)  # the proxy's subscription too
        sent = []
        for stream in ("radio-1", "radio-2", "radio-10"):
            sent += station.play(stream, range(0, TRACK_WINDOWS + 20))
        wait_stored(engine, len(sent))
        wait_until(lambda: recorder.stats.received["scores"] >= 2 * sum(
            m.msg_type == "scores" for m in sent), 20, "both copies to arrive")
        assert recorder.stop()
        stored = stored_keys(engine)
        assert stored == keys(sent)
        assert set(stored.values()) == {1}
        assert {m.msg_type for m in sent} == {"scores", "event", "status", "track"}
        assert table_rows(engine, schema.gaps) == []
        # Values come back as sent (scores to 1/255, as history.blocks stores them).
        by_key = {(m.stream, m.seq): m.body for m in sent if m.msg_type == "scores"}
        rows = stored_windows(engine)
        model_tags = {r.id: schema.unpack_names(r.tags) for r in table_rows(engine,
                                                                           schema.models)}
        for row in rows:
            body = by_key[(row.stream, row.seq)]
            assert model_tags[row.model_id] == list(body.tags)
            np.testing.assert_allclose(row.raw, body.raw, rtol=0, atol=0.5 / 255 + 1e-9)
            np.testing.assert_allclose(row.smoothed, body.smoothed, rtol=0,
                                       atol=0.5 / 255 + 1e-9)
            assert schema.unpack_names(row.active) == list(body.active)
            assert (row.start_sample, row.end_sample) == (body.start_sample, body.end_sample)
        tracks = {(r.stream, r.seq): r for r in table_rows(engine, schema.tracks)}
        for m in sent:
            if m.msg_type == "track":
                row = tracks[(m.stream, m.seq)]
                assert (row.title, row.windows) == (m.body.title, m.body.windows)
                np.testing.assert_allclose(schema.unpack_scores(row.active_share),
                                           m.body.active_share, atol=1e-7)
        events = {(r.stream, r.seq): (r.tag, r.state) for r in table_rows(engine,
                                                                        schema.events)}
        assert events == {(m.stream, m.seq): (m.body.tag, m.body.state)
                          for m in sent if m.msg_type == "event"}
    finally:
        recorder.stop(0)
        stop.set()
        proxy.join(5)
        station.close()


def test_a_recorder_stopped_as_messages_arrive_stores_every_one_it_received(engine):
    # stop() at the moment the receiver holds a chunk it has not yet handed to the writer
    # (its hand-over slowed here, as a busy machine slows it): the writer waits for it, and
    # stop() returns only once that chunk is stored. (What is still unread in the socket is
    # not received: a recorder started again stores it as a gap.)
    station = Station()
    recorder = Recorder(engine, station.endpoint).start()
    try:
        await_subscribed(station, engine)
        handing_over = threading.Event()
        offer, handed = recorder.queue.offer, []

        def slow_offer(messages):
            handed.extend(messages)
            handing_over.set()
            time.sleep(1.0)  # longer than the writer's wait for a message (0.2 s)
            return offer(messages)

        recorder.queue.offer = slow_offer
        station.play("radio-1", range(0, 30))
        assert handing_over.wait(20), "the recorder received nothing"
        assert recorder.stop(30)  # and wrote everything queued
        stored = stored_keys(engine)
        assert handed and keys(handed) - stored == collections.Counter()
        assert stored - keys(station.sent) == collections.Counter()
    finally:
        recorder.stop(0)
        station.close()


def _threads() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/task"):
        try:
            out[int(name)] = Path(f"/proc/self/task/{name}/comm").read_text().strip()
        except OSError:  # ended meanwhile
            pass
    return out


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux's scheduling classes")
def test_the_feed_is_read_by_an_io_thread_that_does_not_preempt_the_recorders_decoding(engine):
    """The recorder reads the feed through a ZeroMQ context of its own whose I/O thread runs
    as a batch job (SCHED_BATCH): woken by data arriving it waits for its turn instead of
    preempting the thread that decodes. The process's other threads keep their class,
    everything is stored, and stop ends the thread."""
    station = Station()
    before = _threads()
    recorder = Recorder(engine, station.endpoint).start()
    try:
        await_subscribed(station, engine)
        station.play("radio-1", range(0, 20))
        wait_until(lambda: stored_keys(engine) - keys(station.sent) == collections.Counter()
                   and keys(station.sent) - stored_keys(engine) == collections.Counter(), 30,
                   "everything sent stored")
        started = {t: name for t, name in _threads().items() if t not in before}
        io = [t for t, name in started.items() if name.startswith("ZMQbg/IO")]
        assert len(io) == 1, started
        assert os.sched_getscheduler(io[0]) == os.SCHED_BATCH
        others = [t for t in _threads() if t not in io]
        assert {os.sched_getscheduler(t) for t in others} == {os.SCHED_OTHER}
    finally:
        assert recorder.stop(30)
        station.close()
    assert io[0] not in _threads()  # its context ended with the recorder


def _rebind(endpoint: str) -> Station:
    # ZeroMQ releases a closed socket's port in its I/O thread, a moment after close().
    deadline = time.monotonic() + 10
    while True:
        try:
            return Station(endpoint)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _snapshot_handler(station: Station, streams: tuple[str, ...]):
    def snapshot(_: dict) -> dict:
        return {"session": station.session, "model": {**MODEL, "tags": list(TAGS)},
                "streams": {s: {"tags": list(TAGS), "smoothed": [0.5] * len(TAGS),
                                "active": ["calm"], "windows": 7} for s in streams}}
    return snapshot


def test_a_killed_recorder_loses_only_what_was_published_while_down_and_stores_it_as_a_gap(
        tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    station = Station(endpoint)
    streams = ("radio-1", "radio-2")
    control = ControlServer("tcp://127.0.0.1:*",
                            {"snapshot": _snapshot_handler(station, streams)}).start()
    # --block-s: each wait for what was sent ends once its windows' block is written
    args = ("record", "--connect", endpoint, "--control", control.endpoint, "--db", url,
            "--block-s", "0.5")
    recorder = run_streamtag(*args, popen=True)
    try:
        await_subscribed(station, engine)
        before = [m for s in streams for m in station.play(s, range(0, 60))]
        wait_stored(engine, len(before))
        recorder.send_signal(signal.SIGKILL)
        recorder.communicate(timeout=10)  # reaps it and closes its pipes
        killed_at = time.time()
        while_down = [m for s in streams for m in station.play(s, range(60, 100))]
        recorder = run_streamtag(*args, popen=True)
        await_subscribed(station, engine)
        after = [m for s in streams for m in station.play(s, range(100, 160))]
        wait_stored(engine, len(before) + len(after))

        assert stored_keys(engine) == keys(before + after)
        lost = collections.Counter((m.stream, m.msg_type) for m in while_down)
        first_lost = {}
        for m in while_down:
            first_lost.setdefault((m.stream, m.msg_type), m.seq)
        gaps = {(g.stream, g.msg_type): g for g in table_rows(engine, schema.gaps)
                if g.msg_type != "heartbeat"}
        assert set(gaps) == set(lost)
        for key, gap in gaps.items():
            assert (gap.missed, gap.first_seq, gap.cause) == (lost[key], first_lost[key], "seq")
        # The restarted recorder asked the daemon for its current tag states.
        snapshots = [r for r in table_rows(engine, schema.snapshots) if r.taken_at > killed_at]
        assert {r.stream for r in snapshots} == set(streams)
        assert all(r.session == station.session and schema.unpack_names(r.active) == ["calm"]
                   for r in snapshots)
        told = history(capsys, "--db", url, "--stream", "radio-1")
        assert told.returncode == 0
        assert f"MISSING {lost[('radio-1', 'scores')]} scores messages" in told.stdout
        # what a stopped recorder missed is not said to be lost on the network
        assert "or sent while the recorder was stopped" in told.stdout
        assert "the daemon's tags then: calm" in told.stdout

        # The daemon restarts: a new session on the same endpoint, stored with its predecessor.
        old_session = station.session
        station.close()
        station = _rebind(endpoint)
        await_subscribed(station, engine)
        restarted = station.play("radio-1", range(0, 10))
        wait_stored(engine, len(before) + len(after) + len(restarted))
        rows = {r.session: r for r in table_rows(engine, schema.sessions)
                if r.stream == "radio-1"}
        assert rows[station.session].previous_session == old_session
        assert rows[station.session].restarted is True
        assert rows[old_session].restarted is False

        recorder.send_signal(signal.SIGTERM)
        out, err = recorder.communicate(timeout=30)
        assert recorder.returncode == 0, err
        assert "wrote" in err
    finally:
        stop_process(recorder)
        recorder.communicate()  # closes its pipes
        control.stop()
        station.close()
        engine.dispose()


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_a_database_stopped_under_load_loses_nothing_that_fit_the_queue(postgres):
    from streamtag.history.metrics import RecorderMetrics

    engine = schema.create_db_engine(postgres.url)
    schema.upgrade(engine)
    station = Station()
    recorder = Recorder(engine, station.endpoint, queue_size=20_000, max_backoff_s=0.5,
                        max_block_age_s=0.5)
    recorder.start()
    metrics = RecorderMetrics(recorder, 0)
    try:
        await_subscribed(station, engine)
        sent = station.play("radio-1", range(0, 200))
        wait_stored(engine, len(sent))
        postgres.stop()
        try:
            # Under load while the server is down: several streams keep publishing.
            for i in range(4):
                sent += station.play(f"down-{i}", range(0, 150))
                time.sleep(0.2)
            wait_until(lambda: recorder.stats.db_errors > 0, 20, "the recorder to notice")
            assert _scrape(metrics.port)["streamtag_record_db_up"] == 0
        finally:
            postgres.start()
        sent += station.play("radio-1", range(200, 260))
        wait_stored(engine, len(sent), timeout=60)
        assert stored_keys(engine) == keys(sent)
        scraped = _scrape(metrics.port)
        assert scraped["streamtag_record_queue_overflow_messages_total"] == 0
        assert scraped["streamtag_record_db_errors_total"] >= 1
        assert scraped["streamtag_record_db_up"] == 1
        assert table_rows(engine, schema.gaps) == []
    finally:
        metrics.close()
        recorder.stop(5)
        station.close()
        engine.dispose()


def test_what_overflows_the_queue_is_counted_reported_and_stored_as_a_gap(postgres):
    from streamtag.history.metrics import RecorderMetrics

    engine = schema.create_db_engine(new_database(postgres))  # the counts are this test's
    schema.upgrade(engine)
    station = Station()
    recorder = Recorder(engine, station.endpoint, queue_size=100, batch_size=50,
                        max_backoff_s=0.5, max_block_age_s=0.5)
    recorder.start()
    metrics = RecorderMetrics(recorder, 0)
    try:
        await_subscribed(station, engine)
        postgres.stop()
        try:
            sent = station.play("radio-1", range(0, 600))
            wait_until(lambda: recorder.stats.received["scores"] >= 600, 20,
                       "every message to reach the recorder")
        finally:
            postgres.start()
        wait_until(lambda: recorder.queue.empty() and recorder.stats.db_up
                   and recorder.open_blocks == 0, 60, "the queue to drain")
        time.sleep(0.5)
        stored = stored_keys(engine)
        missing = keys(sent) - stored
        assert set(stored.values()) == {1} and not stored - keys(sent)
        overflowed = _scrape(metrics.port)["streamtag_record_queue_overflow_messages_total"]
        assert overflowed == sum(missing.values()) > 0
        # Every lost message is covered by an overflow gap row, and nothing else is.
        covered = collections.Counter()
        for gap in table_rows(engine, schema.gaps):
            assert gap.cause == "overflow"
            for seq in range(gap.first_seq, gap.first_seq + gap.missed):
                covered[(gap.msg_type, gap.stream, gap.session, seq)] += 1
        assert covered == missing
    finally:
        metrics.close()
        recorder.stop(5)
        station.close()
        engine.dispose()


# ---------------------------------------------------------------- streamtag history

@pytest.fixture(scope="module")
def recorded_hour(tmp_path_factory):
    """An hour of one stream's audio and twenty minutes of another's (one window a second),
    published fast with wall-clock times two hours ago, recorded by a real `streamtag record`
    process into SQLite."""
    path = tmp_path_factory.mktemp("hour") / "tags.db"
    url = f"sqlite:///{path}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    station = Station()
    recorder = run_streamtag("record", "--connect", station.endpoint, "--db", url, popen=True)
    try:
        await_subscribed(station, engine)
        t0 = round(time.time()) - 7200.0
        sent = (station.play("radio-1", range(3600), t0)
                + station.play("radio-2", range(1200), t0))
        wait_stored(engine, len(sent), timeout=60)
        recorder.send_signal(signal.SIGTERM)
        recorder.communicate(timeout=30)
        assert recorder.returncode == 0
    finally:
        stop_process(recorder)
        recorder.communicate()  # closes its pipes
        station.close()
        engine.dispose()
    return url, t0, sent


def direct_history(sent, stream: str, since: float, until: float) -> dict:
    """What the history should say, computed from the messages themselves."""
    scores = [m.body for m in sent if m.msg_type == "scores" and m.stream == stream
              and since <= m.sent_at <= until]
    share = {tag: sum(tag in b.active for b in scores) / len(scores) for tag in TAGS}
    tracks = [m.body for m in sent if m.msg_type == "track" and m.stream == stream
              and m.body.ended_at >= since and m.body.started_at <= until]
    events = [(m.sent_at, m.body.tag, m.body.state, m.body.time_s) for m in sent
              if m.msg_type == "event" and m.stream == stream and since <= m.sent_at <= until]
    return {"windows": len(scores), "share": share, "tracks": tracks, "events": events}


def check_answer(answer: dict, expected: dict, stream: str) -> None:
    got = answer["streams"][stream]
    assert got["windows"] == expected["windows"]
    assert got["airtime"] == pytest.approx(expected["share"], abs=1e-12)
    tracks = [t for t in answer["tracks"] if t["stream"] == stream]
    assert [(t["title"], t["windows"], t["active"]) for t in tracks] == [
        (b.title, b.windows, list(b.active)) for b in expected["tracks"]]
    for t, b in zip(tracks, expected["tracks"], strict=True):
        assert [t["tags"][tag]["mean_smoothed"] for tag in TAGS] == pytest.approx(
            b.mean_smoothed, abs=1e-6)
        assert [t["tags"][tag]["active_share"] for tag in TAGS] == pytest.approx(
            b.active_share, abs=1e-6)
    events = [(e["sent_at"], e["tag"], e["state"], e["time_s"]) for e in answer["events"]
              if e["stream"] == stream]
    assert events == expected["events"]


def test_history_answers_match_a_direct_computation_from_the_messages(recorded_hour, capsys):
    url, t0, sent = recorded_hour
    result = history(capsys, "--db", url, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer["streams"]) == {"radio-1", "radio-2"}
    for stream, windows in (("radio-1", 3600), ("radio-2", 1200)):
        expected = direct_history(sent, stream, 0, float("inf"))
        assert expected["windows"] == windows and len(expected["tracks"]) == windows // 240
        check_answer(answer, expected, stream)
    assert answer["gaps"] == [] and answer["restarts"] == []

    # One stream, ten minutes from five past: --since as ISO 8601 with an offset, --until as
    # Unix seconds.
    since, until = t0 + 300.5, t0 + 900.5
    since_iso = datetime.fromtimestamp(since, UTC).isoformat()
    result = history(capsys, "--db", url, "--json", "--stream", "radio-2",
                           "--since", since_iso, "--until", str(until))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer["streams"]) == {"radio-2"}
    check_answer(answer, direct_history(sent, "radio-2", since, until), "radio-2")


def test_history_writes_csv_text_and_a_timeline_png(recorded_hour, tmp_path, capsys):
    url, t0, sent = recorded_hour
    png = tmp_path / "timeline.png"
    result = history(capsys, "--db", url, "--csv", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = direct_history(sent, "radio-1", 0, float("inf"))
    (airtime,) = [r for r in rows if r["kind"] == "airtime" and r["stream"] == "radio-1"]
    assert {tag: float(airtime[f"tag:{tag}"]) for tag in TAGS} == pytest.approx(
        expected["share"], abs=1e-6)
    assert sum(r["kind"] == "event" for r in rows) == sum(m.msg_type == "event" for m in sent)
    # wide: one row per track, its tags' mean smoothed scores in their columns
    tracks = [r for r in rows if r["kind"] == "track"]
    sent_tracks = [m.body for m in sent if m.msg_type == "track"]
    assert sorted(r["title"] for r in tracks) == sorted(b.title for b in sent_tracks)
    by_title = {r["title"]: r for r in tracks}
    for body in sent_tracks:
        assert [float(by_title[body.title][f"tag:{tag}"]) for tag in TAGS] == pytest.approx(
            body.mean_smoothed, abs=1e-6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    text = history(capsys, "--db", url, "--stream", "radio-1", "--since", "3h")
    assert text.returncode == 0, text.stderr
    assert "radio-1: 3600 windows" in text.stdout and "radio-1 song 15" in text.stdout
    assert "radio-2" not in text.stdout


def test_history_times_read_as_a_person_writes_them():
    now = datetime(2026, 11, 22, 21, 30).timestamp()  # local time, as the command reads it
    assert parse_time("2h", "--since", now) == now - 7200
    assert parse_time("90s", "--since", now) == now - 90
    assert parse_time("18:00", "--since", now) == datetime(2026, 11, 22, 18, 0).timestamp()
    assert parse_time("2026-11-22T18:00+00:00", "--since", now) == datetime(
        2026, 11, 22, 18, 0, tzinfo=UTC).timestamp()
    assert parse_time("1764000000.5", "--since", now) == 1764000000.5
    with pytest.raises(ValueError, match="time of day"):
        parse_time("teatime", "--since", now)


def test_history_refuses_bad_input_naming_the_fix(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    result = history(capsys, "--db", f"sqlite:///{missing}")
    # nothing to report from: a failure (1), as a file tag cannot open is
    assert result.returncode == 1 and str(missing) in result.stderr
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = history(capsys, "--db", f"sqlite:///{empty}")
    assert result.returncode == 2 and "holds no streamtag history" in result.stderr
    result = history(capsys, "--db", f"sqlite:///{empty}", "--since", "yesterday-ish")
    assert result.returncode == 2 and "ISO 8601" in result.stderr
    result = history(capsys, "--db", "mysql://x/y")
    assert result.returncode == 2 and "PostgreSQL" in result.stderr
    result = history(capsys, "--db", f"sqlite:///{empty}", "--plot",
                     str(tmp_path / "no-folder" / "p.png"))
    assert result.returncode == 2 and "its folder does not exist" in result.stderr


@pytest.mark.slow
def test_the_recorder_stores_what_a_real_daemon_publishes(tmp_path):
    """The daemon (in this process, two file sources added over its control socket once both
    listeners hear it) and a `streamtag record` process: the database holds exactly the stream
    messages a subscriber received, a track per file among them."""
    from support.helpers import make_config, tiny_model_file, wait_for_heartbeat

    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like
    from streamtag.daemon.daemon import Daemon
    from streamtag.wire.control import control_request
    from streamtag.wire.subscriber import Subscriber

    files = {}
    for name, seconds, seed in (("a", 6.0, 1), ("b", 5.0, 2)):
        files[name] = tmp_path / f"{name}.flac"
        write_audio(files[name], music_like(seconds, 44100, seed=seed), 44100)
    config = make_config(tiny_model_file(tmp_path / "tiny.pt"), tmp_path)
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    daemon = Daemon(config).start()
    recorder = run_streamtag("record", "--connect", daemon.publisher.endpoint, "--control",
                             daemon.control.endpoint, "--db", url, popen=True)
    try:
        with Subscriber(daemon.publisher.endpoint) as sub:
            wait_for_heartbeat(sub)
            wait_until(lambda: table_rows(engine, schema.daemons), 20,
                       "the recorder to store a heartbeat", interval=0.1)
            for name, path in files.items():
                reply = control_request(daemon.control.endpoint,
                                        {"cmd": "add_source", "id": name, "spec": str(path)})
                assert reply["ok"], reply
            heard, ended = [], set()
            deadline = time.monotonic() + 60
            while ended != set(files) and time.monotonic() < deadline:
                message = sub.recv(200)
                if message is None or message.msg_type == "heartbeat":
                    continue
                heard.append(message)
                if message.msg_type == "status" and message.body.state == "ended":
                    ended.add(message.stream)
            settle = time.monotonic() + 1.0  # the tracks follow the last window
            while time.monotonic() < settle:
                message = sub.recv(100)
                if message is not None and message.msg_type != "heartbeat":
                    heard.append(message)
        assert ended == set(files)
        wait_stored(engine, len(heard))
        assert stored_keys(engine) == keys(heard)
        tracks = table_rows(engine, schema.tracks)
        assert sorted(t.stream for t in tracks) == ["a", "b"]
        for track in tracks:
            windows = sum(m.msg_type == "scores" and m.stream == track.stream for m in heard)
            assert track.windows == windows and track.reason == "end"
        assert table_rows(engine, schema.gaps) == []
        # protocol 1.2: each window's audio level and the stream's mood, as published
        published = {(m.stream, m.header.seq): m.body for m in heard if m.msg_type == "scores"}
        rows = stored_windows(engine)
        assert len(rows) == len(published)
        for row in rows:
            body = published[(row.stream, row.seq)]
            # the daemon's precision (0.01 dB, 0.001 Hz) is kept exactly; energy to 1e-6
            assert (row.rms_dbfs, row.peak_dbfs, row.clipped, row.onset_rate_hz) \
                == (body.audio.rms_dbfs, body.audio.peak_dbfs, body.audio.clipped,
                    body.audio.onset_rate_hz)
            assert row.energy == pytest.approx(body.audio.energy, abs=5e-7)
            assert json.loads(row.mood) == list(body.mood.words)
            assert (row.valence, row.arousal) == (body.mood.valence, body.mood.arousal)
        assert all(-60 < row.rms_dbfs < 0 and row.mood != "[]" for row in rows)  # music
    finally:
        stop_process(recorder)
        recorder.communicate()
        daemon.stop()
        engine.dispose()


def test_record_refuses_bad_input_naming_the_fix(tmp_path, capsys):
    def record(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["record", *args])
        return code, capsys.readouterr().err

    url = f"sqlite:///{tmp_path / 'tags.db'}"
    code, err = record("--db", "mysql://somewhere/tags", "--connect", "tcp://127.0.0.1:1")
    assert code == 2 and "PostgreSQL" in err
    code, err = record("--db", url)
    assert code == 2 and "--connect" in err
    code, err = record("--db", url, "--upgrade")
    assert code == 0 and schema.head_revision() in err
    # A database written by a newer streamtag is refused by the recorder and by the reader.
    engine = schema.create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    code, err = record("--db", url, "--connect", "tcp://127.0.0.1:1")
    assert code == 2 and "upgrade streamtag" in err
    result = history(capsys, "--db", url)
    assert result.returncode == 2 and "upgrade streamtag" in result.stderr


# ---------------------------------------------------------------- what cannot be stored

def _received(body, number: int, **fields) -> ReceivedMessage:
    """A message as the subscriber hands it on, with `fields` (of its body, or the header's
    seq) set past what the protocol lets anyone build: what a driver's limit, or a bug, could
    meet in writing it."""
    message = make_message(body, session="s" * 32, stream="radio-1", seq=number,
                           sent_at=time.time())
    for name, value in fields.items():
        values.set_field(message.header if name == "seq" else message.body, name, value)
    return ReceivedMessage(message.header, message.body)


def _scores(number: int, **fields) -> ReceivedMessage:
    body = ScoresBody(start_s=0.0, end_s=3.0, start_sample=0, end_sample=48000, tags=TAGS,
                      raw=[0.5] * len(TAGS), smoothed=[0.5] * len(TAGS), active=[], model=MODEL,
                      latency_ms=1.0)
    return _received(body, number, **fields)


def _event(number: int, **fields) -> ReceivedMessage:
    body = EventBody(tag=TAGS[0], state="on", score=0.7, time_s=1.0, sample=16000)
    return _received(body, number, **fields)


def test_the_writer_stores_what_follows_a_message_it_cannot_store(tmp_path, caplog):
    # Once, one such message (a seq past 64 bits: the driver's OverflowError) stopped the
    # writer thread, and nothing after it was stored.
    from streamtag.history.metrics import RecorderMetrics

    engine = schema.create_db_engine(f"sqlite:///{tmp_path / 'tags.db'}")
    schema.upgrade(engine)
    recorder = Recorder(engine, f"tcp://127.0.0.1:{free_port()}").start()
    metrics = RecorderMetrics(recorder, 0)
    too_big = 2**64  # past SQLite's and PostgreSQL's 64-bit integers
    try:
        with caplog.at_level(logging.WARNING, logger="streamtag.history.recorder"):
            for item in (_scores(0), _scores(1, start_sample=too_big, end_sample=too_big),
                         _scores(2), _scores(3, start_sample=too_big, end_sample=too_big),
                         _event(0, tag=7), _event(1), _scores(4), _scores(5, seq=too_big),
                         _scores(6)):
                recorder.queue.put(item)
            expected = {("scores", "radio-1", "s" * 32, seq) for seq in (0, 2, 4, 6)}
            expected.add(("event", "radio-1", "s" * 32, 1))
            wait_until(lambda: set(stored_keys(engine)) == expected and
                       recorder.stats.failed == 4, 20, "the storable messages to be stored")
        # Each message that could not be stored is a gap of one, where its seq fits.
        gaps = {(g.msg_type, g.first_seq, g.missed, g.cause)
                for g in table_rows(engine, schema.gaps)}
        assert gaps == {("scores", 1, 1, "failed"), ("scores", 3, 1, "failed"),
                        ("event", 0, 1, "failed")}
        assert recorder.stats.written == 5
        assert _scrape(metrics.port)["streamtag_record_failed_messages_total"] == 4
        # Logged once per kind of failure (the driver's OverflowError, the TypeError), not
        # once per message.
        logged = [r.getMessage() for r in caplog.records if "could not store" in r.getMessage()]
        assert len(logged) == 2, logged
        assert any("OverflowError" in line for line in logged)
    finally:
        metrics.close()
        recorder.stop(5)
        engine.dispose()


# ---------------------------------------------------------------- titles meant to do harm

EVIL_TITLE = ('=HYPERLINK("http://evil.example/","click")\x1b]0;owned\x07\x1b[2J\r\n'
              'MISSING 99 scores messages\x9b31m\x7f')
EVIL_TAGS = ("=1+1", "-2+3", "@SUM(A1)", "+x", "\tt", "\rr", "rock")


@pytest.fixture(scope="module")
def evil_history(tmp_path_factory):
    """A station whose title and tag names are formulas and terminal escape sequences,
    recorded into SQLite; a negative score among its events."""
    url = f"sqlite:///{tmp_path_factory.mktemp('evil') / 'tags.db'}"
    n = len(EVIL_TAGS)

    def script(station):
        station.send("radio-1", StatusBody(state="running", title=EVIL_TITLE))
        station.send("radio-1", ScoresBody(
            start_s=0.0, end_s=3.0, start_sample=0, end_sample=48000, tags=EVIL_TAGS,
            raw=[0.5] * n, smoothed=[0.5] * n, active=["=1+1", "rock"], model=MODEL,
            latency_ms=1.0))
        station.send("radio-1", EventBody(tag="=1+1", state="on", score=-0.5, time_s=3.0,
                                          sample=48000))
        station.send("radio-1", TrackBody(
            title=EVIL_TITLE, reason="end", start_s=0.0, end_s=3.0, start_sample=0,
            end_sample=48000, started_at=time.time() - 3, ended_at=time.time(), windows=1,
            tags=EVIL_TAGS, mean_raw=[0.5] * n, mean_smoothed=[0.5] * n,
            active_share=[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], active=["=1+1", "rock"],
            model=MODEL))

    record(url, script)
    return url


def test_history_csv_writes_station_text_as_text_and_numbers_as_numbers(evil_history, capsys):
    result = history(capsys, "--db", evil_history, "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["kind"] for r in rows} == {"airtime", "track", "event", "plays", "tag_plays"}
    for row in rows:
        for column in ("stream", "title", "detail"):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), row
    # Line breaks in a cell are written as newlines, which CSV quotes: a carriage return
    # unquoted would start a row of the attacker's choosing in a spreadsheet.
    assert {r["title"] for r in rows if r["kind"] == "track"} == {
        "'" + EVIL_TITLE.replace("\r\n", "\n")}
    # a tag's column is named "tag:NAME", on one line: no header cell is a formula
    header = next(csv.reader(io.StringIO(result.stdout)))
    assert [h for h in header if h.startswith("tag:")] == [
        "tag:" + tag.replace("\r", " ") for tag in EVIL_TAGS]
    assert {r["detail"] for r in rows if r["kind"] == "tag_plays"} == {"'=1+1", "rock"}
    (event,) = [r for r in rows if r["kind"] == "event"]
    assert (event["detail"], float(event["value"])) == ("'=1+1 on", -0.5)  # a number stays one
    assert event["value"] == "-0.500000"


def test_history_text_and_json_carry_no_terminal_controls(evil_history, capsys):
    controls = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    text = history(capsys, "--db", evil_history, "--events")
    assert text.returncode == 0, text.stderr
    assert not controls.search(text.stdout), repr(text.stdout)
    # the title stays on its line: it cannot forge a line of the report
    assert not any(line.startswith("MISSING 99") for line in text.stdout.splitlines())
    assert any("HYPERLINK" in line and "MISSING 99 scores messages" in line
               for line in text.stdout.splitlines())

    shown = history(capsys, "--db", evil_history, "--json")
    assert shown.returncode == 0, shown.stderr
    assert not controls.search(shown.stdout.replace("\n", "")), repr(shown.stdout)
    assert json.loads(shown.stdout)["tracks"][0]["title"] == EVIL_TITLE  # data, unchanged
