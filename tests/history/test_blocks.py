"""Windows packed per stream and minute (history.blocks), with real parts: streamtag's
Publisher on 127.0.0.1, the recorder, SQLite files and a real PostgreSQL cluster. Reports read
from blocks equal those the old one-row-per-window table gave, within the precision blocks
keep; every earlier schema revision upgrades, killed midway and started again; rollups equal
what the windows give; retention running while the recorder writes deletes only what is old;
windows a killed recorder held in memory are a gap once it is back."""

from __future__ import annotations

import collections
import json
import math
import signal
import time

import numpy as np
import pytest
import sqlalchemy as sa
from support.helpers import free_port, run_streamtag, stop_process, wait_until
from support.history_programme import play_session
from support.history_station import (
    MODEL,
    TAGS,
    Station,
    await_subscribed,
    keys,
    scrape_received,
    stored_keys,
    stored_windows,
    table_rows,
    wait_stored,
)

from streamtag.history import blocks, report, schema, tiers
from streamtag.history.recorder import Recorder
from streamtag.history.report import format_json, load_history, tag_share_bins
from streamtag.history.retention import Retention, expire, parse_keep
from streamtag.wire.protocol import AudioLevel, ScoresBody

REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"]
SCORE_STEP = 0.5 / 255 + 1e-9  # a score's precision in a block


def _new_url(request, tmp_path, name: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / name}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request, tmp_path):
    return lambda name: _new_url(request, tmp_path, name)


def _at_revision(url: str, revision: str) -> sa.Engine:
    from alembic import command

    engine = schema.create_db_engine(url)
    with engine.begin() as conn:
        command.upgrade(schema._alembic_config(conn), revision)
    return engine


# ---------------------------------------------------------------- material

def _loud_and_spoken(station: Station, stream: str, t0: float, windows: int) -> None:
    """Windows with levels, loudness and content (speech for a stretch), as protocol 1.7's."""
    rng = np.random.default_rng(7)
    for i in range(windows):
        raw = np.round(rng.random(len(TAGS)), 6)
        speech = 100 <= i < 160
        station.send(stream, ScoresBody(
            start_s=float(i), end_s=i + 3.0, start_sample=i * 16000, end_sample=(i + 3) * 16000,
            tags=TAGS, raw=raw.tolist(), smoothed=np.round(raw * 0.8, 6).tolist(),
            active=[] if speech else [TAGS[i // 50 % len(TAGS)]], model=MODEL, latency_ms=3.25,
            audio=AudioLevel(rms_dbfs=round(-20 - i % 7 * 0.37, 2), peak_dbfs=-3.5, clipped=i % 3,
                             onset_rate_hz=1.125, energy=0.5 + i / 10_000,
                             momentary_lufs=round(-18 - i % 5 * 0.11, 2),
                             short_term_lufs=None if i < 3 else round(-19 - i % 4 * 0.13, 2)),
            content="speech" if speech else "music"), t0 + i)


def _programme(station: Station, t0: float) -> None:
    play_session(station, "radio-1", t0, [("One", 200), ("Two", 250), ("Three", 150)],
                 outage=(300, 32.0), silence=(420, 20))
    play_session(station, "radio-2", t0 + 30, [("Intro", 90), ("Outro", 90)], open_last=False)
    _loud_and_spoken(station, "radio-3", t0 + 5, 300)


def _record(url: str, script) -> Station:
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    station = Station()
    # blocks written half a second after their first window, not once the streams are quiet
    recorder = Recorder(engine, station.endpoint, max_block_age_s=0.5).start()
    try:
        await_subscribed(station, engine)
        script(station)
        wait_stored(engine, len(station.sent))
    finally:
        assert recorder.stop(10)
        station.close()
        engine.dispose()
    return station


def _legacy_row(message, model_id: int) -> dict:
    """A scores message as the recorder stored it before revision 0009."""
    body, audio = message.body, message.body.audio
    row = {"stream": message.stream, "session": message.session, "seq": message.seq,
           "sent_at": message.header.sent_at, "model_id": model_id, "start_s": body.start_s,
           "end_s": body.end_s, "start_sample": body.start_sample,
           "end_sample": body.end_sample, "raw": schema.pack_scores(body.raw),
           "smoothed": schema.pack_scores(body.smoothed),
           "active": schema.pack_names(body.active), "latency_ms": body.latency_ms}
    for name in ("rms_dbfs", "peak_dbfs", "clipped", "onset_rate_hz", "energy",
                 "momentary_lufs", "short_term_lufs"):
        row[name] = getattr(audio, name) if audio is not None else None
    row.update(mood=None, valence=None, arousal=None, content=body.content)
    return row


def _old_database(url: str, recorded: sa.Engine, sent: list) -> sa.Engine:
    """A database at revision 0008 holding what `recorded` holds, its windows in `scores`
    rows as the recorder wrote them then (from the messages themselves)."""
    engine = _at_revision(url, "0008")
    s = schema
    with recorded.connect() as src, engine.begin() as dst:
        for table in (s.models, s.sessions, s.statuses, s.tracks, s.events, s.gaps,
                      s.silences, s.daemons, s.snapshots):
            # the columns the table had at 0008 (later revisions add some)
            had = {c["name"] for c in sa.inspect(dst).get_columns(table.name)}
            rows = [{k: v for k, v in r._mapping.items() if k in had}
                    for r in src.execute(sa.select(table))]
            if rows:
                dst.execute(table.insert(), rows)
        (model_id,) = {r.id for r in src.execute(sa.select(s.models.c.id))}
        rows = [_legacy_row(m, model_id) for m in sent if m.msg_type == "scores"]
        dst.execute(s.legacy_scores.insert(), rows)
    if engine.dialect.name == "postgresql":  # the copied ids: sequences past them
        with engine.begin() as conn:
            for table in ("models", "sessions", "statuses", "tracks", "events", "gaps",
                          "silences", "snapshots", "scores"):
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', "
                                     f"'id'), coalesce(max(id), 1)) FROM {table}"))
    return engine


def _old_sent_after(conn: sa.Connection, streams, session: str, at: float) -> bool:
    sc = schema.legacy_scores.c
    return any(conn.execute(sa.select(sc.id).where(sc.stream == stream, sc.sent_at > at,
                                                   sc.session == session).limit(1)).first()
               for stream in streams)


def _reports(engine: sa.Engine, since: float, until: float, now: float) -> dict:
    history = load_history(engine, None, since, until, now=now, period="day")
    bins = {stream: [a.tolist() for a in tag_share_bins(engine, stream, list(TAGS), since,
                                                        until, 40)]
            for stream in ("radio-1", "radio-2", "radio-3")}
    return {"json": json.loads(format_json(history)), "bins": bins}


def _assert_close(old, new, path="") -> None:
    """Equal, numbers within the precision the reports need: times to 1 ms (blocks keep
    1 us), shares and scores to 1/255."""
    if isinstance(old, dict):
        assert old.keys() == new.keys(), path
        for key in old:
            _assert_close(old[key], new[key], f"{path}.{key}")
    elif isinstance(old, list):
        assert len(old) == len(new), path
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _assert_close(a, b, f"{path}[{i}]")
    elif isinstance(old, float) and isinstance(new, float):
        assert (math.isnan(old) and math.isnan(new)) or old == pytest.approx(
            new, abs=1e-3, rel=1e-9), path
    else:
        assert old == new, path


def test_reports_from_blocks_equal_those_from_the_old_rows(new_url, monkeypatch):
    """The same material three ways: recorded into blocks; as the old `scores` rows read by
    the same reports from that table; those rows upgraded into blocks. The as-run log, play
    counts, airtime and content shares, off-air, silence, speech and gaps, and the plot's tag
    shares are the same."""
    now = round(time.time())
    t0 = now - 3 * 3600.0
    recorded_url = new_url("recorded.db")
    station = _record(recorded_url, lambda s: _programme(s, t0))
    recorded = schema.create_db_engine(recorded_url)
    old = _old_database(new_url("old.db"), recorded, station.sent)
    since, until = t0 - 60, t0 + 1200
    with monkeypatch.context() as patch:  # the reports as they read `scores` before
        patch.setattr(blocks, "windows", lambda conn, *a, **k: schema.legacy_scores)
        patch.setattr(blocks, "sent_after", _old_sent_after)
        patch.setattr(tiers, "choose", lambda *a, **k: tiers.WINDOWS)
        # and its tracks as they were then: without revision 0011's loudness
        patch.setattr(report, "TRACK_COLUMNS", report.TRACK_COLUMNS[:-1])
        before = _reports(old, since, until, now)
    assert before["json"]["asrun"] and before["json"]["streams"]["radio-3"]["content"]
    _assert_close(before, _reports(recorded, since, until, now))
    schema.upgrade(old)
    _assert_close(before, _reports(old, since, until, now))
    # a narrower range, whose edges fall inside blocks
    _assert_close(_reports(recorded, t0 + 95.5, t0 + 400.25, now),
                  _reports(old, t0 + 95.5, t0 + 400.25, now))
    recorded.dispose()
    old.dispose()


# ---------------------------------------------------------------- upgrades

def _windows_at(revision: str, t0: float) -> list[dict]:
    """Old `scores` rows with the columns `revision` had: two streams, a restart, windows
    across three minutes, a score outside [0, 1] in one of them."""
    rows = []
    for stream, session, n in (("a", "s1", 130), ("a", "s2", 40), ("b", "s1", 75)):
        for i in range(n):
            raw = np.linspace(0, 1, len(TAGS)) * ((i % 10) / 10)
            if stream == "b" and i == 70:
                raw[0] = 1.5
            row = {"stream": stream, "session": session, "seq": i, "sent_at": t0 + i + 0.125,
                   "model_id": 1, "start_s": i * 1.0, "end_s": i + 3.0,
                   "start_sample": i * 16000, "end_sample": (i + 3) * 16000,
                   "raw": schema.pack_scores(raw), "smoothed": schema.pack_scores(raw / 2),
                   "active": schema.pack_names(TAGS[: i % 3]), "latency_ms": 2.5}
            if revision >= "0002":
                row.update(rms_dbfs=-20.25, peak_dbfs=-1.0, clipped=i, onset_rate_hz=0.5,
                           energy=0.25, mood=None if i % 2 else '["calm"]', valence=0.125,
                           arousal=-0.5)
            if revision >= "0005":
                row.update(momentary_lufs=-17.5, short_term_lufs=None if i < 3 else -18.25)
            if revision >= "0008":
                row.update(content="music" if i % 4 else "speech")
            rows.append(row)
    return rows


@pytest.mark.parametrize("revision", REVISIONS)
def test_every_revision_upgrades_its_windows_into_blocks_even_when_killed_midway(
        new_url, revision):
    engine = _at_revision(new_url("tags.db"), revision)
    t0 = 1_700_000_000.0
    rows = _windows_at(revision, t0)
    with engine.begin() as conn:
        conn.execute(schema.models.insert(), {"id": 1, "name": MODEL["name"],
                                              "hash": MODEL["hash"],
                                              "tags": schema.pack_names(TAGS)})
        # "b" has no sessions row (a database written by hand): the upgrade makes one
        conn.execute(schema.sessions.insert(), [
            {"stream": "a", "session": "s1", "first_sent_at": t0, "restarted": False},
            {"stream": "a", "session": "s2", "first_sent_at": t0 + 200,
             "previous_session": "s1", "restarted": True}])
        conn.execute(schema.legacy_scores.insert(), rows)
    inserts = {"n": 0}

    def killed_at_the_second_block_insert(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("INSERT INTO WINDOW_BLOCKS"):
            inserts["n"] += 1
            if inserts["n"] == 2:
                raise RuntimeError("killed")

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", killed_at_the_second_block_insert)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            schema.upgrade(engine)
    finally:
        sa.event.remove(sa.engine.Engine, "after_cursor_execute",
                        killed_at_the_second_block_insert)
    with engine.connect() as conn:
        assert schema.current_revision(conn) == revision
        assert conn.execute(sa.select(sa.func.count()).select_from(
            schema.legacy_scores)).scalar() == len(rows)
    assert schema.upgrade(engine) == schema.head_revision()
    stored = {(w.stream, w.session, w.seq): w for w in stored_windows(engine)}
    assert len(stored) == len(rows)
    for row in rows:
        w = stored[(row["stream"], row["session"], row["seq"])]
        f32 = row["stream"] == "b" and 60 <= row["seq"] < 75  # the block with 1.5: float32
        np.testing.assert_allclose(w.raw, schema.unpack_scores(row["raw"]), rtol=0,
                                   atol=1e-7 if f32 else SCORE_STEP)
        np.testing.assert_allclose(w.smoothed, schema.unpack_scores(row["smoothed"]), rtol=0,
                                   atol=1e-7 if f32 else SCORE_STEP)
        assert w.sent_at == pytest.approx(row["sent_at"], abs=1e-6)
        for name in ("active", "start_sample", "end_sample", "latency_ms", "rms_dbfs",
                     "peak_dbfs", "clipped", "onset_rate_hz", "energy", "mood", "valence",
                     "arousal", "momentary_lufs", "short_term_lufs", "content"):
            assert getattr(w, name) == row.get(name), name
    with engine.connect() as conn:
        sessions = {(r.stream, r.session): r for r in conn.execute(sa.select(schema.sessions))}
        rollups = conn.execute(sa.select(sa.func.sum(schema.window_rollups.c.windows))).scalar()
    assert sessions[("a", "s2")].restarted and sessions[("b", "s1")].restarted is False
    assert rollups == len(rows)
    assert not sa.inspect(engine).has_table("scores")
    engine.dispose()


# ---------------------------------------------------------------- rollups

def test_rollups_equal_what_their_windows_give(tmp_path):
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = float(int(time.time() // 60 * 60) - 3600)
    station = _record(url, lambda s: (_loud_and_spoken(s, "radio-3", t0 + 0.5, 300),
                                      s.play("radio-1", range(0, 200), t0 + 10)))
    sent = collections.defaultdict(list)
    for m in station.sent:
        if m.msg_type == "scores":
            sent[(m.stream, int(m.header.sent_at // 60))].append(m)
    engine = schema.create_db_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(schema.window_rollups, schema.sessions.c.stream)
                            .join(schema.sessions)).all()
    assert sum(r.windows for r in rows) == sum(map(len, sent.values()))
    by_minute = collections.defaultdict(list)
    for r in rows:
        assert r.minute_at == pytest.approx(int(r.first_sent_at // 60) * 60)
        by_minute[(r.stream, int(r.minute_at // 60))].append(r)
    assert by_minute.keys() == sent.keys()
    for key, messages in sent.items():
        parts = by_minute[key]
        windows = sum(r.windows for r in parts)
        assert windows == len(messages)
        means = sum(blocks.unpack_rollup(r)[0] * r.windows for r in parts) / windows
        active = sum(blocks.unpack_rollup(r)[1] for r in parts)
        smoothed = np.mean([m.body.smoothed for m in messages], axis=0)
        np.testing.assert_allclose(means, smoothed, rtol=0, atol=SCORE_STEP)
        assert active.tolist() == [sum(t in m.body.active for m in messages
                                       if m.body.content in (None, "music")) for t in TAGS]
        content = collections.Counter()
        for r in parts:
            content.update(json.loads(r.content) if r.content else {})
        assert content == collections.Counter(m.body.content for m in messages
                                              if m.body.content is not None)
        levels = [m.body.audio.rms_dbfs for m in messages if m.body.audio is not None]
        if levels:
            assert sum(r.rms_dbfs * r.windows for r in parts) / windows == pytest.approx(
                np.mean(levels), abs=0.01)
            assert max(r.peak_dbfs for r in parts) == max(m.body.audio.peak_dbfs
                                                          for m in messages)
            loud = [m.body.audio.short_term_lufs for m in messages
                    if m.body.audio.short_term_lufs is not None]
            power = np.mean(np.power(10.0, np.array(loud) / 10))
            if len(parts) == 1:
                assert parts[0].short_term_lufs == pytest.approx(10 * np.log10(power),
                                                                 abs=0.01)
    engine.dispose()


# ---------------------------------------------------------------- retention

def test_keep_reads_spans_and_refuses_what_it_cannot_read():
    assert parse_keep("") == Retention()
    assert parse_keep("windows=2h, rollups=forever,events=90d") == Retention(
        windows=7200.0, rollups=None, events=90 * 86400.0)
    for bad, words in (("windows", "KIND=SPAN"), ("days=3d", "the kinds are"),
                       ("windows=3 days", "not a span"), ("windows=0d", "not a span"),
                       ("windows=40d,rollups=30d", "at least as long")):
        with pytest.raises(Exception, match=words):
            parse_keep(bad)


def test_record_refuses_a_keep_or_block_s_it_cannot_use_naming_the_fix(tmp_path, capsys):
    from streamtag.cli import main

    url = f"sqlite:///{tmp_path / 'tags.db'}"
    assert main(["record", "--db", url, "--keep", "windows=3 weeks", "--upgrade"]) == 2
    assert "give a number and a unit (s, m, h, d, w or y: 365 days), e.g. 30d" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["record", "--db", url, "--block-s", "90"])
    assert exited.value.code == 2
    assert "a block holds at most a minute" in capsys.readouterr().err
    assert not (tmp_path / "tags.db").exists()


def test_retention_while_the_recorder_writes_deletes_only_what_is_old(tmp_path):
    """Windows are kept an hour and rollups two: a stream three hours old loses both, one
    ninety minutes old its windows only, a recent one nothing; tracks and events stay. Expiry
    runs every 0.1 s in its own thread while the recorder writes."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    now = time.time()
    station = Station()
    # blocks written half a second after their first window, not once the streams are quiet
    recorder = Recorder(engine, station.endpoint, retention=Retention(windows=3600,
                                                                        rollups=7200),
                        retention_every_s=0.1, max_block_age_s=0.5).start()
    try:
        await_subscribed(station, engine)
        for round_ in range(4):  # the streams interleaved, so expiry meets fresh writes
            station.play("old", range(round_ * 150, (round_ + 1) * 150), now - 3 * 3600)
            station.play("middle", range(round_ * 150, (round_ + 1) * 150), now - 5400)
            station.play("recent", range(round_ * 150, (round_ + 1) * 150), now - 900)
        wait_until(lambda: recorder.queue.empty() and recorder.open_blocks == 0, 30,
                   "the recorder to write everything")
        time.sleep(0.5)  # a last round of expiry
    finally:
        assert recorder.stop(10)
        station.close()
    expire(engine, Retention(windows=3600, rollups=7200), time.time())
    sent = keys(station.sent)
    stored = stored_keys(engine)
    windows = {k for k in stored if k[0] == "scores"}
    assert windows == {k for k in sent if k[0] == "scores" and k[1] == "recent"}
    # everything but windows is kept, whatever its age
    assert {k: n for k, n in stored.items() if k[0] != "scores"} == {
        k: n for k, n in sent.items() if k[0] != "scores"}
    with engine.connect() as conn:
        rollups = collections.Counter()
        for r in conn.execute(sa.select(schema.sessions.c.stream, schema.window_rollups.c.windows)
                              .join(schema.sessions)):
            rollups[r.stream] += r.windows
    assert rollups == {"middle": 600, "recent": 600}
    assert table_rows(engine, schema.gaps) == []
    engine.dispose()


# ---------------------------------------------------------------- a killed recorder

def test_windows_a_killed_recorder_held_in_memory_are_a_gap_once_it_is_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    station = Station(endpoint)
    args = ("record", "--connect", endpoint, "--db", url, "--block-s", "60")
    metrics_port = free_port()
    recorder = run_streamtag(*args, "--metrics-port", str(metrics_port), popen=True)

    try:
        await_subscribed(station, engine)
        minute = (int(time.time() // 60) + 2) * 60.0
        # written: a quiet stream's block; then 40 windows of one minute, held in memory
        first = station.play("radio-1", range(0, 20), minute - 100)
        wait_stored(engine, len(first))
        held = station.play("radio-1", range(20, 60), minute + 5 - 20)
        scores = sum(m.msg_type == "scores" for m in first + held)
        # received, not yet written (a stream's block waits 2 s for more)
        wait_until(lambda: scrape_received(metrics_port).get("scores", 0) >= scores, 10,
                   "the held windows to be received")
        recorder.send_signal(signal.SIGKILL)
        recorder.communicate(timeout=10)
        recorder = run_streamtag(*args, popen=True)
        await_subscribed(station, engine)
        after = station.play("radio-1", range(60, 80), minute + 200 - 60)
        wait_stored(engine, len(first) + len(after))
        lost = [m for m in held if m.msg_type == "scores"]
        windows = {k for k in stored_keys(engine) if k[0] == "scores"}
        assert windows == {k for k in keys(first + after) if k[0] == "scores"}
        gaps = [(g.msg_type, g.first_seq, g.missed, g.cause)
                for g in table_rows(engine, schema.gaps) if g.msg_type == "scores"]
        assert gaps == [("scores", lost[0].seq, len(lost), "seq")]
    finally:
        stop_process(recorder)
        recorder.communicate()
        station.close()
        engine.dispose()
