"""A recorder started in the middle of a track: the ``running`` status that titled it was
published before the recorder listened, so the track now playing read "(untitled)" until its
track message, minutes later. The recorder's snapshot at start now carries each stream's
source state, title and source, and ``history`` titles the track from it. Real daemon (a file
played at real speed), real recorder and SQLite file."""

from __future__ import annotations

import json
import time

from support.helpers import make_config, started, wait_until
from support.history_station import history, stored_windows, table_rows

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.daemon.config import SourceConfig
from streamtag.history import schema
from streamtag.history.recorder import Recorder


def test_a_recorder_started_mid_track_titles_the_track_now_playing(model_path, tmp_path,
                                                                   capsys):
    audio = tmp_path / "show.flac"
    write_audio(audio, music_like(120.0, 16000, seed=5), 16000)
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    daemon, sub = started(make_config(model_path, tmp_path))
    recorder = None
    try:
        daemon.add_source(SourceConfig("radio", f"file:{audio}", {"realtime": True},
                                       "Morning Show"))
        wait_until(lambda: daemon.engine.snapshot().get("radio", {}).get("windows", 0) >= 2,
                   60, "the daemon to score the stream's first windows")
        # the recorder starts now: the "running" status with the title is gone by
        recorder = Recorder(engine, daemon.publisher.endpoint,
                            control=[daemon.control.endpoint], max_block_age_s=2).start()
        wait_until(lambda: table_rows(engine, schema.snapshots)
                   and len(stored_windows(engine)) >= 3, 60,
                   "the recorder to store its snapshot and some windows")
        assert table_rows(engine, schema.statuses) == []  # the title came with no status
        (row,) = table_rows(engine, schema.snapshots)
        assert (row.state, row.title, row.source) == ("running", "Morning Show", str(audio))
        result = history(capsys, "--db", url, "--json", "--stream", "radio")
        assert result.returncode == 0, result.stderr
        tracks = json.loads(result.stdout)["asrun"]
        assert [(t["title"], t["now_playing"]) for t in tracks] == [("Morning Show", True)]
        text = history(capsys, "--db", url, "--stream", "radio", "--tz", "UTC").stdout
        assert "Morning Show" in text and "(untitled)" not in text, text
    finally:
        if recorder is not None:
            recorder.stop()
        sub.close()
        daemon.stop()
        engine.dispose()


def test_a_hostile_snapshot_stores_only_what_a_status_message_could_carry(tmp_path):
    # What a daemon's snapshot reply says of its streams is stored as a status message's
    # fields would be: a NUL (PostgreSQL text cannot hold one) becomes U+FFFD, and a stream id
    # or session a message could not carry, or a title past the status cap, leaves that
    # stream's row out (logged); the others are stored.
    from support.helpers import free_port

    from streamtag.wire.control import ControlServer
    from streamtag.wire.protocol import MAX_TEXT_LENGTH

    def view(**more):
        return {"tags": ["a"], "smoothed": [0.5], "active": [], "windows": 3,
                "state": "running", "source": "http://radio.example/live", **more}

    streams = {"good": view(title="A\x00B"), "bad id": view(), "x" * 129: view(),
               "long-session": view(session="s" * 129),
               "long-title": view(title="t" * (MAX_TEXT_LENGTH + 1))}
    control = ControlServer("tcp://127.0.0.1:*", {"snapshot": lambda _: {
        "session": "s" * 32, "model": {}, "streams": streams}}).start()
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    recorder = Recorder(engine, f"tcp://127.0.0.1:{free_port()}",
                        control=[control.endpoint]).start()
    try:
        wait_until(lambda: recorder.stats.snapshots >= 1 and table_rows(engine,
                                                                         schema.snapshots),
                   30, "the snapshot to be stored")
        rows = table_rows(engine, schema.snapshots)
    finally:
        recorder.stop()
        control.stop()
        engine.dispose()
    assert [(r.stream, r.session, r.title, r.source) for r in rows] == [
        ("good", "s" * 32, "A\ufffdB", "http://radio.example/live")]


def test_a_recorder_started_before_the_daemons_first_start_gets_its_snapshot(tmp_path,
                                                                            monkeypatch):
    """The recorder asked for a snapshot before the daemon had ever started: there was no
    token file, ZeroMQ held the request (without a token) until the daemon bound, the daemon
    refused it as not authorised, and the recorder never asked again."""
    from support.helpers import free_port

    from streamtag.wire.control import ControlServer, default_token_file, ensure_token

    monkeypatch.setenv("STREAMTAG_HOME", str(tmp_path / "home"))
    assert not default_token_file().exists()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    recorder = Recorder(engine, f"tcp://127.0.0.1:{free_port()}", control=[endpoint]).start()
    control = None
    try:
        wait_until(lambda: recorder.stats.snapshots == 0, 5, "the recorder to start")
        time.sleep(0.5)  # its first request waits, without a token, for the daemon
        token = ensure_token(default_token_file())  # the daemon's first start
        control = ControlServer(endpoint, {"snapshot": lambda _: {
            "session": "s" * 32, "model": {}, "streams": {}}}, token=token,
            token_file=default_token_file()).start()
        wait_until(lambda: recorder.stats.snapshots >= 1, 30, "the snapshot")
    finally:
        recorder.stop()
        if control is not None:
            control.stop()
        engine.dispose()
