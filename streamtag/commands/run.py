"""``streamtag run``: the daemon in the foreground until a signal, or until its files end."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from streamtag.commands import EXIT_USAGE, stop_on_signals
from streamtag.model.inference import keep_freed_memory


def cmd_run(args: argparse.Namespace) -> int:
    keep_freed_memory()  # before any thread starts: a thread started earlier keeps its own arena

    # Imported after: loading them may start threads.
    from streamtag.daemon.config import DaemonConfig, load_config, with_overrides
    from streamtag.daemon.daemon import Daemon
    from streamtag.errors import ConfigError, ModelError

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config) if args.config else DaemonConfig()
        config = with_overrides(config, model=args.model, device=args.device,
                                sources=args.source, publish=args.publish, control=args.control,
                                hop_seconds=args.hop_seconds, metrics_port=args.metrics_port,
                                realtime=True if args.realtime else None, shard=args.shard,
                                backend=args.backend, precision=args.precision)
        daemon = Daemon(config)
        daemon.start()
    except (ConfigError, ModelError) as exc:
        print(f"streamtag run: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def exit_at_once() -> None:
        print("streamtag run: second signal, exiting at once", file=sys.stderr)
        os._exit(1)

    with stop_on_signals(on_repeat=exit_at_once) as stop:
        print(f"streamtag run: publishing on {daemon.publisher.endpoint}"
              + (f", control on {daemon.control.endpoint}" if daemon.control else "")
              + f"; session {daemon.publisher.session}", file=sys.stderr, flush=True)
        # The first signal drains (the last windows are published) in a thread of its own, so
        # that this one stays free to see a second signal, which exits at once.
        draining = None
        while not daemon.wait(0.2):
            if draining is not None:
                continue
            if stop.is_set():
                draining = threading.Thread(target=daemon.stop, name="streamtag-shutdown",
                                            daemon=True)
                draining.start()
            elif args.exit_when_done and config.sources and daemon.idle():
                daemon.stop()
    return 0
