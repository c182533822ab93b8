"""Audio level and onset rate per window, measured by the log-mel frontend as it computes frames:
dBFS conventions, clipped samples, chunking invariance, the blocks each level step owns (as many
frames as fit in 32 ms: one for the default model, two for musicnn), onsets."""

from __future__ import annotations

import numpy as np
import pytest

from streamtag.frontend import (
    CLIP_LEVEL,
    FRAME_LEVEL_FIELDS,
    SILENCE_DBFS,
    LogMelOptions,
    OnlineLogMel,
    WindowLevel,
    window_level_of,
)

SR = 16000
# The default model's frontend (models/default/MODEL_CARD.md) and musicnn's.
DEFAULT_MODEL = LogMelOptions(sample_rate=SR, n_fft=2048, hop_length=512, center=True,
                              pad_mode="reflect", n_mels=192, fmax=8000.0, log="log1p")
MUSICNN = LogMelOptions.preset("musicnn")
OPTIONS = {"default_model": DEFAULT_MODEL, "musicnn": MUSICNN}
# Windows of ~3 s, one every ~1 s, as the two models are served.
WINDOWS = {"default_model": (93, 31), "musicnn": (187, 62)}
SUM, PEAK, CLIPPED, SAMPLES, FLUX = range(5)


def measured(options: LogMelOptions, x: np.ndarray, chunks: list[int] | None = None,
             keep: int = 100_000) -> tuple[OnlineLogMel, np.ndarray]:
    """The finished extractor and its popped frames, x fed in chunks (the rest in one)."""
    fe = OnlineLogMel(options)
    fe.keep_levels(keep)
    frames = []
    i = 0
    for c in chunks or []:
        fe.accept_waveform(x[i:i + c])
        frames.append(fe.pop())
        i += c
    fe.accept_waveform(x[i:])
    fe.input_finished()
    frames.append(fe.pop())
    return fe, np.concatenate(frames)


def all_levels(fe: OnlineLogMel) -> np.ndarray:
    return fe.frame_levels(fe.frames_ready, fe.frames_ready)


def sine(seconds: float, hz: float = 1000.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def click_train(seconds: float, period: float = 0.25, seed: int = 0) -> np.ndarray:
    """10 ms bursts of noise (0.5 rms) every period, over low noise (0.01 rms)."""
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.standard_normal(int(seconds * SR))
    for start in np.arange(0.1, seconds, period):
        i = int(start * SR)
        x[i:i + SR // 100] += 0.5 * rng.standard_normal(len(x[i:i + SR // 100]))
    return x.astype(np.float32)


def windows(fe: OnlineLogMel, name: str) -> list:
    """The window levels of every full window, one every hop, as the daemon would ask."""
    length, hop = WINDOWS[name]
    return [fe.window_level(end, length) for end in range(length, fe.frames_ready + 1, hop)]


def step_of(options: LogMelOptions) -> int:
    """Frames per level step, from the definition: as many as fit in 32 ms (hop <= n_fft)."""
    return max(1, int(0.032 * options.sample_rate / options.hop_length + 1e-9))


def owned_blocks(options: LogMelOptions, n: int, frames: int) -> list[tuple[int, int]]:
    """The samples each level step owns, from the definition (hop <= n_fft), for a finished
    signal of `frames` frames."""
    lead = options.hop_length // 2 if options.center else 0
    hop = step_of(options) * options.hop_length
    steps = -(-frames // step_of(options))
    blocks = [(max(0, g * hop - lead), min(n, g * hop - lead + hop)) for g in range(steps)]
    if blocks:
        blocks[-1] = (blocks[-1][0], n)  # a finished signal's tail goes to the last step
    return blocks


def steps_in(options: LogMelOptions, end: int, length: int, frames: int) -> slice:
    """The level steps of frames [end - length, end) of a finished signal of `frames` frames:
    those whose last frame is in it (the last step ends with the last frame)."""
    k = step_of(options)
    return slice((end - length) // k, -(-frames // k) if end == frames else end // k)


def test_a_level_step_is_as_many_frames_as_fit_in_32_ms():
    assert OnlineLogMel(DEFAULT_MODEL).level_step == 1  # 512 samples at 16 kHz: 32 ms
    assert OnlineLogMel(MUSICNN).level_step == 2  # 256 samples: 16 ms
    assert OnlineLogMel(LogMelOptions.preset("librosa")).level_step == 1  # 23.2 ms
    assert OnlineLogMel(LogMelOptions.preset("cp_jku")).level_step == 2  # 11.6 ms
    # Frames that leave samples between them are measured one by one.
    assert OnlineLogMel(LogMelOptions(n_fft=128, hop_length=160, n_mels=16)).level_step == 1
    fe, _ = measured(MUSICNN, sine(2.0))
    assert fe.frames_ready == 126
    assert fe.frame_levels(126, 126).shape == (63, len(FRAME_LEVEL_FIELDS))
    assert fe.frame_levels(125, 10).shape == (5, len(FRAME_LEVEL_FIELDS))  # steps end 115..123
    with pytest.raises(ValueError, match=r"frames \[4, 5\) hold no level step's last frame.*"
                                         r"ask for at least 2 frames"):
        fe.window_level(5, 1)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_sine_of_half_amplitude_is_minus_9_dbfs_rms_and_minus_6_peak(name):
    fe, _ = measured(OPTIONS[name], sine(10.0))
    levels = windows(fe, name)
    assert len(levels) >= 7
    for w in levels:
        assert w.rms_dbfs == pytest.approx(-9.03, abs=0.05)
        assert w.peak_dbfs == pytest.approx(-6.02, abs=0.05)
        assert w.clipped == 0
    full_scale = measured(OPTIONS[name], sine(3.0, amplitude=1.0))[0]
    w = full_scale.window_level(full_scale.frames_ready, full_scale.frames_ready)
    assert w.rms_dbfs == pytest.approx(-3.01, abs=0.01)
    assert w.peak_dbfs == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_digital_silence_is_minus_120_dbfs_without_onsets(name):
    fe, _ = measured(OPTIONS[name], np.zeros(5 * SR, np.float32))
    for w in windows(fe, name) + [fe.window_level(fe.frames_ready, fe.frames_ready)]:
        assert w.rms_dbfs == SILENCE_DBFS == -120.0
        assert w.peak_dbfs == -120.0
        assert (w.clipped, w.onsets, w.onset_rate_hz) == (0, 0, 0.0)
        assert w.samples > 0


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_clipped_samples_are_counted_exactly(name):
    options = OPTIONS[name]
    rng = np.random.default_rng(4)
    x = np.clip(0.3 * rng.standard_normal(4 * SR), -0.9, 0.9).astype(np.float32)
    where = rng.choice(len(x), size=777, replace=False)
    x[where] = rng.choice([-1.0, 1.0, 1.5, -CLIP_LEVEL], size=len(where))
    fe, _ = measured(options, x)
    everything = fe.window_level(fe.frames_ready, fe.frames_ready)
    assert everything.clipped == 777
    assert everything.peak_dbfs == pytest.approx(20 * np.log10(1.5))
    # Any window: exactly the clipped samples its steps own.
    blocks = owned_blocks(options, len(x), fe.frames_ready)
    clipped = np.abs(x) >= CLIP_LEVEL
    for end, length in ((40, 20), (fe.frames_ready, 7), (2, 2), (41, 20)):
        steps = blocks[steps_in(options, end, length, fe.frames_ready)]
        want = sum(int(clipped[a:b].sum()) for a, b in steps)
        assert fe.window_level(end, length).clipped == want


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_levels_are_bitwise_equal_for_any_chunking(name):
    options = OPTIONS[name]
    rng = np.random.default_rng(9)
    x = (0.2 * rng.standard_normal(int(2.5 * SR))).astype(np.float32)
    x[::301] = 1.0
    whole, whole_frames = measured(options, x)
    expected = all_levels(whole)
    chunkings = {
        "one_sample": [1] * len(x),
        "random": list(rng.integers(0, 3000, size=60)),
        "hop_sized": [options.hop_length] * (len(x) // options.hop_length),
        "odd": [7, 1, 2, 4096, 0, 511, 513] * 20,
    }
    for chunks in chunkings.values():
        fe, frames = measured(options, x, [int(c) for c in chunks])
        got = all_levels(fe)
        assert got.tobytes() == expected.tobytes()
        assert frames.tobytes() == whole_frames.tobytes()
        assert repr(fe.window_level(50, 40)) == repr(whole.window_level(50, 40))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_blocks_partition_the_signal_and_sums_match_numpy(name):
    options = OPTIONS[name]
    n = 3 * SR + 377  # not a whole number of hops: the tail goes to the last frame
    x = (0.25 * np.random.default_rng(2).standard_normal(n)).astype(np.float32)
    fe, _ = measured(options, x)
    levels = all_levels(fe)
    blocks = owned_blocks(options, n, fe.frames_ready)
    owners = np.zeros(n, np.int64)
    for a, b in blocks:
        owners[a:b] += 1
    assert np.all(owners == 1), "every sample is owned by exactly one step"
    assert levels[:, SAMPLES].sum() == n
    assert list(levels[:, SAMPLES]) == [b - a for a, b in blocks]
    squares = x.astype(np.float64) ** 2
    want = np.array([squares[a:b].sum() for a, b in blocks])
    np.testing.assert_allclose(levels[:, SUM], want, rtol=1e-5)
    assert list(levels[:, PEAK]) == [np.abs(x[a:b]).max() for a, b in blocks]
    # A window's RMS is numpy's over exactly the samples its steps own.
    end, length = 60, 31
    steps = blocks[steps_in(options, end, length, fe.frames_ready)]
    a, b = steps[0][0], steps[-1][1]
    w = fe.window_level(end, length)
    assert w.samples == b - a
    assert w.rms_dbfs == pytest.approx(10 * np.log10(squares[a:b].mean()), abs=1e-4)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_click_train_every_250_ms_is_4_onsets_per_second(name):
    fe, _ = measured(OPTIONS[name], click_train(12.0))
    levels = windows(fe, name)
    assert len(levels) >= 9
    for w in levels:
        assert w.onset_rate_hz == pytest.approx(4.0, abs=0.5), w
    # Levels of the same windows: the bursts dominate the mean square.
    assert all(-25 < w.rms_dbfs < -10 for w in levels)


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("hz", [1000.0, 997.0, 440.0])
def test_steady_sine_has_no_onsets(name, hz):
    fe, _ = measured(OPTIONS[name], sine(10.0, hz))
    # The windows clear of the signal's ends (where padding changes the spectrum).
    levels = windows(fe, name)[:-1]
    assert [w.onsets for w in levels] == [0] * len(levels)


def test_frames_are_bitwise_the_same_with_and_without_levels():
    x = click_train(3.0, seed=3)
    for options in OPTIONS.values():
        plain = OnlineLogMel(options)
        plain.accept_waveform(x)
        plain.input_finished()
        assert measured(options, x)[1].tobytes() == plain.pop().tobytes()


def test_asking_for_frames_not_computed_or_no_longer_kept_says_what_is_kept():
    fe = OnlineLogMel(MUSICNN)
    fe.keep_levels(50)
    assert fe.level_frames_kept == 50
    fe.accept_waveform(sine(1.0))  # 63 frames before the end
    ready = fe.frames_ready
    fe.window_level(ready, 50)
    with pytest.raises(IndexError, match=rf"frame {ready} is not computed yet.*input_finished"):
        fe.window_level(ready + 1, 10)
    with pytest.raises(IndexError, match=r"no longer kept \(keep_levels\(50\) keeps the last 50"):
        fe.window_level(ready, 51)
    with pytest.raises(IndexError, match=rf"frames \[-1, 1\) asked for, frames \[{ready - 50}"):
        fe.window_level(1, 2)
    with pytest.raises(ValueError, match="length must be >= 1"):
        fe.window_level(ready, 0)
    fe.input_finished()
    fe.window_level(fe.frames_ready, 1)  # the last frames are there once the input is finished
    # (a step ends at the last frame, whole or not)
    fe.reset()
    with pytest.raises(IndexError, match="not computed yet"):
        fe.window_level(1, 1)


def test_levels_are_off_by_default_and_say_how_to_turn_them_on():
    fe = OnlineLogMel(MUSICNN)
    assert fe.level_frames_kept == 0
    fe.accept_waveform(sine(1.0))
    with pytest.raises(RuntimeError, match=r"levels are not kept; call keep_levels\(frames\)"):
        fe.window_level(fe.frames_ready, 1)
    with pytest.raises(RuntimeError, match="keep_levels"):
        fe.frame_levels(fe.frames_ready, 1)
    with pytest.raises(RuntimeError, match="before the first frame is computed"):
        fe.keep_levels(10)
    with pytest.raises(ValueError, match="frames must be in"):
        fe.keep_levels(-1)
    fe.keep_levels(0)
    fe.reset()
    fe.keep_levels(10)  # after a reset it may be turned on
    fe.accept_waveform(sine(1.0))
    assert fe.frames_ready % 2 == 0
    assert fe.window_level(fe.frames_ready, 10).samples == 10 * MUSICNN.hop_length


def test_window_level_of_aggregates_a_hand_made_feature_array():
    features = np.zeros((10, len(FRAME_LEVEL_FIELDS)), np.float32)
    features[:, SUM] = 8.0 * np.arange(1, 11)
    features[:, PEAK] = 0.1 * np.arange(10)
    features[9, CLIPPED] = 3
    features[:, SAMPLES] = 512
    features[:, FLUX] = [0, 0.5, 0.4, 0.6, 12, 3, 0.5, 0.4, 8, 0.5]
    w = window_level_of(features, 512, SR)
    assert isinstance(w, WindowLevel)
    assert w.to_dict() == pytest.approx({
        "rms_dbfs": 10 * np.log10(8.0 * 55 / 5120), "peak_dbfs": 20 * np.log10(np.float32(0.9)),
        "clipped": 3, "samples": 5120, "onsets": 2, "onset_rate_hz": 2 / 0.32})
    assert repr(w) == ("WindowLevel(rms_dbfs=-10.66, peak_dbfs=-0.92, clipped=3, samples=5120, "
                       "onsets=2, onset_rate_hz=6.250)")
    with pytest.raises(AttributeError):
        w.rms_dbfs = 0.0
    with pytest.raises(ValueError, match=r"\(frames, 5\)"):
        window_level_of(features[:, :4], 512, SR)
    with pytest.raises(ValueError, match="at least one frame"):
        window_level_of(features[:0], 512, SR)
    # The same numbers as the extractor's own aggregation of its steps' rows.
    fe, _ = measured(MUSICNN, click_train(4.0))
    assert repr(window_level_of(fe.frame_levels(150, 100), 2 * MUSICNN.hop_length, SR)) == repr(
        fe.window_level(150, 100))
    assert FRAME_LEVEL_FIELDS == ("sum_squares", "peak", "clipped", "samples", "onset_flux_db")
