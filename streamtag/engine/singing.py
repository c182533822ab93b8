"""Sung or spoken: where the speech detector hears a voice, whether the voice holds its notes.

silero-vad's detector (streamtag.engine.speech) hears a voice, sung or spoken: a cappella
singing is speech to it as much as a reading is. What tells them apart is the pitch. A singer
holds each note for a fifth of a second and more, within a semitone (vibrato included); a
speaker's pitch glides through every syllable and seldom stays within a semitone for as long
(Gerhard, "Pitch-based acoustic feature analysis for the discrimination of speech and
monophonic singing", JIHMSP 2003, reads the same difference from the pitch track). So the
detector's track also keeps a pitch track of its voice: for each detector step the detector
calls speech, the fundamental frequency of two frames (YIN: de Cheveigne and Kawahara, JASA
2002, with its cumulative mean normalised difference and absolute threshold), at 8 kHz (the
step's samples averaged in pairs) in frames of ``FRAME`` samples every ``HOP``. A frame is
held where it is the middle of ``SPAN`` voiced frames whose pitch stays within
``HOLD_SEMITONES``; ``held_share`` is the share of a stretch's loud frames (within
``LOUD_DB`` of its loudest) that are held, over the last ``HOLD_S`` before a window's end. A
window whose steps are speech is sung, and music, where that share reaches ``SUNG_SHARE``.

``SUNG_SHARE`` is the smallest step of 0.05 above every window of the speech this was
measured on first (asterisk's telephone prompts and words in US English, Mexican Spanish and
Italian, alone and under music as loud as the voice, 6 and 12 dB under it); the recordings of
other speakers and languages were held out, as were the real singers (docs/models.md,
"Content"; ``benchmarks/content_sung.py --holds``). Steps the detector does not call speech
are not measured (no cost on music): their frames are neither voiced nor loud.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FRAMES_PER_STEP", "HOLD_S", "SUNG_SHARE", "held_share", "pitch_frames"]

RATE = 8000  # the pitch track's rate: the detector's 16 kHz averaged in pairs
FRAME = 320  # samples a frame (40 ms)
HOP = 256  # samples between frames (32 ms): two a detector step of 64 ms
FRAMES_PER_STEP = 2
TAIL = FRAME - HOP  # samples of the step before that a step's first frame reads
FFT_SIZE = 512  # at least FRAME + MAX_LAG: the products of the difference function unwrapped
MIN_LAG = RATE // 800  # 800 Hz: the highest fundamental looked for
MAX_LAG = RATE // 70  # 70 Hz: the lowest
YIN_THRESHOLD = 0.15  # YIN's absolute threshold: the first lag under it is the period
SILENT = 1e-10  # mean power (-100 dB) under which a frame has no pitch
VOICED = 0.2  # a frame is voiced where its normalised difference at the period is under this
FLOOR_DB = 45.0  # ... and it is within this of the stretch's loudest frame
LOUD_DB = 10.0  # the frames a share is taken over: within this of the stretch's loudest
SPAN = 6  # frames (160 ms from the first's centre to the last's) a held note lasts at least
HOLD_SEMITONES = 1.0  # and within which its pitch stays
HOLD_S = 6.0  # seconds of the track a window's share reads, up to its end
SUNG_SHARE = 0.25


def pitch_frames(steps: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """The pitch track of detector steps ``(n, STEP)`` at 16 kHz, each after ``tails``
    ``(n, 2 * TAIL)``, the 16-kHz samples before it: ``(n, FRAMES_PER_STEP, 3)`` rows of
    (pitch in semitones above 100 Hz, YIN's normalised difference at the period, level in
    dB)."""
    audio = np.concatenate([np.asarray(tails, np.float64), np.asarray(steps, np.float64)],
                           axis=1)
    audio = 0.5 * (audio[:, 0::2] + audio[:, 1::2])  # (n, TAIL + STEP / 2) at RATE
    n = len(audio)
    frames = np.lib.stride_tricks.sliding_window_view(audio, FRAME, axis=1)[:, ::HOP]
    frames = frames.reshape(n * FRAMES_PER_STEP, FRAME)
    frames = frames - frames.mean(axis=1, keepdims=True)
    power = frames * frames
    spectrum = np.fft.rfft(frames, FFT_SIZE)
    products = np.fft.irfft(spectrum.real ** 2 + spectrum.imag ** 2, FFT_SIZE)[:, : MAX_LAG + 1]
    energy = np.zeros((len(frames), FRAME + 1))
    np.cumsum(power, axis=1, out=energy[:, 1:])
    lags = np.arange(MAX_LAG + 1)
    # YIN's difference at each lag: the energies of the two overlapping parts (the frame's
    # first FRAME - lag samples and its last) less twice their product
    difference = (energy[:, FRAME: FRAME - MAX_LAG - 1: -1] + energy[:, FRAME:]
                  - energy[:, : MAX_LAG + 1] - 2 * products)
    difference[:, 0] = 0.0
    running = np.cumsum(difference[:, 1:], axis=1)
    normalised = difference[:, 1:] * lags[1:] / np.maximum(running, 1e-12)
    searched = normalised[:, MIN_LAG - 1:]
    under = searched < YIN_THRESHOLD
    at = np.where(under.any(axis=1), np.argmax(under, axis=1), np.argmin(searched, axis=1))
    rows = np.arange(len(frames))
    # from the first dip under the threshold on to the bottom of that dip: the first lag from
    # there whose next is no lower (the last lag where none is)
    rising = np.ones_like(under)
    rising[:, :-1] = searched[:, 1:] >= searched[:, :-1]
    rising &= np.arange(searched.shape[1]) >= at[:, None]
    at = np.argmax(rising, axis=1)
    # the period between lags: the parabola through the bottom and its two neighbours (YIN's
    # step 5): at 8 kHz a lag is a semitone and more above 400 Hz
    inner = np.clip(at, 1, searched.shape[1] - 2)
    y0, y1, y2 = (searched[rows, inner - 1], searched[rows, inner], searched[rows, inner + 1])
    curve = y0 - 2.0 * y1 + y2
    shift = np.where((at == inner) & (curve > 0), 0.5 * (y0 - y2) / np.where(curve > 0, curve, 1.0),
                     0.0)
    period = at + MIN_LAG + shift
    out = np.empty((len(frames), 3), np.float32)
    out[:, 0] = 12.0 * np.log2(RATE / period / 100.0)
    # a frame without power (digital silence, a constant) has no pitch, whatever its zero
    # difference says
    out[:, 1] = np.where(energy[:, FRAME] > SILENT * FRAME, searched[rows, at], 1.0)
    out[:, 2] = 10.0 * np.log10(energy[:, FRAME] / FRAME + 1e-12)
    return out.reshape(n, FRAMES_PER_STEP, 3)


def held_share(rows: np.ndarray) -> float | None:
    """The share of the loud frames of a stretch of pitch rows ``(frames, 3)`` (NaN rows: not
    measured) that are held notes; None where no frame was measured."""
    rows = np.asarray(rows, np.float64)
    level = rows[:, 2]
    measured = np.isfinite(level)
    if not measured.any():
        return None
    top = level[measured].max()
    with np.errstate(invalid="ignore"):
        voiced = measured & (rows[:, 1] < VOICED) & (level >= top - FLOOR_DB)
        loud = measured & (level >= top - LOUD_DB)
    held = np.zeros(len(rows), bool)
    if len(rows) >= SPAN:
        pitch = np.where(voiced, rows[:, 0], 0.0)
        spans = np.lib.stride_tricks.sliding_window_view(pitch, SPAN)
        all_voiced = np.lib.stride_tricks.sliding_window_view(voiced, SPAN).all(axis=1)
        steady = spans.max(axis=1) - spans.min(axis=1) < HOLD_SEMITONES
        held[SPAN // 2: SPAN // 2 + len(spans)] = all_voiced & steady
    return float(np.count_nonzero(held & loud)) / max(1, int(np.count_nonzero(loud)))
