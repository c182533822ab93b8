"""ICY in-band metadata (SHOUTcast, Icecast): the stream title, placed in the audio byte stream.

A client that sends ``Icy-MetaData: 1`` may get a ``icy-metaint: N`` response header; the body is
then N audio bytes, one metadata block, N audio bytes, and so on. A block is one length byte L
and 16 * L bytes of text such as ``StreamTitle='Artist - Title';StreamUrl='';``, padded with
NULs; L = 0 (no bytes) is the usual "nothing new". The text has no escaping: a title may hold
quotes and semicolons, and older servers send Latin-1 rather than UTF-8.

``IcySplitter`` takes the body in whatever pieces the network delivers and returns the audio
bytes, keeping the latest block with the number of audio bytes before it (its place on the
stream's byte timeline); ``IcyReader`` is the file-like object PyAV reads the audio from.

Every byte here comes from a station that may be hostile, so everything held is bounded: one
block being read (at most 4080 bytes) and one block not yet placed. A block that completes
before the previous one was placed replaces it and takes its place on the timeline
(``replaced`` counts them): while FFmpeg probes the stream, or reads ahead of the demuxer, no
block is placed, and a station with a tiny ``icy-metaint`` and full blocks would otherwise pile
up thousands of them a second. Taking the waiting block's place (rather than its own, further
on) keeps a stream whose blocks come faster than the demuxer's read-ahead from never having
one due: the title the stream has now is placed where the first waiting block sat, at most a
read-ahead (8 KB, half a second of a 128 kbit/s stream) early. A block is parsed when it is
due, within an allowance of parses (``IcySplitter``), and its title cleaned then
(``clean_title``: control characters and escape sequences out, 256 characters at most).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from streamtag.sources.base import clean_title
from streamtag.sources.bounds import ByteBudget, ByteLimitError, Walker

BLOCK_UNIT = 16  # a block's length byte counts units of 16 bytes
MAX_BLOCK = 255 * BLOCK_UNIT  # the largest block a length byte can announce
MAX_METAINT = 1 << 24  # far above any server's (8192 to 65536 in practice)
# Below this, the HTTP source reads a station without metadata (see sources/http.py): servers
# use 8192 (SHOUTcast) or 16000 (Icecast), and a metaint of 1 with full blocks makes every audio
# byte cost 4 KB of metadata to read and parse.
MIN_METAINT = 256
# Blocks that differ from the last one parsed are parsed at most this often (a title changes
# with a track), and this many at once.
PARSES_PER_S = 2.0
PARSE_BURST = 8
# Bytes 0x80-0x9f of Windows-1252, which many stations send where they mean Latin-1: in Latin-1
# they are C1 control characters, which clean_title would remove ("Don't" with a 0x92 quote).
_CP1252 = {i: bytes([i]).decode("cp1252") for i in range(0x80, 0xA0)
           if i not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}

# Runs of identifier characters: a key is the part of a run from its first letter, when "='"
# follows the run.
_WORD = re.compile(r"[A-Za-z0-9_]+")
_LETTER = re.compile(r"[A-Za-z]")


def decode_text(raw: bytes) -> str:
    """Metadata bytes as text: UTF-8 where they are valid UTF-8, else Windows-1252 (Latin-1
    for the five bytes it leaves undefined: every byte is a character, so nothing is lost or
    refused)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1").translate(_CP1252)


def parse_metadata(block: bytes) -> dict[str, str]:
    """The fields of one metadata block, e.g. {"StreamTitle": "...", "StreamUrl": "..."}.

    A field is ``key='value';`` where the value runs to the first ``'`` (or ``';``) that the
    next key or the end of the text follows: titles such as  It's; "quoted"  survive, as no
    escaping exists to mark their quotes. Linear in the block's length whatever it holds (a
    regular expression for the same rule backtracks to quadratic time on a hostile block).
    """
    text = decode_text(block.rstrip(b"\0")).strip()
    keys: list[tuple[int, int, int]] = []  # (key start, key end, run start) before a "='"
    for run in _WORD.finditer(text):
        if text.startswith("='", run.end()):
            letter = _LETTER.search(text, run.start(), run.end())
            if letter is not None:
                keys.append((letter.start(), run.end(), run.start()))
    next_key = {run_start for start, _, run_start in keys if start == run_start}
    end = len(text.rstrip())  # from here on only white space: the end of the text

    def closes(q: int) -> bool:  # a value may end just before q: a key or the end follows
        return q >= end or q in next_key

    fields: dict[str, str] = {}
    at = 0  # where the next field may start
    quote = text.find("'", 0)
    for start, key_end, _ in keys:
        if start < at:
            continue
        value = key_end + 2
        quote = text.find("'", value) if quote < value else quote
        while quote >= 0:
            if text.startswith(";", quote + 1) and closes(quote + 2):
                at = quote + 2
                break
            if closes(quote + 1):
                at = quote + 1
                break
            quote = text.find("'", quote + 1)
        if quote < 0:  # no end for this value, nor for any later one (they start later)
            break
        fields[text[start:key_end]] = text[value:quote]
    return fields


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
    """One metadata block and where it sat: after ``audio_offset`` audio bytes. ``title`` is
    its StreamTitle, cleaned (``clean_title``), None when it has none or an empty one;
    ``has_title`` whether it had the field at all (an empty one clears the title)."""

    audio_offset: int
    index: int  # the block's number in its connection, from 0
    fields: dict[str, str] = field(default_factory=dict)
    arrival: float = 0.0  # time.time() when the block was read
    title: str | None = None
    has_title: bool = False

    @classmethod
    def parse(cls, audio_offset: int, index: int, raw: bytes, arrival: float) -> IcyBlock:
        fields = parse_metadata(raw)
        title = clean_title(fields["StreamTitle"]) if "StreamTitle" in fields else ""
        return cls(audio_offset, index, fields, arrival, title or None, "StreamTitle" in fields)


class IcySplitter:
    """Separates audio bytes from metadata blocks, however the input is cut into pieces.

    ``metaint`` None passes everything through as audio. Blocks of length 0 are counted but not
    kept; of the others only the latest not yet taken is kept (``take_block``), at the place of
    the earliest not yet taken; each one it replaces is counted in ``replaced``.

    A block the same as the last one parsed is not parsed again (SHOUTcast repeats the title
    in every block); others are parsed at most PARSES_PER_S a second, PARSE_BURST at once
    (``parsed`` counts them): one of a hostile station's full, ever-changing blocks after every
    256 audio bytes cost a millisecond each to parse and clean, some 60 a second. Past the
    allowance the latest block waits unparsed, in the place of the earliest, until it allows.
    """

    def __init__(self, metaint: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metaint = metaint
        self.audio_bytes = 0  # audio bytes returned so far
        self.block_count = 0  # blocks seen, empty ones included
        self.replaced = 0  # blocks replaced by a later one before they were taken
        self.parsed = 0  # blocks parsed (others were repeats of the last one parsed)
        self._pending: IcyBlock | None = None  # the latest block not yet taken, parsed
        self._audio_left = metaint or 0  # audio bytes before the next length byte
        self._block_left: int | None = None  # bytes of the current block still to come
        self._block = bytearray()
        self._clock = clock
        self._allowance, self._earned_at = float(PARSE_BURST), clock()
        self._last_raw: bytes | None = None  # the last block parsed, and what it gave
        self._last_parsed: IcyBlock | None = None
        # the latest block not yet parsed: (audio offset, index, raw bytes, arrival)
        self._unparsed: tuple[int, int, bytes, float] | None = None

    @property
    def held_bytes(self) -> int:
        """Metadata bytes held: of the block being read (at most ``MAX_BLOCK``)."""
        return len(self._block)

    def feed(self, data: bytes) -> bytes:
        """The audio bytes in ``data``; a completed block becomes ``pending``."""
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

    @property
    def pending(self) -> IcyBlock | None:
        """The latest block not yet taken, parsed now if the allowance has a parse to give (else
        None while it waits unparsed)."""
        if self._unparsed is not None:
            self._parse(*self._unparsed)
        return self._pending

    def take_block(self, position: int | None = None) -> IcyBlock | None:
        """The pending block, once it is due before the audio byte at ``position`` (a packet's
        place in the audio bytes: the block sits at or before it); any pending block when
        ``position`` is None or unknown (negative). None otherwise, the block kept. A block is
        parsed when it is due (a block replaced before then never is)."""
        waiting = self._unparsed[0] if self._unparsed is not None else (
            None if self._pending is None else self._pending.audio_offset)
        if waiting is None or (position is not None and 0 <= position < waiting):
            return None
        block = self.pending
        if block is not None:
            self._pending = None
        return block

    def _finish_block(self) -> None:
        if self._block.strip(b"\0"):
            offset, index = self.audio_bytes, self.block_count
            if self._pending is not None:  # the new block takes the waiting one's place
                self.replaced += 1
                offset, index = self._pending.audio_offset, self._pending.index
                self._pending = None
            elif self._unparsed is not None:
                self.replaced += 1
                offset, index = self._unparsed[:2]
            self._unparsed = (offset, index, bytes(self._block), time.time())
        self._block.clear()
        self.block_count += 1
        self._block_left = None
        self._audio_left = self.metaint

    def _parse(self, offset: int, index: int, raw: bytes, arrival: float) -> None:
        """The waiting block parsed into ``pending``, when it repeats the last one parsed or
        the allowance has one to give; left waiting otherwise."""
        last = self._last_parsed
        if raw == self._last_raw and last is not None:
            self._pending = IcyBlock(offset, index, last.fields, arrival, last.title,
                                    last.has_title)
        else:
            now = self._clock()
            self._allowance = min(float(PARSE_BURST),
                                  self._allowance + (now - self._earned_at) * PARSES_PER_S)
            self._earned_at = now
            if self._allowance < 1:
                return
            self._allowance -= 1
            self.parsed += 1
            self._pending = IcyBlock.parse(offset, index, raw, arrival)
            self._last_raw, self._last_parsed = raw, self._pending
        self._unparsed = None


class IcyReader:
    """A read-only, unseekable file over an HTTP response for PyAV: audio bytes only.

    ``read`` returns what the network has (at least one byte, or b"" at the end), so a live
    stream's metadata is parsed as soon as it arrives. An error while reading (a timeout, a
    reset) ends the file and is kept in ``error`` for the caller to raise once the demuxer has
    stopped: FFmpeg would otherwise replace it with a vaguer error of its own. Every byte read
    from the network, metadata included, is spent from ``budget`` (sources/bounds.py), here or,
    with ``spent_below``, by the response as it reads them (HTTP's framing too), and every read
    costs at least the budget's ``read_cost``; the audio bytes are walked by ``pages`` (an Ogg
    stream's pages, a head's declared sizes): past any bound, the file ends with its
    ``ByteLimitError`` before FFmpeg is handed the bytes that passed it.
    """

    def __init__(self, response: Any, metaint: int | None, read_size: int = 8192,
                 waiting: Callable[[], AbstractContextManager] = nullcontext,
                 budget: ByteBudget | None = None, *, spent_below: bool = False) -> None:
        self.response = response
        self.waiting = waiting  # around each read from the network
        self.splitter = IcySplitter(metaint)
        self.read_size = read_size
        self.budget = budget
        # spent_below: the response spends every byte it reads (its framing too) from the
        # budget itself; each read is still counted here (``ByteBudget.read``)
        self.spent_below = spent_below
        self.pages: Walker | None = None  # ``walk``
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

    def walk(self, pages: Walker) -> None:
        """Walks the audio bytes from the start (the caller peeked at them and saw what
        ``pages`` reads: Ogg pages, or a head's chunks)."""
        self.pages = pages
        try:
            pages.feed(self._peeked)
        except ByteLimitError as exc:
            self.error, self.ended, self._peeked = exc, True, b""

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
            try:
                if self.budget is not None:
                    if not self.spent_below:
                        self.budget.spend(len(data))
                    self.budget.read(len(data))
                audio = self.splitter.feed(data)
                if audio and self.pages is not None:
                    self.pages.feed(audio)
            except ByteLimitError as exc:
                self.error, self.ended = exc, True
                return b""
            if audio:
                return audio
        return b""

    def take_block(self, position: int | None = None) -> IcyBlock | None:
        """The latest block not yet taken, once due before ``position`` (``IcySplitter``)."""
        return self.splitter.take_block(position)
