"""The content classifier's features from the C++ core (csrc/content_features.h and
csrc/tonal_peaks.h) against their numpy form below, the reference they were written from: on
random frames of every size a window takes, on the frames of real speech, music and noise, and
the same class decided."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from support.content_material import RATE, festival_speech, game_music, require, sox_signal

from streamtag import _core
from streamtag.engine.content import (
    FEATURES,
    MAX_SPAN_S,
    MIN_FRAMES,
    PULSE_S,
    SPECTRAL_FEATURES,
    TONAL_FEATURES,
    ContentModel,
    content_options,
    window_features,
)
from streamtag.frontend import OnlineLogMel


@functools.lru_cache(maxsize=8)
def _modulation_plan(frames: int, frame_rate: float) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    freqs = np.fft.rfftfreq(frames, 1.0 / frame_rate)
    return (np.hanning(frames), (freqs >= 2.5) & (freqs <= 7.0),
            (freqs >= 0.5) & (freqs <= 15.0))


def reference_features(frames_db: np.ndarray, frame_rate: float) -> np.ndarray:
    """The features in numpy, as csrc/content_features.h defines them."""
    x = np.asarray(frames_db, dtype=np.float64)
    power = np.power(10.0, x * 0.1)
    total = power.sum(axis=1) + 1e-12
    level = 10.0 * np.log10(total)
    loud = level > level.max() - 40.0
    taper, band, whole = _modulation_plan(len(level), frame_rate)
    spectrum = np.abs(np.fft.rfft((level - level.mean()) * taper)) ** 2
    mod4 = spectrum[band].sum() / (spectrum[whole].sum() + 1e-12)
    low_energy = np.count_nonzero(total < 0.5 * total.mean()) / len(total)
    pause = np.count_nonzero(level < np.median(level) - 15.0) / len(level)
    flux = np.abs(np.diff(x, axis=0)).mean(axis=1)
    flux_mean = flux.mean()
    flux_cv = flux.std() / (flux_mean + 1e-6)
    flat = (np.power(10.0, x.mean(axis=1) * 0.1) / power.mean(axis=1))[loud]
    edge = np.concatenate([x[:, :1], x[:, :1], x, x[:, -1:], x[:, -1:]], axis=1)
    around = (edge[:, :-4] + edge[:, 1:-3] + edge[:, 2:-2] + edge[:, 3:-1] + edge[:, 4:]) * 0.2
    peaks = (x - around) > 3.0
    peaks &= loud[:, np.newaxis]
    counts = np.count_nonzero(peaks[:-8])
    persistence = np.count_nonzero(peaks[:-8] & peaks[8:]) / counts if counts else 0.0
    centroid = (power @ np.arange(x.shape[1], dtype=np.float64) / total)[loud]
    return np.array([mod4, low_energy, flux_mean, flux_cv, flat.mean(), flat.std(),
                     persistence, level[loud].std(), centroid.std(), pause])


def reference_tonal_rows(audio: np.ndarray) -> np.ndarray:
    """Each content frame's tonal row (band power, peaks, stable peaks, their power) in numpy,
    as csrc/tonal_peaks.h defines it, from the frame's power spectrum as the content frontend
    takes it (periodic Hann window, frames centred with zeros padded)."""
    options = content_options(RATE)
    n, hop = options.n_fft, options.hop_length
    padded = np.pad(np.asarray(audio, np.float64), (n // 2, n // 2))
    count = 1 + (len(padded) - n) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    framed = np.stack([padded[t * hop: t * hop + n] for t in range(count)]) * window
    power = np.abs(np.fft.rfft(framed, axis=1)) ** 2
    lo, hi = round(100 * n / RATE), round(5000 * n / RATE)
    k = np.arange(lo, hi)
    band = power[:, lo:hi]
    upper_median = np.sort(band, axis=1)[:, (hi - lo) // 2]
    peak = band > 10.0 * upper_median[:, None]
    for shift in (1, 2):
        peak &= (band > power[:, k - shift]) & (band > power[:, k + shift])
    near = peak.copy()
    near[:, 1:] |= peak[:, :-1]
    near[:, :-1] |= peak[:, 1:]
    stable = peak.copy()
    stable[:2] = False
    stable[2:] &= near[1:-1] & near[:-2]
    return np.stack([band.sum(axis=1), peak.sum(axis=1), stable.sum(axis=1),
                     (band * stable).sum(axis=1)], axis=1)


def reference_tonal_features(rows: np.ndarray) -> np.ndarray:
    band, peaks, stable, stable_power = np.asarray(rows, np.float64).sum(axis=0)
    return np.array([stable_power / band if band > 0 else 0.0, stable / len(rows),
                     stable / peaks if peaks > 0 else 0.0])


def reference_pulse(frames_db: np.ndarray, frame_rate: float) -> float:
    """The pulse in numpy, as csrc/content_features.h defines it."""
    x = np.asarray(frames_db, np.float64)
    e = np.clip(np.diff(x, axis=0), 0.0, 10.0).mean(axis=1)  # each band's rise to 10 dB
    e -= e.mean()
    lo, hi = round(0.3 * frame_rate), min(round(1.5 * frame_rate), len(e) // 2)
    r = np.correlate(e, e, "full")[len(e) - 1:]
    return 0.0 if hi < lo or r[0] <= 0 else float(r[lo: hi + 1].max() / r[0])


def test_the_core_names_the_features_the_classifier_reads():
    assert tuple(_core.CONTENT_FEATURES) == SPECTRAL_FEATURES
    assert tuple(_core.TONAL_FEATURES) == TONAL_FEATURES
    assert FEATURES == SPECTRAL_FEATURES + TONAL_FEATURES + ("pulse",)
    assert _core.PULSE_SECONDS == PULSE_S


@pytest.mark.parametrize("frames", [MIN_FRAMES, 17, 40, 124, 125, 126, 250])
def test_random_frames_give_the_reference_s_features(frames):
    rng = np.random.default_rng(frames)
    for bands, rate in ((64, 31.25), (64, 34.45), (40, 43.07)):
        x = (rng.standard_normal((frames, bands)) * 20 - 40).astype(np.float32)
        x[:: 5] -= 50  # quiet frames: pauses, and frames left out of the shape features
        x[:, 7] += 15  # a band held over the rest: peaks that persist
        np.testing.assert_allclose(_core.content_features(x, rate), reference_features(x, rate),
                                   rtol=1e-5, atol=1e-9)
        assert _core.content_pulse(x, rate) == pytest.approx(reference_pulse(x, rate), abs=1e-5)
        rows = np.abs(rng.standard_normal((frames, 4))).astype(np.float32) * [9, 5, 2, 1]
        np.testing.assert_allclose(_core.tonal_features(rows), reference_tonal_features(rows),
                                   rtol=1e-5)


def content_frames(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The content frontend's frames of ``audio`` and their tonal rows."""
    frontend = OnlineLogMel(content_options(RATE))
    frontend.keep_tonal()
    frontend.accept_waveform(audio)
    frontend.input_finished()
    return frontend.pop(), frontend.pop_tonal()


def test_real_speech_music_and_noise_give_the_reference_s_features_and_class(tmp_path):
    require()
    model = ContentModel.load()
    rate = RATE / content_options(RATE).hop_length
    span, pulse = round(MAX_SPAN_S * rate), round(PULSE_S * rate)
    kinds = {}
    for name, audio in (("speech", festival_speech(tmp_path)), ("music", game_music(0, 20)),
                        ("noise", sox_signal(tmp_path, "pink", "8", "pinknoise",
                                             level_dbfs=-20))):
        frames, rows = content_frames(audio)
        reference_rows = reference_tonal_rows(audio)
        assert rows.shape == reference_rows.shape == (len(frames), 4)
        # the core's float FFT against numpy's doubles: a bin within a hair of its neighbour or
        # of the threshold may tip, and a peak tipped changes the stability of the next two
        same = np.all(rows[:, 1:3] == reference_rows[:, 1:3], axis=1)
        assert same.mean() >= 0.99, (name, same.mean())
        np.testing.assert_allclose(rows[:, 0], reference_rows[:, 0], rtol=1e-3, atol=1e-9)
        ends = range(span, len(frames), span // 2)
        assert len(ends) >= 2
        for end in ends:
            window, tonal = frames[end - span: end], rows[end - span: end]
            history = frames[max(0, end - pulse): end]
            ours = window_features(window, rate, tonal, history)
            theirs = np.concatenate([reference_features(window, rate),
                                     reference_tonal_features(reference_rows[end - span: end]),
                                     [reference_pulse(history, rate)]])
            spectral = len(SPECTRAL_FEATURES)
            np.testing.assert_allclose(ours[:spectral], theirs[:spectral], rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(ours[spectral:-1], theirs[spectral:-1], atol=0.01)
            assert ours[-1] == pytest.approx(theirs[-1], abs=1e-5)
            kinds.setdefault(name, []).append((model.classify(ours), model.classify(theirs)))
    for name, pairs in kinds.items():
        assert all(a == b for a, b in pairs), (name, pairs)
        assert sum(a == name for a, _ in pairs) >= len(pairs) / 2, (name, pairs)


@pytest.mark.parametrize("frames, rate, match", [
    (np.zeros((1, 64), np.float32), 31.25, "at least 2 frames"),
    (np.zeros(64, np.float32), 31.25, "2-D array"),
    (np.zeros((20, 64), np.float32), 0.0, "frame_rate"),
    (np.full((20, 64), np.nan, np.float32), 31.25, "finite"),
])
def test_bad_frames_are_refused_with_what_is_wrong(frames, rate, match):
    with pytest.raises(ValueError, match=match):
        _core.content_features(frames, rate)


@pytest.mark.parametrize("rows, match", [
    (np.zeros((0, 4), np.float32), "at least one frame"),
    (np.zeros((5, 3), np.float32), "frames, 4"),
    (np.full((5, 4), np.inf, np.float32), "not finite"),
])
def test_bad_tonal_rows_are_refused_with_what_is_wrong(rows, match):
    with pytest.raises(ValueError, match=match):
        _core.tonal_features(rows)


def test_tonal_rows_are_turned_on_before_the_first_frame_and_popped_with_the_frames():
    frontend = OnlineLogMel(content_options(RATE))
    assert not frontend.tonal_kept and frontend.pop_tonal().shape == (0, 4)
    frontend.accept_waveform(np.zeros(RATE, np.float32))
    with pytest.raises(RuntimeError, match="before the first frame"):
        frontend.keep_tonal()
    frontend.reset()
    frontend.keep_tonal()
    frontend.accept_waveform(np.zeros(RATE, np.float32))
    frames, rows = frontend.pop(), frontend.pop_tonal()
    assert len(rows) == len(frames) > 0 and not rows.any()  # silence: no power, no peaks
    assert frontend.pop_tonal().shape == (0, 4)
