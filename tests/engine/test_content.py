"""What a window's audio is: the content classifier on speech, music, noise and tones from
Debian packages held out from its fit, and speech in a programme through the engine turning
the music tags off, with the content on every result and in the tracks."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from support.content_material import (
    RATE,
    applause,
    espeak_speech,
    farm_animals,
    festival_speech,
    game_music,
    held_out_song,
    midi_music,
    real_voice,
    require,
    require_ambience,
    sox_signal,
    sports_crowd,
)
from support.helpers import WindowsSink, collect, make_config, started, tiny_model_file
from support.speech_material import gcin_syllables, telephone_prompts, warzone_tutorial
from support.speech_material import require as require_voices

from streamtag.audio.files import write_audio
from streamtag.audio.synthetic import SyntheticConfig, generate_clip
from streamtag.catalog.shipped import default_model_path
from streamtag.daemon.config import SourceConfig
from streamtag.engine.batching import Engine, WindowResult
from streamtag.engine.config import ContentConfig, SmoothingConfig
from streamtag.engine.content import (
    CLASSES,
    CONTENT_KINDS,
    FEATURES,
    PULSE_S,
    SPECTRAL_FEATURES,
    ContentModel,
    ContentTracker,
    content_options,
    window_features,
    window_kind,
)
from streamtag.engine.tracks import TrackSummarizer
from streamtag.errors import ConfigError
from streamtag.frontend import OnlineLogMel
from streamtag.history import blocks
from streamtag.history.report import format_csv, format_json, format_text, load_history
from streamtag.model.inference import InferenceModel
from streamtag.wire import protocol
from tests.scenarios.test_silence_history import record_file

CHUNK = 4000  # samples fed at a time, as a source's blocks come


# The two shipped networks: where it decides speech too (no detector installed), and beside the
# speech detector, where it decides music, noise and tones (the detector's speech aside)
NETWORKS = [pytest.param(False, id="alone"), pytest.param(True, id="beside-detector")]


def window_kinds(audio: np.ndarray, window_s: float = 3.0, hop_s: float = 1.0,
                 beside_detector: bool = False) -> list:
    """The classifier's class of each window of ``audio``, fed in chunks as the engine does,
    each window classified once the chunk holding its end has been fed; ``beside_detector``:
    with the weights served beside the speech detector, the network's speech left out."""
    tracker = ContentTracker(ContentModel.load(beside_detector=beside_detector), RATE,
                             speech=not beside_detector)
    width, hop = round(window_s * RATE), round(hop_s * RATE)
    ends = iter(range(width, len(audio) + 1, hop))
    end = next(ends, None)
    kinds = []
    for i in range(0, len(audio), CHUNK):
        tracker.accept(audio[i:i + CHUNK])
        while end is not None and end <= i + CHUNK:
            kinds.append(tracker.classify(end - width, end))
            end = next(ends, None)
    return kinds


def share(kinds: list, kind: str) -> float:
    return sum(k == kind for k in kinds) / len(kinds)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    require()
    return tmp_path_factory.mktemp("content")


# ---------------------------------------------------------------- the classifier

@pytest.mark.parametrize("make", [
    pytest.param(festival_speech, id="festival"),
    pytest.param(lambda f: espeak_speech(f, "fr"), id="espeak-fr"),
    pytest.param(lambda f: espeak_speech(f, "en-gb-scotland", 600), id="espeak-scottish"),
    pytest.param(lambda f: real_voice(), id="real-voice"),
])
def test_speech_held_out_from_the_fit_is_speech(folder, make):
    kinds = window_kinds(make(folder))
    assert len(kinds) >= 10
    # measured: 100 % of these windows, 88 % of the real voice's (docs/models.md, "Content")
    assert share(kinds, "speech") >= 0.85, collections.Counter(kinds)


@pytest.mark.parametrize("make", [
    pytest.param(lambda f: game_music(0, 40), id="game-0"),
    pytest.param(lambda f: game_music(3, 40), id="game-3"),
    pytest.param(lambda f: game_music(6, 40, start_s=30), id="game-6"),
    pytest.param(lambda f: midi_music(f, 3, 40), id="midi-blues"),
    pytest.param(lambda f: midi_music(f, 4, 40), id="midi-4"),
    pytest.param(lambda f: held_out_song("chaos_god", 40, 30), id="death-metal"),
    pytest.param(lambda f: held_out_song("mutilated_mime", 40, 60), id="metal"),
])
@pytest.mark.parametrize("beside_detector", NETWORKS)
def test_music_held_out_from_the_fit_is_music(folder, make, beside_detector):
    kinds = window_kinds(make(folder), beside_detector=beside_detector)
    # measured: 94-99 % of the held-out music windows per source with either network, the
    # worst of these pieces 84 % (singularity-music's ambient Enemy Unknown: noise in its first
    # windows, before the pulse has 10 s to read, and in two quiet passages; docs/models.md)
    assert share(kinds, "music") >= 0.8, collections.Counter(kinds)


@pytest.mark.parametrize("beside_detector", NETWORKS)
def test_the_shipped_models_own_clips_are_music_from_their_start(beside_detector):
    """What the shipped model knows (the demo, `tag` on a generated clip): each clip heard
    from its first window, as a file or a new stream is. Seeds apart from the fitted ones."""
    kinds = []
    for seed in range(24):
        clip = generate_clip(seed, SyntheticConfig(sample_rate=RATE, clip_seconds=5.0))[0]
        kinds += window_kinds(np.asarray(clip, np.float32), beside_detector=beside_detector)
    assert len(kinds) == 72
    # measured: 97 % alone, 100 % beside the detector (96 % and 93 % before the fit heard such
    # clips); the misses are first windows of one held note, called a tone
    assert share(kinds, "music") >= 0.95, collections.Counter(kinds)


@pytest.mark.parametrize("beside_detector", NETWORKS)
def test_noise_and_tones_are_neither_music_nor_speech(folder, beside_detector):
    def kinds(*args, **kw):
        return window_kinds(sox_signal(folder, *args, **kw), beside_detector=beside_detector)
    alsa_noise = kinds("alsa", "8", "pinknoise", level_dbfs=-20)
    brown = kinds("brown", "8", "brownnoise", level_dbfs=-30)
    sine = kinds("sine", "8", "sine", "250", level_dbfs=-12)
    assert share(alsa_noise, "noise") >= 0.9 and share(brown, "noise") >= 0.9
    assert share(sine, "tone") >= 0.9


@pytest.mark.parametrize(("make", "least"), [
    pytest.param(lambda: warzone_tutorial(RATE), 0.85, id="warzone2100-tutorial"),
    pytest.param(lambda: telephone_prompts(RATE, "ru"), 0.85, id="prompts-ru"),
    pytest.param(lambda: telephone_prompts(RATE, "fr"), 0.85, id="prompts-fr"),
    # isolated syllables at a steady pace are on the network's edge: 35-80 % of their windows
    # over fits of the same material that differ in their seed or a handful of clips, 54 % with
    # the shipped weights; the rest noise (a syllable every second is a pulse), never music
    pytest.param(lambda: gcin_syllables(RATE), 0.4, id="gcin-syllables"),
])
def test_recorded_voices_held_out_from_the_fit_are_speech_to_the_network_alone(make, least):
    """Where no detector is installed the network decides speech: people recorded in four
    languages, packages held out from its fit (it fitted other telephone prompts)."""
    require_voices()
    kinds = window_kinds(make())
    assert len(kinds) >= 10
    # measured: 100 % of the windows of the sentences (docs/models.md, "Content")
    assert share(kinds, "speech") >= least, collections.Counter(kinds)
    assert share(kinds, "music") <= 0.1, collections.Counter(kinds)


@pytest.mark.parametrize("make", [
    pytest.param(sports_crowd, id="sports-crowd"),
    pytest.param(applause, id="applause"),
    pytest.param(farm_animals, id="farm-animals"),
])
@pytest.mark.parametrize("beside_detector", NETWORKS)
def test_recorded_crowds_applause_and_animals_are_noise(make, beside_detector, request):
    """Recorded ambience is noise, with the detector installed (``streamtag models install
    music``) or not: packages held out from both networks' fits."""
    if make is farm_animals and not beside_detector:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "without the detector the network calls 40 % of these farm animals' windows "
            "speech (a cow's or a sheep's call is voiced and moves in pitch, as a syllable "
            "does); of all tuxpaint's animals 15 % (docs/models.md, \"Content\")")))
    require_ambience()
    kinds = window_kinds(make(), beside_detector=beside_detector)
    assert len(kinds) >= 10
    assert share(kinds, "noise") >= 0.8, collections.Counter(kinds)
    assert share(kinds, "music") <= 0.1 and share(kinds, "speech") <= 0.1


def test_too_little_audio_is_no_decision():
    tracker = ContentTracker(ContentModel.load(), RATE)
    tracker.accept(np.zeros(RATE // 4, np.float32))
    assert tracker.classify(0, RATE // 4) is None


def test_level_decides_silence_and_steady_tones_first():
    assert window_kind(-70.0, -60.0, 0, -50.0, 5.0, 1.0) == "silence"
    assert window_kind(-15.0, -12.0, 0, -50.0, 5.0, 1.0) == "tone"  # a sine's 3 dB crest
    assert window_kind(-15.0, -12.0, 3, -50.0, 5.0, 1.0) is None  # onsets: not steady
    assert window_kind(-15.0, -2.0, 0, -50.0, 5.0, 1.0) is None  # music's crest
    assert window_kind(-15.0, -12.0, None, -50.0, 5.0, 1.0) is None  # onsets not counted


def test_the_kinds_are_the_protocols():
    assert CONTENT_KINDS == protocol.CONTENT_KINDS


def test_the_detectors_network_gets_its_features_as_offline_whatever_the_chunks():
    """The tracker of the weights served beside the detector keeps the tonal rows beside the
    frames and the last PULSE_S of frames, fed in the source's chunks, and gives each window
    the features the offline path (content_fit.py) gives it from the whole signal, the pulse
    from what the stream has before it has PULSE_S; the other network's tracker keeps none."""
    rng = np.random.default_rng(3)
    t = np.arange(16 * RATE) / RATE
    audio = (0.2 * np.sin(2 * np.pi * 440 * t) * (t % 0.5 < 0.3)  # a held note, twice a second
             + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    model = ContentModel.load(beside_detector=True)
    assert model.extended and model.features == FEATURES
    assert ContentModel.load().extended and ContentModel.load().features == FEATURES
    ten = ContentModel(CLASSES, SPECTRAL_FEATURES, np.zeros(10), np.ones(10),
                       np.zeros((10, 4)), np.zeros(4), np.zeros((4, 4)), np.zeros(4))
    assert not ten.extended and not ContentTracker(ten, RATE).frontend.tonal_kept
    tracker = ContentTracker(model, RATE, speech=False)
    assert tracker.frontend.tonal_kept and tracker.pulse_span == round(PULSE_S * RATE / 512)
    frontend = OnlineLogMel(content_options(RATE))
    frontend.keep_tonal()
    frontend.accept_waveform(audio)
    frontend.input_finished()
    frames, rows = frontend.pop(), frontend.pop_tonal()
    seen, span, pulse_span = 0, tracker.span, tracker.pulse_span
    for i in range(0, len(audio), 3001):
        tracker.accept(audio[i:i + 3001])
        end = tracker.ring.end_index
        if end >= span:
            ours = tracker._features(end - span, end)
            offline = window_features(frames[end - span: end], tracker.frame_rate,
                                      rows[end - span: end], frames[max(0, end - pulse_span): end])
            np.testing.assert_array_equal(ours, offline)
            seen += 1
    assert seen >= 20 and len(ours) == len(FEATURES)
    assert ours[len(SPECTRAL_FEATURES)] > 0.1  # the held note's stable peaks are there
    assert ours[-1] > 0.4  # and its pulse
    assert tracker.classify(len(audio) - 3 * RATE, len(audio)) == "music"


def test_weights_for_other_features_are_refused_with_the_fix():
    text = ContentModel.load().to_json().replace(f'"{FEATURES[0]}"', '"zero_crossings"')
    with pytest.raises(ConfigError, match="refit it with benchmarks/content_fit.py"):
        ContentModel.load(text)


def test_config_is_checked():
    with pytest.raises(ConfigError, match="content.min_s"):
        ContentConfig(min_s=-1)


# ---------------------------------------------------------------- through the engine


def run_engine(model_path: Path, audio: np.ndarray, content: ContentConfig | None = None
               ) -> list[WindowResult]:
    sink = WindowsSink()
    engine = Engine(InferenceModel.load(str(model_path), device="cpu"), sink,
                    smoothing=SmoothingConfig(time_constant_s=0, margin=0, min_on_s=0,
                                              min_off_s=0), content=content)
    engine.add_stream("radio")
    for i in range(0, len(audio), CHUNK):
        engine.accept("radio", audio[i:i + CHUNK])
    engine.finish_stream("radio")
    engine.drain()
    return sink.results


@pytest.fixture(scope="module")
def programme(folder) -> tuple[np.ndarray, float, float]:
    """Music, then a voice actor reading (held out from both networks' fits), then music: the
    audio and where the speech begins and ends."""
    require_voices()
    first, speech, second = game_music(1, 20), warzone_tutorial(RATE)[:25 * RATE], \
        game_music(4, 20)
    speech = speech / np.abs(speech).max() * 0.5
    audio = np.concatenate([first, speech, second]).astype(np.float32)
    return audio, len(first) / RATE, (len(first) + len(speech)) / RATE


def test_music_tags_are_off_during_speech_and_back_after_it(tmp_path, programme):
    audio, speech_start, speech_end = programme
    # every tag's threshold is low enough that the model alone keeps every tag on throughout
    model = tiny_model_file(tmp_path / "tiny.pt", window=187, hop=62,
                            thresholds=(0.01, 0.01, 0.01, 0.01))
    results = run_engine(model, audio)
    inside = [r for r in results if speech_start + 3.5 <= r.start_s and r.end_s <= speech_end]
    music = [r for r in results if r.end_s <= speech_start or r.start_s >= speech_end]
    assert inside and all(r.content == "speech" and r.active == () for r in inside)
    assert sum(r.content == "music" for r in music) >= 0.9 * len(music)
    # every tag that was on turned off within two seconds of the speech's start
    offs = [e for r in results for e in r.events if e.state == "off"]
    assert offs and {e.tag for e in offs} == set(results[0].tags)
    first_offs = [e.time_s for e in offs if e.time_s < speech_end]
    assert all(speech_start - 0.5 <= t <= speech_start + 2.0 for t in first_offs), first_offs
    # music again: the tags come back
    assert results[-1].active == results[0].tags
    # without content the model keeps every tag on through the speech
    plain = run_engine(model, audio, ContentConfig(enabled=False))
    assert all(r.content is None for r in plain)
    assert all(r.active == r.tags for r in plain
               if speech_start + 3.5 <= r.start_s and r.end_s <= speech_end)


def test_with_the_shipped_default_model_speech_is_speech_and_tagless(programme):
    """Content is the model's own business nowhere: the default model (2.98-s windows every
    0.99 s, its own frontend) gets the same decisions."""
    audio, speech_start, speech_end = programme
    results = run_engine(default_model_path(), audio)
    inside = [r for r in results if speech_start + 3.5 <= r.start_s and r.end_s <= speech_end]
    music = [r for r in results if r.end_s <= speech_start or r.start_s >= speech_end]
    assert inside and all(r.content == "speech" and r.active == () for r in inside)
    # the venue's mood shows no genre over speech (the mood is told the content)
    assert all(r.mood is not None and r.mood["genres"] == [] for r in inside)
    assert sum(r.content == "music" for r in music) >= 0.9 * len(music)


def test_a_track_of_speech_has_no_tags(tmp_path, programme):
    audio, speech_start, speech_end = programme
    model = tiny_model_file(tmp_path / "tiny.pt", window=187, hop=62,
                            thresholds=(0.01, 0.01, 0.01, 0.01))
    results = run_engine(model, audio)
    tracks = TrackSummarizer(RATE, "music")
    tracks.change_title("news", round(speech_start * RATE))
    tracks.change_title("music again", round(speech_end * RATE))
    closed = []
    for r in results:
        closed += tracks.add_window(r.end_sample, r.tags, r.raw, r.smoothed, r.active,
                                    r.model_name, r.model_hash, music=r.content == "music")
    closed += tracks.end(len(audio))
    by_title = {t.title: t for t in closed}
    news = by_title["news"]
    # its few windows that reach back into the music count for no tag
    assert news.windows >= 20 and news.active == ()
    assert all(share <= 0.2 for share in news.active_share)
    assert by_title["music"].active == by_title["music again"].active == results[0].tags


def test_scores_over_zeromq_say_speech_and_list_no_tag_during_it(tmp_path, programme):
    """The programme as a FLAC file source of a real daemon: its scores messages carry the
    content (protocol 1.7), and those inside the speech list no active tag."""
    audio, speech_start, speech_end = programme
    model = tiny_model_file(tmp_path / "tiny.pt", window=187, hop=62,
                            thresholds=(0.01, 0.01, 0.01, 0.01))
    path = tmp_path / "programme.flac"
    write_audio(path, audio, RATE)
    daemon, sub = started(make_config(model, tmp_path))
    try:
        daemon.add_source(SourceConfig("radio", f"file:{path}"))
        messages = collect(sub, {"radio"})
    finally:
        sub.close()
        daemon.stop()
    scores = [m.body for m in messages if m.msg_type == "scores"]
    assert scores and all(b.content in protocol.CONTENT_KINDS for b in scores)
    inside = [b for b in scores if speech_start + 3.5 <= b.start_s and b.end_s <= speech_end]
    assert inside and all(b.content == "speech" and b.active == () for b in inside)
    before = [b for b in scores if b.end_s <= speech_start]
    assert sum(b.content == "music" for b in before) >= 0.9 * len(before)
    assert any(b.active for b in before)


def test_the_history_stores_content_and_reports_the_speech_share(tmp_path, programme):
    """Recorded from a real daemon over ZeroMQ into SQLite (schema revision 0008): each
    window's content is kept, and the report gives the station's music and speech shares."""
    audio, speech_start, speech_end = programme
    path = tmp_path / "programme.flac"
    write_audio(path, audio, RATE)
    engine = record_file(path, tmp_path, (0.01, 0.01, 0.01, 0.01), window=187, hop=62,
                         title="Programme")
    try:
        with engine.connect() as conn:
            sc = blocks.windows(conn).c
            rows = conn.execute(sa.select(sc.start_s, sc.end_s, sc.content, sc.active)).all()
        inside = [r for r in rows if speech_start + 3.5 <= r.start_s and r.end_s <= speech_end]
        assert inside and all(r.content == "speech" and r.active == "[]" for r in inside)
        history = load_history(engine)
        shares = history.airtime["radio"].content_share()
        speech_part = (speech_end - speech_start) / (len(audio) / RATE)
        assert abs(shares["speech"] - speech_part) < 0.1, (shares, speech_part)
        assert abs(shares["music"] - (1 - speech_part)) < 0.1, shares
        assert "content: music " in format_text(history) and "speech" in format_text(history)
        assert json.loads(format_json(history))["streams"]["radio"]["content"] == shares
        # one speech span, as long as the speech (wall clock: the file plays faster than
        # real time, so its length is the windows' sending times, not checked here)
        assert [s.kind for s in history.speech] == ["speech"]
        assert "  speech (1, " in format_text(history)
        assert "speech," in format_csv(history)
    finally:
        engine.dispose()
