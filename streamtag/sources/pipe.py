"""Raw PCM from a binary stream (standard input by default), e.g.
``ffmpeg -i INPUT -f s16le -ac 2 -ar 48000 - | streamtag ... pipe:``."""

from __future__ import annotations

import os
import select
import stat
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from streamtag.errors import SourceError
from streamtag.sources.base import AudioChunk, Source
from streamtag.sources.hosts import redact_url

FORMATS: dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


class PipeSource(Source):
    """Interleaved little-endian PCM, ``format`` "s16le" or "f32le", ``channels`` channels at
    ``rate`` Hz (defaults as FFmpeg's raw demuxers: s16le, 44100 Hz, 1 channel).

    Reads up to ``block_frames`` frames at a time and yields what arrived (partial reads are
    fine; a frame split across reads is completed by the next). At end of input a trailing
    partial frame is dropped and counted in ``counters["dropped_bytes"]``. On a real pipe or
    socket ``stop`` is honoured within 0.1 s; other streams are read until they return.
    """

    kind = "pipe"
    schemes = ("pipe",)
    spec_help = "pipe:"
    live = False

    @classmethod
    def target_of(cls, rest: str, text: str) -> str:
        if rest not in ("", "-"):
            raise SourceError(f"pipe source {redact_url(text)!r}: write just 'pipe:' and give "
                              "format=, rate=, channels= as options")
        return ""

    @classmethod
    def arguments(cls, target: str) -> tuple[str, ...]:
        return ()  # standard input, or the stream= option

    def __init__(self, *, format: str = "s16le", rate: float = 44100, channels: int = 1,
                 stream: BinaryIO | None = None, block_frames: int = 4096) -> None:
        super().__init__()
        if format not in FORMATS:
            raise SourceError(f"pipe: unknown format {format!r}; use one of {sorted(FORMATS)}")
        if not rate or float(rate) <= 0:
            raise SourceError(f"pipe: rate must be a positive number of Hz, got {rate!r}")
        if int(channels) < 1:
            raise SourceError(f"pipe: channels must be at least 1, got {channels!r}")
        if int(block_frames) < 1:  # a read of 0 bytes would look like the end of the input
            raise SourceError(f"pipe: block_frames must be at least 1, got {block_frames!r}")
        self.format = format
        self.rate = float(rate)
        self.channels = int(channels)
        self.stream = stream
        self.block_frames = int(block_frames)
        self.description = f"pipe:{format},{self.rate:g}Hz,{self.channels}ch"
        self.counters["dropped_bytes"] = 0

    def _open(self) -> None:
        if self.stream is None:
            self.stream = sys.stdin.buffer

    def chunks(self, stop: threading.Event) -> Iterator[AudioChunk]:
        self._require_open()
        dtype = FORMATS[self.format]
        frame_bytes = dtype.itemsize * self.channels
        block_bytes = frame_bytes * self.block_frames
        read = self._reader()
        pending = b""
        while not stop.is_set():
            try:
                with self._waiting():
                    data = read(block_bytes)
            except OSError as exc:
                message = f"{self.description}: read failed: {exc}"
                self._status("failed", message)
                raise SourceError(message) from exc
            if data is None:  # nothing yet (poll timed out, or a non-blocking stream)
                continue
            if not data:
                break
            pending += data
            usable = len(pending) - len(pending) % frame_bytes
            if not usable:
                continue
            samples = np.frombuffer(pending[:usable], dtype=dtype).reshape(-1, self.channels)
            pending = pending[usable:]
            if dtype.kind == "i":
                samples = samples.astype(np.float32) / 32768.0
            chunk = self._chunk(samples, self.rate)
            if chunk is not None:
                yield chunk
        if pending and not stop.is_set():  # end of input inside a frame
            self.counters["dropped_bytes"] += len(pending)
        yield from self._end(dropped_bytes=self.counters["dropped_bytes"])

    def _reader(self):
        """A read(n) that returns b"" at EOF, None when nothing arrived within 0.1 s."""
        stream = self.stream
        fd = _pollable_fd(stream)
        if fd is None:
            return getattr(stream, "read1", stream.read)

        def read(n: int) -> bytes | None:
            # Bypass Python's buffer so select() sees every byte that is waiting.
            ready, _, _ = select.select([fd], [], [], 0.1)
            return os.read(fd, n) if ready else None

        return read


def _pollable_fd(stream) -> int | None:
    """The descriptor of a pipe, FIFO or socket, else None. Reading it directly skips the
    stream's Python buffer, which is empty unless someone read from the stream before."""
    if os.name != "posix":
        return None
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    return fd
