"""Sung or spoken (streamtag.engine.singing): the pitch track finds a voice's fundamental and
hears no pitch in noise; held notes make a stretch sung, a pitch that glides through each
syllable does not; the detector's track keeps the pitch of the steps it calls speech only."""

from __future__ import annotations

import numpy as np
import pytest

from streamtag import _core
from streamtag.engine import singing
from streamtag.engine.speech import STEP, SpeechTrack

RATE = 16000
TAIL = 2 * singing.TAIL  # the 16-kHz samples before a step that its first frame reads


def harmonic(pitch_hz: np.ndarray, harmonics: int = 6) -> np.ndarray:
    """A voice-like buzz whose fundamental follows ``pitch_hz`` sample by sample (harmonics
    falling 6 dB an octave, none at or above 4 kHz, where the pitch track's rate ends)."""
    phase = 2 * np.pi * np.cumsum(pitch_hz) / RATE
    out = sum(np.where(k * pitch_hz < 4000, np.sin(k * phase) / k, 0.0)
              for k in range(1, harmonics + 1))
    return (0.3 * out).astype(np.float32)


def blocks_of(audio: np.ndarray) -> np.ndarray:
    """``audio``'s whole steps after its first TAIL samples, each after the TAIL before it, as
    the detector's track hands them to the pitch track."""
    n = (len(audio) - TAIL) // STEP
    return np.stack([audio[k * STEP: TAIL + (k + 1) * STEP] for k in range(n)])


def pitch_rows(audio: np.ndarray) -> np.ndarray:
    return singing.pitch_frames(blocks_of(audio)).reshape(-1, 3)


def reference_pitch_frames(blocks: np.ndarray) -> np.ndarray:
    """csrc/pitch_track.h in numpy: each block halved to 8 kHz in pairs, frames every hop,
    YIN's difference from the frame's energies and its autocorrelation (by FFT), its cumulative
    mean normalised difference, the first dip under the threshold to its bottom, the parabola
    between lags; rows (blocks, frames, 3)."""
    frame, hop = singing.FRAME, singing.HOP
    min_lag, max_lag = _core.PITCH_MIN_LAG, _core.PITCH_MAX_LAG
    audio = np.asarray(blocks, np.float64)
    audio = 0.5 * (audio[:, 0::2] + audio[:, 1::2])
    n = len(audio)
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame, axis=1)[:, ::hop]
    per = frames.shape[1]
    frames = frames.reshape(n * per, frame)
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, 1024)
    products = np.fft.irfft(np.abs(spectrum) ** 2, 1024)[:, : max_lag + 1]
    energy = np.zeros((len(frames), frame + 1))
    np.cumsum(frames ** 2, axis=1, out=energy[:, 1:])
    lags = np.arange(max_lag + 1)
    difference = energy[:, frame - lags] + energy[:, frame:] - energy[:, lags] - 2 * products
    difference[:, 0] = 0.0
    normalised = difference[:, 1:] * lags[1:] / np.maximum(np.cumsum(difference[:, 1:], axis=1),
                                                          1e-12)
    searched = normalised[:, min_lag - 1:]
    under = searched < 0.15
    at = np.where(under.any(axis=1), np.argmax(under, axis=1), np.argmin(searched, axis=1))
    rows = np.arange(len(frames))
    rising = np.ones_like(under)
    rising[:, :-1] = searched[:, 1:] >= searched[:, :-1]
    at = np.argmax(rising & (np.arange(searched.shape[1]) >= at[:, None]), axis=1)
    inner = np.clip(at, 1, searched.shape[1] - 2)
    y0, y1, y2 = searched[rows, inner - 1], searched[rows, inner], searched[rows, inner + 1]
    curve = y0 - 2 * y1 + y2
    bend = (at == inner) & (curve > 0)
    shift = np.where(bend, 0.5 * (y0 - y2) / np.where(bend, curve, 1.0), 0.0)
    out = np.empty((len(frames), 3))
    out[:, 0] = 12 * np.log2(singing.RATE / (at + min_lag + shift) / 100)
    out[:, 1] = np.where(energy[:, frame] > 1e-10 * frame, searched[rows, at], 1.0)
    out[:, 2] = 10 * np.log10(energy[:, frame] / frame + 1e-12)
    return out.reshape(n, per, 3)


@pytest.mark.parametrize("hz", [75.0, 110.0, 220.0, 523.25, 740.0])
def test_the_pitch_track_finds_the_fundamental(hz):
    rows = pitch_rows(harmonic(np.full(RATE, hz)))
    np.testing.assert_allclose(rows[:, 0], 12 * np.log2(hz / 100), atol=0.1)
    assert (rows[:, 1] < singing.VOICED).all()
    # a steady buzz is as loud in every frame
    assert np.ptp(rows[:, 2]) < 1.0  # a frame holds 3 to 30 periods, not always whole


def test_the_core_is_its_numpy_reference():
    rng = np.random.default_rng(4)
    audio = np.concatenate([sung_line(4.0, rng), spoken_line(4.0, rng),
                            0.1 * rng.standard_normal(RATE).astype(np.float32),
                            np.zeros(RATE, np.float32)])
    blocks = blocks_of(audio)
    got, want = singing.pitch_frames(blocks), reference_pitch_frames(blocks)
    assert got.shape == want.shape == (len(blocks), singing.FRAMES_PER_STEP, 3)
    # the same lag everywhere but where YIN's threshold or the dip's bottom ties within
    # rounding (the core's products are float sums, the reference's float64 FFTs); a lag apart
    # is 0.15 semitones or more
    same = np.abs(got[..., 0] - want[..., 0]) < 0.05
    assert same.mean() > 0.995
    np.testing.assert_allclose(got[same][:, 0], want[same][:, 0], atol=2e-3)
    np.testing.assert_allclose(got[..., 1:], want[..., 1:], atol=1e-3)


def test_noise_and_silence_have_no_pitch():
    noise = np.random.default_rng(7).standard_normal(2 * RATE).astype(np.float32) * 0.1
    rows = pitch_rows(noise)
    assert np.mean(rows[:, 1] < singing.VOICED) < 0.05
    assert singing.held_share(rows) == 0.0
    for still in (np.zeros(2 * RATE, np.float32), np.full(2 * RATE, 0.5, np.float32)):
        rows = pitch_rows(still)
        assert (rows[:, 1] >= singing.VOICED).all()
        assert singing.held_share(rows) == 0.0


def test_a_hostile_station_s_samples_give_finite_rows():
    """The detector's track holds samples within +-16 (speech.MAX_SAMPLE) and makes NaN 0
    before they wait: whatever a station sends, the rows the pitch track reads are finite."""
    rng = np.random.default_rng(9)
    audio = np.where(rng.random(4 * RATE) < 0.5, 1e30, -np.inf).astype(np.float32)
    audio[::7] = np.nan
    track = SpeechTrack(RATE)
    track.accept(audio)
    n = len(track.take())
    track.keep(np.full(n, 0.9, np.float32))
    rows = track.pitch[: n * singing.FRAMES_PER_STEP]
    assert np.isfinite(rows).all()
    assert singing.held_share(rows) is not None


def sung_line(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Notes of 0.35-0.7 s on a scale, each with a singer's vibrato (5.5 Hz, a third of a
    semitone either way), joined without a break."""
    pitch = []
    while sum(map(len, pitch)) < seconds * RATE:
        note = 220 * 2 ** (rng.choice([0, 2, 4, 5, 7, 9]) / 12)
        t = np.arange(round(rng.uniform(0.35, 0.7) * RATE)) / RATE
        pitch.append(note * 2 ** (np.sin(2 * np.pi * 5.5 * t) / 3 / 12))
    return harmonic(np.concatenate(pitch)[: int(seconds * RATE)])


def spoken_line(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Syllables of 0.12-0.25 s whose pitch glides 2-5 semitones up or down through each,
    between pauses of 40-120 ms, as speech's intonation moves."""
    out = []
    while sum(map(len, out)) < seconds * RATE:
        n = round(rng.uniform(0.12, 0.25) * RATE)
        start = 12 * np.log2(rng.uniform(150, 250) / 100)
        glide = rng.choice([-1, 1]) * rng.uniform(2, 5)
        out.append(harmonic(100 * 2 ** ((start + glide * np.linspace(0, 1, n)) / 12)))
        out.append(np.zeros(round(rng.uniform(0.04, 0.12) * RATE), np.float32))
    return np.concatenate(out)[: int(seconds * RATE)]


def test_held_notes_are_sung_and_gliding_syllables_are_not():
    rng = np.random.default_rng(11)
    sung = [singing.held_share(pitch_rows(sung_line(singing.HOLD_S, rng))) for _ in range(5)]
    spoken = [singing.held_share(pitch_rows(spoken_line(singing.HOLD_S, rng)))
              for _ in range(5)]
    assert min(sung) >= 2 * singing.SUNG_SHARE, sung
    assert max(spoken) < singing.SUNG_SHARE / 2, spoken


def test_a_share_reads_the_loud_frames_and_no_unmeasured_ones():
    rng = np.random.default_rng(5)
    rows = pitch_rows(sung_line(3.0, rng))
    assert singing.held_share(np.full((40, 3), np.nan, np.float32)) is None
    # frames not measured (steps the detector did not call speech) count for nothing
    padded = np.concatenate([np.full((len(rows), 3), np.nan, np.float32), rows])
    assert singing.held_share(padded) == pytest.approx(singing.held_share(rows))
    # nor do frames more than LOUD_DB under the loudest: a quiet held hum under a voice
    quiet = rows.copy()
    quiet[:, 2] -= singing.LOUD_DB + 5
    spoken = pitch_rows(spoken_line(3.0, rng))
    assert singing.held_share(np.concatenate([quiet, spoken])) < singing.SUNG_SHARE


def test_the_track_keeps_the_pitch_of_speech_steps_in_step_with_its_probabilities():
    """The rows ``keep`` stores, from the steps ``take`` gave (the probabilities stand in for
    the detector's: the bookkeeping is what is tested, on real samples)."""
    rng = np.random.default_rng(2)
    audio = sung_line(4.0, rng)
    track = SpeechTrack(RATE)
    track.accept(audio)
    steps = len(audio) // STEP
    rows = track.take()
    assert len(rows) == steps
    probs = np.where(np.arange(steps) < steps // 4, 0.1, 0.9).astype(np.float32)
    track.keep(probs)
    assert track.done == steps and list(track.probs) == pytest.approx(list(probs))
    kept = track.pitch[: steps * singing.FRAMES_PER_STEP].reshape(steps, -1, 3)
    assert np.isnan(kept[probs < 0.5]).all()
    # the first step reads zeros before it; the others the samples before them
    padded = np.concatenate([np.zeros(TAIL, np.float32), audio])
    want = singing.pitch_frames(blocks_of(padded[: TAIL + steps * STEP]))
    np.testing.assert_allclose(kept[probs > 0.5], want[probs > 0.5], rtol=1e-5, atol=1e-4)
    # fed again in other blocks, taken twice: the same rows
    again = SpeechTrack(RATE)
    half = (steps // 2) * STEP + 123
    for part in (audio[:half], audio[half:]):
        again.accept(part)
        n = len(again.take())
        again.keep(probs[again.done: again.done + n])
    np.testing.assert_allclose(again.pitch, track.pitch, rtol=1e-5, atol=1e-4)
    assert again.sung(len(audio)) and track.sung(len(audio))
