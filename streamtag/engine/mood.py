"""The mood of the music: a model's smoothed scores and the audio's energy, turned into one or
two words a screen can show, by a table in the package (``moods.toml``, docs/venue.md).

Each tag that describes how music feels (the table's ``[tags]``) stands for a rated English word
whose valence and arousal are published norms (Warriner, Kuperman & Brysbaert 2013). A window's
point on the valence/arousal plane is the mean of those words' points, each weighted by how far
its tag's score stands above half its threshold, pulled towards the display words' centre while
the evidence is weak; arousal is shared with the audio's energy (level and onset rate), which a
model without mood tags then decides alone. The words shown are the display words nearest the
point. The point moves smoothly (an exponential average over audio time) and new words are shown
only once they have held for a dwell time, so a screen changes with the music, not with each
window.

Nothing here knows sockets or pages: the daemon puts the result in its scores messages.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamtag import values
from streamtag.errors import ConfigError

TABLE_FILE = "moods.toml"

# Energy from the audio (0 to 1): level between these two RMS levels, onset rate up to this.
# Mastered music sits at -20 to -8 dBFS RMS and a quiet room far below it; the level spread
# between pieces is small, so the onset rate (0.5 to 5 per second on real music) carries more.
ENERGY_QUIET_DBFS = -35.0
ENERGY_LOUD_DBFS = -10.0
ENERGY_BUSY_ONSETS_HZ = 5.0
ENERGY_LEVEL_SHARE = 0.4

SILENCE_DBFS = -50.0  # a window quieter than this has no music to judge (broadcast practice)
DWELL_S = 20.0  # new words are shown once they have held for this much audio
SILENCE_DWELL_S = 6.0  # ... and "no music" once it has lasted this long
POINT_TIME_CONSTANT_S = 8.0  # the valence/arousal point's exponential average
PRIOR_WEIGHT = 1.0  # the evidence (summed tag weights) at which tags are trusted by half
MAX_TAG_WEIGHT = 2.5  # one tag far above its threshold counts this much at most
TAG_SHARE_OF_AROUSAL = 0.5  # with full tag evidence; the audio's energy gives the rest
SECOND_WORD_RATIO = 1.3  # a second word is shown when it is this close, relative to the first
KEEP_WORD_RATIO = 1.15  # the shown first word stays while within this of the nearest
MAX_GENRES = 2


@dataclasses.dataclass(frozen=True)
class MoodConfig:
    """The ``[mood]`` section of the daemon's config."""

    enabled: bool = True  # false: scores carry no mood
    # audio seconds new words must hold before they are shown
    dwell_s: float = values.field(DWELL_S, minimum=0, maximum=3600)
    # ... and silence before "no music" is shown
    silence_dwell_s: float = values.field(SILENCE_DWELL_S, minimum=0, maximum=3600)
    # the valence/arousal point's exponential average
    time_constant_s: float = values.field(POINT_TIME_CONSTANT_S, minimum=0, maximum=3600)

    def __post_init__(self) -> None:
        values.check_fields(self, "mood", ConfigError)


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

    def plan(self, tags: Sequence[str], thresholds: Sequence[float] | None) -> MoodPlan:
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

    @property
    def genre_tags(self) -> tuple[str, ...]:
        return tuple(self.tags[i] for i in self.genre_index)

    def point(self, smoothed: np.ndarray, energy: float | None) -> tuple[float, float]:
        """The valence/arousal point of one window's smoothed scores and energy.

        Without evidence the point is the display words' centre (the prior: music of no
        particular mood), and the energy alone places arousal within the display words' span
        (0 at the calmest word, 1 at the most aroused); mood tags pull the point towards their
        words as their scores rise above half their thresholds."""
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
        a_audio = low + (high - low) * min(1.0, max(0.0, energy))
        share = TAG_SHARE_OF_AROUSAL * evidence
        return _clip(v), _clip(share * a_tags + (1.0 - share) * a_audio)

    @property
    def centre(self) -> tuple[float, float]:
        return (float(np.mean([p[0] for _, p in self.display])),
                float(np.mean([p[1] for _, p in self.display])))

    @property
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

    def genres(self, smoothed: np.ndarray) -> tuple[str, ...]:
        """The genre tags at or above their thresholds, strongest (score / threshold) first."""
        if not len(self.genre_index):
            return ()
        ratio = np.asarray(smoothed, dtype=np.float64)[self.genre_index] / self.genre_thresholds
        order = np.argsort(-ratio, kind="stable")
        return tuple(self.tags[self.genre_index[i]] for i in order[:MAX_GENRES]
                     if ratio[i] >= 1.0)


def _clip(x: float) -> float:
    return min(1.0, max(-1.0, float(x)))


class MoodTracker:
    """One stream's mood, window after window: the point's average and the words' dwell."""

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
        self.silence_dwell_s = silence_dwell_s
        self.time_constant_s = time_constant_s
        self.reset()

    def reset(self) -> None:
        self._point: tuple[float, float] | None = None
        self._last_end: float | None = None
        self.shown: tuple[str, ...] | None = None  # None: nothing shown yet
        self.since_s = 0.0
        self._pending: tuple[str, ...] | None = None
        self._pending_since = 0.0

    def update(self, end_s: float, smoothed: np.ndarray, rms_dbfs: float | None = None,
               energy: float | None = None, dead_air: bool = False) -> dict[str, Any]:
        """The mood after the window ending at ``end_s`` (audio seconds): the fields of the
        protocol's scores ``mood`` object. ``dead_air``: the stream's health found dead air
        that is not quiet (a stuck tone), which has no mood either."""
        silent = dead_air or (rms_dbfs is not None and rms_dbfs < self.silence_dbfs)
        if silent:
            target: tuple[float, float] | None = None
        else:
            target = self.plan.point(smoothed, energy)
        if target is not None:
            if self._point is None or self._last_end is None or self.time_constant_s == 0:
                self._point = target
            else:
                step = max(0.0, end_s - self._last_end)
                k = 1.0 - math.exp(-step / self.time_constant_s)
                self._point = (self._point[0] + k * (target[0] - self._point[0]),
                               self._point[1] + k * (target[1] - self._point[1]))
        self._last_end = end_s
        if silent:
            candidate: tuple[str, ...] = ()
        else:
            candidate = self.plan.words(*self._point, shown=self.shown or ())
        self._decide(candidate, end_s)
        v, a = self._point if self._point is not None else (0.0, 0.0)
        return {"words": list(self.shown or ()), "valence": round(v, 3),
                "arousal": round(a, 3), "since_s": round(self.since_s, 3),
                "genres": [] if silent else list(self.plan.genres(smoothed))}

    def _decide(self, candidate: tuple[str, ...], end_s: float) -> None:
        if self.shown is None or (not self.shown and candidate):
            # The first words, and music after silence, are shown at once.
            self.shown, self.since_s, self._pending = candidate, end_s, None
            return
        if candidate == self.shown:
            self._pending = None
            return
        # The dwell runs while the main word of what would be shown stays the same, so a
        # second word that wanders during a change does not hold the change back.
        key = candidate[:1]
        if self._pending != key:
            self._pending, self._pending_since = key, end_s
        dwell = self.silence_dwell_s if not candidate else self.dwell_s
        if end_s - self._pending_since >= dwell:
            self.shown, self.since_s, self._pending = candidate, self._pending_since, None

