"""The log-mel frontend: chunking invariance, parity with librosa, options, errors, threads."""

from __future__ import annotations

import json
import pickle
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.helpers import feed

from streamtag import _core
from streamtag.audio.testsignals import music_like
from streamtag.frontend import (
    NULLABLE_OPTIONS,
    FrameRing,
    LogMelOptions,
    OnlineLogMel,
    compute_logmel,
    mel_filterbank,
)

librosa = pytest.importorskip("librosa", reason="librosa is the reference implementation")
scipy_signal = pytest.importorskip("scipy.signal", reason="scipy builds the symmetric window")

VARIANTS = {
    "musicnn": LogMelOptions.preset("musicnn"),
    "mtg_jamendo": LogMelOptions.preset("mtg_jamendo"),
    "not_centred": LogMelOptions(center=False, n_fft=512, hop_length=200, n_mels=40),
    "odd_fft_short_window": LogMelOptions(n_fft=401, win_length=300, hop_length=97, n_mels=32,
                                          pad_mode="reflect", mel_scale="htk", norm=None),
    "n_fft_400_magnitude_ln": LogMelOptions(n_fft=400, hop_length=160, n_mels=64, power=1.0,
                                            log="ln", fmin=50.0, fmax=7600.0),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_chunking_gives_bitwise_the_batch_frames(name, data):
    options = VARIANTS[name]
    length = data.draw(st.integers(0, 6000), label="length")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    signal = (np.random.default_rng(seed).standard_normal(length) * 0.3).astype(np.float32)
    sizes = data.draw(st.lists(st.sampled_from([0, 1, 2, 3, 5, 64, 255, 256, 257, 1000, 1500]),
                               max_size=40), label="chunks")
    expected = compute_logmel(signal, options)
    got, _ = feed(options, signal, sizes)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_chunking_invariance_on_long_music_with_single_samples():
    options = LogMelOptions.preset("musicnn")
    signal = music_like(2.0, options.sample_rate, seed=5)
    sizes = [1] * 700 + [0, 3, 4096, 1] + [255] * 40
    assert np.array_equal(feed(options, signal, sizes)[0], compute_logmel(signal, options))


def librosa_logmel(y: np.ndarray, o: LogMelOptions) -> np.ndarray:
    window = (scipy_signal.get_window("hann", o.win_length or o.n_fft, fftbins=False)
              if o.window == "hann_symmetric" else "hann")
    mel = librosa.feature.melspectrogram(
        y=y, sr=o.sample_rate, n_fft=o.n_fft, hop_length=o.hop_length, win_length=o.win_length,
        window=window, center=o.center, pad_mode=o.pad_mode, power=o.power, n_mels=o.n_mels,
        fmin=o.fmin, fmax=o.fmax, htk=o.mel_scale == "htk", norm=o.norm)
    if o.log == "db":
        if o.db_multiplier == 10.0:
            out = librosa.power_to_db(mel, ref=1.0, amin=o.amin, top_db=None)
        else:
            out = o.db_multiplier * np.log10(np.maximum(o.amin, mel))
    elif o.log == "log1p":
        out = np.log10(1.0 + o.log1p_gain * mel)
    elif o.log == "ln":
        out = np.log(np.maximum(o.amin, mel))
    else:
        out = mel
    return out.T


def max_error_db(ours: np.ndarray, reference: np.ndarray, o: LogMelOptions) -> float:
    diff = np.abs(ours.astype(np.float64) - reference)
    # log1p values are in bels (log10); 0.01 dB is 0.001 there.
    return float(diff.max() * (10.0 if o.log == "log1p" else 1.0))


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("preset", ["mtg_jamendo", "musicnn", "librosa", "cp_jku"])
def test_presets_match_librosa_within_a_hundredth_of_a_db(preset, pad_mode):
    o = LogMelOptions.preset(preset).replace(pad_mode=pad_mode)
    y = music_like(4.0, o.sample_rate, seed=11)
    ours = compute_logmel(y, o)
    reference = librosa_logmel(y, o)
    assert ours.shape == reference.shape
    assert max_error_db(ours, reference, o) <= 0.01


@pytest.mark.parametrize("name", ["not_centred", "odd_fft_short_window",
                                  "n_fft_400_magnitude_ln"])
def test_other_options_match_librosa(name):
    o = VARIANTS[name]
    y = music_like(3.0, o.sample_rate, seed=2)
    ours, reference = compute_logmel(y, o), librosa_logmel(y, o)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 0.01


def test_real_decoded_mp3_matches_librosa(tmp_path):
    from streamtag.audio.files import load_audio, write_audio

    o = LogMelOptions.preset("musicnn")
    path = tmp_path / "music.mp3"
    write_audio(path, music_like(5.0, 44100, seed=4), 44100)
    y, rate = load_audio(path, o.sample_rate)
    assert rate == o.sample_rate
    ours, reference = compute_logmel(y, o), librosa_logmel(y, o)
    assert ours.shape == reference.shape
    assert max_error_db(ours, reference, o) <= 0.01


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_filterbank_is_librosas(scale, norm):
    for preset in LogMelOptions.preset_names():
        o = LogMelOptions.preset(preset).replace(mel_scale=scale, norm=norm, fmin=20.0)
        ref = librosa.filters.mel(sr=o.sample_rate, n_fft=o.n_fft, n_mels=o.n_mels, fmin=o.fmin,
                                  fmax=o.fmax, htk=scale == "htk", norm=norm)
        np.testing.assert_allclose(mel_filterbank(o), ref, rtol=1e-6, atol=1e-9)


def test_empty_mel_filters_are_refused_unless_allowed():
    # Won et al.'s short-chunk models: 128 HTK mels at 16 kHz with n_fft 512 leave filter 0
    # between two FFT bins; torchaudio and librosa keep it as zeros.
    o = LogMelOptions(sample_rate=16000, n_fft=512, n_mels=128, mel_scale="htk", norm=None)
    with pytest.raises(ValueError, match=r"mel filter 0 of n_mels=128 covers no FFT bin .*"
                                         r"set allow_empty_filters"):
        compute_logmel(np.zeros(1600, np.float32), o)
    allowed = o.replace(allow_empty_filters=True)
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=128, htk=True, norm=None)
    bank = mel_filterbank(allowed)
    assert not bank[0].any() and bank[1:].any(axis=1).all()
    np.testing.assert_allclose(bank, ref, rtol=1e-6, atol=1e-9)
    y = music_like(1.0, 16000, seed=4)
    frames = compute_logmel(y, allowed)
    # The floor, 10·log10(amin), in every frame: the band is always silent.
    assert len(np.unique(frames[:, 0])) == 1
    assert frames[0, 0] == pytest.approx(10 * np.log10(allowed.amin), abs=1e-4)
    assert LogMelOptions.from_dict(allowed.to_dict()) == allowed


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 12, 15, 30, 97, 100, 128, 250, 256, 400,
                               486, 512, 1000, 1024, 2018, 2048, 4096, 1 << 15])
def test_own_fft_matches_numpy(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ours = _core.rfft(x)
    ref = np.fft.rfft(x.astype(np.float64))
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 3e-6 * np.sqrt(n) * np.log2(n + 1)


def test_python_options_are_the_cpp_struct_field_for_field():
    """One table (the dataclass) drives the Python side; it must name, order and default every
    field as the C++ struct, its binding and its ToString do."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(LogMelOptions)]
    core = _core.LogMelOptions()
    bound = [k for k, v in vars(type(core)).items() if isinstance(v, property)]
    assert bound == names
    assert [pair.split("=")[0] for pair in str(core).split()] == names
    assert LogMelOptions._from_core(core) == LogMelOptions()  # the same defaults
    # Every option survives the trip to C++ and back, each set to a non-default value.
    changed = LogMelOptions(sample_rate=22050.0, n_fft=1024, win_length=800, hop_length=300,
                            window="hann_symmetric", center=False, pad_mode="reflect",
                            n_mels=40, fmin=30.0, fmax=8000.0, mel_scale="htk", norm=None,
                            power=1.0, log="log1p", amin=1e-5, db_multiplier=20.0,
                            log1p_gain=100.0, allow_empty_filters=True)
    assert all(getattr(changed, n) != getattr(LogMelOptions(), n) for n in names)
    assert LogMelOptions._from_core(changed._core_options()) == changed
    assert set(NULLABLE_OPTIONS) == {f.name for f in dataclasses.fields(LogMelOptions)
                                     if "None" in f.type}


def test_options_round_trip_json_equality_and_pickle():
    for name in LogMelOptions.preset_names():
        o = LogMelOptions.preset(name)
        again = LogMelOptions.from_dict(json.loads(json.dumps(o.to_dict())))
        assert again == o and hash(again) == hash(o)
        assert pickle.loads(pickle.dumps(o)) == o
    assert LogMelOptions.preset("musicnn") != LogMelOptions.preset("mtg_jamendo")


def test_presets_carry_the_published_recipes():
    mtg = LogMelOptions.preset("mtg_jamendo")
    assert (mtg.sample_rate, mtg.n_fft, mtg.hop_length, mtg.n_mels, mtg.fmax) == (
        12000, 512, 256, 96, 6000)
    assert (mtg.window, mtg.db_multiplier, mtg.amin, mtg.pad_mode) == (
        "hann_symmetric", 20.0, 1e-10, "constant")
    musicnn = LogMelOptions.preset("musicnn")
    assert (musicnn.sample_rate, musicnn.log, musicnn.log1p_gain, musicnn.pad_mode) == (
        16000, "log1p", 10000.0, "reflect")
    assert LogMelOptions.preset("librosa").n_fft == 2048
    assert LogMelOptions.preset("cp_jku").n_mels == 256


@pytest.mark.parametrize("changes, option", [
    ({"fmax": 9000.0}, "fmax"),
    ({"win_length": 1024}, "win_length"),
    ({"hop_length": 0}, "hop_length"),
    ({"hop_length": -5}, "hop_length"),
    ({"n_mels": 0}, "n_mels"),
    ({"window": "hamming"}, "window"),
    ({"pad_mode": "edge"}, "pad_mode"),
    ({"power": 3.0}, "power"),
    ({"log": "log2"}, "log"),
    ({"mel_scale": "bark"}, "mel_scale"),
    ({"sample_rate": 0.0}, "sample_rate"),
])
def test_bad_options_name_the_option(changes, option):
    with pytest.raises(ValueError, match=option):
        LogMelOptions(**changes)


def test_too_many_mels_for_the_fft_is_an_error_naming_n_mels():
    with pytest.raises(ValueError, match="n_mels"):
        OnlineLogMel(LogMelOptions(n_fft=256, n_mels=128))


def test_unknown_preset_and_unknown_key():
    with pytest.raises(ValueError, match="known presets"):
        LogMelOptions.preset("nope")
    with pytest.raises(ValueError, match="sr"):
        LogMelOptions.from_dict({"sr": 16000})


def test_audio_after_input_finished_and_2d_input_are_errors():
    fe = OnlineLogMel(LogMelOptions())
    fe.accept_waveform(np.zeros(1000, np.float32))
    with pytest.raises(ValueError, match="1-D"):
        fe.accept_waveform(np.zeros((2, 100), np.float32))
    fe.input_finished()
    with pytest.raises(RuntimeError, match="reset"):
        fe.accept_waveform(np.zeros(10, np.float32))
    fe.reset()
    fe.accept_waveform(np.zeros(10, np.float32))
    assert fe.samples_accepted == 10


def test_non_finite_samples_become_zero_and_are_counted():
    o = LogMelOptions()
    y = music_like(1.0, o.sample_rate, seed=8)
    dirty = y.copy()
    dirty[100:110] = np.nan
    dirty[5000] = np.inf
    dirty[5001] = -np.inf
    clean = y.copy()
    clean[100:110] = 0
    clean[5000:5002] = 0
    fe = OnlineLogMel(o)
    fe.accept_waveform(dirty)
    fe.input_finished()
    frames = fe.pop()
    assert fe.nonfinite_samples == 12
    assert np.isfinite(frames).all()
    assert np.array_equal(frames, compute_logmel(clean, o))


@pytest.mark.parametrize("amin", [1e-10, 1e-45])  # 1e-45 (subnormal) takes the scalar log
@pytest.mark.parametrize("log", ["db", "ln"])
def test_overflowing_power_stays_finite(amin: float, log: str):
    # A sample of 1e25 squares past FLT_MAX; the log of the overflowed power is clamped.
    # (Found by the libFuzzer target: the subnormal-amin path returned inf.)
    o = LogMelOptions(amin=amin, log=log)
    y = music_like(0.5, o.sample_rate, seed=3) * np.float32(1e25)
    frames = compute_logmel(y, o)
    assert np.isfinite(frames).all() and frames.max() > 0


def test_counters_dtype_conversion_and_fresh_arrays():
    o = LogMelOptions()
    fe = OnlineLogMel(o)
    y = music_like(1.0, o.sample_rate)
    fe.accept_waveform(y.astype(np.float64))  # converted
    first = fe.pop()
    assert first.dtype == np.float32 and first.flags.c_contiguous and first.flags.owndata
    assert fe.frames_ready == len(first) and fe.frames_pending == 0
    fe.input_finished()
    rest = fe.pop()
    assert fe.frames_ready == len(first) + len(rest) == fe.num_frames_for(len(y))
    first[:] = 0  # our copy; the extractor's state is untouched
    assert np.array_equal(np.concatenate([compute_logmel(y, o)[: len(first)], rest])[len(first):],
                          rest)
    assert fe.pop().shape == (0, o.n_mels)


def test_pop_with_a_limit_returns_frames_in_order():
    o = LogMelOptions()
    y = music_like(1.0, o.sample_rate)
    fe = OnlineLogMel(o)
    fe.accept_waveform(y)
    fe.input_finished()
    parts = [fe.pop(7), fe.pop(1), fe.pop()]
    assert [len(p) for p in parts[:2]] == [7, 1]
    assert np.array_equal(np.concatenate(parts), compute_logmel(y, o))


def test_frame_ring_windows_by_absolute_index_and_counts_overwrites():
    ring = FrameRing(capacity=10, n_mels=3, first_index=2**40)
    frames = np.arange(36, dtype=np.float32).reshape(12, 3)
    ring.push(frames[:4])
    assert (ring.begin_index, ring.end_index, ring.size) == (2**40, 2**40 + 4, 4)
    np.testing.assert_array_equal(ring.window(2**40 + 4, 2), frames[2:4])
    ring.push(frames[4:])
    assert ring.frames_overwritten == 2 and ring.size == 10
    w = ring.window(2**40 + 12, 10)
    np.testing.assert_array_equal(w, frames[2:])
    np.testing.assert_array_equal(ring.window(2**40 + 12, 10, transpose=True), frames[2:].T)
    w[:] = -1  # a fresh array, not a view of the ring
    np.testing.assert_array_equal(ring.window(2**40 + 12, 10), frames[2:])
    with pytest.raises(IndexError, match="holds"):
        ring.window(2**40 + 11, 10)  # frame 2**40 + 1 was overwritten
    with pytest.raises(IndexError):
        ring.window(2**40 + 13, 1)  # not pushed yet
    with pytest.raises(ValueError, match="n_mels"):
        ring.push(np.zeros((1, 4), np.float32))
    ring.push(np.zeros((25, 3), np.float32))  # more than the capacity at once
    assert ring.frames_overwritten == 2 + 25 and ring.end_index == 2**40 + 37


def test_accept_waveform_releases_the_gil():
    o = LogMelOptions.preset("librosa")
    y = music_like(60.0, o.sample_rate, seed=9)
    fe = OnlineLogMel(o)
    inside, done = threading.Event(), threading.Event()

    def work() -> None:
        inside.set()
        fe.accept_waveform(y)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    inside.wait()
    # Had the call kept the GIL, this loop could not run until it returned, and the worker
    # (holding the GIL then) would set `done` before this thread ran again.
    spins = 0
    while not done.is_set():
        spins += 1
    worker.join()
    assert spins > 1000
    # Frames reaching into the end padding wait for input_finished().
    assert 0 < fe.frames_ready < fe.num_frames_for(len(y))
    fe.input_finished()
    assert fe.frames_ready == fe.num_frames_for(len(y))


def test_instances_in_threads_agree_with_the_batch_call():
    o = LogMelOptions.preset("musicnn")
    signals = [music_like(10.0, o.sample_rate, seed=s) for s in range(4)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        fe = OnlineLogMel(o)
        for start in range(0, len(signals[i]), 4000):
            fe.accept_waveform(signals[i][start: start + 4000])
        fe.input_finished()
        results[i] = fe.pop()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, y in enumerate(signals):
        assert np.array_equal(results[i], compute_logmel(y, o))
