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
title tag of its container or stream when it opens, and the tags each new link of a chained
Ogg stream (Vorbis, Opus) or a metadata update brings, which FFmpeg hands on as side data of the
link's first packet: placed at that packet as an ICY block is. A title's status also says
whether the track it names was heard from its start (``heard_from_start``): a title that
changes while the connection plays began there; of the title a connection opens with, only the
stream can tell. An Ogg stream does: its first page's granule position is the link's own
sample count, so a first packet within OGG_START_TOLERANCE_S of the link's sample 0 (Vorbis
and Opus start below it, by their decoder delay, or a few ms past it, by the encoder's) is
the link's start; later, it was joined midway (a server's burst on connect starts at a page of
the current link). MP3 and AAC tell nothing of the kind: their opening title's
``heard_from_start`` is left out. The station's name (``icy-name``, or ``ice-name``) goes as
``station`` with the first "running" status that follows
a change of it, and with every title.

Stations are untrusted, and what one sends harms at most its own stream:

- PyAV opens the body with a whitelist of demuxers (``STREAM_FORMATS``, the audio formats
  stations send) and no protocol at all (``OPEN_OPTIONS``): a body that is a playlist (ffconcat,
  HLS) naming files of this machine or other URLs is refused, not followed. FFmpeg's probe is
  bounded (``probesize``, ``analyzeduration``).
- A connection's bytes are bounded by the audio they decode to (sources/bounds.py): over any
  stretch of it, at most ``LEEWAY_BYTES`` more than ``max_bytes_per_audio_s`` per second of
  audio decoded in it, so a stream that gives no audio, pads its audio or sends metadata
  between it is cut (and tried again) with a status that says so, before FFmpeg holds more.
  In an Ogg stream, the packets not yet ended (a chained link's comment header) are bounded
  too (``MAX_OGG_PACKET_BYTES``), as FFmpeg holds them whole while the audio plays on.
- Redirects are followed only to http(s) URLs (SourceError otherwise), at most
  ``MAX_REDIRECTS``, without reading their bodies. The URL's credentials (sent as an
  Authorization header) go only to the origin (scheme, host, port) they were given for; the
  user part a server writes in a redirect is dropped. With a ``host_policy``
  (sources/hosts.py), the URL's host is checked before the first request and on every
  redirect, and every connection's address as it is made.
- A station's ICY metadata is held one block at a time (sources/icy.py); a ``icy-metaint``
  below ``MIN_METAINT`` bytes (no server uses one: Icecast's default is 16000, SHOUTcast's
  8192) makes the source ask again without ``Icy-MetaData: 1``, so the server sends plain
  audio: a client cannot read the body as audio while the server interleaves blocks in it.
- Titles are cleaned (control characters and escape sequences out, 256 characters at most)
  and at most ``MAX_TITLE_CHANGES`` changes are reported per ``TITLE_WINDOW_S``; further ones
  are counted (``titles_ignored`` in the counters and in the status extra: a "running" status
  says so when the limit is reached), and the latest held back is reported, where the audio
  then is, once the window allows.
- Published text is ours: an error says what happened in our words ("the station answered
  HTTP 404", "the server did not answer HTTP"), never a reason phrase, body or banner the
  server sent (a debug log line has the detail), and URLs are shown by ``redact_url``.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import logging
import socket
import ssl
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from streamtag.audio.files import AudioDecodeError, mono_blocks
from streamtag.backoff import Backoff
from streamtag.errors import SourceError
from streamtag.sources.base import (
    AudioChunk,
    Source,
    TitleLimit,
    clean_title,
    packet_tags,
    title_from_tags,
)
from streamtag.sources.bounds import (
    OGG_CAPTURE,
    ByteBudget,
    ByteLimitError,
    DeclaredSizes,
    OggPages,
)
from streamtag.sources.hosts import HostPolicy, redact_url, split_url
from streamtag.sources.icy import MIN_METAINT, IcyBlock, IcyReader, parse_metaint

log = logging.getLogger(__name__)

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
# The demuxers a station's body may be opened with, by FFmpeg's names: those of the types above
# and of the headers of HEADER_MAGIC and ftyp (MP3, ADTS AAC, Ogg, FLAC, WAV, AIFF, CAF,
# Matroska/WebM, MP4/M4A). Left to its probe, FFmpeg opens whatever it recognises, playlists
# included: an ffconcat or HLS body names files of this machine (a relative path resolves
# against the daemon's working directory) or URLs, and FFmpeg would open them.
STREAM_FORMATS = ("mp3", "aac", "ogg", "flac", "wav", "aiff", "caf", "matroska", "mov")
FORMAT_NAMES = "MP3, AAC, Ogg, FLAC, WAV, AIFF, CAF, Matroska/WebM, MP4"  # for messages
PROBE_BYTES = 1 << 18  # FFmpeg's probesize: at most this much is read to learn the parameters
# What a connection may read beyond what its audio allows: all of it before the first decoded
# frame (a header with cover art, FFmpeg's probe), and any burst of metadata later.
LEEWAY_BYTES = 4 << 20
# Bytes a station may send per second of the audio they decode to (docs/security.md has the
# codecs' figures): the highest lossy bitrates need 30-56 kB/s, lossless 192 kHz/24-bit
# stereo PCM 1,152 kB/s; past it, the bytes are padding or metadata between the audio.
MAX_BYTES_PER_AUDIO_S = 2 << 20
# An Ogg packet not yet ended, all logical streams together (a chained link's comment header
# with cover art is the largest honest one), and the logical streams of an Ogg stream.
MAX_OGG_PACKET_BYTES = 2 << 20
MAX_OGG_STREAMS = 16
OPEN_OPTIONS = {
    "format_whitelist": ",".join(STREAM_FORMATS),
    "protocol_whitelist": "",  # none: the only bytes FFmpeg reads are those the reader hands in
    "probesize": str(PROBE_BYTES),
    "analyzeduration": ANALYZE_US,
}
MAX_REDIRECTS = 10
# Interim answers ("100 Continue") before the answer: HTTP allows several, a server sends one.
MAX_INTERIM_ANSWERS = 8
# A chunked answer's trailer (header lines after the last chunk; a station sends none).
MAX_TRAILER_LINES = 64
MAX_TRAILER_LINE = 65536  # http.client's line length
# What one read of a station's body costs of its byte budget at least, whatever it brings: each
# is a pass through Python (http.client's chunk framing, the ICY splitter, FFmpeg's callback),
# so a body in 1-byte chunks or tiny pieces is bounded in reads per second of audio as padding
# is in bytes (the default budget allows 1,024 a second of audio; a 320 kbit/s stream read in
# TCP segments takes some 30).
MIN_READ_COST = 2048
# An Ogg link's first packet at most this far past its sample 0 is its start: encoders differ
# in where their first granule puts it (libvorbis by ffmpeg: 284 samples past, 6.4 ms; the
# reference encoder: 128 before), while a listener that joined midway starts at a later page,
# which holds far more audio than this.
OGG_START_TOLERANCE_S = 0.05
MAX_TITLE_CHANGES = 12  # title changes reported per TITLE_WINDOW_S; more are counted
TITLE_WINDOW_S = 60.0


def ogg_link_start(pts: int | None, time_base) -> bool | None:
    """Whether an Ogg connection's first packet, at `pts` (FFmpeg's, from the page's granule
    position: the link's own samples), is its link's start; None where it has no time."""
    return None if pts is None else float(pts * time_base) <= OGG_START_TOLERANCE_S


class StationError(OSError):
    """A station's answer that gives no audio, told in our words; the source tries again."""


class _Counted(io.RawIOBase):
    """A socket's reader that hands the size of every read to ``count`` (which may raise, and
    so end the read): what http.client reads for the status line, headers, interim answers,
    chunk framing, extensions and trailers, as well as the body."""

    def __init__(self, raw: io.RawIOBase, count: Callable[[int], None]) -> None:
        super().__init__()
        self._raw, self._count = raw, count

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        size = self._raw.readinto(buffer)
        if size:
            self._count(size)
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


class _IcyResponse(http.client.HTTPResponse):
    """A response that also takes SHOUTcast v1's status line, ``ICY 200 OK``, as HTTP/1.0;
    ``counted``: gets the size of every read from the socket (``_Counted``). At most
    MAX_INTERIM_ANSWERS interim answers are read before the answer, and MAX_TRAILER_LINES
    lines of a chunked answer's trailer (http.client reads any number of either: a station
    that answered "100 Continue", or a trailer, for ever kept a core busy)."""

    def __init__(self, sock, *args, counted: Callable[[int], None] | None = None,
                 **kwargs) -> None:
        super().__init__(sock, *args, **kwargs)
        if counted is not None:  # nothing has been read yet: the reader is replaced whole
            self.fp = io.BufferedReader(_Counted(self.fp.detach(), counted))
        self._statuses = 0

    def _read_status(self):
        self._statuses += 1
        if self._statuses > MAX_INTERIM_ANSWERS + 1:
            raise StationError(f"the station sent more than {MAX_INTERIM_ANSWERS} interim "
                               "answers (100 Continue) and no answer")
        if self.fp.peek(4)[:4] != b"ICY ":
            return super()._read_status()
        words = self.fp.readline(1024).decode("latin-1").split(None, 2)
        code = words[1] if len(words) > 1 else ""
        if not (code.isascii() and code.isdigit() and 100 <= int(code) <= 999):
            raise http.client.BadStatusLine("ICY")
        return "HTTP/1.0", int(code), words[2].strip() if len(words) > 2 else ""

    def _read_and_discard_trailer(self) -> None:
        # http.client's own, bounded in lines (its line length is bounded there too)
        for _ in range(MAX_TRAILER_LINES + 1):
            line = self.fp.readline(MAX_TRAILER_LINE + 1)
            if len(line) > MAX_TRAILER_LINE:
                raise http.client.LineTooLong("trailer line")
            if line in (b"\r\n", b"\n", b""):
                return
        raise StationError(f"the station's answer ended with a trailer of more than "
                           f"{MAX_TRAILER_LINES} lines")


class _Checked:
    """A connection that, under a host policy, connects through ``HostPolicy.connect``: each
    address the host resolves to is checked, and the connection goes to one of those. Its
    socket, once made, is handed to ``on_socket`` (the source's watch, which can cut it), and
    the size of every read from it to ``on_bytes``."""

    response_class: Any  # http.client's connection's, beside which this one is mixed in

    def __init__(self, *args, host_policy: HostPolicy | None = None,
                 on_socket: Callable[[socket.socket], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._on_socket = on_socket
        if on_bytes is not None:
            self.response_class = functools.partial(self.response_class, counted=on_bytes)
        if host_policy is not None:
            # http.client makes its socket through this attribute, kept replaceable for that.
            self._create_connection = host_policy.connect

    def connect(self) -> None:
        super().connect()
        if self._on_socket is not None:
            self._on_socket(self.sock)


class _IcyConnection(_Checked, http.client.HTTPConnection):
    response_class = _IcyResponse


class _IcyTlsConnection(_Checked, http.client.HTTPSConnection):
    response_class = _IcyResponse


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, host_policy: HostPolicy | None, on_socket=None, on_bytes=None) -> None:
        super().__init__()
        self.host_policy, self.on_socket, self.on_bytes = host_policy, on_socket, on_bytes

    def http_open(self, req):
        return self.do_open(functools.partial(_IcyConnection, host_policy=self.host_policy,
                                              on_socket=self.on_socket,
                                              on_bytes=self.on_bytes), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, host_policy: HostPolicy | None, on_socket=None, on_bytes=None) -> None:
        super().__init__()
        self.host_policy, self.on_socket, self.on_bytes = host_policy, on_socket, on_bytes

    def https_open(self, req):
        return self.do_open(functools.partial(_IcyTlsConnection, host_policy=self.host_policy,
                                              on_socket=self.on_socket,
                                              on_bytes=self.on_bytes), req)


class _Watch:
    """One connection's watch: a thread that cuts the connection's sockets when it has brought
    no audio for NO_AUDIO_S past what it brought would take to play (``tripped``), or when the
    source stops. Each read stays within read_timeout_s when a station sends a byte a second,
    answers "100 Continue" for ever or never ends a chunked trailer: the connection brought
    nothing to play, for ever, and a stopping daemon waited for the read."""

    def __init__(self, stop: threading.Event, no_audio_s: float) -> None:
        self._stop, self._no_audio_s = stop, no_audio_s
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._until = time.monotonic() + no_audio_s
        self._done = threading.Event()
        self.tripped = False
        self._thread = threading.Thread(target=self._run, name="streamtag-http-watch",
                                        daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def fed(self, audio_end: float) -> None:
        """Audio came that plays until ``audio_end`` (monotonic time at real speed)."""
        self._until = max(time.monotonic(), audio_end) + self._no_audio_s

    def _run(self) -> None:
        while not self._done.wait(0.25):
            stopping = self._stop.is_set()
            if stopping or time.monotonic() > self._until:
                self.tripped = not stopping
                with self._lock:
                    for sock in self._sockets:
                        with suppress(OSError):
                            # the plain socket's shutdown (an SSL socket's would change its
                            # state under the reading thread): the blocked read ends
                            socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return

    def close(self) -> None:
        self._done.set()


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL: where credentials given for it may go."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https"
                                                                  else 80)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects as a station may give them. urllib's own handler follows ftp: URLs, sends the
    Authorization header to any host and reads the redirect's body whole (a hostile one never
    ends); this one follows only http(s) URLs (SourceError otherwise), checked by the host
    policy when there is one, sends the credentials only to their origin, drops the user part
    a server writes in the URL and closes the body unread."""

    def __init__(self, credentials_origin: tuple[str, str, int],
                 host_policy: HostPolicy | None) -> None:
        super().__init__()
        self.credentials_origin = credentials_origin
        self.host_policy = host_policy

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("Location")
        if location is None:
            return None  # urllib's error handler then raises HTTPError(code)
        fp.close()
        # http.client decodes headers as Latin-1: the bytes again, with what is not ASCII (or
        # is a space or a control character) percent-encoded, as urllib does.
        target = urljoin(req.full_url, quote(location.strip(), encoding="iso-8859-1",
                                             safe=string.punctuation))
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise StationError("the station redirected to a URL that is not valid") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise SourceError(f"the station redirected to a {scheme[:16]}: URL; only http and "
                              "https redirects are followed")
        target = urlunsplit((scheme, parts.netloc.rpartition("@")[2], parts.path or "/",
                             parts.query, ""))
        if self.host_policy is not None:
            self.host_policy.check_name(target)
        redirects = getattr(req, "redirects", 0) + 1
        if redirects > MAX_REDIRECTS:
            raise StationError(f"the station redirected more than {MAX_REDIRECTS} times")
        new_headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("content-length", "content-type")}
        if origin(target) != self.credentials_origin:
            new_headers = {k: v for k, v in new_headers.items() if k.lower() != "authorization"}
        new = urllib.request.Request(target, headers=new_headers,
                                     origin_req_host=req.origin_req_host, unverifiable=True)
        new.redirects = redirects
        return self.parent.open(new, timeout=req.timeout)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def build_opener(url: str, host_policy: HostPolicy | None,
                 on_socket: Callable[[socket.socket], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None,
                 ) -> urllib.request.OpenerDirector:
    """urllib's opener for one source's URL, with only what a station needs: http and https
    (through the environment's proxy, if any), the redirects above, no ftp:, file: or data:.
    ``on_socket`` gets each connection's socket as it is made, ``on_bytes`` the size of every
    read from it (HTTP's framing included)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    _HttpHandler(host_policy, on_socket, on_bytes),
                    _HttpsHandler(host_policy, on_socket, on_bytes),
                    urllib.request.HTTPDefaultErrorHandler(),
                    _Redirects(origin(url), host_policy), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def stream_format(content_type: str | None, head: bytes) -> str | None:
    """The demuxer to use for a stream of this Content-Type that starts with ``head``; None
    lets FFmpeg probe (among ``STREAM_FORMATS``)."""
    if head.startswith(HEADER_MAGIC) or head[4:8] == b"ftyp":  # ftyp: MP4/M4A
        return None
    kind = (content_type or "").split(";")[0].strip().lower()
    return FORMAT_BY_TYPE.get(kind)


def failure_reason(exc: BaseException, read_timeout_s: float) -> str:
    """Why a connection failed, in our words: a reason phrase, body or banner that the server
    sent never reaches a published message."""
    import av

    cause = exc
    if (isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
            and isinstance(exc.reason, BaseException)):
        cause = exc.reason
    if isinstance(cause, TimeoutError):
        return f"no data for {read_timeout_s:g} s (read_timeout_s)"
    if isinstance(cause, (StationError, ByteLimitError)):
        return str(cause)
    if isinstance(cause, urllib.error.HTTPError):
        if 300 <= cause.code < 400:
            return f"the station answered HTTP {cause.code} without a place to go"
        return f"the station answered HTTP {cause.code}"
    if isinstance(cause, http.client.RemoteDisconnected):
        return "the server closed the connection without an answer"
    if isinstance(cause, (http.client.BadStatusLine, http.client.UnknownProtocol)):
        return "the server did not answer HTTP"
    if isinstance(cause, http.client.IncompleteRead):
        return "the connection ended inside a chunk of the answer"
    if isinstance(cause, http.client.HTTPException):
        return "the server's answer broke the rules of HTTP"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate was refused ({cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed ({cause.reason or 'no reason given'})"
    if isinstance(cause, socket.gaierror):
        return f"the host name does not resolve ({cause.strerror})"
    if isinstance(cause, av.error.FFmpegError):
        return f"FFmpeg could not read the stream as audio ({cause.strerror})"
    if isinstance(cause, OSError) and cause.strerror:
        return f"the connection failed ({cause.strerror})"
    return f"the connection failed ({type(cause).__name__})"


MAX_READ_TIMEOUT_S = 3600.0  # longer ones overflow the socket's clock
# A connection that brought this much audio resets the reconnect back-off.
SUSTAINED_AUDIO_S = 10.0
# While a station is off air it is asked again at least this often for the first PROBE_FOR_S
# (then the back-off doubles on to its cap), so that its return is heard within about a second.
PROBE_S = 1.0
PROBE_FOR_S = 60.0
# A connection that brings no audio for this long (past what it brought would take to play) is
# cut and made again (_Watch).
NO_AUDIO_S = 30.0
# How far a connection's audio may run ahead of the time it has been open before it is read
# at real time: servers burst some seconds on connect (Icecast: 64 KB by default, 4 s at 128
# kbit/s) so that a player starts at once.
AHEAD_S = 30.0


class HttpSource(Source):
    """Reads an audio URL; on error or end of stream reconnects after a backoff that starts at
    ``initial_backoff_s``, doubles on each attempt that brings no audio and is capped at
    ``max_backoff_s``. ``max_reconnects`` limits consecutive attempts without audio (None:
    forever); ``reconnect=False`` ends (clean end) or fails (error) on the first loss.
    ``host_policy`` (given from Python: sources added at run time): the hosts the URL and its
    redirects may reach; SourceError for one it refuses.

    ``stop`` is honoured between packets and during backoff waits; a server that stalls
    mid-read is given up on after ``read_timeout_s``.
    """

    kind = "http"
    schemes = ("http", "https")
    spec_help = "http(s)://URL"
    live = True

    @classmethod
    def target_of(cls, rest: str, text: str) -> str:
        return text  # the whole URL

    def __init__(self, url: str, *, reconnect: bool = True, max_backoff_s: float = 30.0,
                 initial_backoff_s: float = 0.5, read_timeout_s: float = 10.0,
                 max_reconnects: int | None = None,
                 host_policy: HostPolicy | None = None, realtime: bool = True,
                 max_bytes_per_audio_s: float = MAX_BYTES_PER_AUDIO_S) -> None:
        super().__init__()
        # A station plays in real time; one that sends faster (up to AHEAD_S of audio ahead,
        # a server's burst on connect) is read at real time: 100 times faster would score 100
        # times the windows, as published messages and CPU. False: as fast as it comes (a
        # file on a web server, from a server you trust).
        self.realtime = bool(realtime)
        self.description = redact_url(url)
        parts, _ = split_url(url)
        if not parts.hostname:
            raise SourceError(f"{self.description}: the URL names no host; write "
                              "http(s)://HOST[:PORT]/PATH")
        if any(c.isspace() for c in url):
            raise SourceError(f"{self.description}: a URL holds no spaces; write %20 for a "
                              "space in its path")
        if parts.scheme.lower() not in ("http", "https"):
            raise SourceError(f"{self.description}: not an http(s) URL")
        # Checked (and the back-off state built) per iteration of chunks(); here to fail early.
        self.backoff_options = dict(reconnect=reconnect, initial_backoff_s=initial_backoff_s,
                                     max_backoff_s=max_backoff_s, max_reconnects=max_reconnects)
        Backoff(self.description, **self.backoff_options)
        if not 1024 <= max_bytes_per_audio_s < float("inf"):
            raise SourceError(f"{self.description}: max_bytes_per_audio_s must be at least "
                              f"1024 (bytes per second of audio), got {max_bytes_per_audio_s!r}")
        self.max_bytes_per_audio_s = float(max_bytes_per_audio_s)
        if not 0 < read_timeout_s <= MAX_READ_TIMEOUT_S:
            raise SourceError(f"{self.description}: read_timeout_s must be > 0 and at most "
                              f"{MAX_READ_TIMEOUT_S:g} seconds, got {read_timeout_s!r}")
        if host_policy is not None:
            if not isinstance(host_policy, HostPolicy):
                raise SourceError(f"{self.description}: host_policy must be a HostPolicy "
                                  "(given from Python)")
            try:
                host_policy.check_name(url)
            except SourceError as exc:
                raise SourceError(f"{self.description}: {exc}") from None
        self.url = url
        self.host_policy = host_policy
        self.read_timeout_s = float(read_timeout_s)
        self.title: str | None = None
        self.station: str | None = None  # the station's name: icy-name (or ice-name)
        self._station_told: str | None = None  # the name a "running" status last carried
        self.metaint: int | None = None  # the last connection's icy-metaint, None without ICY
        self.icy = True  # asks for ICY metadata; False once the station's metaint was too small
        self.counters["titles_ignored"] = 0
        self.counters["paced"] = 0  # waits to read a station faster than real time at real time
        self._title_limit = TitleLimit(MAX_TITLE_CHANGES, TITLE_WINDOW_S)
        self._holding = False  # a title is held back by the limit: ``_held_title``
        # The connection's first output sample, and whether its audio began at its track's
        # start (an Ogg link's first page says; None: not known).
        self._first_sample = 0
        self._opening_from_start: bool | None = None
        self._held_title: str | None = None
        self._told_held = False  # a status said titles are being held back
        self._watch: _Watch | None = None  # the current connection's
        self._down_at: float | None = None  # when the last connection ended or failed
        self._budget: ByteBudget | None = None  # the current connection's
        self._opener = build_opener(url, host_policy, self._watched, self._read_bytes)

    def _watched(self, sock: socket.socket) -> None:
        if self._watch is not None:
            self._watch.add(sock)

    def _read_bytes(self, size: int) -> None:
        """Every byte a connection reads, HTTP's own included, is spent from its budget."""
        if self._budget is not None:
            self._budget.spend(size)

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        import av

        self._require_open()
        backoff = Backoff(self.description, **self.backoff_options, probe_s=PROBE_S,
                          probe_for_s=PROBE_FOR_S)
        while not stop.is_set():
            samples, error, started = 0, None, time.monotonic()
            watch = self._watch = _Watch(stop, NO_AUDIO_S)
            try:
                for chunk in self._connection(stop):
                    samples += len(chunk.samples)
                    watch.fed(started + samples / self.sample_rate)
                    yield chunk
                    if self.realtime and self._ahead(samples, started, stop):
                        break
            except SourceError as exc:
                self._status("failed", str(exc))
                raise
            except AudioDecodeError as exc:  # audio that cannot be read as it says it is
                message = f"{self.description}: {exc}"
                self._status("failed", message)
                raise SourceError(message) from None
            except (av.error.FFmpegError, OSError, http.client.HTTPException) as exc:
                error = self._reason(exc)
            finally:
                watch.close()
                # the station was last found without audio now: its return comes after
                self._down_at = time.time()
            if stop.is_set():
                break
            if watch.tripped:  # cut by the watch: whatever the read then said
                error = (f"no audio for {NO_AUDIO_S:g} s (the station sent nothing to play: "
                         "its answer too slowly, or no audio)")
            tail = self._flush()  # the next connection's audio is not continuous with this
            if tail is not None:
                yield tail
            reason = error or "the server ended the stream"
            # Only a connection that played a while starts the back-off afresh: a station that
            # sends a moment of audio and then fails reconnected every half second, for ever.
            if samples >= SUSTAINED_AUDIO_S * self.sample_rate:
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

    def _ahead(self, samples: int, started: float, stop: threading.Event) -> bool:
        """Waits while this connection's audio is more than AHEAD_S ahead of the time it has
        been open (the station sends faster than it plays); True when stopped meanwhile."""
        due = started + samples / self.sample_rate - AHEAD_S
        if due <= time.monotonic():
            return False
        if not self.counters["paced"]:
            log.info("%s: the station sends faster than real time; read at real time",
                     self.description)
        self.counters["paced"] += 1
        return self._play_until(due, stop)

    def _reason(self, exc: BaseException) -> str:
        """Why a connection was lost, in one line of our words (``failure_reason``); what the
        exception says goes to the debug log, escaped and without the URL's secrets."""
        log.debug("%s: %s", self.description, repr(exc).replace(self.url, self.description))
        return failure_reason(exc, self.read_timeout_s)

    def _request(self) -> urllib.request.Request:
        parts = urlsplit(self.url)
        headers = {"User-Agent": "streamtag"}
        if self.icy:
            headers["Icy-MetaData"] = "1"
        if parts.username is not None or parts.password is not None:
            user_password = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            token = base64.b64encode(user_password.encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        # The URL without its user part, which urllib would take for part of the host.
        target = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path or "/",
                             parts.query, ""))
        return urllib.request.Request(target, headers=headers)

    def _fetch(self):
        """The response to one request (redirects followed); SourceError for what may not be
        opened (a redirect to another scheme, a host the policy refuses)."""
        try:
            with self._waiting():
                return self._opener.open(self._request(), timeout=self.read_timeout_s)
        except SourceError as exc:
            raise SourceError(f"{self.description}: {exc}") from None

    def _connection(self, stop: threading.Event) -> Iterator[AudioChunk]:
        """One connection: open, decode until the end, an error (raised) or ``stop``."""
        import av

        budget = self._budget = ByteBudget(self.max_bytes_per_audio_s, LEEWAY_BYTES,
                                           MIN_READ_COST)
        response = self._fetch()
        metaint = parse_metaint(response.headers.get("icy-metaint")) if self.icy else None
        if metaint is not None and metaint < MIN_METAINT:
            response.close()
            self.icy = False
            log.warning("%s: the station's icy-metaint (%d bytes) is below %d bytes; its "
                        "stream is read without titles", self.description, metaint,
                        MIN_METAINT)
            response = self._fetch()
            metaint = None
        with closing(response):
            self.metaint = metaint
            name = response.headers.get("icy-name") or response.headers.get("ice-name") or ""
            self.station = clean_title(name) or self.station
            reader = IcyReader(response, metaint, READ_SIZE, waiting=self._waiting,
                               budget=budget, spent_below=True)
            head = reader.peek(8)
            if head.startswith(OGG_CAPTURE):
                reader.walk(OggPages(MAX_OGG_PACKET_BYTES, MAX_OGG_STREAMS))
            elif (kind := DeclaredSizes.kind_of(head)) is not None:
                reader.walk(DeclaredSizes(kind, LEEWAY_BYTES))
            fmt = stream_format(response.headers.get("Content-Type"), head)
            try:
                container = av.open(reader, mode="r", format=fmt, buffer_size=READ_SIZE,
                                    container_options=OPEN_OPTIONS)
            except av.error.FFmpegError as exc:
                if reader.error is not None:  # the network failed while FFmpeg probed
                    raise reader.error from None
                log.debug("%s: %r", self.description, exc)
                raise StationError(f"the stream is not audio in a format read from stations "
                                   f"({FORMAT_NAMES}; FFmpeg: {exc.strerror})") from None
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
        tagged = self.metaint is None  # without ICY, titles come in the stream's own tags
        opening_title = None
        if tagged:
            titles = (clean_title(container.metadata.get(k, "")) for k in TITLE_KEYS)
            opening_title = (next((t for t in titles if t), None)
                             or title_from_tags(stream.metadata))
        ogg = container.format.name == "ogg"
        self._first_sample, self._opening_from_start = first_sample, None
        stopped = False

        def frames() -> Iterator[av.AudioFrame]:
            nonlocal decoded_s, stopped
            for n, packet in enumerate(container.demux(stream)):
                if stop.is_set():
                    stopped = True
                    return
                if n == 0:  # what the connection opens with: known at its first packet
                    if ogg:
                        self._opening_from_start = ogg_link_start(packet.pts,
                                                                  packet.time_base)
                    if opening_title is not None:
                        self._offer_title(opening_title, first_sample, None)
                here = first_sample + round(decoded_s * self.sample_rate)
                block = reader.take_block(packet.pos)
                if not tagged:  # ICY: its blocks read, and those parsed (at most twice a second)
                    self.counters["icy_blocks"] = reader.splitter.block_count
                    self.counters["icy_blocks_parsed"] = reader.splitter.parsed
                if block is not None:
                    self._place(block, here, first_sample)
                elif tagged and (tags := packet_tags(packet)) is not None:
                    # A new link of a chained Ogg stream (or a metadata update): its tags name
                    # the audio from this packet on; a link without a title is untitled.
                    self._offer_title(title_from_tags(tags), here, time.time())
                elif self._holding:
                    self._release_held(here)
                try:
                    decoded = stream.decode(packet)
                except av.error.InvalidDataError:
                    # A damaged packet in a live stream: skip it, keep the connection.
                    self.counters["decode_errors"] += 1
                    continue
                for frame in decoded:
                    seconds = frame.samples / frame.sample_rate
                    decoded_s += seconds
                    reader.budget.earn(seconds)  # the bytes this audio allows
                    yield frame

        # Decoded frames (26 ms each for MP3) go on in blocks of BLOCK_S: each chunk is a pass
        # through Python, in the resampler, the engine and the turns.
        seen = self._channels_seen()
        for samples, rate in mono_blocks(frames(), BLOCK_S, seen):
            chunk = self._chunk(samples, rate, measured=seen is not None)
            if chunk is not None:
                yield chunk
        if stopped:
            return
        block = reader.take_block(None)  # a block after the last packet: at the end
        if block is not None:
            self._place(block, first_sample + round(decoded_s * self.sample_rate),
                        first_sample)

    def _place(self, block: IcyBlock, sample: int, first_sample: int) -> None:
        """Offers the title of a block due before the packet that begins at ``sample``; a
        connection's first block names the audio from ``first_sample``."""
        if block.has_title:
            self._offer_title(block.title, first_sample if block.index == 0 else sample,
                              block.arrival)

    def _offer_title(self, title: str | None, sample: int, arrival: float | None) -> None:
        """A title as it arrives: reported when it changes and the rate allows; else counted
        and held back, the latest only, for ``_release_held``."""
        if title == self.title:
            self._holding = False
            return
        if self._title_limit.allow():
            self._holding = False
            self._report_title(title, sample, arrival)
            return
        self.counters["titles_ignored"] += 1
        self._holding, self._held_title = True, title
        if not self._told_held:  # once until the next title: the limit was reached
            self._told_held = True
            self._status("running", None, **self._running_extra())

    def _release_held(self, sample: int) -> None:
        """Reports the title held back, at ``sample`` (where the audio is now), once the rate
        allows: where its track began is not known."""
        if self._holding and self._title_limit.allow():
            self._holding = False
            self._report_title(self._held_title, sample, time.time(), held=True)

    def _report_title(self, title: str | None, sample: int, arrival: float | None,
                      held: bool = False) -> None:
        self.title = title
        self._told_held = False
        extra = {"title": title, "title_sample": sample}
        # Whether the title's track was heard from its start: one that began as the
        # connection played was; the connection's opening one as its stream tells (Ogg).
        heard = None if held else (sample > self._first_sample or self._opening_from_start)
        if heard is not None:
            extra["heard_from_start"] = heard
        if arrival is not None:
            extra["title_at"] = arrival
        if self.station:
            extra["station"] = self.station
        if self.counters["titles_ignored"]:
            extra["titles_ignored"] = self.counters["titles_ignored"]
        self._status("running", None, **extra)

    def _status(self, state: str, error: str | None = None, **extra) -> None:
        # Audio back after a connection ended or failed: the station came back at most this
        # long before its first audio was heard (the time since the last attempt found none).
        if state == "running" and self._down_at is not None:
            self.counters["back_within_ms"] = round((time.time() - self._down_at) * 1000)
            self._down_at = None
        super()._status(state, error, **extra)

    def _running_extra(self) -> dict:
        extra = {}
        if self.station != self._station_told:  # a name not yet told (a new one)
            self._station_told = self.station
            extra["station"] = self.station
        if self.counters["reconnects"]:
            extra["reconnects"] = self.counters["reconnects"]
        if self.counters["titles_ignored"]:
            extra["titles_ignored"] = self.counters["titles_ignored"]
        return extra
