"""One stream's windows after the forward pass: levels, loudness, silence, content, smoothing
and mood, into the ``WindowResult`` its sink receives.

The engine (streamtag.engine.batching) batches the windows of every stream into forward passes
and hands each window's probabilities, in order, to its stream's ``WindowScorer``; everything
that follows from one window of one stream happens here, with no threads and no model run.

Audio health: the scorer's ``SilenceDetector`` (``[health]``, streamtag.engine.health) reads
every window's level; silence that begins or ends comes with the window's result
(``WindowResult.silence``), and while a stream is silent its smoother turns no tag on.

Content (``[content]``, streamtag.engine.content): the stream's content tracker says what each
window is (``WindowResult.content``: music, speech, silence, tone or noise). No tag turns on in a
window that is not music, and a run of speech, noise or tone that lasts ``min_s`` turns every
tag off where the run began, as confirmed dead air does.

Mood (``[mood]``, streamtag.engine.mood): the stream's mood tracker reads each window's scores,
level and content; silence or a steady tone in the window's newest audio (its last hop) counts
as the window's content there, so that a screen clears within seconds of dead air.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

import numpy as np

from streamtag.engine.config import ContentConfig, HealthConfig, MoodConfig, SmoothingConfig
from streamtag.engine.content import MUSIC, SILENCE, TONE, window_kind
from streamtag.engine.health import (
    SQUARE_CREST_DB,
    SilenceDetector,
    SilenceEvent,
    finite_levels,
    level_of_samples,
)
from streamtag.engine.loudness import LoudnessTrail
from streamtag.engine.mood import MoodPlan, MoodTracker, energy_of
from streamtag.engine.smoothing import Smoother, TagEvent
from streamtag.frontend import WindowLevel
from streamtag.model.inference import InferenceModel

__all__ = ["ScoredWindow", "WindowResult", "WindowScorer"]


@dataclasses.dataclass
class WindowResult:
    """One scored window of one stream, as the sink receives it."""

    stream_id: str
    index: int  # the window's number in its stream, from 0
    start_sample: int  # first sample the window covers (stream samples at the model's rate)
    end_sample: int  # one past the last sample it covers
    sample_rate: float
    tags: tuple[str, ...]
    raw: np.ndarray  # the model's probabilities
    smoothed: np.ndarray
    active: tuple[str, ...]
    events: list[TagEvent]
    latency_ms: float  # from the arrival of the window's last sample to the sink call
    model_name: str
    model_hash: str
    # The level of the window's audio (the protocol's scores ``audio``: RMS and peak dBFS,
    # clipped samples, onsets per second, energy), None for a model that reads samples
    audio: dict | None = None
    mood: dict | None = None  # the stream's mood after this window (``mood``), or None
    # silence that began or ended with this window (streamtag.engine.health), and whether the
    # stream is silent after it
    silence: list[SilenceEvent] = dataclasses.field(default_factory=list)
    silent: bool = False
    # no tag could turn on in it: its audio quiet, inside dead air ([health]; False without),
    # or not music ([content])
    quiet: bool = False
    # what its audio is (streamtag.engine.content): music, speech, silence, tone or noise;
    # None where [content] is off or the window is too short to tell
    content: str | None = None

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate


class ScoredWindow(Protocol):
    """What the scorer reads of a window the engine cut and scored."""

    data: np.ndarray  # (n_mels, W) for log-mel models, (W,) for waveform models
    start_sample: int
    end_sample: int
    arrival: float  # time.monotonic() when its last sample arrived
    level: WindowLevel | None  # the frontend's, of its frames, for log-mel models
    newest: WindowLevel | None  # ... of its last hop's frames: the audio since the window before
    tail: bool  # cut at the end of the input
    content: str | None  # the content classifier's class, None where none ran


class WindowScorer:
    """One stream's post-processing of its scored windows, in order (``score``), and its end
    (``close``)."""

    def __init__(self, stream_id: str, model: InferenceModel, mood: MoodPlan | None,
                 smoothing: SmoothingConfig, health: HealthConfig, moods: MoodConfig,
                 content: ContentConfig) -> None:
        self.stream_id = stream_id
        self._smoothing = smoothing
        self._health_config = health
        self._moods = moods
        self._content_on = content.enabled
        self._content_min_s = content.min_s
        self.smoother = Smoother(model.tags, model.thresholds, smoothing)
        self.mood = self._mood_tracker(mood)
        self.health = SilenceDetector(health, model.sample_rate) if health.enabled else None
        self.loudness = LoudnessTrail(model.sample_rate) if health.loudness else None
        # the run of windows that are not music: where it began (stream sample), whether it
        # has turned the tags off, and whether anything but silence is in it
        self.content_run_start: int | None = None
        self.content_muted = False
        self.content_sound = False
        self.next_index = 0
        self.end_s = 0.0
        self.end_sample: int | None = None  # the last window's end

    def _mood_tracker(self, plan: MoodPlan | None) -> MoodTracker | None:
        m = self._moods
        return None if plan is None else MoodTracker(plan, m.dwell_s, m.silence_dwell_s,
                                                     m.time_constant_s,
                                                     self._health_config.silence_dbfs)

    def serve(self, model: InferenceModel, mood: MoodPlan | None, same_input: bool) -> None:
        """The next windows come from ``model``: a fresh smoother where its input or its tags
        differ, and a fresh mood line."""
        if not same_input or tuple(self.smoother.tags) != model.tags or not np.array_equal(
                self.smoother.on_threshold, model.thresholds):
            self.smoother = Smoother(model.tags, model.thresholds, self._smoothing)
        self.mood = self._mood_tracker(mood)

    def score(self, w: ScoredWindow, probs: np.ndarray, model: InferenceModel) -> WindowResult:
        """The result of the stream's next window, ``probs`` its finite probabilities."""
        end_s = w.end_sample / model.sample_rate
        audio = mood = None
        rms_dbfs: float | None
        peak_dbfs: float | None
        level = w.level
        if level is not None:
            rms_dbfs, peak_dbfs = finite_levels(level.rms_dbfs, level.peak_dbfs)
            audio = {"rms_dbfs": round(rms_dbfs, 2), "peak_dbfs": round(peak_dbfs, 2),
                     "clipped": level.clipped, "onset_rate_hz": round(level.onset_rate_hz, 3),
                     "energy": energy_of(rms_dbfs, level.onset_rate_hz)}
            if self.loudness is not None:
                momentary, short_term = self.loudness.reading(w.end_sample)
                if momentary is not None:
                    audio["momentary_lufs"] = round(momentary, 2)
                if short_term is not None:
                    audio["short_term_lufs"] = round(short_term, 2)
        silence: list[SilenceEvent] = []
        health = self.health
        if health is not None:
            onsets = None  # counted by the frontend only
            if level is not None:
                clipped, onsets = level.clipped, level.onsets  # the levels: as published, above
            elif w.data.ndim == 1:  # a model that reads samples: its window is the samples
                rms_dbfs, peak_dbfs, clipped = level_of_samples(w.data)
            else:
                rms_dbfs, peak_dbfs, clipped = None, None, 0
            silence = health.update(w.start_sample, w.end_sample, rms_dbfs, clipped, peak_dbfs,
                                    onsets, tail=w.tail)
        content = self._content_of(w, level, audio)
        quiet = (health is not None and health.dead) or content not in (None, MUSIC)
        smoothed, events = self.smoother.update(probs, end_s, quiet)
        for change in silence:
            if change.state == "on":  # no tag stays on in dead air
                events = [*events, *self.smoother.silence(change.start_s)]
        muted_at = self._content_run(w, content, model.sample_rate,
                                     None if health is None else health.quiet_since)
        if muted_at is not None:  # speech or noise: no music tag stays on
            events = [*events, *self.smoother.silence(muted_at)]
        if self.mood is not None:
            # The newest audio's silence or tone counts at once: a screen clears as dead air
            # begins, not once it fills a window.
            mood = self.mood.update(end_s, smoothed, None if audio is None else audio["rms_dbfs"],
                                    None if audio is None else audio["energy"],
                                    dead_air=health is not None and health.silent,
                                    content=self._newest_kind(w) or content)
        result = WindowResult(
            stream_id=self.stream_id, index=self.next_index, start_sample=w.start_sample,
            end_sample=w.end_sample, sample_rate=model.sample_rate, tags=model.tags,
            raw=probs, smoothed=smoothed, active=self.smoother.active_tags(), events=events,
            latency_ms=(time.monotonic() - w.arrival) * 1000.0, model_name=model.name,
            model_hash=model.hash, audio=audio, mood=mood, silence=silence,
            silent=health is not None and health.silent, quiet=quiet, content=content)
        self.next_index += 1
        self.end_s = max(self.end_s, end_s)
        self.end_sample = w.end_sample
        return result

    def close(self, end_s: float) -> tuple[list[TagEvent], list[SilenceEvent]]:
        """The stream ended at ``end_s``: its active tags turn off, and the silence under way,
        if any, ends."""
        events = self.smoother.close(end_s)
        return events, [] if self.health is None else self.health.close()

    def _content_of(self, w: ScoredWindow, level: WindowLevel | None,
                    audio: dict | None) -> str | None:
        """The window's content: silence or a steady tone by its level, as the silence
        detector reads it, else the classifier's class (None: [content] is off)."""
        if not self._content_on:
            return None
        if audio is not None and level is not None:  # audio: the level's, as published
            by_level = self._kind(audio["rms_dbfs"], audio["peak_dbfs"], level.onsets)
        elif w.data.ndim == 1:  # a model that reads samples: no onsets, silence only
            by_level = self._kind(level_of_samples(w.data)[0], None, None)
        else:
            by_level = None
        return by_level or w.content

    def _newest_kind(self, w: ScoredWindow) -> str | None:
        """Silence or a steady tone in the audio since the window before (the window's last
        hop) by its level alone, as ``_content_of`` reads a window's; None where the level
        does not tell."""
        if w.newest is not None:
            rms_dbfs, peak_dbfs = finite_levels(w.newest.rms_dbfs, w.newest.peak_dbfs)
            return self._kind(rms_dbfs, peak_dbfs, w.newest.onsets)
        if w.data.ndim == 1:  # a model that reads samples: silence only
            newest = len(w.data) if self.end_sample is None else w.end_sample - self.end_sample
            samples = w.data[-max(1, min(newest, len(w.data))):]
            return self._kind(level_of_samples(samples)[0], None, None)
        return None

    def _kind(self, rms_dbfs: float | None, peak_dbfs: float | None,
              onsets: int | None) -> str | None:
        """Silence or a steady tone by a level, under the stream's [health] rules."""
        cfg = self._health_config
        return window_kind(rms_dbfs, peak_dbfs, onsets, cfg.silence_dbfs, cfg.tone_crest_db,
                           SQUARE_CREST_DB)

    def _content_run(self, w: ScoredWindow, content: str | None, sample_rate: float,
                     quiet_since: int | None) -> float | None:
        """Follows the stream's run of windows that are not music; returns the audio time
        where the run began once it holds speech, noise or a tone and has lasted ``min_s``
        (every tag then turns off there, once per run), else None. A run of speech or noise
        begins half way into its first window (a window is speech when most of it is), one
        of silence or a tone at its start (the whole window is). The tags end no later than
        ``quiet_since``, the first sample of the quiet under way (a run begun by a window of
        sound fading into dead air ends them where the quiet began, as dead air would)."""
        if content in (None, MUSIC):
            self.content_run_start, self.content_muted = None, False
            self.content_sound = False
            return None
        if self.content_run_start is None:  # a quiet or steady window is so all through
            self.content_run_start = (w.start_sample if content in (SILENCE, TONE)
                                      else (w.start_sample + w.end_sample) // 2)
        self.content_sound |= content != SILENCE
        lasted = (w.end_sample - self.content_run_start) / sample_rate
        if self.content_muted or not self.content_sound or lasted < self._content_min_s:
            return None
        self.content_muted = True
        start = self.content_run_start
        return (start if quiet_since is None else min(start, quiet_since)) / sample_rate
