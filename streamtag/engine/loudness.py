"""A stream's EBU R128 loudness, read at each window's end.

Sources that measure loudness (``[health] loudness``) hand the engine, with their chunks, the
100 ms blocks their meter completed, each dated at the stream sample where it ends
(``streamtag.sources.loudness``). A ``LoudnessTrail`` per stream keeps the blocks that windows
still to be scored need, and gives each window the momentary loudness (its last 4 blocks,
400 ms) and the short-term loudness (its last 30, 3 s) at its end: EBU R128's two meters, in
LUFS. A window read before 400 ms (or 3 s) of blocks have arrived gets None for that meter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from streamtag.audio.loudness import BLOCK_S, MOMENTARY_BLOCKS, SHORT_TERM_BLOCKS, mean_lufs

# Blocks a stream holds at most: an hour of windows waiting to be scored would need far fewer
# (a live stream's queue holds a few windows), so this only bounds a stream nobody reads.
MAX_BLOCKS = 4096


class LoudnessTrail:
    """The blocks of one stream, (end sample, power), in the order they were measured."""

    def __init__(self, sample_rate: float) -> None:
        self.sample_rate = float(sample_rate)
        # a block whose end lies within half a block after a window's end belongs to it: the
        # meter's blocks fall on the source's clock, the windows on the frontend's
        self._slack = round(BLOCK_S / 2 * self.sample_rate)
        self._span = round(SHORT_TERM_BLOCKS * BLOCK_S * self.sample_rate)
        self._blocks: deque[tuple[int, float]] = deque(maxlen=MAX_BLOCKS)

    def add(self, blocks: Iterable[tuple[int, float]]) -> None:
        self._blocks.extend(blocks)

    def reading(self, end_sample: int) -> tuple[float | None, float | None]:
        """(momentary, short-term) loudness in LUFS at ``end_sample``; windows are read in
        order, so blocks too old for this one are dropped."""
        blocks = self._blocks
        oldest = end_sample - self._span - self._slack
        while blocks and blocks[0][0] <= oldest:
            blocks.popleft()
        last = end_sample + self._slack
        powers = [power for end, power in blocks if end <= last][-SHORT_TERM_BLOCKS:]
        momentary = (mean_lufs(powers[-MOMENTARY_BLOCKS:])
                     if len(powers) >= MOMENTARY_BLOCKS else None)
        short_term = mean_lufs(powers) if len(powers) >= SHORT_TERM_BLOCKS else None
        return momentary, short_term
