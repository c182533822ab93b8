"""ICY in-band metadata (SHOUTcast, Icecast): the stream title, placed in the audio byte stream.

A client that sends ``Icy-MetaData: 1`` may get a ``icy-metaint: N`` response header; the body is
then N audio bytes, one metadata block, N audio bytes, and so on. A block is one length byte L
and 16 * L bytes of text such as ``StreamTitle='Artist - Title';StreamUrl='';``, padded with
NULs; L = 0 (no bytes) is the usual "nothing new". The text has no escaping: a title may hold
quotes and semicolons, and older servers send Latin-1 rather than UTF-8.

``IcySplitter`` takes the body in whatever pieces the network delivers and returns the audio
bytes, keeping each block with the number of audio bytes before it (its place on the stream's
byte timeline); ``IcyReader`` is the file-like object PyAV reads the audio from.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

BLOCK_UNIT = 16  # a block's length byte counts units of 16 bytes
MAX_METAINT = 1 << 24  # far above any server's (8192 to 65536 in practice)

# key='value'; where the value runs to the last "';" before the next key or the end: titles
# such as  It's; "quoted"  survive, as no escaping exists to mark their quotes.
_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9_]*)='(.*?)';?(?=[A-Za-z][A-Za-z0-9_]*='|\s*$)",
                    re.DOTALL)


def decode_text(raw: bytes) -> str:
    """Metadata bytes as text: UTF-8 where they are valid UTF-8, else Latin-1 (every byte is a
    character there, so nothing is lost or refused)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_metadata(block: bytes) -> dict[str, str]:
    """The fields of one metadata block, e.g. {"StreamTitle": "...", "StreamUrl": "..."}."""
    text = decode_text(block.rstrip(b"\0")).strip()
    return {m.group(1): m.group(2) for m in _FIELD.finditer(text)}


def parse_metaint(value: Any) -> int | None:
    """The ``icy-metaint`` header as an interval in bytes; None when absent or unusable (the
    stream is then read as plain audio, with no metadata)."""
    try:
        metaint = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return metaint if 0 < metaint <= MAX_METAINT else None


@dataclass(frozen=True)
class IcyBlock:
    """One metadata block and where it sat: after ``audio_offset`` audio bytes."""

    audio_offset: int
    index: int  # the block's number in its connection, from 0
    fields: dict[str, str] = field(default_factory=dict)
    arrival: float = 0.0  # time.time() when the block was read

    @property
    def title(self) -> str | None:
        """The StreamTitle, stripped; None when the block has none or an empty one."""
        title = (self.fields.get("StreamTitle") or "").strip()
        return title or None

    @property
    def has_title(self) -> bool:
        return "StreamTitle" in self.fields


class IcySplitter:
    """Separates audio bytes from metadata blocks, however the input is cut into pieces.

    ``metaint`` None passes everything through as audio. Blocks of length 0 are counted but not
    kept; the others are appended to ``blocks`` as they complete.
    """

    def __init__(self, metaint: int | None) -> None:
        self.metaint = metaint
        self.audio_bytes = 0  # audio bytes returned so far
        self.block_count = 0  # blocks seen, empty ones included
        self.blocks: list[IcyBlock] = []
        self._audio_left = metaint or 0  # audio bytes before the next length byte
        self._block_left: int | None = None  # bytes of the current block still to come
        self._block = bytearray()

    def feed(self, data: bytes) -> bytes:
        """The audio bytes in ``data``; completed blocks go to ``blocks``."""
        if self.metaint is None:
            self.audio_bytes += len(data)
            return bytes(data)
        audio = bytearray()
        view = memoryview(data)
        while view:
            if self._audio_left:
                take = min(self._audio_left, len(view))
                audio += view[:take]
                view = view[take:]
                self._audio_left -= take
                self.audio_bytes += take
            elif self._block_left is None:  # the length byte
                self._block_left = view[0] * BLOCK_UNIT
                view = view[1:]
                self._block.clear()
                if self._block_left == 0:
                    self._finish_block()
            else:
                take = min(self._block_left, len(view))
                self._block += view[:take]
                view = view[take:]
                self._block_left -= take
                if self._block_left == 0:
                    self._finish_block()
        return bytes(audio)

    def _finish_block(self) -> None:
        if self._block.strip(b"\0"):
            self.blocks.append(IcyBlock(self.audio_bytes, self.block_count,
                                        parse_metadata(bytes(self._block)), time.time()))
        self.block_count += 1
        self._block_left = None
        self._audio_left = self.metaint


class IcyReader:
    """A read-only, unseekable file over an HTTP response for PyAV: audio bytes only.

    ``read`` returns what the network has (at least one byte, or b"" at the end), so a live
    stream's metadata is parsed as soon as it arrives. An error while reading (a timeout, a
    reset) ends the file and is kept in ``error`` for the caller to raise once the demuxer has
    stopped: FFmpeg would otherwise replace it with a vaguer error of its own.
    """

    def __init__(self, response: Any, metaint: int | None, read_size: int = 8192,
                 waiting: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.response = response
        self.waiting = waiting  # around each read from the network
        self.splitter = IcySplitter(metaint)
        self.read_size = read_size
        self.error: BaseException | None = None
        self.ended = False
        self._peeked = b""

    def peek(self, size: int) -> bytes:
        """At least ``size`` audio bytes (fewer only at the end), left for ``read``."""
        while len(self._peeked) < size:
            more = self._read_network(size - len(self._peeked))
            if not more:
                break
            self._peeked += more
        return self._peeked

    def read(self, size: int = -1) -> bytes:
        if self._peeked:
            take = len(self._peeked) if size is None or size < 0 else max(1, size)
            data, self._peeked = self._peeked[:take], self._peeked[take:]
            return data
        return self._read_network(size)

    def _read_network(self, size: int) -> bytes:
        while not self.ended:
            want = self.read_size if size is None or size < 0 else max(1, size)
            try:
                with self.waiting():
                    data = self.response.read1(want)
            except Exception as exc:  # noqa: BLE001 - kept and raised by the caller
                self.error, self.ended = exc, True
                return b""
            if not data:
                self.ended = True
                return b""
            audio = self.splitter.feed(data)
            if audio:
                return audio
        return b""

    def take_blocks(self) -> list[IcyBlock]:
        """The blocks parsed since the last call, in stream order."""
        blocks, self.splitter.blocks = self.splitter.blocks, []
        return blocks
