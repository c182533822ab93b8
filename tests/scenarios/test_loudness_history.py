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
    assert entry.loudness_lufs == pytest.approx(gated_loudness(short_term), abs=1e-9)
    # near the integrated loudness of the file's own 400 ms blocks
    assert entry.loudness_lufs == pytest.approx(integrated_lufs(reference_blocks(path)),
                                                abs=0.5)
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
