"""Titles from a chained Ogg stream: each link of a Vorbis or Opus stream carries its own
comments (TITLE, ARTIST), and each link's audio is one track, titled by them, on the wire and in
the history database.

The links are encoded by ffmpeg, each with its tags; a source client of the test's own sends
them one after the other, in real time, to a real Icecast mount, as a playout system that starts
a new link per piece does (ffmpeg's own Ogg muxer writes one link, so it cannot be the source
client here); the daemon reads the mount over HTTP and the recorder writes what it publishes
to SQLite. Files made of the same links are titled per link too.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.helpers import collect, make_config, started, wait_until

from streamtag.daemon.config import SourceConfig
from streamtag.history import schema
from streamtag.history.recorder import Recorder
from streamtag.sources import FileSource

LINK_S = 2.5
# the links of the default mount test: still several of the test model's windows each
MOUNT_LINK_S = 1.5
PIECES = (("Alpha Band", "Morning Song"), ("Beta Duo", "It's Noon; \"quoted\""),
          ("Gamma", "Night Piece"))
CODECS = {"vorbis": ("libvorbis", 44100), "opus": ("libopus", 48000)}
STATION = "Chained Test FM"


def encode_links(directory: Path, codec: str, seconds: float = LINK_S,
                 count: int = len(PIECES)) -> list[Path]:
    """One Ogg file of ``seconds`` per piece (the first ``count`` pieces), encoded by ffmpeg
    with the piece's TITLE and ARTIST."""
    encoder, rate = CODECS[codec]
    links = []
    for i, (artist, title) in enumerate(PIECES[:count]):
        path = directory / f"link{i}.ogg"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
             "-i", f"sine=frequency={220 * (i + 1)}:sample_rate={rate}:duration={seconds}",
             "-f", "lavfi", "-i", f"anoisesrc=amplitude=0.{i + 1}:sample_rate={rate}:"
             f"duration={seconds}", "-filter_complex", "amix=inputs=2", "-ac", "2",
             "-c:a", encoder, "-metadata", f"TITLE={title}", "-metadata", f"ARTIST={artist}",
             "-f", "ogg", str(path)], check=True, timeout=60)
        links.append(path)
    return links


class OggSourceClient:
    """Sends Ogg links to an Icecast mount one after the other (a chained stream), each at its
    playing speed, over one source connection (HTTP PUT)."""

    def __init__(self, port: int, password: str, mount: str, links: list[Path],
                 link_s: float = LINK_S) -> None:
        self.links, self.link_s = links, link_s
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        auth = base64.b64encode(f"source:{password}".encode()).decode()
        self.sock.sendall((f"PUT {mount} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Authorization: Basic {auth}\r\nContent-Type: application/ogg\r\n"
                           f"Ice-Name: {STATION}\r\nIce-Public: 0\r\n\r\n").encode())
        answer = self.sock.recv(1024)
        assert b" 200 " in answer.split(b"\r\n")[0], answer
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.go = threading.Event()

    def start(self, first_bytes: int) -> None:
        """Sends ``first_bytes`` of the first link at once (the mount goes live), the rest at
        playing speed in a thread once ``release`` is called: the listener under test hears
        the first link from its start, however long it took to come (Icecast drops a source
        that sends nothing for 10 s, so release soon)."""
        self.sock.sendall(self.links[0].read_bytes()[:first_bytes])
        self.thread = threading.Thread(target=self._send, args=(first_bytes,), daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.go.set()

    def _send(self, skip: int) -> None:
        try:
            if not self.go.wait(30):
                raise TimeoutError("the test never released the source client")
            for data in (path.read_bytes() for path in self.links):
                per_s = len(data) / self.link_s
                start, sent = time.monotonic(), skip
                skip = 0
                while sent < len(data):
                    self.sock.sendall(data[sent:sent + 2048])
                    sent += 2048
                    time.sleep(max(0.0, start + sent / per_s - time.monotonic()))
        except OSError as exc:
            self.error = exc
        finally:
            self.sock.close()  # the mount ends with its source

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(self.link_s * len(self.links) + 10)


def mount_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Opus through Icecast is slow only: the default run keeps Vorbis through Icecast and both codecs
# from a chained file (the same demuxing and title code).
@pytest.mark.parametrize("codec", [pytest.param(c, marks=pytest.mark.slow) if c == "opus" else c
                                   for c in sorted(CODECS)])
def test_a_chained_ogg_mount_is_recorded_as_one_titled_track_per_link(codec, model_path,
                                                                         tmp_path):
    from support.servers import icecast_server

    links = encode_links(tmp_path, codec, MOUNT_LINK_S)
    expected = [f"{artist} - {title}" for artist, title in PIECES]
    db = schema.create_db_engine(f"sqlite:///{tmp_path / 'history.db'}")
    schema.upgrade(db)
    with icecast_server() as (icecast, _log):
        icecast.mount = "/radio.ogg"
        client = OggSourceClient(icecast.port, icecast.password, icecast.mount, links,
                                 MOUNT_LINK_S)
        daemon = sub = recorder = None
        try:
            # The daemon and the recorder first: the links play in real time, and the daemon
            # must hear the first one from its start.
            daemon, sub = started(make_config(model_path, tmp_path))
            recorder = Recorder(db, daemon.publisher.endpoint).start()
            session = daemon.publisher.session

            def recording() -> bool:
                with db.connect() as conn:
                    return conn.execute(sa.select(schema.daemons.c.session).where(
                        schema.daemons.c.session == session)).first() is not None

            wait_until(recording, 20, "the recorder to store the daemon's heartbeat")
            client.start(4096)
            # (Icecast.mount_is_live would clear the link's title: it probes with updinfo.)
            wait_until(lambda: mount_answers(icecast.url), 10, "the Ogg mount to go live")
            daemon.add_source(SourceConfig("chained", f"{icecast.url}", {"reconnect": False}))

            def daemon_listens() -> bool:
                return "streamtag" in icecast.admin("listclients")  # its User-Agent

            wait_until(daemon_listens, 8, "the daemon to listen to the mount", interval=0.05)
            client.release()
            got = [m for m in collect(sub, {"chained"}, timeout_s=MOUNT_LINK_S * 3 + 30)
                   if m.header.stream == "chained"]
            client.join()
            assert client.error is None

            def tracks_stored() -> bool:
                with db.connect() as conn:
                    return conn.execute(sa.select(sa.func.count()).select_from(
                        schema.tracks)).scalar() >= len(PIECES)

            wait_until(tracks_stored, 60, "the recorder to store the tracks")
        finally:
            if recorder is not None:
                recorder.stop(5)
            if daemon is not None:
                daemon.stop()
                sub.close()
    tracks = [m.body for m in got if m.msg_type == "track"]
    assert [t.title for t in tracks] == expected
    assert [t.reason for t in tracks] == ["title_change", "title_change", "end"]
    # The daemon listened from the mount's first page: every link was heard from its start
    # (an Ogg link's granule position says so; protocol 1.5), its own title's status too.
    assert [t.heard_from_start for t in tracks] == [True, True, True]
    # Each link is one piece: the middle one lasts the link's length.
    assert tracks[1].end_s - tracks[1].start_s == pytest.approx(MOUNT_LINK_S, abs=0.3)
    statuses = [m.body for m in got if m.msg_type == "status" and m.body.state == "running"]
    assert any(s.station == STATION for s in statuses), statuses
    with db.connect() as conn:
        rows = conn.execute(sa.select(schema.tracks.c.title, schema.tracks.c.reason,
                                      schema.tracks.c.heard_from_start)
                            .order_by(schema.tracks.c.start_sample)).all()
    db.dispose()
    assert [tuple(r) for r in rows] == list(zip(expected, ["title_change", "title_change",
                                                          "end"], [True] * 3, strict=True))


@pytest.mark.slow  # 10 s live; the chained mount's test covers heard_from_start by default
def test_a_link_joined_midway_is_said_to_be_and_the_next_is_heard_from_its_start(
        model_path, tmp_path):
    """The daemon connects when the mount's first link has played for a while: Icecast's
    burst starts at a page inside that link, whose granule position is past the link's start,
    so its track is one the daemon joined midway (its title's status and its track say
    heard_from_start false); the next link begins while the daemon listens (true)."""
    from support.servers import icecast_server

    links = encode_links(tmp_path, "vorbis")
    with icecast_server() as (icecast, _log):
        icecast.mount = "/radio.ogg"
        client = OggSourceClient(icecast.port, icecast.password, icecast.mount, links)
        daemon = sub = None
        try:
            daemon, sub = started(make_config(model_path, tmp_path))
            client.start(4096)
            wait_until(lambda: mount_answers(icecast.url), 10, "the Ogg mount to go live")
            client.release()
            time.sleep(LINK_S * 0.6)  # past the test server's burst (8 KB, under a second)
            daemon.add_source(SourceConfig("joined", f"{icecast.url}", {"reconnect": False}))
            got = [m for m in collect(sub, {"joined"}, timeout_s=LINK_S * 3 + 30)
                   if m.header.stream == "joined"]
            client.join()
            assert client.error is None
        finally:
            if daemon is not None:
                daemon.stop()
                sub.close()
    tracks = [m.body for m in got if m.msg_type == "track"]
    titled = [(m.body.title, m.body.heard_from_start) for m in got
              if m.msg_type == "status" and m.body.state == "running" and m.body.title]
    first, *rest = [f"{artist} - {title}" for artist, title in PIECES]
    assert [(t.title, t.heard_from_start) for t in tracks] == [
        (first, False), *((title, True) for title in rest)]
    assert titled[0] == (first, False) and (rest[0], True) in titled, titled
    # joined midway: less than the link was heard of it
    assert tracks[0].end_s - tracks[0].start_s < LINK_S * 0.7


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_chained_ogg_file_names_each_link_where_its_audio_starts(codec, tmp_path):
    links = encode_links(tmp_path, codec)
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(b"".join(p.read_bytes() for p in links))
    rate = 16000
    titles = []
    with FileSource(chained) as source:
        source.open(rate, lambda state, error, extra: titles.append(
            (extra["title"], extra["title_sample"])) if "title" in extra else None)
        samples = sum(c.samples.size for c in source.chunks(threading.Event()))
    assert [t for t, _ in titles] == [f"{a} - {t}" for a, t in PIECES]
    # Each title is placed where its link's audio starts (to a decoder frame).
    for i, (_, sample) in enumerate(titles):
        assert abs(sample - i * LINK_S * rate) <= 0.03 * rate, titles
    assert samples == pytest.approx(len(PIECES) * LINK_S * rate, abs=0.05 * rate)


def test_an_ogg_link_s_start_is_its_first_packet_within_a_few_ms_of_its_sample_0():
    from fractions import Fraction

    from streamtag.sources.http import ogg_link_start

    # the reference Vorbis encoder starts 128 samples before, Opus by its pre-skip (312 at
    # 48 kHz), ffmpeg's libvorbis of a cut file 284 samples past: all heard from the start
    for pts, rate in ((-128, 44100), (-312, 48000), (284, 44100), (0, 44100)):
        assert ogg_link_start(pts, Fraction(1, rate)) is True, (pts, rate)
    # joined at a later page (Icecast's burst): 0.85 s in, the smallest seen here
    assert ogg_link_start(37568, Fraction(1, 44100)) is False
    assert ogg_link_start(None, Fraction(1, 44100)) is None
