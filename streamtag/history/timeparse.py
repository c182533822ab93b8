"""Times as a radio monitor writes and reads them: ``--since 23:50`` (the last 23:50 there
was), ``--since 2h``, ``yesterday 18:00``, ISO 8601, Unix seconds; and shown with their date in
one named time zone (``--tz``, default the machine's), which every report states once.

A time of day is the last one there was: ``--since 23:50`` run at 00:05 means yesterday's. An
``--until`` time of day is the first one after ``--since`` when that is given (``--since 23:00
--until 01:00`` spans midnight), else the last one there was.

Clock changes: a wall-clock time that a change skips (02:30 on the night clocks go forward) is
refused, naming the gap; one that happens twice (the hour repeated when they go back) is the
first, but for a time of day, which is the last one there was (or the first after --since)
of either. Times are read only from 1970 to the year 3000 (a Unix time in milliseconds, or
``nan``, is refused, not read as a date thousands of years away). Shown times carry their
zone's abbreviation where its offset differs from the one the report names (the hour
repeated when clocks go back reads "02:30:00 CEST" and then "02:30:00").

The machine's zone is ``$TZ`` (a zone name, a zone file's path, or a POSIX rule such as
``CET-1CEST,M3.5.0,M10.5.0/3``, which the C library reads), else what /etc/localtime links to.
"""

from __future__ import annotations

import calendar
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamtag.errors import ConfigError

log = logging.getLogger(__name__)
# A POSIX TZ rule begins with its standard time's name and its offset: CET-1CEST..., EST5EDT,
# <+0330>-3:30. What is neither this nor a zone the C library reads as UTC.
_POSIX_RULE = re.compile(r"(<[^>]+>|[A-Za-z]{3,})[+-]?\d")
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_AGO_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_BASIC_DATE = re.compile(r"\d{8}")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?")
_DAY_WORD = re.compile(r"(today|yesterday)(?:\s+(.+))?", re.IGNORECASE)
# The times read: from the Unix epoch to the year 3000 (a datetime reaches 9999, but a zone's
# offset added to its last second does not fit, and nothing recorded is that late).
LATEST_S = 32503680000.0  # 3000-01-01T00:00:00Z
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
        offset = _utc_offset(when)
        abbreviation = when.tzname() or ""
        inner = f"{abbreviation}, {offset}" if abbreviation and abbreviation != self.name \
            else offset
        return f"{self.name} ({inner})"

    def label_span(self, start_s: float, end_s: float) -> str:
        """`label` of a span: both ends' where the offset changes inside it."""
        first, last = self.label(start_s), self.label(end_s)
        if first == last:
            return first
        return f"{first[:-1]} to {last.removeprefix(self.name + ' (')}"

    def mark(self, unix_s: float, reference_s: float) -> str:
        """" CEST" (the abbreviation, else the offset) where the offset at `unix_s` is not
        the one at `reference_s` (the one a report names); "" where it is."""
        when, reference = self.at(unix_s), self.at(reference_s)
        if when.utcoffset() == reference.utcoffset():
            return ""
        name = when.tzname() or ""
        return f" {_utc_offset(when) if not name or name[0] in '+-' else name}"

    def timestamp(self, day: date, hour: int = 0, minute: int = 0, second: float = 0.0) -> float:
        """The wall-clock time in this zone (the first of two that a change repeats);
        NonexistentTime for one that a change skips."""
        whole = int(second)
        return self.wall(datetime(day.year, day.month, day.day, hour, minute, whole)) + (
            second - whole)

    def walls(self, day: date, hour: int, minute: int, second: float) -> list[float]:
        """Every moment the clock shows this time on `day`: two in the hour repeated when
        clocks go back, earliest first; NonexistentTime for one a change skips."""
        first = self.timestamp(day, hour, minute, second)
        whole = int(second)
        later = datetime(day.year, day.month, day.day, hour, minute, whole, tzinfo=self.tz,
                         fold=1).timestamp() + (second - whole)
        return [first, later] if later != first else [first]

    def day_start(self, day: date) -> float:
        """The first moment of `day` in this zone: midnight, or where a change skips it (as
        in zones that move their clocks at 00:00), the end of the gap."""
        midnight = datetime(day.year, day.month, day.day)
        try:
            return self.wall(midnight)
        except NonexistentTime:
            return midnight.replace(tzinfo=self.tz, fold=0).timestamp()

    def wall(self, naive: datetime) -> float:
        """Unix seconds of a naive wall-clock time in this zone, as `timestamp` reads it."""
        when = naive.replace(tzinfo=self.tz, fold=0)
        unix_s = when.timestamp()
        if self.at(unix_s).replace(tzinfo=None) != naive:
            raise NonexistentTime(naive, self)
        return unix_s


def _utc_offset(when: datetime) -> str:
    """"UTC+01:00": a time's offset as the reports write it."""
    offset = when.strftime("%z")
    return f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"


class NonexistentTime(ValueError):
    """A wall-clock time that a change of the clocks skips in a zone."""

    def __init__(self, naive: datetime, zone: Zone) -> None:
        before = zone.at(naive.replace(tzinfo=zone.tz, fold=0).timestamp() - 7200)
        after = zone.at(naive.replace(tzinfo=zone.tz, fold=0).timestamp() + 7200)
        gap = after.utcoffset() - before.utcoffset()
        super().__init__(
            f"{naive:%H:%M} does not exist on {naive:%Y-%m-%d} in {zone.name}: its clocks "
            f"went forward by {gap.total_seconds() / 60:g} minutes then; use a time before "
            "or after the gap")


class _SystemZone(tzinfo):
    """The zone the C library makes of ``$TZ`` where no zone file is named by it (a POSIX
    rule such as CET-1CEST,M3.5.0,M10.5.0/3): offsets and names as time.localtime gives them
    at each moment. A wall-clock time repeated when clocks go back is the first with fold 0
    and the second with fold 1, as with ZoneInfo; one skipped has the offset before the gap."""

    @staticmethod
    def _instants(dt: datetime) -> list[float]:
        """The Unix seconds that show the wall-clock time `dt` here, earliest first (two in
        a repeated hour, none in a gap): offsets a day either side cover any one change."""
        wall = calendar.timegm(dt.replace(tzinfo=None).timetuple())
        offsets = {time.localtime(wall + d).tm_gmtoff for d in (-86400, 0, 86400)}
        return sorted(wall - o for o in offsets if time.localtime(wall - o).tm_gmtoff == o)

    def _moment(self, dt: datetime) -> time.struct_time:
        instants = self._instants(dt)
        if not instants:  # in a gap: the offset before it, as a day before had it
            return time.localtime(calendar.timegm(dt.replace(tzinfo=None).timetuple()) - 86400)
        return time.localtime(instants[-1] if dt.fold and len(instants) > 1 else instants[0])

    def fromutc(self, dt: datetime) -> datetime:
        unix_s = calendar.timegm(dt.replace(tzinfo=None).timetuple())  # dt is UTC here
        local = (dt + timedelta(seconds=time.localtime(unix_s).tm_gmtoff)).replace(tzinfo=self)
        instants = self._instants(local)
        return local.replace(fold=int(len(instants) > 1 and unix_s == instants[-1]))

    def utcoffset(self, dt: datetime | None) -> timedelta:
        moment = time.localtime() if dt is None else self._moment(dt)
        return timedelta(seconds=moment.tm_gmtoff)

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return (time.localtime() if dt is None else self._moment(dt)).tm_zone


def local_zone() -> Zone:
    """The machine's zone: $TZ (a zone name, a zone file, or a rule the C library reads), else
    what /etc/localtime links to, else the C library's local time."""
    given = os.environ.get("TZ", "").strip()
    name = given.lstrip(":")
    if name.startswith("/"):  # a zone file: named as the zone it is where it says
        _, found, key = name.partition("zoneinfo/")
        try:
            with open(name, "rb") as file:
                return Zone(ZoneInfo.from_file(file, key=key if found else name),
                            key if found else name)
        except (OSError, ValueError):
            pass
    elif name:
        try:
            return Zone(ZoneInfo(name), name)
        except (ZoneInfoNotFoundError, ValueError):
            if not _POSIX_RULE.match(name):
                log.warning("$TZ %r is neither a time zone this machine has nor a POSIX rule: "
                            "the C library reads it as UTC, as here; set TZ to a zone name "
                            "such as Europe/Berlin, or give --tz", given)
            return Zone(_SystemZone(), given)  # a POSIX rule: the C library reads it
    linked = _linked_zone_name()
    if linked:
        try:
            return Zone(ZoneInfo(linked), linked)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return Zone(_SystemZone(), "local time")


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
    try:
        when = _parse(text, option, now, zone, after)
    except NonexistentTime as exc:
        raise ConfigError(f"{option} {text!r}: {exc}") from None
    except ConfigError:
        raise
    except (OverflowError, OSError, ValueError):  # past what datetime or the platform take
        when = math.inf
    if not 0.0 <= when <= LATEST_S:  # nan included
        raise ConfigError(f"{option} {text!r} is out of range: streamtag reads times from 1970 "
                          "to the year 3000 (Unix times in seconds, not milliseconds)")
    return when


def _parse(text: str, option: str, now: float, zone: Zone, after: float | None) -> float:
    value = text.strip()
    if not value:
        raise _not_a_time(text, option)
    match = _AGO.fullmatch(value)
    if match:
        return now - float(match[1]) * _AGO_S[match[2]]
    try:  # Unix seconds; eight digits are ISO 8601's basic date (20261126), not 1970
        return (float(value) if not _BASIC_DATE.fullmatch(value)
                else _iso_timestamp(datetime.fromisoformat(value), zone))
    except ValueError:
        pass
    today = zone.at(now).date()
    match = _DAY_WORD.fullmatch(value)
    if match:
        day = today if match[1].lower() == "today" else today - timedelta(days=1)
        if match[2] is None:
            return zone.day_start(day)
        clock = _CLOCK.fullmatch(match[2].strip())
        if clock is None:
            raise _not_a_time(text, option)
        return zone.timestamp(day, *_clock_parts(clock, text, option))
    clock = _CLOCK.fullmatch(value)
    if clock:  # the last one there was, or the first after `after` (of a repeated one too)
        parts = _clock_parts(clock, text, option)
        if after is not None:
            day = zone.at(after).date()
            return min(_moments(zone, (day, day + timedelta(days=1)), parts, lambda t: t > after))
        return max(_moments(zone, (today - timedelta(days=1), today), parts, lambda t: t <= now))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _not_a_time(text, option) from None
    return _iso_timestamp(when, zone)


def _iso_timestamp(when: datetime, zone: Zone) -> float:
    """Unix seconds of a date and time read as ISO 8601 (inf for one past what the platform
    takes, as the year 1 in a zone west of UTC)."""
    try:
        if when.tzinfo is None:  # a naive time is in the zone the report is in
            return zone.wall(when)
        return when.timestamp()
    except NonexistentTime:
        raise
    except (OverflowError, OSError, ValueError):
        return math.inf


def _moments(zone: Zone, days: tuple[date, date], parts: tuple[int, int, float],
             wanted) -> list[float]:
    """The moments the clock shows `parts` on either day that are `wanted`; a day the time
    does not exist on has none (NonexistentTime where neither has one)."""
    found, skipped = [], None
    for day in days:
        try:
            found += [t for t in zone.walls(day, *parts) if wanted(t)]
        except NonexistentTime as exc:
            skipped = exc
    if not found and skipped is not None:
        raise skipped
    return found


def parse_range(since: str | None, until: str | None, now: float | None = None,
                zone: Zone | None = None) -> tuple[float | None, float | None]:
    """`--since` and `--until` together: an --until time of day follows --since."""
    now = time.time() if now is None else now
    start = parse_time(since, "--since", now, zone) if since is not None else None
    end = parse_time(until, "--until", now, zone, after=start) if until is not None else None
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
    # a URL's parameter (until=) reads a time without an offset in UTC: the page has no --tz
    forms = FORMS.replace("(in --tz)", "(in UTC)") if option.endswith("=") else FORMS
    return ConfigError(f"{option} {text!r} is not a time: use {forms}")


def span(seconds: float) -> str:
    """A duration as a person reads it: 45 s, 4:02, 1:04:02."""
    whole = round(max(0.0, seconds))  # whole seconds first: 59.6 s reads 1:00
    if whole < 60:
        return f"{whole} s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
