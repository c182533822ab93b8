"""``streamtag history``: what was recorded in a time range, as text, CSV or JSON on stdout,
and a timeline picture with ``--plot``. Titles and tags came from stations: the text is shown
without what a terminal would act on, the JSON with such characters escaped, and the CSV with
cells a spreadsheet shows as text (history.report)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamtag.commands import (
    EXIT_USAGE,
    NAMES_SHOWN,
    failed,
    names_listed,
    terminal_json,
    terminal_text,
)
from streamtag.errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="what was recorded: as-run log, plays, tag airtime, "
                                       "off air, events")
    p.add_argument("--db", default="sqlite:///tags.db",
                   help="sqlite:///PATH (default sqlite:///tags.db) or postgresql://...")
    p.add_argument("--stream", action="append", help="only this stream; repeatable")
    p.add_argument("--since", help="from this time: ISO 8601 (in --tz unless it has an "
                                   "offset), a time of day (the last one there was: 23:50 at "
                                   "00:05 is yesterday's), today or yesterday [HH:MM], Unix "
                                   "seconds, or ago as 90s, 30m, 2h, 1d, 1w")
    p.add_argument("--until", help="up to this time (same forms; a time of day is the first "
                                   "one after --since)")
    p.add_argument("--tz", metavar="ZONE",
                   help="the time zone times are read and shown in, an IANA name such as "
                        "Europe/Berlin or UTC (default: this machine's; the report names it)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object")
    fmt.add_argument("--csv", action="store_true",
                     help="CSV: one row per track with a column per tag, airtime, content, "
                          "off air, silence, speech, plays, events, gaps")
    p.add_argument("--events", action=argparse.BooleanOptionalAction, default=None,
                   help="list every tag on/off event (default: counted in the text, listed in "
                        "--json and --csv)")
    p.add_argument("--tags", type=int, default=5, metavar="N",
                   help="tags listed per stream and per track (default 5; the CSV has all)")
    p.add_argument("--period", choices=("day", "week"),
                   help="play counts per day or week (default: for the whole range)")
    p.add_argument("--content-by", choices=("hour", "day"),
                   help="music, speech, silence, tone and noise shares per hour or day of "
                        "--tz (default: for the whole range only)")
    p.add_argument("--airtime-by", choices=("hour", "day"),
                   help="each tag's share of airtime per hour or day of --tz (from the "
                        "per-minute rollups over long ranges; default: for the whole range "
                        "only)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw a timeline of tag shares per stream, under what the audio was")
    p.add_argument("--top", type=int, default=8, help="tags drawn per stream (default 8)")
    p.set_defaults(func=cmd_history)


PLOT_NEEDS = ("--plot draws with matplotlib, which is not installed: pip install matplotlib "
              "(or streamtag's [plot] extra); the report without --plot needs nothing more")


def plotting_installed() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def cmd_history(args: argparse.Namespace) -> int:
    """args has db, stream, since, until, tz, json, csv, plot, top, tags, events, period,
    content_by and airtime_by."""
    from streamtag.history.report import collector_paused

    # Python's garbage collector held off from the reading to the writing: it runs again
    # once the report's objects are gone, with nothing of them left to walk
    with collector_paused():
        return _history(args)


def _history(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from streamtag.history import schema
    from streamtag.history.plot import plot_history
    from streamtag.history.report import format_csv, format_json, format_text, load_history
    from streamtag.history.timeparse import parse_range, zone_named

    try:
        now = time.time()
        zone = zone_named(args.tz)
        since, until = parse_range(args.since, args.until, now, zone)
        tags = args.tags
        if tags < 1:
            raise ConfigError(f"--tags {tags}: give the number of tags to list, 1 or more")
        if args.top < 1:
            raise ConfigError(f"--top {args.top}: give the number of tags to draw, 1 or more")
        if args.plot and not Path(args.plot).absolute().parent.is_dir():
            raise ConfigError(f"--plot {args.plot}: its folder does not exist; give a path in a "
                              "folder that exists")
        if args.plot and not plotting_installed():
            raise ConfigError(PLOT_NEEDS)
        schema.normalise_url(args.db)  # a URL streamtag cannot use: a usage error
    except ConfigError as exc:
        print(f"streamtag history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        schema.require_existing(args.db)  # a database not there: nothing to report from
    except ConfigError as exc:
        return failed("history", exc)
    try:
        engine = schema.create_db_engine(args.db, reader=True)
    except ConfigError as exc:
        print(f"streamtag history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        schema.check_readable(engine)
        if args.stream:
            require_streams(engine, args.stream)
        history = load_history(engine, args.stream or None, since, until, top=tags, zone=zone,
                               period=args.period, now=now,
                               content_by=args.content_by, airtime_by=args.airtime_by)
        if args.plot:
            try:
                drawn = plot_history(engine, history, args.plot, top=args.top)
            except OSError as exc:  # a folder it may not write in, a full disk
                raise ConfigError(f"cannot write {args.plot}: {exc.strerror or exc}") from None
            left = len(history.streams()) - len(drawn)
            print(f"streamtag history: wrote {args.plot}"
                  + (f" ({len(drawn)} streams; {left} more not drawn: choose them with "
                     "--stream)" if left > 0 else ""), file=sys.stderr)
    except ConfigError as exc:
        print(f"streamtag history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except sa.exc.OperationalError as exc:
        return failed("history", f"cannot read {schema.describe_url(engine)}: "
                                 f"{str(exc.orig).strip()}")
    finally:
        engine.dispose()
    events = args.events
    if args.json:
        sys.stdout.write(terminal_json(format_json(history, events is not False)))
    elif args.csv:
        sys.stdout.write(format_csv(history, events is not False))
    else:
        sys.stdout.write(terminal_text(format_text(history, bool(events))))
    return 0


def require_streams(engine: sa.Engine, streams: list[str]) -> None:
    """ConfigError naming the streams asked for that the database never recorded (a typo
    reads as an empty range otherwise), with the streams it has."""
    import sqlalchemy as sa

    from streamtag.history import schema

    c = [t.c.stream for t in (schema.statuses, schema.sessions)]
    with engine.connect() as conn:
        found = {row.stream for column in c for row in conn.execute(
            sa.select(column.label("stream")).where(column.in_(streams)).distinct())}
        unknown = [name for name in dict.fromkeys(streams) if name not in found]
        if not unknown:
            return
        known = sorted({row.stream for column in c for row in conn.execute(
            sa.select(column.label("stream")).distinct().limit(NAMES_SHOWN + 1))})
    raise ConfigError(f"--stream {', '.join(terminal_text(repr(n)) for n in unknown)}: "
                      f"never recorded in {schema.describe_url(engine)}; its streams: "
                      f"{names_listed(known, none='none yet')}")
