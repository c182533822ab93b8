"""Network streams: internet radio, Icecast/SHOUTcast mounts and plain HTTP(S) audio, through
PyAV (FFmpeg's http protocol and demuxers), reconnecting with exponential backoff.

Audio time across reconnects: sample indices keep counting the audio actually received; the
time the stream was down is not filled with silence, so after a reconnect ``sample_index`` is
contiguous with the last chunk before it although wall-clock time jumped. Consumers that need
wall-clock alignment use ``AudioChunk.arrival``.

ICY stream titles: FFmpeg parses the in-band ICY metadata (``StreamTitle='...'``) and copies it
into the format context's metadata while reading packets, but PyAV (checked with 18.x)
snapshots ``container.metadata`` once when the container is opened and exposes neither the
live ``AVFormatContext.metadata`` nor the http protocol's ``icy_metadata_packet`` option. So
this source reports the title the stream had when each connection was opened (the Icecast
burst usually carries one metadata block, so it is there at open); a title that changes
mid-connection is only seen after the next reconnect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from streamtag.errors import SourceError
from streamtag.sources.base import AudioChunk, Source

# Keys FFmpeg's metadata may hold a stream title under: in-band ICY, then container tags.
TITLE_KEYS = ("StreamTitle", "icy-title", "title")


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


def frame_to_array(frame) -> np.ndarray:
    """A decoded PyAV audio frame as float32 (frames, channels)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        data = data.T
    else:  # packed: (1, frames * channels), interleaved
        data = data.reshape(-1, channels)
    if np.issubdtype(data.dtype, np.unsignedinteger):  # offset binary: 128 is silence in u8
        half = float(np.iinfo(data.dtype).max + 1) / 2.0
        data = (data.astype(np.float32) - half) / half
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32, copy=False)


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
        if initial_backoff_s <= 0 or max_backoff_s < initial_backoff_s:
            raise SourceError(f"{strip_credentials(url)}: need 0 < initial_backoff_s <= "
                              f"max_backoff_s, got {initial_backoff_s} and {max_backoff_s}")
        if not read_timeout_s > 0:
            raise SourceError(f"{strip_credentials(url)}: read_timeout_s must be > 0 seconds, "
                              f"got {read_timeout_s!r}")
        if max_reconnects is not None and max_reconnects < 0:
            raise SourceError(f"{strip_credentials(url)}: max_reconnects must be >= 0 (leave it "
                              f"out to retry forever), got {max_reconnects!r}")
        self.url = url
        self.description = strip_credentials(url)
        self.reconnect = bool(reconnect)
        self.max_backoff_s = float(max_backoff_s)
        self.initial_backoff_s = float(initial_backoff_s)
        self.read_timeout_s = float(read_timeout_s)
        self.max_reconnects = max_reconnects
        self.title: str | None = None

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        import av

        self._require_open()
        backoff = self.initial_backoff_s
        attempts = 0  # consecutive reconnects that brought no audio
        while not stop.is_set():
            got_audio, error = False, None
            try:
                for chunk in self._connection(stop):
                    got_audio = True
                    yield chunk
            except SourceError as exc:
                self._status("failed", str(exc))
                raise
            except av.error.ExitError:
                # PyAV's timeout interrupts FFmpeg, which then says only "Immediate exit".
                error = f"no data for {self.read_timeout_s:g} s (read_timeout_s)"
            except (av.error.FFmpegError, OSError) as exc:
                # FFmpeg's messages quote the URL: never let its credentials through.
                error = f"{type(exc).__name__}: {exc}".replace(self.url, self.description)
            if stop.is_set():
                break
            tail = self._flush()  # the next connection's audio is not continuous with this
            if tail is not None:
                yield tail
            reason = error or "the server ended the stream"
            if got_audio:
                attempts, backoff = 0, self.initial_backoff_s
            if not self.reconnect or (self.max_reconnects is not None
                                      and attempts >= self.max_reconnects):
                if error is None and not self.reconnect:
                    break
                message = f"{self.description}: {reason}"
                if self.reconnect:
                    message += f" (gave up after {attempts} reconnects without audio)"
                self._status("failed", message)
                raise SourceError(message)
            attempts += 1
            self.counters["reconnects"] += 1
            self._status("reconnecting", reason, reconnects=self.counters["reconnects"],
                         backoff_s=backoff)
            if stop.wait(backoff):
                break
            backoff = min(2.0 * backoff, self.max_backoff_s)
        yield from self._end()

    def _connection(self, stop: threading.Event) -> Iterator[AudioChunk]:
        """One connection: open, decode until the end, an error (raised) or ``stop``."""
        import av

        options = {"reconnect": "0", "rw_timeout": str(int(self.read_timeout_s * 1e6)),
                   "icy": "1", "user_agent": "streamtag"}
        container = av.open(self.url, options=options, timeout=self.read_timeout_s)
        with container:
            if not container.streams.audio:
                raise SourceError(f"{self.description}: the stream has no audio")
            self._report_metadata(container.metadata)
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                if stop.is_set():
                    return
                try:
                    frames = stream.decode(packet)
                except av.error.InvalidDataError:
                    # A damaged packet in a live stream: skip it, keep the connection.
                    self.counters["decode_errors"] += 1
                    continue
                for frame in frames:
                    chunk = self._chunk(frame_to_array(frame), frame.sample_rate)
                    if chunk is not None:
                        yield chunk

    def _report_metadata(self, metadata: dict) -> None:
        title = next((metadata[k].strip() for k in TITLE_KEYS if metadata.get(k)), None)
        if title and title != self.title:
            self.title = title
            extra = {"title": title}
            if metadata.get("icy-name"):
                extra["station"] = metadata["icy-name"]
            self._status("running", None, **extra)

    def _running_extra(self) -> dict:
        return {"reconnects": self.counters["reconnects"]} if self.counters["reconnects"] else {}
