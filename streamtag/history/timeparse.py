"""Times as a radio monitor writes and reads them: ``--since 23:50`` (the last 23:50 there
was), ``--since 2h``, ``yesterday 18:00``, ISO 8601, Unix seconds; and shown with their date in
one named time zone (``--tz``, default the machine's), which every report states once.

A time of day is the last one there was: ``--since 23:50`` run at 00:05 means yesterday's. An
``--until`` time of day is the first one after ``--since`` when that is given (``--since 23:00
--until 01:00`` spans midnight), else the last one there was.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamtag.errors import ConfigError

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_AGO_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?")
_DAY_WORD = re.compile(r"(today|yesterday)(?:\s+(.+))?", re.IGNORECASE)
FORMS = ("ISO 8601 such as 2026-11-22T18:00 (in --tz) or 2026-11-22T18:00+00:00, a time of day "
         "such as 23:50 (the last one there was), today or yesterday with an optional time "
         "(yesterday 18:00), Unix seconds, or a span ago such as 90s, 30m, 2h, 1d, 1w")


@dataclass(frozen=True)
class Zone:
    """The time zone times are read and shown in; `name` as the user knows it."""

    tz: tzinfo
    name: str

    def at(self, unix_s: float) -> datetime:
        return datetime.fromtimestamp(unix_s, self.tz)

    def label(self, unix_s: float | None = None) -> str:
        """The zone's name with its abbreviation and offset at `unix_s` (now by default):
        "Europe/Berlin (CET, UTC+01:00)"."""
        when = self.at(time.time() if unix_s is None else unix_s)
        offset = when.strftime("%z")
        offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
        abbreviation = when.tzname() or ""
        inner = f"{abbreviation}, {offset}" if abbreviation and abbreviation != self.name \
            else offset
        return f"{self.name} ({inner})"

    def timestamp(self, day: date, hour: int = 0, minute: int = 0, second: float = 0.0) -> float:
        whole = int(second)
        when = datetime(day.year, day.month, day.day, hour, minute, whole, tzinfo=self.tz)
        return when.timestamp() + (second - whole)


def local_zone() -> Zone:
    """The machine's zone: $TZ, else what /etc/localtime links to, else its fixed offset now."""
    for name in (os.environ.get("TZ", "").lstrip(":"), _linked_zone_name()):
        if name:
            try:
                return Zone(ZoneInfo(name), name)
            except (ZoneInfoNotFoundError, ValueError):
                pass
    tz = datetime.now().astimezone().tzinfo
    assert tz is not None
    return Zone(tz, "local time")


def _linked_zone_name() -> str | None:
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return None
    _, found, name = target.partition("zoneinfo/")
    return name if found else None


def zone_named(name: str | None) -> Zone:
    """`--tz NAME` (an IANA name such as Europe/Berlin, or UTC); None for the machine's."""
    if not name:
        return local_zone()
    try:
        return Zone(ZoneInfo(name), name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz {name!r} is not a time zone: use an IANA name such as "
                          "Europe/Berlin, America/New_York or UTC (leave --tz out for this "
                          "machine's zone)") from None


def parse_time(text: str, option: str, now: float | None = None, zone: Zone | None = None,
               after: float | None = None) -> float:
    """Unix seconds for one of FORMS. A time of day is the last one at or before `now`, or,
    with `after`, the first one after it."""
    zone = zone or local_zone()
    now = time.time() if now is None else now
    value = text.strip()
    match = _AGO.fullmatch(value)
    if match:
        return now - float(match[1]) * _AGO_S[match[2]]
    try:
        return float(value)
    except ValueError:
        pass
    today = zone.at(now).date()
    match = _DAY_WORD.fullmatch(value)
    if match:
        day = today if match[1].lower() == "today" else today - timedelta(days=1)
        if match[2] is None:
            return zone.timestamp(day)
        clock = _CLOCK.fullmatch(match[2].strip())
        if clock is None:
            raise _not_a_time(text, option)
        return zone.timestamp(day, *_clock_parts(clock, text, option))
    clock = _CLOCK.fullmatch(value)
    if clock:
        parts = _clock_parts(clock, text, option)
        if after is not None:
            day = zone.at(after).date()
            when = zone.timestamp(day, *parts)
            return when if when > after else zone.timestamp(day + timedelta(days=1), *parts)
        when = zone.timestamp(today, *parts)
        return when if when <= now else zone.timestamp(today - timedelta(days=1), *parts)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _not_a_time(text, option) from None
    if when.tzinfo is None:  # a naive time is in the zone the report is in
        when = when.replace(tzinfo=zone.tz)
    return when.timestamp()


def parse_range(since: str | None, until: str | None, now: float | None = None,
                zone: Zone | None = None) -> tuple[float | None, float | None]:
    """`--since` and `--until` together: an --until time of day follows --since."""
    now = time.time() if now is None else now
    start = parse_time(since, "--since", now, zone) if since else None
    end = parse_time(until, "--until", now, zone, after=start) if until else None
    if start is not None and end is not None and end < start:
        raise ConfigError("--until is before --since; swap them")
    return start, end


def _clock_parts(match: re.Match, text: str, option: str) -> tuple[int, int, float]:
    hour, minute = int(match[1]), int(match[2])
    second = float(match[3]) if match[3] else 0.0
    if hour > 23 or minute > 59 or second >= 60:
        raise _not_a_time(text, option)
    return hour, minute, second


def _not_a_time(text: str, option: str) -> ConfigError:
    return ConfigError(f"{option} {text!r} is not a time: use {FORMS}")


def span(seconds: float) -> str:
    """A duration as a person reads it: 45 s, 4:02, 1:04:02."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
