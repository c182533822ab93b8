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
- **speech**: silero-vad's detector, trained on real speech (streamtag.engine.speech), where
  it is installed: a window is speech when enough of its 32-ms chunks are, and music where the
  voice holds its notes as a singer does (streamtag.engine.singing); where it is not,
  the network below decides speech too (fitted on recorded telephone prompts and synthesised
  voices: less surely than the detector);
- **music**, **noise** (or **tone**, or **speech** without the detector): a small neural
  network (fourteen inputs, 24 tanh units, a softmax over the four classes) on features of
  the window's frames (``window_features``): ten after Scheirer and Slaney (1997) and the
  broadcast speech/music segmenters (speech is syllables at about 4 Hz with pauses between
  words: modulation energy at 2.5-7 Hz, the share of low-energy frames; its formants glide:
  spectral peaks that do not persist; music holds pitches and keeps its level; noise is
  flat and stable in spectrum), three of the spectral peaks at the FFT's resolution
  (``TONAL_FEATURES``: a crowd's, traffic's or an animal's come and go where a held note's
  stay) and the pulse of the last ``PULSE_S`` (a beat repeats, rain does not); the tracker
  keeps what they need. There are two sets of weights (``ContentNetworks``), both fitted by
  ``benchmarks/content_fit.py`` on audio from Debian packages with recorded ambience as
  noise: ``content_weights.json`` where the network decides speech too (fitted with recorded
  speech), ``DETECTOR_WEIGHTS_FILE`` beside the detector. docs/models.md ("Content") has the
  material and the confusion.

Speech over a music bed is speech to the detector where the voice is as loud as the music or
louder, and mostly music where it is 10 dB under; to the network whichever is louder (on equal
terms mostly speech). There is no class of its own for it. A voice singing alone is music
beside the detector where it holds its notes, speech to the network alone (docs/models.md,
"Content"). A decision is made
at most every ``DECISION_S`` of audio (every other window at a one-second hop), and the
windows between take it. A run of non-music windows that lasts ``min_s`` turns every tag off
where the run began (as confirmed dead air does), and no tag turns on in a non-music window
(streamtag.engine.batching).
"""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources

import numpy as np

from streamtag import _core
from streamtag.errors import ConfigError
from streamtag.frontend import FrameRing, LogMelOptions, OnlineLogMel

MUSIC, SPEECH, SILENCE, TONE, NOISE = "music", "speech", "silence", "tone", "noise"
CONTENT_KINDS = (MUSIC, SPEECH, SILENCE, TONE, NOISE)
# The classes the classifier tells apart (silence comes from the level alone).
CLASSES = (MUSIC, SPEECH, NOISE, TONE)
# The network's weights where it decides speech too (no speech detector installed), and
# beside the speech detector, where it tells music, noise and tones apart and reads more
WEIGHTS_FILE = "content_weights.json"
DETECTOR_WEIGHTS_FILE = "content_weights_detector.json"
# The frontend's frames per second at any rate (hop 512 at 16 kHz): 4-Hz syllables need 8.
FRAME_S = 0.032
# Features are taken over at most this much of a window's end: the modulation spectrum's
# resolution needs a few syllables, and longer windows would only cost more.
MAX_SPAN_S = 4.0
MIN_FRAMES = 16  # fewer frames than this (a window under half a second): no decision
# A decision at most this often (audio seconds between the ends of the windows classified);
# the windows between take the last one's. At the usual one-second hop every other window is
# classified, which halves the cost; windows of three seconds still leave no audio unheard.
DECISION_S = 1.5
# The mel frames' ten (csrc/content_features.h), then the FFT's tonal three (csrc/tonal_peaks.h)
# and the pulse of the last PULSE_S (content_features.h): FEATURES are all of them, and a
# weights file names the ten (WEIGHTS_FILE) or all (DETECTOR_WEIGHTS_FILE).
SPECTRAL_FEATURES = ("mod4_share", "low_energy_share", "flux_mean", "flux_cv", "flatness_mean",
                     "flatness_std", "peak_persistence", "level_std_db", "centroid_std",
                     "pause_share")
TONAL_FEATURES = ("stable_power_share", "stable_peaks", "stable_peak_share")
PULSE_FEATURES = ("pulse",)
FEATURES = SPECTRAL_FEATURES + TONAL_FEATURES + PULSE_FEATURES
PULSE_S = float(_core.PULSE_SECONDS)  # the pulse reads this much of the stream, where it has it


def content_options(sample_rate: float) -> LogMelOptions:
    """The content frontend at ``sample_rate``: about 64-ms frames every 32 ms, 64 mel bands
    from 60 Hz to 8 kHz (or the Nyquist rate), power in dB."""
    hop = max(64, 2 ** round(math.log2(FRAME_S * sample_rate)))
    return LogMelOptions(sample_rate=float(sample_rate), n_fft=2 * hop, hop_length=hop,
                         n_mels=64, fmin=60.0, fmax=min(8000.0, sample_rate / 2), log="db",
                         db_multiplier=10.0, amin=1e-10)


def window_features(frames_db: np.ndarray, frame_rate: float,
                    tonal_rows: np.ndarray | None = None,
                    pulse_frames: np.ndarray | None = None) -> np.ndarray:
    """The ``SPECTRAL_FEATURES`` of one window's content frames ``(T, 64)`` (dB power per mel
    band); where their tonal rows ``(T, 4)`` (``OnlineLogMel.pop_tonal``) and the frames of
    the last ``PULSE_S`` up to the window's end are given, the ``TONAL_FEATURES`` and the
    pulse after them. Computed by the C++ core
    (csrc/content_features.h and csrc/tonal_peaks.h say each; the numpy forms in
    tests/engine/test_content_features.py are the references they are tested against):

    - mod4_share: the share of the frame level's modulation at syllable rates (2.5-7 Hz of
      0.5-15 Hz); low_energy_share: frames below half the window's mean power (Scheirer and
      Slaney's pauses between words); pause_share: frames 15 dB under the median level;
    - flux_mean, flux_cv: the mean change of the bands from frame to frame, and how it varies;
    - flatness_mean, flatness_std: geometric over arithmetic mean power (1 for white noise,
      near 0 for a few strong partials);
    - peak_persistence: spectral peaks (3 dB above the 5 bands around them) still there 8
      frames on: held notes keep theirs, gliding formants and noise do not;
    - level_std_db, centroid_std: how the level and the spectral centroid move;
    - stable_power_share, stable_peaks, stable_peak_share: at the FFT's resolution, the peaks
      of 100 Hz-5 kHz (over two bins each side, 10 dB over the band's median) that the two
      frames before held within a bin: their share of the band's power, how many a frame, and
      their share of all peaks. A held note keeps its peak; a crowd, rain, traffic, a machine
      or an animal call have peaks that come and go, which the mel bands are too coarse to see;
    - pulse: the strongest autocorrelation of the onset envelope of the last ``PULSE_S`` at
      lags of 0.3-1.5 s: a beat repeats, rain, a crowd or traffic do not.

    Frames within 40 dB of the window's loudest decide the shape features: the rest is the
    floor between words, where the spectrum is whatever the noise is."""
    spectral = _core.content_features(frames_db, frame_rate)
    if tonal_rows is None or pulse_frames is None:
        return spectral
    return np.concatenate([spectral, _core.tonal_features(tonal_rows),
                           [_core.content_pulse(pulse_frames, frame_rate)]])


@dataclasses.dataclass(frozen=True)
class ContentModel:
    """The classifier: standardized features, a layer of tanh units, one score per class,
    softmax."""

    classes: tuple[str, ...]
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    hidden_weights: np.ndarray  # (features, hidden)
    hidden_bias: np.ndarray  # (hidden,)
    weights: np.ndarray  # (hidden, classes)
    bias: np.ndarray  # (classes,)

    @classmethod
    def load(cls, text: str | None = None, *, beside_detector: bool = False) -> ContentModel:
        """The shipped weights (``WEIGHTS_FILE``; ``DETECTOR_WEIGHTS_FILE`` for
        ``beside_detector``), or those in ``text``."""
        if text is None:
            name = DETECTOR_WEIGHTS_FILE if beside_detector else WEIGHTS_FILE
            text = resources.files("streamtag.engine").joinpath(name).read_text()
        data = json.loads(text)
        arrays = [np.asarray(data[name], np.float64) for name in
                  ("mean", "scale", "hidden_weights", "hidden_bias", "weights", "bias")]
        model = cls(tuple(data["classes"]), tuple(data["features"]), *arrays)
        if model.features not in (SPECTRAL_FEATURES, FEATURES) \
                or set(model.classes) != set(CLASSES):
            raise ConfigError(f"{WEIGHTS_FILE} was fitted for features {model.features} and "
                              f"classes {model.classes}, not {SPECTRAL_FEATURES} (or "
                              f"{FEATURES}) and {CLASSES}: refit it with "
                              f"benchmarks/content_fit.py")
        return model

    @property
    def extended(self) -> bool:
        """Whether the weights read the tonal features and the pulse too."""
        return self.features == FEATURES

    def to_json(self) -> str:
        def rounded(a: np.ndarray) -> list:
            return np.round(a, 6).tolist()
        return json.dumps({"classes": list(self.classes), "features": list(self.features),
                           "mean": rounded(self.mean), "scale": rounded(self.scale),
                           "hidden_weights": rounded(self.hidden_weights),
                           "hidden_bias": rounded(self.hidden_bias),
                           "weights": rounded(self.weights), "bias": rounded(self.bias)}) + "\n"

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (in ``classes`` order) of feature rows ``(n, F)`` or one row."""
        z = (np.asarray(features, np.float64) - self.mean) / self.scale
        hidden = np.tanh(z @ self.hidden_weights + self.hidden_bias)
        logits = hidden @ self.weights + self.bias
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    def classify(self, features: np.ndarray, speech: bool = True) -> str:
        """The likeliest class; without ``speech`` the likeliest of the others (where the
        speech detector decides speech, streamtag.engine.speech)."""
        probs = self.probabilities(features)
        if not speech:
            probs = np.where(np.array(self.classes) == SPEECH, -1.0, probs)
        return self.classes[int(np.argmax(probs))]


@dataclasses.dataclass(frozen=True)
class ContentNetworks:
    """The shipped weights for each way speech is decided: ``alone`` where the network decides
    speech too (no speech detector installed), ``beside_detector`` where silero-vad's detector
    decides it and the network tells music, noise and tones apart."""

    alone: ContentModel
    beside_detector: ContentModel

    @classmethod
    def load(cls) -> ContentNetworks:
        return cls(ContentModel.load(), ContentModel.load(beside_detector=True))

    def network(self, detector: bool) -> ContentModel:
        """The weights for streams whose speech the ``detector`` decides (or not)."""
        return self.beside_detector if detector else self.alone


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

    def __init__(self, model: ContentModel, sample_rate: float, sample_offset: int = 0,
                 speech: bool = True) -> None:
        self.model = model
        # False where the speech detector decides speech: the network then tells music,
        # noise and tones apart only
        self.speech = speech
        self.options = content_options(sample_rate)
        self.frontend = OnlineLogMel(self.options)
        if model.extended:
            self.frontend.keep_tonal()
        self.frame_rate = sample_rate / self.options.hop_length
        self.span = max(MIN_FRAMES, round(MAX_SPAN_S * self.frame_rate))
        # the pulse's frames (where the weights read it), reaching back before the window
        self.pulse_span = round(PULSE_S * self.frame_rate) if model.extended else 0
        # room for the longest span and the frames that arrive with one chunk of audio
        self.ring = FrameRing(max(self.span, self.pulse_span) + 3 * self.span,
                              self.options.n_mels)
        # the tonal rows, in step with the frames, where the weights read them
        self.tonal = (FrameRing(self.ring.capacity, _core.TONAL_ROW_SIZE)
                      if model.extended else None)
        self.sample_offset = sample_offset  # stream sample of this frontend's sample 0
        self.every = round(DECISION_S * sample_rate)
        self._last: tuple[int, str] | None = None  # (end sample, class) of the last decision

    def accept(self, samples: np.ndarray) -> None:
        self.frontend.accept_waveform(samples)
        self._push(self.frontend.pop())

    def finish(self) -> None:
        self.frontend.input_finished()
        self._push(self.frontend.pop())

    def _push(self, frames: np.ndarray) -> None:
        room = self.ring.capacity - max(self.span, self.pulse_span)
        for i in range(0, len(frames), room):
            self.ring.push(frames[i: i + room])
        if self.tonal is not None:  # the rows of the same frames, as many
            rows = self.frontend.pop_tonal()
            for i in range(0, len(rows), room):
                self.tonal.push(rows[i: i + room])

    def classify(self, start_sample: int, end_sample: int) -> str | None:
        """The classifier's class for stream samples ``[start_sample, end_sample)`` from the
        frames centred in it (at most the last ``MAX_SPAN_S``), None when too few are here;
        within ``DECISION_S`` of the last decision, that decision."""
        last = self._last
        if last is not None and 0 <= end_sample - last[0] < self.every:
            return last[1]
        hop = self.options.hop_length
        # frame f is centred on sample f * hop (the frontend centres its frames)
        first = -(-(start_sample - self.sample_offset) // hop)
        end = min(self.ring.end_index, (end_sample - self.sample_offset - 1) // hop + 1)
        first = max(first, end - self.span, self.ring.end_index - self.ring.capacity, 0)
        if end - first < MIN_FRAMES:
            return None
        kind = self.model.classify(self._features(first, end), self.speech)
        self._last = (end_sample, kind)
        return kind

    def _features(self, first: int, end: int) -> np.ndarray:
        """The features the weights read of frames ``[first, end)``."""
        frames = self.ring.window(end, end - first)
        if self.tonal is None:
            return window_features(frames, self.frame_rate)
        kept = max(0, self.ring.end_index - self.ring.capacity)
        pulse = self.ring.window(end, end - max(end - self.pulse_span, kept))
        return window_features(frames, self.frame_rate, self.tonal.window(end, end - first),
                               pulse)
