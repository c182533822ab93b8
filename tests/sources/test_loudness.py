"""EBU R128 loudness on a stream's way: measured by the sources at the input's own rate and
channels, dated on the stream's clock, read by the engine at each window's end, published in
scores (protocol 1.3), served as a metric and in the status reply. Real files decoded by PyAV,
a real daemon over ZeroMQ and HTTP."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import threading
import tomllib
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from support.helpers import (
    WindowsSink,
    collect,
    free_port,
    make_config,
    run_streamtag,
    started,
    tiny_model_file,
)

from streamtag.audio.files import write_audio
from streamtag.audio.loudness import LoudnessMeter, integrated_lufs, loudness_of_power, mean_lufs
from streamtag.audio.testsignals import music_like
from streamtag.commands.listen import format_message
from streamtag.commands.status import format_status
from streamtag.daemon.config import (
    MetricsConfig,
    SourceConfig,
    config_from_dict,
    with_overrides,
)
from streamtag.engine.batching import Engine
from streamtag.engine.health import HealthConfig
from streamtag.errors import ProtocolError
from streamtag.model.inference import InferenceModel
from streamtag.sources import DeviceSource, FileSource, HttpSource, PipeSource
from streamtag.sources.loudness import StreamLoudness
from streamtag.wire.protocol import AudioLevel
from streamtag.wire.subscriber import ReceivedMessage
from tests.sources.test_sources import Consumer

RATE = 48000
MODEL_RATE = 16000
BLOCK = MODEL_RATE // 10  # a 100 ms block in stream samples


def stereo_music(seconds: float, rate: int = RATE) -> np.ndarray:
    """(channels, frames): music-like audio, a different piece in each channel, its second
    half the first one again 12 dB louder, so that the loudness moves."""
    half = int(round(seconds * rate)) // 2
    first = np.stack([music_like(half / rate, rate, seed=3) * 0.1,
                      music_like(half / rate, rate, seed=4) * 0.06])
    return np.concatenate([first, first * 10 ** (12 / 20)], axis=1).astype(np.float32)


def decoded_planes(path: Path) -> tuple[np.ndarray, int]:
    """The file's samples as PyAV decodes them, (channels, frames) float32, and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        parts = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            if not frame.format.is_planar:
                data = data.reshape(-1, len(frame.layout.channels)).T
            parts.append(data.astype(np.float32))
        return np.concatenate(parts, axis=1), stream.rate


def reference_blocks(path: Path) -> np.ndarray:
    planes, rate = decoded_planes(path)
    meter = LoudnessMeter()
    meter.accept(planes, rate, planar=True, names=("FL", "FR"))
    return meter.pop_blocks()


def source_blocks(path: Path) -> tuple[list[tuple[int, float]], int]:
    """The loudness blocks a file source hands on with its chunks, and its samples."""
    source = FileSource(path)
    source.measure_loudness = True
    source.open(MODEL_RATE)
    blocks, samples = [], 0
    for chunk in source.chunks(threading.Event()):
        blocks += chunk.loudness
        samples += len(chunk.samples)
    return blocks, samples


@pytest.mark.parametrize("codec", ["pcm_f32le", "libmp3lame"])
def test_a_file_source_measures_each_channel_at_its_own_rate(tmp_path, codec):
    # WAV floats reach the meter frame by frame, MP3's planes block by block: the same
    # blocks as the meter gives the whole decoded file, each dated where it ends.
    path = tmp_path / ("music.wav" if codec == "pcm_f32le" else "music.mp3")
    write_audio(path, stereo_music(12.0), RATE, codec)
    expected = reference_blocks(path)
    blocks, samples = source_blocks(path)
    assert [end for end, _ in blocks] == [BLOCK * (k + 1) for k in range(len(expected))]
    np.testing.assert_array_equal([power for _, power in blocks], expected)
    assert len(expected) == 120 and samples == pytest.approx(12.0 * MODEL_RATE, abs=2)
    # the louder half reads 12 LU louder than the same music before
    assert mean_lufs(expected[80:110]) - mean_lufs(expected[20:50]) == pytest.approx(
        12.0, abs=0.05 if codec == "pcm_f32le" else 0.2)


def test_a_pipe_source_measures_its_interleaved_channels():
    # Raw PCM from a pipe reaches the meter as (frames, channels), in blocks of 4096 frames
    # that do not line up with the 100 ms blocks: the same blocks as one call on the whole.
    planes = stereo_music(6.0)
    source = PipeSource(format="f32le", rate=RATE, channels=2,
                        stream=io.BytesIO(np.ascontiguousarray(planes.T).tobytes()))
    source.measure_loudness = True
    source.open(MODEL_RATE)
    blocks = [b for chunk in source.chunks(threading.Event()) for b in chunk.loudness]
    meter = LoudnessMeter()
    meter.accept(planes, RATE, planar=True)
    expected = meter.pop_blocks()
    assert [end for end, _ in blocks] == [BLOCK * (k + 1) for k in range(60)]
    np.testing.assert_array_equal([power for _, power in blocks], expected)


def test_an_http_source_measures_each_connection_afresh(audio_server, media):
    # A station that ends the stream after the file: the source reconnects and the audio
    # starts again. Each connection is measured from a fresh meter (the filters do not run on
    # across the break), dated from where the stream's samples had reached.
    server = audio_server(radio=False)
    source = HttpSource(server.url(), initial_backoff_s=0.05, max_backoff_s=0.1)
    source.measure_loudness = True
    source.open(MODEL_RATE)
    blocks, stop = [], threading.Event()
    for chunk in source.chunks(stop):
        blocks += chunk.loudness
        if server.requests >= 3:  # the second connection has ended
            stop.set()
    expected = reference_blocks(media["mp3_44k_stereo"])
    n = len(expected)
    assert len(blocks) >= 2 * n
    first, second = blocks[:n], blocks[n:2 * n]
    assert [power for _, power in first] == [power for _, power in second] == list(expected)
    step = 4410 / 44100 * MODEL_RATE
    assert [end for end, _ in first] == [round((k + 1) * step) for k in range(n)]
    origin = second[0][0] - round(step)
    assert origin >= first[-1][0]  # the second connection starts after the first's audio
    assert [end for end, _ in second] == [origin + round((k + 1) * step) for k in range(n)]


def test_without_loudness_a_source_measures_nothing(tmp_path):
    path = tmp_path / "music.wav"
    write_audio(path, stereo_music(3.0), RATE, "pcm_f32le")
    source = FileSource(path)
    source.open(MODEL_RATE)
    assert all(chunk.loudness == () for chunk in source.chunks(threading.Event()))


def test_loudness_is_not_the_mono_mix_loudness(tmp_path):
    # Measured before the downmix: two equal channels read 3 LU louder than one of them, as
    # BS.1770 sums channels; the mono mix would read the same as one.
    tone = (0.1 * np.sin(2 * np.pi * 1000 * np.arange(5 * RATE) / RATE)).astype(np.float32)
    path = tmp_path / "tone.wav"
    write_audio(path, np.stack([tone, tone]), RATE, "pcm_f32le")
    blocks, _ = source_blocks(path)
    stereo = mean_lufs([p for _, p in blocks][-30:])
    mono = LoudnessMeter()
    mono.accept(tone, RATE)
    assert stereo - mean_lufs(mono.pop_blocks()[-30:]) == pytest.approx(3.01, abs=0.01)
    # a 1 kHz sine of amplitude -20 dBFS in both channels reads -20 LUFS (EBU Tech 3341)
    assert stereo == pytest.approx(-20.0, abs=0.1)


def test_audio_the_meter_cannot_measure_goes_on_unmeasured():
    # A station's declared rate is untrusted: 4 kHz is below K-weighting's range. Its audio
    # passes on (the stream does not fail), unmeasured and counted; measurable audio after
    # it is measured again.
    stream = StreamLoudness(MODEL_RATE)
    stream.accept(np.zeros((4000, 2), np.float32), 4000, 0)
    assert stream.take() == () and stream.unmeasured_samples == 8000
    assert "sample rate" in stream.why_unmeasured
    tone = np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE).astype(np.float32)
    stream.accept(np.stack([tone, tone], 1), RATE, 16000)
    blocks = stream.take()
    assert [end for end, _ in blocks] == [16000 + BLOCK * (k + 1) for k in range(10)]
    # a source counts it in its status counters: a pipe declaring 4 kHz stereo
    source = PipeSource(format="f32le", rate=4000, channels=2,
                        stream=io.BytesIO(np.zeros((4000, 2), np.float32).tobytes()))
    source.measure_loudness = True
    source.open(MODEL_RATE)
    chunks = list(source.chunks(threading.Event()))
    assert sum(len(c.samples) for c in chunks) == MODEL_RATE  # the audio itself goes on
    assert source.counters["loudness_unmeasured"] == 8000
    assert all(c.loudness == () for c in chunks)


def engine_windows(path: Path, model: InferenceModel, loudness: bool) -> list:
    sink = WindowsSink()
    engine = Engine(model, sink, health=HealthConfig(loudness=loudness))
    engine.add_stream("a")
    source = FileSource(path)
    source.measure_loudness = loudness
    source.open(model.sample_rate)
    for chunk in source.chunks(threading.Event()):  # in pieces, as the daemon hands them on
        end = chunk.sample_index + len(chunk.samples)
        engine.accept("a", chunk.samples,
                      loudness=[(end - at, power) for at, power in chunk.loudness])
    engine.finish_stream("a")
    engine.drain()
    return sink.results


def test_each_window_reads_the_loudness_at_its_end(tmp_path):
    path = tmp_path / "music.mp3"
    write_audio(path, stereo_music(14.0), RATE)
    model = InferenceModel.load(tiny_model_file(tmp_path / "tiny.pt", window=64, hop=16))
    blocks = reference_blocks(path)
    results = engine_windows(path, model, loudness=True)
    checked = 0
    for r in results:
        k = int(np.floor(r.end_sample / BLOCK + 0.5))  # the blocks ending by the window's end
        if k > len(blocks):  # the stream's last window: its last block never completed
            continue
        if k < 4:
            assert "momentary_lufs" not in r.audio
        else:
            assert r.audio["momentary_lufs"] == pytest.approx(mean_lufs(blocks[k - 4:k]),
                                                              abs=0.006)
        if k < 30:  # short-term only once 3 s have been measured
            assert "short_term_lufs" not in r.audio
        else:
            assert r.audio["short_term_lufs"] == pytest.approx(mean_lufs(blocks[k - 30:k]),
                                                               abs=0.006)
            checked += 1
    assert checked >= 20
    # the published values pass the protocol's checks
    AudioLevel.coerce(results[-2].audio)
    # without [health] loudness the windows carry no loudness
    plain = engine_windows(path, model, loudness=False)
    assert all("short_term_lufs" not in r.audio and "momentary_lufs" not in r.audio
               for r in plain)


@pytest.mark.parametrize("value", [-121.0, 801.0, float("nan"), "loud"])
def test_the_protocol_refuses_loudness_out_of_range(value):
    with pytest.raises(ProtocolError, match="scores audio short_term_lufs"):
        AudioLevel(rms_dbfs=-20.0, peak_dbfs=-3.0, clipped=0, onset_rate_hz=1.0, energy=0.5,
                   short_term_lufs=value)


def test_a_daemon_publishes_serves_and_reports_loudness(tmp_path):
    # [health] loudness on a real daemon: every scores message after the first 3 s carries the
    # short-term loudness, the metrics port serves it, the status reply carries it.
    path = tmp_path / "music.mp3"
    write_audio(path, stereo_music(10.0), RATE)
    blocks = reference_blocks(path)
    model = tiny_model_file(tmp_path / "tiny.pt", window=64, hop=16)
    port = free_port()
    config = with_overrides(make_config(model, tmp_path, metrics=MetricsConfig(port=port)),
                            loudness=True)
    daemon, sub = started(config)
    try:
        daemon.add_source(SourceConfig("radio", f"file:{path}", {"realtime": True,
                                                                 "speed": 8.0}))
        messages = collect(sub, {"radio"})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        level = daemon.status()["streams"]["radio"]["level"]
    finally:
        daemon.stop()
        sub.close()
    scores = [m.body for m in messages if m.msg_type == "scores"]
    late = [s for s in scores if s.end_sample >= 30 * BLOCK + BLOCK // 2]
    assert late and all(s.audio.short_term_lufs is not None for s in late)
    for s in late:
        k = int(np.floor(s.end_sample / BLOCK + 0.5))
        if k <= len(blocks):
            assert s.audio.short_term_lufs == pytest.approx(mean_lufs(blocks[k - 30:k]),
                                                            abs=0.006)
    last = late[-1].audio
    assert level["short_term_lufs"] == last.short_term_lufs
    (line,) = [line for line in format_status({"streams": {"radio": {"state": "ended",
                                                                     "level": level}}})
               if line.startswith("radio")]
    assert f"{last.short_term_lufs:.1f} LUFS short-term" in line
    # and `streamtag listen` prints it on each scores line
    (last_message,) = [m for m in messages if m.msg_type == "scores" and m.body is late[-1]]
    assert f"{last.short_term_lufs:.1f} LUFS" in format_message(
        ReceivedMessage(last_message.header, last_message.body))
    assert (f'streamtag_loudness_lufs{{meter="short_term",stream="radio"}} '
            f'{last.short_term_lufs}') in metrics
    assert 'streamtag_loudness_lufs{meter="momentary",stream="radio"}' in metrics


def test_the_loudness_alert_rules_are_valid_and_read_metrics_the_daemon_serves():
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text("utf-8")
    section = text.split("\n## Loudness\n", 1)[1].split("\n## ", 1)[0]
    (rules,) = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section,
                                                               re.S)]
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) == {"StreamtagTooLoud", "StreamtagTooQuiet"}
    served = {"streamtag_loudness_lufs", "streamtag_silent", "streamtag_stream_state"}
    for rule in alerts.values():
        names = set(re.findall(r"\bstreamtag_[a-z_]+", rule["expr"]))
        assert "streamtag_loudness_lufs" in names and names <= served, rule["alert"]
        assert 'meter="short_term"' in rule["expr"] and re.fullmatch(r"\d+[smh]", rule["for"])
    # the section's config block turns loudness on, and nothing else
    config = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert config_from_dict(tomllib.loads(config)).health == HealthConfig(loudness=True)


def test_streamtag_tag_reports_each_file_s_integrated_loudness(tmp_path, capsys):
    # `streamtag tag --loudness`, as a user runs it: each file's integrated loudness (the
    # gated BS.1770 value of its blocks) and its loudest short-term reading, in JSON and text;
    # without the flag, none. (The other forms run in this process: start-up is the slow part.)
    from streamtag.cli import main

    path = tmp_path / "music.mp3"
    write_audio(path, stereo_music(12.0), RATE)
    model = tiny_model_file(tmp_path / "tiny.pt", window=64, hop=16)
    blocks = reference_blocks(path)
    done = run_streamtag("tag", str(path), "--model", str(model), "--loudness", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["loudness_lufs"] == round(integrated_lufs(blocks), 2)
    loudest = max(mean_lufs(blocks[k - 30:k]) for k in range(30, len(blocks) + 1))
    assert found["max_short_term_lufs"] == round(loudest, 2)
    capsys.readouterr()
    assert main(["tag", str(path), "--model", str(model), "--loudness"]) == 0
    text = capsys.readouterr().out
    assert f"loudness {found['loudness_lufs']:.1f} LUFS integrated" in text
    assert main(["tag", str(path), "--model", str(model), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["loudness_lufs"] is None and plain["max_short_term_lufs"] is None


def test_tag_says_what_a_short_or_silent_file_s_loudness_is(tmp_path, capsys):
    # A file under 3 s has no short-term reading (the text was a traceback); one of digital
    # silence has no loudness at all (it said nothing); one shorter than a window gets a note.
    from streamtag.cli import main

    short, silent = tmp_path / "short.wav", tmp_path / "silent.wav"
    write_audio(short, stereo_music(2.0), RATE)
    write_audio(silent, np.zeros((2, 5 * RATE), np.float32), RATE)
    assert main(["tag", "--loudness", str(short), str(silent)]) == 0
    out = capsys.readouterr().out
    (short_line,) = [line for line in out.splitlines() if line.startswith(str(short))]
    assert "LUFS integrated, no short-term reading (under 3 s)" in short_line
    assert "note: shorter than the model's 3.07 s window" in out
    (silent_line,) = [line for line in out.splitlines() if line.startswith(str(silent))]
    assert "loudness below -70 LUFS" in silent_line
    assert "tags (on in more than half of its windows): none;" in silent_line
    assert main(["tag", "--loudness", "--json", str(short), str(silent)]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [f["loudness_measured"] for f in found] == [True, True]
    assert found[0]["max_short_term_lufs"] is None and found[1]["loudness_lufs"] is None
    assert found[1]["loudness_below_gate"] and not found[0]["loudness_below_gate"]
    assert found[0]["note"].startswith("shorter than")
    # its one window ends where the file does: no segment of no length
    assert all(seg["end_s"] > seg["start_s"] for f in found for seg in f["segments"])
    # digital silence: no tag listed, whatever the model says of it
    assert found[1]["note"] == "every window was below -50 dBFS (silence): no tags"
    assert found[1]["tags"] == [] and found[1]["segments"] == []
    # in CSV too, the silent file has its row, saying why it has no tags
    assert main(["tag", "--csv", str(silent)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1] == (f"{silent},note,,0.000,5.000,,,every window was below -50 dBFS "
                       "(silence): no tags"), rows


def test_a_sound_card_s_stereo_input_is_measured_as_it_is_captured(pulse):
    # A stereo 1 kHz sine at -20 dBFS played into PulseAudio's null sink and captured from its
    # monitor, as `run --venue` or a studio feed is: its momentary loudness reads -20 LUFS
    # (EBU Tech 3341's tone), measured on both channels before the downmix (which would read
    # it 3 LU quieter).
    source = DeviceSource("pulse", device_rate=48000, channels=2, blocksize=512)
    source.measure_loudness = True
    consumer = Consumer(source, MODEL_RATE)
    t = np.arange(4 * 48000) / 48000
    tone = (10 ** (-20 / 20) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    played = np.concatenate([np.zeros(4800, np.float32), tone, np.zeros(4800, np.float32)])
    try:
        assert consumer.wait_samples(1, timeout=10.0), consumer.error
        subprocess.run(["pacat", "--playback", "--raw", "--device=testsink",
                        "--format=float32le", "--rate=48000", "--channels=2",
                        "--volume=65536"], input=np.repeat(played, 2).tobytes(),
                       env={**os.environ, **pulse}, timeout=15, check=True)
        before = consumer.samples()
        assert consumer.wait_samples(before + MODEL_RATE // 2, timeout=10.0)
    finally:
        consumer.finish()
    assert consumer.error is None
    powers = np.array([power for chunk in consumer.chunks for _, power in chunk.loudness])
    momentary = np.convolve(powers, np.ones(4) / 4, "valid")
    loud = [loudness_of_power(p) for p in momentary if loudness_of_power(p) > -30]
    # 4 s of tone: about 37 momentary readings wholly inside it, all at -20
    inside = [value for value in loud if abs(value + 20.0) <= 0.1]
    assert len(inside) >= 30, loud


def test_loudness_blocks_waiting_for_a_reader_are_bounded():
    # Nothing holds blocks without end, whatever a station sends and however long nobody
    # reads them: the C++ meter keeps its newest 65,536 unpopped blocks, a source its newest
    # MAX_HELD_BLOCKS untaken ones (counted as dropped), the engine's trail MAX_BLOCKS.
    from streamtag import _core
    from streamtag.engine.loudness import MAX_BLOCKS, LoudnessTrail
    from streamtag.sources.loudness import MAX_HELD_BLOCKS

    def tone(blocks: int, amplitude: float) -> np.ndarray:  # 1 kHz at 8 kHz: 800 a block
        return (amplitude * np.sin(np.pi / 4 * np.arange(800 * blocks))).astype(np.float32)

    meter = _core.LoudnessMeter(8000, [1.0])
    quiet = tone(4096, 0.01)
    for _ in range(16):
        meter.accept_waveform(quiet)
    meter.accept_waveform(tone(10, 0.5))  # the newest 10 blocks 34 dB louder
    assert meter.blocks_completed == 65536 + 10 and meter.blocks_ready == 65536
    powers = meter.pop_blocks()
    assert np.all(powers[-9:] > 1000 * powers[0])  # the oldest were let go, not the newest

    stream = StreamLoudness(MODEL_RATE)
    for amplitude in (0.01, 0.02, 0.04):  # 2,000 blocks each, none taken
        stream.accept(tone(2000, amplitude), 8000, 0)
    held = stream.take()
    assert len(held) == MAX_HELD_BLOCKS and stream.dropped == 6000 - MAX_HELD_BLOCKS
    assert held[-1][0] == 6000 * BLOCK  # the newest kept, dated where they end
    assert held[-1][1] > 10 * held[0][1]

    trail = LoudnessTrail(MODEL_RATE)
    trail.add((BLOCK * (k + 1), 1e-3) for k in range(3 * MAX_BLOCKS))
    assert len(trail._blocks) == MAX_BLOCKS
    momentary, short_term = trail.reading(3 * MAX_BLOCKS * BLOCK)
    assert momentary == pytest.approx(-30.691) and short_term == pytest.approx(-30.691)
