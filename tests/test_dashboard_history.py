"""The dashboard's history view: /history.json from a database the recorder wrote, and the
page history.html in a real browser (Debian's chromium, driven by playwright)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("websockets", reason="the dashboard needs websockets: pip install websockets")

from helpers import free_port  # noqa: E402
from history_station import TAGS, Station, await_subscribed, wait_stored  # noqa: E402

# The dashboard tests' fixtures: a browser for the module, and things to close after a test.
from test_dashboard import (  # noqa: E402, F401
    WAIT_S,
    DashboardThread,
    browser,
    closing,
    watched_page,
)

from streamtag.history import schema  # noqa: E402
from streamtag.history.recorder import Recorder  # noqa: E402

STREAMS = ("radio-1", "radio-2")
WINDOWS = 600


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Ten minutes of two streams, sent with wall-clock times of the last half hour."""
    url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'tags.db'}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    station = Station()
    recorder = Recorder(engine, station.endpoint).start()
    try:
        await_subscribed(station, engine)
        t0 = time.time() - 1800
        sent = [m for s in STREAMS for m in station.play(s, range(WINDOWS), t0)]
        wait_stored(engine, len(sent))
    finally:
        recorder.stop(5)
        station.close()
        engine.dispose()
    shares = {s: {tag: sum(tag in m.body.active for m in sent
                           if m.msg_type == "scores" and m.stream == s) / WINDOWS
                  for tag in TAGS} for s in STREAMS}
    titles = {s: [m.body.title for m in sent if m.msg_type == "track" and m.stream == s]
              for s in STREAMS}
    return url, shares, titles


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def test_history_json_answers_from_the_database(recorded, closing):  # noqa: F811
    url, shares, titles = recorded
    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}", db=url)
    closing.append(dashboard)
    status, answer = get_json(dashboard.url + "history.json?hours=1")
    assert status == 200
    assert set(answer["streams"]) == set(STREAMS)
    for stream in STREAMS:
        got = answer["streams"][stream]
        assert got["windows"] == WINDOWS
        assert dict(got["airtime"]) == pytest.approx(shares[stream], abs=1e-6)
        strip = got["strip"]
        assert sum(strip["counts"]) == WINDOWS
        assert [t["title"] for t in answer["tracks"] if t["stream"] == stream] == titles[stream]
    status, answer = get_json(dashboard.url + "history.json?hours=0")
    assert status == 400 and "hours" in answer["error"]

    without = DashboardThread(f"tcp://127.0.0.1:{free_port()}")
    closing.append(without)
    status, answer = get_json(without.url + "history.json")
    assert status == 404 and "--db" in answer["error"]


def test_history_page_shows_airtime_tracks_and_the_strip(
        recorded, browser, closing, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    url, shares, titles = recorded
    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}", db=url)
    closing.append(dashboard)
    page, requests, errors = watched_page(browser, closing, 1500, 1000)
    page.goto(dashboard.url)
    page.locator("a.nav", has_text="history").click()  # from the live view
    page.wait_for_url("**/history.html")
    page.select_option("#hours", "1")
    expect(page.locator("#updated")).not_to_be_empty(timeout=WAIT_S * 1000)
    for stream in STREAMS:
        panel = page.locator(f'section.hpanel[data-stream="{stream}"]')
        expect(panel).to_be_visible(timeout=WAIT_S * 1000)
        for tag, share in shares[stream].items():
            expect(panel.locator(f'.airtime li[data-tag="{tag}"] .pct')).to_have_text(
                f"{100 * share:.1f}%")
        expect(panel.locator(".tracks tbody tr")).to_have_count(len(titles[stream]))
        expect(panel.locator(".tracks tbody tr").first).to_contain_text(titles[stream][-1])
        # The strip is drawn: its pixels take more than the background's one colour.
        colours = panel.locator("canvas").evaluate("""c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const seen = new Set();
            for (let i = 0; i < d.length; i += 4 * 97) {
                seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
            }
            return seen.size; }""")
        assert colours > 5
    shot = tmp_path / "history.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nhistory screenshot: {shot}")
    origin = dashboard.url.rstrip("/")
    assert not [u for u in requests if not u.startswith((origin + "/", "data:",
                                                         origin.replace("http", "ws", 1)))]
    # The live view's websocket may be refused while its daemon is absent; nothing else.
    assert not [e for e in errors if "WebSocket" not in e], errors
