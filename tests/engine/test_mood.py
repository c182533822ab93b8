"""The mood table and tracker (streamtag.engine.mood) and the protocol's audio and mood objects:
what a venue's screen would show for given scores and levels."""

from __future__ import annotations

import copy
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from support.helpers import WindowsSink

from streamtag.audio.synthetic import SyntheticConfig, generate_clip
from streamtag.catalog.musicnn import find_installed_package, read_labels
from streamtag.engine.batching import Engine
from streamtag.engine.config import EngineConfig, MoodConfig
from streamtag.engine.mood import (
    DWELL_S,
    SILENCE_DBFS,
    MoodTable,
    MoodTracker,
    energy_of,
)
from streamtag.engine.speech import SpeechPlan
from streamtag.errors import ConfigError, ProtocolError
from streamtag.model.inference import InferenceModel
from streamtag.model.stored import open_model
from streamtag.wire.protocol import (
    AudioLevel,
    Mood,
    ScoresBody,
    ScoresEncoder,
    decode,
    encode,
    make_message,
)

TABLE = MoodTable.load()
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_PATH = ROOT / "models" / "default" / "model.pt"
DEFAULT_MODEL = open_model(DEFAULT_MODEL_PATH)


def musicnn_labels(name: str) -> tuple[str, ...]:
    """The tags of an installable real-music model, from the musicnn package (CI installs it)."""
    package = find_installed_package()
    if package is None:
        pytest.skip("needs the musicnn package's tag lists: pip install --no-deps musicnn==0.1.0")
    return read_labels(package, name)


def scores_for(tags, thresholds, strong: dict[str, float]) -> np.ndarray:
    """Scores at a tenth of every threshold, with the named tags at the given multiples."""
    th = np.asarray(thresholds, dtype=np.float64)
    s = th * 0.1
    for tag, multiple in strong.items():
        s[list(tags).index(tag)] = th[list(tags).index(tag)] * multiple
    return s


def test_every_rating_is_a_point_on_the_scale_and_every_mapped_word_is_rated():
    assert TABLE.points["happy"] == pytest.approx(((8.47 - 5) / 4, (6.05 - 5) / 4), abs=1e-4)
    assert TABLE.points["calm"][1] < -0.8  # the calmest rated word
    assert all(word in TABLE.points for word in TABLE.tags.values())
    assert len(TABLE.display) >= 10
    shown = {w for w, _ in TABLE.display}
    assert {"calm", "melancholic", "energetic", "party"} <= shown


@pytest.mark.parametrize("name,expected", [
    ("musicnn-msd", {"happy", "sad", "Mellow", "chill", "chillout", "party", "sexy",
                     "beautiful", "catchy", "easy listening", "dance", "ambient"}),
    ("musicnn-mtt", {"slow", "fast", "loud", "quiet", "soft", "ambient", "dance"}),
])
def test_the_installed_real_music_models_mood_tags_are_their_feeling_words(name, expected):
    plan = TABLE.plan(list(musicnn_labels(name)), None)
    assert set(plan.mood_tags) == expected
    # genres are named for the line under the mood; decades and voices are neither
    assert "rock" in plan.genre_tags or "techno" in plan.genre_tags
    assert not {"00s", "male vocalists", "female", "guitar"} & set(plan.genre_tags)


def test_the_shipped_models_tags_carry_tempo_loudness_and_mode():
    plan = TABLE.plan(list(DEFAULT_MODEL.tags), DEFAULT_MODEL.thresholds)
    assert {"fast", "slow", "loud", "soft", "major", "minor", "bright", "dark"} <= \
        set(plan.mood_tags)


def test_a_table_fault_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="tags.sunny names 'sunny', which has no rating"):
        MoodTable.load('[norms]\ncalm = [6.89, 1.67]\n[tags]\nsunny = "sunny"\n'
                       '[display]\ncalm = "calm"\n')
    with pytest.raises(ConfigError, match=r"norms.calm must be \[valence, arousal\]"):
        MoodTable.load('[norms]\ncalm = [6.89]\n[display]\ncalm = "calm"\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['calm'\] in \[genres\]"):
        MoodTable.load('[norms]\ncalm = [6.89, 1.67]\n[genres]\ncalm = "calm"\n'
                       '[display]\ncalm = "calm"\n')
    with pytest.raises(ConfigError, match="names no words"):
        MoodTable.load('[norms]\ncalm = [6.89, 1.67]\n')


def test_energy_follows_level_and_onsets():
    assert energy_of(-120.0, 0.0) == 0.0
    assert energy_of(0.0, 20.0) == 1.0
    quiet_still, loud_busy = energy_of(-30.0, 0.5), energy_of(-12.0, 4.0)
    assert 0 < quiet_still < 0.3 < 0.7 < loud_busy < 1
    assert energy_of(-15.0, 1.0) < energy_of(-15.0, 3.0)  # busier is more energetic


def msd_plan():
    tags = list(musicnn_labels("musicnn-msd"))
    thresholds = np.full(len(tags), 0.1)
    return tags, thresholds, TABLE.plan(tags, thresholds)


@pytest.mark.parametrize("strong,energy,expect_any", [
    ({"sad": 3.0}, 0.2, {"sad", "melancholic", "gloomy"}),
    ({"happy": 3.0, "party": 3.0, "dance": 2.0}, 0.9, {"happy", "party", "energetic", "lively"}),
    ({"chillout": 3.0, "ambient": 3.0, "Mellow": 2.0}, 0.15, {"calm", "mellow", "chill"}),
])
def test_mood_words_follow_what_the_tags_say(strong, energy, expect_any):
    tags, th, plan = msd_plan()
    tracker = MoodTracker(plan)
    mood = tracker.update(3.0, scores_for(tags, th, strong), rms_dbfs=-18.0, energy=energy)
    assert mood["words"] and mood["words"][0] in expect_any, mood
    assert 1 <= len(mood["words"]) <= 2
    assert -1 <= mood["valence"] <= 1 and -1 <= mood["arousal"] <= 1


def test_without_mood_tags_energy_alone_decides_arousal():
    tags, th, plan = msd_plan()
    nothing = scores_for(tags, th, {"rock": 3.0})
    calm = MoodTracker(plan).update(3.0, nothing, -30.0, 0.05)
    busy = MoodTracker(plan).update(3.0, nothing, -10.0, 0.95)
    assert calm["arousal"] < -0.5 < 0.2 < busy["arousal"]
    assert calm["words"] != busy["words"]
    assert plan.genres(nothing) == ("rock",)


def test_sad_music_has_lower_valence_than_happy_music():
    tags, th, plan = msd_plan()
    sad = MoodTracker(plan).update(3.0, scores_for(tags, th, {"sad": 3.0}), -18.0, 0.4)
    happy = MoodTracker(plan).update(3.0, scores_for(tags, th, {"happy": 3.0}), -18.0, 0.4)
    assert sad["valence"] < 0 < happy["valence"]


# ------------------------------------------------------------------ the tracker over time
#
# Windows as the daemon produces them for musicnn (3 s long, one a second): each window's
# energy is the mean of its three seconds, so a change of music ramps over three windows, and a
# piece's energy wanders from window to window as real recordings' do (0.06-0.14 standard
# deviation on the singularity-music tracks), correlated over the overlapping windows.

FEELING_TAGS = ["happy", "sad", "Mellow", "chill", "party", "dance", "ambient",
                "rock", "jazz", "electronic", "metal"]
LIVELY = {"lively", "energetic", "party", "happy", "upbeat", "tense"}
CALM = {"calm", "mellow", "warm", "chill"}


def feeling_plan():
    """A model with Last.fm-like mood and genre tags, every threshold 0.1 (no package needed)."""
    th = np.full(len(FEELING_TAGS), 0.1)
    return th, TABLE.plan(FEELING_TAGS, th)


def seconds_of(seconds, energy, strong=None, noise=0.0, rms_dbfs=-18.0, seed=0):
    """Per-second (energy, scores, rms) of a piece: `energy` (with window-to-window noise of
    about `noise` standard deviation), tags at a tenth of their thresholds but the `strong`."""
    th, _ = feeling_plan()
    scores = scores_for(FEELING_TAGS, th, strong or {})
    rng = np.random.default_rng(seed)
    wander = rng.normal(0.0, noise * math.sqrt(3), seconds + 2)
    wander = np.convolve(wander, np.ones(3) / 3, mode="valid")  # overlapping windows
    return [(float(np.clip(energy + wander[i], 0, 1)), scores, rms_dbfs)
            for i in range(seconds)]


def play(tracker, *pieces, start_s=0.0, content=None):
    """Feeds pieces (lists of per-second audio as `seconds_of` makes) one window a second, each
    window the mean of the last three seconds' energy; returns [(end_s, mood)]."""
    seconds = [s for piece in pieces for s in piece]
    out = []
    for i in range(len(seconds)):
        last = seconds[max(0, i - 2): i + 1]
        energy = float(np.mean([e for e, _, _ in last]))
        loud = max(r for _, _, r in last)
        _, scores, _ = seconds[i]
        end_s = start_s + i + 1.0
        kwargs = {} if content is None else {"content": content}
        out.append((end_s, tracker.update(end_s, scores, loud, energy, **kwargs)))
    return out


def changes(moods):
    """The (end_s, words) at which the words shown changed."""
    return [(t, m["words"]) for (_, b), (t, m) in pairwise(moods) if m["words"] != b["words"]]


def test_a_change_of_music_shows_within_ten_seconds_either_way():
    _, plan = feeling_plan()
    for before, after, wanted in ((0.25, 0.85, LIVELY), (0.85, 0.2, CALM)):
        tracker = MoodTracker(plan)
        moods = play(tracker, seconds_of(90, before, noise=0.08),
                     seconds_of(60, after, noise=0.08, seed=1))
        shown_before = moods[89][1]["words"]
        assert not set(shown_before) & wanted, shown_before
        later = [(t, m["words"]) for t, m in moods[90:] if m["words"][0] in wanted]
        assert later, f"{before} -> {after}: never showed {wanted}: {changes(moods)}"
        at, words = later[0]
        assert at - 90.0 <= 10.0, (before, after, at, words, changes(moods))
        # ... and then stays
        assert all(m["words"][0] in wanted for t, m in moods if t >= at), changes(moods)


@pytest.mark.parametrize("energy", [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9])
def test_steady_music_does_not_flicker(energy):
    """Ten minutes of one piece, its energy wandering as a real recording's does, at every
    level (some put the point at a border between two words): at most one change of the
    words after the first."""
    _, plan = feeling_plan()
    for seed, strong in ((3, {}), (4, {"chill": 2.0}), (5, {"happy": 2.0, "dance": 2.0})):
        moods = play(MoodTracker(plan), seconds_of(600, energy, strong, noise=0.1, seed=seed))
        assert len(changes(moods)) <= 1, (energy, strong, changes(moods))


@pytest.mark.parametrize("strong", [{}, {"Mellow": 3.0, "chill": 3.0}])
def test_loud_dense_music_is_lively_and_quiet_sparse_music_calm_whatever_the_tags(strong):
    """Energy counts: a wall of loud, fast onsets reaches a lively word even where the tags say
    nothing (or, as musicnn-msd says of death metal, "mellow" and "chill"); quiet music with few
    onsets a calm one."""
    _, plan = feeling_plan()
    loud = play(MoodTracker(plan), seconds_of(30, energy_of(-8.0, 5.0), strong, rms_dbfs=-8.0))
    quiet = play(MoodTracker(plan), seconds_of(30, energy_of(-34.0, 0.3), rms_dbfs=-34.0))
    assert all(m["words"][0] in LIVELY for _, m in loud[3:]), loud[-1]
    assert all(m["words"][0] in {"calm", "mellow"} for _, m in quiet[3:]), quiet[-1]
    if not strong:
        assert loud[-1][1]["words"][0] in LIVELY - {"upbeat", "tense"}, loud[-1]
        assert quiet[-1][1]["words"][0] == "calm", quiet[-1]
    assert loud[-1][1]["arousal"] > 0.05 and quiet[-1][1]["arousal"] < -0.6


@pytest.mark.parametrize("strong", [{}, {"Mellow": 2.0, "chill": 2.0}])
def test_the_energies_of_real_music_span_calm_to_lively(strong):
    """Over the energies real recordings have (0.1 quiet and slow to 0.8 loud and busy), with
    tags that say nothing or, as musicnn-msd's do of most music, "mellow" and "chill", the main
    word runs from calm to lively: not only mellow, chill and upbeat."""
    _, plan = feeling_plan()
    main = [play(MoodTracker(plan), seconds_of(10, float(energy), strong))[-1][1]["words"][0]
            for energy in np.linspace(0.1, 0.8, 8)]
    assert main[0] == "calm" and main[-1] == "lively", main
    assert len(set(main)) >= 4, main


def silence(seconds):
    return seconds_of(seconds, 0.0, rms_dbfs=SILENCE_DBFS - 40)


@pytest.mark.parametrize("gap", ["long silence", "short silence", "speech"])
def test_after_a_gap_the_first_words_come_from_the_new_music_only(gap):
    _, plan = feeling_plan()
    tracker = MoodTracker(plan)
    lively = play(tracker, seconds_of(60, 0.85, {"party": 3.0}))
    assert lively[-1][1]["words"][0] in LIVELY
    if gap == "speech":
        # a bulletin at speaking level: the engine's content says what it is
        between = play(tracker, seconds_of(20, 0.5), start_s=60.0, content="speech")
    else:
        between = play(tracker, silence(20 if gap == "long silence" else 2), start_s=60.0)
    assert all(m["genres"] == [] for _, m in between[3:])
    resumed = between[-1][0]
    calm = play(tracker, seconds_of(60, 0.15, {"ambient": 2.0}), start_s=resumed)
    shown = [(t, m["words"]) for t, m in calm]
    new = [(t, w) for t, w in shown if w and w != lively[-1][1]["words"]]
    assert new, shown
    # the first words after the gap are the new music's, within seconds ...
    assert new[0][1][0] in CALM, shown
    assert new[0][0] - resumed <= 5.0, shown
    # ... and the old mood never comes back
    assert not [w for t, w in shown if t >= new[0][0] and set(w) & LIVELY], shown
    if gap != "short silence":
        assert all(m["words"] == [] for _, m in between[-3:]), between[-3:]


def test_the_mood_goes_during_speech_and_comes_from_the_music_after_it():
    """A bulletin between two songs: "no music" after the silence dwell, as for silence."""
    _, plan = feeling_plan()
    tracker = MoodTracker(plan, silence_dwell_s=6.0)
    play(tracker, seconds_of(30, 0.5))
    speech = play(tracker, seconds_of(10, 0.5), start_s=30.0, content="speech")
    assert speech[4][1]["words"] and speech[-1][1]["words"] == []
    assert speech[-1][1]["genres"] == []


def test_silence_shows_no_words_after_its_own_dwell_and_music_returns_at_once():
    tags, th, plan = msd_plan()
    tracker = MoodTracker(plan, silence_dwell_s=6.0)
    music = scores_for(tags, th, {"chillout": 3.0})
    for t in range(1, 11):
        assert tracker.update(float(t), music, -20.0, 0.3)["words"]
    quiet = [tracker.update(float(t), music, SILENCE_DBFS - 30, 0.0) for t in range(11, 21)]
    assert quiet[4]["words"] and not quiet[-1]["words"]  # after 6 s, not before
    assert quiet[-1]["genres"] == []
    back = [tracker.update(float(t), music, -20.0, 0.3) for t in range(21, 26)]
    # the windows that straddle the gap are not judged; the first that is all music is shown
    assert not back[1]["words"] and back[3]["words"] and back[3]["since_s"] == 24.0


WINDOW_S = 3.0  # the windows the engine scores: 3 s long, one a second
SPEECH_SHARE = 0.4  # a window is speech when this share of it is (streamtag.engine.speech)


def voice_from(onset_s: float, end_s: float) -> str:
    """The engine's content of the window ending at ``end_s`` when a voice began at
    ``onset_s`` after music: speech once the voice fills SPEECH_SHARE of it."""
    voiced = min(WINDOW_S, max(0.0, end_s - onset_s))
    return "speech" if voiced >= SPEECH_SHARE * WINDOW_S else "music"


@pytest.mark.parametrize("onset_s", [60.0, 60.3, 60.5, 60.8])
def test_the_words_and_the_genre_line_go_within_3_s_of_a_voice(onset_s):
    """A presenter starts talking over the end of a song: from the first window the engine
    calls speech, no words and no genre are shown, at most 3 s of audio after the voice began
    (the windows' hop and length counted), and none come back while the voice goes on."""
    _, plan = feeling_plan()
    tracker = MoodTracker(plan)
    music = seconds_of(60, 0.6, {"party": 3.0, "rock": 3.0})
    played = play(tracker, music)
    assert played[-1][1]["words"] and played[-1][1]["genres"] == ["rock"]
    after = []
    for k in range(61, 76):
        end_s = float(k)
        energy, scores, rms = music[-1]
        after.append((end_s, voice_from(onset_s, end_s),
                      tracker.update(end_s, scores, rms, energy,
                                     content=voice_from(onset_s, end_s))))
    first = next(t for t, kind, _ in after if kind == "speech")
    assert first - onset_s <= WINDOW_S
    over = [(t, m["words"], m["genres"]) for t, kind, m in after if t >= first]
    assert all(words == [] and genres == [] for _, words, genres in over), over


@pytest.mark.parametrize("kind", ["speech", "noise", "tone", "silence"])
def test_anything_not_music_takes_the_words_off_at_its_first_window(kind):
    """No dwell over what is not music: the first such window shows nothing, where the music's
    own changes wait for theirs (DWELL_S)."""
    _, plan = feeling_plan()
    tracker = MoodTracker(plan)
    play(tracker, seconds_of(30, 0.6, {"party": 3.0}))
    assert tracker.dwell_s == DWELL_S > 0 and tracker.silence_dwell_s == 0.0
    mood = tracker.update(31.0, seconds_of(1, 0.6)[0][1], -18.0, 0.6, content=kind)
    assert mood["words"] == [] and mood["genres"] == []


def test_a_new_title_takes_the_genre_line_off_at_the_next_window_and_keeps_the_words():
    _, plan = feeling_plan()
    tracker = MoodTracker(plan)
    before = play(tracker, seconds_of(40, 0.6, {"party": 3.0, "rock": 3.0}))
    assert before[-1][1]["genres"] == ["rock"]
    tracker.new_track()
    energy, scores, rms = seconds_of(1, 0.6, {"party": 3.0, "rock": 3.0})[0]
    mood = tracker.update(41.0, scores, rms, energy)
    assert mood["genres"] == [] and mood["words"] == before[-1][1]["words"]



@pytest.mark.parametrize("music_s", [30.0, 30.5])
@pytest.mark.parametrize("dead_air", ["digital silence", "a stuck tone"])
def test_the_engine_clears_the_words_within_3_s_of_dead_air(dead_air, music_s):
    """Music, then dead air, through the engine as the daemon runs it (the shipped model's 3-s
    windows a second apart, fed in half seconds, scored as they come): the words go once the
    newest second of a window is dead air, at most 3 s of audio after it began, not once dead
    air fills a window (3-4 s) and a dwell has passed."""
    model = InferenceModel.load(str(DEFAULT_MODEL_PATH), device="cpu")
    rate = int(model.sample_rate)
    music, _, _ = generate_clip(7, SyntheticConfig(sample_rate=rate, clip_seconds=music_s),
                                {"drums": True, "tempo_bpm": 120.0, "level_dbfs": -14.0})
    t = np.arange(12 * rate) / rate
    gone = (np.zeros(len(t)) if dead_air == "digital silence"
            else 0.1 * np.sin(2 * np.pi * 1000.0 * t))
    audio = np.concatenate([music, gone]).astype(np.float32)
    onset_s = len(music) / rate
    sink = WindowsSink()
    engine = Engine(model, sink, EngineConfig(max_batch=1), speech=SpeechPlan(None, "not needed"))
    engine.add_stream("bar")
    for i in range(0, len(audio), rate // 2):
        engine.accept("bar", audio[i: i + rate // 2])
        engine.drain()
    engine.finish_stream("bar")
    engine.drain()
    moods = [(round(r.end_s, 2), r.mood["words"]) for r in sink.results]
    assert [words for t_s, words in moods if t_s <= onset_s][-1], moods
    # what a screen shows 3 s into the dead air: the last window by then, and all after it
    by_then = [k for k, (t_s, _) in enumerate(moods) if t_s <= onset_s + 3.0][-1]
    late = moods[by_then:]
    assert all(words == [] for _, words in late), (onset_s, late)


def genre_scores(tag: str) -> np.ndarray:
    th, _ = feeling_plan()
    return scores_for(FEELING_TAGS, th, {tag: 3.0})


def test_the_genre_line_changes_at_most_once_a_minute_unless_the_track_changes():
    _, plan = feeling_plan()
    tracker = MoodTracker(plan)
    rng = np.random.default_rng(7)
    shown = []
    for t in range(1, 601):  # ten minutes of scores that swap genres every few seconds
        tag = "rock" if (t // int(rng.integers(3, 9))) % 2 else "jazz"
        shown.append((float(t), tuple(tracker.update(float(t), genre_scores(tag), -15.0,
                                                      0.6)["genres"])))
    moved = [t for (_, a), (t, b) in pairwise(shown) if a != b]
    assert shown[-1][1], "no genre shown"
    assert all(b - a >= 60.0 for a, b in pairwise(moved)), moved
    assert len(moved) <= 10, moved
    # A new track: its genre is shown within seconds, without the minute's hold; the same
    # scores without a new track wait for the hold.
    held = copy.deepcopy(tracker)
    tracker.new_track()
    got = [(t, tracker.update(float(t), genre_scores("metal"), -15.0, 0.6)["genres"])
           for t in range(601, 640)]
    first = next(t for t, g in got if g and g[0] == "metal")
    assert first - 601 <= 12.0, got
    # the last track's genres go with it: nothing is shown until the new one's are heard
    assert all(g == [] for t, g in got if t < first), got
    kept = [(t, held.update(float(t), genre_scores("metal"), -15.0, 0.6)["genres"])
            for t in range(601, 700)]
    changed = [t for (_, a), (t, b) in pairwise([(600, list(shown[-1][1])), *kept]) if a != b]
    assert len(changed) <= 1, kept
    assert not changed or not moved or changed[0] - moved[-1] >= 60.0, (moved, kept)
    # After a gap (a new track too): no genre over the gap, the new one soon after it.
    gap = [tracker.update(float(t), genre_scores("metal"), SILENCE_DBFS - 30, 0.0)["genres"]
           for t in range(700, 710)]
    assert gap == [[]] * 10
    got = [(t, tracker.update(float(t), genre_scores("electronic"), -15.0, 0.6)["genres"])
           for t in range(710, 740)]
    assert next(t for t, g in got if g) - 710 <= 15.0 and got[-1][1] == ["electronic"], got


def test_a_model_without_thresholds_and_without_mood_tags_still_gets_words_from_energy():
    plan = TABLE.plan(["piano", "drums"], None)
    assert plan.mood_tags == () and plan.genre_tags == ()
    mood = MoodTracker(plan).update(1.0, np.array([0.9, 0.9]), -12.0, 0.9)
    assert mood["words"] and mood["genres"] == []
    assert MoodTracker(plan).update(1.0, np.array([0.9, 0.9]), None, None)["words"]


def test_mood_config_bounds_name_the_key():
    with pytest.raises(ConfigError, match="mood.dwell_s"):
        MoodConfig(dwell_s=-1)
    assert MoodConfig().dwell_s == DWELL_S


# ------------------------------------------------------------------ protocol 1.2

AUDIO = {"rms_dbfs": -17.42, "peak_dbfs": -1.93, "clipped": 0, "onset_rate_hz": 2.667,
         "energy": 0.693}
MOOD = {"words": ["calm", "warm"], "valence": 0.3, "arousal": -0.5, "since_s": 12.0,
        "genres": ["ambient"]}
BODY = dict(start_s=0.0, end_s=3.0, start_sample=0, end_sample=48000, tags=("ambient", "rock"),
            raw=(0.5, 0.1), smoothed=(0.4, 0.1), active=("ambient",),
            model={"name": "m", "hash": "h"}, latency_ms=2.0)


def test_audio_and_mood_round_trip_and_the_encoder_writes_the_same_bytes():
    body = ScoresBody(**BODY, audio=AUDIO, mood=MOOD)
    frames = encode(make_message(body, session="s", stream="venue", seq=0))
    back = decode(frames).body
    assert back.audio == AudioLevel(**AUDIO) and back.mood == Mood(**{
        **MOOD, "words": tuple(MOOD["words"]), "genres": tuple(MOOD["genres"])})
    encoder = ScoresEncoder(BODY["tags"], BODY["model"])
    same = {k: v for k, v in BODY.items() if k not in ("tags", "model")}
    assert encoder.body_frame(**same, audio=AUDIO, mood=MOOD) == frames[2]
    # without them, the bytes of a 1.1 writer: neither key appears
    plain = encode(make_message(ScoresBody(**BODY), session="s", stream="venue", seq=0))[2]
    assert b'"audio"' not in plain and b'"mood"' not in plain
    assert encoder.body_frame(**same) == plain


@pytest.mark.parametrize("change,error", [
    ({"audio": {**AUDIO, "energy": 1.5}}, "audio energy"),
    ({"audio": {**AUDIO, "rms_dbfs": math.nan}}, "audio rms_dbfs"),
    ({"audio": {**AUDIO, "rms_dbfs": -500.0}}, "audio rms_dbfs"),
    ({"audio": {k: v for k, v in AUDIO.items() if k != "clipped"}}, "'clipped'"),
    ({"audio": [1, 2]}, "scores audio must be a JSON object"),
    ({"mood": {**MOOD, "valence": 2.0}}, "mood valence"),
    ({"mood": {**MOOD, "words": ["a"] * 5}}, "mood words"),
    ({"mood": {**MOOD, "words": [""]}}, "mood words"),
    ({"mood": {**MOOD, "genres": ["x"] * 9}}, "mood genres"),
    ({"mood": {k: v for k, v in MOOD.items() if k != "since_s"}}, "'since_s'"),
])
def test_bad_audio_and_mood_objects_are_refused_with_their_names(change, error):
    with pytest.raises(ProtocolError, match=error):
        ScoresBody(**{**BODY, **change})
    encoder = ScoresEncoder(BODY["tags"], BODY["model"])
    same = {k: v for k, v in BODY.items() if k not in ("tags", "model")}
    with pytest.raises(ProtocolError, match=error):
        encoder.body_frame(**same, **change)


def test_a_mood_without_genres_reads_as_none_and_unknown_fields_are_ignored():
    mood = {k: v for k, v in MOOD.items() if k != "genres"} | {"colour": "teal"}
    body = ScoresBody(**BODY, mood=mood)
    assert body.mood.genres == () and body.to_dict()["mood"]["genres"] == []
