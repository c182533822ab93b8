"""``streamtag history``: what was recorded in a time range, as text, CSV or JSON on stdout,
and a timeline picture with ``--plot``. Titles and tags came from stations: the text is shown
without what a terminal would act on, the JSON with such characters escaped, and the CSV with
cells a spreadsheet shows as text (history.report)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from streamtag.commands import (
    EXIT_USAGE,
    NAMES_SHOWN,
    failed,
    names_listed,
    terminal_json,
    terminal_text,
)
from streamtag.errors import ConfigError
from streamtag.history import schema
from streamtag.history.plot import plot_history
from streamtag.history.report import format_csv, format_json, format_text, load_history
from streamtag.history.timeparse import parse_range, zone_named


def cmd_history(args: argparse.Namespace) -> int:
    """args has db, stream, since, until, tz, json, csv, plot, top, tags, events and period."""
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
                               period=args.period, now=now)
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
