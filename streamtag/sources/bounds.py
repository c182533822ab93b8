"""What a station's bytes may cost, checked as they arrive, before FFmpeg holds them.

- ``ByteBudget``: the bytes of a connection are bounded by the audio they decode to. A bucket
  starts with ``leeway_bytes`` and earns ``bytes_per_audio_s`` for each second of audio
  decoded, never holding more than ``leeway_bytes``; every byte read spends one. Over any
  stretch of the connection, then, the station sends at most the leeway plus the allowance of
  the audio decoded in it: padding, junk or metadata between the audio cut the connection
  once they pass the leeway, at any point of it, not only before its first frame.
- ``OggPages``: FFmpeg's Ogg demuxer holds each logical stream's packet until the packet
  ends, however long it grows (a comment header of a chained link, or a packet of a second
  stream that never ends while the first plays). The pages are walked as the demuxer reads
  them (the same capture search, checksum and lacing), and the bytes of packets not yet
  ended, all logical streams together, are bounded, as is the number of logical streams.
"""

from __future__ import annotations

import struct
import zlib
from typing import Protocol

OGG_CAPTURE = b"OggS"
# capture, version, flags, granule, serial, page number, CRC, lacing values
OGG_HEADER = struct.Struct("<4sBBqIIIB")
OGG_FIRST = 0x02  # a header flag: a logical stream's first page
# Pages whose checksum fails: the demuxer reads each whole and searches on inside it, so a
# stream of them costs a page's checksum per byte. A station's pages arrive whole (TCP).
MAX_BAD_OGG_PAGES = 64

# Ogg's CRC is CRC-32 with polynomial 0x04C11DB7, most significant bit first, start 0 and no
# final XOR; zlib's is the same polynomial least significant bit first: on bytes with their bits
# reversed, zlib's register (started at 0 and read without its XOR) is Ogg's, bits reversed.
_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def ogg_crc(page: bytes) -> int:
    """The CRC of an Ogg page as its header stores it (computed with that field as zeros)."""
    register = zlib.crc32(page.translate(_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{register:032b}"[::-1], 2)


class Walker(Protocol):
    """What walks a stream's bytes as they arrive (``OggPages``, ``DeclaredSizes``) and raises
    ByteLimitError past a bound."""

    def feed(self, data: bytes) -> None: ...


class ByteLimitError(OSError):
    """The station sent more than a bound allows: the connection is cut, with this reason."""


class ByteBudget:
    """The bytes one connection may read: see the module's text. ``spend`` raises
    ByteLimitError past the bound; ``earn`` credits decoded audio. ``read_cost``: what one read
    of the body costs at least, whatever it brought (``read``): a read is a pass through Python,
    so a body sent in tiny pieces is bounded in reads as padding is in bytes."""

    def __init__(self, bytes_per_audio_s: float, leeway_bytes: int, read_cost: int = 0) -> None:
        self.bytes_per_audio_s = float(bytes_per_audio_s)
        self.leeway_bytes = int(leeway_bytes)
        self.read_cost = int(read_cost)
        self.left = float(leeway_bytes)
        self.audio_s = 0.0  # decoded on this connection
        self.spent = 0  # bytes read on this connection
        self.reads = 0  # reads of the body (``read``)
        self.charged = 0  # what they cost beyond their bytes

    def earn(self, seconds: float) -> None:
        self.audio_s += seconds
        self.left = min(self.leeway_bytes, self.left + seconds * self.bytes_per_audio_s)

    def read(self, size: int) -> None:
        """A read of the body that brought ``size`` bytes (spent already, or by ``spend``):
        spends what it costs beyond them."""
        self.reads += 1
        charge = max(0, self.read_cost - size)
        self.charged += charge
        self._take(charge)

    def spend(self, size: int) -> None:
        self.spent += size
        self._take(size)

    def _take(self, size: int) -> None:
        self.left -= size
        if self.left >= 0:
            return
        if self.charged > self.spent:
            raise ByteLimitError(
                f"the station sends its audio in pieces too small to read ({self.reads} reads "
                f"of {self.spent / max(1, self.reads):.0f} bytes on average; a read costs as "
                f"much as {self.read_cost} bytes would, max_bytes_per_audio_s)")
        if self.audio_s == 0:
            raise ByteLimitError(f"no audio in the first {self.leeway_bytes >> 10} KiB of the "
                                 "stream")
        raise ByteLimitError(
            f"the station sent more than {self.bytes_per_audio_s / 1024:g} KiB per second of "
            f"the audio it decodes to, {self.leeway_bytes >> 20} MiB of leeway spent: padding, "
            "metadata or HTTP framing between the audio (max_bytes_per_audio_s)")


class OggPages:
    """Walks an Ogg byte stream as FFmpeg's demuxer reads it and raises ByteLimitError when
    the bytes of its packets not yet ended pass ``max_packet_bytes`` (all logical streams
    together), or its logical streams pass ``max_streams``.

    As the demuxer does: a page is found by its capture pattern, and one whose checksum or
    version is wrong is passed over (the search goes on inside it); a new serial number adds a
    stream while no stream's latest page has brought data (a first page does not), and
    replaces the single stream after that (a chained link), keeping what it held. A packet
    ends at a lacing value below 255: a page without the continued flag is taken to continue
    it all the same, which counts no fewer bytes than the demuxer holds.
    """

    def __init__(self, max_packet_bytes: int, max_streams: int) -> None:
        self.max_packet_bytes, self.max_streams = max_packet_bytes, max_streams
        self.pending: dict[int, int] = {}  # serial -> bytes of its packet not yet ended
        self._data: dict[int, bool] = {}  # serial -> whether its latest page brought data
        self.pages = 0  # pages read whole, checksum right
        self.skipped = 0  # bytes passed over between pages
        self.bad_pages = 0  # captures whose page failed its checksum or version
        self._buffer = bytearray()  # from the start of a page not yet whole (or a search)

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while True:
            found = buffer.find(OGG_CAPTURE, at)
            if found < 0:
                keep = max(at, len(buffer) - len(OGG_CAPTURE) + 1)  # a capture cut in two
                self.skipped += keep - at
                at = keep
                break
            self.skipped += found - at
            at = found
            if len(buffer) - at < OGG_HEADER.size:
                break
            _, version, flags, _, serial, _, crc, count = OGG_HEADER.unpack_from(buffer, at)
            lacing_end = at + OGG_HEADER.size + count
            if len(buffer) < lacing_end:
                break
            lacing = bytes(buffer[at + OGG_HEADER.size:lacing_end])
            end = lacing_end + sum(lacing)
            if len(buffer) < end:
                break
            page = bytearray(buffer[at:end])
            page[22:26] = b"\0\0\0\0"
            if version != 0 or ogg_crc(bytes(page)) != crc:
                self.bad_pages += 1
                if self.bad_pages > MAX_BAD_OGG_PAGES:
                    raise ByteLimitError(f"the Ogg stream is damaged: more than "
                                         f"{MAX_BAD_OGG_PAGES} pages failed their checksum")
                at += len(OGG_CAPTURE)  # not a page: the search goes on after its capture
                continue
            self._page(flags, serial, lacing)
            at = end
        del buffer[:at]

    def _page(self, flags: int, serial: int, lacing: bytes) -> None:
        self.pages += 1
        pending, data = self.pending, self._data
        if serial not in pending:
            if not any(data.values()):
                if len(pending) >= self.max_streams:
                    raise ByteLimitError(f"the Ogg stream holds more than {self.max_streams} "
                                         "logical streams")
                pending[serial] = 0
            elif len(pending) == 1:  # a chained link: it replaces the stream, keeping its state
                (held,) = pending.values()
                pending.clear()
                data.clear()
                pending[serial] = held
            else:
                return  # the demuxer cannot take a new stream here and fails
        data[serial] = not flags & OGG_FIRST
        ended = lacing.rstrip(b"\xff")
        open_bytes = 255 * (len(lacing) - len(ended))  # after the last packet that ends here
        pending[serial] = open_bytes if ended else pending[serial] + open_bytes
        if sum(pending.values()) > self.max_packet_bytes:
            raise ByteLimitError(f"an Ogg packet of more than {self.max_packet_bytes >> 10} KiB "
                                 "(a comment header or a packet beside the audio; streamtag "
                                 f"reads packets of at most {self.max_packet_bytes >> 20} MiB)")


# Containers whose head is a list of chunks that declare their sizes, by their first bytes:
# (magic, offset of the first chunk, bytes of a chunk's id and size, its size's format, the ids
# of the chunks that hold the audio, whether chunks are padded to an even size).
_RIFF = (12, "<I", (b"data",), True)
_AIFF = (12, ">I", (b"SSND",), True)
CHUNKED_HEADS = {b"RIFF": _RIFF, b"RF64": _RIFF, b"BW64": _RIFF, b"RIFX": (12, ">I", (b"data",),
                                                                         True),
                 b"FORM": _AIFF, b"caff": (8, ">q", (b"data",), False)}


class DeclaredSizes:
    """Walks the chunks (RIFF/WAV, RF64, AIFF, CAF) or boxes (MP4/M4A) of a stream's head as
    they arrive and raises ByteLimitError for one that declares more than ``max_bytes`` before
    the audio: FFmpeg gives memory for a declared size before the bytes arrive (a WAV's LIST
    chunk or an M4A's title atom of 2 GB is a zeroed allocation of 2 GB), and a head the
    connection's byte budget could never deliver is refused before FFmpeg reads it.

    ``kind``: ``"mp4"`` (boxes, walked to the end: a fragmented stream's boxes follow its
    audio) or a magic of CHUNKED_HEADS (walked to the chunk that holds the audio, whose size a
    live stream leaves open). ``kind_of`` tells it from a stream's first 8 bytes."""

    def __init__(self, kind: str | bytes, max_bytes: int) -> None:
        self.kind, self.max_bytes = kind, max_bytes
        if isinstance(kind, str):  # "mp4"
            self._at, self._done = 0, False  # boxes from the first byte
        else:
            first, self._size, self._audio, self._even = CHUNKED_HEADS[kind]
            self._at, self._done = first, False
        self._buffer = bytearray()
        self._offset = 0  # stream offset of the buffer's first byte

    @staticmethod
    def kind_of(head: bytes) -> str | bytes | None:
        if head[4:8] == b"ftyp":
            return "mp4"
        return head[:4] if head[:4] in CHUNKED_HEADS else None

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        while not self._done:
            start = self._at - self._offset
            if start > len(self._buffer):  # inside a chunk's body: drop what passed
                self._offset += len(self._buffer)
                self._buffer.clear()
                return
            header = self._header(start)
            if header is None:
                del self._buffer[:start]
                self._offset += start
                return
            name, size, header_bytes = header
            self._check(name, size, header_bytes)
            if self._done:
                return
            self._at += max(size, header_bytes)

    def _header(self, start: int) -> tuple[bytes, int, int] | None:
        """(id, declared size of the whole chunk, its header's bytes) at ``start``, or None
        when not all of it has arrived."""
        buffer = self._buffer
        if self.kind == "mp4":
            if len(buffer) - start < 8:
                return None
            size, name = struct.unpack_from(">I4s", buffer, start)
            if size == 1:  # a 64-bit size follows
                if len(buffer) - start < 16:
                    return None
                (size,) = struct.unpack_from(">Q", buffer, start + 8)
                return name, size, 16
            if size == 0:  # to the end of the stream: the last box, the audio or refused
                if name != b"mdat":
                    self._refuse(name, None)
                self._done = True
            return name, size, 8
        width = struct.calcsize(self._size)
        if len(buffer) - start < 4 + width:
            return None
        name = bytes(buffer[start:start + 4])
        (size,) = struct.unpack_from(self._size, buffer, start + 4)
        body = size + (size & 1 if self._even else 0)
        return name, 4 + width + max(0, body), 4 + width

    def _check(self, name: bytes, size: int, header_bytes: int) -> None:
        if self.kind == "mp4":
            if name != b"mdat" and size > self.max_bytes:
                self._refuse(name, size)
            return
        if name in self._audio:  # the audio: a live stream's size is open
            self._done = True
        elif size > self.max_bytes:
            self._refuse(name, size - header_bytes)

    def _refuse(self, name: bytes, size: int | None) -> None:
        shown = name.decode("latin-1").encode("unicode_escape").decode("ascii")
        declared = "the rest of the stream" if size is None else f"{size} bytes"
        raise ByteLimitError(f"the stream's head declares a {shown!r} chunk of {declared}, "
                             f"more than the {self.max_bytes >> 10} KiB a connection may read "
                             "before its audio (a station's head is a few kB)")
