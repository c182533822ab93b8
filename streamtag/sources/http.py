"""Network streams: internet radio, Icecast/SHOUTcast mounts and plain HTTP(S) audio, read with
the standard library's HTTP client and decoded by PyAV, reconnecting with exponential backoff.

Audio time across reconnects: sample indices keep counting the audio actually received; the
time the stream was down is not filled with silence, so after a reconnect ``sample_index`` is
contiguous with the last chunk before it although wall-clock time jumped. Consumers that need
wall-clock alignment use ``AudioChunk.arrival``.

Stream titles: the source asks for ICY metadata (``Icy-MetaData: 1``) and, when the server
sends ``icy-metaint``, takes the metadata blocks out of the byte stream itself (sources/icy.py)
before PyAV sees the audio. FFmpeg's own ICY support cannot serve here: PyAV shows a container's
metadata only as it was when the container opened. Each block's place is its audio byte offset;
the demuxer gives every packet its byte position, so a title is placed at the first sample
decoded from the first packet that starts at or after its block (exact to one decoder frame).
Each new title is reported at once as a "running" status with ``title``, ``title_sample`` (that
sample, in the consumer's stream) and ``title_at`` (wall-clock time the block arrived). The
title in a connection's first block names the audio from the connection's start: ICY says
nothing about the bytes before the first block. A stream without ICY metadata reports the
title tag of its container, if any, once per connection.
"""

from __future__ import annotations

import base64
import http.client
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from urllib.parse import unquote, urlsplit, urlunsplit

from streamtag.audio.files import mono_blocks
from streamtag.backoff import Backoff
from streamtag.errors import SourceError
from streamtag.sources.base import AudioChunk, Source
from streamtag.sources.icy import IcyBlock, IcyReader, parse_metaint

# Keys a container's metadata may hold a stream title under (a stream without ICY metadata).
TITLE_KEYS = ("StreamTitle", "icy-title", "title")
# Bytes per network read, and PyAV's buffer: small, so a title is placed soon after it arrives.
READ_SIZE = 8192
BLOCK_S = 0.2  # decoded audio handed on in blocks of at least this much (the last may be less)
# Demuxers for the Content-Types of headerless streams. FFmpeg's probe cannot see the type,
# and on an MP3 stream joined mid-frame (as a radio server's burst starts) it wants some 200
# frames, five seconds of a live stream, before it is sure. Streams that begin with a header
# of their own (HEADER_MAGIC) are left to the probe, whatever their Content-Type says.
FORMAT_BY_TYPE = {"audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/mpeg3": "mp3",
                  "audio/x-mpeg": "mp3", "audio/aac": "aac", "audio/aacp": "aac",
                  "audio/x-aac": "aac"}
# How much audio FFmpeg reads to learn a stream's parameters before the first packet: its
# default (5 s) would be seconds of waiting on a live stream; a few frames tell all.
ANALYZE_US = "250000"
HEADER_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM", b"\x1aE\xdf\xa3", b"caff")


class _IcyResponse(http.client.HTTPResponse):
    """A response that also takes SHOUTcast v1's status line, ``ICY 200 OK``, as HTTP/1.0."""

    def _read_status(self):
        if self.fp.peek(4)[:4] != b"ICY ":
            return super()._read_status()
        words = self.fp.readline(1024).decode("latin-1").split(None, 2)
        if len(words) < 2 or not words[1].isdigit():
            raise http.client.BadStatusLine(" ".join(words))
        return "HTTP/1.0", int(words[1]), words[2].strip() if len(words) > 2 else ""


class _IcyConnection(http.client.HTTPConnection):
    response_class = _IcyResponse


class _IcyTlsConnection(http.client.HTTPSConnection):
    response_class = _IcyResponse


class _HttpHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_IcyConnection, req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_IcyTlsConnection, req)


# Redirects, HTTPS (certificates checked against the system's authorities) and chunked
# transfer encoding as urllib does them; only the connections differ.
_OPENER = urllib.request.build_opener(_HttpHandler, _HttpsHandler)


def stream_format(content_type: str | None, head: bytes) -> str | None:
    """The demuxer to use for a stream of this Content-Type that starts with ``head``; None
    lets FFmpeg probe."""
    if head.startswith(HEADER_MAGIC) or head[4:8] == b"ftyp":  # ftyp: MP4/M4A
        return None
    kind = (content_type or "").split(";")[0].strip().lower()
    return FORMAT_BY_TYPE.get(kind)


def strip_credentials(url: str) -> str:
    """The URL without ``user:password@``, for logs and status messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class HttpSource(Source):
    """Reads an audio URL; on error or end of stream reconnects after a backoff that starts at
    ``initial_backoff_s``, doubles on each attempt that brings no audio and is capped at
    ``max_backoff_s``. ``max_reconnects`` limits consecutive attempts without audio (None:
    forever); ``reconnect=False`` ends (clean end) or fails (error) on the first loss.

    ``stop`` is honoured between packets and during backoff waits; a server that stalls
    mid-read is given up on after ``read_timeout_s``.
    """

    kind = "http"
    live = True

    def __init__(self, url: str, *, reconnect: bool = True, max_backoff_s: float = 30.0,
                 initial_backoff_s: float = 0.5, read_timeout_s: float = 10.0,
                 max_reconnects: int | None = None) -> None:
        super().__init__()
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise SourceError(f"{strip_credentials(url)}: not an http(s) URL")
        # Checked (and the back-off state built) per iteration of chunks(); here to fail early.
        self.backoff_options = dict(reconnect=reconnect, initial_backoff_s=initial_backoff_s,
                                     max_backoff_s=max_backoff_s, max_reconnects=max_reconnects)
        Backoff(strip_credentials(url), **self.backoff_options)
        if not read_timeout_s > 0:
            raise SourceError(f"{strip_credentials(url)}: read_timeout_s must be > 0 seconds, "
                              f"got {read_timeout_s!r}")
        self.url = url
        self.description = strip_credentials(url)
        self.read_timeout_s = float(read_timeout_s)
        self.title: str | None = None
        self.station: str | None = None
        self.metaint: int | None = None  # the last connection's icy-metaint, None without ICY

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        import av

        self._require_open()
        backoff = Backoff(self.description, **self.backoff_options)
        while not stop.is_set():
            got_audio, error = False, None
            try:
                for chunk in self._connection(stop):
                    got_audio = True
                    yield chunk
            except SourceError as exc:
                self._status("failed", str(exc))
                raise
            except (av.error.FFmpegError, OSError, http.client.HTTPException) as exc:
                error = self._reason(exc)
            if stop.is_set():
                break
            tail = self._flush()  # the next connection's audio is not continuous with this
            if tail is not None:
                yield tail
            reason = error or "the server ended the stream"
            if got_audio:
                backoff.reset()
            if backoff.exhausted():
                if error is None and not backoff.reconnect:
                    break
                message = f"{self.description}: {reason}"
                if backoff.reconnect:
                    message += f" (gave up after {backoff.attempts} reconnects without audio)"
                self._status("failed", message)
                raise SourceError(message)
            wait_s = backoff.next_wait_s()
            self.counters["reconnects"] += 1
            self._status("reconnecting", reason, reconnects=self.counters["reconnects"],
                         backoff_s=wait_s)
            with self._waiting():
                if stop.wait(wait_s):
                    break
        yield from self._end()

    def _reason(self, exc: Exception) -> str:
        """Why a connection was lost, in one line without the URL's credentials."""
        if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None),
                                                       TimeoutError):
            return f"no data for {self.read_timeout_s:g} s (read_timeout_s)"
        return f"{type(exc).__name__}: {exc}".replace(self.url, self.description)

    def _request(self) -> urllib.request.Request:
        parts = urlsplit(self.url)
        headers = {"Icy-MetaData": "1", "User-Agent": "streamtag"}
        if parts.username is not None or parts.password is not None:
            user_password = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            token = base64.b64encode(user_password.encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return urllib.request.Request(self.description, headers=headers)

    def _connection(self, stop: threading.Event) -> Iterator[AudioChunk]:
        """One connection: open, decode until the end, an error (raised) or ``stop``."""
        import av

        with self._waiting():
            response = _OPENER.open(self._request(), timeout=self.read_timeout_s)
        with closing(response):
            self.metaint = parse_metaint(response.headers.get("icy-metaint"))
            self.station = response.headers.get("icy-name") or self.station
            reader = IcyReader(response, self.metaint, READ_SIZE, waiting=self._waiting)
            fmt = stream_format(response.headers.get("Content-Type"), reader.peek(4))
            try:
                container = av.open(reader, mode="r", format=fmt, buffer_size=READ_SIZE,
                                    options={"analyzeduration": ANALYZE_US})
            except av.error.FFmpegError:
                if reader.error is not None:  # the network failed while FFmpeg probed
                    raise reader.error from None
                raise
            with container:
                if not container.streams.audio:
                    raise SourceError(f"{self.description}: the stream has no audio")
                yield from self._decode(container, reader, stop)
            if reader.error is not None and not stop.is_set():
                raise reader.error

    def _decode(self, container, reader: IcyReader,
                stop: threading.Event) -> Iterator[AudioChunk]:
        import av

        stream = container.streams.audio[0]
        first_sample = self._resampler.samples_out  # this connection's first output sample
        decoded_s = 0.0  # input audio decoded on this connection, in seconds
        pending: list[IcyBlock] = []
        if self.metaint is None:
            title = next((container.metadata[k].strip() for k in TITLE_KEYS
                          if container.metadata.get(k, "").strip()), None)
            if title is not None:
                self._report_title(title, first_sample, None)
        stopped = False

        def frames() -> Iterator[av.AudioFrame]:
            nonlocal decoded_s, pending, stopped
            for packet in container.demux(stream):
                if stop.is_set():
                    stopped = True
                    return
                pending += reader.take_blocks()
                if pending:
                    here = first_sample + round(decoded_s * self.sample_rate)
                    self._place_titles(pending, packet.pos, here, first_sample)
                try:
                    decoded = stream.decode(packet)
                except av.error.InvalidDataError:
                    # A damaged packet in a live stream: skip it, keep the connection.
                    self.counters["decode_errors"] += 1
                    continue
                for frame in decoded:
                    decoded_s += frame.samples / frame.sample_rate
                    yield frame

        # Decoded frames (26 ms each for MP3) go on in blocks of BLOCK_S: each chunk is a pass
        # through Python, in the resampler, the engine and the turns.
        for samples, rate in mono_blocks(frames(), BLOCK_S):
            chunk = self._chunk(samples, rate)
            if chunk is not None:
                yield chunk
        if stopped:
            return
        pending += reader.take_blocks()  # blocks after the last packet: at the end
        self._place_titles(pending, None, first_sample + round(decoded_s * self.sample_rate),
                           first_sample)

    def _place_titles(self, pending: list[IcyBlock], position: int | None, sample: int,
                      first_sample: int) -> None:
        """Reports the titles of the blocks that precede the packet at byte ``position`` (all
        of them when None, or when the demuxer gives no positions: -1), which begins at
        ``sample``; a connection's first block names the audio from ``first_sample``."""
        while pending and (position is None or position < 0
                           or position >= pending[0].audio_offset):
            block = pending.pop(0)
            if block.has_title:
                at = first_sample if block.index == 0 else sample
                self._report_title(block.title, at, block.arrival)

    def _report_title(self, title: str | None, sample: int, arrival: float | None) -> None:
        if title == self.title:
            return
        self.title = title
        extra = {"title": title, "title_sample": sample}
        if arrival is not None:
            extra["title_at"] = arrival
        if self.station:
            extra["station"] = self.station
        self._status("running", None, **extra)

    def _running_extra(self) -> dict:
        return {"reconnects": self.counters["reconnects"]} if self.counters["reconnects"] else {}
