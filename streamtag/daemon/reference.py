"""The daemon's part of the configuration reference, docs/config.md, made from the settings'
declarations: every ``[section] key`` of the daemon's TOML file with the flag that overrides
it, its default and its meaning, as each dataclass field declares them (``values.field(help=,
flag=)``). streamtag.commands.reference prints the whole page, record's file with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from streamtag import values
from streamtag.daemon.config import SECTIONS, DaemonConfig
from streamtag.sources import spec_help

__all__ = ["missing_help", "reference", "section_tables", "settings"]

HEAD = """# Configuration reference

`streamtag run --config daemon.toml` reads these settings; a flag given on the command line
overrides the file's value. An unknown key, or a value its rule refuses, is an error naming
`section.key` and what is allowed; nothing starts half-configured. This page is made from the
settings' declarations in the code (`python -m streamtag.commands.reference > docs/config.md`),
and a test checks that it is current. `streamtag record --config record.toml` reads
[its own file](#streamtag-record---config-recordtoml).

```toml
[model]
path = "music"

[[sources]]
id = "radio"
spec = "https://stream.example.org/live.mp3"

[health]
loudness = true
```
"""

SOURCE_KEYS = (
    ("id", "--source ID=SPEC", "`sN` (N: its place in the list)",
     "the stream's id: 1-128 of A-Z a-z 0-9 _ . : -"),
    ("spec", "--source SPEC", "(required)",
     f"{spec_help(code=True)} ([daemon.md](daemon.md#sources))"),
    ("title", "", "(the source's)",
     "the stream's fixed title, instead of the titles the source reports"),
)
SOURCES = ("## `[[sources]]`\n\nOne table per stream; `--source [ID=]SPEC` adds one from the "
           "command line.\n\n| key | flag | default | meaning |\n|---|---|---|---|\n"
           + "".join(f"| `{key}` | {f'`{flag}`' if flag else ''} | {default} | {meaning} |\n"
                     for key, flag, default, meaning in SOURCE_KEYS)
           + "\nAny other key is an option of the source's kind (`realtime`, which `--realtime` "
           "sets for file\nsources; `reconnect`, `max_bytes_per_audio_s`, `format`, `rate`, "
           "`channels`, ...):\n[operations.md](operations.md) lists them, and an unknown one is "
           "an error that lists those the\nkind takes.\n")


def settings() -> list[tuple[str, dataclasses.Field]]:
    """Every setting as ``(section, field)``, in the file's order; ``[engine] processes`` is
    declared on ``DaemonConfig`` (its engine settings are one process's)."""
    found = [(section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    processes = next(f for f in dataclasses.fields(DaemonConfig) if f.name == "processes")
    return [*found, ("engine", processes)]


def missing_help() -> list[str]:
    """The settings that declare no meaning."""
    return [f"{section}.{f.name}" for section, f in settings() if not values.help_of(f)]


def _default(f: dataclasses.Field) -> str:
    value: Any = f.default
    if value is dataclasses.MISSING:
        factory = f.default_factory
        value = factory() if callable(factory) else None  # MISSING: neither
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\\\|")


def section_tables(sections: Mapping[str, type], found: list[tuple[str, dataclasses.Field]],
                   level: str = "##") -> list[str]:
    """Each section's table of keys (its flag, default and meaning) under a heading of
    ``level``, with the section class's docstring above it."""
    out = []
    by_section: dict[str, list[dataclasses.Field]] = {}
    for section, f in found:
        by_section.setdefault(section, []).append(f)
    for section, fields in by_section.items():
        if section == "publish":  # the file's order: [model], [[sources]], [publish], ...
            out.append(SOURCES)
        out.append(f"{level} `[{section}]`\n")
        doc = (sections[section].__doc__ or "").strip()
        if doc and not doc.startswith(sections[section].__name__ + "("):
            out.append(" ".join(doc.replace("``", "`").split()) + "\n")
        out.append("| key | flag | default | meaning |\n|---|---|---|---|")
        for f in fields:
            flag = values.flag_of(f)
            out.append(f"| `{f.name}` | {f'`{flag}`' if flag else ''} | {_default(f)} | "
                       f"{_cell(values.help_of(f))} |")
        out.append("")
    return out


def reference() -> str:
    """The daemon's part of docs/config.md (streamtag.commands.reference adds record's)."""
    return "\n".join([HEAD, *section_tables(SECTIONS, settings())]).rstrip() + "\n"
