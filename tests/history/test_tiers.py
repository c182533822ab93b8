"""Reports from rollups: `history` and the history page read the per-minute rollups where the
range's windows are too many or expired (history.tiers), and what they give equals what the
windows give, to the minute at the range's edges. The history is benchmarks/history_year.py's
generator, small."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from support.helpers import load_file_module

from streamtag.history import content, report, schema, tiers
from streamtag.history.retention import Retention, expire
from streamtag.history.timeparse import zone_named

# loaded from its file: benchmarks/ on sys.path would shadow installed packages for every
# later test (benchmarks/musicnn.py hid the musicnn package)
_history_year = load_file_module(
    Path(__file__).resolve().parents[2] / "benchmarks" / "history_year.py",
    "streamtag_benchmark_history_year")
MINUTE_S, write_history = _history_year.MINUTE_S, _history_year.write_history

STATIONS = ["north", "south"]
HOURS = 3


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('tiers') / 'tags.db'}"
    engine = schema.create_db_engine(url)
    # the hours up to 18:00 UTC yesterday: one UTC day whenever the tests run
    end = float(int(time.time() // 86400 * 86400)) - 6 * 3600.0
    write_history(engine, STATIONS, HOURS / 24, HOURS / 24, end)
    return engine, end - HOURS * 3600.0, end


def _both(engine, since, until, **kwargs):
    return [report.load_history(engine, None, since, until, zone=zone_named("UTC"), now=until,
                                tier=tier, **kwargs) for tier in tiers.TIERS]


def test_reports_from_rollups_equal_those_from_windows(recorded):
    engine, since, until = recorded
    windows, rollups = _both(engine, since, until - 0.001, content_by="hour")
    assert (windows.tier, rollups.tier) == ("windows", "rollups")
    assert windows.airtime.keys() == rollups.airtime.keys() == set(STATIONS)
    for stream in STATIONS:
        w, r = windows.airtime[stream], rollups.airtime[stream]
        assert w.windows == r.windows == HOURS * 3600
        assert (w.first_at, w.last_at) == (r.first_at, r.last_at)
        assert w.tags == r.tags
        assert {t: w.share(t) for t in w.tags} == {t: r.share(t) for t in r.tags}
        assert w.content == r.content and r.content["speech"] == HOURS * 3 * MINUTE_S
    assert windows.content_periods == rollups.content_periods
    assert len(rollups.content_periods) == HOURS * len(STATIONS)
    assert [(e.stream, e.title, e.start) for e in rollups.as_run if e.end is not None] == \
        [(e.stream, e.title, e.start) for e in windows.as_run if e.end is not None]
    text = report.format_text(rollups)
    assert "read from per-minute rollups" in text and "north" in text
    tags = ["tag00", "tag01", "tag03", "tag04"]
    for stream in STATIONS:  # bins of 10 minutes: whole minutes, the same either way
        got = [report.tag_share_bins(engine, stream, tags, since, until, HOURS * 6, tier)
               for tier in tiers.TIERS]
        np.testing.assert_array_equal(got[0][1], got[1][1])
        np.testing.assert_allclose(got[0][2], got[1][2], rtol=0, atol=1e-12)
        kinds = [content.content_bins(engine, stream, since, until, HOURS * 6, tier)[1]
                 for tier in tiers.TIERS]
        np.testing.assert_array_equal(kinds[0], kinds[1])
        for tier, got_tier, kinds_tier in zip(tiers.TIERS, got, kinds, strict=True):
            strip = report.strip_bins(engine, stream, tags, since, until, HOURS * 6, tier)
            np.testing.assert_array_equal(strip[1], got_tier[1])
            np.testing.assert_array_equal(strip[2], got_tier[2])
            np.testing.assert_array_equal(strip[3], kinds_tier)  # the plot's content row


def test_rollups_read_edges_to_the_minute(recorded):
    """A range that cuts minutes: the rollups count each cut minute whole, no more."""
    engine, since, until = recorded
    windows, rollups = _both(engine, since + 1810.0, until - 1234.0)
    for stream in STATIONS:
        w, r = windows.airtime[stream], rollups.airtime[stream]
        assert 0 <= r.windows - w.windows <= 2 * MINUTE_S
        for tag in w.tags:
            assert abs(w.share(tag) - r.share(tag)) <= 2 * MINUTE_S / w.windows


def test_reports_read_rollups_where_windows_expired(recorded, tmp_path):
    engine, since, until = recorded
    with engine.connect() as conn:
        assert tiers.choose(conn, None, since, until) == "windows"
        assert tiers.choose(conn, ["north"], until - 3600, until) == "windows"
    # a copy of the database whose windows older than an hour expired
    copy = schema.create_db_engine(f"sqlite:///{tmp_path / 'expired.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"VACUUM INTO '{tmp_path / 'expired.db'}'")
    expire(copy, Retention(windows=3600.0, rollups=None), until)
    with copy.connect() as conn:
        assert tiers.choose(conn, None, since, until) == "rollups"
        assert tiers.choose(conn, None, until - 1800, until) == "windows"
    before = report.load_history(engine, None, since, until - 0.001, tier="windows",
                                 zone=zone_named("UTC"), now=until)
    after = report.load_history(copy, None, since, until - 0.001, zone=zone_named("UTC"),
                                now=until)
    assert after.tier == "rollups"
    for stream in STATIONS:
        b, a = before.airtime[stream], after.airtime[stream]
        assert a.windows == b.windows
        assert {t: a.share(t) for t in a.tags} == {t: b.share(t) for t in b.tags}
        assert a.content == b.content


def test_airtime_per_hour_from_rollups_equals_that_from_windows(recorded):
    """Each tag's airtime per hour: the same from the rollups as from the windows, hour by
    hour, and the hours add up to the range's airtime."""
    engine, since, until = recorded
    windows, rollups = _both(engine, since, until - 0.001, airtime_by="hour")
    assert windows.airtime_periods == rollups.airtime_periods
    rows = rollups.airtime_periods
    assert [(r["stream"], r["start"], r["end"]) for r in rows] == [
        (stream, since + h * 3600.0, since + (h + 1) * 3600.0)
        for stream in STATIONS for h in range(HOURS)]
    for stream in STATIONS:
        mine = [r for r in rows if r["stream"] == stream]
        assert sum(r["windows"] for r in mine) == rollups.airtime[stream].windows
        whole = rollups.airtime[stream]
        assert list(mine[0]["airtime"]) == whole.tags
        for tag in whole.tags:
            # shares to 6 decimals: each hour's windows to within 0.004 of a window
            active = sum(r["airtime"][tag] * r["windows"] for r in mine)
            assert round(active) == whole.active.get(tag, 0)
    # a track's two tags in each 4 minutes, no tag over the first 3 minutes of speech: an
    # hour's shares are those the generator wrote
    first = next(r for r in rows if r["stream"] == "north")
    assert first["windows"] == 3600
    assert first["airtime"]["tag00"] == pytest.approx((240 - 180) / 3600, abs=1e-6)


def test_airtime_per_day_in_text_json_and_csv(recorded):
    engine, since, until = recorded
    history = report.load_history(engine, ["north"], since, until - 0.001, zone=zone_named(
        "UTC"), now=until, airtime_by="day", tier="rollups")
    (day,) = history.airtime_periods
    assert day["windows"] == HOURS * 3600 and day["stream"] == "north"
    answer = json.loads(report.format_json(history))
    assert answer["airtime_by"] == "day" and answer["airtime_periods"] == [day]
    rows = list(csv.DictReader(io.StringIO(report.format_csv(history))))
    (row,) = [r for r in rows if r["kind"] == "airtime_day"]
    assert row["stream"] == "north" and int(row["value"]) == HOURS * 3600
    assert float(row["tag:tag00"]) == pytest.approx(day["airtime"]["tag00"], abs=1e-6)
    text = report.format_text(history)
    assert "airtime per day" in text
    top = max(day["airtime"], key=lambda t: day["airtime"][t])
    line = next(line for line in text.splitlines() if line.strip().startswith(
        history.zone.at(day["start"]).strftime("%Y-%m-%d")))
    assert f"{100 * day['airtime'][top]:.1f}%" in line and str(HOURS * 3600) in line


def test_history_command_gives_airtime_per_day(recorded, capsys):
    from support.history_station import history

    engine, since, until = recorded
    args = ("--db", str(engine.url), "--stream", "south", "--since", str(since), "--until",
            str(until - 0.001), "--tz", "UTC", "--airtime-by", "day")
    answer = json.loads(history(capsys, *args, "--json").stdout)
    (day,) = answer["airtime_periods"]
    assert day["stream"] == "south" and day["windows"] == HOURS * 3600
    assert set(day["airtime"]) == set(answer["streams"]["south"]["airtime"])
    rows = list(csv.DictReader(io.StringIO(history(capsys, *args, "--csv").stdout)))
    assert [r["kind"] for r in rows].count("airtime_day") == 1
    assert "airtime per day" in history(capsys, *args).stdout


def test_airtime_per_hour_on_postgresql(postgres):
    """The same per-hour airtime from either store on PostgreSQL, where the database's
    arithmetic (quarter hours, floor) and its drivers' types differ from SQLite's."""
    engine = schema.create_db_engine(postgres.new_database())
    try:
        end = float(int(time.time() // 3600 * 3600))
        write_history(engine, ["east"], 2 / 24, 2 / 24, end)
        windows, rollups = _both(engine, end - 7200.0, end - 0.001, airtime_by="hour")
        assert windows.airtime_periods == rollups.airtime_periods
        assert [r["windows"] for r in rollups.airtime_periods] == [3600, 3600]
        assert windows.airtime["east"].active == rollups.airtime["east"].active
        strips = [report.strip_bins(engine, "east", ["tag00", "tag01"], end - 7200.0, end, 12,
                                    tier) for tier in tiers.TIERS]
        for a, b in zip(strips[0][1:], strips[1][1:], strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        engine.dispose()
