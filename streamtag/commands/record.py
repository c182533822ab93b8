"""``streamtag record``: the recorder in the foreground until a signal, then a summary.

A database that is down is waited for (with back-off); one that can never be used as given (a
refused login, a missing database or user, an SQLite file that cannot be opened) stops the
command at once with exit status 2 and the fix."""

from __future__ import annotations

import argparse
import gc
import sys
import threading

from streamtag.commands import EXIT_USAGE, stop_on_signals
from streamtag.commands.flags import (
    add_client_keys,
    count_at_least_1,
    port_number,
    seconds_above_0,
    seconds_from_0,
    zmq_endpoint,
)
from streamtag.errors import ConfigError

GC_YOUNG_OBJECTS = 200_000  # new objects between the collector's young passes (Python: 700)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="write what daemons publish to a history database")
    p.add_argument("--connect", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="a daemon's (or a proxy's) PUB endpoint; repeatable")
    p.add_argument("--db", default="sqlite:///tags.db",
                   help="sqlite:///PATH (default sqlite:///tags.db) or postgresql://...")
    p.add_argument("--control", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="a daemon's control endpoint, for a snapshot at start; repeatable")
    p.add_argument("--replay", action="append", metavar="ENDPOINT", type=zmq_endpoint,
                   help="a daemon's replay socket ([publish] replay_endpoint): what the feed "
                        "lost, and what was published while the recorder was stopped, is "
                        "asked for there and stored, rather than a gap; repeatable")
    p.add_argument("--queue-size", type=count_at_least_1, default=100_000,
                   help="messages that may wait for a slow or down database (default 100000)")
    p.add_argument("--batch-size", type=count_at_least_1, default=2000,
                   help="messages per transaction at most (default 2000)")
    p.add_argument("--max-backoff-s", type=seconds_above_0, default=30.0,
                   help="longest wait between retries of a down database (default 30)")
    p.add_argument("--drain-timeout-s", type=seconds_from_0, default=10.0,
                   help="on stop, how long to wait for the database to take the queue")
    p.add_argument("--block-s", type=block_seconds, default=60.0,
                   help="the longest a window waits in memory, packed with its stream's "
                        "minute, before it is written (default 60, at most 60; a crash "
                        "loses that much of each stream, stored as a gap)")
    p.add_argument("--config", metavar="FILE",
                   help="record's TOML file: [retention] (docs/config.md); flags override it")
    p.add_argument("--keep", metavar="KIND=SPAN,...", default="",
                   help="how long to keep what, over the file's [retention], e.g. "
                        "windows=30d,rollups=400d (the defaults); also tracks, events, "
                        "statuses, silences, gaps, snapshots (kept for ever unless given); a "
                        "span is a number and s, m, h, d, w or y, or 'forever'")
    p.add_argument("--metrics-port", type=port_number,
                   help="serve Prometheus metrics on this port")
    p.add_argument("--metrics-address", default="127.0.0.1",
                   help="address of the metrics server (default loopback)")
    p.add_argument("--upgrade", action="store_true",
                   help="create or upgrade the database schema, then exit")
    p.add_argument("--shard", metavar="K/N",
                   help="record only the streams of shard K of N (the stable hash of run "
                        "--shard and run --processes), beside recorders of the other shards "
                        "writing the same database; shard 0 also records the heartbeats. "
                        "auto/N: K from the host name NAME-K (a StatefulSet pod)")
    add_client_keys(p, "the daemon's (or proxy's)")
    p.set_defaults(func=cmd_record)


def block_seconds(text: str) -> float:
    """record --block-s: seconds above 0, at most a minute (a block holds one)."""
    value = seconds_above_0(text)
    if value > 60:
        raise argparse.ArgumentTypeError(f"{text!r}: a block holds at most a minute of a "
                                         "stream; give 60 seconds or fewer")
    return value


def cmd_record(args: argparse.Namespace) -> int:
    """args has config, connect, control, replay, db, queue_size, batch_size, max_backoff_s,
    drain_timeout_s, metrics_port, metrics_address, upgrade, shard, block_s, keep, server_key,
    client_key, quiet and verbose (the logging level, set by streamtag.cli)."""
    with stop_on_signals() as stop:
        return record(args, stop)


def record(args: argparse.Namespace, stop: threading.Event) -> int:
    """Records until `stop` is set; the exit status."""
    import sqlalchemy as sa

    from streamtag.daemon.shard import ShardConfig
    from streamtag.history import schema
    from streamtag.history.config import RecordConfig, load_config
    from streamtag.history.recorder import (
        RETRYABLE_DB_ERRORS,
        Recorder,
        permanent_db_error,
        start_when_up,
    )
    from streamtag.wire.control import default_token_file
    from streamtag.wire.exposure import optional_client_curve

    try:
        config = load_config(args.config) if getattr(args, "config", None) else RecordConfig()
        retention = config.retention.with_keep(args.keep).retention()
        engine = schema.create_db_engine(args.db)
        if args.upgrade:
            try:
                revision = schema.upgrade(engine)
            except sa.exc.DatabaseError as exc:
                permanent = permanent_db_error(exc, engine)
                if permanent is None and not isinstance(exc, RETRYABLE_DB_ERRORS):
                    raise
                raise ConfigError(permanent or f"cannot reach {schema.describe_url(engine)}: "
                                               f"{str(exc.orig).strip()[:200]}") from None
            print(f"streamtag record: {schema.describe_url(engine)} is at schema revision "
                  f"{revision}", file=sys.stderr)
            return 0
        if not args.connect:
            raise ConfigError("give --connect ENDPOINT, the PUB endpoint of a daemon or a "
                              "proxy to record from; repeat it for several daemons")
        curve = optional_client_curve(getattr(args, "server_key", None),
                                      getattr(args, "client_key", None))
        shard = ShardConfig.parse(args.shard).resolve() if getattr(args, "shard", None) \
            else ShardConfig()
        # subscribed at once (what is published while the database is still down waits for
        # it), its metrics served meanwhile (streamtag_record_db_up 0)
        waiting = Recorder(engine, args.connect, args.control or (),
                           queue_size=args.queue_size, batch_size=args.batch_size,
                           max_backoff_s=args.max_backoff_s, curve=curve,
                           owns=None if shard.count == 1 else shard.owns,
                           heartbeats=shard.index == 0, max_block_age_s=args.block_s,
                           retention=retention,
                           replay=getattr(args, "replay", None) or ()).connect()
    except (ConfigError, ValueError, OSError) as exc:
        print(f"streamtag record: {exc}", file=sys.stderr)
        return EXIT_USAGE
    metrics = None
    try:
        if args.metrics_port is not None:
            from streamtag.history.metrics import RecorderMetrics  # prometheus, only if asked

            try:
                metrics = RecorderMetrics(waiting, args.metrics_port, args.metrics_address)
            except OSError as exc:
                print(f"streamtag record: cannot serve metrics on {args.metrics_address}:"
                      f"{args.metrics_port}: {exc}; choose another --metrics-port",
                      file=sys.stderr)
                waiting.stop(0)
                return EXIT_USAGE
        try:
            recorder = start_when_up(engine, waiting, stop, args.max_backoff_s)
        except (ConfigError, ValueError, OSError) as exc:
            print(f"streamtag record: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if recorder is None:
            return 0
        # What this process holds now (modules, the engine) lives as long as it: the garbage
        # collector's full passes need not walk it again while messages stream through. A
        # message is some ten objects that live until its batch is written (a fraction of a
        # second), none in a cycle: at Python's default (a young pass every 700 new objects)
        # each was walked two or three times on its way. Both as they were once it returns.
        young = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_OBJECTS, *young[1:])
        try:
            if not args.quiet:
                # the snapshots it asks for unasked are signed with the token: say where they go
                print(f"streamtag record: recording {', '.join(recorder.endpoints)} into "
                      f"{schema.describe_url(engine)}"
                      + (f"; snapshots from {', '.join(args.control)}, signed with "
                         + ("the admin key" if curve else f"the token in {default_token_file()}")
                         if args.control else "")
                      + (f"; metrics on port {metrics.port}" if metrics else "")
                      + (f"; only the streams of {shard.name}"
                         + (" and the heartbeats" if shard.index == 0 else "")
                         if shard.count > 1 else ""),
                      file=sys.stderr, flush=True)
            stop.wait()
            complete = recorder.stop(args.drain_timeout_s)
            stats = recorder.stats
            print(f"streamtag record: wrote {stats.written} messages; {stats.gaps} gaps "
                  f"({stats.missed} messages missing), {stats.overflowed} dropped at a full queue"
                  + ("" if complete else "; the database did not take everything queued before "
                                         "--drain-timeout-s"), file=sys.stderr)
            return 0 if complete else 1
        finally:
            gc.set_threshold(*young)
            gc.unfreeze()
    finally:
        if metrics is not None:
            metrics.close()
        engine.dispose()
