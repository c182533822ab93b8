"""The mood table and tracker (streamtag.engine.mood) and the protocol's audio and mood objects:
what a venue's screen would show for given scores and levels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streamtag.catalog.musicnn import find_installed_package, read_labels
from streamtag.engine.mood import (
    DWELL_S,
    SILENCE_DBFS,
    MoodConfig,
    MoodTable,
    MoodTracker,
    energy_of,
)
from streamtag.errors import ConfigError, ProtocolError
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
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = open_model(ROOT / "models" / "default" / "model.pt")


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
    assert busy["genres"] == ["rock"]


def test_sad_music_has_lower_valence_than_happy_music():
    tags, th, plan = msd_plan()
    sad = MoodTracker(plan).update(3.0, scores_for(tags, th, {"sad": 3.0}), -18.0, 0.4)
    happy = MoodTracker(plan).update(3.0, scores_for(tags, th, {"happy": 3.0}), -18.0, 0.4)
    assert sad["valence"] < 0 < happy["valence"]


def test_words_hold_for_the_dwell_then_change():
    tags, th, plan = msd_plan()
    tracker = MoodTracker(plan, dwell_s=20.0, time_constant_s=2.0)
    calm = scores_for(tags, th, {"chillout": 3.0, "ambient": 3.0})
    party = scores_for(tags, th, {"happy": 3.0, "party": 3.0, "dance": 3.0})
    t, shown = 0.0, []
    for _ in range(60):
        t += 1.0
        shown.append(tuple(tracker.update(t, calm, -20.0, 0.1)["words"]))
    assert len(set(shown)) == 1  # a steady piece: one set of words, never a flicker
    first_calm = shown[-1]
    changes = []
    for _ in range(60):
        t += 1.0
        mood = tracker.update(t, party, -10.0, 0.9)
        changes.append((t, tuple(mood["words"]), mood["since_s"]))
    switched = [(at, words, since) for at, words, since in changes if words != first_calm]
    assert switched, "the mood never followed the music"
    at, words, since = switched[0]
    assert at - 60.0 >= 20.0  # not before the dwell
    assert at - 60.0 <= 20.0 + 10.0  # and soon after it (the point's average, then the dwell)
    assert since <= at and since >= 60.0
    assert len({w for _, w, _ in changes[changes.index((at, words, since)):]}) == 1


def test_silence_shows_no_words_after_its_own_dwell_and_music_returns_at_once():
    tags, th, plan = msd_plan()
    tracker = MoodTracker(plan, dwell_s=20.0, silence_dwell_s=6.0)
    music = scores_for(tags, th, {"chillout": 3.0})
    for t in range(1, 11):
        assert tracker.update(float(t), music, -20.0, 0.3)["words"]
    quiet = [tracker.update(float(t), music, SILENCE_DBFS - 30, 0.0) for t in range(11, 21)]
    assert quiet[4]["words"] and not quiet[-1]["words"]  # after 6 s, not before
    assert quiet[-1]["genres"] == []
    back = tracker.update(21.0, music, -20.0, 0.3)
    assert back["words"] and back["since_s"] == 21.0


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
