"""Text from outside (a station's title, a peer's error) made safe to show: the escape
sequences a terminal would act on and the invisible characters that make text lie, removed
wherever such text is cleaned (a title when it arrives, anything printed by a command), and CSV
cells a spreadsheet would take for a formula."""

from __future__ import annotations

import re

from streamtag.errors import ConfigError

__all__ = ["CSV_FORMULA_STARTS", "ESCAPE_SEQUENCES", "FLAG_TAG_SEQUENCES", "HIDDEN_FORMATTING",
           "csv_text", "utf8_file_text", "without_escape_sequences"]

# Removing ESC alone would leave "[31m" behind, so each sequence goes whole, in its 7- and 8-bit
# forms: CSI (ESC [ or 0x9b) with its parameters and final byte; the string commands OSC, DCS,
# SOS, PM and APC up to their terminator (BEL or ST) or the end; any other ESC and what follows
# it. A sequence cut off by the end of the text goes too.
ESCAPE_SEQUENCES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
                              r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|\Z)"
                              r"|\x1b[ -/]*[0-~]?", re.DOTALL)


def _tag_spelling(text: str) -> str:
    """``text`` (ASCII) in tag characters, as an emoji tag sequence spells it."""
    return "".join(chr(0xE0000 + ord(c)) for c in text)


# The only emoji made of tag characters (Unicode's recommended set): the flags of England,
# Scotland and Wales, the black flag and "gbeng", "gbsct" or "gbwls" ended by CANCEL TAG
FLAG_TAG_SEQUENCES = tuple("\U0001f3f4" + _tag_spelling(code) + "\U000e007f"
                           for code in ("gbeng", "gbsct", "gbwls"))
_SELECTORS = "\ufe00-\ufe0f\U000e0100-\U000e01ef"  # variation selectors
_JOINERS = "\u200c\u200d"  # zero-width non-joiner and joiner
# Invisible characters that make shown text lie or carry text no one sees: the bidirectional
# overrides, embeddings, isolates and marks ("Song \u202etxt.exe" shows as "Song exe.txt");
# the zero-width space, word joiner, invisible operators and byte order mark that hide inside
# a name; the soft hyphen (a title is one line, never hyphenated); the deprecated format
# controls; the interlinear annotation marks and musical format controls; the tag characters,
# ASCII spelled invisibly, but in the three flags (kept, as group 1); and runs where scripts
# and emoji need one: a variation selector after another (or after nothing it could select:
# the start, a space) and two or more joiners together. What scripts and emoji need stays:
# one zero-width joiner or non-joiner (Persian, Indic scripts, emoji sequences), one
# variation selector after a character (an emoji's presentation, an ideograph's variant), the
# Mongolian vowel separator and the Arabic, Brahmi and Egyptian format characters.
HIDDEN_FORMATTING = re.compile(
    "(" + "|".join(FLAG_TAG_SEQUENCES) + ")"
    "|[\u00ad\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
    "\ufff9-\ufffb\U0001d173-\U0001d17a\U000e0000-\U000e007f]"
    f"|(?:^|(?<=[\\s{_SELECTORS}]))[{_SELECTORS}]+|[{_JOINERS}]{{2,}}")


def without_escape_sequences(text: str) -> str:
    """``text`` without terminal escape sequences and without ``HIDDEN_FORMATTING``."""
    return HIDDEN_FORMATTING.sub(r"\1", ESCAPE_SEQUENCES.sub("", text))


# A cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV Injection").
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Where a cell may start for a spreadsheet inside one of ours: the cell's start, and after a
# semicolon or a tab (the separators it splits on where the decimal mark is a comma, or as its
# import dialog is set; it does not see our quotes, which are for commas) or a line break (a
# reader splitting on those starts a row there). Such a part that starts, past spaces and
# quotes, as a formula is one to that reader.
_CSV_FORMULA_PARTS = re.compile(r"(?:^|(?<=[;\t\n\r]))(?=[ \"]*[=+\-@\t\r])")


def csv_text(value: str | None) -> str:
    """A text cell of CSV for a value from outside, shown as the text it is by a spreadsheet
    that splits rows on commas and by one that splits them on semicolons or tabs: each part
    of it that such a spreadsheet would read as a formula (``=HYPERLINK(...)`` at its start,
    after a semicolon, tab or line break, past spaces and quotes) gets a leading apostrophe,
    as OWASP advises (``A;=1+1`` is written ``A;'=1+1``); a carriage return becomes a newline,
    which the csv module quotes (a bare one it writes unquoted, where a spreadsheet starts a
    row of the sender's making). For text cells only: a number (``-0.5``) is written as it
    is."""
    if not value:
        return ""
    value = _CSV_FORMULA_PARTS.sub("'", value)
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value


def utf8_file_text(data: bytes, what: str) -> str:
    """A text file's bytes (a config, a recipe) as text: UTF-8, a byte order mark some editors
    write read past; ConfigError naming ``what`` and the first byte that is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} is not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    return text.removeprefix("\ufeff")


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, plural (an added s) unless ``n`` is 1: "1 window", "3 windows"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
