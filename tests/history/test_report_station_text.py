"""Titles from a station are data in every view of the history: a title that is mathtext to
matplotlib is drawn as written, and one that hides a formula behind a semicolon is text in a
spreadsheet that splits rows on commas and in one that splits them on semicolons. The titles go
through real parts: a Publisher, the recorder, an SQLite file, matplotlib's renderer."""

from __future__ import annotations

import csv
import io
import time

import pytest
from matplotlib.text import Text
from support.history_programme import play_session
from support.history_station import history, record

from streamtag.history import schema
from streamtag.history.plot import draw_history
from streamtag.history.report import load_history
from streamtag.text import CSV_FORMULA_STARTS

MATH = "Art - $\\foo$ live"  # mathtext with a command it does not know: its parser raises
SUMS = "$x^2$ and $y_1$"     # mathtext it knows: drawn, but not as written
LINK = 'A;=HYPERLINK("http://evil.example/","click");B'
SPLIT = "A; +1+2;\"@SUM(A1)\";-3"  # formulas behind a space and behind a quote
TITLES = [MATH, SUMS, LINK, SPLIT]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One station whose titles are mathtext and semicolon-split formulas, recorded into
    SQLite; the last one still playing."""
    url = f"sqlite:///{tmp_path_factory.mktemp('text') / 'tags.db'}"
    t0 = time.time() - 4 * 20 - 5
    record(url, lambda station: play_session(station, "radio-1", t0,
                                             [(title, 20) for title in TITLES]))
    return url


def test_a_title_that_is_mathtext_is_drawn_as_written(hostile, tmp_path, capsys):
    png = tmp_path / "timeline.png"
    result = history(capsys, "--db", hostile, "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    engine = schema.create_db_engine(hostile, reader=True)
    try:
        figure, streams = draw_history(engine, load_history(engine))
    finally:
        engine.dispose()
    assert streams == ["radio-1"]
    figure.canvas.draw()  # laid out and rendered: a title parsed as mathtext would raise here
    texts = figure.findobj(Text)
    shown = {t.get_text().removeprefix("\u25b8 ").removesuffix(" (now playing)")
             for t in texts}
    assert set(TITLES) <= shown, shown
    # every text, the tick labels made while drawing too, is literal: none goes to mathtext
    assert all(not t.get_parse_math() and not t.get_usetex() for t in texts)


def test_no_cell_is_a_formula_whether_the_csv_is_split_on_commas_or_semicolons(hostile, capsys):
    result = history(capsys, "--db", hostile, "--csv")
    assert result.returncode == 0, result.stderr
    # split on commas, the text cells (numbers such as -0.5 are numbers there); split on
    # semicolons, every cell: no number starts one
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_commas = [r[k] for r in rows for k in ("stream", "title", "partial", "detail")]
    by_semicolons = [c for row in csv.reader(io.StringIO(result.stdout), delimiter=";")
                     for c in row]
    for shown in (by_commas, by_semicolons):
        formulas = [c for c in shown if c.lstrip(' "').startswith(CSV_FORMULA_STARTS)]
        assert formulas == [], formulas
    # each title is itself, with an apostrophe before each part that would be a formula
    assert [r["title"] for r in rows if r["kind"] in ("track", "now_playing")] == [
        MATH, SUMS, 'A;\'=HYPERLINK("http://evil.example/","click");B',
        "A;' +1+2;'\"@SUM(A1)\";'-3"]
