"""Per-stream smoothing: window scores → smoothed scores, tag states and on/off events.

Each tag's score goes through an exponential moving average with a time constant in seconds (so
the smoothing does not depend on the hop). A tag turns on when its smoothed score reaches the
tag's threshold (from the model file) and off when it falls below threshold − margin
(hysteresis), or below half the threshold where that is higher. Once on, a tag stays on at
least ``min_on_s``; once off, it stays off at least ``min_off_s`` (audio time), so a flicker
never becomes a pair of events.

Silence (``streamtag.engine.health``): no tag turns on with a quiet window (``update``'s
``quiet``), and once silence is confirmed every active tag turns off (``silence``), its event
dated where the silence began, so that no tag is on inside dead air.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from streamtag.engine.config import SmoothingConfig


@dataclasses.dataclass(frozen=True)
class TagEvent:
    tag: str
    state: str  # "on" or "off"
    score: float  # the smoothed score at the change
    time_s: float  # audio time of the window that caused it


class Smoother:
    """Smoothing state of one stream. ``update`` is called once per scored window, in order."""

    def __init__(self, tags: Sequence[str], thresholds: Sequence[float] | np.ndarray,
                 config: SmoothingConfig | None = None) -> None:
        if len(tags) != len(thresholds):
            raise ValueError(f"{len(tags)} tags but {len(thresholds)} thresholds")
        self.tags = list(tags)
        self.config = config or SmoothingConfig()
        self.on_threshold = np.asarray(thresholds, dtype=np.float64)
        # Never below half the on threshold: with the low thresholds of a calibrated model
        # (0.05, say) threshold - margin would be negative, and a tag once on would stay on.
        self.off_threshold = np.maximum(self.on_threshold - self.config.margin,
                                        self.on_threshold / 2)
        self.reset()

    def reset(self) -> None:
        n = len(self.tags)
        self.smoothed = np.zeros(n)
        self.active = np.zeros(n, dtype=bool)
        self._changed_at = np.full(n, -math.inf)  # audio time of each tag's last change
        self._last_time: float | None = None
        # Per tag, the level whose crossing may change its state: the on threshold while it
        # is off (on at >=), the off threshold while it is on (off at <). One comparison with
        # the active flags then tells whether any tag may turn, which most windows do not.
        self._level = self.on_threshold.copy()
        self._active_tags: tuple[str, ...] = ()

    def update(self, scores: np.ndarray, time_s: float,
               quiet: bool = False) -> tuple[np.ndarray, list[TagEvent]]:
        """Folds in one window's scores at audio time ``time_s``; returns (smoothed, events).
        A ``quiet`` window (below the silence level) turns no tag on.

        The returned array is the smoother's own and is never changed afterwards (the next
        window makes a new one): read it, don't write it."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != self.smoothed.shape:
            raise ValueError(f"expected {len(self.tags)} scores, got shape {scores.shape}")
        if self._last_time is None or self.config.time_constant_s == 0:
            self.smoothed = scores.copy()
        else:
            dt = max(0.0, time_s - self._last_time)
            alpha = 1.0 - math.exp(-dt / self.config.time_constant_s)
            # a new array, not in place: the caller holds the last one
            self.smoothed = self.smoothed + alpha * (scores - self.smoothed)
        self._last_time = time_s
        # (s >= level) != active: an off tag at or over its on threshold, an on tag under its
        # off threshold. Most windows stop here, a few numpy calls per window in all.
        if not np.not_equal(self.smoothed >= self._level, self.active).any():
            return self.smoothed, []
        return self.smoothed, self._turn(time_s, quiet)

    def _turn(self, time_s: float, quiet: bool = False) -> list[TagEvent]:
        """The tags that cross their level and have held their state long enough turn."""
        held = time_s - self._changed_at
        turn_on = (~self.active & (self.smoothed >= self.on_threshold)
                   & (held >= self.config.min_off_s) & (not quiet))
        turn_off = (self.active & (self.smoothed < self.off_threshold)
                    & (held >= self.config.min_on_s))
        changed = turn_on | turn_off
        if not changed.any():  # crossing, but held too briefly
            return []
        events = [TagEvent(self.tags[i], "off", float(self.smoothed[i]), time_s)
                  for i in np.flatnonzero(turn_off)]
        events += [TagEvent(self.tags[i], "on", float(self.smoothed[i]), time_s)
                   for i in np.flatnonzero(turn_on)]
        self.active ^= changed
        self._changed_at[changed] = time_s
        self._states_changed()
        return events

    def _states_changed(self) -> None:
        self._level = np.where(self.active, self.off_threshold, self.on_threshold)
        self._active_tags = tuple(self.tags[i] for i in np.flatnonzero(self.active))

    def silence(self, start_s: float) -> list[TagEvent]:
        """Silence confirmed, begun at audio time ``start_s``: every active tag turns off, at
        ``start_s`` or, for a tag that turned on after it, at that time (min durations do not
        apply)."""
        events = []
        for i in np.flatnonzero(self.active):
            at = max(float(start_s), float(self._changed_at[i]))
            events.append(TagEvent(self.tags[i], "off", float(self.smoothed[i]), at))
            self._changed_at[i] = at
        self.active[:] = False
        self._states_changed()
        return events

    def close(self, time_s: float) -> list[TagEvent]:
        """End of the stream: every active tag turns off (min durations no longer apply)."""
        events = [TagEvent(self.tags[i], "off", float(self.smoothed[i]), time_s)
                  for i in np.flatnonzero(self.active)]
        self.active[:] = False
        self._states_changed()
        return events

    def active_tags(self) -> tuple[str, ...]:
        """The tags now on, in tag order."""
        return self._active_tags
