"""Hostile signals through real pipes into a real daemon: NaN/Inf bursts, minutes of digital
silence, full-scale clipping, values far beyond full scale, DC offset. Scores stay finite,
every window comes out, and NaN/Inf samples are counted and cost nothing but themselves."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import torch
from support.helpers import (
    TAGS,
    TinyTagger,
    assert_no_gaps,
    collect,
    free_port,
    make_config,
    started,
)
from torch import nn

from streamtag.audio.testsignals import music_like
from streamtag.daemon.config import MetricsConfig, SourceConfig
from streamtag.engine.smoothing import SmoothingConfig
from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from tests.reliability.faultkit import (
    PipeWriter,
    expected_windows,
    final_statuses,
    load_model,
    of_stream,
)

RATE = 16000
SILENCE_S = 300.0  # five minutes of digital zeros, as fast as the engine goes


def with_bursts(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """x with NaN/Inf bursts at fixed times; and the same with those samples zeroed."""
    dirty = x.astype(np.float32).copy()
    for at_s, length, value in ((2.0, 100, np.nan), (5.0, 1, np.inf), (9.0, 50, -np.inf),
                                (12.0, 1000, np.nan)):
        start = int(at_s * rate)
        dirty[start: start + length] = value
    dirty[int(12.0 * rate): int(12.0 * rate) + 1000: 3] = np.inf  # mixed NaN and Inf
    return dirty, np.where(np.isfinite(dirty), dirty, np.float32(0))


def signals() -> dict[str, tuple[bytes, dict, int | None]]:
    """stream id -> (pipe bytes, pipe source options, NaN/Inf samples injected or None)."""
    out = {}
    for rate in (16000, 44100):  # at the model's rate, and one that is resampled
        dirty, zeroed = with_bursts(music_like(15.0, rate, seed=31), rate)
        options = {"format": "f32le", "rate": rate}
        out[f"bursts{rate}"] = (dirty.astype("<f4").tobytes(), options,
                                int(np.count_nonzero(~np.isfinite(dirty))))
        out[f"zeroed{rate}"] = (zeroed.astype("<f4").tobytes(), options, 0)
    out["silence"] = (np.zeros(int(SILENCE_S * RATE), "<f4").tobytes(),
                      {"format": "f32le", "rate": RATE}, 0)
    music = music_like(10.0, 44100, seed=32)
    clipped = np.clip(music * 20.0, -1.0, 1.0)  # a square-ish wave at full scale
    clipped[::7] = -1.0  # -32768 included
    pcm = np.clip(np.round(clipped * 32768.0), -32768, 32767).astype("<i2")
    out["clipping"] = (pcm.tobytes(), {"format": "s16le", "rate": 44100, "channels": 1}, 0)
    beyond = (music * 1e4).astype(np.float32)
    beyond[44100: 2 * 44100] = np.float32(1e30)
    beyond[3 * 44100: 4 * 44100: 2] = np.float32(-3e38)
    # Resampling 3e38 overflows float32 to Inf (counted and zeroed by the frontend): the count
    # is not the input's.
    out["beyond_full_scale"] = (beyond.astype("<f4").tobytes(),
                                {"format": "f32le", "rate": 44100}, None)
    stereo = np.stack([0.3 * music + 0.6, np.full_like(music, 1.0)], axis=1)  # DC offsets
    out["dc_offset"] = (stereo.astype("<f4").tobytes(),
                        {"format": "f32le", "rate": 44100, "channels": 2}, 0)
    return out


@pytest.fixture(scope="module")
def run(model_path, tmp_path_factory):
    inputs = signals()
    config = make_config(model_path, tmp_path_factory.mktemp("cfg"),
                         smoothing=SmoothingConfig())  # smoothing with memory, as deployed
    daemon, sub = started(config)
    writers = []
    try:
        for sid, (data, options, _) in inputs.items():
            writers.append(PipeWriter(data))
            daemon.add_source(SourceConfig(sid, "pipe:", {**options,
                                                          "stream": writers[-1].reader}))
        got = collect(sub, set(inputs), timeout_s=120)
    finally:
        daemon.stop()
        sub.close()
        for writer in writers:
            writer.close()
    assert all(w.error is None for w in writers)
    return inputs, got


@pytest.mark.parametrize("sid", ["bursts16000", "zeroed16000", "bursts44100", "zeroed44100",
                                 "silence", "clipping", "beyond_full_scale", "dc_offset"])
def test_every_window_comes_out_finite(run, model_path, sid):
    inputs, got = run
    final = final_statuses(got)[sid]
    assert final.state == "ended", final.error
    data, options, injected = inputs[sid]
    width = 4 if options["format"] == "f32le" else 2
    frames = len(data) // width // options.get("channels", 1)
    seconds = frames / options["rate"]
    samples = final.counters["samples"]
    assert abs(samples - seconds * RATE) <= 2
    stream = of_stream(got, sid)
    scores = [m for m in stream if m.header.msg_type == "scores"]
    assert len(scores) == final.counters["windows"] == expected_windows(samples,
                                                                       load_model(model_path))
    if injected is not None:
        assert final.counters["nonfinite"] == injected
    assert final.counters["dropped_windows"] == final.counters["nonfinite_windows"] == 0
    assert np.isfinite([m.body.raw for m in scores]).all()
    assert np.isfinite([m.body.smoothed for m in scores]).all()
    assert_no_gaps(stream)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_nan_and_inf_bursts_cost_nothing_but_the_bad_samples(run, rate):
    """The bursts are replaced by zeros before anything else sees them: the stream is scored
    exactly like the same audio with zeros there (at a resampled rate too: soxr would otherwise
    smear each NaN over its whole filter)."""
    _, got = run
    dirty = [m.body.raw for m in of_stream(got, f"bursts{rate}", "scores")]
    clean = [m.body.raw for m in of_stream(got, f"zeroed{rate}", "scores")]
    np.testing.assert_allclose(dirty, clean, atol=1e-5)


def test_minutes_of_digital_silence_give_steady_scores(run):
    _, got = run
    raw = np.array([m.body.raw for m in of_stream(got, "silence", "scores")])
    assert len(raw) > SILENCE_S * RATE / 256 / 16 - 2
    assert np.ptp(raw, axis=0).max() < 1e-5  # every window is the same silence
    events = of_stream(got, "silence", "event")
    assert len(events) <= 2 * len(TAGS)  # no flapping: at most on once, off at the end


class NanWhenLoud(nn.Module):
    """A model that misbehaves on loud input: NaN scores for a window whose power mel passes
    LOUD (music reaches about 57; noise at ±8, the most a sample may be, about 3,500)."""

    def __init__(self, n_mels: int, n_tags: int) -> None:
        super().__init__()
        self.inner = TinyTagger(n_mels, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        loud = (x.amax(dim=2).amax(dim=1) > 1000.0).unsqueeze(1)  # LOUD
        return torch.where(loud, torch.full_like(out, float("nan")), out)


LOUD = 1000.0


def loud_burst(x: np.ndarray, start: int, stop: int) -> None:
    """Samples of 1e30 with a noise's signs, in place: what a stream may send; the source
    passes them on as noise at ±8 (SAMPLE_LIMIT), which the model above cannot take."""
    signs = np.where(np.random.default_rng(start).standard_normal(stop - start) > 0, 1, -1)
    x[start:stop] = np.float32(1e30) * signs


def overflowing_model(path) -> str:
    """A valid model whose frontend has no log compression, and which gives NaN where its
    power mel is loud (NanWhenLoud): its scores are not finite there."""
    frontend = LogMelOptions.preset("musicnn").replace(log="none")
    modelfile.save(NanWhenLoud(frontend.n_mels, len(TAGS)), path, {
        "name": "no-log", "tags": list(TAGS), "input_kind": "logmel", "frontend": frontend,
        "window": 32, "hop": 16, "thresholds": [0.5] * len(TAGS),
        "architecture": {"name": "tiny"}})
    return str(path)


def test_non_finite_scores_skip_their_windows_only(tmp_path):
    """A model that gives NaN for some windows (here: loud ones) must not poison
    the stream's smoother: those windows are counted and skipped, every other one is
    published with finite scores."""
    model_path = overflowing_model(tmp_path / "no_log.pt")
    config = make_config(model_path, tmp_path, smoothing=SmoothingConfig())
    x = music_like(12.0, RATE, seed=33)
    loud_burst(x, 4 * RATE, 5 * RATE)
    daemon, sub = started(config)
    writer = PipeWriter(x.astype("<f4").tobytes())
    try:
        daemon.add_source(SourceConfig("hot", "pipe:", {"format": "f32le", "rate": RATE,
                                                        "stream": writer.reader}))
        got = collect(sub, {"hot"}, timeout_s=60)
    finally:
        daemon.stop()
        sub.close()
        writer.close()
    final = final_statuses(got)["hot"]
    assert final.state == "ended"
    skipped = final.counters["nonfinite_windows"]
    scores = of_stream(got, "hot", "scores")
    total = expected_windows(x.size, load_model(model_path))
    assert 0 < skipped < 8  # the windows that overlap the hot second
    assert len(scores) == final.counters["windows"] == total - skipped
    assert np.isfinite([m.body.smoothed for m in scores]).all()
    assert scores[-1].body.end_sample == x.size  # scoring went on to the end
    assert_no_gaps(of_stream(got, "hot"))


def scrape(port: int) -> dict[str, float]:
    """A real Prometheus scrape of the daemon: sample name with labels -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))}


def test_non_finite_samples_and_windows_are_exported_to_prometheus_per_stream(tmp_path):
    """The two non-finite counters of each stream, as the control status has them, read the
    same in a scrape: NaN/Inf samples zeroed, and windows skipped for non-finite scores."""
    model_path = overflowing_model(tmp_path / "no_log.pt")
    port = free_port()
    config = make_config(model_path, tmp_path, metrics=MetricsConfig(port=port))
    hot = music_like(8.0, RATE, seed=34)
    loud_burst(hot, 3 * RATE, 4 * RATE)  # the model gives NaN: windows skipped
    hot[6 * RATE: 6 * RATE + 700] = np.nan
    hot[7 * RATE: 7 * RATE + 11] = -np.inf
    clean = music_like(8.0, RATE, seed=35)
    daemon, sub = started(config)
    writers = {sid: PipeWriter(x.astype("<f4").tobytes()) for sid, x in (("hot", hot),
                                                                         ("clean", clean))}
    try:
        for sid, writer in writers.items():
            daemon.add_source(SourceConfig(sid, "pipe:", {"format": "f32le", "rate": RATE,
                                                          "stream": writer.reader}))
        got = collect(sub, set(writers), timeout_s=60)
        metrics = scrape(port)
    finally:
        daemon.stop()
        sub.close()
        for writer in writers.values():
            writer.close()
    final = final_statuses(got)
    assert final["hot"].counters["nonfinite"] == 711
    assert final["hot"].counters["beyond_limit"] == RATE  # the loud second, at ±8
    assert final["hot"].counters["nonfinite_windows"] > 0
    for sid in writers:
        for metric, counter in (("streamtag_nonfinite_samples_total", "nonfinite"),
                                ("streamtag_nonfinite_windows_total", "nonfinite_windows")):
            assert metrics[f'{metric}{{stream="{sid}"}}'] == final[sid].counters[counter], \
                (metric, sid)
    assert metrics['streamtag_nonfinite_samples_total{stream="clean"}'] == 0.0
    assert "streamtag_dropped_messages_total" not in metrics  # it could only ever read 0
