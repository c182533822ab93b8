"""A background thread that says when it is ready, or why it could not start.

The control server and the dashboard's feed each run a loop on a daemon thread whose start can
fail (an endpoint that cannot be bound or connected). ``ReadyThread`` holds what both need:
``start`` runs the target and returns once the target has set ``ready``, raising the
target's ``error`` if it kept one, or ``TimeoutError``; ``stop`` sets ``stopping``, which the
target's loop watches, and joins the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["ReadyThread"]


class ReadyThread:
    """Runs ``target`` once on a daemon thread named ``name``. The target must set ``ready``
    both when it is serving and when it gives up (keeping the exception in ``error``), and
    return once ``stopping`` is set."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=target, name=name, daemon=True)

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self, timeout_s: float, what: str) -> None:
        """Starts the thread and waits for ``ready``; raises the target's error, or
        ``TimeoutError`` saying ``what`` did not happen within ``timeout_s``."""
        if self.started:
            raise RuntimeError(f"{self._thread.name} was already started")
        self._thread.start()
        if not self.ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"{what} within {timeout_s} s")
        if self.error is not None:
            self._thread.join()
            raise self.error

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Asks the target to end; returns whether the thread ended within ``timeout_s``."""
        self.stopping.set()
        if not self.started:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
