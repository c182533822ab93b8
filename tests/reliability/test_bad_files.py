"""Odd and broken files in one real daemon: each stream reports the right final status (ended
with the right duration and window count, or failed naming the file), and the good stream
beside them is scored exactly as it would be alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support.helpers import assert_no_gaps, collect, make_config, offline, started

from streamtag.audio.files import write_audio
from streamtag.audio.testsignals import music_like
from streamtag.daemon.config import SourceConfig
from streamtag.frontend import compute_logmel
from streamtag.sources import FileSource
from tests.reliability.faultkit import (
    expected_windows,
    ffmpeg_encode,
    final_statuses,
    load_model,
    of_stream,
)

RATE = 16000  # the tiny model's rate
SECONDS = 2.0
SIGNAL = music_like(SECONDS, RATE, seed=21)
# Eight different channels, so that their mean, channel 0 and their sum all differ.
EIGHT = np.stack([0.5 * music_like(SECONDS, RATE, seed=40 + c) for c in range(8)], axis=1)

# name -> (seconds of audio expected, or None for a file that must fail)
FILES = {
    "good.flac": 4.0,
    "empty.mp3": None,
    "text.mp3": None,
    "truncated.mp3": 2.0,  # the first half of a 4 s mp3
    "header_only.wav": 0.0,
    "s32.wav": SECONDS,
    "f32.wav": SECONDS,
    "f64.wav": SECONDS,
    "u8.wav": SECONDS,
    "s24.flac": SECONDS,
    "eight_channels.wav": SECONDS,
    "one_second.flac": 1.0,
    "tenth_second.wav": 0.1,
    "rate_8k.flac": SECONDS,
    "rate_192k.flac": SECONDS,
}


def make_files(root) -> dict:
    paths = {name: root / name for name in FILES}
    write_audio(paths["good.flac"], music_like(4.0, 44100, seed=22), 44100)
    paths["empty.mp3"].write_bytes(b"")
    paths["text.mp3"].write_text("this is a text file, not an MP3\n" * 200)
    full = root / "four_seconds.mp3"
    write_audio(full, music_like(4.0, 44100, seed=23), 44100)
    data = full.read_bytes()
    paths["truncated.mp3"].write_bytes(data[: len(data) // 2])
    ffmpeg_encode(SIGNAL[:0], RATE, paths["header_only.wav"], "-c:a", "pcm_s16le")
    for name, codec in (("s32.wav", "pcm_s32le"), ("f32.wav", "pcm_f32le"),
                        ("f64.wav", "pcm_f64le"), ("u8.wav", "pcm_u8")):
        ffmpeg_encode(SIGNAL, RATE, paths[name], "-c:a", codec)
    ffmpeg_encode(SIGNAL, RATE, paths["s24.flac"], "-c:a", "flac", "-sample_fmt", "s32",
                  "-bits_per_raw_sample", "24")
    ffmpeg_encode(EIGHT, RATE, paths["eight_channels.wav"], "-c:a", "pcm_f32le")
    ffmpeg_encode(SIGNAL[:RATE], RATE, paths["one_second.flac"], "-c:a", "flac")
    ffmpeg_encode(SIGNAL[: RATE // 10], RATE, paths["tenth_second.wav"], "-c:a", "pcm_s16le")
    ffmpeg_encode(SIGNAL, RATE, paths["rate_8k.flac"], "-ar", "8000", "-c:a", "flac")
    ffmpeg_encode(SIGNAL, RATE, paths["rate_192k.flac"], "-ar", "192000", "-c:a", "flac")
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("bad_files"))


@pytest.fixture(scope="module")
def daemon_run(files, model_path, tmp_path_factory):
    """Every file as one stream of one daemon, all at once; the messages they published."""
    daemon, sub = started(make_config(model_path, tmp_path_factory.mktemp("cfg")))
    ids = {name: name.replace(".", "_") for name in files}
    try:
        for name, path in files.items():
            daemon.add_source(SourceConfig(ids[name], str(path)))
        got = collect(sub, set(ids.values()), timeout_s=90)
    finally:
        daemon.stop()
        sub.close()
    return ids, got


@pytest.mark.parametrize("name", [n for n, s in FILES.items() if s is None])
def test_an_unreadable_file_fails_its_stream_naming_the_file(daemon_run, name):
    ids, got = daemon_run
    final = final_statuses(got)[ids[name]]
    assert final.state == "failed"
    assert name in final.error
    assert not of_stream(got, ids[name], "scores")
    assert [m.body.state for m in of_stream(got, ids[name], "status")] == ["starting", "failed"]


@pytest.mark.parametrize("name", [n for n, s in FILES.items() if s is not None])
def test_an_odd_file_ends_with_its_duration_and_every_window(daemon_run, model_path, name):
    ids, got = daemon_run
    stream = of_stream(got, ids[name])
    final = final_statuses(got)[ids[name]]
    assert final.state == "ended" and final.error is None
    samples = final.counters["samples"]
    tolerance = 0.12 * RATE if name == "truncated.mp3" else 4  # a cut mp3 loses its last frame
    assert abs(samples - FILES[name] * RATE) <= tolerance, samples
    scores = [m for m in stream if m.header.msg_type == "scores"]
    windows = expected_windows(samples, load_model(model_path))
    assert final.counters["windows"] == len(scores) == windows
    assert final.counters["dropped_windows"] == 0 and final.counters["nonfinite"] == 0
    assert_no_gaps(stream)
    if scores:
        assert scores[-1].body.end_sample == samples  # the last window reaches the end
        assert np.isfinite([m.body.raw for m in scores]).all()


def test_the_good_stream_beside_the_broken_ones_is_scored_as_if_alone(daemon_run, files,
                                                                       model_path):
    ids, got = daemon_run
    scores = of_stream(got, ids["good.flac"], "scores")
    expected = offline(model_path, files["good.flac"])
    assert len(scores) == len(expected)
    np.testing.assert_allclose([m.body.raw for m in scores], expected, atol=1e-4)


def decode(path) -> np.ndarray:
    source = FileSource(path)
    source.open(RATE)
    try:
        return np.concatenate([c.samples for c in source.chunks(threading.Event())])
    finally:
        source.close()


@pytest.mark.parametrize("name, tolerance", [
    ("s32.wav", 1e-6), ("f32.wav", 0.0), ("f64.wav", 0.0), ("s24.flac", 1e-6),
    ("u8.wav", 1.0 / 128),
])
def test_every_sample_format_decodes_to_the_same_audio(files, name, tolerance):
    out = decode(files[name])
    assert out.size == SIGNAL.size
    assert np.max(np.abs(out - SIGNAL)) <= tolerance + 1.0 / 32768


def scores_of(model_path, audio: np.ndarray) -> np.ndarray:
    """What the engine scores for mono `audio` at the model's rate: windows of
    compute_logmel(audio), every hop and one more aligned to the last frame."""
    model = load_model(model_path)
    frames = compute_logmel(audio, model.frontend)
    ends = list(range(model.window, len(frames) + 1, model.hop))
    if len(frames) > ends[-1]:
        ends.append(len(frames))
    return model.forward(np.stack([frames[e - model.window: e].T for e in ends]))


def test_the_channels_of_a_multichannel_file_are_averaged_to_mono(daemon_run, files,
                                                                  model_path):
    """FileSource (streamtag.audio.files) averages a file's channels: the stream is decoded, framed
    and scored exactly as the mean of the eight different channels, not as one of them."""
    mean = EIGHT.mean(axis=1, dtype=np.float32)
    out = decode(files["eight_channels.wav"])
    assert out.size == mean.size
    np.testing.assert_allclose(out, mean, atol=1e-6)
    assert np.max(np.abs(out - EIGHT[:, 0])) > 0.1  # channel 0 alone is another signal
    assert np.max(np.abs(out - EIGHT.sum(axis=1))) > 0.1  # and so is the sum
    options = load_model(model_path).frontend
    np.testing.assert_allclose(compute_logmel(out, options), compute_logmel(mean, options),
                               atol=1e-3)
    ids, got = daemon_run
    published = [m.body.raw for m in of_stream(got, ids["eight_channels.wav"], "scores")]
    np.testing.assert_allclose(published, scores_of(model_path, mean), atol=1e-4)
    assert np.max(np.abs(np.subtract(published, scores_of(model_path, EIGHT[:, 0])))) > 1e-3
