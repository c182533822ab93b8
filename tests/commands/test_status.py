"""``streamtag status``: a running daemon's state asked of its control socket, with its token,
as a user reads it on a terminal or as JSON; a daemon that is not there or that refuses the
token is said, with exit status 1.

A real daemon serves a station of the test's own: an HTTP server that plays a chained Ogg
stream (ffmpeg's links, looped) in real time and names itself with ``icy-name``.
"""

from __future__ import annotations

import io
import json

import pytest
from support.helpers import OggStation, free_port, make_config, started, wait_until

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.cli import main
from streamtag.commands.status import format_status, run_status
from streamtag.daemon.config import SourceConfig
from tests.scenarios.test_ogg_titles import PIECES, encode_links

STATION = "Status Test FM"


@pytest.fixture(scope="module")
def radio_daemon(model_path, tmp_path_factory):
    """A daemon playing the Ogg radio as stream "ogg-radio", once its first title is known."""
    tmp = tmp_path_factory.mktemp("status")
    links = encode_links(tmp, "vorbis")
    radio = OggStation(b"".join(p.read_bytes() for p in links), 2.5 * len(links), loop=True,
                       name=STATION)
    daemon, sub = started(make_config(model_path, tmp))
    try:
        daemon.add_source(SourceConfig("ogg-radio", radio.url))
        wait_until(lambda: (daemon.status()["streams"]["ogg-radio"]["counters"]
                            .get("windows", 0) > 0), 30, "the radio's first windows")
        yield daemon
    finally:
        daemon.stop()
        sub.close()
        radio.close()


def test_status_shows_each_stream_s_state_title_station_level_and_counters(radio_daemon):
    out, err = io.StringIO(), io.StringIO()
    assert run_status(radio_daemon.control.endpoint, out=out, err=err) == 0, err.getvalue()
    text = out.getvalue()
    line = next(row for row in text.splitlines() if row.startswith("ogg-radio"))
    assert " running " in line
    assert any(f'"{artist} - {title}"' in line for artist, title in PIECES), line
    assert f'station "{STATION}"' in line
    assert " dBFS" in line  # the tiny log-mel model's windows carry their level
    assert f"source: {radio_daemon.status()['streams']['ogg-radio']['source']}" in text
    assert "windows=" in text and "samples=" in text
    model = radio_daemon.model
    assert text.startswith("daemon   session ")
    assert f"model    {model.name} " in text


def test_status_json_is_the_daemon_s_reply_and_stream_picks_streams(radio_daemon, capsys):
    assert main(["status", "--control", radio_daemon.control.endpoint, "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    state = reply["streams"]["ogg-radio"]
    assert state["state"] == "running"
    assert state["station"] == STATION
    assert state["title"] in {f"{a} - {t}" for a, t in PIECES}
    assert state["counters"]["windows"] > 0
    assert reply["model"]["name"] == radio_daemon.model.name
    # a stream the daemon does not serve is an error that names the ones it does
    assert main(["status", "--control", radio_daemon.control.endpoint, "--stream", "other",
                 "--stream", "ogg-radio"]) == 2
    said = capsys.readouterr()
    assert said.out == ""
    assert "--stream 'other': the daemon serves no such stream; its streams: 'ogg-radio'" in \
        said.err


def test_status_says_when_no_daemon_answers_or_the_token_is_wrong(radio_daemon, capsys):
    nobody = f"tcp://127.0.0.1:{free_port()}"
    assert main(["status", "--control", nobody]) == 1
    err = capsys.readouterr().err
    assert f"no reply from the control socket at {nobody}" in err
    assert "is the daemon running" in err
    # waited for: the message gives the whole wait (it gave the last attempt's 200 ms)
    assert main(["status", "--control", nobody, "--wait", "2.2"]) == 1
    err = capsys.readouterr().err
    assert f"no reply from the control socket at {nobody} within 2.2 s (--wait)" in err, err
    err_out = io.StringIO()
    assert run_status(radio_daemon.control.endpoint, token="x" * 40, out=io.StringIO(),
                      err=err_out) == 1
    assert "the daemon refused" in err_out.getvalue()
    assert "token" in err_out.getvalue()


def test_status_flags_are_checked(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--control", "tcp://127.0.0.1:99999"])
    assert exit_.value.code == 2
    assert "'99999' is not a TCP port" in capsys.readouterr().err
    assert main(["status", "--control", "tcp://127.0.0.1:1", "--server-key", "x"]) == 2
    assert "--server-key and --client-key go together" in capsys.readouterr().err


def test_control_adds_and_removes_a_stream_and_says_what_the_daemon_refused(
        radio_daemon, tmp_path, capsys):
    """`streamtag control` against the same daemon: each request as the control socket takes
    it, with the token found as `status` finds it; the daemon's refusals printed, exit 1."""
    endpoint = ["--control", radio_daemon.control.endpoint]
    assert main(["control", "ping", *endpoint]) == 0
    assert "the daemon answers: protocol" in capsys.readouterr().out
    song = tmp_path / "song.wav"  # below the daemon's file_roots (the pytest temp root)
    write_audio(song, music_like(20.0, 16000, seed=4), 16000)
    assert main(["control", "add", "file-1", str(song), "--title", "Fixed Title", "--option",
                 "realtime=true", *endpoint]) == 0, capsys.readouterr().err
    assert f"added file-1: the daemon opens {song}" in capsys.readouterr().out
    wait_until(lambda: radio_daemon.status()["streams"].get("file-1", {}).get("counters", {})
               .get("windows", 0) > 0, 30, "the added stream's first windows")
    assert radio_daemon.status()["streams"]["file-1"]["title"] == "Fixed Title"
    assert main(["control", "remove", "file-1", *endpoint]) == 0
    assert "removed file-1" in capsys.readouterr().out
    wait_until(lambda: radio_daemon.status()["streams"]["file-1"]["state"] == "ended", 30,
               "the removed stream to end")
    # removed again, once ended: status forgets it
    assert main(["control", "remove", "file-1", *endpoint]) == 0
    assert "removed file-1: it had ended; status no longer lists it" in capsys.readouterr().out
    assert "file-1" not in radio_daemon.status()["streams"]
    # refused by the daemon, in its words
    for argv, says in (
            (["add", "elsewhere", "/etc/hostname"], "control.file_roots"),
            (["add", "file-2", str(song), "--option", "realtime=maybe"],
             "'realtime' must be true or false"),
            (["remove", "nosuch"], "no source with id 'nosuch'"),
            (["reload", "no-such-model"], "reload_model refuses 'no-such-model'")):
        assert main(["control", *argv, *endpoint]) == 1, argv
        err = capsys.readouterr().err
        assert "the daemon refused" in err and says in err, err
    # refused before anything is sent
    assert main(["control", "add", "x", str(song), "--option", "id=3", *endpoint]) == 2
    assert "id is not an option" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["control", "add", "bad id", str(song), *endpoint])
    assert exit_.value.code == 2 and "invalid stream id 'bad id'" in capsys.readouterr().err
    nobody = f"tcp://127.0.0.1:{free_port()}"
    assert main(["control", "remove", "file-1", "--control", nobody]) == 1
    assert f"no reply from the control socket at {nobody}" in capsys.readouterr().err


def test_a_stream_that_is_down_shows_no_stale_level():
    level = {"rms_dbfs": -20.0, "peak_dbfs": -3.0}
    reply = {"ok": True, "streams": {
        "up": {"state": "running", "level": level},
        "down": {"state": "reconnecting", "error": "the station answered HTTP 404",
                 "level": level}}}
    lines = {line.split()[0]: line for line in format_status(reply, None)
             if line.startswith(("up ", "down "))}
    assert "level -20.0 dBFS" in lines["up"]
    assert "dBFS" not in lines["down"]
