"""Per-track summaries: a stream's windows grouped by the title that was playing.

A track is the audio between two title changes, ``[start_sample, end_sample)``. A window belongs
to the track its end falls in (``start_sample < window end <= end_sample``), so every window
counts once, for the title that was playing when its last sample played. Title changes arrive
from the source as soon as they are read, before the windows around them are scored; they wait
here until the first window that ends past them, which closes the track before it. A title may
come with whether its track was heard from its start (`heard_from_start`, where the source
knows: sources/http.py); the track carries it on. The daemon
publishes each closed `TrackSummary` as a ``track`` message; ``streamtag tag`` makes one per file.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from streamtag.audio.loudness import GatedLoudness

# A tag active on more than this share of a track's windows is active for the track: its
# headline tags are what played most of it. (A tag's mean score over its threshold is almost
# never true of a whole track: a tag on for 70 % of a track has a mean pulled down by the rest.)
TRACK_ACTIVE_SHARE = 0.5
# The rule in words, as `streamtag tag` names it beside the tags it gives
HEADLINE_RULE = "on in more than half of its windows"
# A headline does not contradict itself (`headline_tags`). Music's genres come from its Million Song
# Dataset half, whose rock family fires at its low thresholds over orchestral music and piano
# for most of a track with no sign of rock itself, while its MagnaTagATune half hears the
# orchestra or the piano. Where a tag of the classical family was on in at least
# CONTRADICTION_SHARE of a track's windows and none of rock's core was, the rock family is
# left out of what the track is shown as (measured in docs/models.md, `music`). A track
# message's `active` stays the tags on in more than half of its windows (docs/protocol.md).
# Names are compared in lower case.
CLASSICAL_TAGS = frozenset({"classical", "piano", "strings", "violin", "cello", "harpsichord",
                            "choir", "choral", "opera", "harp"})
ROCK_CORE_TAGS = frozenset({"rock", "metal", "heavy metal", "hard rock"})
# genres only: a guitar is heard beside a piano or strings in many an arrangement
ROCK_TAGS = ROCK_CORE_TAGS | {"alternative", "indie", "alternative rock", "indie rock",
                              "classic rock", "progressive rock", "punk", "indie pop"}
CONTRADICTION_SHARE = 0.2
# the tags whose shares `headline_tags` reads
HEADLINE_FAMILIES = CLASSICAL_TAGS | ROCK_CORE_TAGS
# Decimals that scores are reported with, on the wire and by `streamtag tag`: they need no
# more, and a 56-tag message stays small.
SCORE_DECIMALS = 6
# Windows of the open track remembered with their active tags, so that dead air confirmed
# after it began (``silence_s`` later) takes back the tags its first windows counted: far more
# than a dead-air check's usual 10 s needs, and a bound on a stream's memory.
RECENT_WINDOWS = 512
# A track's loudness leaves out its first second after a title change: an ICY title is placed
# up to a read-ahead (8 KB: half a second of a 128 kbit/s stream, a second of 64) early.
LOUDNESS_EDGE_S = 1.0


@dataclasses.dataclass(frozen=True)
class TrackSummary:
    """One closed track: the audio ``[start_sample, end_sample)`` between two title changes
    (`reason`: "title_change" or "end"), with the means over its `windows` windows, one value
    per tag in the order of `tags` (none for a track shorter than a window), the share of its
    windows in which each tag was active, and the tags `active` for the track.
    `heard_from_start`: whether its audio began at the track's start, where the source knew
    (None: not known)."""

    title: str | None
    reason: str
    start_s: float
    end_s: float
    start_sample: int
    end_sample: int
    started_at: float  # wall clock, Unix seconds
    ended_at: float
    windows: int
    tags: tuple[str, ...]
    mean_raw: tuple[float, ...]
    mean_smoothed: tuple[float, ...]
    active_share: tuple[float, ...]
    active: tuple[str, ...]
    model_name: str
    model_hash: str
    heard_from_start: bool | None = None
    # EBU R128 integrated loudness (gated) of the track's own audio, where the source measured
    # it (``add_loudness``); None when not measured or nothing passed the absolute gate
    loudness_lufs: float | None = None

    @property
    def headline(self) -> tuple[str, ...]:
        """Its `active` tags as the track is shown (`headline_tags`)."""
        return headline_tags(self.active, dict(zip(self.tags, self.active_share, strict=True)))


@dataclasses.dataclass
class _Open:
    """The track now playing, with running sums over its windows."""

    title: str | None
    start_sample: int
    started_at: float
    last_end: int  # end of its last window (or its start)
    windows: int = 0
    tags: tuple[str, ...] = ()
    raw_sum: np.ndarray | None = None
    smoothed_sum: np.ndarray | None = None
    active_count: np.ndarray | None = None
    model_name: str = ""
    model_hash: str = ""
    heard_from_start: bool | None = None
    # its last windows: (end sample, the places of the tags they counted as active)
    recent: deque = dataclasses.field(default_factory=lambda: deque(maxlen=RECENT_WINDOWS))
    loudness: GatedLoudness | None = None  # its audio's, where it is measured


@dataclasses.dataclass(frozen=True)
class _Change:
    sample: int
    title: str | None
    at: float
    heard_from_start: bool | None = None
    # the loudness of the audio from here on, which comes before the windows that close the
    # track before it
    loudness: list[GatedLoudness] = dataclasses.field(default_factory=list, compare=False)


class TrackSummarizer:
    """One stream's tracks: feed title changes, windows and the end, in any interleaving
    where each kind comes in its own order; each call returns the tracks it closed."""

    def __init__(self, sample_rate: float, title: str | None = None,
                 started_at: float | None = None) -> None:
        self.sample_rate = float(sample_rate)
        self._open = _Open(title, 0, time.time() if started_at is None else started_at, 0)
        self._changes: deque[_Change] = deque()
        self._index: dict[str, int] = {}  # tag -> its place in the open track's sums
        self.ended = False

    @property
    def title(self) -> str | None:
        """The latest title, whether or not the windows have reached it yet."""
        return self._changes[-1].title if self._changes else self._open.title

    def change_title(self, title: str | None, sample: int, at: float | None = None,
                     heard_from_start: bool | None = None) -> None:
        """The title changes at stream sample ``sample`` (wall-clock ``at``); whether its
        track was heard from its start, where the source knows. A change at or before the open
        track's start (a stream's first title) names that track instead."""
        at = time.time() if at is None else at
        # A window already counted past `sample` stays where it is: the change moves after it
        # (and then its track's start was not where the source placed it).
        if int(sample) < self._open.last_end:
            sample, heard_from_start = self._open.last_end, None
        sample = int(sample)
        if self._changes and sample <= self._changes[-1].sample:
            last = self._changes.pop()  # two changes at one place: the later title wins
            self._changes.append(_Change(last.sample, title, last.at, heard_from_start,
                                         last.loudness))
        elif not self._changes and sample <= self._open.start_sample:
            self._open.title, self._open.heard_from_start = title, heard_from_start
        elif title != self.title:
            self._changes.append(_Change(sample, title, at, heard_from_start))

    def add_loudness(self, blocks: Iterable[tuple[int, float]]) -> None:
        """The source's 100 ms loudness blocks as they are measured, each (the stream sample
        where it ends, its power): each counts for the track its end falls in, but for those
        of a track's first LOUDNESS_EDGE_S after a title change, which count for none (a
        station's title is placed up to a read-ahead early: what ends the track before would
        count for this one). Blocks run ahead of the windows; a title change placed later at
        a sample the blocks have passed (an ICY connection's first title) leaves them where
        they were counted."""
        edge = round(LOUDNESS_EDGE_S * self.sample_rate)
        for end, power in blocks:
            target = self._open
            owner: list[GatedLoudness] | None = None
            for change in reversed(self._changes):
                if end > change.sample:
                    owner = change.loudness
                    break
            start = target.start_sample if owner is None else change.sample
            if (owner is not None or target.start_sample > 0) and end <= start + edge:
                continue
            if owner is not None:
                if not owner:
                    owner.append(GatedLoudness())
                owner[0].add((power,))
                continue
            if target.loudness is None:
                target.loudness = GatedLoudness()
            target.loudness.add((power,))

    def add_window(self, end_sample: int, tags: Sequence[str], raw, smoothed,
                   active: Sequence[str], model_name: str, model_hash: str,
                   music: bool = True,
                   dead_air_from: int | None = None) -> list[TrackSummary]:
        """Counts one window for the track its end falls in; returns the tracks it closed.
        ``music`` False: the window is not music (dead air; speech, where the window's content
        says so): it counts as a window of the track with no tag active, so a track that is
        mostly not music has no headline tag. ``dead_air_from``: dead air confirmed with this
        window began at this stream sample; the open track's windows that end after it count
        no tag either (a stuck tone keeps the model's tags on until it is confirmed)."""
        closed = []
        while self._changes and end_sample > self._changes[0].sample:
            closed.append(self._next(self._changes.popleft(), "title_change"))
        track = self._open
        tags = tuple(tags)
        if tags != track.tags:  # the first window, or a model reload with other tags
            track.tags, track.windows = tags, 0
            track.raw_sum = np.zeros(len(tags))
            track.smoothed_sum = np.zeros(len(tags))
            track.active_count = np.zeros(len(tags), dtype=np.int64)
            self._index = {tag: i for i, tag in enumerate(tags)}
            track.recent.clear()
        track.windows += 1
        track.raw_sum += np.asarray(raw, dtype=np.float64)
        track.smoothed_sum += np.asarray(smoothed, dtype=np.float64)
        counted = [self._index[tag] for tag in active] if music else []  # a few at a time
        for i in counted:
            track.active_count[i] += 1
        track.recent.append((int(end_sample), counted))
        if dead_air_from is not None:
            for end, places in reversed(track.recent):
                if end <= dead_air_from:
                    break
                for i in places:
                    track.active_count[i] -= 1
                places.clear()
        track.model_name, track.model_hash = model_name, model_hash
        track.last_end = max(track.last_end, int(end_sample))
        return closed

    def end(self, end_sample: int, at: float | None = None) -> list[TrackSummary]:
        """The stream ended at ``end_sample``: closes the changes before it and the last track.
        Changes at or after the end start no track (they name no audio)."""
        closed = []
        while self._changes and self._changes[0].sample < end_sample:
            closed.append(self._next(self._changes.popleft(), "title_change"))
        self._changes.clear()
        at = time.time() if at is None else at
        end_sample = max(int(end_sample), self._open.last_end)
        if end_sample > self._open.start_sample or self._open.windows:
            closed.append(self._close(end_sample, at, "end"))
        # else no audio since the last track began (a source that failed before any came):
        # no track of no length
        self.ended = True
        return closed

    def _next(self, change: _Change, reason: str) -> TrackSummary:
        track = self._close(change.sample, change.at, reason)
        self._open = _Open(change.title, change.sample, change.at, change.sample,
                           heard_from_start=change.heard_from_start,
                           loudness=change.loudness[0] if change.loudness else None)
        return track

    def _close(self, end_sample: int, at: float, reason: str) -> TrackSummary:
        t = self._open
        if t.windows:
            tags = t.tags
            mean_raw = _floats(t.raw_sum / t.windows)
            mean_smoothed = _floats(t.smoothed_sum / t.windows)
            share = tuple(float(c) / t.windows for c in t.active_count)
        else:  # shorter than a window: no means
            tags = mean_raw = mean_smoothed = share = ()
        active = tuple(tag for tag, s in zip(tags, share, strict=True) if s > TRACK_ACTIVE_SHARE)
        end_sample = max(end_sample, t.start_sample)
        return TrackSummary(title=t.title, reason=reason,
                            start_s=t.start_sample / self.sample_rate,
                            end_s=end_sample / self.sample_rate, start_sample=t.start_sample,
                            end_sample=end_sample, started_at=t.started_at, ended_at=at,
                            windows=t.windows, tags=tags, mean_raw=mean_raw,
                            mean_smoothed=mean_smoothed, active_share=share, active=active,
                            model_name=t.model_name, model_hash=t.model_hash,
                            heard_from_start=t.heard_from_start,
                            loudness_lufs=None if t.loudness is None else t.loudness.lufs())


def headline_tags(active: Sequence[str], share: Mapping[str, float]) -> tuple[str, ...]:
    """What a track is shown as: its ``active`` tags (on in more than half of its windows)
    less the rock family where the classical family contradicts it; ``share``: each tag's
    share of the track's windows it was on in (a tag left out: never on)."""
    def most(family: frozenset[str]) -> float:
        return max((s for tag, s in share.items() if tag.lower() in family), default=0.0)

    if most(CLASSICAL_TAGS) >= CONTRADICTION_SHARE > most(ROCK_CORE_TAGS):
        return tuple(tag for tag in active if tag.lower() not in ROCK_TAGS)
    return tuple(active)


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
