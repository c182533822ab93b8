"""The ICY metadata splitter and parser (sources/icy.py): a byte stream with metadata blocks
every metaint bytes, cut into pieces at every possible place; hostile streams (any bytes, any
sizes, cut anywhere) give the same audio with bounded state."""

from __future__ import annotations

import io
import re
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamtag.sources.base import MAX_TITLE_CHARS, TitleLimit, clean_title
from streamtag.sources.bounds import ByteBudget, ByteLimitError
from streamtag.sources.icy import (
    MAX_BLOCK,
    PARSE_BURST,
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


def split_in_pieces(data: bytes, sizes, metaint: int = METAINT) -> tuple[bytes, list, IcySplitter]:
    """The audio and the blocks taken after each piece, as the source takes them per packet."""
    splitter = IcySplitter(metaint)
    audio, taken, at, i = bytearray(), [], 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)]
        audio += splitter.feed(data[at:at + size])
        block = splitter.take_block()
        if block is not None:
            taken.append(block)
        at, i = at + size, i + 1
    return bytes(audio), taken, splitter


@pytest.mark.parametrize("sizes", [[len(radio(AUDIO, METAINT, BLOCKS))], [1], [7, 1, 3],
                                   [99], [100], [101], [102], [16, 17], [250]])
def test_audio_and_blocks_come_out_the_same_however_the_bytes_are_cut(sizes):
    audio, taken, splitter = split_in_pieces(radio(AUDIO, METAINT, BLOCKS), sizes)
    assert audio == AUDIO
    everything = [(100, 0, "First"), (400, 3, "Second"), (800, 7, None)]
    found = [(b.audio_offset, b.index, b.title) for b in taken]
    if len(sizes) == 1 and sizes[0] > 400:  # one piece: the blocks complete together
        # Only the latest is kept, where the first waiting one was.
        assert found == [(100, 0, None)] and splitter.replaced == 2
    else:
        assert found == everything and splitter.replaced == 0
        assert taken[0].fields == {"StreamTitle": "First", "StreamUrl": ""}
    assert taken[-1].has_title  # an explicit empty title: the title was cleared
    assert splitter.block_count == len(AUDIO) // METAINT  # empty blocks are counted too


def test_a_block_cut_between_its_length_byte_and_its_text():
    splitter = IcySplitter(4)
    data = b"abcd" + block("StreamTitle='Cut';") + b"efgh\0"
    assert splitter.feed(data[:5]) == b"abcd"  # up to and with the length byte
    assert splitter.pending is None
    assert splitter.feed(data[5:20]) == b""  # in the middle of the text
    assert splitter.held_bytes == 15
    assert splitter.feed(data[20:]) == b"efgh"
    assert splitter.take_block().title == "Cut"
    assert splitter.audio_bytes == 8 and splitter.block_count == 2 and splitter.held_bytes == 0


def test_the_latest_block_takes_the_place_of_one_not_yet_placed():
    splitter = IcySplitter(4)
    splitter.feed(b"abcd" + block("StreamTitle='One';") + b"efgh" + block("StreamTitle='Two';"))
    assert splitter.replaced == 1
    assert splitter.take_block(position=3) is None  # the packet at byte 3 precedes the block
    assert (splitter.pending.title, splitter.pending.audio_offset) == ("Two", 4)
    assert splitter.take_block(position=4).title == "Two"
    assert splitter.take_block() is None
    splitter.feed(b"ijkl" + block("StreamTitle='Three';"))
    taken = splitter.take_block(position=-1)  # no position: due at once
    assert (taken.title, taken.audio_offset, taken.index) == ("Three", 12, 2)


def test_blocks_faster_than_the_demuxer_still_come_due():
    # A block after every 16 bytes, the same title in each (servers that repeat it), and a
    # demuxer 64 bytes behind the reader: each block is due once the demuxer reaches the first
    # waiting one, so the title is placed.
    data = radio(bytes(1600), 16, {i: block("StreamTitle='Same';") for i in range(100)})
    splitter, audio, taken = IcySplitter(16), 0, []
    for at in range(0, len(data), 40):
        audio += len(splitter.feed(data[at:at + 40]))
        if (due := splitter.take_block(position=audio - 64)) is not None:
            taken.append(due)
    assert taken and {b.title for b in taken} == {"Same"}


def test_without_metaint_everything_is_audio():
    splitter = IcySplitter(None)
    assert splitter.feed(b"\x01StreamTitle='x';") == b"\x01StreamTitle='x';"
    assert splitter.pending is None


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


def test_non_utf8_bytes_are_read_as_windows_1252_and_never_refused():
    undefined = (0x81, 0x8D, 0x8F, 0x90, 0x9D)  # Latin-1 (C1 controls) for these five
    expected = "".join(chr(b) if b in undefined else bytes([b]).decode("cp1252")
                       for b in range(128, 256))
    assert decode_text(bytes(range(128, 256))) == expected
    assert decode_text("ünï".encode()) == "ünï"
    assert decode_text(b"Don\x92t Stop \x96 Live") == "Don\u2019t Stop \u2013 Live"


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
    audio, titles = bytearray(), []
    while piece := reader.read(64):
        assert len(piece) <= 64
        audio += piece
        if (taken := reader.take_block()) is not None:
            titles.append(taken.title)
    assert bytes(audio) == AUDIO
    assert isinstance(reader.error, TimeoutError)
    assert titles == ["First", "Second", None]
    assert reader.take_block() is None


def test_the_reader_ends_with_a_byte_limit_error_past_its_budget_until_audio_earns_more():
    reader = IcyReader(Pieces(b"not audio " * 1000, 100), None, read_size=100,
                       budget=ByteBudget(100, 1000))
    read = 0
    while piece := reader.read(100):
        read += len(piece)
    assert read == 1000 and isinstance(reader.error, ByteLimitError)
    assert "no audio in the first" in str(reader.error)
    earning = IcyReader(Pieces(b"audio" * 1000, 100), None, read_size=100,
                        budget=ByteBudget(100, 1000))
    while earning.read(100):
        earning.budget.earn(1.0)  # the caller decoded a second of audio per read: 100 bytes
    assert earning.error is None and earning.splitter.audio_bytes == 5000
    padded = IcyReader(Pieces(b"audio" * 1000, 100), None, read_size=100,
                       budget=ByteBudget(100, 1000))
    while padded.read(100):
        padded.budget.earn(0.5)  # half the bytes are more than the audio allows
    assert isinstance(padded.error, ByteLimitError)
    assert "more than 0.0976562 KiB per second" in str(padded.error)
    # 19 reads: each spent 50 bytes of the leeway's 1000 past what its audio allowed
    assert padded.splitter.audio_bytes == 1900


# -- titles as they arrive ---------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "title"), [
    ("Plain", "Plain"),
    ("\x1b[31mRed\x1b[0m Title\x07", "Red Title"),  # CSI colours and a bell
    ("\x1b]0;window title\x07Song", "Song"),  # an OSC string up to its BEL
    ("\x1b]8;;http://x\x1b\\Link\x1b]8;;\x1b\\", "Link"),  # OSC 8 hyperlinks ended by ST
    ("A\x9b2JB\x9dC", "AB"),  # C1 CSI with its sequence; an unterminated C1 OSC to the end
    ("Line one\r\nLine two\tthree", "Line one Line two three"),
    ("\x00\x01Nul\x7fDel\x85", "NulDel"),
    ("\u2028Separated\u2029", "Separated"),
    ("\x1bcReset", "Reset"),
    ("\x1b", ""),
    ("x" * 5000, "x" * MAX_TITLE_CHARS),
    # bidirectional overrides and invisible characters that make a title show another text
    ("Song 0 \u202etxt.exe\u2066\u200b\ufeff", "Song 0 txt.exe"),
    ("\u2067Left\u2069 \u200eRight\u200f \u2060x", "Left Right x"),
    # the joiners scripts and emoji need stay
    ("\U0001f469\u200d\U0001f3a4 \u0645\u200c\u06cc",
     "\U0001f469\u200d\U0001f3a4 \u0645\u200c\u06cc"),
])
def test_titles_lose_control_characters_and_escape_sequences_and_are_capped(raw, title):
    assert clean_title(raw) == title
    block_text = f"StreamTitle='{raw[:1000]}';".encode()
    splitter = IcySplitter(4)
    splitter.feed(b"abcd" + block(block_text) + b"efgh")
    taken = splitter.take_block()
    expected = clean_title(raw[:1000]) or None
    assert taken.title == expected and taken.has_title


def test_the_title_limit_allows_so_many_changes_in_any_window():
    now = [0.0]
    limit = TitleLimit(3, 60.0, clock=lambda: now[0])
    assert [limit.allow() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 59.9
    assert not limit.allow()
    now[0] = 60.0  # the first three leave the window together
    assert [limit.allow() for _ in range(4)] == [True, True, True, False]


# -- hostile streams: any bytes, any sizes, cut anywhere ---------------------------------------


def reference_split(data: bytes, metaint: int) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """The audio and the complete non-empty blocks (offset, index, text) of an ICY body, written
    apart from IcySplitter, for whole bytes at once."""
    audio, blocks, at, index = bytearray(), [], 0, 0
    while at < len(data):
        piece = data[at:at + metaint]
        audio += piece
        at += len(piece)
        if len(piece) < metaint or at >= len(data):
            break
        size = data[at] * 16
        text = data[at + 1:at + 1 + size]
        at += 1 + size
        if len(text) < size:
            break
        if text.strip(b"\0"):
            blocks.append((len(audio), index, text))
        index += 1
    return bytes(audio), blocks


@st.composite
def icy_bodies(draw):
    """An ICY body: intervals of audio, each followed by a block (of any size up to the most a
    length byte says, full of any bytes), then any tail; or plain arbitrary bytes."""
    metaint = draw(st.integers(1, 300))
    body = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        body += draw(st.binary(min_size=metaint, max_size=metaint))
        units = draw(st.sampled_from([0, 0, 1, 3, 255]))
        text = draw(st.one_of(
            st.binary(max_size=units * 16),
            st.text(max_size=60).map(lambda t: f"StreamTitle='{t}';".encode())))
        units = min(units, 255) if len(text) <= units * 16 else min(255, -(-len(text) // 16))
        body += bytes([units]) + text[:units * 16].ljust(units * 16, b"\0")
    body += draw(st.binary(max_size=400))
    return metaint, bytes(body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(icy_bodies(), st.lists(st.integers(1, 5000), min_size=1, max_size=20))
@example((1, bytes([0, 255]) + b"x" * 4080 + b"a"), [1])  # metaint 1, one full block
def test_any_body_cut_anywhere_gives_the_same_audio_with_bounded_state(body, sizes):
    metaint, data = body
    expected_audio, expected_blocks = reference_split(data, metaint)
    splitter = IcySplitter(metaint)
    audio, taken, at, i = bytearray(), [], 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)]
        audio += splitter.feed(data[at:at + size])
        assert splitter.held_bytes <= MAX_BLOCK  # the one block being read, no more
        if i % 2:  # the source takes blocks now and then (per packet), not per read
            block_taken = splitter.take_block()
            if block_taken is not None:
                taken.append(block_taken)
        at, i = at + size, i + 1
    if (last := splitter.take_block()) is not None:
        taken.append(last)
    assert bytes(audio) == expected_audio
    offsets = [(b.audio_offset, b.index) for b in taken]
    every = [(offset, index) for offset, index, _ in expected_blocks]
    assert offsets == sorted(set(offsets)) and set(offsets) <= set(every)  # in order, real
    assert len(taken) + splitter.replaced == len(every)  # each kept or counted as replaced
    if every:  # the latest block's text is never lost
        assert taken[-1].fields == parse_metadata(expected_blocks[-1][2])
    for block_taken in taken:
        assert block_taken.title is None or len(block_taken.title) <= MAX_TITLE_CHARS


# The rule parse_metadata follows, as one regular expression (quadratic on hostile blocks).
FIELD = re.compile(r"([A-Za-z][A-Za-z0-9_]*)='(.*?)';?(?=[A-Za-z][A-Za-z0-9_]*='|\s*$)",
                   re.DOTALL)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.sampled_from([b"a", b"Z", b"_", b"1", b"=", b"'", b";", b" ", b"\n",
                                           b"\0", b"\xe9", b"StreamTitle", b"='", b"';"]),
                          max_size=40).map(b"".join)))
def test_the_metadata_parser_follows_its_rule_on_any_bytes(raw):
    text = decode_text(raw.rstrip(b"\0")).strip()
    assert parse_metadata(raw) == {m.group(1): m.group(2) for m in FIELD.finditer(text)}


@pytest.mark.parametrize("raw", [b"a" * MAX_BLOCK, b"'" + b"b" * (MAX_BLOCK - 2) + b"=",
                                 b"x='" + b"'" * (MAX_BLOCK - 3),
                                 (b"x='" + (b"'" + b"b" * 60) * 70)[:MAX_BLOCK]])
def test_the_metadata_parser_takes_linear_time_on_hostile_blocks(raw):
    # The regular expression above takes 0.1 s on the first two: a block every 256 bytes of a
    # stream would hold a core. The parser takes well under a millisecond.
    started = time.perf_counter()
    for _ in range(10):
        parse_metadata(raw)
    assert (time.perf_counter() - started) / 10 < 0.02


@given(st.text(max_size=600))
def test_any_title_is_clean_and_capped(raw):
    title = clean_title(raw)
    assert len(title) <= MAX_TITLE_CHARS
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", title)
    assert title == title.strip()


def test_blocks_are_parsed_when_due_at_most_at_the_allowance_and_repeats_are_free():
    # A hostile station's full, ever-changing blocks every 256 audio bytes each cost a parse
    # (some 60 a second, 5 times an honest station's CPU); SHOUTcast repeats its title in
    # every block. A block replaced before it is due is never parsed; past the allowance the
    # latest block waits unparsed, in the earliest's place, and wins.
    now = [0.0]
    splitter = IcySplitter(4, clock=lambda: now[0])
    flood = radio(bytes(4 * 1000), 4, {i: block(f"StreamTitle='Title {i}';") for i in
                                          range(1000)})
    splitter.feed(flood)
    assert splitter.parsed == 0 and splitter.block_count == 1000 and splitter.replaced == 999
    taken = splitter.take_block()
    assert (taken.title, taken.audio_offset) == ("Title 999", 4)  # the latest, the first place
    assert splitter.parsed == 1
    # each block taken as soon as it is due: at most the burst, then two a second
    titles = []
    for at in range(0, len(flood), 5):
        splitter.feed(flood[at:at + 5])
        if (due := splitter.take_block()) is not None:
            titles.append(due.title)
    assert splitter.parsed == PARSE_BURST and len(titles) == PARSE_BURST - 1
    now[0] += 1.0
    splitter.feed(bytes(4) + block("StreamTitle='After';"))
    assert splitter.take_block().title == "After" and splitter.parsed == PARSE_BURST + 1
    # one title repeated in every block: parsed once, each block's place its own
    repeated = radio(bytes(4 * 100), 4, dict.fromkeys(range(100), block("StreamTitle='Same';")))
    now[0] += 100.0
    again = IcySplitter(4, clock=lambda: now[0])
    places = []
    for at in range(0, len(repeated), 9):
        again.feed(repeated[at:at + 9])
        if (block_taken := again.take_block()) is not None:
            places.append((block_taken.title, block_taken.audio_offset))
    assert again.parsed == 1 and len(places) == 100
    assert places[:2] == [("Same", 4), ("Same", 8)]
