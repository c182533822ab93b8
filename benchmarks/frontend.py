"""Frontend speed: streamtag's log-mel against its peers, side by side in one process run.

Single-threaded, the same music-like signal for everyone, µs per frame and real-time factor for
the mtg_jamendo and librosa configurations; ratios are against ours fed hop-sized chunks. The
machine is shared and noisy, so each peer runs several times and the best run counts.

    python benchmarks/frontend.py [--seconds 180] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from streamtag.audio.testsignals import music_like  # noqa: E402
from streamtag.frontend import LogMelOptions, OnlineLogMel, compute_logmel, mel_filterbank  # noqa: E402


def window_array(o: LogMelOptions) -> np.ndarray:
    import scipy.signal

    return scipy.signal.get_window("hann", o.n_fft, fftbins=o.window == "hann").astype(np.float64)


def log_form(o: LogMelOptions, mel: np.ndarray) -> np.ndarray:
    if o.log == "db":
        return o.db_multiplier * np.log10(np.maximum(o.amin, mel))
    return np.log10(1.0 + o.log1p_gain * mel)


def ours_chunked(o: LogMelOptions, chunks: list[np.ndarray]) -> Callable[[], int]:
    def run() -> int:
        fe = OnlineLogMel(o)
        n = 0
        for c in chunks:
            fe.accept_waveform(c)
            n += len(fe.pop())
        fe.input_finished()
        return n + len(fe.pop())

    return run


def librosa_batch(o: LogMelOptions, y: np.ndarray) -> Callable[[], int]:
    import librosa

    win = window_array(o)

    def run() -> int:
        s = librosa.feature.melspectrogram(
            y=y, sr=o.sample_rate, n_fft=o.n_fft, hop_length=o.hop_length, window=win,
            center=o.center, pad_mode=o.pad_mode, power=o.power, n_mels=o.n_mels, fmin=o.fmin,
            fmax=o.fmax, htk=o.mel_scale == "htk", norm=o.norm,
        )
        return log_form(o, s).shape[1]

    return run


def torch_stft(o: LogMelOptions, y: np.ndarray) -> Callable[[], int]:
    import torch

    torch.set_num_threads(1)
    x = torch.from_numpy(y)
    win = torch.from_numpy(window_array(o).astype(np.float32))
    fb = torch.from_numpy(mel_filterbank(o))

    def run() -> int:
        spec = torch.stft(x, o.n_fft, o.hop_length, window=win, center=o.center,
                          pad_mode=o.pad_mode, return_complex=True)
        mel = fb @ (spec.real**2 + spec.imag**2)
        out = o.db_multiplier * torch.log10(torch.clamp(mel, min=o.amin))
        return out.shape[1]

    return run


def kaldi_online(o: LogMelOptions, chunks: list[np.ndarray]) -> Callable[[], int]:
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    f = opts.frame_opts
    f.samp_freq = o.sample_rate
    f.frame_shift_ms = 1000.0 * o.hop_length / o.sample_rate
    f.frame_length_ms = 1000.0 * o.n_fft / o.sample_rate
    f.dither = 0.0
    f.preemph_coeff = 0.0
    f.remove_dc_offset = False
    f.window_type = "hann"
    f.round_to_power_of_two = True
    f.snip_edges = False
    m = opts.mel_opts
    m.num_bins = o.n_mels
    m.low_freq = o.fmin
    m.high_freq = o.fmax
    m.is_librosa = True
    m.norm = "slaney"
    m.use_slaney_mel_scale = True
    opts.use_log_fbank = True
    opts.use_power = True

    def run() -> int:
        fb = knf.OnlineFbank(opts)
        done = 0
        for c in chunks:
            fb.accept_waveform(o.sample_rate, c)
            ready = fb.num_frames_ready
            for i in range(done, ready):
                fb.get_frame(i)
            fb.pop(ready - done)
            done = ready
        fb.input_finished()
        for i in range(done, fb.num_frames_ready):
            fb.get_frame(i)
        return fb.num_frames_ready

    return run


def numpy_loop(o: LogMelOptions, y: np.ndarray) -> Callable[[], int]:
    win = window_array(o).astype(np.float32)
    fb = mel_filterbank(o)
    pad = o.n_fft // 2
    padded = np.pad(y, pad, mode=o.pad_mode)

    def run() -> int:
        frames = 1 + (len(padded) - o.n_fft) // o.hop_length
        out = np.empty((frames, o.n_mels), np.float32)
        for t in range(frames):
            seg = padded[t * o.hop_length: t * o.hop_length + o.n_fft] * win
            spec = np.fft.rfft(seg)
            out[t] = log_form(o, fb @ (spec.real**2 + spec.imag**2))
        return frames

    return run


def best_time(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    fn()  # warm-up: JIT compilers, caches, allocators
    best, frames = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = fn()
        best = min(best, time.perf_counter() - t0)
    return best, frames


def bench_config(name: str, seconds: float, repeats: int) -> dict:
    o = LogMelOptions.preset(name)
    y = music_like(seconds, o.sample_rate, seed=1)
    hop_chunks = [y[i: i + o.hop_length] for i in range(0, len(y), o.hop_length)]
    sec = int(o.sample_rate)
    second_chunks = [y[i: i + sec] for i in range(0, len(y), sec)]
    peers = {
        "ours, hop-sized chunks": ours_chunked(o, hop_chunks),
        "ours, 1-second chunks": ours_chunked(o, second_chunks),
        "ours, compute_logmel": lambda: len(compute_logmel(y, o)),
        "librosa batch": librosa_batch(o, y),
        "torch.stft mel (1 thread)": torch_stft(o, y),
        "kaldi-native-fbank, hop-sized chunks": kaldi_online(o, hop_chunks),
        "numpy per-frame loop": numpy_loop(o, y),
    }
    rows = {}
    for label, fn in peers.items():
        t, frames = best_time(fn, repeats)
        rows[label] = {"seconds": t, "frames": frames, "us_per_frame": 1e6 * t / frames,
                       "x_realtime": seconds / t}
    base = rows["ours, hop-sized chunks"]["us_per_frame"]
    print(f"\n== {name}: {o.sample_rate:g} Hz, n_fft {o.n_fft}, hop {o.hop_length}, "
          f"{o.n_mels} mels, {seconds:g} s of audio, best of {repeats}")
    print(f"{'':40s} {'us/frame':>9s} {'x realtime':>11s} {'vs ours (hop)':>14s}")
    for label, r in rows.items():
        print(f"{label:40s} {r['us_per_frame']:9.2f} {r['x_realtime']:11.0f} "
              f"{r['us_per_frame'] / base:13.2f}x")
    checks = {
        "hop-sized >= 5x faster than kaldi-native-fbank":
            rows["kaldi-native-fbank, hop-sized chunks"]["us_per_frame"] / base >= 5,
        "hop-sized faster than librosa batch": rows["librosa batch"]["us_per_frame"] > base,
        "compute_logmel at least as fast as torch.stft":
            rows["torch.stft mel (1 thread)"]["us_per_frame"]
            >= rows["ours, compute_logmel"]["us_per_frame"],
    }
    for text, ok in checks.items():
        print(f"  target {'met   ' if ok else 'MISSED'}: {text}")
    return {"config": name, "rows": rows, "targets": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=["mtg_jamendo", "librosa"])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    results = [bench_config(c, args.seconds, args.repeats) for c in args.configs]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
