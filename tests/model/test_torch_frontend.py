"""The TorchScript log-mel frontend: the C++ frames, from torch ops, scripted, in batches."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from streamtag.audio.testsignals import music_like
from streamtag.frontend import LogMelOptions, OnlineLogMel, compute_logmel, mel_filterbank
from streamtag.model.torch_frontend import LogMelFrontend, frontend_options, hann_window

# TorchScript is how streamtag ships models; recent torch warns on every jit call.
JIT_DEPRECATION = r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
pytestmark = pytest.mark.filterwarnings(JIT_DEPRECATION)


def scripted(options: LogMelOptions) -> torch.jit.ScriptModule:
    return torch.jit.script(LogMelFrontend(options))


def torch_frames(module: torch.nn.Module, signals: list[np.ndarray]) -> np.ndarray:
    """(batch, frames, n_mels), the layout compute_logmel returns per signal."""
    with torch.no_grad():
        out = module(torch.from_numpy(np.stack(signals)))
    return out.cpu().numpy().transpose(0, 2, 1)


def max_error_db(ours: np.ndarray, reference: np.ndarray, o: LogMelOptions) -> float:
    # log1p values are in bels (log10); 0.01 dB is 0.001 there.
    return float(np.abs(ours - reference).max() * (10.0 if o.log == "log1p" else 1.0))


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("preset", LogMelOptions.preset_names())
def test_scripted_batch_matches_the_cpp_frames_within_a_hundredth_of_a_db(preset, pad_mode):
    o = LogMelOptions.preset(preset).replace(pad_mode=pad_mode)
    signals = [music_like(3.0, o.sample_rate, seed=s) for s in (11, 12)]
    got = torch_frames(scripted(o), signals)
    for i, y in enumerate(signals):
        expected = compute_logmel(y, o)
        assert got[i].shape == expected.shape
        assert max_error_db(got[i], expected, o) <= 0.01


@pytest.mark.parametrize("options", [
    LogMelOptions(center=False, n_fft=512, hop_length=200, n_mels=40),
    LogMelOptions(n_fft=401, win_length=300, hop_length=97, n_mels=32, pad_mode="reflect",
                  mel_scale="htk", norm=None),
    LogMelOptions(n_fft=400, hop_length=160, n_mels=64, power=1.0, log="ln", fmin=50.0,
                  fmax=7600.0),
    LogMelOptions(n_fft=512, win_length=400, window="hann_symmetric", hop_length=160,
                  n_mels=40, db_multiplier=20.0),
], ids=["not_centred", "odd_fft_short_window", "magnitude_ln", "symmetric_short_window"])
def test_other_options_match_the_cpp_frames(options):
    signals = [music_like(2.0, options.sample_rate, seed=s) for s in (3, 4)]
    got = torch_frames(scripted(options), signals)
    for i, y in enumerate(signals):
        expected = compute_logmel(y, options)
        assert got[i].shape == expected.shape
        assert np.abs(got[i] - expected).max() <= 0.01


def test_no_log_gives_the_mel_power_itself():
    o = LogMelOptions(log="none", n_mels=40)
    y = music_like(1.0, o.sample_rate, seed=6)
    got = torch_frames(scripted(o), [y])[0]
    expected = compute_logmel(y, o)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6 * expected.max())


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
@pytest.mark.parametrize("center", [True, False])
def test_frame_counts_are_online_log_mels_down_to_empty_signals(center, pad_mode):
    o = LogMelOptions(n_fft=512, hop_length=160, n_mels=40, center=center, pad_mode=pad_mode)
    module = scripted(o)
    reference = OnlineLogMel(o)
    for length in [0, 1, 2, 3, 100, 255, 256, 257, 511, 512, 513, 700, 2000]:
        y = (np.random.default_rng(length).standard_normal(length) * 0.3).astype(np.float32)
        expected = compute_logmel(y, o)
        assert module.num_frames_for(length) == reference.num_frames_for(length) == len(expected)
        got = torch_frames(module, [y, y])
        assert got.shape == (2, len(expected), o.n_mels)
        if len(expected):
            # Short reflect-padded signals reflect back and forth, as numpy.pad does.
            assert np.abs(got - expected).max() <= 0.01


def test_window_and_filters_are_the_cores_numbers():
    o = LogMelOptions(n_fft=512, win_length=300, hop_length=128, n_mels=40)
    module = LogMelFrontend(o)
    assert torch.equal(module.mel_basis, torch.from_numpy(mel_filterbank(o)))
    window = module.window.numpy()
    assert window.dtype == np.float32 and window.shape == (512,)
    left = (512 - 300) // 2
    assert not window[:left].any() and not window[left + 300:].any()
    n = np.arange(300)
    np.testing.assert_array_equal(window[left: left + 300],
                                  (0.5 - 0.5 * np.cos(2 * np.pi * n / 300)).astype(np.float32))
    symmetric = hann_window(o.replace(window="hann_symmetric", win_length=None))
    np.testing.assert_array_equal(symmetric,
                                  (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 511))
                                  .astype(np.float32))
    assert symmetric[0] == symmetric[-1] == 0.0


def test_options_travel_with_the_module_through_save_and_load():
    o = LogMelOptions.preset("musicnn")
    module = scripted(o)
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert frontend_options(loaded) == frontend_options(module) == LogMelFrontend(o).options == o
    y = music_like(1.0, o.sample_rate, seed=1)
    np.testing.assert_array_equal(torch_frames(loaded, [y]), torch_frames(module, [y]))
    with pytest.raises(TypeError, match="not a LogMelFrontend"):
        frontend_options(torch.nn.Linear(2, 2))


def test_non_finite_samples_count_as_zero_and_float64_is_converted():
    o = LogMelOptions(n_mels=40)
    y = music_like(1.0, o.sample_rate, seed=8)
    dirty = y.astype(np.float64)
    dirty[100:110] = np.nan
    dirty[5000], dirty[5001] = np.inf, -np.inf
    clean = y.copy()
    clean[100:110] = 0
    clean[5000:5002] = 0
    with torch.no_grad():
        got = scripted(o)(torch.from_numpy(dirty)[None])
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert np.abs(got[0].numpy().T - compute_logmel(clean, o)).max() <= 0.01


def test_input_must_be_a_batch_of_signals():
    o = LogMelOptions(n_mels=40)
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        LogMelFrontend(o)(torch.zeros(1000))
    with pytest.raises(torch.jit.Error, match=r"\(batch, samples\)"):  # scripted, the same text
        scripted(o)(torch.zeros(1, 2, 1000))


def test_matches_torchaudio_mel_spectrogram():
    torchaudio = pytest.importorskip(
        "torchaudio", reason="torchaudio is optional and not installable beside this CPU torch")
    o = LogMelOptions.preset("librosa")
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=int(o.sample_rate), n_fft=o.n_fft, hop_length=o.hop_length, f_min=o.fmin,
        f_max=o.fmax, n_mels=o.n_mels, window_fn=torch.hann_window, power=o.power,
        center=o.center, pad_mode=o.pad_mode, norm="slaney", mel_scale="slaney")
    y = torch.from_numpy(np.stack([music_like(2.0, o.sample_rate, seed=s) for s in (1, 2)]))
    with torch.no_grad():
        expected = 10.0 * torch.log10(torch.clamp(reference(y), min=o.amin))
        got = scripted(o)(y)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 0.01


def test_runs_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here (torch.cuda.is_available() is False)")
    o = LogMelOptions.preset("mtg_jamendo")
    module = scripted(o).to("cuda")
    signals = [music_like(3.0, o.sample_rate, seed=s) for s in (1, 2)]
    with torch.no_grad():
        out = module(torch.from_numpy(np.stack(signals)).to("cuda"))
    assert out.device.type == "cuda"
    for i, y in enumerate(signals):
        expected = compute_logmel(y, o)
        assert out[i].shape == (o.n_mels, len(expected))
        assert max_error_db(out[i].cpu().numpy().T, expected, o) <= 0.01
