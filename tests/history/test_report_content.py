"""What the audio was, in `streamtag history` as a radio monitor reads it: the speech, music
and dead-air shares per hour and per day of the zone asked for (text, JSON, CSV), and no tag
counted as on over speech or dead air. An evening scripted through a real Publisher, a real
recorder and an SQLite file (support.content_programme)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import numpy as np
import pytest
from matplotlib import colormaps
from support.content_programme import DAY, ZONE, Part, play, recorded, start
from support.history_station import history, record
from support.plot_layout import laid_out

from streamtag.history import schema
from streamtag.history.plot import CONTENT_COLOUR, draw_history
from streamtag.history.report import load_history

viridis = colormaps["viridis"]

HOURS = ["2026-11-20 22:00", "2026-11-20 23:00", "2026-11-21 00:00", "2026-11-21 01:00"]


@pytest.fixture(scope="module")
def evening(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('content') / 'tags.db'}"
    return url, recorded(url)


def test_speech_and_music_shares_per_hour_of_the_zone(evening, capsys):
    url, sent = evening
    result = history(capsys, "--db", url, "--json", "--tz", "Europe/Berlin",
                     "--content-by", "hour")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["content_by"] == "hour"
    rows = answer["content_periods"]
    assert [r["period"] for r in rows] == HOURS
    assert [r["windows"] for r in rows] == [180, 360, 360, 180]
    # the bulletins on the hour, the dead air after midnight's, the hours begun in Berlin
    assert [r["content"] for r in rows] == [
        {"music": 1.0}, {"music": 0.9, "speech": 0.1},
        {"music": pytest.approx(300 / 360, abs=1e-6), "speech": 0.1,
         "silence": pytest.approx(24 / 360, abs=1e-6)}, {"music": 1.0}]
    assert [r["start"] for r in rows] == [start() - 1800 + 3600 * h for h in range(4)]
    assert all(r["end"] - r["start"] == 3600 for r in rows)

    text = history(capsys, "--db", url, "--tz", "Europe/Berlin", "--content-by", "hour")
    lines = text.stdout.splitlines()
    head = lines.index("  content per hour (share of the windows whose content is known):")
    assert lines[head + 1].split() == ["hour", "music", "speech", "silence", "windows"]
    assert [line.split() for line in lines[head + 2: head + 6]] == [
        [*HOURS[0].split(), "100.0%", "-", "-", "180"],
        [*HOURS[1].split(), "90.0%", "10.0%", "-", "360"],
        [*HOURS[2].split(), "83.3%", "10.0%", "6.7%", "360"],
        [*HOURS[3].split(), "100.0%", "-", "-", "180"]]

    rows = list(csv.DictReader(io.StringIO(history(capsys, "--db", url, "--csv", "--tz",
                                                   "Europe/Berlin", "--content-by",
                                                   "hour").stdout)))
    per_hour = [(r["start"][:16], r["detail"], float(r["value"])) for r in rows
                if r["kind"] == "content_hour"]
    assert ("2026-11-21T00:00", "speech", 0.1) in per_hour
    assert ("2026-11-20T23:00", "music", 0.9) in per_hour
    assert all(r["start"].endswith("+01:00") for r in rows if r["kind"] == "content_hour")
    whole = {r["detail"]: float(r["value"]) for r in rows if r["kind"] == "content"}
    assert whole == pytest.approx({"music": 984 / 1080, "speech": 72 / 1080,
                                   "silence": 24 / 1080}, abs=1e-6)


def test_days_are_the_days_of_the_zone_asked_for(evening, capsys):
    url, _ = evening
    berlin = json.loads(history(capsys, "--db", url, "--json", "--tz", "Europe/Berlin",
                                "--content-by", "day").stdout)["content_periods"]
    assert [(r["period"], r["windows"]) for r in berlin] == [("2026-11-20 (Fri)", 540),
                                                             ("2026-11-21 (Sat)", 540)]
    assert berlin[1]["counts"] == {"music": 480, "speech": 36, "silence": 24}
    # 22:30 to 01:30 in Berlin is 21:30 to 00:30 in UTC: most of it on the Friday
    utc = json.loads(history(capsys, "--db", url, "--json", "--tz", "UTC",
                             "--content-by", "day").stdout)["content_periods"]
    assert [(r["period"], r["windows"]) for r in utc] == [("2026-11-20 (Fri)", 900),
                                                          ("2026-11-21 (Sat)", 180)]
    text = history(capsys, "--db", url, "--tz", "UTC", "--content-by", "day").stdout
    assert "  content per day (share of the windows whose content is known):" in text
    # without --content-by: the range's shares alone
    plain = json.loads(history(capsys, "--db", url, "--json").stdout)
    assert plain["content_by"] is None and plain["content_periods"] == []
    assert "content per" not in history(capsys, "--db", url).stdout


def test_a_period_that_is_not_hour_or_day_is_refused(evening, capsys):
    url, _ = evening
    with pytest.raises(SystemExit) as exit_:
        history(capsys, "--db", url, "--content-by", "week")
    assert exit_.value.code == 2
    assert "--content-by: invalid choice: 'week'" in capsys.readouterr().err


def test_speech_and_dead_air_are_no_tag_s_airtime(evening, capsys):
    """Every window listed "calm" as active, the bulletins and the dead air too: its airtime
    is the music's alone, in the JSON, the text and the CSV."""
    url, sent = evening
    music = sum(kind == "music" for _, kind in sent)
    answer = json.loads(history(capsys, "--db", url, "--json").stdout)
    assert answer["streams"]["radio-1"]["airtime"]["calm"] == pytest.approx(music / len(sent))
    assert "calm 91.1%" in history(capsys, "--db", url).stdout
    engine = schema.create_db_engine(url)
    try:
        # the range of the first bulletin alone: no tag on at all
        bulletin = [at for at, kind in sent if kind == "speech"][:36]
        during = load_history(engine, since=bulletin[0], until=bulletin[-1], zone=ZONE)
    finally:
        engine.dispose()
    assert during.airtime["radio-1"].windows == 36
    assert during.airtime["radio-1"].share("calm") == 0.0
    assert during.airtime["radio-1"].content_share() == {"speech": 1.0}


def test_the_plot_draws_what_the_audio_was_and_no_tag_over_speech_or_dead_air(evening):
    """The picture, pixel by pixel: the content row above the tags shows the bulletin as
    speech and the dead air as silence, and the tag's row is off over both (it was listed as
    active in every window), on over the music."""
    from matplotlib import dates as mdates
    from matplotlib.colors import to_rgb

    url, sent = evening
    engine = schema.create_db_engine(url)
    try:
        figure, streams = draw_history(engine, load_history(engine, zone=ZONE))
    finally:
        engine.dispose()
    assert streams == ["radio-1"]
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(float) / 255
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "content" and labels[1].startswith("calm  91%")

    def colour(clock: tuple[int, int], day: int, row: int) -> np.ndarray:
        at = ZONE.timestamp(DAY + timedelta(days=day), *clock)
        x, y = ax.transData.transform((mdates.date2num(ZONE.at(at)), row))
        return pixels[round(pixels.shape[0] - y), round(x)]

    def near(got, want) -> bool:
        return bool(np.abs(got - np.asarray(to_rgb(want))).max() < 0.05)

    bulletin, dead_air, music = ((23, 3), 0), ((0, 8), 1), ((22, 45), 0)
    assert near(colour(*bulletin, -1), CONTENT_COLOUR["speech"])
    assert near(colour(*dead_air, -1), CONTENT_COLOUR["silence"])
    assert near(colour(*music, -1), CONTENT_COLOUR["music"])
    off, on = viridis(0.0), viridis(1.0)
    assert near(colour(*bulletin, 0), off) and near(colour(*dead_air, 0), off)
    assert near(colour(*music, 0), on)
    # the legend names each content's colour
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == list(CONTENT_COLOUR)
    # nothing cut off or overprinted; the legend under the strip and its times
    groups = laid_out(figure)
    assert set(groups) == {"radio-1", "colour bar", "legend 0"}
    assert groups["legend 0"][0].y1 < min(box.y0 for box in groups["radio-1"])


def test_postgresql_gives_the_same_shares_per_hour_and_bin(evening, tmp_path, postgres):
    """The database does the counting, spelled per dialect: PostgreSQL's answer is SQLite's."""
    from streamtag.history.content import content_bins
    from tests.history.test_recorder import new_database

    def read(url: str):
        engine = schema.create_db_engine(url)
        try:
            history = load_history(engine, zone=ZONE, content_by="hour")
            bins = content_bins(engine, "radio-1", start(), start() + 3 * 3600, 240)
            return (history.content_periods, history.airtime["radio-1"].share("calm"),
                    [b.tolist() for b in bins])
        finally:
            engine.dispose()

    url = new_database(postgres)
    recorded(url)
    got = read(url)
    assert got == read(evening[0])
    assert [r["period"] for r in got[0]] == HOURS


def test_the_hour_repeated_when_clocks_go_back_is_two_rows(tmp_path, capsys):
    # Berlin, 2026-10-25: 02:00 to 03:00 happens twice, in CEST and then in CET
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = ZONE.timestamp(date(2026, 10, 25), 1, 30)
    record(url, lambda station: play(station, "radio-1", t0, [Part("speech", 6),
                                                               Part("music", 174)]))
    rows = json.loads(history(capsys, "--db", url, "--json", "--tz", "Europe/Berlin",
                              "--content-by", "hour").stdout)["content_periods"]
    assert [(r["period"], r["windows"]) for r in rows] == [
        ("2026-10-25 01:00 CEST", 180), ("2026-10-25 02:00 CEST", 360),
        ("2026-10-25 02:00", 360), ("2026-10-25 03:00", 180)]
    assert rows[0]["counts"] == {"music": 144, "speech": 36}
    assert [r["end"] - r["start"] for r in rows] == [3600] * 4
