"""EBU R128 loudness in the history: the recorder keeps each window's momentary and short-term
loudness (schema revision 0005), and the as-run log gives each track its loudness, in text,
JSON and CSV. A real daemon with ``[health] loudness`` on, recorded over real ZeroMQ into
SQLite."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy as sa

from streamtag.audio.files import write_audio
from streamtag.audio.loudness import LoudnessMeter, integrated_lufs, mean_lufs
from streamtag.history import blocks
from streamtag.history.asrun import gated_loudness
from streamtag.history.report import format_csv, format_json, format_text, load_history
from tests.scenarios.test_silence_history import record_file
from tests.sources.test_loudness import (
    RATE,
    decoded_planes,
    reference_blocks,
    stereo_music,
)


def record(path, tmp_path, loudness: bool) -> sa.Engine:
    """``path`` played titled through a real daemon and recorded into a new SQLite file."""
    return record_file(path, tmp_path, window=64, hop=16, title="Loud and quiet",
                       loudness=loudness)


def test_the_as_run_log_gives_each_track_its_loudness(tmp_path):
    path = tmp_path / "music.mp3"
    write_audio(path, stereo_music(20.0), RATE)
    engine = record(path, tmp_path, loudness=True)
    with engine.connect() as conn:
        readings = sorted((SimpleNamespace(**w) for w in blocks.decoded_windows(conn)),
                          key=lambda w: w.end_sample)
    history = load_history(engine)
    engine.dispose()
    short_term = [r.short_term_lufs for r in readings if r.short_term_lufs is not None]
    assert len(short_term) >= len(readings) - 14  # all but the first 3 s of windows
    assert all(r.momentary_lufs is not None for r in readings[8:])
    (entry,) = history.as_run
    assert entry.title == "Loud and quiet"
    # the track's integrated loudness as the daemon measured it (protocol 1.10), within the
    # gating histogram's rounding of the file's own blocks', and what the windows' short-term
    # readings give beside it
    assert entry.integrated_lufs is not None
    assert entry.loudness_lufs == entry.integrated_lufs
    assert entry.loudness_lufs == pytest.approx(integrated_lufs(reference_blocks(path)),
                                                abs=0.1)
    assert gated_loudness(short_term) == pytest.approx(entry.loudness_lufs, abs=0.5)
    (shown,) = json.loads(format_json(history))["asrun"]
    assert shown["loudness_lufs"] == round(entry.loudness_lufs, 2)
    assert f"{entry.loudness_lufs:.1f} LUFS" in format_text(history)
    (track,) = [row for row in csv.DictReader(io.StringIO(format_csv(history)))
                if row["kind"] == "track"]
    assert float(track["loudness_lufs"]) == pytest.approx(entry.loudness_lufs, abs=0.005)


SINGULARITY = Path("/usr/share/games/singularity/music")  # Debian's singularity-music


@pytest.mark.parametrize("name", ["Awakening", "A New Journey", "Enemy Unknown"])
def test_gated_short_term_readings_come_within_a_quarter_lu_of_integrated_loudness(name):
    # What the as-run log reports against BS.1770's integrated loudness of the same track, on
    # real recordings: short-term readings every 0.99 s (the default model's hop) gated as
    # the blocks are. Over 8 singularity-music tracks the difference was 0.01-0.21 LU.
    path = SINGULARITY / f"{name}.ogg"
    if not path.exists():
        pytest.skip("needs Debian's singularity-music (freely licensed recordings): "
                    "apt-get install singularity-music")
    planes, rate = decoded_planes(path)
    meter = LoudnessMeter()
    meter.accept(planes, rate, planar=True, names=("FL", "FR"))
    blocks = meter.pop_blocks()
    ends = np.arange(30, len(blocks) + 1, 9.92)  # a window end every 0.992 s, in blocks
    readings = [mean_lufs(blocks[int(k + 0.5) - 30:int(k + 0.5)]) for k in ends]
    assert gated_loudness(readings) == pytest.approx(integrated_lufs(blocks), abs=0.25)


def test_without_loudness_the_as_run_log_has_none(tmp_path):
    path = tmp_path / "music.mp3"
    write_audio(path, stereo_music(8.0), RATE)
    engine = record(path, tmp_path, loudness=False)
    history = load_history(engine)
    engine.dispose()
    (entry,) = history.as_run
    assert entry.loudness_lufs is None and "LUFS" not in format_text(history)
    assert json.loads(format_json(history))["asrun"][0]["loudness_lufs"] is None


def test_a_track_loudness_is_its_gated_short_term_readings():
    # BS.1770's gates on the readings: under -70 LUFS never counts, and of the rest what lies
    # more than 10 LU under their power mean does not either.
    assert gated_loudness([]) is None
    assert gated_loudness([-80.0, -75.0]) is None
    assert gated_loudness([-20.0, -20.0, -90.0]) == pytest.approx(-20.0, abs=1e-9)
    # -45 is more than 10 LU under the mean of (-20, -20, -45): left out
    assert gated_loudness([-20.0, -20.0, -45.0]) == pytest.approx(-20.0, abs=1e-9)
    # -25 is not: it counts in power
    expected = 10 * np.log10((2 * 10 ** (-2.0) + 10 ** (-2.5)) / 3)
    assert gated_loudness([-20.0, -20.0, -25.0]) == pytest.approx(expected, abs=1e-9)


def speech_like(seconds: float, rate: int, seed: int = 4) -> np.ndarray:
    """Stereo bursts of voiced sound, syllables of 120-250 ms in words of 2-5 with pauses of
    0.3-0.9 s between words, each word at its own level: a voice's rhythm, whose pauses the
    3 s short-term readings average in and BS.1770's gating leaves out."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate))
    at = int(0.5 * rate)
    while at < len(out) - rate:
        level = 10 ** (rng.uniform(-14, 0) / 20)
        for _ in range(rng.integers(2, 6)):
            n = int(rng.uniform(0.12, 0.25) * rate)
            t = np.arange(n) / rate
            pitch = rng.uniform(100, 220)
            voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 8))
            out[at:at + n] += 0.25 * level * voice * np.hanning(n)
            at += n + int(rng.uniform(0.02, 0.08) * rate)
        at += int(rng.uniform(0.3, 0.9) * rate)
    return np.stack([out, 0.9 * out])


@pytest.mark.parametrize("kind", ["speech", "dynamic"])
def test_a_track_of_speech_or_dynamic_music_has_ffmpegs_integrated_loudness(tmp_path, kind):
    # The windows' 3 s readings, gated, read speech 1.7-2.2 LU and dynamic piano 1.5 LU below
    # ffmpeg's ebur128; the daemon's own gated loudness of the track is within 0.5 LU.
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package ffmpeg) measures the reference loudness")
    if kind == "speech":
        audio = speech_like(40.0, RATE)
    else:  # loud phrases that fall away into quiet ones, with rests: a dynamic piano's shape
        music = stereo_music(40.0)
        t = np.arange(music.shape[1]) / RATE
        audio = music * np.where((t % 8) < 5, 1.0, 0.05) * np.where((t % 2) < 1.6, 1.0, 0.0)
    path = tmp_path / f"{kind}.flac"
    write_audio(path, audio, RATE)
    found = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-i", str(path), "-af",
                            "ebur128", "-f", "null", "-"], capture_output=True, text=True,
                           timeout=60).stderr
    reference = float(found.rsplit("Integrated loudness:", 1)[1].split("I:", 1)[1]
                      .split("LUFS", 1)[0])
    engine = record(path, tmp_path, loudness=True)
    with engine.connect() as conn:
        readings = [w["short_term_lufs"] for w in blocks.decoded_windows(conn)
                    if w["short_term_lufs"] is not None]
    history = load_history(engine)
    engine.dispose()
    (entry,) = history.as_run
    assert entry.loudness_lufs == pytest.approx(reference, abs=0.5)
    # what the windows alone give is off by more: the reason the track carries its own
    assert abs(gated_loudness(readings) - reference) > 0.5
