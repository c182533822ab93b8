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


class ByteLimitError(OSError):
    """The station sent more than a bound allows: the connection is cut, with this reason."""


class ByteBudget:
    """The bytes one connection may read: see the module's text. ``spend`` raises
    ByteLimitError past the bound; ``earn`` credits decoded audio."""

    def __init__(self, bytes_per_audio_s: float, leeway_bytes: int) -> None:
        self.bytes_per_audio_s = float(bytes_per_audio_s)
        self.leeway_bytes = int(leeway_bytes)
        self.left = float(leeway_bytes)
        self.audio_s = 0.0  # decoded on this connection
        self.spent = 0  # bytes read on this connection

    def earn(self, seconds: float) -> None:
        self.audio_s += seconds
        self.left = min(self.leeway_bytes, self.left + seconds * self.bytes_per_audio_s)

    def spend(self, size: int) -> None:
        self.spent += size
        self.left -= size
        if self.left >= 0:
            return
        if self.audio_s == 0:
            raise ByteLimitError(f"no audio in the first {self.leeway_bytes >> 10} KiB of the "
                                 "stream")
        raise ByteLimitError(
            f"the station sent more than {self.bytes_per_audio_s / 1024:g} KiB per second of "
            f"the audio it decodes to, {self.leeway_bytes >> 20} MiB of leeway spent: padding "
            "or metadata between the audio (max_bytes_per_audio_s)")


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
