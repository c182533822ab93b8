"""A hostile radio station for the tests: a threaded HTTP server on 127.0.0.1 with one path per
attack on the HTTP source, a server that answers with another service's banner, and a way to
run a source in a process of its own and measure how much memory it took.

Paths of ``HostileStation`` (every request's path and headers, names in lower case, are kept
in ``requests``):

- ``/stream``: the MP3 once, as a plain HTTP server sends a file (any query string).
- ``/ffconcat``, ``/hls``: a playlist naming ``local_name`` (a file in the client's working
  directory) as the body, with a Content-Type that lets FFmpeg probe.
- ``/metaint1``: ICY with ``icy-metaint: 1`` and a full (4080-byte) block with a new title after
  every audio byte, to a client that asks for metadata; plain MP3 to one that does not.
  ``/metaint1-always``: the same, to any client.
- ``/flood``: ICY every 256 bytes of MP3, each block a new, full-size title, the MP3 repeated.
- ``/escapes``: ICY every 8192 bytes; titles with terminal escape sequences and one of 4000
  characters.
- ``/redirect-here``, ``/redirect-away``, ``/redirect-userinfo``, ``/redirect-ftp``: 302 to
  ``/stream`` on this server, to ``peer`` (another server's ``/stream``), to ``peer`` with a user
  part in the URL, and to ``ftp_url``.
- ``/missing``: 404 with a reason phrase and a body that carry ``BANNER``.
- ``/garbage``: 200 audio/mpeg and text that is not audio, up to ``garbage_bytes``.
- ``/drip``, ``/continue``, ``/trailer``: an answer that never brings audio although every
  read gets a byte in time: a head sent a byte at a time, "100 Continue" for ever, 3 s of MP3
  then a chunked trailer that never ends.
- ``/continue-flood``: "100 Continue" as fast as the client reads, for ever.
- ``/trailer-flood``: a chunked answer of 3 s of MP3, the last chunk, then a trailer as fast as
  the client reads, for ever.
- ``/chunk-ext``: the MP3 at real time in chunks of 100 bytes, each size line padded with a
  chunk extension of ``extension_bytes`` (HTTP allows any; http.client reads up to 64 KiB).
- ``/tiny-chunks``: the MP3 at real time, one byte a chunk.
- ``/chunked``: the MP3 at real time in chunks of 1600 bytes (an honest chunked station).
- ``/m4a-title``, ``/wav-list``: an 8 kB head that declares a title of ``declared_bytes``
  (an M4A's ©nam data atom, a WAV's LIST/INFO chunk), then nothing more for ever.
- ``/rate1``: a WAV whose header says 1 Hz.
- ``/radio``: the MP3 repeated at real time (an honest station, beside the hostile ones).
- ``/loop/NAME``: ``loops[NAME]`` = (Content-Type, bytes, seconds of audio they hold) repeated
  at real time: any format a station may send (7.1 AAC, ...).
- ``/padded``: the MP3 at real time with zero bytes between its pieces, as many as the client
  takes (once the connection has played ``attack_after_s`` or ``go`` is set; the MP3 alone
  before).
- ``/ogg-comment``: a chained Ogg stream: ``vorbis`` (its first link) at real time, and then
  (as for /padded) a second link whose comment packet holds ``comment_bytes``, sent as fast as
  read, made page by page as it goes (its pages all alike), then that link's audio.
- ``/ogg-beside``: an Ogg stream of two logical streams, as fast as read: ``vorbis`` and,
  beside it, a header packet of a second stream that never ends, ``beside_bytes_per_s`` of it
  per second of the audio (within what the audio allows).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from streamtag.audio.testsignals import music_like

BANNER = "BANNER-of-another-service-7f3a"
FULL_BLOCK = 255 * 16


def icy_block(text: str, size: int | None = None) -> bytes:
    """A metadata block holding ``text``, padded with NULs to ``size`` bytes (a multiple of 16)
    or to the next multiple of 16."""
    raw = text.encode("utf-8")
    size = size if size is not None else -(-len(raw) // 16) * 16
    return bytes([size // 16]) + raw[:size].ljust(size, b"\0")


_PADDING = ("x" * 3000 + "';").encode()


def title_block(n: int) -> bytes:
    """A full-size block with title number ``n``, each different."""
    text = f"StreamTitle='Title {n} ".encode() + _PADDING
    return bytes([FULL_BLOCK // 16]) + text.ljust(FULL_BLOCK, b"\0")


def wav_header(rate: int, channels: int, bits: int, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A RIFF/WAVE header of PCM at ``rate`` Hz (any rate, as a hostile file may declare)."""
    import struct

    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes))


def _box(name: bytes, body: bytes, declared: int | None = None) -> bytes:
    import struct

    return struct.pack(">I4s", 8 + len(body) if declared is None else declared, name) + body


def m4a_title_head(declared: int, size: int = 8192) -> bytes:
    """An M4A's head (ftyp, then moov/udta/meta/ilst/©nam/data) whose title's data atom
    declares ``declared`` bytes, every atom around it sized to hold it; ``size`` bytes of it."""
    text = b"\0\0\0\x01\0\0\0\0" + b"T" * size  # the data atom's type, locale, text
    atom, inner = b"data", declared
    handler = _box(b"hdlr", b"\0" * 8 + b"mdirappl" + b"\0" * 9)  # iTunes' metadata
    for name, extra in ((b"\xa9nam", b""), (b"ilst", b""), (b"meta", b"\0\0\0\0" + handler),
                        (b"udta", b""), (b"moov", b"")):
        text = _box(atom, text, inner)
        inner += 8 + len(extra)
        text, atom = extra + text, name
    head = _box(b"ftyp", b"M4A \0\0\0\0M4A mp42isom") + _box(atom, text, inner)
    return head[:size]


def wav_list_head(declared: int, size: int = 8192) -> bytes:
    """A WAV's head whose LIST/INFO chunk holds a title (INAM) of ``declared`` bytes;
    ``size`` bytes of it."""
    import struct

    head = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 2, 44100, 44100 * 4, 4, 16)
            + b"LIST" + struct.pack("<I", declared + 12) + b"INFO" + b"INAM"
            + struct.pack("<I", declared))
    return (head + b"T" * size)[:size]


# -- Ogg pages, written here apart from streamtag's reader of them ------------------------------

OGG_CONTINUED, OGG_FIRST, OGG_LAST = 0x01, 0x02, 0x04
NO_GRANULE = -1  # a page on which no packet ends


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        r = byte << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def slow_ogg_crc(data: bytes) -> int:
    """Ogg's page checksum as its specification writes it (CRC-32, polynomial 0x04C11DB7,
    most significant bit first, start 0, no final XOR), a byte at a time: for a few pages."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ byte]
    return crc


def ogg_page(flags: int, granule: int, serial: int, seq: int, lacing: bytes,
             body: bytes) -> bytes:
    import struct

    head = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, seq, 0, len(lacing))
    page = bytearray(head + lacing + body)
    page[22:26] = struct.pack("<I", slow_ogg_crc(bytes(page)))
    return bytes(page)


def ogg_pages(data: bytes) -> list[tuple[int, int, int, bytes, bytes]]:
    """The pages of a well-made Ogg stream: (flags, granule, serial, lacing, body) each."""
    import struct

    pages, at = [], 0
    while at < len(data):
        _, _, flags, granule, serial, _, _, count = struct.unpack_from("<4sBBqIIIB", data, at)
        lacing = data[at + 27:at + 27 + count]
        end = at + 27 + count + sum(lacing)
        pages.append((flags, granule, serial, lacing, data[at + 27 + count:end]))
        at = end
    return pages


def vorbis_ogg(seconds: float, sample_rate: int = 44100) -> bytes:
    """An Ogg Vorbis stream (mono, music-like: a tone in noise), as a station sends one link,
    encoded by ffmpeg's libvorbis."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=frequency=330:sample_rate={sample_rate}:duration={seconds}", "-f", "lavfi",
         "-i", f"anoisesrc=amplitude=0.2:sample_rate={sample_rate}:duration={seconds}",
         "-filter_complex", "amix=inputs=2", "-ac", "1", "-c:a", "libvorbis", "-f", "ogg",
         "-"], check=True, capture_output=True, timeout=60)
    return done.stdout


def relinked(vorbis: bytes, serial: int, comment_bytes: int = 0):
    """The pages of ``vorbis`` again as another link (``serial``), its comment packet replaced
    by one of ``comment_bytes`` when given: yields the link's bytes piece by piece, the huge
    packet as pages alike (Ogg's demuxers read no page numbers), made as they are taken."""
    import struct

    pages = ogg_pages(vorbis)
    first, headers, *audio = pages
    flags, granule, _, lacing, body = first
    yield ogg_page(flags, granule, serial, 0, lacing, body)
    h_flags, h_granule, _, h_lacing, h_body = headers
    if not comment_bytes:
        yield ogg_page(h_flags, h_granule, serial, 1, h_lacing, h_body)
    else:
        # the original comment packet (its first lacing value < 255) is dropped; the setup
        # packet that follows it on the page goes on a page of its own
        comment_size = 0
        for n, value in enumerate(h_lacing):
            comment_size += value
            if value < 255:
                setup_lacing, setup_body = h_lacing[n + 1:], h_body[comment_size:]
                break
        text = b"TITLE="
        head = (b"\x03vorbis" + struct.pack("<I", 9) + b"streamtag" + struct.pack("<I", 1)
                + struct.pack("<I", len(text) + comment_bytes) + text)
        full = b"\xff" * 255
        page_body = 255 * 255
        yield ogg_page(0, NO_GRANULE, serial, 1, full, head.ljust(page_body, b"x"))
        middle = ogg_page(OGG_CONTINUED, NO_GRANULE, serial, 2, full, b"x" * page_body)
        left = len(head) + comment_bytes + 1 - page_body  # the framing bit ends the packet
        while left >= page_body:
            yield middle
            left -= page_body
        tail = b"x" * (left - 1) + b"\x01"
        last_lacing = b"\xff" * (len(tail) // 255) + bytes([len(tail) % 255])
        yield ogg_page(OGG_CONTINUED, 0, serial, 3, last_lacing, tail)
        yield ogg_page(0, 0, serial, 4, setup_lacing, setup_body)
    for seq, (a_flags, a_granule, _, a_lacing, a_body) in enumerate(audio, 5):
        yield ogg_page(a_flags, a_granule, serial, seq, a_lacing, a_body)


def bare_mp3(path: Path, seconds: float = 3.0, sample_rate: int = 44100) -> bytes:
    """A bare CBR MP3 byte stream of music-like sound (no Xing frame, no ID3), as radio servers
    send, written by PyAV to ``path``."""
    x = (np.clip(music_like(seconds, sample_rate, seed=11), -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="mp3",
                 options={"write_xing": "0", "id3v2_version": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout="mono")
        stream.bit_rate = 128000
        for i in range(0, len(x), 4608):
            frame = av.AudioFrame.from_ndarray(x[None, i:i + 4608], format="s16", layout="mono")
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.read_bytes()


class HostileStation:
    def __init__(self, mp3: bytes, local_name: str = "secret.wav", *,
                 bytes_per_s: float = 1e9, garbage_bytes: int = 16 << 20) -> None:
        self.mp3, self.local_name = mp3, local_name
        self.bytes_per_s, self.garbage_bytes = bytes_per_s, garbage_bytes
        self.peer: str | None = None  # a URL that /redirect-away sends clients to
        self.ftp_url: str | None = None
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent: dict[str, int] = {}  # bytes of body sent per path
        # /padded and /ogg-comment attack once a connection has played attack_after_s, or
        # once go is set
        self.go = threading.Event()
        self.attack_after_s = 1.0
        self.vorbis: bytes | None = None  # the first link of /ogg-comment, and /ogg-beside's
        self.vorbis_s = 0.0
        self.comment_bytes = 64 << 20
        self.beside_bytes_per_s = 1.8 * (1 << 20)  # /ogg-beside's second stream, per audio s
        self.loops: dict[str, tuple[str, bytes, float]] = {}  # /loop/NAME
        self.extension_bytes = 60000  # /chunk-ext's per chunk (under http.client's 64 KiB)
        self.declared_bytes = 1_000_000_000  # /m4a-title's and /wav-list's title
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                path = self.path.split("?")[0]
                owner.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
                route = getattr(self, "route_" + path.strip("/").replace("-", "_"), None)
                if path.startswith("/loop/") and path[len("/loop/"):] in owner.loops:
                    route = self.loop
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(path)
                except OSError:  # the client left
                    pass

            def send(self, path: str, data: bytes) -> None:
                self.wfile.write(data)
                owner.sent[path] = owner.sent.get(path, 0) + len(data)

            def pace(self, t0: float, sent: int) -> None:
                time.sleep(max(0.0, t0 + sent / owner.bytes_per_s - time.monotonic()))

            def head(self, content_type: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()

            def route_stream(self, path):
                self.send_response(200)
                self.send_header("Content-Type", "audio/mpeg")
                self.send_header("Content-Length", str(len(owner.mp3)))
                self.end_headers()
                self.send(path, owner.mp3)

            def route_ffconcat(self, path):
                self.head("application/octet-stream")
                self.send(path, f"ffconcat version 1.0\nfile '{owner.local_name}'\n".encode())

            def route_hls(self, path):
                self.head("application/vnd.apple.mpegurl")
                self.send(path, ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
                                 f"#EXTINF:2.0,\n{owner.local_name}\n#EXT-X-ENDLIST\n").encode())

            def route_metaint1(self, path, always: bool = False):
                if not always and self.headers.get("Icy-MetaData") != "1":
                    self.repeat_mp3(path)
                    return
                # A type FFmpeg cannot place and MP3 joined mid-frame, as a radio's burst
                # starts: FFmpeg probes some 200 frames (80 KB: 330 MB of metadata here).
                self.head("application/octet-stream", {"icy-metaint": "1"})
                audio = owner.mp3[1000:]
                t0, sent, n = time.monotonic(), 0, 0
                while True:
                    piece = bytearray()
                    for byte in audio[n % len(audio):][:64]:
                        piece += bytes([byte]) + title_block(n)
                        n += 1
                    self.send(path, piece)
                    sent += len(piece)
                    self.pace(t0, sent)

            def route_metaint1_always(self, path):
                self.route_metaint1(path, always=True)

            def repeat_mp3(self, path):
                self.head("audio/mpeg")
                t0, sent = time.monotonic(), 0
                while True:
                    self.send(path, owner.mp3)
                    sent += len(owner.mp3)
                    self.pace(t0, sent)

            def icy(self, path, metaint: int, block_of) -> None:
                self.head("audio/mpeg", {"icy-metaint": str(metaint), "icy-name": "hostile"})
                t0, sent, n, at = time.monotonic(), 0, 0, 0
                data = owner.mp3
                while True:
                    piece = bytearray()
                    for _ in range(16):
                        part = (data[at:] + data)[:metaint]  # the MP3 repeated
                        at = (at + metaint) % len(data)
                        piece += part + block_of(n)
                        n += 1
                    self.send(path, piece)
                    sent += len(piece)
                    self.pace(t0, sent)

            def route_drip(self, path):
                # the answer's head a byte at a time, each within any read timeout, never done
                self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nX-Drip: ")
                while True:
                    self.wfile.write(b"x")
                    time.sleep(0.2)

            def route_continue(self, path):
                # "100 Continue" for ever: http.client reads past each to the real answer
                while True:
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    time.sleep(0.2)

            def route_trailer(self, path):
                # a chunked answer: 3 s of MP3, the last chunk, then a trailer that never ends
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                self.wfile.write(b"%x\r\n" % len(owner.mp3) + owner.mp3 + b"\r\n0\r\n")
                while True:
                    self.wfile.write(b"X-Trailer: more\r\n")
                    time.sleep(0.2)

            def route_continue_flood(self, path):
                answer = b"HTTP/1.1 100 Continue\r\n\r\n" * 256
                while True:
                    self.send(path, answer)

            def route_trailer_flood(self, path):
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                self.send(path, b"%x\r\n" % len(owner.mp3) + owner.mp3 + b"\r\n0\r\n")
                lines = b"X-Trailer: more\r\n" * 4096
                while True:
                    self.send(path, lines)

            def chunked(self, path, size: int, extension: bytes = b"") -> None:
                # the MP3 at real time (128 kbit/s) in chunks of ``size`` bytes, each size line
                # carrying ``extension``
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                t0, audio = time.monotonic(), 0
                while True:
                    for at in range(0, len(owner.mp3), 1600):  # 0.1 s of audio at a time
                        piece, out = owner.mp3[at:at + 1600], bytearray()
                        for start in range(0, len(piece), size):
                            part = piece[start:start + size]
                            out += b"%x%s\r\n%s\r\n" % (len(part), extension, part)
                        self.send(path, bytes(out))
                        audio += len(piece)
                        time.sleep(max(0.0, t0 + audio / 16000 - time.monotonic()))

            def route_chunk_ext(self, path):
                self.chunked(path, 100, b";x=" + b"p" * (owner.extension_bytes - 3))

            def route_tiny_chunks(self, path):
                self.chunked(path, 1)

            def route_chunked(self, path):
                self.chunked(path, 1600)

            def stall(self, path, content_type: str, head: bytes) -> None:
                self.head(content_type)
                self.send(path, head)
                while True:  # nothing more, and the connection kept open
                    time.sleep(0.2)
                    self.wfile.flush()

            def route_m4a_title(self, path):
                self.stall(path, "audio/mp4", m4a_title_head(owner.declared_bytes))

            def route_wav_list(self, path):
                self.stall(path, "audio/wav", wav_list_head(owner.declared_bytes))

            def route_rate1(self, path):
                # a WAV (u8, mono) whose header says 1 Hz, its bytes as fast as read: each
                # byte would be a second of audio
                self.head("audio/wav")
                self.send(path, wav_header(1, 1, 8) + bytes(range(256)) * 64)

            def route_radio(self, path):
                self.head("audio/mpeg")
                t0, sent = time.monotonic(), 0
                while True:
                    for at in range(0, len(owner.mp3), 1600):  # 0.1 s of 128 kbit/s
                        self.send(path, owner.mp3[at:at + 1600])
                        sent += 1600
                        time.sleep(max(0.0, t0 + sent / 16000 - time.monotonic()))

            def loop(self, path):
                content_type, data, seconds = owner.loops[path[len("/loop/"):]]
                self.head(content_type)
                t0, sent, step = time.monotonic(), 0, max(1, int(len(data) / seconds / 10))
                while True:
                    for at in range(0, len(data), step):  # a tenth of a second at a time
                        self.send(path, data[at:at + step])
                        sent += len(data[at:at + step])
                        time.sleep(max(0.0, t0 + sent * seconds / len(data)
                                       - time.monotonic()))

            def route_padded(self, path):
                self.head("audio/mpeg")
                t0, sent, zeros = time.monotonic(), 0, bytes(1 << 16)
                while True:
                    for at in range(0, len(owner.mp3), 1600):
                        self.send(path, owner.mp3[at:at + 1600])
                        sent += 1600
                        due = t0 + sent / 16000
                        while owner.attacking(t0) and time.monotonic() < due:
                            self.send(path, zeros)  # as fast as the client reads
                        time.sleep(max(0.0, due - time.monotonic()))

            def route_ogg_comment(self, path):
                self.head("application/ogg")
                link = owner.vorbis
                t0, sent, links = time.monotonic(), 0, 0
                while not owner.attacking(t0):  # the first link, again, at real time
                    links += 1
                    for page in relinked(link, 0x1000 + links):
                        if owner.attacking(t0):  # the next link begins at a page, as at a
                            break              # source switch of an Icecast mount
                        self.send(path, page)
                        sent += len(page)
                        time.sleep(max(0.0, t0 + sent * owner.vorbis_s / len(link)
                                       - time.monotonic()))
                for page in relinked(link, 0x2000, owner.comment_bytes):
                    self.send(path, page)

            def route_ogg_beside(self, path):
                self.head("application/ogg")
                pages = ogg_pages(owner.vorbis)
                other = 0x3000
                flags, granule, serial, lacing, body = pages[0]
                self.send(path, ogg_page(flags, granule, serial, 0, lacing, body))
                # the second stream's first page: a Vorbis header that begins and never ends
                full = b"\xff" * 255
                self.send(path, ogg_page(OGG_FIRST, NO_GRANULE, other, 0, full,
                                         b"\x01vorbis".ljust(255 * 255, b"y")))
                beside = ogg_page(OGG_CONTINUED, NO_GRANULE, other, 1, full, b"y" * 255 * 255)
                beside_sent = 0
                for seq, (flags, granule, serial, lacing, body) in enumerate(pages[1:], 1):
                    self.send(path, ogg_page(flags, granule, serial, seq, lacing, body))
                    # as fast as read: its first 30 s of audio come at once
                    while beside_sent < owner.beside_bytes_per_s * max(0, granule) / 44100:
                        self.send(path, beside)
                        beside_sent += len(beside)

            def route_flood(self, path):
                self.icy(path, 256, title_block)

            def route_escapes(self, path):
                titles = ["\x1b[31mRed\x1b[0m Song\x07", "Line\r\nBreak\x1b]0;pwned\x07",
                          "L" * 4000]
                self.icy(path, 8192, lambda n: icy_block(f"StreamTitle='{titles[n]}';")
                         if n < len(titles) else b"\0")

            def redirect(self, path, location: str):
                self.send_response(302)
                self.send_header("Location", location)
                self.end_headers()
                self.send(path, b"moved")

            def route_redirect_here(self, path):
                self.redirect(path, "/stream")

            def route_redirect_away(self, path):
                self.redirect(path, owner.peer)

            def route_redirect_userinfo(self, path):
                self.redirect(path, owner.peer.replace("http://", "http://evil:pw@"))

            def route_redirect_ftp(self, path):
                self.redirect(path, owner.ftp_url)

            def route_missing(self, path):
                body = f"<html>{BANNER} Server: secret-backend/1.2</html>".encode()
                self.send_response(404, f"Not Found {BANNER}")
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.send(path, body)

            def route_garbage(self, path):
                self.head("audio/mpeg")
                line = f"{BANNER}: this is not audio at all\n".encode() * 64
                while owner.sent.get(path, 0) < owner.garbage_bytes:
                    self.send(path, line)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def attacking(self, t0: float) -> bool:
        return self.go.is_set() or time.monotonic() - t0 >= self.attack_after_s

    def url(self, path: str, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Listener:
    """A TCP port that accepts and counts connections (and sends ``banner`` to each, if
    given): where an ftp: redirect points, or a service that does not speak HTTP."""

    def __init__(self, banner: bytes | None = None) -> None:
        self.banner = banner
        self.connections = 0
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.05)  # accept() wakes up to see close()
        self.port = self.socket.getsockname()[1]
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with client:
                client.settimeout(2.0)
                if self.banner is not None:
                    try:
                        client.sendall(self.banner)
                        client.recv(4096)  # the request, then close
                    except OSError:
                        pass

    def wait_for(self, connections: int, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.connections < connections and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connections >= connections

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.socket.close()


# -- a source in a process of its own, its memory measured -------------------------------------


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(url: str, seconds: float, options: dict) -> dict:
    """Runs an HttpSource on ``url`` for ``seconds`` in this process (meant to be a fresh one)
    and says what it took: peak resident memory above the baseline (after imports), samples,
    titles reported, the last error, the first errors and the counters. Ends the process (a
    source stuck in FFmpeg does not stop)."""
    import soxr  # noqa: F401 - loaded before the baseline (av and numpy are, above)

    from streamtag.sources.http import HttpSource

    source = HttpSource(url, **options)
    report = {"titles": 0, "samples": 0, "statuses": 0, "error": None, "last_title": None,
              "titles_ignored_extra": 0, "reasons": []}

    def on_status(state, error, extra):
        report["statuses"] += 1
        if "title" in extra:
            report["titles"] += 1
            report["last_title"] = extra["title"]
        report["titles_ignored_extra"] = max(report["titles_ignored_extra"],
                                             extra.get("titles_ignored", 0))
        if error:
            report["error"] = error[:500]
            if len(report["reasons"]) < 32:  # why each connection was lost
                report["reasons"].append(error[:500])

    baseline = _kib("VmRSS")
    started = time.process_time()
    source.open(16000, on_status)
    stop = threading.Event()

    def run():
        try:
            for chunk in source.chunks(stop):
                report["samples"] += int(chunk.samples.size)
        except Exception as exc:  # noqa: BLE001 - reported
            report["error"] = f"{type(exc).__name__}: {exc}"[:500]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    stop.set()
    thread.join(5)
    report.update(baseline_kib=baseline, peak_kib=_kib("VmHWM"), finished=not thread.is_alive(),
                  cpu_s=time.process_time() - started,
                  counters=dict(source.counters))
    print(json.dumps(report), flush=True)
    os._exit(0)


def measure_in_subprocess(url: str, seconds: float, **options) -> dict:
    """``measure`` in a new Python process that imports this streamtag; its report, with
    ``growth_mb``: how far its resident memory rose above the baseline."""
    import streamtag

    package_root = Path(streamtag.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root),
                                                        str(Path(__file__).parent.parent)])}
    code = ("import sys, json; from support import hostile_station; "
            "hostile_station.measure(sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]))")
    # From outside the source tree, as helpers.run_python: there `python -c` would put the
    # checkout first on sys.path, whose streamtag has no compiled extension when installed.
    done = subprocess.run([sys.executable, "-c", code, url, str(seconds), json.dumps(options)],
                          env=env, capture_output=True, text=True, timeout=seconds + 60,
                          cwd=tempfile.gettempdir())
    lines = done.stdout.strip().splitlines()
    assert lines, f"the measuring process printed nothing: {done.stderr[-2000:]}"
    report = json.loads(lines[-1])
    report["growth_mb"] = (report["peak_kib"] - report["baseline_kib"]) / 1024
    return report
