"""Operating the daemon and the recorder: what a user sees when something is wrong.

- ``streamtag record`` stops at once (exit 2, the fix named) on what retrying cannot mend: a
  refused PostgreSQL login, a database that does not exist, an SQLite file that cannot be
  opened; a server that is down is waited for, and recorded into once it is up.
- The daemon logs a station's failure once per change at default verbosity (a 404 retried
  many times is one line) and says when its audio is back.
- ``listen --control`` waits for a daemon that is not up yet.
- Flags: a stream id and a port that are not valid are named with the allowed form.

Real parts: a PostgreSQL server started by the test, real SQLite files, a real daemon and
a station of the test's own over HTTP.
"""

from __future__ import annotations

import io
import logging
import threading

import pytest
import sqlalchemy as sa
from support.helpers import OggStation, free_port, make_config, started, wait_until
from support.history_station import (
    Station,
    await_subscribed,
    keys,
    stored_count,
    stored_keys,
    wait_stored,
)

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.cli import build_parser, main
from streamtag.commands.listen import run_listen
from streamtag.commands.record import record
from streamtag.daemon.config import SourceConfig
from streamtag.daemon.daemon import Daemon
from streamtag.history import schema
from tests.scenarios.test_ogg_titles import LINK_S, encode_links

# -- the recorder: permanent errors stop it, transient ones are waited out ---------------------


# Windows written half a second after they arrive, not when their stream has been quiet for
# 2 s: what these tests wait for is stored sooner, and no less of it.
BLOCK_S = ("--block-s", "0.5")


def record_in_thread(argv: list[str]) -> tuple[threading.Thread, threading.Event, list[int]]:
    """``streamtag record ARGV`` in a thread (its exit status lands in the list); the event
    stops it as a signal would."""
    args = build_parser().parse_args(["record", *argv])
    stop, status = threading.Event(), []
    thread = threading.Thread(target=lambda: status.append(record(args, stop)), daemon=True)
    thread.start()
    return thread, stop, status


def test_record_stops_at_once_on_an_sqlite_file_it_cannot_open(tmp_path, capsys):
    db = tmp_path / "no-such-folder" / "tags.db"
    thread, stop, status = record_in_thread(["--connect", f"tcp://127.0.0.1:{free_port()}",
                                             "--db", f"sqlite:///{db}"])
    thread.join(60)
    stop.set()  # were it retrying, this would end it; the status says it did not
    thread.join(10)
    assert status == [2]
    err = capsys.readouterr().err
    assert f"cannot use the SQLite file '{db}'" in err
    assert "check that its folder exists" in err
    # --upgrade says the same
    assert main(["record", "--upgrade", "--db", f"sqlite:///{db}"]) == 2
    assert "check that its folder exists" in capsys.readouterr().err


def test_a_file_that_is_not_a_database_is_named_not_a_traceback(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    said = f"'{notes}' is not an SQLite database"
    thread, stop, status = record_in_thread(["--connect", f"tcp://127.0.0.1:{free_port()}",
                                             "--db", f"sqlite:///{notes}"])
    thread.join(60)
    stop.set()
    thread.join(10)
    assert status == [2]
    assert said in capsys.readouterr().err
    for argv in (["record", "--upgrade"], ["history"]):
        assert main([*argv, "--db", f"sqlite:///{notes}"]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    assert notes.read_text() == "not a database\n"  # left as it was


@pytest.fixture(scope="module")
def postgres_pw():
    from support.postgres import PostgresServer

    server = PostgresServer()
    hba = server.data / "pg_hba.conf"
    # A user that logs in with a password; everyone else is trusted (the test's own user).
    hba.write_text("host all pwuser 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    server.start()
    try:
        engine = sa.create_engine(server.url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE ROLE pwuser LOGIN PASSWORD 'right-password'"))
        engine.dispose()
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("change, says", [
    (("streamtag@", "pwuser:wrong-password@"), "refused the login (password authentication "
                                               "failed for user \"pwuser\"); check the user"),
    (("/postgres", "/no_such_db"), 'database "no_such_db" does not exist; create it'),
    (("streamtag@", "nobody@"), 'role "nobody" does not exist; create the user'),
])
def test_record_stops_at_once_on_a_login_or_database_postgresql_refuses(postgres_pw, change, says,
                                                                        capsys):
    url = postgres_pw.url.replace(*change)
    thread, stop, status = record_in_thread(["--connect", f"tcp://127.0.0.1:{free_port()}",
                                             "--db", url])
    thread.join(60)
    stop.set()
    thread.join(10)
    assert status == [2]
    err = capsys.readouterr().err
    assert says in err
    assert "wrong-password" not in err  # the password is not shown


def test_record_waits_for_a_postgresql_server_that_is_down_then_records(postgres_pw, caplog):
    # Started with its database down, the recorder subscribes at once: what the daemon
    # publishes meanwhile waits for it and is stored once the server is up (it was lost, and
    # the recorder logged each retry).
    postgres_pw.stop()
    station = Station()
    try:
        with caplog.at_level(logging.DEBUG, logger="streamtag.history.recorder"):
            thread, stop, status = record_in_thread(["--connect", station.endpoint,
                                                     "--db", postgres_pw.url,
                                                     "--max-backoff-s", "0.5", *BLOCK_S])
            wait_until(lambda: sum("retrying in" in r.getMessage() for r in caplog.records)
                       >= 3, 30, "the recorder to retry")
            said = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert thread.is_alive() and not status
        assert len(said) == 1 and "waiting for it" in said[0].getMessage(), said
        sent = station.play("radio-1", range(40))  # while the database is down
    finally:
        postgres_pw.start()
    engine = sa.create_engine(postgres_pw.url)
    try:
        def upgraded() -> bool:
            with engine.connect() as conn:
                return schema.current_revision(conn) == schema.head_revision()

        wait_until(upgraded, 30, "the recorder to create its schema once the server is up")
        wait_stored(engine, len(sent))
        assert stored_keys(engine) == keys(sent)  # every one, none twice
    finally:
        engine.dispose()
        stop.set()
        thread.join(30)
        station.close()
    assert status == [0]


def test_a_login_refused_in_mid_run_is_an_error_with_the_fix_and_loses_no_message(postgres_pw,
                                                                                 caplog):
    # The recorder logs in as pwuser to a database of its own; then its password is changed
    # and its connections cut, as an administrator rotating it would.
    admin = sa.create_engine(postgres_pw.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE pwdb OWNER pwuser"))
    db = postgres_pw.url.replace("streamtag@", "pwuser:right-password@").replace("/postgres",
                                                                              "/pwdb")
    stored = sa.create_engine(postgres_pw.url.replace("/postgres", "/pwdb"))
    station = Station()
    thread, stop, status = record_in_thread(["--connect", station.endpoint, "--db", db,
                                             "--max-backoff-s", "0.5", *BLOCK_S])
    try:
        wait_until(lambda: schema_ready(stored), 30, "the recorder's schema")
        await_subscribed(station, stored)
        before = stored_count(stored)
        station.play("radio", range(0, 5))
        wait_stored(stored, before + len(station.sent))
        with admin.connect() as conn:
            conn.execute(sa.text("ALTER ROLE pwuser PASSWORD 'rotated'"))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE usename = 'pwuser'"))
        with caplog.at_level(logging.WARNING, logger="streamtag.history.recorder"):
            station.play("radio", range(5, 10))
            wait_until(lambda: any(r.levelno == logging.ERROR and "refused the login" in
                                   r.getMessage() for r in caplog.records), 30,
                       "the recorder to say the login is refused")
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(said) == 1  # once, not at every retry
        assert "check the user name and password" in said[0]
        assert "until it is mended" in said[0] and "right-password" not in said[0]
        assert thread.is_alive() and not status  # still waiting, with the messages queued
        with admin.connect() as conn:
            conn.execute(sa.text("ALTER ROLE pwuser PASSWORD 'right-password'"))
        sent = keys(station.sent)
        wait_until(lambda: not sent - stored_keys(stored), 30,
                   "every message sent to be stored once the login is mended")
    finally:
        stop.set()
        thread.join(30)
        station.close()
        stored.dispose()
        admin.dispose()
    assert status == [0]


def schema_ready(engine) -> bool:
    try:
        with engine.connect() as conn:
            return schema.current_revision(conn) == schema.head_revision()
    except sa.exc.OperationalError:
        return False


# -- the daemon's log: a station's failure once per change -------------------------------------


def test_a_station_s_failure_is_logged_once_per_change(model_path, tmp_path, caplog):
    link = encode_links(tmp_path, "vorbis", count=1)[0]
    station = OggStation(link.read_bytes(), LINK_S, serving=False)  # 404 until served
    daemon, sub = started(make_config(model_path, tmp_path))
    try:
        with caplog.at_level(logging.WARNING, logger="streamtag.daemon.daemon"):
            daemon.add_source(SourceConfig("flaky", station.url, {
                "initial_backoff_s": 0.05, "max_backoff_s": 0.1}))
            daemon.add_source(SourceConfig("nowhere", "http://no-such-host.invalid/live", {
                "initial_backoff_s": 0.05, "max_backoff_s": 0.1}))
            wait_until(lambda: station.requests >= 6, 20, "several attempts that get 404")
            wait_until(lambda: daemon.status()["streams"]["nowhere"]["counters"]["reconnects"]
                       >= 4, 20, "several attempts at a name that does not resolve")
            station.serve.set()
            wait_until(lambda: daemon.status()["streams"]["flaky"]["state"] == "running", 20,
                       "the audio to come")
            wait_until(lambda: any("audio again" in r.getMessage() for r in caplog.records), 10,
                       "the log line that the audio is back")
    finally:
        daemon.stop()
        sub.close()
        station.close()
    lines = [r.getMessage() for r in caplog.records if "flaky" in r.getMessage()]
    failures = [line for line in lines if "the station answered HTTP 404" in line]
    assert len(failures) == 1, lines
    assert failures[0].startswith(f"source flaky ({station.url}): the station answered HTTP 404;")
    assert "retrying with back-off" in failures[0]
    back = [line for line in lines if "audio again" in line]
    assert len(back) == 1 and "after" in back[0] and "reconnects" in back[0]
    nowhere = [r.getMessage() for r in caplog.records if "source nowhere" in r.getMessage()]
    assert len(nowhere) == 1, nowhere
    assert "the host name does not resolve" in nowhere[0]


# -- listen waits for the daemon --------------------------------------------------------------


def test_listen_control_waits_for_a_daemon_that_starts_later(model_path, tmp_path, capsys):
    link = encode_links(tmp_path, "opus", count=1)[0]
    config = make_config(model_path, tmp_path, sources=(
        SourceConfig("song", f"file:{link}", {"realtime": True}),))
    out = io.StringIO()
    listener = threading.Thread(target=run_listen, kwargs={
        "endpoint": config.publish.endpoint, "tracks": True, "out": out, "count": 1,
        "duration": 60.0, "control": config.control.endpoint, "wait_s": 60.0})
    listener.start()
    said: list[str] = []

    def waiting() -> bool:  # said once its first request (2 s) went unanswered
        said.append(capsys.readouterr().err)
        return "no answer from the daemon's control socket" in "".join(said)

    try:
        wait_until(waiting, 30, "listen to say it waits for the daemon", interval=0.05)
    finally:
        daemon = Daemon(config).start()  # it answers the request asked again since
        try:
            listener.join(60)
        finally:
            daemon.stop()
    assert not listener.is_alive()
    err = "".join(said) + capsys.readouterr().err
    assert f"no answer from the daemon's control socket at {config.control.endpoint} yet; " \
           "waiting up to 60 s (--wait)" in err
    assert "no current titles" not in err
    # The first line is the daemon's answer: what plays now, or that the stream is starting
    # (its source not open yet: on a loaded machine the answer can come that early); the title
    # follows in either case.
    first = out.getvalue().splitlines()[0]
    assert first in ("now           song         starting",) or first.startswith(
        "now           song         now playing \"Alpha Band - "), out.getvalue()
    assert 'now playing "Alpha Band - ' in out.getvalue()


def test_listen_says_a_stream_is_starting_rather_than_untitled():
    from streamtag.commands.listen import NowPlaying

    lines = NowPlaying().apply_status_reply({"streams": {
        "early": {"state": "starting", "title": None},
        "live": {"state": "running", "title": None},
        "song": {"state": "running", "title": "Artist - Song"}}})
    assert lines == ["now           early        starting",
                     "now           live         now playing (untitled)",
                     'now           song         now playing "Artist - Song"']



def test_listen_shows_a_newer_daemon_s_last_tracks_leaving_out_fields_it_does_not_know():
    # A minor version only adds fields; the tracks of a status reply were once built with
    # TrackBody(**fields), which refused an added field and left every such track out.
    from streamtag.commands.listen import NowPlaying

    track = {"title": "Artist - Song", "reason": "title_change", "start_s": 0.0, "end_s": 60.0,
             "start_sample": 0, "end_sample": 960000, "started_at": 1.0, "ended_at": 61.0,
             "windows": 2, "tags": ["rock"], "mean_raw": [0.8], "mean_smoothed": [0.8],
             "active_share": [1.0], "active": ["rock"],
             "model": {"name": "m", "hash": "0" * 64}, "heard_from_start": True,
             "added_in_a_later_minor": {"any": "thing"}}
    lines = NowPlaying().apply_status_reply({"streams": {"r": {
        "state": "running", "title": "Next", "tracks": [track, {"title": "broken"}]}}})
    assert lines[0].startswith('earlier       r            played "Artist - Song"  0:00.0-1:00.0')
    assert len(lines) == 2 and lines[1].endswith('now playing "Next"')

def test_a_track_s_times_read_as_a_clock_a_minute_never_60_seconds():
    from streamtag.commands.listen import _span

    assert _span(0.0, 59.9987) == "0:00.0-1:00.0"
    assert _span(59.94, 119.96) == "0:59.9-2:00.0"
    assert _span(61.04, 3599.99) == "1:01.0-60:00.0"


def test_exit_when_done_fails_when_a_stream_failed(tmp_path, capsys):
    notes = tmp_path / "notes.mp3"
    notes.write_text("not audio\n")
    argv = ["run", "--source", str(notes), "--exit-when-done", "--control", "",
            "--publish", f"tcp://127.0.0.1:{free_port()}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 of 1 streams failed: s0 (cannot open" in err and "not recognise it as audio" in err
    # the same under worker processes, beside a stream that played
    music = tmp_path / "music.wav"
    write_audio(music, music_like(4.0, 16000, seed=3), 16000)
    assert main([*argv, "--source", str(music), "--processes", "2"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 streams failed: s0 (cannot open" in err


def test_a_pipe_source_runs_in_one_process(capsys):
    # Under --processes the workers do not have this command's standard input: the stream
    # ended at once with no audio, and the run exited 0.
    from streamtag.commands.run import worker_processes
    from streamtag.daemon.config import PROCESSES_AUTO, DaemonConfig, SourceConfig

    argv = ["run", "--source", "a=pipe:", "--control", "",
            "--publish", f"tcp://127.0.0.1:{free_port()}"]
    assert main([*argv, "--processes", "2"]) == 2
    assert ("source 'a' reads pipe: (this command's standard input), which none of 2 worker "
            "processes has") in capsys.readouterr().err
    config = DaemonConfig(sources=(SourceConfig("a", "pipe:"), SourceConfig("b", "x.mp3")),
                          processes=PROCESSES_AUTO)
    assert worker_processes(config) == 1
    assert "1 worker process: source 'a' reads pipe:" in capsys.readouterr().err


def test_keys_generate_names_a_bad_folder_or_name(tmp_path, capsys):
    taken = tmp_path / "file"
    taken.write_text("x")
    for argv, said in (([str(taken)], "is a file, not a folder"),
                       ([str(tmp_path / "k"), "--name", "../evil"], "key name '../evil'"),
                       ([str(tmp_path / "k"), "--name", ""], "key name ''")):
        assert main(["keys", "generate", *argv]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err
    assert not (tmp_path / "evil.key").exists() and not (tmp_path / "k").exists()
    assert main(["keys", "generate", str(tmp_path / "k"), "--name", "screen-1"]) == 0
    assert (tmp_path / "k" / "screen-1.key_secret").stat().st_mode & 0o777 == 0o600


def test_a_config_or_recipe_not_in_utf8_is_named(tmp_path, capsys):
    latin = tmp_path / "daemon.toml"
    latin.write_bytes(b'[model]\npath = "caf\xe9"\n')
    assert main(["run", "--config", str(latin)]) == 2
    assert f"config file {latin} is not UTF-8 text (byte 0xe9 at offset 19)" in \
        capsys.readouterr().err
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(b"\xff\xfe[train]\n")
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert f"recipe {recipe} is not UTF-8 text (byte 0xff at offset 0)" in \
        capsys.readouterr().err
    from streamtag.daemon.config import load_config

    bom = tmp_path / "bom.toml"  # a byte order mark is read past
    bom.write_bytes(b'\xef\xbb\xbf[publish]\nendpoint = "tcp://127.0.0.1:5999"\n')
    assert load_config(bom).publish.endpoint == "tcp://127.0.0.1:5999"


# -- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, says", [
    (["run", "--source", "my radio=http://example.com/live"],
     "argument --source: the stream id 'my radio' in 'my radio=http://example.com/live' is not "
     "valid: an id is 1 to 128 of the characters A-Z a-z 0-9 _ . : - (no spaces)"),
    (["run", "--metrics-port", "99999"],  # the setting's own rule, naming its key
     "argument --metrics-port: metrics.port must be 0 (off) or a TCP port 1-65535, got 99999"),
    (["dashboard", "--port", "-1"], "argument --port: '-1' is not a TCP port"),
    (["record", "--metrics-port", "http"], "argument --metrics-port: 'http' is not a TCP port"),
    (["listen", "tcp://127.0.0.1:70000"],
     "'tcp://127.0.0.1:70000': the port '70000' is not a TCP port; write tcp://HOST:PORT"),
    (["listen", "127.0.0.1:5555"], "'127.0.0.1:5555' is not a ZeroMQ endpoint; write "
                                   "tcp://HOST:PORT"),
    (["proxy", "--frontend", "127.0.0.1:6031"], "argument --frontend: the endpoint "
                                                "'127.0.0.1:6031' is not a ZeroMQ endpoint"),
    (["proxy", "--backend", "tcp://127.0.0.1"], "argument --backend: the endpoint "
                                                "'tcp://127.0.0.1' is not a ZeroMQ endpoint"),
    # counts and spans of time (a negative --max-backoff-s was a traceback, a negative
    # --duration or a --count of 0 printed nothing and exited 0)
    (["record", "--max-backoff-s", "-5"],
     "argument --max-backoff-s: '-5' is not a span of time: give a number of seconds above 0"),
    (["record", "--queue-size", "0"], "argument --queue-size: '0' is not a count: give a whole "
                                      "number, 1 or more"),
    (["record", "--drain-timeout-s", "-1"], "argument --drain-timeout-s: '-1' is not a span of "
                                            "time: give a number of seconds, 0 or more"),
    (["listen", "--duration", "-1"], "argument --duration: '-1' is not a span of time"),
    (["listen", "--count", "0"], "argument --count: '0' is not a count"),
    (["status", "--wait", "soon"], "argument --wait: 'soon' is not a span of time"),
])
def test_a_bad_stream_id_or_port_is_named_with_the_allowed_form(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_good_ids_urls_with_equals_and_paths_pass_the_source_check(tmp_path):
    parser = build_parser()
    weird = tmp_path / "a b=c.wav"
    weird.write_bytes(b"")
    for spec in ("radio-1=http://example.com/live", "http://example.com/live?a=b c",
                 str(weird), "s:1=file:/x.wav", "pipe:"):
        assert parser.parse_args(["run", "--source", spec]).source == [spec]
