"""The recorder's configuration: ``streamtag record --config record.toml``, overridden by flags.

    [retention]      windows, rollups, tracks, events, statuses, silences, gaps, snapshots:
                     how long each is kept, a span ("30d", "5y") or "forever"

Each section is a frozen dataclass whose fields declare their flag and meaning
(``values.field``); docs/config.md is made from them. An unknown section or key, or a span
that cannot be read, is a ``ConfigError`` naming ``section.key`` and the fix.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from streamtag import values
from streamtag.errors import ConfigError
from streamtag.history.retention import SPAN_WORDS, Retention, keep_entries, span_seconds
from streamtag.text import utf8_file_text

# A file of a few sections: anything this long is not one.
MAX_CONFIG_BYTES = 1024 * 1024
KEEP = "--keep"


def _kept(kind: str, default: str, what: str) -> Any:
    """A ``[retention]`` key: its span's default, what it keeps, and its flag ``--keep
    KIND=SPAN``."""
    return values.field(default, flag=f"{KEEP} {kind}=SPAN", help=what)


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    """How long the history keeps each kind of row: a span of time (a number and s, m, h, d,
    w or y, a year being 365 days: ``"30d"``, ``"5y"``) or ``"forever"``. The recorder deletes
    what is older when it starts and every 5 minutes (docs/history.md, "Retention"); ``--keep
    KIND=SPAN,...`` overrides the file, kind by kind."""

    windows: str = _kept("windows", "30d",
                         "windows (window_blocks); speech spans, the track under way and "
                         "loudness per track are read from them")
    rollups: str = _kept("rollups", "400d",
                         "per-minute rollups of the windows (window_rollups): airtime, "
                         "content shares and plots past the windows; at least as long as "
                         "windows")
    tracks: str = _kept("tracks", "forever", "tracks, the as-run log")
    events: str = _kept("events", "forever", "tag on/off events")
    statuses: str = _kept("statuses", "forever",
                          "stream states (running, reconnecting, failed): outages and off air")
    silences: str = _kept("silences", "forever", "dead air and stuck tones")
    gaps: str = _kept("gaps", "forever", "messages known missing: what reports call not recorded")
    snapshots: str = _kept("snapshots", "forever",
                           "tag states the recorder asked daemons for at its start")

    def __post_init__(self) -> None:
        kept: dict[str, float | None] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                if not isinstance(value, str):
                    raise ValueError(value)
                kept[f.name] = span_seconds(value)
            except ValueError:
                raise ConfigError(f"retention.{f.name} must be {SPAN_WORDS}, in quotes "
                                  f"({f.name} = \"{f.default}\"), got {values.show(value)}"
                                  ) from None
        windows, rollups = kept["windows"], kept["rollups"]
        if windows is not None and rollups is not None and rollups < windows:
            raise ConfigError(f"retention.rollups ({self.rollups}) is shorter than "
                              f"retention.windows ({self.windows}): rollups are what is left "
                              "of the windows; keep them at least as long, or shorten windows")

    def retention(self) -> Retention:
        """Seconds per kind, as the recorder expires them."""
        return Retention(**{f.name: span_seconds(getattr(self, f.name))
                            for f in dataclasses.fields(self)})

    def with_keep(self, text: str) -> RetentionConfig:
        """This retention with ``--keep windows=7d,...`` over it: the kinds it names change,
        the others stay as the file has them."""
        try:
            return dataclasses.replace(self, **keep_entries(text))
        except ConfigError as exc:
            raise ConfigError(str(exc) if exc.args[0].startswith(KEEP)
                              else f"{KEEP} {text!r}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    retention: RetentionConfig = RetentionConfig()


SECTIONS = {"retention": RetentionConfig}


def config_from_dict(data: dict[str, Any]) -> RecordConfig:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] in record's file; sections are "
                          f"{', '.join(f'[{name}]' for name in SECTIONS)}")
    parts = {}
    for name, cls in SECTIONS.items():
        if name in data:
            # its own check names the fix (a span in quotes), not only "must be a string"
            table = values.table(data[name], f"[{name}]", ConfigError)
            values.check_keys(table, [f.name for f in dataclasses.fields(cls)], name,
                              ConfigError)
            parts[name] = cls(**table)
    return RecordConfig(**parts)


def load_config(path: str | Path) -> RecordConfig:
    """``record --config PATH``; a ConfigError names the file and what is wrong in it."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over the {MAX_CONFIG_BYTES} bytes record "
                          "reads: is it the right file?")
    try:
        return config_from_dict(tomllib.loads(utf8_file_text(data, f"config file {path}")))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def settings() -> list[tuple[str, dataclasses.Field]]:
    """Every setting of record's file as ``(section, field)``, in the file's order."""
    return [(section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
