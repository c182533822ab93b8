"""Audio health per stream: dead air (silence or a stuck tone) and clipping, from each window's
level.

The frontend measures every window's RMS and peak level and its samples at full scale
(``csrc/window_level``); a model that reads samples rather than log-mel frames has no frontend,
and ``level_of_samples`` measures its windows the same way (without onsets). A
``SilenceDetector`` per stream reads one level per scored window, in order:

- A window is **quiet** when its RMS level is below ``silence_dbfs``. Consecutive quiet windows
  make a quiet run, the audio from the first one's start to the last one's end.
- A quiet run that has lasted ``silence_s`` is **silence** (dead air): a ``SilenceEvent`` "on"
  whose start is the run's start, sent with the window that confirmed it (``silence_s`` after
  the start, give or take a hop).
- The first window that is not quiet ends it: an "off" event at the end of the run's last
  quiet window. A stream that ends while silent ends its silence at the last quiet window too.

Windows overlap, so a window is quiet only when all of its audio is (music at -20 dBFS in a
third of a window keeps the window's RMS near -25 dBFS): the run starts within one hop after
the real silence starts and ends within one hop before it ends.

A window is a **tone** when it is not quiet, has no onset, and its crest factor (peak level
minus RMS level) is at most ``tone_crest_db``: a steady sine is 3.01 dB, a square wave 0 dB, a
sawtooth or triangle 4.77 dB, while music over a window of seconds has 8-20 dB and onsets (over
16 real tracks, 4,700 windows: one window at 2.0 dB with no onset, the rest 5.7 dB and up, the
loudest track, at -5.9 dBFS RMS, at 5.7-6.0 dB with 3.8 onsets a second). A window at most
``SQUARE_CREST_DB`` is a tone whatever its onsets (a square wave's). A run of tone windows
that lasts ``silence_s`` is dead air as silence is, with ``cause`` "tone": a test tone left on,
a stuck oscillator, a generator that replaced the programme. A run changes cause only by ending:
a tone that stops into silence ends the tone's dead air and starts a quiet run. Only log-mel
models' windows have onsets (the frontend counts them); a model that reads samples gets
silence only.

A window is **clipping** when at least ``clip_samples`` of its samples sit at full scale
(``|x| >= 0.999``, the frontend's ``CLIP_LEVEL``); they are counted, not announced. What is not
detected: a loop (a repeated stretch of programme is music to every window), a tone of two or
more sines (a two-tone's crest is 6 dB: within music's range), noise above the threshold (hiss,
hum), one channel silent (sources hand the engine mono), and dead air shorter than
``silence_s``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from streamtag.engine.config import MIN_DBFS, HealthConfig

# A window whose every sample is about as loud as its peak is a square or pulse wave whatever
# the onset counter says: the harmonics of a square leave mel bands nearly empty between them,
# whose log values jump from frame to frame and read as onsets. Music never stays this flat.
SQUARE_CREST_DB = 1.0
CAUSES = ("silence", "tone")
CLIP_LEVEL = 0.999  # as csrc/window_level.h's kClipLevel


@dataclasses.dataclass(frozen=True)
class SilenceEvent:
    """Dead air began ("on") or ended ("off"). ``start_sample`` is where it began;
    ``end_sample`` where it ended ("off"), or for "on" the end of the window that confirmed it.
    ``cause``: "silence" (below ``threshold_dbfs``) or "tone" (a stuck tone). ``ended``: an
    "off" because the stream ended while silent, not because sound came back."""

    state: str
    start_sample: int
    end_sample: int
    sample_rate: float
    threshold_dbfs: float
    cause: str = "silence"
    ended: bool = False

    @property
    def sample(self) -> int:
        """Where the change happened: the silence's start ("on") or its end ("off")."""
        return self.start_sample if self.state == "on" else self.end_sample

    @property
    def time_s(self) -> float:
        return self.sample / self.sample_rate

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def duration_s(self) -> float:
        """How long the silence had lasted when confirmed ("on"), or in all ("off")."""
        return (self.end_sample - self.start_sample) / self.sample_rate


# The loudest level a float32 sample can have: 20·log10(FLT_MAX).
MAX_DBFS = 20.0 * math.log10(float(np.finfo(np.float32).max))


def finite_levels(rms_dbfs: float, peak_dbfs: float) -> tuple[float, float]:
    """A window's (RMS, peak) level made finite for the wire: audio far beyond full scale
    (a broken source's 1e30 samples) overflows the frontend's float sums to infinity, which
    stands for "at least the loudest a float holds"; its RMS is at most its peak."""
    if math.isfinite(rms_dbfs) and math.isfinite(peak_dbfs):
        return rms_dbfs, peak_dbfs
    peak = MAX_DBFS if math.isnan(peak_dbfs) else min(max(peak_dbfs, MIN_DBFS), MAX_DBFS)
    # only sums of overflowing samples give an infinite or NaN RMS
    rms = peak if not math.isfinite(rms_dbfs) else min(rms_dbfs, peak)
    return rms, peak


def level_of_samples(samples: np.ndarray) -> tuple[float, float, int]:
    """(RMS dBFS, peak dBFS, samples at full scale) of a window of samples, as the frontend
    measures its frames (floored at -120 dBFS): for models that read samples."""
    x = np.asarray(samples, dtype=np.float32).ravel()
    if x.size == 0:
        return MIN_DBFS, MIN_DBFS, 0
    mean_square = float(np.dot(x, x)) / x.size
    magnitude = np.abs(x)
    peak = float(magnitude.max())
    rms_dbfs = 10.0 * math.log10(mean_square) if mean_square > 0 else MIN_DBFS
    peak_dbfs = 20.0 * math.log10(peak) if peak > 0 else MIN_DBFS
    rail = np.float32(CLIP_LEVEL)
    clipped = int(np.count_nonzero(magnitude >= rail)) if peak >= rail else 0
    return max(MIN_DBFS, rms_dbfs), max(MIN_DBFS, peak_dbfs), clipped


class SilenceDetector:
    """One stream's silence state; ``update`` once per scored window, in order."""

    def __init__(self, config: HealthConfig, sample_rate: float) -> None:
        self.config = config
        self.sample_rate = float(sample_rate)
        self._min_samples = config.silence_s * self.sample_rate
        self._run_start: int | None = None  # first sample of the quiet run, if in one
        self._run_end = 0  # one past its last sample
        self.quiet = False  # the last window was quiet
        self.silent = False  # the run has lasted silence_s: dead air
        self.cause = "silence"  # what the run is made of
        self.silences = 0
        self.tones = 0  # of the silences, those that were stuck tones
        self.silent_samples = 0  # confirmed silence, from each silence's start
        self.clipping_windows = 0

    def current(self) -> dict[str, float | str] | None:
        """The silence under way, as a snapshot tells it: where it began and how long it has
        lasted (audio seconds) and the threshold; None while not silent."""
        if not self.silent or self._run_start is None:
            return None
        return {"start_s": self._run_start / self.sample_rate,
                "duration_s": round((self._run_end - self._run_start) / self.sample_rate, 6),
                "threshold_dbfs": self.config.silence_dbfs, "cause": self.cause}

    @property
    def quiet_since(self) -> int | None:
        """The first sample of the run of quiet windows under way, confirmed as dead air or
        not yet; None when the last window was not quiet."""
        return self._run_start if self.quiet else None

    @property
    def silent_s(self) -> float:
        return self.silent_samples / self.sample_rate

    def counters(self) -> dict[str, int | float]:
        """The stream's health counts, for its status and the metrics."""
        return {"silent": int(self.silent), "silent_s": round(self.silent_s, 3),
                "silences": self.silences, "tones": self.tones,
                "clipping_windows": self.clipping_windows}

    def _event(self, state: str, end_sample: int, ended: bool = False) -> SilenceEvent:
        return SilenceEvent(state, self._run_start or 0, end_sample, self.sample_rate,
                            self.config.silence_dbfs, self.cause, ended)

    def _kind(self, rms_dbfs: float | None, peak_dbfs: float | None,
              onsets: int | None) -> str | None:
        """What a window is: "silence" (quiet), "tone", or None (programme, or unmeasured)."""
        if rms_dbfs is None:
            return None
        if rms_dbfs < self.config.silence_dbfs:
            return "silence"
        limit = self.config.tone_crest_db
        if limit == 0 or peak_dbfs is None or onsets is None:
            return None
        crest = peak_dbfs - rms_dbfs
        if crest <= limit and (onsets == 0 or crest <= SQUARE_CREST_DB):
            return "tone"
        return None

    @property
    def dead(self) -> bool:
        """The last window leaves no tag on: quiet, or inside confirmed dead air."""
        return self.quiet or self.silent

    def update(self, start_sample: int, end_sample: int, rms_dbfs: float | None,
               clipped: int = 0, peak_dbfs: float | None = None,
               onsets: int | None = None, tail: bool = False) -> list[SilenceEvent]:
        """Folds in one window's level (None: not measured, never quiet; ``onsets`` None: not
        counted, never a tone); returns the dead air that began or ended with it. ``tail``: a
        window cut as the input ended, whose last frames are the frontend's end padding; a
        tone reflected there reads as an onset, so its onsets do not end a tone under way (a
        file of a steady tone stays dead air to its end)."""
        if clipped >= self.config.clip_samples:
            self.clipping_windows += 1
        if tail and onsets and self._run_start is not None and self.cause == "tone":
            onsets = 0
        kind = self._kind(rms_dbfs, peak_dbfs, onsets)
        self.quiet = kind == "silence"
        events: list[SilenceEvent] = []
        if self._run_start is not None and kind != self.cause:
            if self.silent:
                events.append(self._event("off", self._run_end))
            self._run_start, self.silent = None, False
        if kind is None:
            return events
        if self._run_start is None:
            self._run_start, self._run_end, self.cause = start_sample, start_sample, kind
        grown = max(0, end_sample - self._run_end)
        self._run_end += grown
        if self.silent:
            self.silent_samples += grown
            return events
        if self._run_end - self._run_start >= self._min_samples:
            self.silent = True
            self.silences += 1
            self.tones += self.cause == "tone"
            self.silent_samples += self._run_end - self._run_start
            events.append(self._event("on", self._run_end))
        return events

    def close(self) -> list[SilenceEvent]:
        """End of the stream: a silence under way ends with its last quiet window."""
        events = [self._event("off", self._run_end, ended=True)] if self.silent else []
        self._run_start, self.silent, self.quiet = None, False, False
        return events
