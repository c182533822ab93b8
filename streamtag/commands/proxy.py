"""``streamtag proxy``: the XSUB/XPUB proxy in the foreground until a signal."""

from __future__ import annotations

import argparse
import sys
import threading

from streamtag.commands import EXIT_USAGE, stop_on_signals
from streamtag.wire.proxy import run_proxy


def cmd_proxy(args: argparse.Namespace) -> int:
    def ready(frontend: str | None, backend: str) -> None:
        print(f"streamtag proxy: daemons publish to {frontend}, subscribers connect to "
              f"{backend}", file=sys.stderr, flush=True)

    # The proxy loop runs in libzmq without returning to Python, so it cannot see a signal:
    # it runs in a thread, and SIGTERM (an orchestrator stopping the pod) or Ctrl-C here
    # stops it through its stop event. Exit 0 either way.
    failure: list[BaseException] = []
    with stop_on_signals() as stop:
        def serve() -> None:
            try:
                run_proxy(args.frontend, args.backend, stop, upstream=args.upstream or (),
                          ready=ready)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                failure.append(exc)
                stop.set()

        worker = threading.Thread(target=serve, name="streamtag-proxy", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    if failure and isinstance(failure[0], OSError):  # an endpoint it cannot bind
        print(f"streamtag proxy: {failure[0].strerror or failure[0]}", file=sys.stderr)
        return EXIT_USAGE
    if failure:
        raise failure[0]
    return 0
