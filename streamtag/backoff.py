"""Retrying with exponential back-off: one policy for the sources and the recorder."""

from __future__ import annotations

import time
from collections.abc import Callable

from streamtag.errors import SourceError

# The longest wait a back-off may take: longer ones overflow the clock's waits.
MAX_BACKOFF_S = 86400.0


class Backoff:
    """Exponential back-off, in one place for everything that retries (the live sources'
    reconnects, the recorder's database and snapshot retries): after a failure wait
    ``initial_backoff_s``, doubling on each failed attempt up to ``max_backoff_s``; a success
    (``reset``) starts afresh; ``max_reconnects`` consecutive failed attempts (None: no limit)
    end it, and so does the first failure with ``reconnect=False``.

    ``probe_s`` and ``probe_for_s``: for the first ``probe_for_s`` seconds of failures the wait
    doubles only up to ``probe_s`` (a station off air is asked again about that often, so
    that its return is heard within about ``probe_s``); after them it doubles on from there
    to ``max_backoff_s``. 0 (the default) leaves the first minute to plain doubling."""

    def __init__(self, owner: str, *, reconnect: bool, initial_backoff_s: float,
                 max_backoff_s: float, max_reconnects: int | None, probe_s: float = 0.0,
                 probe_for_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < initial_backoff_s <= max_backoff_s <= MAX_BACKOFF_S:
            raise SourceError(f"{owner}: need 0 < initial_backoff_s <= max_backoff_s <= "
                              f"{MAX_BACKOFF_S:g} (a day), got {initial_backoff_s} and "
                              f"{max_backoff_s}")
        if max_reconnects is not None and max_reconnects < 0:
            raise SourceError(f"{owner}: max_reconnects must be >= 0 (leave it out to retry "
                              f"forever), got {max_reconnects!r}")
        self.reconnect = bool(reconnect)
        self.initial_backoff_s = float(initial_backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_reconnects = max_reconnects
        self.attempts = 0  # consecutive attempts that brought no audio
        self._wait_s = self.initial_backoff_s
        # the probing phase's longest wait: never shorter than the first, never past the cap
        self.probe_s = min(max(float(probe_s), self.initial_backoff_s), self.max_backoff_s)
        self.probe_for_s = float(probe_for_s)
        self._clock = clock
        self._failing_since: float | None = None  # the first failure since the last success

    def reset(self) -> None:
        """The last attempt succeeded (a source got audio): the next failure starts afresh."""
        self.attempts, self._wait_s = 0, self.initial_backoff_s
        self._failing_since = None

    def exhausted(self) -> bool:
        """True when the source must end now instead of reconnecting."""
        return not self.reconnect or (self.max_reconnects is not None
                                      and self.attempts >= self.max_reconnects)

    def next_wait_s(self) -> float:
        """Counts one more attempt and returns how long to wait before it."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        wait_s = self._wait_s
        self.attempts += 1
        probing = self.probe_for_s > 0 and now - self._failing_since < self.probe_for_s
        self._wait_s = min(2.0 * wait_s, self.probe_s if probing else self.max_backoff_s)
        return wait_s
