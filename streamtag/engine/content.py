"""What a window's audio is, whatever the model: music, speech, silence, tone or noise.

A tagging model answers "which of my tags fit", never "is this music at all": fed a news
bulletin, a music tagger finds its nearest genre (Hip-Hop, say) with confidence. So every
stream also gets a ``ContentTracker`` that reads the same samples through a small log-mel
frontend of its own (``content_options``: 64 mel bands to 8 kHz, 32-ms hops, whatever the
model's frontend is) and decides each scored window's content:

- **silence**: the window's RMS level is below ``[health] silence_dbfs`` (as the silence
  detector's quiet windows; the level is the one the engine already measured);
- **tone**: a steady tone by the silence detector's rule (no onset, crest factor at most
  ``[health] tone_crest_db``) where onsets are measured, else by the classifier below;
- **music**, **speech**, **noise** (or **tone**): a multinomial logistic regression on ten
  features of the window's frames (``window_features``) after Scheirer and Slaney (1997) and
  the broadcast speech/music segmenters: speech is syllables at about 4 Hz with pauses
  between words (modulation energy at 2.5-7 Hz, the share of low-energy frames), its formants
  glide (spectral peaks that do not persist); music holds pitches (peaks that persist) and
  keeps its level; noise is flat and stable in spectrum. The weights
  (``content_weights.json`` beside this file) are fitted by ``benchmarks/content_fit.py`` on
  audio from Debian packages; docs/models.md ("Content") has the material and the confusion.

Speech over a music bed counts as whichever dominates; sung vocals were not in the material
the weights were judged on. Content is decided per window at the model's hop; a run of
non-music windows that lasts ``min_s`` turns every tag off where the run began (as confirmed
dead air does), and no tag turns on in a non-music window (streamtag.engine.batching).
"""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources

import numpy as np

from streamtag import values
from streamtag.errors import ConfigError
from streamtag.frontend import FrameRing, LogMelOptions, OnlineLogMel

MUSIC, SPEECH, SILENCE, TONE, NOISE = "music", "speech", "silence", "tone", "noise"
CONTENT_KINDS = (MUSIC, SPEECH, SILENCE, TONE, NOISE)
# The classes the classifier tells apart (silence comes from the level alone).
CLASSES = (MUSIC, SPEECH, NOISE, TONE)
WEIGHTS_FILE = "content_weights.json"
# The frontend's frames per second at any rate (hop 512 at 16 kHz): 4-Hz syllables need 8.
FRAME_S = 0.032
# Features are taken over at most this much of a window's end: the modulation spectrum's
# resolution needs a few syllables, and longer windows would only cost more.
MAX_SPAN_S = 4.0
MIN_FRAMES = 16  # fewer frames than this (a window under half a second): no decision
FEATURES = ("mod4_share", "low_energy_share", "flux_mean", "flux_cv", "flatness_mean",
            "flatness_std", "peak_persistence", "level_std_db", "centroid_std", "pause_share")


@dataclasses.dataclass(frozen=True)
class ContentConfig:
    """The ``[content]`` section of the daemon's config: what each window's audio is."""

    # false: no content decision (tags then follow the model over speech too)
    enabled: bool = True
    # speech or noise this long turns every tag off where it began
    min_s: float = values.field(2.0, minimum=0, maximum=3600)

    def __post_init__(self) -> None:
        values.check_fields(self, "content", ConfigError)


def content_options(sample_rate: float) -> LogMelOptions:
    """The content frontend at ``sample_rate``: about 64-ms frames every 32 ms, 64 mel bands
    from 60 Hz to 8 kHz (or the Nyquist rate), power in dB."""
    hop = max(64, 2 ** round(math.log2(FRAME_S * sample_rate)))
    return LogMelOptions(sample_rate=float(sample_rate), n_fft=2 * hop, hop_length=hop,
                         n_mels=64, fmin=60.0, fmax=min(8000.0, sample_rate / 2), log="db",
                         db_multiplier=10.0, amin=1e-10)


def _smooth_bands(x: np.ndarray, width: int = 5) -> np.ndarray:
    """Each frame's spectrum smoothed across bands (a moving mean of ``width`` bands)."""
    pad = width // 2
    padded = np.pad(x, ((0, 0), (pad, pad)), mode="edge")
    c = np.cumsum(padded, axis=1, dtype=np.float64)
    c = np.concatenate([np.zeros((x.shape[0], 1)), c], axis=1)
    return (c[:, width:] - c[:, :-width]) / width


def window_features(frames_db: np.ndarray, frame_rate: float) -> np.ndarray:
    """The ``FEATURES`` of one window's content frames ``(T, 64)`` (dB power per mel band)."""
    x = np.asarray(frames_db, dtype=np.float64)
    power = np.power(10.0, x / 10.0)
    total = power.sum(axis=1) + 1e-12
    level = 10.0 * np.log10(total)  # frame energy, dB
    # Frames within 40 dB of the window's loudest decide the shape features: the rest is the
    # floor between words, where the spectrum is whatever the noise is.
    loud = level > level.max() - 40.0
    # 4-Hz modulation: the share of the level contour's variation at syllable rates
    contour = level - level.mean()
    spectrum = np.abs(np.fft.rfft(contour * np.hanning(len(contour)))) ** 2
    freqs = np.fft.rfftfreq(len(contour), 1.0 / frame_rate)
    band = (freqs >= 2.5) & (freqs <= 7.0)
    whole = (freqs >= 0.5) & (freqs <= 15.0)
    mod4 = spectrum[band].sum() / (spectrum[whole].sum() + 1e-12)
    # Scheirer-Slaney: frames below half the window's mean power (pauses between words)
    low_energy = float(np.mean(total < 0.5 * total.mean()))
    pause = float(np.mean(level < np.median(level) - 15.0))
    # spectral flux: the mean change of the bands from frame to frame, and how it varies
    flux = np.abs(np.diff(x, axis=0)).mean(axis=1)
    flux_mean = float(flux.mean())
    flux_cv = float(flux.std() / (flux_mean + 1e-6))
    # flatness in power: 1 for white noise, near 0 for a few strong partials
    flat = np.exp(np.log(power + 1e-20).mean(axis=1)) / (power.mean(axis=1) + 1e-20)
    flat = flat[loud] if loud.any() else flat
    # spectral peaks (3 dB above the bands around them) that are still there 8 frames on:
    # held notes keep theirs, gliding formants and noise do not
    peaks = (x - _smooth_bands(x)) > 3.0
    lag = 8
    held = peaks[:-lag] & peaks[lag:]
    both = loud[:-lag] & loud[lag:]
    counts = peaks[:-lag][both].sum()
    persistence = float(held[both].sum() / counts) if counts else 0.0
    bands = np.arange(x.shape[1], dtype=np.float64)
    centroid = (power * bands).sum(axis=1) / total
    centroid = centroid[loud] if loud.any() else centroid
    return np.array([mod4, low_energy, flux_mean, flux_cv, float(flat.mean()),
                     float(flat.std()), persistence, float(level[loud].std()),
                     float(centroid.std()), pause])


@dataclasses.dataclass(frozen=True)
class ContentModel:
    """The classifier: standardized features, one linear score per class, softmax."""

    classes: tuple[str, ...]
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (classes, features)
    bias: np.ndarray  # (classes,)

    @classmethod
    def load(cls, text: str | None = None) -> ContentModel:
        """The shipped weights (``content_weights.json``), or those in ``text``."""
        if text is None:
            text = resources.files("streamtag.engine").joinpath(WEIGHTS_FILE).read_text()
        data = json.loads(text)
        model = cls(tuple(data["classes"]), tuple(data["features"]),
                    np.asarray(data["mean"], np.float64), np.asarray(data["scale"], np.float64),
                    np.asarray(data["weights"], np.float64), np.asarray(data["bias"], np.float64))
        if model.features != FEATURES or set(model.classes) != set(CLASSES):
            raise ConfigError(f"{WEIGHTS_FILE} was fitted for features {model.features} and "
                              f"classes {model.classes}, not {FEATURES} and {CLASSES}: "
                              f"refit it with benchmarks/content_fit.py")
        return model

    def to_json(self) -> str:
        def rounded(a: np.ndarray) -> list:
            return np.round(a, 6).tolist()
        return json.dumps({"classes": list(self.classes), "features": list(self.features),
                           "mean": rounded(self.mean), "scale": rounded(self.scale),
                           "weights": rounded(self.weights), "bias": rounded(self.bias)},
                          indent=1) + "\n"

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (in ``classes`` order) of feature rows ``(n, F)`` or one row."""
        z = (np.asarray(features, np.float64) - self.mean) / self.scale
        logits = z @ self.weights.T + self.bias
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    def classify(self, features: np.ndarray) -> str:
        return self.classes[int(np.argmax(self.probabilities(features)))]


def window_kind(rms_dbfs: float | None, peak_dbfs: float | None, onsets: int | None,
                silence_dbfs: float, tone_crest_db: float, square_crest_db: float) -> str | None:
    """Silence or a steady tone from a window's level alone (the silence detector's rule,
    streamtag.engine.health), or None where the level does not tell."""
    if rms_dbfs is None:
        return None
    if rms_dbfs < silence_dbfs:
        return SILENCE
    if tone_crest_db == 0 or peak_dbfs is None or onsets is None:
        return None
    crest = peak_dbfs - rms_dbfs
    if crest <= tone_crest_db and (onsets == 0 or crest <= square_crest_db):
        return TONE
    return None


class ContentTracker:
    """One stream's content frontend: ``accept`` the samples the engine's framer takes,
    then ``classify`` each window the framer cut from them."""

    def __init__(self, model: ContentModel, sample_rate: float, sample_offset: int = 0) -> None:
        self.model = model
        self.options = content_options(sample_rate)
        self.frontend = OnlineLogMel(self.options)
        self.frame_rate = sample_rate / self.options.hop_length
        self.span = max(MIN_FRAMES, round(MAX_SPAN_S * self.frame_rate))
        # room for the longest span and the frames that arrive with one chunk of audio
        self.ring = FrameRing(4 * self.span, self.options.n_mels)
        self.sample_offset = sample_offset  # stream sample of this frontend's sample 0

    def accept(self, samples: np.ndarray) -> None:
        self.frontend.accept_waveform(samples)
        self._push(self.frontend.pop())

    def finish(self) -> None:
        self.frontend.input_finished()
        self._push(self.frontend.pop())

    def _push(self, frames: np.ndarray) -> None:
        room = self.ring.capacity - self.span
        for i in range(0, len(frames), room):
            self.ring.push(frames[i: i + room])

    def classify(self, start_sample: int, end_sample: int) -> str | None:
        """The classifier's class for stream samples ``[start_sample, end_sample)`` from the
        frames centred in it (at most the last ``MAX_SPAN_S``), None when too few are here."""
        hop = self.options.hop_length
        # frame f is centred on sample f * hop (the frontend centres its frames)
        first = -(-(start_sample - self.sample_offset) // hop)
        end = min(self.ring.end_index, (end_sample - self.sample_offset - 1) // hop + 1)
        first = max(first, end - self.span, self.ring.end_index - self.ring.capacity, 0)
        if end - first < MIN_FRAMES:
            return None
        frames = self.ring.window(end, end - first)
        return self.model.classify(window_features(frames, self.frame_rate))
