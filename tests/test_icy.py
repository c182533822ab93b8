"""The ICY metadata splitter and parser (sources/icy.py): a byte stream with metadata blocks
every metaint bytes, cut into pieces at every possible place."""

from __future__ import annotations

import io

import pytest

from streamtag.sources.icy import (
    IcyReader,
    IcySplitter,
    decode_text,
    parse_metadata,
    parse_metaint,
)


def block(text: bytes | str) -> bytes:
    """One metadata block as a server writes it: length byte, text, NUL padding."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    units = -(-len(raw) // 16)
    return bytes([units]) + raw.ljust(units * 16, b"\0")


def radio(audio: bytes, metaint: int, blocks: dict[int, bytes]) -> bytes:
    """`audio` with a block after every `metaint` bytes: `blocks[i]` after the i-th interval,
    an empty block (a single 0 byte) where none is given."""
    out = bytearray()
    for i, start in enumerate(range(0, len(audio), metaint)):
        out += audio[start:start + metaint]
        if start + metaint <= len(audio):
            out += blocks.get(i, b"\0")
    return bytes(out)


AUDIO = bytes(range(256)) * 5  # 1280 bytes that are easy to check
METAINT = 100
BLOCKS = {0: block("StreamTitle='First';StreamUrl='';"),
          3: block("StreamTitle='Second';"),
          7: block("StreamTitle='';")}


def split_in_pieces(data: bytes, sizes) -> tuple[bytes, IcySplitter]:
    splitter = IcySplitter(METAINT)
    audio, at, i = bytearray(), 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)]
        audio += splitter.feed(data[at:at + size])
        at, i = at + size, i + 1
    return bytes(audio), splitter


@pytest.mark.parametrize("sizes", [[len(radio(AUDIO, METAINT, BLOCKS))], [1], [7, 1, 3],
                                   [99], [100], [101], [102], [16, 17], [250]])
def test_audio_and_blocks_come_out_the_same_however_the_bytes_are_cut(sizes):
    audio, splitter = split_in_pieces(radio(AUDIO, METAINT, BLOCKS), sizes)
    assert audio == AUDIO
    assert [(b.audio_offset, b.index, b.title) for b in splitter.blocks] == [
        (100, 0, "First"), (400, 3, "Second"), (800, 7, None)]
    assert splitter.blocks[0].fields == {"StreamTitle": "First", "StreamUrl": ""}
    assert splitter.blocks[2].has_title  # an explicit empty title: the title was cleared
    assert splitter.block_count == len(AUDIO) // METAINT  # empty blocks are counted too


def test_a_block_cut_between_its_length_byte_and_its_text():
    splitter = IcySplitter(4)
    data = b"abcd" + block("StreamTitle='Cut';") + b"efgh\0"
    assert splitter.feed(data[:5]) == b"abcd"  # up to and with the length byte
    assert splitter.blocks == []
    assert splitter.feed(data[5:20]) == b""  # in the middle of the text
    assert splitter.feed(data[20:]) == b"efgh"
    assert [b.title for b in splitter.blocks] == ["Cut"]
    assert splitter.audio_bytes == 8 and splitter.block_count == 2


def test_without_metaint_everything_is_audio():
    splitter = IcySplitter(None)
    assert splitter.feed(b"\x01StreamTitle='x';") == b"\x01StreamTitle='x';"
    assert splitter.blocks == []


@pytest.mark.parametrize(("text", "fields"), [
    (b"StreamTitle='Artist - Title';", {"StreamTitle": "Artist - Title"}),
    (b"StreamTitle='It's a \"quoted\" title';StreamUrl='http://x/?a=1;b=2';",
     {"StreamTitle": "It's a \"quoted\" title", "StreamUrl": "http://x/?a=1;b=2"}),
    (b"StreamTitle='Semi; colons; inside';", {"StreamTitle": "Semi; colons; inside"}),
    (b"StreamTitle='Rock 'n' Roll';", {"StreamTitle": "Rock 'n' Roll"}),
    (b"StreamTitle='no final semicolon'", {"StreamTitle": "no final semicolon"}),
    (b"StreamTitle='padded';\0\0\0\0\0\0\0", {"StreamTitle": "padded"}),
    (b"StreamTitle='';", {"StreamTitle": ""}),
    ("StreamTitle='Café Tacvba – Eres';".encode(), {"StreamTitle": "Café Tacvba – Eres"}),
    (b"StreamTitle='Caf\xe9 del Mar';", {"StreamTitle": "Café del Mar"}),  # Latin-1
    (b"garbage without fields", {}),
    (b"\0\0\0\0", {}),
])
def test_metadata_text_is_parsed_into_fields(text, fields):
    assert parse_metadata(text) == fields


def test_non_utf8_bytes_are_read_as_latin1_and_never_refused():
    assert decode_text(bytes(range(128, 256))) == bytes(range(128, 256)).decode("latin-1")
    assert decode_text("ünï".encode()) == "ünï"


@pytest.mark.parametrize(("header", "metaint"), [
    ("16000", 16000), (" 8192 ", 8192), (None, None), ("", None), ("0", None), ("-5", None),
    ("abc", None), (str(1 << 30), None)])
def test_metaint_header(header, metaint):
    assert parse_metaint(header) == metaint


class Pieces(io.RawIOBase):
    """A response whose read1 hands out the data in fixed pieces, then fails or ends."""

    def __init__(self, data: bytes, size: int, error: Exception | None = None) -> None:
        self.data, self.size, self.error, self.at = data, size, error, 0

    def read1(self, n: int = -1) -> bytes:
        if self.at >= len(self.data) and self.error is not None:
            raise self.error
        piece = self.data[self.at:self.at + min(n, self.size)]
        self.at += len(piece)
        return piece


def test_the_reader_gives_audio_only_and_keeps_a_network_error_for_later():
    reader = IcyReader(Pieces(radio(AUDIO, METAINT, BLOCKS), 33, TimeoutError("timed out")),
                       METAINT, read_size=64)
    audio = bytearray()
    while piece := reader.read(64):
        assert len(piece) <= 64
        audio += piece
    assert bytes(audio) == AUDIO
    assert isinstance(reader.error, TimeoutError)
    assert [b.title for b in reader.take_blocks()] == ["First", "Second", None]
    assert reader.take_blocks() == []
