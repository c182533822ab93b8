"""`streamtag history` as a radio monitor reads it: the as-run log of a scripted session equals
what was played, an outage where the mount answered 404 shows as off air in the text, the JSON,
the CSV and the plot (over the span lost), times read and shown in a named zone, the wide CSV,
events left out on request. The session goes through real parts: streamtag's Publisher on
127.0.0.1, the recorder, an SQLite file."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from matplotlib.colors import to_rgb
from matplotlib.text import Text
from support.history_programme import NOT_FOUND, SOURCE, play_session
from support.history_station import TAGS, Station, history, record
from support.plot_layout import laid_out

from streamtag.errors import ConfigError
from streamtag.history import schema
from streamtag.history.asrun import Entry, Span, has_silences, silence_spans
from streamtag.history.plot import LABEL_COLOUR, SPAN_STYLE, bin_count, draw_history
from streamtag.history.report import format_text, load_history
from streamtag.history.timeparse import (
    Zone,
    local_zone,
    parse_range,
    parse_time,
    zone_named,
)
from streamtag.wire.protocol import StatusBody

SONGS = [("Ana Tijoux – 1977", 95), ("Nina Simone – Sinnerman", 145),
         ("Café Tacvba – Eres", 160), ("Björk – Joga", 120), ("Khruangbin – Maria", 80)]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Ten minutes of one station (600 windows) ending now, its mount lost for 32 s in the
    third song, 12 s of dead air in the fourth, the fifth still playing; and a second station
    that played two songs."""
    url = f"sqlite:///{tmp_path_factory.mktemp('asrun') / 'tags.db'}"
    now = time.time()
    t0 = now - 600 - 32 - 5

    def script(station):
        played, outage = play_session(station, "radio-1", t0, SONGS, outage=(300, 32.0),
                                      silence=(430, 12))
        play_session(station, "radio-2", t0, [("Intro", 60), ("Outro", 60)], open_last=False)
        return played, outage

    played, outage = record(url, script)
    return url, t0, played, outage


def test_the_as_run_log_is_what_was_played(session, capsys):
    url, t0, played, outage = session
    result = history(capsys, "--db", url, "--json", "--stream", "radio-1", "--tz", "UTC")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    got = [(e["title"], e["start"], e["end"], e["partial"], e["now_playing"])
           for e in answer["asrun"]]
    assert got == [(p.title, pytest.approx(p.start), None if p.end is None
                    else pytest.approx(p.end), p.partial, p.end is None) for p in played]
    assert [e["partial"] for e in answer["asrun"]] == [["joined"], [], ["off air"], [], []]
    assert [e["top"][0][0] for e in answer["asrun"]] == [p.tag for p in played]
    assert answer["asrun"][-1]["windows"] == SONGS[-1][1]
    # the dead air: a span of its own, and counted in the track it fell in
    (silence,) = answer["silence"]
    assert (silence["start"], silence["end"]) == (pytest.approx(played[3].silence.start),
                                                  pytest.approx(played[3].silence.end))
    assert [e["silence_s"] for e in answer["asrun"]] == [0, 0, 0, 12, 0]
    assert answer["tz"] == "UTC"
    # play counts: each title once; each song's tag on for one track
    (plays,) = answer["plays"]
    assert dict(plays["titles"]) == {title: 1 for title, _ in SONGS}
    assert dict(plays["tags"]) == {tag: 1 for tag in TAGS}
    assert plays["off_air"] == 1 and plays["off_air_s"] == pytest.approx(32.0)

    # the second station's stream ended with its last track while the daemon went on: the
    # track ended with the stream, it was not cut
    result = history(capsys, "--db", url, "--json", "--stream", "radio-2")
    entries = json.loads(result.stdout)["asrun"]
    assert [(e["title"], e["partial"], e["now_playing"]) for e in entries] == [
        ("Intro", ["joined"], False), ("Outro", [], False)]


def test_a_404_outage_is_off_air_in_text_json_csv_and_plot(session, capsys, tmp_path):
    url, t0, played, outage = session
    result = history(capsys, "--db", url, "--json", "--stream", "radio-1")
    (span,) = json.loads(result.stdout)["off_air"]
    # over the span lost: from the last audio to its return, not when the loss was noticed
    assert span["start"] == pytest.approx(outage.start) and span["start"] < outage.noticed
    assert span["end"] == pytest.approx(outage.end)
    assert span["end"] - span["start"] == pytest.approx(32.0)
    assert span["detail"] == NOT_FOUND
    # a range that begins inside the outage still shows it whole
    result = history(capsys, "--db", url, "--json", "--stream", "radio-1", "--since",
                     str(outage.start + 10), "--until", str(outage.end + 60))
    (inside,) = json.loads(result.stdout)["off_air"]
    assert (inside["start"], inside["end"]) == (span["start"], span["end"])
    result = history(capsys, "--db", url, "--json", "--since", str(outage.end + 1))
    assert json.loads(result.stdout)["off_air"] == []

    text = history(capsys, "--db", url, "--stream", "radio-1", "--tz", "UTC")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("times in UTC")
    start = datetime.fromtimestamp(span["start"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert "  OFF AIR (1, 32 s in all):" in lines
    assert any(line.startswith(f"    {start} to ") and line.endswith(f"32 s  {NOT_FOUND}")
               for line in lines), text.stdout
    cut = [line for line in lines if SONGS[2][0] in line and "partial: off air" in line]
    assert len(cut) == 1
    assert any(SONGS[-1][0] in line and "NOW PLAYING" in line for line in lines)
    assert "  silence (1, 12 s in all):" in lines
    assert any(SONGS[3][0] in line and "silence 12 s" in line for line in lines)

    result = history(capsys, "--db", url, "--csv", "--stream", "radio-1")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    (off,) = [r for r in rows if r["kind"] == "off_air"]
    assert (float(off["duration_s"]), off["detail"]) == (pytest.approx(32.0), NOT_FOUND)

    # The plot draws the outage in its own colour; a range before it has none of that colour.
    with_outage, before = tmp_path / "with.png", tmp_path / "before.png"
    assert history(capsys, "--db", url, "--stream", "radio-1", "--plot",
                   str(with_outage)).returncode == 0
    assert history(capsys, "--db", url, "--stream", "radio-1", "--until",
                   str(outage.start - 30), "--plot", str(before)).returncode == 0
    assert red_columns(with_outage) > 10
    assert red_columns(before) == 0
    # A picture that cannot be written is said, with no traceback: a folder in its place
    result = history(capsys, "--db", url, "--stream", "radio-1", "--plot", str(tmp_path))
    assert result.returncode == 2 and f"cannot write {tmp_path}" in result.stderr
    assert "Traceback" not in result.stderr
    named = tmp_path / "timeline"  # no suffix: a PNG under that very name
    assert history(capsys, "--db", url, "--plot", str(named)).returncode == 0
    assert named.read_bytes().startswith(b"\x89PNG") and not named.with_suffix(".png").exists()


def red_columns(path) -> int:
    """Columns of the picture holding the off-air red (strong red, little green or blue)."""
    from matplotlib import image

    pixels = image.imread(str(path))[..., :3]
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.45) & (pixels[..., 2] < 0.45)
    return int(np.count_nonzero(red.sum(axis=0) > 20))


def test_the_report_reads_the_same_from_postgresql(tmp_path, postgres):
    from tests.history.test_recorder import new_database

    url = new_database(postgres)
    t0 = time.time() - 637

    def script(station):
        return play_session(station, "radio-1", t0, SONGS, outage=(300, 32.0),
                            silence=(430, 12))

    played, outage = record(url, script)
    engine = schema.create_db_engine(url)
    try:
        answer = load_history(engine, zone=zone_named("UTC"), period="day").to_dict()
    finally:
        engine.dispose()
    assert [(e["title"], e["start"], e["end"], e["partial"], e["silence_s"])
            for e in answer["asrun"]] == [
        (p.title, pytest.approx(p.start), None if p.end is None else pytest.approx(p.end),
         p.partial, 12 if p.silence else 0) for p in played]
    (span,) = answer["off_air"]
    assert (span["start"], span["end"]) == (pytest.approx(outage.start),
                                            pytest.approx(outage.end))


def test_text_lists_top_tags_and_leaves_events_out_unless_asked(session, capsys):
    url, *_ = session
    text = history(capsys, "--db", url, "--stream", "radio-1", "--tags", "2")
    assert text.returncode == 0, text.stderr
    airtime = next(line for line in text.stdout.splitlines() if "airtime" in line)
    assert "top 2 of 5 tags" in airtime and airtime.count("%") == 2
    assert "events: 10 tag on/off (list them with --events)" in text.stdout, text.stdout
    assert "score 0.90" not in text.stdout
    listed = history(capsys, "--db", url, "--stream", "radio-1", "--events")
    assert listed.stdout.count(" on  score 0.90 at ") == len(SONGS)
    quiet = history(capsys, "--db", url, "--json", "--no-events")
    assert "events" not in json.loads(quiet.stdout)
    assert json.loads(quiet.stdout)["events_total"] == 2 * (len(SONGS) + 2)
    assert history(capsys, "--db", url, "--tags", "0").returncode == 2


def test_a_stream_never_recorded_is_named_not_read_as_an_empty_range(session, capsys):
    url, *_ = session
    typo = history(capsys, "--db", url, "--stream", "radio-l", "--stream", "radio-1")
    assert typo.returncode == 2 and typo.stdout == ""
    assert "--stream 'radio-l': never recorded in" in typo.stderr
    assert "its streams: 'radio-1', 'radio-2'" in typo.stderr
    # a stream recorded, in a range where it has nothing: an empty range, as before
    empty = history(capsys, "--db", url, "--stream", "radio-2", "--until", "2001-01-01")
    assert empty.returncode == 0 and "nothing recorded in this range" in empty.stdout


def test_a_report_holds_the_garbage_collector_off_and_leaves_it_as_it_found_it(session, capsys):
    """Python's cyclic collector walked a day's report's millions of objects over and over
    (a fifth of its time); a report holds it off while it builds, and leaves it as it was
    after, also when the report fails and when it was off to begin with."""
    import gc

    url, *_ = session
    engine = schema.create_db_engine(url)
    passes: list[str] = []

    def counted(phase: str, info: dict) -> None:
        if phase == "start":
            passes.append(phase)

    gc.callbacks.append(counted)
    try:
        assert gc.isenabled()
        loaded = load_history(engine)
        text = format_text(loaded)
        draw_history(engine, loaded)
        # none while each ran: at most the one as it ends (the collector's first chance)
        assert len(passes) <= 3 and "radio-1" in text
        assert gc.isenabled()  # on again
        gc.collect()  # (the check itself: the callback sees a pass when the collector runs)
        assert passes
        with pytest.raises(ValueError, match="top must be at least 1"):
            load_history(engine, top=0)
        assert gc.isenabled()
        # the command holds it off from reading to writing, and leaves it on
        assert "radio-1" in history(capsys, "--db", url).stdout and gc.isenabled()
        gc.disable()
        try:
            load_history(engine)
            assert not gc.isenabled()  # off before, off after
        finally:
            gc.enable()
    finally:
        gc.callbacks.remove(counted)
        engine.dispose()


def test_csv_is_wide_one_row_per_track_with_a_column_per_tag(session, capsys):
    url, t0, played, _ = session
    result = history(capsys, "--db", url, "--csv", "--tz", "Europe/Berlin", "--no-events")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    tracks = [r for r in rows if r["kind"] in ("track", "now_playing") and
              r["stream"] == "radio-1"]
    assert [r["title"] for r in tracks] == [title for title, _ in SONGS]
    assert tracks[-1]["kind"] == "now_playing" and tracks[-1]["end"] == ""
    for row, p in zip(tracks, played, strict=True):
        scores = {tag: float(row[f"tag:{tag}"]) for tag in TAGS}
        assert max(scores, key=scores.get) == p.tag
        # ISO 8601 with the zone's offset: the time it names is the time played
        assert datetime.fromisoformat(row["start"]).timestamp() == pytest.approx(p.start,
                                                                               abs=1e-3)
        assert row["start"].endswith(("+01:00", "+02:00"))
    assert not [r for r in rows if r["kind"] == "event"]
    assert {r["kind"] for r in rows} >= {"airtime", "track", "now_playing", "off_air", "plays",
                                         "tag_plays"}


def test_plays_per_day(tmp_path, capsys):
    # Two days of one station, a title played on both: counted once in each day.
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    zone = zone_named("UTC")
    day0 = zone.timestamp(datetime(2026, 11, 20).date(), 23, 57)

    def script(station):
        play_session(station, "radio-1", day0, [("A", 300), ("B", 300), ("A", 300)],
                     open_last=False)

    record(url, script)
    engine = schema.create_db_engine(url)
    try:
        answer = load_history(engine, zone=zone, period="day")
    finally:
        engine.dispose()
    assert [(g["period"], dict(g["titles"])) for g in answer.plays] == [
        ("2026-11-20 (Fri)", {"A": 1}), ("2026-11-21 (Sat)", {"B": 1, "A": 1})]
    text = history(capsys, "--db", url, "--tz", "UTC", "--period", "week")
    assert "plays 2026-W47 (from 2026-11-16): 3 tracks" in text.stdout
    assert "by title: A 2x, B 1x" in text.stdout


# ---------------------------------------------------------------- time

BERLIN = zone_named("Europe/Berlin")


def berlin(*args) -> float:
    return datetime(*args, tzinfo=BERLIN.tz).timestamp()


def test_a_time_of_day_is_the_last_one_there_was():
    now = berlin(2026, 11, 23, 0, 5)
    assert parse_time("23:50", "--since", now, BERLIN) == berlin(2026, 11, 22, 23, 50)
    assert parse_time("00:01", "--since", now, BERLIN) == berlin(2026, 11, 23, 0, 1)
    # --until follows --since across midnight
    assert parse_range("23:00", "01:00", berlin(2026, 11, 23, 12, 0), BERLIN) == (
        berlin(2026, 11, 22, 23, 0), berlin(2026, 11, 23, 1, 0))
    assert parse_range("18:00", "20:00", berlin(2026, 11, 23, 19, 0), BERLIN) == (
        berlin(2026, 11, 23, 18, 0), berlin(2026, 11, 23, 20, 0))
    assert parse_time("yesterday 18:00", "--since", now, BERLIN) == berlin(2026, 11, 22, 18)
    assert parse_time("today", "--since", now, BERLIN) == berlin(2026, 11, 23)
    assert parse_time("2h", "--since", now, BERLIN) == now - 7200
    assert parse_time("1w", "--since", now, BERLIN) == now - 7 * 86400
    # a naive ISO time is in --tz; one with an offset is that
    assert parse_time("2026-07-01T12:00", "--since", now, BERLIN) == datetime(
        2026, 7, 1, 10, 0, tzinfo=UTC).timestamp()
    assert parse_time("2026-07-01T12:00+00:00", "--since", now, BERLIN) == datetime(
        2026, 7, 1, 12, 0, tzinfo=UTC).timestamp()
    # the day clocks go back has 25 hours: "yesterday 00:00" is 25 h before the next midnight
    after = berlin(2026, 10, 26, 0, 30)
    assert after - parse_time("yesterday", "--since", after, BERLIN) == 24.5 * 3600 + 3600
    with pytest.raises(ConfigError, match="time of day"):
        parse_time("25:00", "--since", now, BERLIN)
    with pytest.raises(ConfigError, match="swap"):
        parse_range("20:00", "2026-01-01T00:00", now, BERLIN)



@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e20", "99999999999w",
                                  "1795732888000", "0001-01-01", "9999-12-31T23:00", "-5"])
def test_a_time_out_of_range_is_refused_not_read_years_away(text):
    # nan and inf were read as times; a date past 9999 raised from datetime
    with pytest.raises(ConfigError, match=r"out of range.*1970 to the year 3000.*milliseconds"):
        parse_time(text, "--since", berlin(2026, 11, 23), BERLIN)


def test_clock_changes_a_skipped_time_is_refused_a_repeated_one_is_the_first():
    now = berlin(2026, 11, 23)
    for text in ("2026-03-29T02:30", "2026-03-29 02:00:30"):
        with pytest.raises(ConfigError, match="02:.. does not exist on 2026-03-29 in "
                                              "Europe/Berlin: its clocks went forward by 60"):
            parse_time(text, "--since", now, BERLIN)
    # a time of day is the last one there was: that day had none, the day before did
    assert parse_time("02:30", "--since", berlin(2026, 3, 29, 12, 0), BERLIN) == berlin(
        2026, 3, 28, 2, 30)
    # the hour repeated when clocks go back: a date's is the first of the two (summer time)
    utc = [datetime(2026, 10, 25, h, 30, tzinfo=UTC).timestamp() for h in (0, 1)]
    assert parse_time("2026-10-25T02:30", "--since", now, BERLIN) == utc[0]
    # a time of day the last one there was of either; an --until one the first after --since
    assert parse_time("02:30", "--since", utc[1] + 900, BERLIN) == utc[1]
    assert parse_time("02:30", "--since", utc[1] - 900, BERLIN) == utc[0]
    assert parse_range("02:10", "02:40", utc[1] + 900, BERLIN) == (utc[1] - 1200, utc[1] + 600)
    # eight digits are a basic ISO date, not Unix seconds of 1970; nothing is not a time
    assert parse_time("20261126", "--since", now, BERLIN) == berlin(2026, 11, 26)
    with pytest.raises(ConfigError, match="is not a time"):
        parse_range("", None, now, BERLIN)
    # shown times carry the abbreviation where the offset is not the named one
    reference = datetime(2026, 10, 25, 3, 0, tzinfo=UTC).timestamp()  # winter time
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    assert BERLIN.mark(first, reference) == " CEST" and BERLIN.mark(first + 3600, reference) == ""
    assert BERLIN.label_span(first, reference) == (
        "Europe/Berlin (CEST, UTC+02:00 to CET, UTC+01:00)")
    assert BERLIN.label_span(reference, reference + 60) == "Europe/Berlin (CET, UTC+01:00)"


@pytest.fixture
def tz_environment(monkeypatch):
    """Sets $TZ as the machine's zone for the C library too, and restores it after."""
    def set_tz(value: str) -> None:
        monkeypatch.setenv("TZ", value)
        time.tzset()
    yield set_tz
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("tz", ["CET-1CEST,M3.5.0,M10.5.0/3", ":/usr/share/zoneinfo/Europe/Berlin",
                                "/usr/share/zoneinfo/Europe/Berlin", "Europe/Berlin"])
def test_the_machine_s_zone_is_what_tz_says_in_any_of_its_forms(tz, tz_environment):
    # a POSIX rule and a zone file's path were ignored for /etc/localtime's zone
    if "/usr/share/zoneinfo" in tz and not Path("/usr/share/zoneinfo/Europe/Berlin").exists():
        pytest.skip("this machine has no zone files (Debian's tzdata)")
    tz_environment(tz)
    zone = local_zone()
    assert zone.name in (tz, "Europe/Berlin")
    # the same offsets, names and readings as Berlin's own zone, over both changes of 2026
    for day, hour in ((3, 29), (10, 25)):
        for minutes in range(-120, 240, 15):
            moment = datetime(2026, day, hour, 1, 0, tzinfo=UTC).timestamp() + 60 * minutes
            assert zone.at(moment).strftime("%H:%M %Z %z") == BERLIN.at(moment).strftime(
                "%H:%M %Z %z"), (tz, moment)
    now = berlin(2026, 11, 23)
    for text in ("2026-10-25T02:30", "2026-10-25T03:30", "2026-03-29T03:00", "2026-07-01T12:00"):
        assert parse_time(text, "--since", now, zone) == parse_time(text, "--since", now,
                                                                     BERLIN), text
    with pytest.raises(ConfigError, match="does not exist"):
        parse_time("2026-03-29T02:30", "--since", now, zone)


@pytest.mark.parametrize("tz", ["Nowhere/Zone", "Europe/Berln", "cet"])
def test_a_tz_that_is_no_zone_is_said(tz, tz_environment, caplog):
    """$TZ=Nowhere/Zone: the C library reads it as UTC, and the report said "times in
    Nowhere/Zone" without a word."""
    tz_environment(tz)
    with caplog.at_level(logging.WARNING, logger="streamtag.history.timeparse"):
        zone = local_zone()
    assert zone.at(0).utcoffset() == timedelta(0)
    assert f"$TZ {tz!r} is neither a time zone" in caplog.text
    caplog.clear()
    tz_environment("EST5EDT,M3.2.0,M11.1.0")  # a rule: no word
    with caplog.at_level(logging.WARNING, logger="streamtag.history.timeparse"):
        local_zone()
    assert caplog.text == ""


def test_a_report_across_a_clock_change_shows_which_hour_each_time_is_in(tmp_path, capsys,
                                                                        caplog):
    """Berlin's clocks went back at 2026-10-25 01:00 UTC (03:00 CEST became 02:00 CET): the
    first line names the offset at the range's end, and the times in the other offset carry
    their abbreviation, so the two 02:30s read apart."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = datetime(2026, 10, 25, 0, 20, tzinfo=UTC).timestamp()  # 02:20 CEST

    def script(station):
        play_session(station, "radio-1", t0, [("Before", 600), ("Over", 3600), ("After", 600)],
                     open_last=False)

    record(url, script)
    result = history(capsys, "--db", url, "--tz", "Europe/Berlin", "--since",
                     "2026-10-25T02:00", "--until", "2026-10-25T04:00")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("times in Europe/Berlin (CET, UTC+01:00); 2026-10-25 02:00:00 CEST to "
                        "2026-10-25 04:00:00")
    rows = [line.split() for line in lines if line.startswith("    2026-10-25")]
    # start date, start clock, its mark where CEST; end clock, its mark; length; title
    assert [r[:4] for r in rows[:2]] == [["2026-10-25", "02:20:00", "CEST", "02:30:00"],
                                         ["2026-10-25", "02:30:00", "CEST", "02:30:00"]]
    assert rows[0][4] == "CEST" and rows[1][4] == "1:00:00" and "Over" in rows[1]
    assert rows[2][:4] == ["2026-10-25", "02:30:00", "02:40:00", "10:00"]
    # the plot's axis: matplotlib's locator in the zone tried tens of thousands of ticks there
    plot = tmp_path / "over.png"
    with caplog.at_level(logging.WARNING):
        result = history(capsys, "--db", url, "--tz", "Europe/Berlin", "--plot", str(plot),
                         "--since", "2026-10-25T02:30", "--until", "2026-10-25T01:30Z")
    assert result.returncode == 0 and plot.stat().st_size > 0
    assert not [r for r in caplog.records if "Locator attempting" in r.getMessage()]


def test_an_outage_at_until_ends_where_it_ended_and_a_killed_daemon_s_ends_at_its_last_word(
        tmp_path, capsys):
    """A 40 s outage over UTC midnight; the third song left open, its station then lost and
    its daemon killed (nothing more from it). An --until inside the first outage read it as
    still going (and growing); the last one never ended; a track after --until was listed; the
    killed daemon's last track gave its shares as mean scores; a day's summary took the whole
    outage over midnight."""
    midnight = (time.time() // 86400 - 3) * 86400
    t0 = midnight - 171  # the outage: from 20 s before midnight to 20 s after
    url = f"sqlite:///{tmp_path / 'tags.db'}"

    def script(station):
        played, outage = play_session(station, "r", t0, [("A", 100), ("B", 100), ("C", 100)],
                                      outage=(150, 40.0))
        station.send("r", StatusBody(state="reconnecting", error=NOT_FOUND, title="C",
                                     source=SOURCE), t0 + 342)
        return played, outage

    played, outage = record(url, script)
    # the stand-in's heartbeats were sent now, to see the recorder listening; a killed daemon's
    # last one was sent as it died
    engine = schema.create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.update(schema.daemons).values(last_sent_at=t0 + 342))
    engine.dispose()
    assert outage.start == pytest.approx(midnight - 20)
    inside = history(capsys, "--db", url, "--json", "--since", str(outage.start - 30),
                     "--until", str(outage.start + 10))
    (span,) = json.loads(inside.stdout)["off_air"]
    assert span["end"] == pytest.approx(outage.end)
    answer = json.loads(history(capsys, "--db", url, "--json", "--tz", "UTC").stdout)
    first, last = answer["off_air"]
    assert last["start"] == pytest.approx(t0 + 340) and last["end"] == pytest.approx(t0 + 342)
    c = answer["asrun"][-1]
    assert (c["title"], c["partial"], c["shares"], c["now_playing"]) == ("C", ["cut"], True,
                                                                        False)
    assert [e["shares"] for e in answer["asrun"][:2]] == [False, False]
    text = history(capsys, "--db", url, "--tz", "UTC").stdout
    (line,) = [x for x in text.splitlines() if x.endswith("%") and "  C  " in x]
    assert "tags: " in line and f"{TAGS[2]} 100%" in line
    csv_kinds = [r[0] for r in csv.reader(io.StringIO(
        history(capsys, "--db", url, "--csv", "--no-events").stdout))]
    assert csv_kinds.count("unfinished") == 1 and csv_kinds.count("track") == 2
    # a range that ends before C began: C is not in it
    before_c = history(capsys, "--db", url, "--json", "--until", str(played[2].start - 5))
    assert [e["title"] for e in json.loads(before_c.stdout)["asrun"]] == ["A", "B"]
    # per day: the outage over midnight counted once, where it began; its time shared out
    days = json.loads(history(capsys, "--db", url, "--json", "--tz", "UTC", "--period",
                              "day").stdout)["plays"]
    assert [(d["off_air"], d["off_air_s"]) for d in days] == [
        (1, pytest.approx(20.0)), (1, pytest.approx(20.0 + 2.0))]

def test_the_zone_is_named_and_a_bad_one_refused(capsys, session):
    assert BERLIN.label(berlin(2026, 1, 1)) == "Europe/Berlin (CET, UTC+01:00)"
    assert BERLIN.label(berlin(2026, 7, 1)) == "Europe/Berlin (CEST, UTC+02:00)"
    assert Zone(UTC, "UTC").label(0) == "UTC (UTC+00:00)"
    url, *_ = session
    result = history(capsys, "--db", url, "--tz", "Mars/Olympus")
    assert result.returncode == 2 and "IANA name" in result.stderr
    text = history(capsys, "--db", url)  # the machine's zone, named
    assert text.stdout.startswith("times in ") and "UTC" in text.stdout.splitlines()[0]


def test_a_track_is_cut_by_an_outage_inside_it_not_by_one_it_follows():
    outage = Span("r", "off_air", 100.0, 132.0, session="s", sample=1000)
    cut = Entry("r", "A", 50.0, 133.0, 83.0, 10, [], [], session="s", start_sample=200,
                end_sample=1000)
    after = Entry("r", "B", 131.5, 200.0, 68.0, 10, [], [], session="s", start_sample=1000,
                  end_sample=2000)
    assert cut.cut_by(outage) and not after.cut_by(outage)
    # without the sample count (an older daemon), by time
    outage.sample = None
    assert cut.cut_by(outage) and after.cut_by(outage)
    assert not Entry("r", "C", 132.0, 150.0, 18.0, 5, [], []).cut_by(outage)


def test_a_database_from_before_silences_has_none(tmp_path):
    # Revision 0002 had no silences table: the report reads no silence there, and no error.
    engine = schema.create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        tables = [t for name, t in schema.metadata.tables.items() if name != "silences"]
        schema.metadata.create_all(engine, tables=tables)
        with engine.connect() as conn:
            assert not has_silences(conn)
            assert silence_spans(conn, None, None, None, time.time()) == []
    finally:
        engine.dispose()


def test_a_range_wholly_off_air_is_drawn_as_its_outage(session, capsys, tmp_path):
    """A range inside an outage has no windows: the plot said "nothing recorded in this
    range", where the text report listed the outage."""
    url, t0, played, outage = session
    inside = ("--since", str(outage.start + 5), "--until", str(outage.end - 5))
    picture = tmp_path / "inside.png"
    result = history(capsys, "--db", url, "--stream", "radio-1", *inside, "--plot",
                     str(picture))
    assert result.returncode == 0, result.stderr
    assert "OFF AIR" in history(capsys, "--db", url, "--stream", "radio-1", *inside).stdout
    assert red_columns(picture) > 100  # the whole strip
    engine = schema.create_db_engine(url)
    try:
        figure, streams = draw_history(engine, load_history(
            engine, ["radio-1"], since=outage.start + 5, until=outage.end - 5))
    finally:
        engine.dispose()
    assert streams == ["radio-1"]
    shown = [t.get_text() for t in figure.findobj(Text)]
    assert "nothing recorded in this range" not in shown
    assert "no windows" in shown and "OFF AIR 32 s" in shown
    # its label on an opaque box of the off-air red (test_span_labels_stand_out_from_their_span)
    (label,) = [t for t in figure.findobj(Text) if t.get_text() == "OFF AIR 32 s"]
    box = label.get_bbox_patch()
    assert box.get_alpha() == 1.0
    assert box.get_facecolor()[:3] == pytest.approx(to_rgb(SPAN_STYLE["off_air"][0]))
    assert to_rgb(label.get_color()) == to_rgb(LABEL_COLOUR["off_air"])


def test_the_plot_says_how_many_streams_it_left_out(tmp_path, capsys):
    """Seventeen stations, one of them off air throughout the range: the picture holds 16, and
    the command says one more was not drawn (it counted only streams with windows)."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = time.time() - 100

    def script(station):
        for n in range(16):
            play_session(station, f"s{n:02d}", t0, [("Song", 5)])
        play_session(station, "z-down", t0 - 300, [("Before", 5)], outage=(2, 400.0))

    record(url, script)
    inside = ("--since", str(t0 - 10), "--until", str(t0 + 50))  # z-down's outage throughout
    result = history(capsys, "--db", url, *inside, "--plot", str(tmp_path / "many.png"))
    assert result.returncode == 0, result.stderr
    assert "(16 streams; 1 more not drawn: choose them with --stream)" in result.stderr
    result = history(capsys, "--db", url, *inside, "--stream", "z-down", "--plot",
                     str(tmp_path / "down.png"))
    assert result.returncode == 0 and "more not drawn" not in result.stderr
    assert red_columns(tmp_path / "down.png") > 100


def test_the_plot_draws_the_range_asked_for_with_readable_times(session):
    """`--since 24h` and `--since 10m` drew the same picture, over what was recorded only,
    and ticks a minute apart read "10", "20": bare seconds."""
    from matplotlib.dates import date2num

    url, t0, played, outage = session
    engine = schema.create_db_engine(url)
    try:
        for since in (t0 - 3600, played[-1].start - 30):
            history = load_history(engine, ["radio-1"], since=since, zone=zone_named("UTC"))
            figure, _ = draw_history(engine, history)
            (ax,) = [a for a in figure.axes if a.get_label() != "<colorbar>"]
            assert ax.get_xlim() == pytest.approx((date2num(history.zone.at(since)),
                                                   date2num(history.zone.at(history.now))))
            labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
            assert labels and all(":" in text for text in labels), labels
    finally:
        engine.dispose()


def test_track_titles_never_overprint(tmp_path):
    """Twenty short tracks with long titles: the two rows of titles above the strip ran into
    each other. Each is cut short (with an ellipsis) where it would reach the next on its row,
    and one with room is whole."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    songs = [(f"Artist number {i} with a long name – A rather long song title {i}",
              12 + 6 * (i % 3)) for i in range(20)] + [("Last", 200)]
    t0 = time.time() - sum(seconds for _, seconds in songs) - 2  # the last still playing
    record(url, lambda station: play_session(station, "radio-1", t0, songs))
    engine = schema.create_db_engine(url)
    try:
        figure, streams = draw_history(engine, load_history(engine))
    finally:
        engine.dispose()
    renderer = figure.canvas.get_renderer()
    titles = [t for t in figure.findobj(Text) if t.get_text().startswith("\u25b8")]
    assert len(titles) == len(songs)
    (ax,) = {t.axes for t in titles}
    right = ax.get_window_extent(renderer).x1
    rows: dict[float, list] = {}
    for t in titles:
        rows.setdefault(t.get_position()[1], []).append(t.get_window_extent(renderer))
    assert len(rows) == 2
    for boxes in rows.values():
        boxes.sort(key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))
        assert boxes[-1].x1 <= right
    texts = [t.get_text() for t in titles]
    assert sum(t.endswith("\u2026") for t in texts) >= 10
    assert texts[-1] == "\u25b8 Last (now playing)"
    for text, (title, _) in zip(texts[:-1], songs, strict=False):  # a cut: the title's start
        assert title.startswith(text[2:].rstrip("\u2026")), (text, title)


def test_no_label_of_the_picture_is_cut_off_or_overprints_another(session):
    """Two stations, one with titles above its strip and its outage and silence labelled,
    the other with two songs: laid out without matplotlib's layout engine, each strip's labels
    stay inside the picture and clear of the other strip, the colour bar and each other."""
    url, *_ = session
    engine = schema.create_db_engine(url)
    try:
        figure, streams = draw_history(engine, load_history(engine))
    finally:
        engine.dispose()
    assert streams == ["radio-1", "radio-2"]
    groups = laid_out(figure)
    assert set(groups) == {"radio-1", "radio-2", "colour bar"}
    titles = [t for t in figure.axes[0].texts if t.get_text().startswith("\u25b8")]
    assert len(titles) == len(SONGS)
    # the titles above their strip, the times under it, the strips one above the other
    top, bottom = figure.axes[0].bbox, figure.axes[1].bbox
    renderer = figure.canvas.get_renderer()
    assert min(t.get_window_extent(renderer).y0 for t in titles) >= top.y1
    assert top.y0 > bottom.y1
    assert [round(a.bbox.x0) for a in figure.axes[:2]] == [round(top.x0)] * 2


def test_a_time_at_the_strips_right_end_keeps_clear_of_the_colour_bar(session):
    """A range that ends on a whole minute puts that minute's time at the strips' right end,
    its label centred there, half of it past the strip: it stays clear of the colour bar (it
    overprinted the bar's edge by 2 pixels where the range happened to end so)."""
    url, t0, *_ = session
    until = (t0 + 600) // 60 * 60
    engine = schema.create_db_engine(url)
    try:
        figure, _ = draw_history(engine, load_history(engine, since=t0, until=until,
                                                      zone=zone_named("UTC")))
    finally:
        engine.dispose()
    groups = laid_out(figure)
    renderer = figure.canvas.get_renderer()
    strip = figure.axes[0]
    ends = [t for t in strip.get_xticklabels() if t.get_visible() and t.get_text()
            and abs(t.get_window_extent(renderer).x0 + t.get_window_extent(renderer).x1
                    - 2 * strip.bbox.x1) < 1.0]
    # one time there (the minute's, or the date where the minute is midnight)
    assert len(ends) == 1
    assert ends[0].get_window_extent(renderer).x1 < groups["colour bar"][0].x0


def test_span_labels_stand_out_from_their_span():
    """Off-air's label was white on red drawn three-quarters opaque over the strip: faint.
    Each label sits on an opaque box of its span's colour, at a contrast of 4.5 or more (WCAG
    AA for small text)."""
    def luminance(colour) -> float:
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
                  for c in to_rgb(colour)]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    for kind, (face, _, _) in SPAN_STYLE.items():
        light, dark = sorted((luminance(face), luminance(LABEL_COLOUR[kind])), reverse=True)
        assert (light + 0.05) / (dark + 0.05) >= 4.5, kind


def test_plot_bins_are_never_narrower_than_the_hop():
    assert bin_count(0, 120, 1.0) == 120
    assert bin_count(0, 120, 2.0) == 60
    assert bin_count(0, 30, 5.0) == 6
    assert bin_count(0, 86400, 1.0) == 240
    assert bin_count(0, 0.5, 1.0) == 1


def restart(station: Station) -> None:
    """What a daemon restart looks like on the wire: a new session, its seq from 0."""
    station.session = uuid.uuid4().hex
    station._seq.clear()


def test_a_restart_mid_track_is_one_play_and_a_killed_daemons_track_is_kept(tmp_path, capsys):
    """A daemon stopped mid-song and started again 5 s later, the song still playing: one play,
    marked "restart". A daemon killed (no track message for its last song) and started again
    on another song: its last song is still listed, cut at its last window."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = time.time() - 1000

    def script(station):
        # stopped cleanly in "Y": its part ends with a "track" message, reason "end"
        first, _ = play_session(station, "radio-1", t0, [("X", 100), ("Y", 50)],
                                open_last=False)
        restart(station)
        second, _ = play_session(station, "radio-1", t0 + 155, [("Y", 70), ("Z", 60)],
                                 open_last=False)
        # killed in "Z2": no track message for it at all
        restart(station)
        third, _ = play_session(station, "radio-1", t0 + 300, [("Z2", 40)], open_last=True)
        restart(station)
        fourth, _ = play_session(station, "radio-1", t0 + 350, [("W", 30)], open_last=False)
        return first, second, third, fourth

    first, second, third, fourth = record(url, script)
    result = history(capsys, "--db", url, "--json", "--stream", "radio-1")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)["asrun"]
    assert [(e["title"], e["partial"]) for e in entries] == [
        ("X", ["joined"]), ("Y", ["restart"]), ("Z", ["cut"]), ("Z2", ["joined", "cut"]),
        ("W", ["joined", "cut"])]
    y = entries[1]
    assert (y["start"], y["end"]) == (pytest.approx(first[1].start),
                                      pytest.approx(second[0].end))
    assert y["windows"] == 50 + 70 and y["audio_s"] == pytest.approx(120, abs=1)
    z2 = entries[3]  # its windows are all that is left of it: it ends at the last one
    assert z2["windows"] == 40 and z2["end"] == pytest.approx(third[0].start + 40, abs=1.5)
    (plays,) = json.loads(result.stdout)["plays"]
    assert dict(plays["titles"])["Y"] == 1



def test_joined_is_what_the_source_knew_where_it_knew(tmp_path, capsys):
    """Protocol 1.5's heard_from_start: a session's first track that the source heard from its
    start (an Ogg link the daemon met at its first page) is whole, now playing or finished; a
    track the source says it met midway (a reconnect into the middle of a link) is joined
    wherever it falls; where the source did not know (MP3), the first track of a session is
    joined, as before."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = time.time() - 200

    def script(station):
        play_session(station, "ogg-now", time.time() - 62, [("A", 60)], heard=[True])
        play_session(station, "ogg-done", t0, [("A", 60), ("B", 40), ("C", 30)],
                     heard=[True, False, True], open_last=False)
        return play_session(station, "mp3", t0, [("A", 60), ("B", 40)], heard=[None, True],
                            open_last=False)

    record(url, script)
    result = history(capsys, "--db", url, "--json")
    assert result.returncode == 0, result.stderr
    got = {(e["stream"], e["title"]): e["partial"] for e in json.loads(result.stdout)["asrun"]}
    assert got == {("ogg-now", "A"): [], ("ogg-done", "A"): [],
                   ("ogg-done", "B"): ["joined"], ("ogg-done", "C"): [],
                   ("mp3", "A"): ["joined"], ("mp3", "B"): []}
    with schema.create_db_engine(url).connect() as conn:
        stored = conn.execute(sa.select(schema.tracks.c.title, schema.tracks.c.heard_from_start)
                              .where(schema.tracks.c.stream == "ogg-done")
                              .order_by(schema.tracks.c.start_sample)).all()
    assert [tuple(r) for r in stored] == [("A", True), ("B", False), ("C", True)]

def test_the_station_name_is_kept_and_shown(tmp_path, capsys):
    """A server's icy-name arrives in the status (protocol 1.2 `station`): the recorder keeps
    it and the report names the station beside its stream id."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    t0 = time.time() - 200

    def script(station):
        play_session(station, "radio-1", t0, [("X", 30)], open_last=False)
        station.send("radio-1", StatusBody(state="running", title="X",
                                           source="http://127.0.0.1:8000/live.mp3",
                                           station="Radio \x1b[31mEins"), t0 + 31)
        play_session(station, "radio-2", t0, [("Y", 30)], open_last=False)

    record(url, script)
    result = history(capsys, "--db", url, "--json")
    streams = json.loads(result.stdout)["streams"]
    assert streams["radio-1"]["station"] == "Radio \x1b[31mEins"
    assert streams["radio-2"]["station"] is None
    text = history(capsys, "--db", url).stdout
    assert "radio-1 (Radio Eins): 30 windows" in text, text  # the escape sequence dropped


def test_one_of_a_thing_is_not_plural(tmp_path, capsys):
    """A report of a one-second song read "1 windows" and "1 tracks"."""
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    record(url, lambda station: play_session(station, "one", time.time() - 60, [("Only", 1)],
                                             open_last=False))
    text = history(capsys, "--db", url, "--tz", "UTC").stdout
    assert "one: 1 window, " in text and "  plays: 1 track" in text, text
    assert "1 windows" not in text and "1 tracks" not in text


def test_a_stream_with_events_alone_is_drawn():
    """A range holding a stream's tag event and nothing else (no window, track or span)."""
    from streamtag.history.report import History

    event = {"stream": "x", "tag": "calm", "state": "on", "score": 0.9, "time_s": 3.0,
             "sent_at": 1_000.0}
    history = History(since=None, until=None, airtime={}, tracks=[], events=[event], gaps=[],
                      restarts=[], zone=zone_named("UTC"), now=1_010.0)
    figure, streams = draw_history(None, history)
    assert streams == ["x"]
    assert "no windows" in [t.get_text() for t in figure.findobj(Text)]


def test_plot_without_matplotlib_says_in_one_line_how_to_get_it(tmp_path):
    # The README's install has no matplotlib: --plot ended in a traceback.
    code = ("import sys; sys.modules['matplotlib'] = None; from streamtag.cli import main; "
            f"sys.exit(main(['history', '--db', 'sqlite:///{tmp_path / 'tags.db'}', "
            f"'--plot', '{tmp_path / 'evening.png'}']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "streamtag history: --plot draws with matplotlib, which is not installed: pip install "
        "matplotlib (or streamtag's [plot] extra); the report without --plot needs nothing "
        "more"]
    assert not (tmp_path / "evening.png").exists()
