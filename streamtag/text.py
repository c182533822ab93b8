"""Text from outside (a station's title, a peer's error) that a terminal would act on rather
than show: escape sequences, removed whole wherever such text is cleaned (a title when it
arrives, anything printed by a command)."""

from __future__ import annotations

import re

__all__ = ["ESCAPE_SEQUENCES", "without_escape_sequences"]

# Removing ESC alone would leave "[31m" behind, so each sequence goes whole, in its 7- and 8-bit
# forms: CSI (ESC [ or 0x9b) with its parameters and final byte; the string commands OSC, DCS,
# SOS, PM and APC up to their terminator (BEL or ST) or the end; any other ESC and what follows
# it. A sequence cut off by the end of the text goes too.
ESCAPE_SEQUENCES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
                              r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|\Z)"
                              r"|\x1b[ -/]*[0-~]?", re.DOTALL)


def without_escape_sequences(text: str) -> str:
    return ESCAPE_SEQUENCES.sub("", text)
