"""The command line's terminal code, one module per command; the parser is streamtag.cli.

What every command shares lives here: the exit status of refused input, and stopping on a
signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

# The exit status of a command that refused its input (flags, config, files), as argparse's own.
EXIT_USAGE = 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(on_repeat: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs (Ctrl-C, or an orchestrator
    stopping the process); the previous handlers are back after it. A signal that finds the
    event already set calls `on_repeat` (a second Ctrl-C: leave at once).

    Python runs signal handlers in the main thread only; elsewhere none is installed and only
    the caller sets the event.
    """
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set() and on_repeat is not None:
            on_repeat()
        stop.set()

    previous = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous[signum] = signal.signal(signum, handle)
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
