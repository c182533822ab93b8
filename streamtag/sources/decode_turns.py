"""Turns: at most N source threads working at once, served in the order they asked.

Every source runs in a thread of its own. A few hundred of them, each ready to decode, all
contend for the GIL, which PyAV and soxr drop for every 26 ms MP3 frame: measured at 256
real-time MP3 streams on two cores, 70 % of the CPU went to the kernel handing it over and the
engine fell ever further behind. Taking turns, a thread holds one while it decodes, resamples
and frames, gives it up while it waits for a clock, a peer, a device or the engine
(``released``), and hands it on after a time slice (``pass_on``); the threads without a turn
sleep. First come, first served, so no stream races ahead of the others.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Turns:
    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"turns need a count >= 1, got {count}")
        self.count = count
        self._free = count
        self._lock = threading.Lock()
        self._waiting: deque[threading.Lock] = deque()

    def take(self) -> None:
        """Blocks until this thread has a turn."""
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append(gate)
        gate.acquire()  # released by the holder that hands its turn over

    def give(self) -> None:
        """Gives this thread's turn to the first in line, or back to the pool."""
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()
            else:
                self._free += 1

    def pass_on(self) -> None:
        """With others waiting, hands this thread's turn to the first of them and queues up
        behind the rest; otherwise keeps it."""
        with self._lock:
            if not self._waiting:
                return
            self._waiting.popleft().release()
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append(gate)
        gate.acquire()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def __enter__(self) -> Turns:
        self.take()
        return self

    def __exit__(self, *exc_info) -> None:
        self.give()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Around a wait inside a turn: others work meanwhile; the turn is taken back after."""
        self.give()
        try:
            yield
        finally:
            self.take()
