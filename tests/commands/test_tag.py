"""What ``streamtag tag`` says of a whole file, as a user reads it: the headline tags are those
on for most of it (the rule named beside them), dead air and a stuck tone carry none and are
named, and loudness is EBU R128's gated integrated loudness, "below -70 LUFS" where nothing
passes the absolute gate. Files written here, tagged by the shipped default model."""

from __future__ import annotations

import csv
import io
import json
import time

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


# -- the as-run log's per-track loudness ------------------------------------------------------

def test_a_track_s_loudness_is_its_own_audio_s_not_the_track_before_it_s(tmp_path):
    """Three tracks as a daemon with [health] loudness publishes them (each window's
    short-term reading from the blocks of the real audio, through the engine's own trail):
    music, then digital silence, then -60 dBFS noise. Each track's loudness is its own: the
    silence "below -70 LUFS", the noise its level, neither the music's read across the change."""
    import sqlalchemy as sa  # noqa: F401 - the recorder's
    from support.history_station import MODEL, TAGS, Station, record  # noqa: F401

    from streamtag.audio.loudness import integrated_lufs
    from streamtag.engine.loudness import LoudnessTrail
    from streamtag.history.report import format_json, format_text, load_history
    from streamtag.sources.loudness import StreamLoudness
    from streamtag.wire.protocol import AudioLevel, ScoresBody, StatusBody, TrackBody

    rate, seconds = 16000, 20
    parts = [demo_piece(seconds, seed=5, sample_rate=rate)[0],
             np.zeros(seconds * rate),
             10 ** (-60 / 20) * np.random.default_rng(1).standard_normal(seconds * rate)]
    audio = np.concatenate(parts).astype(np.float32)
    measured = StreamLoudness(rate)
    measured.accept(audio, rate, position=0)
    blocks = measured.take()
    trail = LoudnessTrail(rate)
    trail.add(blocks)
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = time.time() - 300
    n = len(TAGS)
    titles = ("Music", "Dead air", "Hiss")

    def script(station):
        station.send("r", StatusBody(state="running", title=titles[0], source="file:x",
                                     counters={"samples": 0}), t0)
        for end_s in range(3, 3 * seconds + 1):
            end = end_s * rate
            track = (end - 1) // (seconds * rate)
            if end_s > 3 and (end_s - 1) % seconds == 0 and track > 0:  # the track before ends
                start = (track - 1) * seconds
                station.send("r", TrackBody(
                    title=titles[track - 1], reason="title_change", start_s=float(start),
                    end_s=float(start + seconds), start_sample=start * rate,
                    end_sample=(start + seconds) * rate, started_at=t0 + start,
                    ended_at=t0 + start + seconds, windows=seconds - 1, tags=TAGS,
                    mean_raw=[0.1] * n, mean_smoothed=[0.1] * n, active_share=[0.0] * n,
                    active=[], model=MODEL), t0 + start + seconds)
            momentary, short_term = trail.reading(end)
            level = AudioLevel(rms_dbfs=-20.0, peak_dbfs=-10.0, clipped=0, onset_rate_hz=1.0,
                               energy=0.5, momentary_lufs=momentary, short_term_lufs=short_term)
            station.send("r", ScoresBody(start_s=end_s - 3.0, end_s=float(end_s),
                                         start_sample=end - 3 * rate, end_sample=end, tags=TAGS,
                                         raw=[0.1] * n, smoothed=[0.1] * n, active=[],
                                         model=MODEL, latency_ms=1.0, audio=level), t0 + end_s)
        station.send("r", TrackBody(
            title=titles[2], reason="end", start_s=40.0, end_s=60.0, start_sample=40 * rate,
            end_sample=60 * rate, started_at=t0 + 40, ended_at=t0 + 60, windows=seconds,
            tags=TAGS, mean_raw=[0.1] * n, mean_smoothed=[0.1] * n, active_share=[0.0] * n,
            active=[], model=MODEL), t0 + 60)

    record(url, script)
    engine = schema_engine(url)
    history = load_history(engine)
    engine.dispose()
    music, dead, hiss = history.as_run
    assert (music.title, dead.title, hiss.title) == titles
    powers = np.array([p for _, p in blocks])
    own = [integrated_lufs(powers[k * 10 * seconds:(k + 1) * 10 * seconds]) for k in range(3)]
    assert own[1] is None  # digital silence: nothing passes the absolute gate
    assert music.loudness_lufs == pytest.approx(own[0], abs=0.5)
    assert dead.loudness_lufs is None and dead.loudness_below_gate
    assert hiss.loudness_lufs == pytest.approx(own[2], abs=0.5)
    text = format_text(history)
    (line,) = [row for row in text.splitlines() if "Dead air" in row and "tags:" in row]
    assert "below -70 LUFS" in line, line
    shown = json.loads(format_json(history))["asrun"]
    assert shown[1]["loudness_lufs"] is None and shown[1]["loudness_below_gate"] is True


def schema_engine(url: str):
    from streamtag.history import schema

    return schema.create_db_engine(url)


# -- silence spans in the history, dated by the audio -------------------------------------------

def test_a_silence_span_starts_within_a_hop_of_the_silence(tmp_path):
    """A file played at real speed through a real daemon and recorded: 2.25 s of music, 3 s of
    digital silence, 1.5 s of music. The silence span's start, in wall-clock time, is within a
    hop of where the silence began, dated by the audio's own clock (when its sample 0 played,
    from the first window: sent at its end's time, less its end)."""
    import sqlalchemy as sa
    from support.helpers import make_config, started, tiny_model_file, wait_until

    from streamtag.audio.testsignals import music_like
    from streamtag.daemon.config import SourceConfig
    from streamtag.engine.health import HealthConfig
    from streamtag.history import blocks, schema
    from streamtag.history.recorder import Recorder
    from streamtag.history.report import load_history

    rate, music_s, gap_s = 16000, 2.25, 3.0
    path = tmp_path / "gap.flac"
    write_audio(path, np.concatenate([music_like(music_s, rate, seed=1),
                                      np.zeros(round(gap_s * rate)),
                                      music_like(1.5, rate, seed=2)]).astype(np.float32), rate)
    model = tiny_model_file(tmp_path / "tiny.pt", window=64, hop=16)
    hop_s = 16 * 256 / rate
    edge_s = 0.05  # a window's frames reach n_fft / 2 before its first hop (engine/test_health.py)
    engine = schema.create_db_engine(f"sqlite:///{tmp_path / 'tags.db'}")
    schema.upgrade(engine)
    daemon, sub = started(make_config(model, tmp_path, health=HealthConfig(silence_s=1.5)))
    sub.close()
    recorder = Recorder(engine, daemon.publisher.endpoint).start()
    try:
        wait_until(lambda: recorder.stats.received["heartbeat"] > 0, 10,
                   "the recorder to hear the daemon")
        daemon.add_source(SourceConfig("radio", f"file:{path}", options={"realtime": True}))

        def ended() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(schema.statuses)
                                    .where(schema.statuses.c.state == "ended")).scalar() == 1
        wait_until(ended, 60, "the stream's end to be stored")
        assert recorder.stop()
    finally:
        daemon.stop()
    with engine.connect() as conn:
        sc = blocks.windows(conn).c
        played_at = conn.execute(sa.select(sa.func.min(sc.sent_at - sc.end_s))).scalar()
    history = load_history(engine)
    engine.dispose()
    (span,) = history.silence
    began = played_at + music_s
    assert 0.0 <= span.start - began <= hop_s + edge_s, (span.start - began, hop_s)
    assert span.end - span.start == pytest.approx(gap_s, abs=2 * hop_s)


def test_dead_air_confirmed_late_takes_back_the_tags_its_first_windows_counted():
    from streamtag.engine.tracks import TrackSummarizer

    tracks = TrackSummarizer(16000, "Tone")
    args = (("rock", "calm"), (0.9, 0.1), (0.9, 0.1))
    for end_s in range(1, 11):  # a tone from 0 s, its tags on until it is confirmed at 10 s
        tracks.add_window(end_s * 16000, *args, ("rock",), "m", "h",
                          dead_air_from=0 if end_s == 10 else None)
    for end_s in range(11, 16):  # confirmed: no tag on
        tracks.add_window(end_s * 16000, *args, (), "m", "h")
    (track,) = tracks.end(15 * 16000)
    assert track.active == () and track.active_share == (0.0, 0.0)
    # speech (where windows say what they are) counts as dead air does: no tag of it counts
    speech = TrackSummarizer(16000, "News")
    for end_s in range(1, 11):
        speech.add_window(end_s * 16000, *args, ("rock",), "m", "h", music=end_s > 8)
    (news,) = speech.end(10 * 16000)
    assert news.active == () and news.active_share == (0.2, 0.0)


def test_a_track_that_was_dead_air_has_no_leading_tags_in_the_as_run_log(tmp_path):
    """A station's second song was dead air throughout (its windows' tags, as a model scores
    silence, still there): the as-run log, its JSON and CSV list no tags for it."""
    from support.history_programme import play_session
    from support.history_station import record

    from streamtag.history.report import format_csv, format_json, load_history

    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = time.time() - 200
    record(url, lambda station: play_session(station, "radio", t0, [("Song", 40), ("Dead", 40)],
                                             silence=(40, 40), open_last=False))
    engine = schema_engine(url)
    history = load_history(engine)
    engine.dispose()
    song, dead = history.as_run
    assert song.active and song.top
    assert dead.silence_s > 0.5 * (dead.end - dead.start)
    assert dead.active == [] and dead.top == []
    assert json.loads(format_json(history))["asrun"][1]["active"] == []
    (row,) = [r for r in csv.DictReader(io.StringIO(format_csv(history)))
              if r["kind"] == "track" and r["title"] == "Dead"]
    assert row["detail"] == "", row  # no tags
