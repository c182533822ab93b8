"""The configuration reference, docs/config.md, made from the settings' declarations: the
daemon's file (streamtag.daemon.reference) and record's (streamtag.history.config).

    python -m streamtag.commands.reference > docs/config.md

A test compares docs/config.md with what this prints, so the page cannot drift from the code.
"""

from __future__ import annotations

from streamtag.daemon import reference as daemon
from streamtag.history import config as record

RECORD_HEAD = """## `streamtag record --config record.toml`

The recorder's own file; its flags override it. An unknown section or key, or a span that
cannot be read, is an error naming `section.key` and the fix.

```toml
[retention]
windows = "30d"
rollups = "400d"
tracks = "5y"
```
"""


def reference() -> str:
    """docs/config.md's text."""
    tables = daemon.section_tables(record.SECTIONS, record.settings(), level="###")
    return "\n".join([daemon.reference(), RECORD_HEAD, *tables]).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
