"""Sung or spoken: where the speech detector hears a voice, whether the voice holds its notes.

silero-vad's detector (streamtag.engine.speech) hears a voice, sung or spoken: a cappella
singing is speech to it as much as a reading is. What tells them apart is the pitch. A singer
holds each note for a fifth of a second and more, within a semitone (vibrato included); a
speaker's pitch glides through every syllable and seldom stays within a semitone for as long.
So the detector's track also keeps a pitch track of its voice: for each detector step the detector
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

from streamtag import _core

__all__ = ["FRAMES_PER_STEP", "HOLD_S", "SUNG_SHARE", "held_share", "pitch_frames"]

RATE = _core.PITCH_RATE  # the pitch track's rate: the detector's 16 kHz averaged in pairs
FRAME = _core.PITCH_FRAME  # samples a frame (40 ms)
HOP = _core.PITCH_HOP  # samples between frames (32 ms): two a detector step of 64 ms
FRAMES_PER_STEP = 2  # a detector step (1024 samples at 16 kHz) is two hops at 8 kHz
TAIL = FRAME - HOP  # samples of the step before that a step's first frame reads
VOICED = 0.2  # a frame is voiced where its normalised difference at the period is under this
FLOOR_DB = 45.0  # ... and it is within this of the stretch's loudest frame
LOUD_DB = 10.0  # the frames a share is taken over: within this of the stretch's loudest
SPAN = 6  # frames (160 ms from the first's centre to the last's) a held note lasts at least
HOLD_SEMITONES = 1.0  # and within which its pitch stays
HOLD_S = 6.0  # seconds of the track a window's share reads, up to its end
SUNG_SHARE = 0.25


def pitch_frames(blocks: np.ndarray) -> np.ndarray:
    """The pitch track of detector steps at 16 kHz, each after the ``2 * TAIL`` samples
    before it (``blocks``: ``(n, 2 * TAIL + STEP)``): ``(n, FRAMES_PER_STEP, 3)`` rows of
    (pitch in semitones above 100 Hz, YIN's normalised difference at the period, level in
    dB), by the C++ core (csrc/pitch_track.h says how; the numpy form in
    tests/engine/test_singing.py is the reference it is tested against)."""
    return _core.pitch_frames(blocks)


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
