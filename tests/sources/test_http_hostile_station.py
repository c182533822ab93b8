"""A hostile station against the HTTP source (issue "Untrusted streams and peers"): each attack
of tests/support/hostile_station.py is a test of what the source must not do. Real HTTP servers on
127.0.0.1, real decoding with PyAV; the memory attacks run the source in a process of its own
and bound how far its resident memory grows."""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from support.helpers import Feed, free_port, stop_process, wait_until
from support.hostile_station import (
    BANNER,
    OGG_FIRST,
    HostileStation,
    Listener,
    bare_mp3,
    measure_in_subprocess,
    ogg_page,
    ogg_pages,
    relinked,
    slow_ogg_crc,
    vorbis_ogg,
    wav_header,
)

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.errors import SourceError
from streamtag.sources import HttpSource, parse_source
from streamtag.sources.base import MAX_TITLE_CHARS
from streamtag.sources.bounds import ByteLimitError, DeclaredSizes, OggPages, ogg_crc
from streamtag.sources.hosts import HostPolicy, redact_url
from streamtag.sources.http import (
    LEEWAY_BYTES,
    MAX_BYTES_PER_AUDIO_S,
    MAX_OGG_PACKET_BYTES,
    MAX_OGG_STREAMS,
    MAX_TITLE_CHANGES,
    OPEN_OPTIONS,
)
from streamtag.sources.icy import PARSE_BURST

TARGET = 16000
GROWTH_MB = 50  # what one hostile station may add to the daemon's resident memory


@pytest.fixture(scope="module")
def mp3(tmp_path_factory) -> bytes:
    return bare_mp3(tmp_path_factory.mktemp("hostile") / "station.mp3")


VORBIS_S = 40.0


@pytest.fixture(scope="module")
def vorbis() -> bytes:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package ffmpeg) makes the Ogg Vorbis links")
    return vorbis_ogg(VORBIS_S)


@pytest.fixture
def station(mp3, request):
    server = HostileStation(mp3)
    if "vorbis" in request.fixturenames:
        server.vorbis, server.vorbis_s = request.getfixturevalue("vorbis"), VORBIS_S
    yield server
    server.stop()


class Run:
    """A source read to its end (or ``seconds``, or until ``until(run)`` holds), with every
    status it sent."""

    def __init__(self, source: HttpSource, seconds: float = 20.0,
                 until: Callable[[Run], bool] | None = None) -> None:
        self.source, self.calls, self.samples, self.error = source, [], 0, None
        stop = threading.Event()
        source.open(TARGET, lambda state, error, extra: self.calls.append((state, error, extra)))

        def watch() -> None:
            deadline = time.monotonic() + seconds
            while not stop.wait(0.05):
                if time.monotonic() >= deadline or (until is not None and until(self)):
                    stop.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for chunk in source.chunks(stop):
                self.samples += chunk.samples.size
        except SourceError as exc:
            self.error = exc
        finally:
            stop.set()
            watcher.join()
            source.close()

    def published(self) -> str:
        """Everything the source published: its description, errors and status fields."""
        return repr([self.source.description, str(self.error), self.calls])

    def titles(self) -> list:
        return [extra["title"] for _, _, extra in self.calls if "title" in extra]


# -- what FFmpeg may open ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ffconcat", "/hls"])
def test_a_playlist_body_naming_a_local_file_is_refused(station, tmp_path, monkeypatch, path):
    # The daemon's working directory holds a WAV; the station's body names it. Left to its
    # probe, FFmpeg took an ffconcat body for a playlist and decoded the file of this machine.
    write_audio(tmp_path / station.local_name, music_like(1.0, TARGET, seed=3), TARGET)
    monkeypatch.chdir(tmp_path)
    run = Run(HttpSource(station.url(path), reconnect=False))
    assert run.samples == 0, "the station made the source decode a local file"
    assert "the stream is not audio in a format read from stations" in str(run.error)


@pytest.mark.parametrize("fmt", ["concat", "hls"])
def test_no_protocol_is_open_to_a_demuxer_even_one_named_by_force(tmp_path, monkeypatch, fmt):
    # The protocol whitelist holds on its own: were a playlist demuxer let in, it could still
    # open nothing. Without the options, the same bytes decode the local file.
    secret = {"concat": "secret.wav", "hls": "secret.aac"}[fmt]  # what each plays
    write_audio(tmp_path / secret, music_like(1.0, TARGET, seed=3), TARGET,
                codec="aac" if fmt == "hls" else None)
    monkeypatch.chdir(tmp_path)
    body = {"concat": f"ffconcat version 1.0\nfile '{secret}'\n",
            "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n{secret}\n"
                   "#EXT-X-ENDLIST\n"}[fmt].encode()
    with av.open(io.BytesIO(body), format=fmt) as container:  # the hole the options close
        assert sum(f.samples for f in container.decode(audio=0)) >= TARGET
    options = {**OPEN_OPTIONS, "format_whitelist": fmt}
    for refused in (options, OPEN_OPTIONS):  # the protocol wall alone, and both walls
        with pytest.raises(av.error.FFmpegError):
            with av.open(io.BytesIO(body), format=fmt, container_options=refused) as container:
                for _ in container.decode(audio=0):
                    pytest.fail("a local file was decoded")


def test_a_stream_that_is_not_audio_is_dropped_after_a_bound(station):
    station.garbage_bytes = 32 << 20
    run = Run(HttpSource(station.url("/garbage"), reconnect=False))
    assert run.samples == 0
    assert run.error is not None and "no audio in the first 4096 KiB" in str(run.error)
    # What the server got out before the source hung up (socket buffers included).
    assert station.sent["/garbage"] < LEEWAY_BYTES + (12 << 20)
    assert BANNER not in run.published()


# -- memory and titles ------------------------------------------------------------------------


def test_metaint_1_with_full_blocks_is_read_without_titles_in_bounded_memory(station):
    report = measure_in_subprocess(station.url("/metaint1"), 2.0)
    assert report["growth_mb"] < GROWTH_MB, report
    # The source asked again without Icy-MetaData, and the server sent plain audio.
    assert [h.get("icy-metadata") for _, h in station.requests] == ["1", None], station.requests
    assert report["samples"] > TARGET and report["titles"] == 0, report
    assert report["finished"], report


def test_a_station_that_sends_blocks_unasked_stays_bounded_and_fails_as_not_audio(station):
    report = measure_in_subprocess(station.url("/metaint1-always"), 2.0)
    assert report["growth_mb"] < GROWTH_MB, report
    assert report["titles"] == 0 and report["finished"], report
    assert "the stream is not audio" in report["error"], report


def test_a_new_title_in_every_block_reports_at_most_the_rate_limit(station):
    report = measure_in_subprocess(station.url("/flood"), 5.0)
    assert report["growth_mb"] < GROWTH_MB, report
    assert 1 <= report["titles"] <= MAX_TITLE_CHANGES, report
    counters = report["counters"]
    assert counters["icy_blocks"] > 200, report  # the flood was there, and counted
    # parsed at most twice a second, eight at once (however long the source took to start)
    assert counters["icy_blocks_parsed"] <= PARSE_BURST + 2 * 5.0 + 4, report
    ignored = counters["titles_ignored"]
    assert ignored >= 1, report  # more new titles than the rate limit allows
    assert 0 < report["titles_ignored_extra"] <= ignored  # and reported in the status extra
    assert report["samples"] > TARGET, report  # the audio goes on
    assert len(report["last_title"]) <= MAX_TITLE_CHARS


def test_titles_lose_escape_sequences_and_control_characters_and_are_capped(station):
    run = Run(HttpSource(station.url("/escapes"), reconnect=False), seconds=1.5)
    assert run.titles() == ["Red Song", "Line Break", "L" * MAX_TITLE_CHARS]
    assert "\x1b" not in run.published() and "pwned" not in run.published()


def test_a_title_held_back_by_the_limit_is_reported_once_the_window_allows(station,
                                                                           monkeypatch):
    # One change per half second: of the three titles that arrive together, the first is
    # reported at once, the second is replaced by the third, which comes once the window
    # allows it, further on in the audio.
    monkeypatch.setattr("streamtag.sources.http.MAX_TITLE_CHANGES", 1)
    monkeypatch.setattr("streamtag.sources.http.TITLE_WINDOW_S", 0.5)
    run = Run(HttpSource(station.url("/escapes"), reconnect=False), seconds=2.0)
    assert run.titles() == ["Red Song", "L" * MAX_TITLE_CHARS]
    assert run.source.counters["titles_ignored"] == 2
    samples = [extra["title_sample"] for _, _, extra in run.calls if "title" in extra]
    assert samples[0] == 0 and samples[1] > 0.4 * TARGET
    held = [extra for state, _, extra in run.calls if "titles_ignored" in extra]
    assert held and held[0] == {"titles_ignored": 1}  # said once, when the limit was reached


# -- redirects and credentials ----------------------------------------------------------------


def redirect_target(station: HostileStation, mp3: bytes) -> HostileStation:
    """A server that records what it gets, as the target of /redirect-away."""
    other = HostileStation(mp3)
    station.peer = other.url("/stream")
    return other


def authorization(server: HostileStation) -> list:
    return [headers.get("authorization") for _, headers in server.requests]


def test_credentials_go_only_to_the_origin_they_were_given_for(station, mp3):
    other = redirect_target(station, mp3)
    try:
        run = Run(HttpSource(station.url("/redirect-away", "user:pw@"), reconnect=False))
        assert run.error is None and run.samples > TARGET
        assert authorization(station)[0] is not None  # the station was given them
        assert authorization(other) == [None], other.requests  # another port: not sent
        station.requests.clear()
        run = Run(HttpSource(station.url("/redirect-here", "user:pw@"), reconnect=False))
        assert run.error is None and run.samples > TARGET
        assert station.paths() == ["/redirect-here", "/stream"]
        assert None not in authorization(station)  # the same origin keeps them
        other.requests.clear()
        run = Run(HttpSource(station.url("/redirect-userinfo"), reconnect=False))
        assert run.error is None and authorization(other) == [None]  # a server's user part
    finally:
        other.stop()
    assert "pw" not in run.published()


def test_a_redirect_to_ftp_is_refused_without_connecting(station):
    ftp = Listener()
    try:
        station.ftp_url = f"ftp://127.0.0.1:{ftp.port}/music.mp3"
        run = Run(HttpSource(station.url("/redirect-ftp"), reconnect=True, max_reconnects=3))
        assert ftp.connections == 0
    finally:
        ftp.close()
    assert run.error is not None
    assert "redirected to a ftp: URL; only http and https redirects are followed" in str(
        run.error)
    assert run.calls[-1][0] == "failed" and station.paths() == ["/redirect-ftp"]  # no retries


def test_secrets_in_the_url_are_never_published(station):
    run = Run(HttpSource(station.url("/stream?token=S3CRET&id=7", "user:pa55@"),
                         reconnect=False))
    assert run.samples > TARGET
    assert run.source.description.endswith("/stream?token=***&id=***")
    assert "S3CRET" not in run.published() and "pa55" not in run.published()
    run = Run(HttpSource(station.url("/missing?token=S3CRET"), reconnect=False))
    assert run.error is not None and "S3CRET" not in run.published()


# -- errors in our words ----------------------------------------------------------------------


def test_an_http_error_is_told_in_our_words(station):
    run = Run(HttpSource(station.url("/missing"), reconnect=False))
    assert str(run.error).endswith("/missing: the station answered HTTP 404")
    assert BANNER not in run.published() and "secret-backend" not in run.published()


def test_a_service_that_does_not_speak_http_is_told_in_our_words():
    service = Listener(banner=f"SSH-2.0-OpenSSH_9.2p1 {BANNER}\r\n".encode())
    try:
        run = Run(HttpSource(f"http://127.0.0.1:{service.port}/", reconnect=False))
    finally:
        service.close()
    assert str(run.error).endswith(": the server did not answer HTTP")
    assert BANNER not in run.published() and "SSH" not in run.published()


# -- which hosts a source may reach -----------------------------------------------------------


def test_a_host_policy_refuses_a_private_host_before_any_request(station):
    run = Run(HttpSource(station.url("/stream"), host_policy=HostPolicy()))
    assert "127.0.0.1 resolves to 127.0.0.1, a loopback or private address" in str(run.error)
    assert station.requests == []
    assert run.calls[-1][0] == "failed"
    run = Run(HttpSource(station.url("/stream"), reconnect=False,
                         host_policy=HostPolicy(allow=("127.0.0.1",))))
    assert run.error is None and run.samples > TARGET  # listed: allowed


def test_a_host_policy_is_checked_again_on_every_redirect(station, mp3):
    other = redirect_target(station, mp3)
    try:
        station.peer = other.url("/stream").replace("127.0.0.1", "localhost")
        run = Run(HttpSource(station.url("/redirect-away"),
                             host_policy=HostPolicy(private=True, deny=("localhost",))))
        assert "host localhost is denied by the host policy" in str(run.error)
        assert other.requests == [] and station.paths() == ["/redirect-away"]
    finally:
        other.stop()


def test_a_host_policy_name_check_fails_at_construction():
    with pytest.raises(SourceError, match="evil.example/live: host evil.example is not in the "
                                          "allowed hosts"):
        HttpSource("http://evil.example/live", host_policy=HostPolicy(allow=(".radio.example",)))
    HttpSource("http://a.radio.example/live", host_policy=HostPolicy(allow=(".radio.example",)))
    with pytest.raises(SourceError, match="must be a HostPolicy"):
        HttpSource("http://a.example/", host_policy={"allow": []})


@pytest.mark.parametrize(("url", "policy", "message"), [
    ("http://2130706433/", HostPolicy(), "loopback or private"),  # 127.0.0.1 as one number
    ("http://0.0.0.0:8000/", HostPolicy(), "loopback or private"),
    ("http://[::ffff:127.0.0.1]/", HostPolicy(private=True, deny=("127.0.0.0/8",)), "denied"),
    ("http://[::1]/", HostPolicy(), "loopback or private"),
    ("http://LOCALHOST./", HostPolicy(private=True, deny=("localhost",)), "denied"),
    ("http://169.254.169.254/latest/meta-data/", HostPolicy(), "loopback or private"),
])
def test_a_host_policy_sees_through_spellings_of_private_addresses(url, policy, message):
    with pytest.raises(SourceError, match=message):
        policy.check(url)


def test_a_host_policy_connects_only_to_an_address_it_checked():
    listener = Listener()
    try:
        with pytest.raises(SourceError, match="loopback or private"):
            HostPolicy().connect(("localhost", listener.port), 2.0)
        assert listener.connections == 0
        with HostPolicy(allow=("127.0.0.0/8",)).connect(("127.0.0.1", listener.port), 2.0) as s:
            assert ipaddress.ip_address(s.getpeername()[0]).is_loopback
        assert listener.wait_for(1)
    finally:
        listener.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:pw@host:8000/a?token=t&x=1", "http://user:***@host:8000/a?token=***&x=***"),
    ("https://host/a?secret", "https://host/a?secret=***"),
    ("rtsp://cam:pw@cam.example/stream", "rtsp://cam:***@cam.example/stream"),
    ("http://user:pw@[::1/x", "http://user:***@[::1/x"),  # not a valid URL: still hidden
    ("http://host/a#frag", "http://host/a"),
    ("file.mp3", "file.mp3"),
])
def test_urls_are_shown_without_their_secrets(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("url, why", [("https://", "the URL names no host"),
                                      ("http://exa mple.org/x.mp3", "a URL holds no spaces")])
def test_a_url_without_a_host_or_with_a_space_is_refused_at_once(url, why):
    with pytest.raises(SourceError) as error:
        HttpSource(url)
    assert why in str(error.value)


@pytest.mark.parametrize("url, why", [("http://127.0.0.1:99999/live.mp3", "out of range"),
                                      ("http://127.0.0.1:http/live.mp3", "integer")])
def test_a_url_with_a_bad_port_says_what_is_wrong_and_the_form(url, why):
    for make in (lambda: HttpSource(url), lambda: HostPolicy().check_name(url)):
        with pytest.raises(SourceError) as error:
            make()
        said = str(error.value)
        assert f"{url} is not a valid URL" in said and why in said
        assert "PORT from 1 to 65535" in said


def test_a_station_that_sends_a_moment_of_audio_and_ends_backs_off_more_each_time(station):
    # /stream sends 3 s of MP3 and ends, as fast as it is read: a station in a storm of short
    # connections. Each came with audio, which reset the back-off: the source reconnected every
    # initial_backoff_s, for ever. Only 10 s of audio on a connection resets it now.
    run = Run(HttpSource(station.url("/stream"), initial_backoff_s=0.05, max_backoff_s=0.4),
              seconds=3.0)
    waits = [extra["backoff_s"] for state, _, extra in run.calls if state == "reconnecting"]
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4], waits
    assert set(waits[3:]) == {0.4}
    assert run.samples > TARGET  # audio came with each connection


def test_a_station_faster_than_real_time_is_read_at_real_time(station, monkeypatch):
    # /escapes sends its MP3 over and over as fast as it is read; a station plays in real time.
    # Once the audio runs AHEAD_S ahead of the time the connection has been open, the source
    # reads at real time (it scored 100 times the windows of a real station before).
    import streamtag.sources.http as http_source

    monkeypatch.setattr(http_source, "AHEAD_S", 1.0)
    paced = Run(HttpSource(station.url("/escapes")), seconds=3.0)
    assert paced.error is None and paced.source.counters["paced"] > 0
    assert 2.0 * TARGET < paced.samples <= (3.0 + 1.0 + 1.0) * TARGET, paced.samples / TARGET
    # realtime=false, for a server one trusts: as fast as it comes
    fast = Run(HttpSource(station.url("/escapes"), realtime=False), seconds=3.0)
    assert fast.samples > 10 * paced.samples and fast.source.counters["paced"] == 0


def test_audio_that_declares_an_absurd_sample_rate_is_refused(station, tmp_path):
    # A WAV header of 1 Hz made every byte a second of audio: hundreds of MB of resampler and
    # thousands of windows a second from one station. Refused, from a station and in a file.
    run = Run(HttpSource(station.url("/rate1")), seconds=10.0)
    assert "the audio declares a sample rate of 1 Hz; streamtag reads 1-768 kHz" in str(
        run.error)
    assert run.calls[-1][0] == "failed" and run.samples == 0
    from streamtag.audio.files import AudioDecodeError, load_audio

    path = tmp_path / "huge-rate.wav"
    path.write_bytes(wav_header(2_000_000_000, 1, 8, 4096) + bytes(4096))
    with pytest.raises(AudioDecodeError, match=f"{path}: the audio declares a sample rate of "
                                               "2000000000 Hz"):
        load_audio(path)


@pytest.mark.parametrize("path", [
    "/drip", "/continue",
    # the same bound met after 3 s of audio: 5 s, run with -m slow
    pytest.param("/trailer", marks=pytest.mark.slow)])
def test_a_connection_that_brings_nothing_to_play_is_cut_and_made_again(station, monkeypatch,
                                                                       path):
    # Every read got a byte within read_timeout_s, so the source waited on these for ever,
    # "starting" or "running" with no audio, and a stopping daemon waited for the read.
    import streamtag.sources.http as http_source

    monkeypatch.setattr(http_source, "NO_AUDIO_S", 1.5)
    # /trailer's 3 s of audio hold the cut off until 4.5 s: 8 s leave room for the next
    run = Run(HttpSource(station.url(path), initial_backoff_s=0.1, max_backoff_s=0.2),
              seconds=8.0, until=lambda run: station.paths().count(path) >= 2)
    reasons = [error for state, error, _ in run.calls if state == "reconnecting"]
    assert reasons and all(r.startswith("no audio for 1.5 s") for r in reasons), run.calls
    assert station.paths().count(path) >= 2  # cut, and made again


# -- bytes bounded by audio -------------------------------------------------------------------

# What one connection may cost past its audio: the leeway, what FFmpeg had asked for and the
# sockets' buffers on both sides (loopback: a few MB).
CONNECTION_SLACK = LEEWAY_BYTES + (8 << 20)


def test_ogg_pages_are_read_as_the_demuxer_reads_them(vorbis):
    pages = ogg_pages(vorbis)
    at = 0
    for _ in range(4):  # ffmpeg's checksums, and ours
        count = vorbis[at + 26]
        end = at + 27 + count + sum(vorbis[at + 27:at + 27 + count])
        page = bytearray(vorbis[at:end])
        stored = int.from_bytes(page[22:26], "little")
        page[22:26] = bytes(4)
        assert ogg_crc(bytes(page)) == slow_ogg_crc(bytes(page)) == stored
        at = end
    # a chained stream of three links, in pieces of any size: no bound is reached, and a
    # page whose checksum fails is passed over as FFmpeg passes it over
    chained = b"".join(b"".join(relinked(vorbis, serial)) for serial in (7, 8, 9))
    damaged = bytearray(chained)
    damaged[len(vorbis) + 100] ^= 0xFF
    for data, bad in ((chained, 0), (bytes(damaged), 1)):
        walker = OggPages(MAX_OGG_PACKET_BYTES, MAX_OGG_STREAMS)
        for at in range(0, len(data), 1000):
            walker.feed(data[at:at + 1000])
        assert walker.pages == 3 * len(pages) - bad and walker.bad_pages >= bad
        assert walker.pending == {9: 0}  # the links replaced one another, and ended
    # a comment packet of any size is cut within a page of the bound, wherever it comes
    walker = OggPages(MAX_OGG_PACKET_BYTES, MAX_OGG_STREAMS)
    fed = 0
    with pytest.raises(ByteLimitError, match="an Ogg packet of more than 2048 KiB"):
        for page in relinked(vorbis, 5, comment_bytes=64 << 20):
            walker.feed(page)
            fed += len(page)
    assert MAX_OGG_PACKET_BYTES - (64 << 10) < fed < MAX_OGG_PACKET_BYTES + (64 << 10)
    # FFmpeg adds a stream for each new serial number while no stream's latest page brought
    # data (up to its 1000 streams: 28 MB): a first page again, then new ones, each counted
    walker = OggPages(MAX_OGG_PACKET_BYTES, MAX_OGG_STREAMS)
    for flags in (OGG_FIRST, 0, OGG_FIRST):
        walker.feed(ogg_page(flags, 0, 1, 0, b"\x05", b"audio"))
    with pytest.raises(ByteLimitError, match=f"more than {MAX_OGG_STREAMS} logical streams"):
        for serial in range(2, 1000):
            walker.feed(ogg_page(OGG_FIRST, 0, serial, 0, b"\x05", b"audio"))


def test_a_chained_link_with_a_huge_comment_packet_is_cut_in_bounded_memory(station, vorbis):
    # The second link's comment packet is 256 MB. FFmpeg's demuxer holds a packet whole until
    # it ends, and the 4 MiB no-audio bound was lifted for good at the first frame: the
    # daemon grew by the packet's size (1.3 GB here), never given back.
    station.comment_bytes = 256 << 20
    report = measure_in_subprocess(station.url("/ogg-comment"), 4.0)
    assert report["growth_mb"] < GROWTH_MB, report
    assert report["samples"] > 0.5 * TARGET, report  # the first link played
    assert report["reasons"][0].startswith("an Ogg packet of more than 2048 KiB"), report
    connections = station.paths().count("/ogg-comment")
    assert station.sent["/ogg-comment"] < connections * CONNECTION_SLACK, station.sent


def test_a_packet_beside_the_audio_that_never_ends_is_cut_in_bounded_memory(station, vorbis):
    # Two logical streams: the audio plays while the second one's packet grows by 1.8 MB per
    # second of audio, within what the audio allows; its 30 s of audio came at once, and the
    # demuxer held the packet: +73 MB, growing as long as the station plays.
    report = measure_in_subprocess(station.url("/ogg-beside"), 4.0)
    assert report["growth_mb"] < GROWTH_MB, report
    assert report["samples"] > 0, report
    assert report["reasons"][0].startswith("an Ogg packet of more than 2048 KiB"), report


def test_mp3_padded_with_zero_bytes_is_cut_and_its_bytes_stay_bounded(station):
    # Real-time MP3 with zero bytes between its pieces, as many as the source reads: pacing
    # counted decoded audio only, so the source read 40-240 MB/s, a core busy, "running".
    report = measure_in_subprocess(station.url("/padded"), 4.0)
    per_s = MAX_BYTES_PER_AUDIO_S >> 10
    assert report["reasons"], report
    assert report["reasons"][0].startswith(f"the station sent more than {per_s} KiB per "
                                           "second of the audio it decodes to"), report
    assert report["reasons"][0].endswith("(max_bytes_per_audio_s)")
    connections = station.paths().count("/padded")
    assert station.sent["/padded"] < connections * CONNECTION_SLACK, (station.sent,
                                                                       connections)
    assert report["counters"]["reconnects"] >= 1, report  # it backs off and tries again


def test_the_bound_of_bytes_per_second_of_audio_is_a_source_option(station, monkeypatch):
    # A 128 kbit/s MP3 station (16 kB per second of audio) under a bound of 8 KiB: cut once
    # the leeway (made small here) is spent, with the bound and the option named.
    import streamtag.sources.http as http_source

    monkeypatch.setattr(http_source, "LEEWAY_BYTES", 64 << 10)
    run = Run(HttpSource(station.url("/escapes"), reconnect=False, realtime=False,
                         max_bytes_per_audio_s=8192))
    assert "the station sent more than 8 KiB per second of the audio it decodes to" in str(
        run.error)
    assert str(run.error).endswith("(max_bytes_per_audio_s)") and run.samples > 4 * TARGET
    with pytest.raises(SourceError, match="max_bytes_per_audio_s must be at least 1024"):
        parse_source(station.url("/radio"), max_bytes_per_audio_s=100)
    with pytest.raises(SourceError, match="'max_bytes_per_audio_s'"):
        parse_source(station.url("/radio"), max_bytes_per_audio_s="lots")


def encoded(tmp_path, name: str, source: list[str], codec: list[str]) -> bytes:
    out = tmp_path / name
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                    "-i", *source, *codec, str(out)], check=True, timeout=60)
    return out.read_bytes()


@pytest.mark.parametrize(("name", "rate", "codec"), [
    ("320k.mp3", 44100, ["-ac", "2", "-c:a", "libmp3lame", "-b:a", "320k"]),
    ("510k.opus", 48000, ["-ac", "2", "-c:a", "libopus", "-b:a", "510k"]),
    ("q10.ogg", 48000, ["-ac", "2", "-c:a", "libvorbis", "-q:a", "10"]),
    ("flac-96k-24.oga", 96000, ["-ac", "2", "-c:a", "flac", "-sample_fmt", "s32"]),
    ("pcm-192k-24.wav", 192000, ["-ac", "2", "-c:a", "pcm_s24le"]),
])
def test_honest_streams_at_their_highest_bitrates_fit_the_bounds(tmp_path, name, rate, codec):
    # Full-scale noise, the hardest to compress, read as fast as it comes (realtime=false):
    # the bound counts audio decoded, not time.
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package ffmpeg) encodes the streams")
    data = encoded(tmp_path, name, [f"anoisesrc=d=6:c=white:r={rate}:a=1.0"], codec)
    server = HostileStation(data)
    try:
        run = Run(HttpSource(server.url("/stream"), reconnect=False, realtime=False))
    finally:
        server.stop()
    assert run.error is None, run.calls
    assert run.samples > 5.5 * TARGET


def stations_daemon(station: HostileStation, streams: dict[str, str], model_path, tmp_path,
                    *run_args: str, source_options: str = ""
                    ) -> tuple[subprocess.Popen, Feed, Path]:
    """``streamtag run`` in a process of its own (as helpers.run_streamtag runs it, from
    outside the source tree) with a station of ``station`` per stream (id: path), and a
    ``Feed`` of what it publishes; its log goes to a file (a pipe nobody reads would not take
    it for long), whose path comes third. ``source_options``: TOML lines for each source."""
    publish = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'[model]\npath = "{model_path}"\ndevice = "cpu"\n\n'
        f'[publish]\nendpoint = "{publish}"\nheartbeat_s = 0.2\n\n'
        f'[control]\nendpoint = "tcp://127.0.0.1:{free_port()}"\n'
        f'token_file = "{tmp_path / "control.token"}"\n\n'
        + "".join(f'[[sources]]\nid = "{sid}"\nspec = "{station.url(path)}"\n'
                  f"{source_options}\n" for sid, path in streams.items()))
    feed = Feed(publish)
    log = tmp_path / "daemon.log"
    with log.open("w") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "streamtag", "run", "--config", str(config), *run_args],
            stdout=subprocess.DEVNULL, stderr=log_file, cwd=tempfile.gettempdir(),
            env={**os.environ, "STREAMTAG_HOME": str(tmp_path / "home")})
    return daemon, feed, log


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_hostile_stations_are_cut_in_a_daemon_and_the_honest_one_plays_on(station, vorbis,
                                                                          model_path,
                                                                          tmp_path):
    # One daemon, three stations: an honest MP3 radio, a chained Ogg stream whose next link
    # brings a 96 MB comment packet, and an MP3 radio that starts padding its audio with zero
    # bytes. All three play until the attacks begin; then each hostile stream is cut with its
    # reason and tries again, the daemon's memory stays where it was, and the honest stream
    # keeps publishing its windows.
    station.attack_after_s = float("inf")  # until go
    station.comment_bytes = 96 << 20
    streams = {"honest": "/radio", "comment": "/ogg-comment", "padded": "/padded"}
    daemon, feed, log = stations_daemon(station, streams, model_path, tmp_path,
                                        source_options="initial_backoff_s = 0.2\n")
    try:
        wait_until(lambda: daemon.poll() is not None or all(feed.count(s) for s in streams),
                   90, "every stream's first windows")
        assert daemon.poll() is None, log.read_text()[-3000:]
        rss, peak = proc_kib(daemon.pid, "VmRSS"), proc_kib(daemon.pid, "VmHWM")
        t_go = time.monotonic()
        station.go.set()

        def reasons(stream: str) -> list[str]:
            return [m.body.error for _, m in feed.of("status", t_go)
                    if m.header.stream == stream and m.body.state == "reconnecting"]

        wait_until(lambda: reasons("comment") and reasons("padded"), 60,
                   "both hostile streams to be cut")
        cut = time.monotonic()
        wait_until(lambda: feed.count("honest", since=cut) >= 8, 30,
                   "the honest stream's windows after the cuts")
        grown_mb = (proc_kib(daemon.pid, "VmRSS") - rss) / 1024
        peak_grown_mb = (proc_kib(daemon.pid, "VmHWM") - peak) / 1024
    finally:
        stop_process(daemon, timeout=10)
        feed.close()
    assert reasons("comment")[0].startswith("an Ogg packet of more than 2048 KiB")
    assert "(max_bytes_per_audio_s)" in reasons("padded")[0]
    assert reasons("honest") == []
    assert feed.longest_pause("honest", t_go, cut) < 2.0  # no pause beyond a second's windows
    assert grown_mb < GROWTH_MB and peak_grown_mb < GROWTH_MB, (grown_mb, peak_grown_mb)
    connections = station.paths().count("/padded")
    assert station.sent["/padded"] < connections * CONNECTION_SLACK + 2 * (1 << 20)


# -- any channel count ------------------------------------------------------------------------

SURROUND_S = 30.0  # more than a test plays: the Ogg link is not repeated


@pytest.fixture(scope="module")
def surround(tmp_path_factory) -> dict[str, tuple[str, bytes, float]]:
    """7.1 streams as ffmpeg's encoders make them (a music-like signal in every channel):
    ADTS AAC and Ogg Opus, as stations send them."""
    root = tmp_path_factory.mktemp("surround")
    x = music_like(SURROUND_S, 48000, seed=5)
    eight = np.stack([x * (0.3 + 0.05 * k) for k in range(8)])
    made = {}
    for name, codec, content_type in (("aac71.aac", "aac", "audio/aac"),
                                      ("opus71.opus", "libopus", "application/ogg")):
        write_audio(root / name, eight, 48000, codec=codec, layout="7.1")
        made[name.split(".")[0]] = (content_type, (root / name).read_bytes(), SURROUND_S)
    # and 64-bit integer PCM, whose samples PyAV cannot give as an array (the stream failed)
    write_audio(root / "s64.wav", eight[:2, :48000 * 8], 48000, codec="pcm_s64le")
    made["s64"] = ("audio/wav", (root / "s64.wav").read_bytes(), 8.0)
    return made


def test_7_1_and_64_bit_stations_play_in_the_source(station, surround):
    # PyAV's plane list of an 8-channel frame reads past FFmpeg's 8 data pointers: the first
    # decoded frame crashed the daemon (SIGSEGV) 0.6 s after such a station started.
    station.loops.update(surround)
    for name in surround:
        run = Run(HttpSource(station.url(f"/loop/{name}"), realtime=False), seconds=30.0,
                  until=lambda run: run.samples >= 4 * TARGET)
        assert run.error is None and run.samples >= 4 * TARGET, (name, run.calls)
        assert [state for state, _, _ in run.calls if state in ("failed", "reconnecting")] == []


# Two worker processes run the same source code as one daemon: slow only, as the default run
# keeps the suite under its time.
@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_7_1_stations_play_in_a_daemon_beside_an_honest_one(station, surround, model_path,
                                                            tmp_path, processes):
    # One daemon (or two worker processes), a 7.1 AAC and a 7.1 Opus station beside an
    # honest MP3 one: each publishes its windows, nothing reconnects, no worker restarts.
    station.loops.update(surround)
    streams = {"honest": "/radio", "aac71": "/loop/aac71", "opus71": "/loop/opus71"}
    daemon, feed, log = stations_daemon(station, streams, model_path, tmp_path,
                                        "--processes", str(processes))
    try:
        wait_until(lambda: daemon.poll() is not None
                   or all(feed.count(s) >= 4 for s in streams), 120,
                   "four windows of every stream")
        assert daemon.poll() is None, log.read_text()[-3000:]
        sessions = feed.sessions_of(streams, 0.0)
    finally:
        stop_process(daemon, timeout=10)
        feed.close()
    states = [(m.header.stream, m.body.state) for _, m in feed.of("status")]
    assert not [s for s in states if s[1] in ("failed", "reconnecting")], states
    assert set(sessions) == set(streams)  # one session each: no worker started again
    assert "restart" not in log.read_text()


# -- declared sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "chunk"), [("/m4a-title", "moov"), ("/wav-list", "LIST")])
def test_a_head_that_declares_a_huge_title_is_refused_before_ffmpeg_gives_memory_for_it(
        station, path, chunk):
    # FFmpeg gives a title's declared size, zeroed, as it reads the title's header: 8 kB of
    # head declaring 1 GB grew the daemon by 1.9 GB (M4A) and 0.96 GB (WAV) per connection.
    report = measure_in_subprocess(station.url(path), 4.0, initial_backoff_s=0.2)
    assert report["reasons"], report
    assert all(r.startswith(f"the stream's head declares a '{chunk}' chunk of 10000000")
               for r in report["reasons"]), report["reasons"]
    assert report["growth_mb"] < GROWTH_MB, report


def honest_heads(tmp_path) -> dict[str, bytes]:
    """Files as stations and encoders write them: M4A (moov first, and a fragmented one),
    WAV, AIFF, CAF."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package ffmpeg) writes the files")
    made = {}
    for name, options in (("a.m4a", ["-c:a", "aac", "-movflags", "+faststart"]),
                          ("frag.m4a", ["-c:a", "aac", "-movflags", "frag_keyframe+empty_moov"]),
                          ("a.wav", ["-c:a", "pcm_s16le"]), ("a.aiff", ["-c:a", "pcm_s16be"]),
                          ("a.caf", ["-c:a", "pcm_s16le"])):
        made[name] = encoded(tmp_path, name, ["sine=d=3", "-metadata", "title=Song"], options)
    return made


def test_honest_heads_walk_through_and_each_kind_is_told_by_its_first_bytes(tmp_path):
    import random

    chooser = random.Random(7)
    for name, data in honest_heads(tmp_path).items():
        kind = DeclaredSizes.kind_of(data[:8])
        assert kind == {"m4a": "mp4", "wav": b"RIFF", "aiff": b"FORM",
                        "caf": b"caff"}[name.split(".")[1]], name
        walker, at = DeclaredSizes(kind, 4 << 20), 0
        while at < len(data):  # in pieces of any size, as the network cuts them
            step = chooser.choice([1, 7, 100, 4096])
            walker.feed(data[at:at + step])
            at += step
    assert DeclaredSizes.kind_of(b"ID3\x04\0\0\0\0") is None


def test_a_chunk_beside_the_audio_of_any_kind_may_not_declare_more_than_the_bound():
    import struct

    riff = (b"RIFF" + struct.pack("<I", 100) + b"WAVE" + b"bext" + struct.pack("<I", 5 << 20))
    aiff = (b"FORM" + struct.pack(">I", 100) + b"AIFF" + b"COMT" + struct.pack(">I", 5 << 20))
    caf = b"caff\0\x01\0\0" + b"info" + struct.pack(">q", 5 << 20)
    mp4 = struct.pack(">I4s", 16, b"ftyp") + b"M4A \0\0\0\0" + struct.pack(">I4sQ", 1, b"moov",
                                                                         5 << 20)
    for head, name in ((riff, "bext"), (aiff, "COMT"), (caf, "info"), (mp4, "moov")):
        walker = DeclaredSizes(DeclaredSizes.kind_of(head[:8]), 4 << 20)
        with pytest.raises(ByteLimitError, match=f"declares a '{name}' chunk of 52428"):
            for byte in head:  # a byte at a time: refused once its size has arrived
                walker.feed(bytes([byte]))
    # the audio's own chunk may be as large as it likes, and ends the walk
    live = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"data"
            + struct.pack("<I", 0xFFFFFFFF) + b"LIST" + struct.pack("<I", 1 << 30))
    DeclaredSizes(b"RIFF", 4 << 20).feed(live)


# -- HTTP's own bytes and reads ---------------------------------------------------------------


def connection_reasons(run: Run) -> list[str]:
    return [error for state, error, _ in run.calls if state == "reconnecting"]


@pytest.mark.parametrize(("path", "reason"), [
    ("/continue-flood", "the station sent more than 8 interim answers (100 Continue) and no "
                        "answer"),
    ("/trailer-flood", "the station's answer ended with a trailer of more than 64 lines"),
    ("/chunk-ext", "the station sent more than 2048 KiB per second of the audio it decodes "
                   "to, 4 MiB of leeway spent: padding, metadata or HTTP framing between the "
                   "audio (max_bytes_per_audio_s)"),
    ("/tiny-chunks", "the station sends its audio in pieces too small to read ("),
])
def test_http_framing_counts_against_the_byte_budget_and_its_loops_are_bounded(station, path,
                                                                               reason):
    # Before: "100 Continue" or a trailer for ever kept a core busy for as long as the read
    # timeout allowed (a trailer: 44-62 GB read in 40 s); chunk extensions were never counted
    # (60 MB per second of audio); a body in 1-byte chunks cost a pass through Python a byte.
    run = Run(HttpSource(station.url(path), initial_backoff_s=0.1, max_backoff_s=0.2,
                         realtime=False), seconds=30.0,
              until=lambda run: len(connection_reasons(run)) >= 2)
    reasons = connection_reasons(run)
    assert len(reasons) >= 2 and all(r.startswith(reason) for r in reasons), run.calls
    connections = station.paths().count(path)
    # what each connection read: its leeway and what its audio allowed (3 s of audio at most
    # before each attack), and what the sockets held on both sides
    assert station.sent[path] < connections * (CONNECTION_SLACK + 3 * MAX_BYTES_PER_AUDIO_S)


def test_an_honest_chunked_station_plays_without_a_cut(station):
    run = Run(HttpSource(station.url("/chunked")), seconds=30.0,
              until=lambda run: run.samples >= 6 * TARGET)
    assert run.error is None and run.samples >= 6 * TARGET
    assert connection_reasons(run) == [], run.calls
