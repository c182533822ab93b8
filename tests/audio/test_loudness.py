"""EBU R128 loudness (ITU-R BS.1770-4) measured per 100 ms block at the audio's own rate:
BS.1770's 48 kHz K-weighting, EBU Tech 3341's minimum-requirement cases at 48 and 44.1 kHz,
parity with FFmpeg's ebur128 filter, chunking invariance, channel weights, non-finite samples,
silence and errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.helpers import load_file_module

from streamtag import _core
from streamtag.audio.loudness import (
    SILENCE_LUFS,
    LoudnessMeter,
    channel_weights,
    integrated_lufs,
    k_weighting,
    loudness_of_power,
    mean_lufs,
)
from streamtag.audio.testsignals import music_like

DATA = Path(__file__).parents[1] / "data" / "loudness"
M_BLOCKS, S_BLOCKS = 4, 30  # momentary: 400 ms; short-term: 3 s


def blocks_of(samples: np.ndarray, sample_rate: float, weights: list[float] | None = None,
              planar: bool = False) -> np.ndarray:
    """The block powers of the whole signal, fed in one call."""
    channels = 1 if samples.ndim == 1 else samples.shape[0 if planar else 1]
    meter = _core.LoudnessMeter(sample_rate, weights or [1.0] * channels)
    meter.accept_waveform(samples, planar)
    return meter.pop_blocks()


def sliding_lufs(powers: np.ndarray, n: int) -> np.ndarray:
    """The loudness of every full window of n blocks (momentary: 4, short-term: 30), the k-th
    ending with block n - 1 + k."""
    return np.array([mean_lufs(powers[k - n + 1:k + 1]) for k in range(n - 1, len(powers))])


def tone(segments: list[tuple[float, float]], sample_rate: float) -> np.ndarray:
    """EBU Tech 3341's test signal: a 1 kHz sine in both channels of a stereo signal, in
    segments of (amplitude in dBFS, seconds), the dBFS of the sine's peak. The phase runs on
    across the segments (one sine whose amplitude steps)."""
    lengths = [int(round(seconds * sample_rate)) for _, seconds in segments]
    amplitude = np.repeat([10.0 ** (db / 20.0) for db, _ in segments], lengths)
    x = (amplitude * np.sin(2 * np.pi * 1000.0 * np.arange(sum(lengths)) / sample_rate))
    x = x.astype(np.float32)
    return np.stack([x, x], axis=1)


def make_reference():
    """tests/data/loudness/make_reference.py, loaded by path (tests/data is no package)."""
    return load_file_module(DATA / "make_reference.py", "loudness_make_reference")


# -- K-weighting -------------------------------------------------------------------------------

def test_k_weighting_at_48_khz_is_bs1770s_table():
    """ITU-R BS.1770-4, tables 1 and 2: the K-weighting's two stages at 48 kHz."""
    (shelf_b, shelf_a), (high_pass_b, high_pass_a) = k_weighting(48000)
    np.testing.assert_allclose(shelf_b, [1.53512485958697, -2.69169618940638, 1.19839281085285],
                               rtol=0, atol=1e-8)
    np.testing.assert_allclose(shelf_a, [1.0, -1.69065929318241, 0.73248077421585],
                               rtol=0, atol=1e-8)
    np.testing.assert_allclose(high_pass_b, [1.0, -2.0, 1.0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(high_pass_a, [1.0, -1.99004745483398, 0.99007225036621],
                               rtol=0, atol=1e-8)


def response_db(sample_rate: float, hz: np.ndarray) -> np.ndarray:
    """The K-weighting's gain at frequencies hz, from its coefficients."""
    z = np.exp(-2j * np.pi * hz / sample_rate)
    gain = np.ones_like(z)
    for b, a in k_weighting(sample_rate):
        gain *= np.polyval(b[::-1], z) / np.polyval(a[::-1], z)
    return 20 * np.log10(np.abs(gain))


def test_k_weighting_at_44_1_khz_has_the_48_khz_response():
    # The +4 dB shelf above ~2 kHz and the high-pass below ~40 Hz: the same curve at either
    # rate (within 0.01 dB from 20 Hz to 16 kHz), and +0.69 dB at 1 kHz, which BS.1770's
    # -0.691 offset cancels.
    hz = np.geomspace(20.0, 16000.0, 200)
    np.testing.assert_allclose(response_db(44100, hz), response_db(48000, hz), rtol=0, atol=0.01)
    assert response_db(48000, np.array([1000.0]))[0] == pytest.approx(0.691, abs=0.01)
    assert response_db(48000, np.array([10000.0]))[0] == pytest.approx(4.04, abs=0.02)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 32000, 44100])
def test_every_rate_reads_what_48_khz_reads(sample_rate):
    # The high-pass keeps the 48 kHz table's passband gain at every rate: a 100 Hz tone reads
    # the same wherever it is measured. The shelf's bilinear warping near Nyquist lifts 1 kHz
    # at 8 kHz (4 kHz Nyquist) by 0.2 LU and by 0.05 at 16 kHz; none from 22.05 kHz up.
    for hz, tolerance in ((100.0, 0.005), (1000.0, {8000: 0.21, 16000: 0.05}.get(sample_rate,
                                                                                  0.025))):
        at = {}
        for rate in (sample_rate, 48000):
            x = (0.1 * np.sin(2 * np.pi * hz * np.arange(5 * rate) / rate)).astype(np.float32)
            at[rate] = mean_lufs(blocks_of(x, rate)[-S_BLOCKS:])
        assert at[sample_rate] == pytest.approx(at[48000], abs=tolerance), hz


# -- EBU Tech 3341 -----------------------------------------------------------------------------

TECH_3341_RATES = (48000, 44100)


@pytest.mark.parametrize("sample_rate", TECH_3341_RATES)
@pytest.mark.parametrize("dbfs", [-23.0, -33.0])
def test_tech_3341_cases_1_and_2_steady_tone(dbfs, sample_rate):
    """EBU Tech 3341, cases 1 and 2: a stereo 1 kHz sine at -23 (-33) dBFS for 20 s reads
    -23.0 (-33.0) momentary, short-term and integrated, +-0.1 LU."""
    powers = blocks_of(tone([(dbfs, 20.0)], sample_rate), sample_rate)
    assert len(powers) == 200
    momentary, short_term = sliding_lufs(powers, M_BLOCKS), sliding_lufs(powers, S_BLOCKS)
    assert len(momentary) == 197 and len(short_term) == 171
    np.testing.assert_allclose(momentary, dbfs, rtol=0, atol=0.1)
    np.testing.assert_allclose(short_term, dbfs, rtol=0, atol=0.1)
    assert integrated_lufs(powers) == pytest.approx(dbfs, abs=0.1)


TECH_3341_GATED = {
    "case 3": [(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)],
    "case 4": [(-72.0, 10.0), (-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0), (-72.0, 10.0)],
    "case 5": [(-26.0, 20.0), (-20.0, 20.1), (-26.0, 20.0)],
}


@pytest.mark.parametrize("sample_rate", TECH_3341_RATES)
@pytest.mark.parametrize("case", sorted(TECH_3341_GATED))
def test_tech_3341_cases_3_to_5_gated_integrated(case, sample_rate):
    """EBU Tech 3341, cases 3, 4 and 5: a stereo 1 kHz sine whose level steps (the gates must
    drop the quiet parts: -72 dBFS under the absolute gate, -36 under the relative one) reads
    -23.0 integrated, +-0.1 LU."""
    powers = blocks_of(tone(TECH_3341_GATED[case], sample_rate), sample_rate)
    assert integrated_lufs(powers) == pytest.approx(-23.0, abs=0.1)


def test_the_python_meter_reads_the_same_as_the_core():
    x = tone([(-23.0, 3.0)], 44100)
    meter = LoudnessMeter()
    meter.accept(x[:10000], 44100)
    first = meter.pop_blocks()
    meter.accept(x[10000:], 44100)
    powers = np.concatenate([first, meter.pop_blocks()])
    assert (meter.block_length, meter.sample_rate, meter.blocks_completed) == (4410, 44100, 30)
    assert powers.tobytes() == blocks_of(x, 44100).tobytes()
    assert mean_lufs(powers) == pytest.approx(-23.0, abs=0.1)


# -- FFmpeg's ebur128 --------------------------------------------------------------------------

def check_against_ffmpeg(found: dict, powers: np.ndarray) -> None:
    """Our momentary, short-term and integrated loudness against ebur128's, block by block.

    ebur128's k-th value (from 0) covers the samples up to the end of block k, as ours does;
    before its window is full it writes -120.691 (a power of 1e-12): those rows are skipped
    (and checked, which pins the alignment). Its values have three decimals, so agreement is
    within the rounding (0.0005) and a margin; its integrated loudness sums a histogram of
    0.01 LU bins, so it differs by up to about 0.01."""
    momentary, short_term = np.asarray(found["momentary"]), np.asarray(found["short_term"])
    assert len(momentary) == len(short_term) == len(powers)
    unfilled = make_reference().NOT_FULL_LUFS
    assert np.all(momentary[:M_BLOCKS - 1] == unfilled) and momentary[M_BLOCKS - 1] > -70
    assert np.all(short_term[:S_BLOCKS - 1] == unfilled) and short_term[S_BLOCKS - 1] > -70
    np.testing.assert_allclose(sliding_lufs(powers, M_BLOCKS), momentary[M_BLOCKS - 1:],
                               rtol=0, atol=0.001)
    np.testing.assert_allclose(sliding_lufs(powers, S_BLOCKS), short_term[S_BLOCKS - 1:],
                               rtol=0, atol=0.001)
    assert integrated_lufs(powers) == pytest.approx(float(found["integrated"]), abs=0.02)


def test_momentary_short_term_and_integrated_match_ffmpegs_ebur128():
    """Against FFmpeg 5.1's ebur128 filter (stored by tests/data/loudness/make_reference.py):
    20 s of two music-like channels at 48 kHz, with a quieter and a louder passage (momentary
    from -58 to -20 LUFS). Observed: max |dM| = |dS| = 0.0005 LU (ebur128's rounding to three
    decimals), integrated -26.767 against ebur128's -26.772 (its 0.01 LU histogram)."""
    with np.load(DATA / "ffmpeg_ebur128.npz") as stored:
        found = {name: stored[name] for name in ("momentary", "short_term", "integrated")}
        recipe = json.loads(str(stored["recipe"]))
    assert len(found["momentary"]) == 200
    powers = blocks_of(make_reference().reference_input(recipe), recipe["sample_rate"])
    check_against_ffmpeg(found, powers)
    assert np.ptp(sliding_lufs(powers, M_BLOCKS)) > 30  # the values move


@pytest.mark.slow
def test_ffmpegs_ebur128_run_now_agrees(tmp_path):
    """The same comparison with ffmpeg run now on the stored recipe's input (the installed
    ffmpeg's ebur128, not the stored values)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg command (Debian package ffmpeg)")
    reference = make_reference()
    with np.load(DATA / "ffmpeg_ebur128.npz") as stored:
        recipe = json.loads(str(stored["recipe"]))
    x = reference.reference_input(recipe)
    path = tmp_path / "input.wav"
    reference.write_float_wav(path, x, recipe["sample_rate"])
    check_against_ffmpeg(reference.ebur128(path, recipe["sample_rate"]),
                         blocks_of(x, recipe["sample_rate"]))


# -- chunking, layouts -------------------------------------------------------------------------

def multichannel(seconds: float, sample_rate: int, channels: int, seed: int) -> np.ndarray:
    """(frames, channels): a different music-like signal in each channel."""
    return np.stack([(0.5 ** c) * music_like(seconds, sample_rate, seed=seed + c)
                     for c in range(channels)], axis=1)


def fed_in_chunks(x: np.ndarray, sample_rate: int, chunks: list[int],
                  planar: bool = False) -> tuple[np.ndarray, _core.LoudnessMeter]:
    """Block powers of x fed in the given chunk lengths (the rest in one), popped as they come;
    planar: x is (channels, frames)."""
    channels = 1 if x.ndim == 1 else x.shape[0 if planar else 1]
    meter = _core.LoudnessMeter(sample_rate, [1.0] * channels)
    frames = x.shape[-1] if planar else x.shape[0]
    powers, i = [], 0
    for c in [*chunks, frames]:
        part = x[..., i:i + c] if planar else x[i:i + c]
        meter.accept_waveform(part, planar)
        powers.append(meter.pop_blocks())
        i += c
    return np.concatenate(powers), meter


@pytest.mark.parametrize("sample_rate", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_block_powers_are_bitwise_equal_for_any_chunking(channels, sample_rate):
    rng = np.random.default_rng(channels)
    x = multichannel(1.27, sample_rate, channels, seed=3)
    whole, meter = fed_in_chunks(x, sample_rate, [])
    assert len(whole) == 12 and meter.blocks_completed == 12
    assert meter.frames_accepted == len(x) and meter.blocks_ready == 0
    block = sample_rate // 10
    chunkings = {
        "random": [int(c) for c in rng.integers(0, 3000, size=40)],
        "tiny": [0, 1, 1, 0, 2, 1, 0, 3] * 50,
        "around blocks": [block - 1, 2, block - 2, 0, 1, block, 1, 3 * block - 1],
        "one frame": [1] * (len(x) - 1) if channels == 2 else [1] * 5000,
    }
    for name, chunks in chunkings.items():
        got, meter = fed_in_chunks(x, sample_rate, chunks)
        assert got.tobytes() == whole.tobytes(), name
        assert (meter.frames_accepted, meter.blocks_completed) == (len(x), 12)


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_planar_equals_interleaved_bitwise(channels):
    rng = np.random.default_rng(1)
    x = multichannel(0.73, 48000, channels, seed=5)
    interleaved = blocks_of(x, 48000)
    planar = np.ascontiguousarray(x.T)
    assert blocks_of(planar, 48000, planar=True).tobytes() == interleaved.tobytes()
    chunks = [int(c) for c in rng.integers(0, 5000, size=10)]
    assert fed_in_chunks(planar, 48000, chunks, planar=True)[0].tobytes() == interleaved.tobytes()


def test_mono_one_dimensional_equals_one_column():
    x = music_like(0.93, 44100, seed=2)
    one_d = blocks_of(x, 44100)
    assert len(one_d) == 9
    assert blocks_of(x[:, None], 44100).tobytes() == one_d.tobytes()
    assert blocks_of(x[None, :], 44100, planar=True).tobytes() == one_d.tobytes()
    assert fed_in_chunks(x, 44100, [1, 0, 4409, 4411])[0].tobytes() == one_d.tobytes()


def test_block_length_is_a_tenth_of_the_rate_rounded():
    for sample_rate, length in ((8000, 800), (11025, 1103), (22050, 2205), (44100, 4410),
                                (48000, 4800), (88200, 8820), (768000, 76800)):
        meter = _core.LoudnessMeter(sample_rate, [1.0])
        assert meter.block_length == length
        assert (meter.sample_rate, meter.channels) == (sample_rate, 1)
        meter.accept_waveform(np.zeros(length - 1, np.float32))
        assert meter.blocks_ready == 0
        meter.accept_waveform(np.zeros(1, np.float32))
        assert meter.blocks_ready == 1


# -- channel weights ---------------------------------------------------------------------------

FIVE_ONE = ["FL", "FR", "FC", "LFE", "SL", "SR"]


def test_bs1770_channel_weights_from_ffmpeg_names():
    assert channel_weights(6, FIVE_ONE) == [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]
    assert channel_weights(2, ["FL", "FR"]) == [1.0, 1.0]
    assert channel_weights(3) == [1.0, 1.0, 1.0]  # no names: every channel counts 1.0


def five_one_powers(signal: np.ndarray, where: dict[str, float]) -> np.ndarray:
    """Block powers through the Python meter of a 5.1 signal with ``signal`` times the given
    gain in the named channels and silence elsewhere."""
    x = np.zeros((len(signal), 6), np.float32)
    for name, gain in where.items():
        x[:, FIVE_ONE.index(name)] = gain * signal
    meter = LoudnessMeter()
    meter.accept(x, 48000, names=FIVE_ONE)
    return meter.pop_blocks()


def test_lfe_counts_nothing_and_a_surround_counts_1_41():
    signal = music_like(2.0, 48000, seed=7)
    front = five_one_powers(signal, {"FL": 0.5})
    assert np.all(front > 0)
    assert np.all(five_one_powers(signal, {"LFE": 1.0}) == 0.0)
    assert five_one_powers(signal, {"FL": 0.5, "LFE": 1.0}).tobytes() == front.tobytes()
    np.testing.assert_allclose(five_one_powers(signal, {"SL": 0.5}), 1.41 * front, rtol=1e-12)
    np.testing.assert_allclose(five_one_powers(signal, {"SR": 0.5}), 1.41 * front, rtol=1e-12)
    # A surround reads 10 log10(1.41) = 1.49 LU louder than the same signal in front.
    assert (mean_lufs(five_one_powers(signal, {"SR": 0.5})) - mean_lufs(front)
            == pytest.approx(10 * math.log10(1.41), abs=1e-9))


# -- non-finite samples, silence ---------------------------------------------------------------

def test_nonfinite_samples_count_as_zero_and_are_counted():
    x = tone([(-23.0, 2.0)], 48000)
    rng = np.random.default_rng(3)
    where = rng.choice(x.size, size=50, replace=False)
    broken = x.copy().reshape(-1)
    broken[where] = rng.choice([np.nan, np.inf, -np.inf], size=50)
    broken = broken.reshape(x.shape)
    zeroed = np.where(np.isfinite(broken), broken, np.float32(0))
    meter = _core.LoudnessMeter(48000, [1.0, 1.0])
    meter.accept_waveform(broken)
    powers = meter.pop_blocks()
    assert meter.nonfinite_samples == 50
    assert np.all(np.isfinite(powers)) and len(powers) == 20
    assert powers.tobytes() == blocks_of(zeroed, 48000).tobytes()
    meter.accept_waveform(x[:48000])  # and afterwards the meter reads as ever
    assert mean_lufs(meter.pop_blocks()[-M_BLOCKS:]) == pytest.approx(-23.0, abs=0.1)
    meter.reset()
    assert (meter.nonfinite_samples, meter.frames_accepted, meter.blocks_completed) == (0, 0, 0)


def test_silence_reads_the_floor_and_has_no_integrated_loudness():
    powers = blocks_of(np.zeros((30000, 2), np.float32), 48000)
    assert len(powers) == 6 and np.all(powers == 0.0)
    assert mean_lufs(powers) == SILENCE_LUFS == -120.0
    assert mean_lufs([]) == SILENCE_LUFS
    assert integrated_lufs(powers) is None
    assert integrated_lufs(powers[:3]) is None  # under one 400 ms gating block
    assert loudness_of_power(0.0) == loudness_of_power(1e-30) == SILENCE_LUFS
    assert loudness_of_power(1.0) == pytest.approx(-0.691)
    # Under the absolute gate (-70 LUFS) is no programme either.
    assert integrated_lufs(blocks_of(tone([(-80.0, 2.0)], 48000), 48000)) is None


def test_sound_after_a_long_silence_reads_as_from_a_fresh_meter():
    # Silence after sound decays the filters' state towards denormals, which the meter flushes
    # to 0 at a block's end: after a while the state is exactly a fresh meter's, so the sound
    # after the silence gives bitwise a fresh meter's powers, and the silence exactly 0.
    sound = tone([(-23.0, 5.0)], 48000)
    silence = np.zeros((60 * 48000, 2), np.float32)
    meter = _core.LoudnessMeter(48000, [1.0, 1.0])
    for part in (sound, silence, sound):
        meter.accept_waveform(part)
    powers = meter.pop_blocks()
    assert len(powers) == 700
    assert np.all(np.isfinite(powers))
    assert np.all(powers[60:650] == 0.0)
    assert powers[650:].tobytes() == blocks_of(sound, 48000).tobytes()
    steady = mean_lufs(powers[-M_BLOCKS:])
    assert steady == pytest.approx(-23.0, abs=0.1)
    # The silence is gated out, but not the gating blocks that straddle an edge (3/4, 2/4 and
    # 1/4 sound, above the relative gate): 94 full ones and 6 partial, a mean of 97/100.
    assert integrated_lufs(powers) == pytest.approx(steady + 10 * math.log10(0.97), abs=1e-3)


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sample_rate", [0.0, 4000.0, 1e6, float("nan")])
def test_a_sample_rate_out_of_range_is_an_error_naming_it(sample_rate):
    with pytest.raises(ValueError, match="sample rate must be between 8000 and 768000 Hz"):
        _core.LoudnessMeter(sample_rate, [1.0, 1.0])
    with pytest.raises(ValueError, match="sample rate"):
        k_weighting(sample_rate)
    with pytest.raises(ValueError, match="sample rate"):
        LoudnessMeter().accept(np.zeros((10, 2), np.float32), sample_rate)


@pytest.mark.parametrize(("weights", "message"), [
    ([], r"1 to 64 channels, got 0"),
    ([1.0] * 65, r"1 to 64 channels, got 65"),
    ([1.0, -1.0], r"channel 1's weight must be in \[0, 10\].*got -1"),
    ([float("nan")], r"channel 0's weight must be in \[0, 10\].*got nan"),
    ([1.0, 10.5], r"channel 1's weight must be in \[0, 10\]"),
])
def test_bad_channel_weights_are_an_error_naming_the_problem(weights, message):
    with pytest.raises(ValueError, match=message):
        _core.LoudnessMeter(48000, weights)


def test_the_boundaries_are_accepted():
    _core.LoudnessMeter(8000, [1.0] * 64)
    _core.LoudnessMeter(768000, [0.0, 10.0])


@pytest.mark.parametrize(("channels", "shape", "planar", "message"), [
    (2, (100, 3), False, r"\(frames, channels\) with this meter's 2 channels, got shape "
                         r"\(100, 3\)"),
    (2, (100,), False, r"\(frames, channels\) with this meter's 2 channels, got shape \(100\)"),
    (2, (100, 2), True, r"\(channels, frames\) with this meter's 2 channels, got shape "
                        r"\(100, 2\)"),
    (1, (10, 1, 1), False, r"\(frames, channels\) with this meter's 1 channels \(or 1-D\), got "
                           r"shape \(10, 1, 1\)"),
])
def test_a_wrong_shape_is_an_error_naming_the_expected_one(channels, shape, planar, message):
    meter = _core.LoudnessMeter(48000, [1.0] * channels)
    with pytest.raises(ValueError, match=message):
        meter.accept_waveform(np.zeros(shape, np.float32), planar)
    assert meter.frames_accepted == 0
