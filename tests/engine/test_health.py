"""Dead air: the silence detector's timing, the tags it turns off, its config, and silence in
the middle of real music through the engine and through a real daemon over ZeroMQ."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from support.helpers import collect, make_config, started, tiny_model_file

from streamtag.audio.files import load_audio, write_audio
from streamtag.daemon.config import SourceConfig, config_from_dict
from streamtag.engine.batching import Engine, EngineSink, WindowResult
from streamtag.engine.config import ContentConfig
from streamtag.engine.health import HealthConfig, SilenceDetector, level_of_samples
from streamtag.engine.smoothing import Smoother, SmoothingConfig, TagEvent
from streamtag.errors import ConfigError
from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from streamtag.model.inference import InferenceModel

RATE = 16000
MUSIC = Path("/usr/share/games/singularity/music/Coherence.ogg")
MUSIC_MISSING = "needs Debian's singularity-music: apt-get install singularity-music"
# The tiny model's windows: 128 frames of 256 samples (2.05 s) every 32 frames (0.51 s).
WINDOW, HOP = 128, 32
HOP_S = HOP * 256 / RATE
# Where a window's span may reach beyond the samples its frames own (n_fft / 2 of padding).
EDGE_S = 0.05
# Every tag's score on this music and on digital silence is about 0.5: at these thresholds
# every tag is on in both, so only the silence detector keeps them off in dead air.
THRESHOLDS = (0.01, 0.01, 0.01, 0.01)


# ---------------------------------------------------------------- the detector alone

def windows(seconds: float, window_s: float = 3.0, hop_s: float = 1.0):
    """(start, end) samples of windows of ``window_s`` every ``hop_s`` over ``seconds``."""
    start = 0.0
    while start + window_s <= seconds + 1e-9:
        yield round(start * RATE), round((start + window_s) * RATE)
        start += hop_s


def run_detector(silent: tuple[float, float], seconds: float, config: HealthConfig,
                 **cut) -> list[tuple[int, int, list]]:
    """Feeds the windows of ``seconds`` of audio, quiet where wholly inside ``silent``."""
    detector = SilenceDetector(config, RATE)
    out = []
    for start, end in windows(seconds, **cut):
        quiet = silent[0] * RATE <= start and end <= silent[1] * RATE
        out.append((start, end, detector.update(start, end, -120.0 if quiet else -20.0)))
    out.append((None, None, detector.close()))
    return out


def test_silence_is_announced_once_it_has_lasted_and_ends_where_sound_returns():
    got = run_detector((20.0, 45.0), 70.0, HealthConfig())
    changes = [(end, e) for _, end, events in got for e in events]
    assert [e.state for _, e in changes] == ["on", "off"]
    (on_at, on), (off_at, off) = changes
    # "on": dated where the silence began, sent with the window 10 s later (3 s windows)
    assert on.time_s == 20.0 and on.sample == 20 * RATE
    assert on_at == 30 * RATE and on.duration_s == 10.0
    # "off": dated where it ended (the last quiet window's end), sent with the next window
    assert off.time_s == 45.0 and off.start_s == 20.0 and off.duration_s == 25.0
    assert off_at == 46 * RATE
    assert on.threshold_dbfs == -50.0


def test_a_pause_shorter_than_silence_s_is_no_silence():
    got = run_detector((20.0, 28.0), 40.0, HealthConfig())
    assert not [e for _, _, events in got for e in events]


def test_silence_until_the_end_ends_with_the_stream():
    got = run_detector((20.0, 40.0), 40.0, HealthConfig(silence_s=5.0))
    closing = got[-1][2]
    assert [e.state for e in closing] == ["off"] and closing[0].time_s == 40.0
    assert closing[0].start_s == 20.0
    # no sound came back: the "off" says the stream ended; one from sound says it did not
    assert closing[0].ended
    ended_by_sound = run_detector((20.0, 30.0), 40.0, HealthConfig(silence_s=5.0))
    offs = [e for _, _, events in ended_by_sound for e in events if e.state == "off"]
    assert len(offs) == 1 and not offs[0].ended


def test_counters_say_silent_seconds_silences_and_clipping():
    detector = SilenceDetector(HealthConfig(silence_s=4.0, clip_samples=5), RATE)
    for start, end in windows(20.0):
        quiet = start >= 5 * RATE
        detector.update(start, end, -80.0 if quiet else -10.0, clipped=0 if quiet else 7)
    counters = detector.counters()
    assert counters["silent"] == 1 and counters["silences"] == 1
    assert counters["silent_s"] == pytest.approx(15.0)  # from 5 s to the last window's 20 s
    assert counters["clipping_windows"] == 5  # the windows starting at 0, 1, 2, 3 and 4 s


def test_an_unmeasured_window_is_never_quiet():
    detector = SilenceDetector(HealthConfig(silence_s=1.0), RATE)
    for start, end in windows(10.0):
        assert detector.update(start, end, None) == []
    assert not detector.silent


def test_level_of_samples_matches_the_frontend_conventions():
    t = np.arange(RATE) / RATE
    rms, peak, clipped = level_of_samples(np.sin(2 * np.pi * 997 * t).astype(np.float32))
    assert rms == pytest.approx(-3.01, abs=0.01) and peak == pytest.approx(0.0, abs=0.01)
    assert level_of_samples(np.zeros(RATE, np.float32)) == (-120.0, -120.0, 0)
    assert level_of_samples(np.full(100, 1.0, np.float32))[2] == 100


@pytest.mark.parametrize("table, key", [
    ({"silence_s": 0}, "health.silence_s"),
    ({"silence_dbfs": 6}, "health.silence_dbfs"),
    ({"clip_samples": 0}, "health.clip_samples"),
    ({"silence_seconds": 10}, "silence_seconds"),
])
def test_bad_health_config_names_the_key(table, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict({"health": table})


def test_health_config_from_toml_table():
    config = config_from_dict({"health": {"silence_dbfs": -60, "silence_s": 5}})
    assert config.health == HealthConfig(silence_dbfs=-60.0, silence_s=5.0)
    assert config_from_dict({}).health == HealthConfig()


# ---------------------------------------------------------------- the smoother in silence

def test_silence_turns_active_tags_off_where_it_began():
    smoother = Smoother(["rock", "calm"], [0.5, 0.5], SmoothingConfig(time_constant_s=0))
    _, events = smoother.update(np.array([0.9, 0.1]), 1.0)
    assert [(e.tag, e.state) for e in events] == [("rock", "on")]
    # quiet windows turn nothing on, however high the scores
    _, events = smoother.update(np.array([0.9, 0.9]), 12.0, quiet=True)
    assert events == [] and smoother.active_tags() == ("rock",)
    events = smoother.silence(start_s=10.0)
    assert events == [TagEvent("rock", "off", 0.9, 10.0)]
    assert smoother.active_tags() == ()
    # sound again: tags turn on as before
    _, events = smoother.update(np.array([0.1, 0.9]), 30.0)
    assert [(e.tag, e.state, e.time_s) for e in events] == [("calm", "on", 30.0)]


def test_a_tag_that_turned_on_after_the_silence_began_turns_off_at_its_own_time():
    smoother = Smoother(["rock"], [0.5], SmoothingConfig(time_constant_s=0, min_on_s=0))
    smoother.update(np.array([0.9]), 11.0)
    assert smoother.silence(start_s=10.0)[0].time_s == 11.0


# ---------------------------------------------------------------- real music with a gap

def music_with_a_gap(before_s: float, gap_s: float, after_s: float) -> np.ndarray:
    """Real recorded music (Debian's singularity-music), ``gap_s`` of digital silence in the
    middle, at RATE."""
    if not MUSIC.exists():
        pytest.skip(MUSIC_MISSING)
    audio, _ = load_audio(MUSIC, RATE)
    first = audio[30 * RATE: round((30 + before_s) * RATE)]
    second = audio[60 * RATE: round((60 + after_s) * RATE)]
    return np.concatenate([first, np.zeros(round(gap_s * RATE), np.float32), second])


@pytest.fixture(scope="module")
def silence_model(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("silence") / "tiny.pt", window=WINDOW,
                           hop=HOP, thresholds=THRESHOLDS)


class Sink(EngineSink):
    def __init__(self) -> None:
        self.results: list[WindowResult] = []
        self.ended: list = []
        self.lock = threading.Lock()

    def on_window(self, result: WindowResult) -> None:
        with self.lock:
            self.results.append(result)

    def on_silence_end(self, stream_id: str, changes: list) -> None:
        self.ended += changes

    def on_stream_end(self, stream_id: str, events: list, end_s: float) -> None:
        pass


def active_spans(events: list[tuple[str, str, float]], end_s: float) -> dict[str, list]:
    """Each tag's (on, off) spans from (tag, state, time) events in publication order."""
    opened: dict[str, float] = {}
    spans: dict[str, list] = {}
    for tag, state, time_s in events:
        if state == "on":
            opened[tag] = time_s
        elif tag in opened:
            spans.setdefault(tag, []).append((opened.pop(tag), time_s))
    for tag, start in opened.items():
        spans.setdefault(tag, []).append((start, end_s))
    return spans


def check_silence_and_tags(silence: list[tuple[str, float]], tag_events, scores,
                           gap: tuple[float, float], end_s: float) -> None:
    """The silence went on and off at the gap's edges (within a hop and the frames' padding),
    no tag is on inside it, and tags are on before and after it."""
    assert [state for state, _ in silence] == ["on", "off"], silence
    (_, start), (_, end) = silence
    assert gap[0] - EDGE_S <= start <= gap[0] + HOP_S + EDGE_S, (start, gap)
    assert gap[1] - HOP_S - EDGE_S <= end <= gap[1] + EDGE_S, (end, gap)
    spans = active_spans(tag_events, end_s)
    for tag, tag_spans in spans.items():
        for on, off in tag_spans:
            assert off <= start + 1e-6 or on >= end - 1e-6, (tag, on, off, start, end)
    assert {t for t, s in spans.items() if any(on < gap[0] for on, _ in s)} == set(spans)
    assert set(spans) and all(any(on >= end for on, _ in s) for s in spans.values())
    # Scores keep flowing: those past the silence's confirmation list no tag, carry the level.
    inside = [(active, rms) for s_start, s_end, active, rms in scores
              if start + 10.0 + HOP_S < s_end <= end]
    assert inside and all(active == [] and rms == -120.0 for active, rms in inside)


def test_silence_in_real_music_through_the_engine(silence_model):
    audio = music_with_a_gap(15.0, 25.0, 15.0)
    model = InferenceModel.load(str(silence_model), device="cpu")
    sink = Sink()
    engine = Engine(model, sink, smoothing=SmoothingConfig(time_constant_s=0, margin=0,
                                                           min_on_s=0, min_off_s=0))
    engine.add_stream("radio")
    for i in range(0, len(audio), 4000):
        engine.accept("radio", audio[i:i + 4000])
    engine.finish_stream("radio")
    engine.drain()
    results = sink.results
    # Without the detector every tag would be on in the gap: the model scores it like music.
    quiet = [r for r in results if r.audio["rms_dbfs"] == -120.0]
    assert quiet and all((r.raw >= np.array(THRESHOLDS)).all() for r in quiet)
    silence = [(e.state, e.time_s) for r in results for e in r.silence]
    tag_events = [(e.tag, e.state, e.time_s) for r in results for e in r.events]
    scores = [(r.start_s, r.end_s, list(r.active), r.audio["rms_dbfs"]) for r in results]
    check_silence_and_tags(silence, tag_events, scores, (15.0, 40.0), results[-1].end_s)
    assert sink.ended == []
    counters = engine.stream_counters("radio")
    assert counters["silences"] == 1 and counters["silent"] == 0
    assert counters["silent_s"] == pytest.approx(25.0, abs=HOP_S + EDGE_S)


def test_silence_at_the_end_of_a_stream_ends_with_it(silence_model):
    audio = music_with_a_gap(10.0, 12.0, 0.0)
    model = InferenceModel.load(str(silence_model), device="cpu")
    sink = Sink()
    engine = Engine(model, sink)
    engine.add_stream("radio")
    engine.accept("radio", audio)
    engine.drain()
    # A late subscriber's snapshot tells the silence under way.
    silence = engine.snapshot()["radio"]["silence"]
    assert silence["start_s"] == pytest.approx(10.0, abs=HOP_S + EDGE_S)
    assert silence["duration_s"] >= 10.0 and silence["threshold_dbfs"] == -50.0
    engine.finish_stream("radio")
    engine.drain()
    assert engine.snapshot()["radio"]["silence"] is None
    assert [e.state for r in sink.results for e in r.silence] == ["on"]
    assert [e.state for e in sink.ended] == ["off"] and sink.ended[0].ended
    assert sink.ended[0].time_s == pytest.approx(22.0, abs=HOP_S + EDGE_S)


def test_health_off_leaves_tags_on_in_dead_air(silence_model):
    audio = music_with_a_gap(5.0, 12.0, 0.0)
    model = InferenceModel.load(str(silence_model), device="cpu")
    sink = Sink()
    engine = Engine(model, sink, health=HealthConfig(enabled=False))
    engine.add_stream("radio")
    engine.accept("radio", audio)
    engine.finish_stream("radio")
    engine.drain()
    assert not [e for r in sink.results for e in r.silence]
    assert sink.results[-1].active  # the old behaviour: the model's tags, silence or not
    assert "silent" not in engine.stream_counters("radio")


# ---------------------------------------------------------------- a real daemon over ZeroMQ

@pytest.mark.parametrize("content", [True, False], ids=["content", "no-content"])
def test_silence_in_a_real_stream_through_the_daemon(silence_model, tmp_path, content):
    """A real recording with 25 s of digital silence in the middle, served by the daemon from
    a FLAC file (44.1 kHz, resampled by the source) and received over ZeroMQ. With content on,
    a window of the music's last moments may be noise to the classifier and end the tags
    before the silence is confirmed: they end where the quiet began either way."""
    audio = music_with_a_gap(20.0, 25.0, 20.0)
    if not MUSIC.exists():
        pytest.skip(MUSIC_MISSING)
    native, _ = load_audio(MUSIC, 44100)
    parts = [native[30 * 44100: 50 * 44100], np.zeros(25 * 44100, np.float32),
             native[60 * 44100: 80 * 44100]]
    path = tmp_path / "gap.flac"
    write_audio(path, np.concatenate(parts), 44100)
    assert len(audio) == 65 * RATE
    daemon, sub = started(make_config(silence_model, tmp_path,
                                      content=ContentConfig(enabled=content)))
    try:
        daemon.add_source(SourceConfig("radio", f"file:{path}"))
        messages = collect(sub, {"radio"})
    finally:
        sub.close()
        daemon.stop()
    by_type: dict[str, list] = {}
    for m in messages:
        by_type.setdefault(m.msg_type, []).append(m.body)
    silence = [(b.state, b.time_s) for b in by_type["silence"]]
    tag_events = [(b.tag, b.state, b.time_s) for b in by_type["event"]]
    scores = [(b.start_s, b.end_s, list(b.active), b.audio.rms_dbfs) for b in by_type["scores"]]
    check_silence_and_tags(silence, tag_events, scores, (20.0, 45.0), scores[-1][1])
    on, off = by_type["silence"]
    assert on.sample == round(on.time_s * RATE) and on.duration_s >= 10.0
    assert off.start_s == on.start_s and not off.ended  # sound came back
    assert math.isclose(off.duration_s, off.time_s - off.start_s, abs_tol=1e-6)
    final = [b for b in by_type["status"] if b.state == "ended"][-1]
    assert final.counters["silences"] == 1 and final.counters["silent"] == 0
    if content:
        return
    # The "on" comes before the tags' "off" events it causes, in the daemon's sending order.
    order = [(m.msg_type, m.body) for m in messages if m.msg_type in ("silence", "event")]
    first_off_in_gap = next(i for i, (kind, b) in enumerate(order)
                            if kind == "event" and b.state == "off"
                            and abs(b.time_s - on.time_s) < 1e-6)
    assert any(kind == "silence" for kind, _ in order[:first_off_in_gap])


class TinyWaveTagger(torch.nn.Module):
    """Samples in: a linear layer over each window's mean absolute value and its mean."""

    def __init__(self, n_tags: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.out = torch.nn.Linear(2, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.stack([x.abs().mean(dim=-1), x.mean(dim=-1)], dim=-1))


def test_a_model_that_reads_samples_gets_silence_detection_too(tmp_path):
    """Such a model has no frontend and publishes no level; the engine measures its windows."""
    tags = ("a", "b")
    path = tmp_path / "wave.pt"
    modelfile.save(TinyWaveTagger(len(tags)), path, {
        "name": "wave", "tags": list(tags), "input_kind": "waveform",
        "frontend": LogMelOptions.preset("musicnn"), "window": RATE, "hop": RATE // 2,
        "thresholds": [0.01, 0.01], "architecture": {"name": "tiny-wave"}})
    audio = music_with_a_gap(10.0, 15.0, 10.0)
    model = InferenceModel.load(str(path), device="cpu")
    sink = Sink()
    engine = Engine(model, sink, smoothing=SmoothingConfig(time_constant_s=0, margin=0,
                                                           min_on_s=0, min_off_s=0))
    engine.add_stream("radio")
    engine.accept("radio", audio)
    engine.finish_stream("radio")
    engine.drain()
    results = sink.results
    assert all(r.audio is None for r in results)
    silence = [(e.state, e.time_s) for r in results for e in r.silence]
    assert [state for state, _ in silence] == ["on", "off"]
    (_, start), (_, end) = silence
    assert 10.0 <= start <= 10.5 and 24.5 <= end <= 25.0  # one hop: 0.5 s
    events = [(e.tag, e.state, e.time_s) for r in results for e in r.events]
    for tag_spans in active_spans(events, results[-1].end_s).values():
        for on, off in tag_spans:
            assert off <= start + 1e-6 or on >= end - 1e-6


def test_listen_prints_a_silence_and_its_end_in_words():
    from streamtag.commands.listen import format_message
    from streamtag.wire.protocol import SilenceBody, make_message
    from streamtag.wire.subscriber import ReceivedMessage

    def line(body: SilenceBody) -> str:
        message = make_message(body, session="s" * 32, stream="radio-1", seq=0)
        return format_message(ReceivedMessage(message.header, message.body))

    on = line(SilenceBody(state="on", time_s=20.0, sample=320000, start_s=20.0,
                          start_sample=320000, duration_s=10.0, threshold_dbfs=-50.0))
    assert ">>> SILENCE  since 20.00 s (below -50 dBFS for 10.0 s)" in on
    off = line(SilenceBody(state="off", time_s=45.0, sample=720000, start_s=20.0,
                           start_sample=320000, duration_s=25.0, threshold_dbfs=-50.0))
    assert ">>> sound again  at 45.00 s after 25.0 s of silence" in off
    # A stream that ended while silent: no sound came back, and listen does not say it did.
    end = line(SilenceBody(state="off", time_s=45.0, sample=720000, start_s=20.0,
                           start_sample=320000, duration_s=25.0, threshold_dbfs=-50.0,
                           ended=True))
    assert ">>> stream ended  silent from 20.00 s to its end at 45.00 s (25.0 s)" in end
    assert "sound again" not in end


def test_a_level_beyond_what_a_float_holds_is_published_finite():
    from streamtag.engine.health import MAX_DBFS, finite_levels

    assert finite_levels(-20.5, -3.0) == (-20.5, -3.0)  # measured levels pass unchanged
    assert finite_levels(math.inf, 700.0) == (700.0, 700.0)  # the RMS is at most the peak
    assert finite_levels(math.nan, math.inf) == (MAX_DBFS, MAX_DBFS)
    assert 770 < MAX_DBFS < 771
