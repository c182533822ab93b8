"""Radio monitoring: titles placed on the audio timeline and per-track summaries.

A small HTTP server of the test's own serves a known MP3 byte stream with ICY metadata blocks at
known byte offsets, so the audio time of every title change is known; files carry their own
title tags; the track messages' means are checked against the scores published for the same
windows. Real daemon, real ZeroMQ, real decoding.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from support.helpers import (
    TAGS,
    assert_no_gaps,
    collect,
    make_config,
    started,
    stop_process,
    wait_until,
)

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.commands.listen import run_listen
from streamtag.daemon.broadcast import track_body
from streamtag.daemon.config import SourceConfig, config_from_dict
from streamtag.engine.tagging import format_text, tag_files, track_fields
from streamtag.engine.tracks import TrackSummarizer
from streamtag.errors import ConfigError
from streamtag.model.inference import InferenceModel
from streamtag.sources import HttpSource
from streamtag.sources.http import stream_format
from streamtag.wire import protocol

MP3_RATE = 44100
MP3_FRAME = 1152  # samples per MPEG-1 Layer III frame
BITRATE = 128000  # CBR: 16000 bytes per second of audio
METAINT = 3000


def encode_mp3(x: np.ndarray, path: Path) -> bytes:
    """A bare CBR MP3 byte stream (no Xing/LAME frame, no ID3), as radio servers send."""
    with av.open(str(path), "w", format="mp3",
                 options={"write_xing": "0", "id3v2_version": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=MP3_RATE, layout="mono")
        stream.bit_rate = BITRATE
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        for i in range(0, len(pcm), 4608):
            frame = av.AudioFrame.from_ndarray(pcm[None, i:i + 4608], format="s16",
                                               layout="mono")
            frame.sample_rate = MP3_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.read_bytes()


def icy_block(text: str) -> bytes:
    raw = text.encode("utf-8")
    units = -(-len(raw) // 16)
    return bytes([units]) + raw.ljust(units * 16, b"\0")


class IcyServer:
    """Serves ``audio`` once at ``bytes_per_s`` with ``icy-metaint`` when the client asks for
    metadata: block i (after audio byte (i+1) * metaint) is ``titles[i]`` or empty (with a list
    of such dicts, the n-th request gets the n-th). Optionally
    in chunked transfer encoding (in pieces of ``chunk`` bytes), behind a redirect from
    ``/old.mp3``, over TLS, or with SHOUTcast v1's status line ``ICY 200 OK``."""

    def __init__(self, audio: bytes, titles: dict[int, str] | list[dict[int, str]],
                 bytes_per_s: float, *,
                 chunk: int | None = None, tls: ssl.SSLContext | None = None,
                 icy_status: bool = False, hold_after: int | None = None) -> None:
        self.audio, self.titles, self.bytes_per_s = audio, titles, bytes_per_s
        self.release = threading.Event()  # with hold_after: sending stops there until set
        self.held_too_long = False  # nobody released the hold within 10 s
        self.asked_for_metadata: list[bool] = []
        self.paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if chunk else "HTTP/1.0"

            def do_GET(self):
                owner.paths.append(self.path)
                if self.path == "/old.mp3":
                    self.send_response(302)
                    self.send_header("Location", "/live.mp3")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                icy = self.headers.get("Icy-MetaData") == "1"
                owner.asked_for_metadata.append(icy)
                if icy_status:  # SHOUTcast v1's status line
                    self._headers_buffer = [b"ICY 200 OK\r\n"]
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("icy-name", "test radio")
                if icy:
                    self.send_header("icy-metaint", str(METAINT))
                if chunk:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                t0, sent, body = time.monotonic(), 0, bytearray()
                for i, start in enumerate(range(0, len(owner.audio), METAINT)):
                    piece = owner.audio[start:start + METAINT]
                    if icy and len(piece) == METAINT:
                        titles = owner.titles
                        if isinstance(titles, list):  # one dict per request, then the last
                            titles = titles[min(len(owner.asked_for_metadata), len(titles)) - 1]
                        title = titles.get(i)
                        piece += icy_block(f"StreamTitle='{title}';") if title else b"\0"
                    if chunk:  # chunks cut across audio and blocks alike
                        body += piece
                        piece = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (
                            body[j:j + chunk] for j in range(0, len(body), chunk)))
                        body.clear()
                    try:
                        self.wfile.write(piece)
                    except OSError:
                        return
                    sent += METAINT
                    if hold_after is not None and sent >= hold_after and not owner.release.is_set():
                        owner.held_too_long = not owner.release.wait(10)
                        owner.release.set()
                    time.sleep(max(0.0, t0 + sent / owner.bytes_per_s - time.monotonic()))
                if chunk:
                    self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/live.mp3", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


PIECES = ("Piece One", "Pièce 2; it's \"two\"", "Piece Three")
TITLE_BLOCKS = {0: PIECES[0], 10: PIECES[1], 21: PIECES[2]}  # blocks 0, 10 and 21


@pytest.fixture(scope="module")
def radio_mp3(tmp_path_factory) -> bytes:
    # Three pieces of 2 s, each its own sound, so the tags differ from piece to piece.
    x = np.concatenate([music_like(2.0, MP3_RATE, seed=s) * g
                        for s, g in ((3, 1.0), (4, 0.2), (5, 0.7))])
    return encode_mp3(x, tmp_path_factory.mktemp("radio") / "radio.mp3")


def windows_of(scores, start_sample: int, end_sample: int) -> list:
    """The scores messages whose window ends inside the track (the documented rule)."""
    return [m.body for m in scores if start_sample < m.body.end_sample <= end_sample]


def assert_summarises(track, scores) -> None:
    """The track's means, shares and active tags are those of its published windows (a
    window that is not music counts for no tag: docs/protocol.md, ``active_share``)."""
    windows = windows_of(scores, track.start_sample, track.end_sample)
    assert track.windows == len(windows) > 0
    assert track.tags == windows[0].tags
    np.testing.assert_allclose(track.mean_raw, np.mean([w.raw for w in windows], axis=0),
                               atol=2e-6)
    np.testing.assert_allclose(track.mean_smoothed,
                               np.mean([w.smoothed for w in windows], axis=0), atol=2e-6)
    share = [np.mean([tag in w.active and w.content in (None, "music") for w in windows])
             for tag in track.tags]
    np.testing.assert_allclose(track.active_share, share)
    assert set(track.active) == {t for t, s in zip(track.tags, share, strict=True) if s > 0.5}


def test_title_changes_land_at_their_metadata_blocks_and_each_piece_gets_a_track(
        model_path, tmp_path, radio_mp3):
    server = IcyServer(radio_mp3, TITLE_BLOCKS, bytes_per_s=4 * BITRATE / 8)
    daemon, sub = started(make_config(model_path, tmp_path))
    try:
        daemon.add_source(SourceConfig("radio", server.url(), {"reconnect": False}))
        got = [m for m in collect(sub, {"radio"}) if m.header.stream == "radio"]
    finally:
        daemon.stop()
        sub.close()
        server.stop()
    assert server.asked_for_metadata == [True]
    assert_no_gaps(got)
    rate = daemon.model.sample_rate
    scores = [m for m in got if m.msg_type == "scores"]
    tracks = [m.body for m in got if m.msg_type == "track"]
    assert [t.title for t in tracks] == list(PIECES)
    assert [t.reason for t in tracks] == ["title_change", "title_change", "end"]
    # The first block's title names the stream from its start; the others start where their
    # block sits: the first sample decoded after it, within one MP3 frame of its byte time.
    assert tracks[0].start_sample == 0
    for track, block in zip(tracks[1:], (10, 21), strict=True):
        block_s = (block + 1) * METAINT / (BITRATE / 8)
        assert 0 <= track.start_s - block_s <= MP3_FRAME / MP3_RATE + 1 / rate, track
    for before, after in zip(tracks, tracks[1:], strict=False):
        assert before.end_sample == after.start_sample  # tracks tile the stream
    assert tracks[-1].end_sample >= scores[-1].body.end_sample
    assert sum(t.windows for t in tracks) == len(scores)  # every window counted once
    for track in tracks:
        assert_summarises(track, scores)
        assert track.end_s == pytest.approx(track.end_sample / rate)
    # The pieces sound different, so their summaries do too.
    assert not np.allclose(tracks[0].mean_raw, tracks[1].mean_raw, atol=1e-3)
    # Now playing: each title was published in a status as it arrived, before its track's
    # summary (which waits for the windows); the final status still names the last title.
    statuses = [m for m in got if m.msg_type == "status"]
    titles = [m.body.title for m in statuses if m.body.title]
    assert [t for i, t in enumerate(titles) if i == 0 or t != titles[i - 1]] == list(PIECES)
    first_status = next(m for m in statuses if m.body.title == PIECES[1])
    track_message = next(m for m in got if m.msg_type == "track")
    assert first_status.sent_at <= track_message.sent_at
    assert statuses[-1].body.state == "ended" and statuses[-1].body.title == PIECES[2]


def tagged_flac(path: Path, seconds: float = 3.0) -> Path:
    """A FLAC file whose tags say title "Sóng", artist "Ärtist"."""
    x = (music_like(seconds, 44100, seed=9) * 32767).astype(np.int16)
    with av.open(str(path), "w") as container:
        container.metadata.update({"title": "Sóng", "artist": "Ärtist"})
        stream = container.add_stream("flac", rate=44100, layout="mono")
        for i in range(0, len(x), 4096):
            frame = av.AudioFrame.from_ndarray(x[None, i:i + 4096], format="s16",
                                               layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed; install with: apt-get install openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("how", ["redirect", "chunked", "https", "shoutcast"])
def test_titles_arrive_through_redirects_chunked_responses_https_and_shoutcast(
        how, radio_mp3, tmp_path, monkeypatch):
    tls, path, scheme = None, "/live.mp3", "http"
    if how == "https":
        cert, key = self_signed(tmp_path)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this one only
        scheme = "https"
    elif how == "redirect":
        path = "/old.mp3"
    server = IcyServer(radio_mp3, TITLE_BLOCKS, bytes_per_s=1e9,
                       chunk=1000 if how == "chunked" else None, tls=tls,
                       icy_status=how == "shoutcast")
    calls = []
    try:
        source = HttpSource(server.url(path, scheme), reconnect=False)
        source.open(16000, lambda state, error, extra: calls.append((state, error, extra)))
        samples = sum(c.samples.size for c in source.chunks(threading.Event()))
    finally:
        server.stop()
    assert [c[0] for c in calls][-1] == "ended", calls
    assert samples == pytest.approx(6.0 * 16000, abs=2 * MP3_FRAME)
    titled = [(c[2]["title"], c[2]["title_sample"]) for c in calls if "title" in c[2]]
    assert [t for t, _ in titled] == list(PIECES)
    assert titled[0][1] == 0
    for (_, sample), block in zip(titled[1:], (10, 21), strict=True):
        block_s = (block + 1) * METAINT / (BITRATE / 8)
        assert 0 <= sample / 16000 - block_s <= MP3_FRAME / MP3_RATE + 1 / 16000
    assert all(c[2].get("station") == "test radio" for c in calls if "title" in c[2])
    if how == "redirect":
        assert server.paths == ["/old.mp3", "/live.mp3"]


def test_after_a_reconnect_a_new_title_starts_where_the_new_connection_does(radio_mp3):
    server = IcyServer(radio_mp3, [{0: "Before"}, {0: "After", 10: "Later"}], bytes_per_s=1e9)
    calls, stop, samples = [], threading.Event(), 0
    try:
        source = HttpSource(server.url(), initial_backoff_s=0.05, max_backoff_s=0.1)
        source.open(16000, lambda state, error, extra: calls.append((state, error, extra)))
        for chunk in source.chunks(stop):
            samples = chunk.sample_index + chunk.samples.size
            if any(c[2].get("title") == "Later" for c in calls):
                stop.set()
    finally:
        server.stop()
    titled = [(c[2]["title"], c[2]["title_sample"]) for c in calls if "title" in c[2]]
    reconnected = [c for c in calls if c[0] == "reconnecting"]
    assert reconnected and "the server ended the stream" in reconnected[0][1]
    assert [t for t, _ in titled] == ["Before", "After", "Later"]
    first_connection = titled[1][1]  # where the second connection's audio starts
    assert titled[0][1] == 0
    assert 5.9 * 16000 < first_connection < 6.2 * 16000  # the whole 6 s of the first
    block_s = 11 * METAINT / (BITRATE / 8)
    assert 0 <= (titled[2][1] - first_connection) / 16000 - block_s <= (
        MP3_FRAME / MP3_RATE + 1 / 16000)
    assert samples > titled[2][1]


def test_a_stream_joined_mid_frame_plays_without_waiting_for_seconds_of_data(radio_mp3):
    # A radio server's burst starts anywhere in an MP3 frame; FFmpeg's probe alone would want
    # some 200 frames (5 s of a live stream) before it decodes. The Content-Type says MP3.
    server = IcyServer(radio_mp3[417 * 3 + 100:], {}, bytes_per_s=1e9,
                       hold_after=16000)  # one second of audio
    chunks = []
    try:
        source = HttpSource(server.url(), reconnect=False)
        source.open(16000)
        for chunk in source.chunks(threading.Event()):
            chunks.append((chunk, server.held_too_long))
            break  # the first audio, while the server holds back all but its first second
    finally:
        server.release.set()
        server.stop()
    assert chunks and not chunks[0][1], "the first audio came only once the server sent more"
    assert stream_format("audio/mpeg; charset=x", b"\x12\x34\xff\xfb") == "mp3"
    assert stream_format("audio/aacp", b"\xff\xf1\x50\x80") == "aac"
    assert stream_format("audio/mpeg", b"RIFF") is None  # a header of its own: FFmpeg probes
    assert stream_format("application/octet-stream", b"\xff\xfb\x90\x64") is None


def test_a_file_is_one_track_named_by_its_tags_or_by_the_config(model_path, tmp_path):
    path = tagged_flac(tmp_path / "song.flac")
    daemon, sub = started(make_config(model_path, tmp_path))
    try:
        daemon.add_source(SourceConfig("tagged", f"file:{path}"))
        daemon.add_source(SourceConfig("named", f"file:{path}", title="Configured"))
        got = collect(sub, {"tagged", "named"})
        status = daemon.status()["streams"]
    finally:
        daemon.stop()
        sub.close()
    for stream, title in (("tagged", "Ärtist - Sóng"), ("named", "Configured")):
        mine = [m for m in got if m.header.stream == stream]
        tracks = [m.body for m in mine if m.msg_type == "track"]
        assert [(t.title, t.reason, t.start_sample) for t in tracks] == [(title, "end", 0)]
        scores = [m for m in mine if m.msg_type == "scores"]
        assert_summarises(tracks[0], scores)
        assert tracks[0].end_s == pytest.approx(3.0, abs=0.01)
        assert tracks[0].model.name == "tiny" and tracks[0].tags == TAGS
        assert [m.body.title for m in mine if m.msg_type == "status"][-1] == title
        assert status[stream]["tracks"][-1]["title"] == title  # the control reply lists it
    # streamtag tag summarises the file as the daemon's track message does.
    model = InferenceModel.load(model_path, device="cpu")
    (offline,) = tag_files([path], model, smoothing=daemon.config.smoothing)
    daemon_track = next(m.body for m in got if m.msg_type == "track"
                        and m.header.stream == "tagged")
    assert offline.title == offline.track["title"] == "Ärtist - Sóng"
    for key in ("windows", "start_sample", "end_sample", "tags", "active", "reason"):
        theirs = getattr(daemon_track, key)
        assert offline.track[key] == (list(theirs) if isinstance(theirs, tuple) else theirs), key
    for key in ("mean_raw", "mean_smoothed", "active_share"):
        np.testing.assert_allclose(offline.track[key], getattr(daemon_track, key), atol=2e-6)
    assert list(offline.mean_scores.values()) == pytest.approx(offline.track["mean_raw"],
                                                               abs=2e-6)
    assert 'song.flac: "Ärtist - Sóng" 3.0 s' in format_text([offline])


def test_listen_tracks_shows_the_current_titles_and_the_last_tracks(model_path, tmp_path):
    path = tagged_flac(tmp_path / "song.flac", seconds=1.5)
    daemon, sub = started(make_config(model_path, tmp_path))
    out = io.StringIO()
    try:
        daemon.add_source(SourceConfig("early", f"file:{path}", title="Before"))
        collect(sub, {"early"})
        # A listener that starts now learns what played from the control socket, then follows.
        listener = threading.Thread(target=run_listen, kwargs={
            "endpoint": daemon.publisher.endpoint, "tracks": True, "out": out, "count": 4,
            "duration": 30.0, "control": daemon.control.endpoint})
        listener.start()
        wait_until(lambda: "now playing" in out.getvalue(), 10, "the listener's first lines")
        time.sleep(0.3)  # the subscription reaches the daemon
        daemon.add_source(SourceConfig("song", f"file:{path}"))
        listener.join(30)
    finally:
        daemon.stop()
        sub.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert re.match(r"earlier\s+early\s+played \"Before\"  0:00.0-0:01.5  \d+ windows", lines[0])
    assert re.match(r"now\s+early\s+now playing \"Before\"$", lines[1])
    assert re.search(r"song\s+now playing \"Ärtist - Sóng\"$", lines[2])
    assert re.search(r"song\s+played \"Ärtist - Sóng\"  0:00.0-0:01.5  \d+ windows  mostly: ",
                     lines[3])


def test_the_title_option_is_a_non_empty_string():
    config = config_from_dict({"sources": [{"id": "a", "spec": "x.mp3", "title": "T",
                                            "realtime": True}]})
    assert config.sources[0].title == "T" and config.sources[0].options == {"realtime": True}
    with pytest.raises(ConfigError, match="sources.title of 'a' must be a non-empty string"):
        config_from_dict({"sources": [{"id": "a", "spec": "x.mp3", "title": ""}]})
    with pytest.raises(ConfigError, match="sources.title"):
        config_from_dict({"sources": [{"id": "a", "spec": "x.mp3", "title": 3}]})


# -- the track rule on its own -----------------------------------------------------------------

def window(summarizer: TrackSummarizer, end: int, raw=(0.2, 0.8), active=("b",)):
    return summarizer.add_window(end, ("a", "b"), raw, raw, active, "m", "h")


def test_windows_belong_to_the_track_their_end_falls_in():
    s = TrackSummarizer(100.0, "first", started_at=10.0)
    assert window(s, 50) == []
    s.change_title("second", 120, at=11.0)
    assert s.title == "second"
    assert window(s, 100) == []
    assert window(s, 120) == []  # ends exactly at the change: still the first track's
    closed = window(s, 150, raw=(1.0, 0.0), active=())  # the first window past the change
    assert [(t.title, t.reason, t.start_sample, t.end_sample, t.windows) for t in closed] == [
        ("first", "title_change", 0, 120, 3)]
    assert closed[0].mean_raw == pytest.approx((0.2, 0.8))
    assert closed[0].active_share == (0.0, 1.0) and closed[0].active == ("b",)
    assert (closed[0].started_at, closed[0].ended_at) == (10.0, 11.0)
    last = s.end(170, at=12.0)
    assert [(t.title, t.reason, t.start_sample, t.end_sample, t.windows) for t in last] == [
        ("second", "end", 120, 170, 1)]
    assert last[0].mean_raw == (1.0, 0.0) and last[0].active == ()


def test_the_first_title_names_the_first_track_and_short_tracks_have_no_means():
    s = TrackSummarizer(100.0)
    s.change_title("named", 0)
    s.change_title("short", 40)
    s.change_title("next", 60)  # before any window reaches either
    closed = window(s, 80)
    assert [(t.title, t.start_sample, t.end_sample, t.windows) for t in closed] == [
        ("named", 0, 40, 0), ("short", 40, 60, 0)]
    assert closed[0].tags == closed[0].mean_raw == closed[0].active == ()
    s.change_title("after the end", 500)
    assert [(t.title, t.end_sample) for t in s.end(90)] == [("next", 90)]


def test_a_track_carries_whether_it_was_heard_from_its_start_where_its_place_held():
    s = TrackSummarizer(100.0)
    s.change_title("opened midway", 0, heard_from_start=False)  # names the open track
    s.change_title("next link", 60, heard_from_start=True)
    closed = window(s, 80)
    assert [(t.title, t.heard_from_start) for t in closed] == [("opened midway", False)]
    # a change placed before a window already counted moves after it: where its track
    # began is then not known
    s.change_title("late", 70, heard_from_start=True)
    assert [(t.title, t.heard_from_start) for t in window(s, 90)] == [("next link", True)]
    assert [(t.title, t.start_sample, t.heard_from_start) for t in s.end(100)] == [
        ("late", 80, None)]

def test_a_stream_that_ended_before_any_audio_has_no_track():
    # a source that failed before any audio came published a track of 0 s and no windows
    assert TrackSummarizer(100.0, title="never heard").end(0) == []
    # one that ended right after a title change: the tracks before it, none of no length
    s = TrackSummarizer(100.0)
    window(s, 50)
    s.change_title("too late", 50)
    assert [(t.title, t.start_sample, t.end_sample) for t in s.end(50)] == [(None, 0, 50)]


def test_the_engine_s_track_rules_are_the_wire_s():
    # The daemon rounds the means for the wire, and `streamtag tag` rounds them alike.
    s = TrackSummarizer(100.0, "one", started_at=10.0)
    for end in (50, 100, 150):
        s.add_window(end, ("a", "b"), (1 / 3, 0.123456789), (2 / 3, 0.5), ("a",), "m", "h")
    (track,) = s.end(160, at=12.0)
    assert track.mean_raw == (1 / 3, 0.123456789)  # the engine keeps the exact means
    body = track_body(track)
    assert body.mean_raw == (0.333333, 0.123457) and body.mean_smoothed == (0.666667, 0.5)
    assert body.active == ("a",) and body.model == protocol.ModelRef("m", "h")
    assert track_fields(track) == body.to_dict()


# -- a real Icecast, fed by ffmpeg from a playlist --------------------------------------------


class TapProxy:
    """A TCP relay between the daemon and Icecast that keeps every byte sent to the daemon, so
    the test knows where the metadata blocks sat in what the daemon read."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()  # one connection: the daemon's
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
        self._pump(upstream, client, self.received)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if keep is not None:
                    keep += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


def icy_blocks(raw: bytes) -> tuple[bytes, list[tuple[int, str]]]:
    """The audio bytes of a recorded ICY response and its titles with their audio offsets;
    written apart from streamtag's parser: headers, then metaint audio bytes and a block."""
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    metaint = int(re.search(rb"(?im)^icy-metaint:\s*(\d+)", head).group(1))
    audio, titles, at = bytearray(), [], 0
    while at < len(body):
        audio += body[at:at + metaint]
        at += metaint
        if at >= len(body):
            break
        size = body[at] * 16
        text = body[at + 1:at + 1 + size].rstrip(b"\0").decode("utf-8")
        at += 1 + size
        if text:
            titles.append((len(audio), re.match(r"StreamTitle='(.*)';", text).group(1)))
    return bytes(audio), titles


def first_sample_after(audio: bytes, offset: int, rate: float) -> int:
    """The stream sample (at `rate`) that the first MP3 frame starting at or after `offset`
    begins with, decoding the recorded audio on its own."""
    decoded_s = 0.0
    with av.open(io.BytesIO(audio), format="mp3") as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            if packet.pos is not None and packet.pos >= offset:
                break
            for frame in stream.decode(packet):
                decoded_s += frame.samples / frame.sample_rate
    return round(decoded_s * rate)


ICECAST_PIECES = ("First Piece", "Second Piece", "Third Piece")
# Only the middle piece's length is checked: the first needs the daemon connected before the
# second title, the last a few windows of the test model.
PIECES_S = (1.5, 2.5, 1.0)


def test_icecast_fed_by_ffmpeg_titles_and_tracks(model_path, tmp_path):
    from support.servers import icecast_server

    playlist = ["ffconcat version 1.0"]
    for i, seconds in enumerate(PIECES_S):
        path = tmp_path / f"piece{i}.flac"
        write_audio(path, music_like(seconds, 44100, seed=20 + i) * (1.0, 0.15, 0.6)[i], 44100)
        playlist.append(f"file '{path}'")
    (tmp_path / "playlist.txt").write_text("\n".join(playlist) + "\n")
    starts = np.cumsum((0.0, *PIECES_S[:-1]))
    # the daemon first: once the feeder plays, the first piece is short
    daemon, sub = started(make_config(model_path, tmp_path))
    with contextlib.ExitStack() as stack:
        stack.callback(sub.close)
        stack.callback(daemon.stop)
        icecast, log = stack.enter_context(icecast_server())
        # ffmpeg plays the playlist in real time; as each piece starts (its progress report
        # says so), the test announces its title to Icecast, as a playout system would.
        feeder = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-f", "concat",
             "-safe", "0", "-i", str(tmp_path / "playlist.txt"), "-c:a", "libmp3lame",
             "-b:a", "128k", "-content_type", "audio/mpeg", "-ice_name", "streamtag test",
             "-progress", "pipe:1", "-stats_period", "0.05", "-f", "mp3",
             f"icecast://source:{icecast.password}@127.0.0.1:{icecast.port}{icecast.mount}"],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True)
        proxy = None
        try:
            icecast.wait_live(10)
            icecast.admin("metadata", mode="updinfo", song=ICECAST_PIECES[0])
            proxy = TapProxy(icecast.port)
            daemon.add_source(SourceConfig(
                "radio", f"http://127.0.0.1:{proxy.port}{icecast.mount}", {"reconnect": False}))
            announced = 1
            for line in feeder.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.isdigit() and announced < len(ICECAST_PIECES):
                    if int(value) / 1e6 >= starts[announced]:
                        icecast.admin("metadata", mode="updinfo", song=ICECAST_PIECES[announced])
                        announced += 1
            feeder.wait(10)
            # The mount ends with its feeder; the daemon's stream ends after the last bytes.
            got = [m for m in collect(sub, {"radio"}, timeout_s=20) if m.header.stream == "radio"]
        finally:
            stop_process(feeder)
            feeder.stdout.close()
            if proxy is not None:
                proxy.close()
    assert announced == len(ICECAST_PIECES)
    rate = daemon.model.sample_rate
    scores = [m for m in got if m.msg_type == "scores"]
    tracks = [m.body for m in got if m.msg_type == "track"]
    assert [t.title for t in tracks] == list(ICECAST_PIECES)
    assert [t.reason for t in tracks] == ["title_change", "title_change", "end"]
    audio, titles = icy_blocks(proxy.received)
    assert [t for _, t in titles] == list(ICECAST_PIECES)
    for track, (offset, _) in zip(tracks[1:], titles[1:], strict=True):
        expected = first_sample_after(audio, offset, rate)
        assert abs(track.start_sample - expected) <= MP3_FRAME * rate / MP3_RATE, (
            track, expected)
    # The announcements followed ffmpeg's clock: one piece between two title changes.
    assert tracks[1].end_s - tracks[1].start_s == pytest.approx(PIECES_S[1], abs=0.75)
    assert sum(t.windows for t in tracks) == len(scores)
    for track in tracks:
        assert_summarises(track, scores)
