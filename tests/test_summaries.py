"""What ``streamtag tag`` says of a whole file, as a user reads it: the headline tags are those
on for most of it (the rule named beside them), dead air and a stuck tone carry none and are
named, and loudness is EBU R128's gated integrated loudness, "below -70 LUFS" where nothing
passes the absolute gate. Files written here, tagged by the shipped default model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamtag.audio.files import write_audio
from streamtag.audio.synthetic import demo_piece
from streamtag.cli import main

RATE = 22050


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("summaries")
    t = np.arange(30 * RATE) / RATE
    noise = np.random.default_rng(0).standard_normal(30 * RATE)
    made = {
        "music": demo_piece(30.0, seed=3, sample_rate=RATE)[0],
        "silence": np.zeros(30 * RATE, np.float32),
        "noise": 10 ** (-60 / 20) * noise,  # -60 dBFS RMS: below the silence threshold
        "tone": 0.1 * np.sin(2 * np.pi * 1000 * t),  # a 1 kHz tone at -23 dBFS RMS
    }
    paths = {}
    for name, audio in made.items():
        paths[name] = root / f"{name}.wav"
        write_audio(paths[name], np.asarray(audio, np.float32), RATE)
    # EBU Tech 3341's first test signal: a stereo sine at -23 dBFS (997 Hz here: not a
    # divisor of the rate, so every phase is sampled) reads -23.0 LUFS integrated
    t48 = np.arange(20 * 48000) / 48000
    sine = (10 ** (-23 / 20) * np.sin(2 * np.pi * 997 * t48)).astype(np.float32)
    paths["sine"] = root / "sine.wav"
    write_audio(paths["sine"], np.stack([sine, sine]), 48000)
    return paths


def tag(capsys, *args) -> str:
    assert main(["tag", *map(str, args)]) == 0
    return capsys.readouterr().out


def tag_json(capsys, *paths) -> list[dict]:
    return [json.loads(line) for line in tag(capsys, "--json", "--loudness", *paths)
            .splitlines()]


def test_headline_tags_are_those_on_in_most_of_the_file(files, capsys):
    (music,) = tag_json(capsys, files["music"])
    track = music["track"]
    share = dict(zip(track["tags"], track["active_share"], strict=True))
    # the tags on in more than half of its windows, the most often on first: the rule named
    assert music["tags_rule"] == "on in more than half of its windows"
    assert music["tags"], music
    assert set(music["tags"]) == {t for t, s in share.items() if s > 0.5}
    assert [music["tag_share"][t] for t in music["tags"]] == sorted(
        music["tag_share"].values(), reverse=True)
    text = tag(capsys, files["music"]).splitlines()[0]
    assert "tags (on in more than half of its windows): " + ", ".join(
        f"{t} {100 * share[t]:.0f}%" for t in music["tags"]) in text, text
    assert "mean above threshold" not in text


def test_dead_air_and_a_stuck_tone_carry_no_tags_and_the_tone_is_named(files, capsys):
    found = tag_json(capsys, files["silence"], files["noise"], files["tone"])
    for f in found:
        assert f["tags"] == [] and f["segments"] == [], f
        # no window of dead air counted a tag for the track, not even before it was confirmed
        assert f["track"]["active"] == [] and max(f["track"]["active_share"]) == 0.0, f
    silence, noise, tone = found
    assert [d["cause"] for d in silence["dead_air"]] == ["silence"]
    assert [d["cause"] for d in tone["dead_air"]] == ["tone"]
    assert tone["dead_air"][0]["start_s"] == 0.0 and tone["dead_air"][0]["end_s"] == 30.0
    text = tag(capsys, files["tone"])
    assert "STUCK TONE (a steady tone, no music)" in text and "SILENCE" not in text


def test_loudness_is_gated_integrated_and_below_the_gate_is_said(files, capsys):
    silence, noise, sine = tag_json(capsys, files["silence"], files["noise"], files["sine"])
    assert silence["loudness_lufs"] is None and silence["loudness_below_gate"] is True
    # -60 dBFS white noise at 22.05 kHz, K-weighted: a few dB above its RMS level, its own
    # number and not one borrowed from louder audio
    assert -60.0 < noise["loudness_lufs"] < -55.0 and noise["loudness_below_gate"] is False
    assert sine["loudness_lufs"] == pytest.approx(-23.0, abs=0.1)
    text = tag(capsys, "--loudness", files["silence"])
    assert "loudness below -70 LUFS" in text, text
    csv_rows = tag(capsys, "--csv", "--loudness", files["silence"]).splitlines()
    assert any(row.endswith(",loudness,,0.000,30.000,,,below -70 LUFS") for row in csv_rows)
