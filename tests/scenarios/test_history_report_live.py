"""The as-run log of a real ten-minute radio session: Icecast fed by ffmpeg in real time with
five pieces of Debian's freely licensed game music, a playout announcing each title as it
starts, the feeder gone for 32 s in the third piece (the mount answers 404 meanwhile), a real
daemon tagging the station, a real recorder writing SQLite, and ``streamtag history`` read
while the fifth piece plays. Slow: it takes the ten minutes it reports."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.helpers import make_config, started, stop_process, tiny_model_file, wait_until

from streamtag.cli import main
from streamtag.daemon.config import SourceConfig
from streamtag.history import schema
from streamtag.history.recorder import Recorder
from tests.history.test_report import red_columns

MUSIC = Path("/usr/share/games/singularity/music")
PIECES = ("A New Journey", "Aberrations", "Awakening", "Coherence", "Deprecation")
PIECE_S = 130.0      # each piece's length as played
CUT_AFTER_S = 60.0   # the feeder goes away this far into the third piece
OFF_AIR_S = 32.0
QUERY_AFTER_S = 90.0  # the history is read this far into the fifth piece
# How far a time in the log may be from the playout's: ICY metadata rides in the stream at
# intervals, the daemon hears what Icecast buffered, and it reconnects with a back-off.
SLACK_S = 5.0


def playlist(folder: Path, names: tuple[str, ...]) -> Path:
    lines = ["ffconcat version 1.0"]
    for name in names:
        lines += [f"file '{MUSIC / (name + '.ogg')}'", f"outpoint {PIECE_S}"]
    path = folder / f"playlist-{len(names)}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


class Playout:
    """ffmpeg playing a playlist to the mount in real time; as each piece starts (its progress
    says so) the title is announced to Icecast, as a playout system does, and the time noted."""

    def __init__(self, icecast, log, path: Path, titles: tuple[str, ...]) -> None:
        self.icecast, self.titles = icecast, titles
        self.announced: list[tuple[str, float]] = []
        self.proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-f", "concat",
             "-safe", "0", "-i", str(path), "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k",
             "-content_type", "audio/mpeg", "-ice_name", "streamtag test", "-progress",
             "pipe:1", "-stats_period", "0.1", "-f", "mp3",
             f"icecast://source:{icecast.password}@127.0.0.1:{icecast.port}{icecast.mount}"],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
        icecast.wait_live(10)
        self._announce(0)

    def _announce(self, n: int) -> None:
        self.icecast.admin("metadata", mode="updinfo", song=self.titles[n])
        self.announced.append((self.titles[n], time.time()))

    def play_until(self, seconds: float) -> None:
        """Reads ffmpeg's progress, announcing titles, until `seconds` of the playlist."""
        for line in self.proc.stdout:
            key, _, value = line.strip().partition("=")
            if key != "out_time_us" or not value.isdigit():
                continue
            played = int(value) / 1e6
            n = len(self.announced)
            if n < len(self.titles) and played >= n * PIECE_S:
                self._announce(n)
            if played >= seconds:
                return
        raise AssertionError("ffmpeg stopped before the playlist's end")

    def stop(self) -> float:
        stop_process(self.proc)
        self.proc.stdout.close()
        return time.time()


@pytest.mark.slow
def test_a_real_ten_minute_session_s_as_run_log_is_what_was_played(tmp_path, capsys):
    from support.servers import icecast_server

    if not all((MUSIC / f"{name}.ogg").exists() for name in PIECES):
        pytest.skip("needs Debian's singularity-music (freely licensed recordings): "
                    "apt-get install singularity-music")
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    model = tiny_model_file(tmp_path / "tiny.pt")
    first, second = PIECES[:3], PIECES[3:]
    with icecast_server() as (icecast, log):
        playout = Playout(icecast, log, playlist(tmp_path, first), first)
        daemon = sub = recorder = later = None
        try:
            daemon, sub = started(make_config(model, tmp_path))
            recorder = Recorder(engine, daemon.publisher.endpoint).start()
            wait_until(lambda: _heard(engine, daemon.publisher.session), 20,
                       "the recorder to store the daemon's heartbeat", interval=0.1)
            daemon.add_source(SourceConfig("radio", icecast.url,
                                           {"reconnect": True, "max_backoff_s": 2.0}))
            playout.play_until(2 * PIECE_S + CUT_AFTER_S)
            cut_at = playout.stop()
            time.sleep(OFF_AIR_S)
            later = Playout(icecast, log, playlist(tmp_path, second), second)
            back_at = later.announced[0][1]
            later.play_until(PIECE_S + QUERY_AFTER_S)
            time.sleep(2.0)  # the recorder writes what the daemon sent
            result = _history(capsys, "--db", url, "--json")
            text = _history(capsys, "--db", url, "--tz", "UTC")
            folder = Path(os.environ.get("STREAMTAG_SCREENSHOTS") or tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            picture = folder / "session.png"
            assert _history(capsys, "--db", url, "--plot", str(picture)).returncode == 0
        finally:
            for player in (later, playout):
                if player is not None and player.proc.poll() is None:
                    player.stop()
            if daemon is not None:
                daemon.stop()
                sub.close()
            if recorder is not None:
                recorder.stop(5)
            engine.dispose()
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    entries = answer["asrun"]
    announced = playout.announced + later.announced
    assert [e["title"] for e in entries] == list(PIECES)
    assert [e["partial"] for e in entries] == [["joined"], [], ["off air"], [], []]
    assert [e["now_playing"] for e in entries] == [False] * 4 + [True]
    for entry, (_, at) in list(zip(entries, announced, strict=True))[1:]:
        assert entry["start"] == pytest.approx(at, abs=SLACK_S), (entry, at)
    (off,) = answer["off_air"]
    assert off["start"] == pytest.approx(cut_at, abs=SLACK_S)
    assert back_at - 1.0 <= off["end"] <= back_at + SLACK_S
    # Each track ends where the next begins, but the one the outage cut: it ends with its
    # audio, when the station went, and the next begins when it came back (clip_to_air).
    for entry, nxt in zip(entries, entries[1:], strict=False):
        if "off air" in entry["partial"]:
            assert entry["end"] == pytest.approx(off["start"], abs=1.0), (entry, off)
            assert nxt["start"] == pytest.approx(off["end"], abs=SLACK_S), (nxt, off)
        else:
            assert entry["end"] == pytest.approx(nxt["start"], abs=SLACK_S)
    assert "HTTP 404" in off["detail"], off
    assert "OFF AIR (1, " in text.stdout and "HTTP 404" in text.stdout
    assert red_columns(picture) > 5
    assert answer["gaps"] == []


def _history(capsys, *args: str) -> subprocess.CompletedProcess:
    capsys.readouterr()
    code = main(["history", *args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def _heard(engine, session: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(schema.daemons.c.last_seq).where(
            schema.daemons.c.session == session)).scalar() is not None
