"""Audio files: anything PyAV (FFmpeg) decodes, as fast as the consumer reads or at playback
speed (``realtime=True``), once or looped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

from streamtag.audio.files import (
    AudioDecodeError,
    first_audio_stream,
    mono_blocks,
    open_failure,
)
from streamtag.errors import SourceError
from streamtag.sources.base import AudioChunk, Source, packet_tags, title_from_tags

# Decoded audio is handed on in blocks of at least this many seconds (an MP3 frame is 26 ms,
# and each chunk is a pass through Python): as fast as the consumer reads, and at playback
# speed, where a block is also the pacing step (a sound card's period is of this order).
BLOCK_S = 0.5
REALTIME_BLOCK_S = 0.1


class FileSource(Source):
    """Decodes the first audio stream of a file; its channels, however many, are averaged to
    mono (``streamtag.audio.files.mono_blocks``) before resampling.

    The file's own title and artist tags (container or stream metadata, as FFmpeg reads ID3,
    Vorbis comments, MP4 atoms) name its audio: reported as a "running" status with ``title``
    and ``title_sample`` when the audio starts; each link of a chained Ogg file (Vorbis, Opus)
    names its own audio from its first sample on.

    A file that cannot be opened fails in ``open``; one that breaks part way yields what
    decoded and then raises SourceError. A truncated file that FFmpeg reads to a clean end
    (the usual case for a cut MP3: the decoder drops the partial last frame) simply ends.
    """

    kind = "file"
    schemes = ("file",)  # and a path to an existing file (streamtag.sources.PATH_KIND)
    spec_help = "file:PATH"
    live = False

    @classmethod
    def target_of(cls, rest: str, text: str) -> str:
        if not rest:
            raise SourceError(f"source {text!r} names no file; write file:PATH")
        return rest

    def __init__(self, path: str | Path, *, realtime: bool = False, loop: bool = False,
                 speed: float = 1.0) -> None:
        super().__init__()
        if not (speed > 0 and speed < float("inf")):
            raise SourceError(f"file source {path}: speed must be > 0, got {speed!r}")
        self.path = Path(path)
        self.description = str(self.path)
        self.realtime = bool(realtime)
        self.speed = float(speed)  # with realtime: playback speed (2.0 plays twice as fast)
        self.loop = bool(loop)
        self.title: str | None = None  # the title the file starts with
        self._playing: str | None = None  # the title last reported
        self._seconds_decoded = 0.0
        self._container = None  # the file as open() probed it, decoded first by chunks()

    def _open(self) -> None:
        import av

        if not self.path.is_file():
            reason = "is not a file" if self.path.exists() else "no such file"
            raise SourceError(f"cannot open {self.path}: {reason}")
        # Probe now so a missing or unreadable file fails here rather than in the consumer;
        # the container stays open for the first pass of chunks() (opening costs 0.25 ms).
        self.close()
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self.path}: {open_failure(exc)}") from exc
        try:
            if not container.streams.audio:
                raise SourceError(f"cannot open {self.path}: it has no audio stream")
            self.title = title_from_tags(container.metadata, container.streams.audio[0].metadata)
        except BaseException:
            container.close()
            raise
        self._container = container

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()

    def _frames(self, container, stop: threading.Event) -> Iterator:
        """The decoded frames of one pass through the file; a new link of a chained Ogg file
        (or a metadata update) changes the title where its first packet's audio starts."""
        with first_audio_stream(self.path, container) as (container, stream):
            for packet in container.demux(stream):
                if stop.is_set():
                    return
                tags = packet_tags(packet)
                if tags is not None:
                    self._change_title(title_from_tags(tags))
                for frame in stream.decode(packet):
                    self._seconds_decoded += frame.samples / frame.sample_rate
                    yield frame

    def _change_title(self, title: str | None) -> None:
        if title != self._playing:
            self._playing = title
            self._status("running", None, title=title,
                         title_sample=round(self._seconds_decoded * self.sample_rate))

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        self._require_open()
        self._seconds_decoded = 0.0  # input audio decoded so far, every pass
        start = None  # wall clock of audio time 0, for realtime pacing
        seconds_in = 0.0  # input audio time decoded so far
        while not stop.is_set():
            decoded_any = False
            if self.title is not None:  # each pass starts with the file's first title
                self._change_title(self.title)
            try:
                block_s = REALTIME_BLOCK_S if self.realtime else BLOCK_S
                container, self._container = self._container, None  # None: opened again
                seen = self._channels_seen()
                with closing(mono_blocks(self._frames(container, stop), block_s,
                                         seen)) as frames:
                    for samples, rate in frames:
                        if stop.is_set():
                            break
                        decoded_any = decoded_any or samples.size > 0
                        seconds_in += samples.size / rate
                        if self.realtime:
                            start = time.monotonic() if start is None else start
                            # A chunk exists once its last sample has "played".
                            if self._play_until(start + seconds_in / self.speed, stop):
                                break
                        chunk = self._chunk(samples, rate, measured=seen is not None)
                        if chunk is not None:
                            yield chunk
            except AudioDecodeError as exc:
                self.counters["decode_errors"] += 1
                tail = self._flush()
                if tail is not None:
                    yield tail
                message = str(exc) if str(self.path) in str(exc) else f"{self.path}: {exc}"
                self._status("failed", message)
                raise SourceError(message) from exc
            if not self.loop or not decoded_any:
                break
        yield from self._end()
