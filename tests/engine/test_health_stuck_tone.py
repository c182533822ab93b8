"""A stuck tone is dead air: a steady tone (no onset, a crest factor of a sine or a square) that
lasts ``[health] silence_s`` is announced as a ``silence`` with cause "tone", turns the tags off
as silence does, is stored and reported, while real music (and noise) never is one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from support.helpers import tiny_model_file

from streamtag.audio.files import load_audio, write_audio
from streamtag.audio.testsignals import music_like
from streamtag.daemon.config import config_from_dict
from streamtag.engine.batching import Engine
from streamtag.engine.health import HealthConfig, SilenceDetector
from streamtag.engine.smoothing import SmoothingConfig
from streamtag.errors import ConfigError, ProtocolError
from streamtag.frontend import LogMelOptions, OnlineLogMel
from streamtag.history import schema
from streamtag.model.inference import InferenceModel
from streamtag.wire.protocol import SilenceBody
from tests.engine.test_health import HOP_S, MUSIC, MUSIC_MISSING, RATE, Sink, active_spans
from tests.scenarios.test_silence_history import record_file

# The two frontends the served models use: the default model's and musicnn's, with their
# windows and hops in frames.
FRONTENDS = {
    "default": (LogMelOptions(sample_rate=RATE, n_fft=2048, hop_length=512, center=True,
                              pad_mode="reflect", n_mels=192, fmax=8000.0, log="log1p"), 93, 31),
    "musicnn": (LogMelOptions.preset("musicnn"), 187, 62),
}
THRESHOLDS = (0.01, 0.01, 0.01, 0.01)  # every tag on wherever the detector lets it
DEFAULTS = HealthConfig()


def sine(seconds: float, hz: float, amplitude: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def dead_air(audio: np.ndarray, frontend: str, config: HealthConfig = DEFAULTS):
    """The detector's events over the windows a frontend measures in ``audio``."""
    options, window, hop = FRONTENDS[frontend]
    extractor = OnlineLogMel(options)
    extractor.keep_levels(len(audio) // options.hop_length + 8)
    extractor.accept_waveform(np.asarray(audio, dtype=np.float32))
    extractor.input_finished()
    extractor.pop()
    detector = SilenceDetector(config, RATE)
    events = []
    for end in range(window, extractor.frames_ready + 1, hop):
        level = extractor.window_level(end, window)
        start = (end - window) * options.hop_length
        events += detector.update(start, end * options.hop_length, level.rms_dbfs,
                                  level.clipped, level.peak_dbfs, level.onsets)
    return events + detector.close(), detector


# ---------------------------------------------------------------- the detector alone

def feed(levels, config: HealthConfig = DEFAULTS):
    """Windows of 3 s every 1 s, each (rms, peak, onsets) from ``levels(start_s)``."""
    detector = SilenceDetector(config, RATE)
    events = []
    for start in range(0, 60):
        events += detector.update(start * RATE, (start + 3) * RATE, *levels(start))
    return events + detector.close(), detector


def tone_from_20_to_45(start: int):
    """-20 dBFS programme with onsets, a sine (crest 3 dB, no onset) from 20 s to 45 s."""
    if 20 <= start and start + 3 <= 45:
        return -20.0, 0, -17.0, 0
    return -20.0, 0, -8.0, 6


def test_a_tone_that_lasts_silence_s_is_dead_air_with_its_cause():
    events, detector = feed(tone_from_20_to_45)
    assert [(e.state, e.cause, e.start_s) for e in events] == [("on", "tone", 20.0),
                                                              ("off", "tone", 20.0)]
    on, off = events
    assert on.duration_s == 10.0 and off.time_s == 45.0
    counters = detector.counters()
    assert (counters["silences"], counters["tones"]) == (1, 1)
    assert counters["silent_s"] == pytest.approx(25.0)


def level_kinds(rms: float, peak: float, onsets: int, config=DEFAULTS) -> list[str]:
    events, _ = feed(lambda s: (rms, 0, peak, onsets), config)
    return [e.cause for e in events if e.state == "on"]


def test_what_counts_as_a_tone():
    assert level_kinds(-20.0, -17.0, 0) == ["tone"]  # a sine
    assert level_kinds(-10.0, -10.0, 9) == ["tone"]  # a square: flat whatever its onsets
    assert level_kinds(-20.0, -15.2, 0) == ["tone"]  # a triangle, 4.77 dB
    assert level_kinds(-20.0, -14.0, 0) == []  # a two-tone (6 dB): inside music's range
    assert level_kinds(-20.0, -17.0, 1) == []  # one onset: not steady
    assert level_kinds(-20.0, -8.0, 0) == []  # music held still: 12 dB crest
    assert level_kinds(-20.0, -17.0, 0, HealthConfig(tone_crest_db=0)) == []  # turned off
    assert level_kinds(-70.0, -67.0, 0) == ["silence"]  # below the threshold: silence wins


def test_onsets_not_counted_make_no_tone():
    detector = SilenceDetector(HealthConfig(silence_s=1.0), RATE)
    for start in range(10):  # a model that reads samples: level, no onsets
        assert detector.update(start * RATE, (start + 3) * RATE, -20.0, 0, -17.0, None) == []


def test_a_tone_that_stops_into_silence_ends_as_a_tone_then_silence_begins():
    def levels(start: int):
        if start < 20:
            return -20.0, 0, -17.0, 0  # tone
        return -90.0, 0, -85.0, 0  # silence
    events, detector = feed(levels)
    assert [(e.state, e.cause) for e in events] == [("on", "tone"), ("off", "tone"),
                                                    ("on", "silence"), ("off", "silence")]
    assert events[1].time_s == 22.0 and events[2].start_s == 20.0
    assert detector.counters()["tones"] == 1 and detector.counters()["silences"] == 2


def test_tone_crest_db_in_the_config():
    assert config_from_dict({"health": {"tone_crest_db": 4.0}}).health.tone_crest_db == 4.0
    with pytest.raises(ConfigError, match="tone_crest_db"):
        config_from_dict({"health": {"tone_crest_db": -1}})


# ---------------------------------------------------------------- measured by the frontend

@pytest.mark.parametrize("frontend", sorted(FRONTENDS))
def test_the_frontend_s_levels_tell_tones_from_music_and_noise(frontend):
    cases = {
        "1 kHz sine at -20 dBFS": (sine(30.0, 1000.0, 0.1), ["tone"]),
        "440 Hz sine at -6 dBFS": (sine(30.0, 440.0, 0.5), ["tone"]),
        "1 kHz square": (np.sign(sine(30.0, 1000.0, 1.0)) * 0.3, ["tone"]),
        "white noise at -20 dBFS": (np.random.default_rng(0).normal(0, 0.1, 30 * RATE), []),
        "music": (music_like(30.0, RATE, seed=3), []),
    }
    for name, (audio, expected) in cases.items():
        events, _ = dead_air(audio, frontend)
        assert [e.cause for e in events if e.state == "on"] == expected, name


@pytest.mark.parametrize("frontend", sorted(FRONTENDS))
def test_a_tone_between_music_is_dead_air_within_a_hop_of_its_edges(frontend):
    music = music_like(20.0, RATE, seed=4)
    audio = np.concatenate([music, sine(25.0, 1000.0, 0.2), music_like(15.0, RATE, seed=5)])
    events, detector = dead_air(audio, frontend)
    options, _, hop = FRONTENDS[frontend]
    hop_s = hop * options.hop_length / RATE
    assert [(e.state, e.cause) for e in events] == [("on", "tone"), ("off", "tone")]
    on, off = events
    assert 20.0 <= on.start_s <= 20.0 + hop_s
    assert 45.0 - hop_s <= off.time_s <= 45.0
    assert detector.counters()["tones"] == 1


REAL = Path("/usr/share/games/singularity/music")
# The loudest (crest 5.7-6.0 dB), the flattest quiet one (5.9 dB at its least) and a calm one.
REAL_TRACKS = ("Enemy Unknown.ogg", "Coherence.ogg", "Advanced Simulacra.ogg")


@pytest.mark.skipif(not all((REAL / n).is_file() for n in REAL_TRACKS), reason=MUSIC_MISSING)
def test_real_music_is_never_a_stuck_tone():
    for name in REAL_TRACKS:
        audio, _ = load_audio(REAL / name, RATE)
        audio = audio[:150 * RATE]  # the first 2.5 minutes
        for frontend in FRONTENDS:
            events, detector = dead_air(audio, frontend)
            assert detector.tones == 0, (name, frontend, events)


# ---------------------------------------------------------------- engine, daemon, recorder

def tone_in_music() -> np.ndarray:
    if not MUSIC.exists():
        pytest.skip(MUSIC_MISSING)
    music, _ = load_audio(MUSIC, RATE)
    return np.concatenate([music[30 * RATE: 45 * RATE], sine(25.0, 1000.0, 0.1),
                           music[60 * RATE: 75 * RATE]])


def test_no_tag_is_on_in_a_stuck_tone(tmp_path):
    model = tiny_model_file(tmp_path / "tiny.pt", window=128, hop=32, thresholds=THRESHOLDS)
    engine = Engine(InferenceModel.load(str(model), device="cpu"), sink := Sink(),
                    smoothing=SmoothingConfig(time_constant_s=0, margin=0, min_on_s=0,
                                              min_off_s=0))
    engine.add_stream("radio")
    audio = tone_in_music()
    for i in range(0, len(audio), 4000):
        engine.accept("radio", audio[i:i + 4000])
    engine.finish_stream("radio")
    engine.drain()
    results = sink.results
    changes = [(e.state, e.cause, e.time_s) for r in results for e in r.silence]
    assert [(state, cause) for state, cause, _ in changes] == [("on", "tone"), ("off", "tone")]
    start, end = changes[0][2], changes[1][2]
    assert 15.0 <= start <= 15.0 + HOP_S + 0.05 and 40.0 - HOP_S - 0.05 <= end <= 40.0 + 0.05
    # The tone is loud: without the detector every tag would stay on through it.
    inside = [r for r in results if start + 10.0 + HOP_S < r.end_s <= end]
    assert inside and all(r.audio["rms_dbfs"] > -30 and list(r.active) == [] for r in inside)
    spans = active_spans([(e.tag, e.state, e.time_s) for r in results for e in r.events],
                         results[-1].end_s)
    for tag, tag_spans in spans.items():
        for on, off in tag_spans:
            assert off <= start + 1e-6 or on >= end - 1e-6, (tag, on, off)
    assert engine.stream_counters("radio")["tones"] == 1


def test_a_file_of_a_steady_tone_is_dead_air_to_its_end(tmp_path):
    # The last window, cut as the input ends, holds the frontend's end padding, where the
    # reflected tone reads as an onset: it raised a false "sound again" just before the end.
    model = tiny_model_file(tmp_path / "tiny.pt", window=128, hop=32)
    for seconds in (30.0, 30.37, 31.9):  # the end at, and between, the model's hops
        engine = Engine(InferenceModel.load(str(model), device="cpu"), sink := Sink())
        engine.add_stream("tone")
        audio = sine(seconds, 440.0, 0.3)
        for i in range(0, len(audio), 4000):
            engine.accept("tone", audio[i:i + 4000])
        engine.finish_stream("tone")
        engine.drain()
        changes = [(e.state, e.cause) for r in sink.results for e in r.silence]
        assert changes == [("on", "tone")], (seconds, changes)
        assert [(e.state, e.cause, e.ended) for e in sink.ended] == [("off", "tone", True)]
        assert sink.ended[0].time_s == pytest.approx(seconds, abs=HOP_S + 0.05)
        # the tail window's onset is the padding's: it is measured and published as it is
        assert sink.results[-1].audio["onset_rate_hz"] > 0


def test_a_tail_window_s_onsets_end_no_tone_but_its_level_still_does():
    detector = SilenceDetector(HealthConfig(silence_s=5.0), RATE)
    events = []
    for start in range(0, 10):
        events += detector.update(start * RATE, (start + 3) * RATE, -20.0, 0, -17.0, 0)
    assert [e.state for e in events] == ["on"]
    # an onset in the tail window: the tone goes on
    assert detector.update(10 * RATE, 13 * RATE, -20.0, 0, -17.0, 2, tail=True) == []
    # music's crest in the tail window is music whatever its onsets
    off = detector.update(11 * RATE, 14 * RATE, -20.0, 0, -8.0, 2, tail=True)
    assert [(e.state, e.ended) for e in off] == [("off", False)]
    # a window that is not the tail: its onset ends the tone as before
    detector = SilenceDetector(HealthConfig(silence_s=5.0), RATE)
    for start in range(0, 10):
        detector.update(start * RATE, (start + 3) * RATE, -20.0, 0, -17.0, 0)
    assert [e.state for e in detector.update(10 * RATE, 13 * RATE, -20.0, 0, -17.0, 2)] \
        == ["off"]


def test_a_stuck_tone_is_published_stored_and_reported(tmp_path, capsys):
    from streamtag.cli import main

    path = tmp_path / "tone.flac"
    write_audio(path, tone_in_music(), RATE)
    engine = record_file(path, tmp_path, THRESHOLDS)
    url = str(engine.url)
    s = schema.silences
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s.c.state, s.c.cause, s.c.start_s).order_by(s.c.seq)).all()
    engine.dispose()
    assert [(r.state, r.cause) for r in rows] == [("on", "tone"), ("off", "tone")]
    capsys.readouterr()
    assert main(["history", "--db", url, "--tz", "UTC"]) == 0
    text = capsys.readouterr().out
    # a tone in the report, not silence
    assert "stuck tone (a steady tone, no music) (1," in text and "silence (" not in text, text


# ---------------------------------------------------------------- the wire and the terminal

def test_the_cause_is_checked_and_defaults_to_silence():
    fields = dict(state="on", time_s=20.0, sample=320000, start_s=20.0, start_sample=320000,
                  duration_s=10.0, threshold_dbfs=-50.0)
    assert SilenceBody(**fields).cause == "silence"
    assert SilenceBody.from_dict(fields).cause == "silence"  # an older 1.2 writer's message
    with pytest.raises(ProtocolError, match="silence cause"):
        SilenceBody(**fields, cause="hum")
    assert SilenceBody.from_dict(fields).ended is None  # an "on", or from before 1.4
    assert "ended" not in SilenceBody(**fields).to_dict()
    assert SilenceBody(**{**fields, "state": "off"}, ended=False).to_dict()["ended"] is False
    with pytest.raises(ProtocolError, match="ended must be true or false"):
        SilenceBody(**{**fields, "state": "off"}, ended="yes")
    with pytest.raises(ProtocolError, match='only in an "off" message'):
        SilenceBody(**fields, ended=True)


def test_listen_says_stuck_tone():
    from streamtag.commands.listen import format_message
    from streamtag.wire.protocol import make_message
    from streamtag.wire.subscriber import ReceivedMessage

    def line(body: SilenceBody) -> str:
        message = make_message(body, session="s" * 32, stream="radio-1", seq=0)
        return format_message(ReceivedMessage(message.header, message.body))

    on = line(SilenceBody(state="on", time_s=20.0, sample=320000, start_s=20.0,
                          start_sample=320000, duration_s=10.0, threshold_dbfs=-50.0,
                          cause="tone"))
    assert ">>> STUCK TONE  since 20.00 s (a steady tone, no onset for 10.0 s)" in on
    off = line(SilenceBody(state="off", time_s=45.0, sample=720000, start_s=20.0,
                           start_sample=320000, duration_s=25.0, threshold_dbfs=-50.0,
                           cause="tone"))
    assert ">>> sound again  at 45.00 s after 25.0 s of a stuck tone" in off
