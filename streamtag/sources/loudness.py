"""A source's loudness meter on the stream's clock.

A source measures EBU R128 loudness where its audio still has its own rate and channels, before
the downmix and the resampler (``streamtag.audio.loudness``). Each 100 ms block the meter
completes is placed at the stream sample (at the consumer's rate) where it ends, so the engine
can read a window's momentary and short-term loudness at the window's end whatever the chunking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamtag.audio.loudness import LoudnessMeter

# Blocks held for the consumer at most (a consumer takes them with every chunk, a few a chunk):
# a stream that never hands on a chunk cannot grow them without end.
MAX_HELD_BLOCKS = 4096


class StreamLoudness:
    """Feeds a meter and dates its blocks in stream samples at ``target_rate``.

    A segment is audio measured without a break: it starts at the stream sample ``origin``
    that the source's output had reached when its first samples were measured, and its block
    k (from 1) ends ``k * block_length / rate`` seconds later. A new rate or channel layout, or
    ``reset`` (a new connection, the end of an input), starts a new segment.
    """

    def __init__(self, target_rate: float) -> None:
        self.target_rate = float(target_rate)
        self.meter = LoudnessMeter()
        self._segment = -1  # the meter's segment the dating below belongs to
        self._origin = 0
        self._blocks = 0  # blocks popped in this segment
        self._held: list[tuple[int, float]] = []
        self.dropped = 0  # blocks no consumer took before MAX_HELD_BLOCKS were held
        self.unmeasured_samples = 0  # audio the meter cannot measure (``accept``)
        self.why_unmeasured: str | None = None

    def accept(self, samples: np.ndarray, rate: float, position: int, planar: bool = False,
               names: Sequence[str] | None = None) -> None:
        """Measures samples at their own ``rate``; ``position``: the stream sample the source's
        output has reached before them (the resampler's ``samples_out``). Audio the meter
        cannot measure (a rate outside 8-768 kHz, more than 64 channels) is left unmeasured,
        counted in ``unmeasured_samples``: the stream goes on without loudness meanwhile."""
        try:
            self.meter.accept(samples, rate, planar=planar, names=names)
        except ValueError as exc:
            if self.unmeasured_samples == 0:
                self.why_unmeasured = str(exc)
            self.unmeasured_samples += int(np.asarray(samples).size)
            self.meter.reset()
            return
        if self.meter.segments != self._segment:
            self._segment, self._origin, self._blocks = self.meter.segments, position, 0
        powers = self.meter.pop_blocks()
        if powers.size == 0:
            return
        step = self.meter.block_length / self.meter.sample_rate * self.target_rate
        for power in powers.tolist():
            self._blocks += 1
            self._held.append((self._origin + round(self._blocks * step), power))
        if len(self._held) > MAX_HELD_BLOCKS:
            self.dropped += len(self._held) - MAX_HELD_BLOCKS
            del self._held[:len(self._held) - MAX_HELD_BLOCKS]

    def reset(self) -> None:
        """A break in the audio: the next samples start a new segment."""
        self.meter.reset()

    def take(self) -> tuple[tuple[int, float], ...]:
        """The blocks completed since the last call: (stream sample where it ends, power)."""
        held, self._held = self._held, []
        return tuple(held)
