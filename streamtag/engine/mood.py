"""The mood of the music: a model's smoothed scores and the audio's energy, turned into one or
two words a screen can show, by a table in the package (``moods.toml``, docs/venue.md).

Each tag that describes how music feels (the table's ``[tags]``) stands for a rated English word
whose valence and arousal are published norms (Warriner, Kuperman & Brysbaert 2013). A window's
valence is the mean of those words' valences, each weighted by how far its tag's score stands
above half its threshold, pulled towards the display words' centre while the evidence is weak.
Its arousal is mostly the audio's energy (level and onset rate), which places it on the display
words' arousal span, so that loud, busy music reaches the lively words and quiet, still music
the calm ones whatever a model's tags say; the tags move it by at most a quarter. The words
shown are the display words nearest the point. The point moves smoothly (an exponential average
over audio time); a new main word is shown once it has held for a short dwell where the point
has clearly left the shown word, a long one where it only wavers at a border, so a screen
follows a change of music within seconds and stays put on steady music. Silence, speech or
anything else that is not music takes the words and the genre line off at once (a screen shows
no mood over a voice or dead air), and the music after it is judged afresh; the genre line
changes at most once a minute within a track, and goes at once with the track (a new title).

Nothing here knows sockets or pages: the daemon puts the result in its scores messages.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamtag.engine.config import (
    DWELL_S,
    POINT_TIME_CONSTANT_S,
    SILENCE_DBFS,
    SILENCE_DWELL_S,
)
from streamtag.errors import ConfigError

TABLE_FILE = "moods.toml"

# Energy from the audio (0 to 1): level between these two RMS levels, onset rate up to this.
# Mastered music sits at -20 to -8 dBFS RMS and a quiet room far below it; the level spread
# between pieces is small, so the onset rate (0.5 to 5 per second on real music) carries more.
ENERGY_QUIET_DBFS = -35.0
ENERGY_LOUD_DBFS = -10.0
ENERGY_BUSY_ONSETS_HZ = 5.0
ENERGY_LEVEL_SHARE = 0.4

# A new main word is shown once it has held DWELL_S of audio where the music clearly changed,
# this much where the point only wavers at a border (or the second word alone changes).
BORDER_DWELL_S = 30.0
CLEAR_MOVE = 0.3  # a change is clear when the point moved this far from where the words fit
BORDER_TIME_CONSTANT_S = 15.0  # the slow average that decides the other changes ...
BORDER_MOVE = 0.1  # ... once it has moved this far from where the words were shown
SETTLE_S = 3.0  # music after a gap is first judged this long after it began (a window's length)
PRIOR_WEIGHT = 1.0  # the evidence (summed tag weights) at which tags are trusted by half
MAX_TAG_WEIGHT = 2.5  # one tag far above its threshold counts this much at most
TAG_SHARE_OF_AROUSAL = 0.25  # with full tag evidence; the audio's energy gives the rest
# The energies placed at the calmest and the most aroused display word: real recordings span
# about 0.1 (quiet, slow) to 0.8 (loud, dense, fast), docs/venue.md.
AROUSAL_ENERGY_LOW = 0.1
AROUSAL_ENERGY_HIGH = 0.75
SECOND_WORD_RATIO = 1.3  # a second word is shown when it is this close, relative to the first
KEEP_WORD_RATIO = 1.15  # the shown first word stays while within this of the nearest
GENRE_TIME_CONSTANT_S = 20.0  # the genre scores' average over the track
GENRE_HOLD_S = 60.0  # the genre line changes at most this often within a track
GENRE_DWELL_S = 10.0  # ... and only to genres that have held this long
GENRE_RATIO = 1.0  # a genre is shown once its averaged score reaches its threshold ...
GENRE_KEEP_RATIO = 0.75  # ... and kept while it stays above this share of it
MAX_GENRES = 2


def energy_of(rms_dbfs: float, onset_rate_hz: float) -> float:
    """The audio's energy, 0 (silent, still) to 1 (loud, busy), rounded to 3 places."""
    span = ENERGY_LOUD_DBFS - ENERGY_QUIET_DBFS
    loud = min(1.0, max(0.0, (rms_dbfs - ENERGY_QUIET_DBFS) / span))
    busy = min(1.0, max(0.0, onset_rate_hz / ENERGY_BUSY_ONSETS_HZ))
    return round(ENERGY_LEVEL_SHARE * loud + (1.0 - ENERGY_LEVEL_SHARE) * busy, 3)


def _pair(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{where} must be [valence, arousal], two numbers, got {value!r}")
    return float(value[0]), float(value[1])


@dataclasses.dataclass(frozen=True)
class MoodTable:
    """The package's mood table: rated words as (valence, arousal) points in [-1, 1], which
    tags stand for which word, which tags are genres, and the words a display may show."""

    points: Mapping[str, tuple[float, float]]
    tags: Mapping[str, str]  # lower-case tag -> rated word
    genres: frozenset[str]  # lower-case tags
    display: tuple[tuple[str, tuple[float, float]], ...]

    @classmethod
    def load(cls, text: str | None = None) -> MoodTable:
        """The table in the package, or one given as TOML text; ConfigError names a fault."""
        if text is None:
            text = importlib.resources.files("streamtag.engine").joinpath(TABLE_FILE) \
                .read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"mood table: {exc}") from None
        unknown = sorted(set(data) - {"scale", "norms", "tags", "genres", "display"})
        if unknown:
            raise ConfigError(f"mood table: unknown section(s) {unknown}")
        for section, keys in (("scale", {"midpoint", "half_range"}), ("genres", {"tags"})):
            extra = sorted(set(data.get(section, {})) - keys)
            if extra:
                raise ConfigError(f"mood table: unknown key(s) {extra} in [{section}]")
        scale = data.get("scale", {})
        midpoint = float(scale.get("midpoint", 5.0))
        half = float(scale.get("half_range", 4.0))
        if not half > 0:
            raise ConfigError("mood table: scale half_range must be > 0")
        points = {}
        for word, value in data.get("norms", {}).items():
            v, a = _pair(value, f"mood table norms.{word}")
            points[word] = (round((v - midpoint) / half, 4), round((a - midpoint) / half, 4))
            if not all(-1.0 <= x <= 1.0 for x in points[word]):
                raise ConfigError(f"mood table: norms.{word} lies outside the scale")

        def rated(word: Any, where: str) -> str:
            if word not in points:
                raise ConfigError(f"mood table: {where} names {word!r}, which has no rating in "
                                  "[norms]")
            return word

        tags = {tag.lower(): rated(word, f"tags.{tag}")
                for tag, word in data.get("tags", {}).items()}
        genres = frozenset(str(t).lower() for t in data.get("genres", {}).get("tags", []))
        display = tuple((shown, points[rated(word, f"display.{shown}")])
                        for shown, word in data.get("display", {}).items())
        if not display:
            raise ConfigError("mood table: [display] names no words")
        return cls(points, tags, genres, display)

    def plan(self, tags: Sequence[str],
             thresholds: Sequence[float] | np.ndarray | None) -> MoodPlan:
        """What one model's tags say of mood: its mood tags, their points and thresholds, and
        its genre tags. A model without thresholds counts 0.5 as each tag's."""
        th = (np.full(len(tags), 0.5, np.float64) if thresholds is None
              else np.asarray(thresholds, dtype=np.float64))
        if th.shape != (len(tags),):
            raise ValueError(f"{len(th)} thresholds for {len(tags)} tags")
        th = np.maximum(th, 1e-6)
        mood = [i for i, tag in enumerate(tags) if tag.lower() in self.tags]
        genre = [i for i, tag in enumerate(tags) if tag.lower() in self.genres]
        points = np.array([self.points[self.tags[tags[i].lower()]] for i in mood],
                          dtype=np.float64).reshape(-1, 2)
        return MoodPlan(tags=tuple(tags), mood_index=np.array(mood, dtype=np.intp),
                        points=points, mood_thresholds=th[mood],
                        genre_index=np.array(genre, dtype=np.intp),
                        genre_thresholds=th[genre], display=self.display)


@dataclasses.dataclass(frozen=True, eq=False)
class MoodPlan:
    """One model's mood: decided once when the model is loaded, used for every window."""

    tags: tuple[str, ...]
    mood_index: np.ndarray
    points: np.ndarray  # (mood tags, 2): valence, arousal
    mood_thresholds: np.ndarray
    genre_index: np.ndarray
    genre_thresholds: np.ndarray
    display: tuple[tuple[str, tuple[float, float]], ...]

    @property
    def mood_tags(self) -> tuple[str, ...]:
        return tuple(self.tags[i] for i in self.mood_index)

    @functools.cached_property
    def genre_tags(self) -> tuple[str, ...]:
        return tuple(self.tags[i] for i in self.genre_index)

    def point(self, smoothed: np.ndarray, energy: float | None) -> tuple[float, float]:
        """The valence/arousal point of one window's smoothed scores and energy.

        Without evidence the point is the display words' centre (the prior: music of no
        particular mood), and the energy alone places arousal within the display words' span
        (AROUSAL_ENERGY_LOW or less at the calmest word, AROUSAL_ENERGY_HIGH or more at the
        most aroused); mood tags pull the point towards their words as their scores rise above
        half their thresholds, the arousal by at most TAG_SHARE_OF_AROUSAL."""
        v, a_tags = self.centre
        evidence = 0.0
        if len(self.mood_index):
            ratio = np.asarray(smoothed, dtype=np.float64)[self.mood_index] / self.mood_thresholds
            w = np.clip(ratio - 0.5, 0.0, MAX_TAG_WEIGHT)
            total = float(w.sum())
            if total > 0:
                mean_v, mean_a = (w @ self.points) / total
                evidence = total / (total + PRIOR_WEIGHT)
                v = evidence * mean_v + (1.0 - evidence) * v
                a_tags = evidence * mean_a + (1.0 - evidence) * a_tags
        if energy is None:
            return _clip(v), _clip(a_tags)
        low, high = self.arousal_span
        share = (min(1.0, max(0.0, energy)) - AROUSAL_ENERGY_LOW) \
            / (AROUSAL_ENERGY_HIGH - AROUSAL_ENERGY_LOW)
        a_audio = low + (high - low) * min(1.0, max(0.0, share))
        tags_share = TAG_SHARE_OF_AROUSAL * evidence
        return _clip(v), _clip(tags_share * a_tags + (1.0 - tags_share) * a_audio)

    @functools.cached_property
    def centre(self) -> tuple[float, float]:
        return (float(np.mean([p[0] for _, p in self.display])),
                float(np.mean([p[1] for _, p in self.display])))

    @functools.cached_property
    def arousal_span(self) -> tuple[float, float]:
        return (min(p[1] for _, p in self.display), max(p[1] for _, p in self.display))

    def words(self, v: float, a: float,
              shown: Sequence[str] = ()) -> tuple[str, ...]:
        """The one or two display words nearest (v, a). The words ``shown`` now hold a little
        longer (hysteresis, so a point near a border does not make them swap back and forth):
        the first stays first while within KEEP_WORD_RATIO of the nearest, a second stays while
        within SECOND_WORD_RATIO x KEEP_WORD_RATIO of the first, and a second is added only
        within SECOND_WORD_RATIO / KEEP_WORD_RATIO."""
        dist = sorted((math.hypot(v - pv, a - pa), word) for word, (pv, pa) in self.display)
        near = dict((word, d) for d, word in dist)
        first_d, first = dist[0]
        if shown and shown[0] in near and near[shown[0]] <= KEEP_WORD_RATIO * first_d + 1e-9:
            first, first_d = shown[0], near[shown[0]]
        scale = max(first_d, 0.05)
        if len(shown) > 1 and shown[1] != first and shown[1] in near and \
                near[shown[1]] <= SECOND_WORD_RATIO * KEEP_WORD_RATIO * scale:
            return first, shown[1]
        d2, second = next((d, w) for d, w in dist if w != first)
        limit = SECOND_WORD_RATIO / KEEP_WORD_RATIO if len(shown) == 1 else SECOND_WORD_RATIO
        if d2 <= limit * scale:
            return first, second
        return (first,)

    def genre_ratios(self, smoothed: np.ndarray) -> np.ndarray:
        """Each genre tag's score over its threshold."""
        return np.asarray(smoothed, dtype=np.float64)[self.genre_index] / self.genre_thresholds

    def genres_of(self, ratio: np.ndarray, keep: Sequence[str] = ()) -> tuple[str, ...]:
        """The genre tags whose ``ratio`` is at least GENRE_RATIO, strongest first; those in
        ``keep`` (the genres shown) come first, in their order, while at least
        GENRE_KEEP_RATIO."""
        if not len(self.genre_index):
            return ()
        names = self.genre_tags
        kept = [g for g in keep if g in names and ratio[names.index(g)] >= GENRE_KEEP_RATIO]
        order = np.argsort(-ratio, kind="stable")
        new = [names[i] for i in order if ratio[i] >= GENRE_RATIO and names[i] not in kept]
        return tuple((kept + new)[:MAX_GENRES])

    def genres(self, smoothed: np.ndarray) -> tuple[str, ...]:
        """The genre tags at or above their thresholds, strongest (score / threshold) first."""
        return self.genres_of(self.genre_ratios(smoothed))


def _average(point: tuple[float, float] | None, target: tuple[float, float], step: float,
             time_constant_s: float) -> tuple[float, float]:
    """One step of an exponential average over audio time (the first value: the target)."""
    if point is None or time_constant_s == 0:
        return target
    k = 1.0 - math.exp(-step / time_constant_s)
    return (point[0] + k * (target[0] - point[0]), point[1] + k * (target[1] - point[1]))


def _clip(x: float) -> float:
    return min(1.0, max(-1.0, float(x)))



def is_music(content: str | None) -> bool:
    """Whether a window's content (the engine's music/speech/silence/tone/noise, None where
    the engine says nothing) is music, the only content that has a mood and a genre. Anything
    else is handled as silence: the mood shown goes (after ``silence_dwell_s``, at once by
    default), and the music after it starts afresh."""
    return content is None or content == "music"


class MoodTracker:
    """One stream's mood, window after window: the point's average, the words' dwell and the
    genre line's hold.

    A window without music (quiet, dead air, or a content other than music) ends the music:
    its genre line goes at once, its words once such windows have lasted ``silence_dwell_s``
    (0: at once), and what was measured of it is forgotten, so the music after it is judged
    on its own. That music's first ``SETTLE_S`` are not shown (the windows that straddle the
    gap mix the two); then its words are shown at once (its genres once it has played
    GENRE_DWELL_S), and from there on they change only as ``_decide`` and ``_hold_genres``
    say."""

    def __init__(self, plan: MoodPlan, dwell_s: float = DWELL_S,
                 silence_dwell_s: float = SILENCE_DWELL_S,
                 time_constant_s: float = POINT_TIME_CONSTANT_S,
                 silence_dbfs: float = SILENCE_DBFS) -> None:
        if dwell_s < 0 or silence_dwell_s < 0 or time_constant_s < 0:
            raise ValueError("mood dwell and time constant must be >= 0")
        self.plan = plan
        # the [health] section's silence_dbfs, so that the display and the silence event agree
        self.silence_dbfs = silence_dbfs
        self.dwell_s = dwell_s
        self.border_dwell_s = max(BORDER_DWELL_S, dwell_s)
        self.silence_dwell_s = silence_dwell_s
        self.time_constant_s = time_constant_s
        self.reset()

    def reset(self) -> None:
        self._point: tuple[float, float] | None = None
        self._last_end: float | None = None
        self._music_since: float | None = None  # the audio time the music began; None: none
        self._after_gap = False  # the music since _music_since came after a window without
        self._settled = False  # the music since _music_since has been shown
        self.shown: tuple[str, ...] | None = None  # None: nothing shown yet
        self.since_s = 0.0
        self._pending: tuple[str, ...] | None = None
        self._pending_since = 0.0
        self._left_since: float | None = None  # since when the point is clearly elsewhere
        # where the shown words fit: the slow average while they are the nearest
        self._anchor: tuple[float, float] | None = None
        self._slow: tuple[float, float] | None = None  # the point's slow average
        self._slow_anchor: tuple[float, float] | None = None  # ... when the words were shown
        self._genre_avg: np.ndarray | None = None
        self.genres_shown: tuple[str, ...] = ()
        self._genres_since: float | None = None  # None: the track's genres are not shown yet
        self._genre_start: float | None = None  # the audio time the track's genres began
        self._new_track = False  # new_track() was called: the next window starts a track
        self._genre_pending: tuple[str, ...] | None = None
        self._genre_pending_since = 0.0

    def new_track(self) -> None:
        """The track changed (a new title): the old track's genres go at the next window, and
        the new one's are shown afresh, without the hold. Safe to call from another thread
        than ``update``'s."""
        self._new_track = True

    def update(self, end_s: float, smoothed: np.ndarray, rms_dbfs: float | None = None,
               energy: float | None = None, dead_air: bool = False,
               content: str | None = None) -> dict[str, Any]:
        """The mood after the window ending at ``end_s`` (audio seconds): the fields of the
        protocol's scores ``mood`` object. ``dead_air``: the stream's health found dead air
        that is not quiet (a stuck tone), which has no mood either; ``content``: what the
        window is, or what its newest audio is where that is silence or a tone (``is_music``
        decides)."""
        music = (not dead_air and is_music(content)
                 and not (rms_dbfs is not None and rms_dbfs < self.silence_dbfs))
        step = 0.0 if self._last_end is None else max(0.0, end_s - self._last_end)
        self._last_end = end_s
        if self._new_track:  # the last track's genres name it, not this one
            self._new_track = False
            self._genres_since, self._genre_start, self._genre_avg = None, None, None
            self.genres_shown, self._genre_pending = (), None
        if not music:
            # What the music was is forgotten: the next music starts afresh.
            self._point, self._slow, self._music_since, self._settled = None, None, None, False
            self._genre_avg, self._genres_since, self._genre_start = None, None, None
            self.genres_shown, self._genre_pending = (), None
            self._after_gap = True
            self._decide((), end_s)
            return self._result()
        target = self.plan.point(smoothed, energy)
        if self._music_since is None:
            self._music_since = end_s
        self._point = _average(self._point, target, step, self.time_constant_s)
        self._slow = _average(self._slow, target, step,
                              max(BORDER_TIME_CONSTANT_S, self.time_constant_s))
        if not self._settled:
            if self._after_gap and end_s - self._music_since < SETTLE_S:
                # Windows that straddle the gap: measured, not shown.
                self._point = self._slow = target
                return self._result()
            # The music's first words: from this window alone, shown at once.
            self._point = self._slow = target
            self._settled, self._after_gap = True, False
            self.shown = None
        candidate = self.plan.words(*self._point, shown=self.shown or ())
        self._decide(candidate, end_s)
        self._hold_genres(smoothed, step, end_s)
        return self._result()

    def _result(self) -> dict[str, Any]:
        v, a = self._point if self._point is not None else (0.0, 0.0)
        return {"words": list(self.shown or ()), "valence": round(v, 3),
                "arousal": round(a, 3), "since_s": round(self.since_s, 3),
                "genres": list(self.genres_shown)}

    def _decide(self, candidate: tuple[str, ...], end_s: float) -> None:
        if self.shown is None or (not self.shown and candidate):
            self._show(candidate, end_s)
            return
        if candidate[:1] == self.shown[:1] and candidate:
            # The main word fits: where it fits follows the music's slow average.
            self._anchor = self._slow
        if candidate == self.shown:
            self._pending, self._left_since = None, None
            return
        if not candidate:  # the music is gone: "no music" after its own dwell
            key, dwell = (), self.silence_dwell_s
        elif candidate[0] != self.shown[0] and self._clearly_moved():
            # The music changed: the words that fit now are shown once the point has stayed
            # far from where the shown words were chosen for the short dwell, whichever words
            # it passes on the way.
            if self._left_since is None:
                self._left_since = end_s
            if end_s - self._left_since >= self.dwell_s:
                self._slow = self._point  # the music before the change counts no more
                self._show(candidate, self._left_since)
            return
        else:
            # A point that wavers at a border, or a second word alone: judged on the slow
            # average, which must have moved BORDER_MOVE from where the shown words were chosen
            # and have the same other words nearest for the long dwell.
            candidate = self.plan.words(*self._slow, shown=self.shown)
            if candidate == self.shown or math.dist(self._slow, self._slow_anchor) < BORDER_MOVE:
                self._pending, self._left_since = None, None
                return
            # (while the main word differs, the second may come and go meanwhile)
            key = candidate[:1] if candidate[0] != self.shown[0] else candidate
            dwell = self.border_dwell_s
        self._left_since = None
        if self._pending != key:
            self._pending, self._pending_since = key, end_s
        if end_s - self._pending_since >= dwell:
            self._show(candidate, self._pending_since)

    def _show(self, words: tuple[str, ...], since_s: float) -> None:
        self.shown, self.since_s = words, since_s
        self._pending, self._left_since = None, None
        self._anchor = self._slow_anchor = self._slow if words else None

    def _clearly_moved(self) -> bool:
        """The point lies CLEAR_MOVE or more from where the shown words last fitted: the music
        changed, not the noise of one piece (docs/venue.md)."""
        if self._anchor is None or self._point is None:
            return True
        return math.dist(self._point, self._anchor) >= CLEAR_MOVE

    def _hold_genres(self, smoothed: np.ndarray, step: float, end_s: float) -> None:
        """The genre line: the genres of the scores averaged over GENRE_TIME_CONSTANT_S of the
        track; the first shown after GENRE_DWELL_S of it, then a change at most every
        GENRE_HOLD_S, to genres that held GENRE_DWELL_S."""
        ratio = self.plan.genre_ratios(smoothed)
        if self._genre_avg is None:
            self._genre_avg = ratio
        else:
            k = 1.0 - math.exp(-step / GENRE_TIME_CONSTANT_S)
            self._genre_avg = self._genre_avg + k * (ratio - self._genre_avg)
        candidate = self.plan.genres_of(self._genre_avg, keep=self.genres_shown)
        if self._genres_since is None:
            # A new track's genres, once heard long enough to average over.
            if self._genre_start is None:
                self._genre_start = end_s
            if end_s - self._genre_start >= GENRE_DWELL_S and candidate:
                self.genres_shown, self._genres_since = candidate, end_s
                self._genre_pending = None
            return
        if not candidate or candidate == self.genres_shown:
            # Within a track the line keeps its genres until others replace them.
            self._genre_pending = None
            return
        if self._genre_pending != candidate:
            self._genre_pending, self._genre_pending_since = candidate, end_s
        if (end_s - self._genre_pending_since >= GENRE_DWELL_S
                and end_s - self._genres_since >= GENRE_HOLD_S):
            self.genres_shown, self._genres_since, self._genre_pending = candidate, end_s, None
