"""What the audio is, on the dashboard's pages in Debian's chromium: the live page names what
each stream hears (music, speech, dead air, a stuck tone) and shows no tag on while it is not
music, even where the daemon's window still lists one (as a run of speech's first windows do);
the history page gives the content shares and draws the content row above the tags, with the
tag off over the bulletins. Real parts: a real Publisher (FakeDaemon) and the real dashboard
server, a real recorder and SQLite file for the history."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("websockets", reason="the dashboard needs websockets: pip install websockets")

from support.content_material import RATE, festival_speech, game_music, require  # noqa: E402
from support.content_programme import recorded, start  # noqa: E402
from support.dashboard import FakeDaemon, WatchedPage, real_daemon_page  # noqa: E402
from support.helpers import free_port, make_config, tiny_model_file  # noqa: E402

from streamtag.audio.files import write_audio  # noqa: E402
from streamtag.daemon.config import SourceConfig  # noqa: E402
from streamtag.web.feed import FeedState  # noqa: E402
from tests.web.test_server import (  # noqa: E402
    TAGS,
    WAIT_S,
    DashboardThread,
)

# The alpha of the live timeline's pixel in the "calm" row (its first) 1.5 s ago, in a bin
# whole by then (the page's timeline: 150 px of labels, rows of 34 px from y 4, one bin a
# second of 60 s).
CALM_RECENTLY = """() => {
    const c = document.querySelector('section.panel[data-stream="room"] .timeline canvas');
    const ratio = window.devicePixelRatio || 1;
    const width = c.width / ratio;
    const bin = (width - 150 - 6) / 60;
    const x = Math.round((width - 6 - 1.5 * bin) * ratio);
    return c.getContext('2d').getImageData(x, Math.round(21 * ratio), 1, 1).data[3]; }"""


def scores_message(content: str | None, active: list[str], seq: int) -> dict:
    return {"topic": "scores.radio", "gap": 0, "restarted": False,
            "header": {"version": "1.7", "msg_type": "scores", "msg_id": "a" * 32,
                       "session": "s1", "stream": "radio", "seq": seq, "sent_at": 1.0},
            "body": {"start_s": seq, "end_s": seq + 1.0, "start_sample": 0, "end_sample": 1,
                     "tags": ["calm", "dark"], "raw": [0.9, 0.1], "smoothed": [0.9, 0.1],
                     "active": active, "model": {"name": "m", "hash": "h"},
                     "latency_ms": 1.0, **({"content": content} if content else {})}}


def test_the_feed_shows_no_tag_on_while_the_audio_is_not_music():
    clock = [1000.0]
    state = FeedState(["tcp://127.0.0.1:1"], clock=lambda: clock[0])
    state.apply_message(scores_message("music", ["calm"], 0))
    assert state.view("radio")["content"] == "music"
    assert state.view("radio")["active"] == ["calm"]
    clock[0] += 1.0
    state.apply_message(scores_message("speech", ["calm"], 1))
    view = state.hello()["streams"]["radio"]  # what a page that connects now is told
    assert view["content"] == "speech" and view["active"] == []
    assert view["history"][-1][1] == []  # nor in the timeline's newest second
    state.apply_message(scores_message(None, ["calm"], 2))  # a daemon without [content]
    assert state.view("radio")["content"] is None
    assert state.view("radio")["active"] == ["calm"]


def screenshots(tmp_path) -> Path:
    return Path(os.environ.get("STREAMTAG_SCREENSHOTS") or tmp_path)


def test_the_live_page_says_what_each_stream_hears_and_shows_no_tag_over_speech(
        browser, endpoints, closing, tmp_path):
    from playwright.sync_api import expect

    pub, control = endpoints
    daemon = FakeDaemon(pub, control, tags=TAGS, room={"active": ("calm",), "content": "music"})
    closing.append(daemon)
    dashboard = DashboardThread(pub, control=control, history_s=60)
    closing.append(dashboard)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    closing.append(page)
    page.goto(dashboard.url)
    panel = page.locator('section.panel[data-stream="room"]')
    word = panel.locator(".content-now")
    expect(word).to_have_text("music", timeout=WAIT_S * 1000)
    expect(panel.locator('.tile[data-tag="calm"]')).to_be_visible()
    page.wait_for_function(f"() => ({CALM_RECENTLY})() === 255", timeout=WAIT_S * 1000)

    # the bulletin: each window still lists calm as active, and the page shows it off
    daemon.set(content="speech")
    expect(word).to_have_text("speech", timeout=WAIT_S * 1000)
    expect(panel.locator(".tile[data-tag]")).to_have_count(0)
    expect(panel.locator(".tile.none")).to_have_text("no active tag")
    expect(panel.locator(".bar.on")).to_have_count(0)
    expect(panel).to_have_class(re.compile(r"\bnot-music\b"))  # its scores' bars dimmed
    page.wait_for_function(f"() => ({CALM_RECENTLY})() === 0", timeout=WAIT_S * 1000)
    shot = screenshots(tmp_path) / "dashboard-speech.png"
    page.screenshot(path=str(shot))
    print(f"\ndashboard screenshot: {shot}")
    # a page that connects during it learns it at once
    late = browser.new_page(viewport={"width": 1200, "height": 800})
    closing.append(late)
    late.goto(dashboard.url)
    late_panel = late.locator('section.panel[data-stream="room"]')
    expect(late_panel.locator(".content-now")).to_have_text("speech", timeout=WAIT_S * 1000)
    expect(late_panel.locator(".tile[data-tag]")).to_have_count(0)

    for content, said in (("silence", "dead air"), ("tone", "stuck tone"), ("noise", "noise")):
        daemon.set(content=content)
        expect(word).to_have_text(said, timeout=WAIT_S * 1000)
        expect(panel.locator(".tile[data-tag]")).to_have_count(0)
    daemon.set(content="music")
    expect(word).to_have_text("music", timeout=WAIT_S * 1000)
    expect(panel).not_to_have_class(re.compile(r"\bnot-music\b"))
    expect(panel.locator('.tile[data-tag="calm"]')).to_be_visible()


@pytest.fixture(scope="module")
def evening(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('content-page') / 'tags.db'}"
    recorded(url)
    return url


# The history page's canvas: its colour at a time of the span and a row (0: content)
PIXEL = """([unixS, row]) => {
    const c = document.querySelector('section.hpanel[data-stream="radio-1"] canvas');
    const ratio = window.devicePixelRatio || 1;
    const width = c.width / ratio;
    const until = Number(document.body.dataset.loaded);
    const since = until - 3 * 3600;
    const x = 110 + (unixS - since) / (until - since) * (width - 110);
    const y = 34 + row * 22 + 11;
    return Array.from(c.getContext('2d').getImageData(Math.round(x * ratio),
                                                       Math.round(y * ratio), 1, 1).data
                      .slice(0, 3)); }"""


def near(got: list[int], want: list[int]) -> bool:
    """The canvas' colour within what the browser's colour conversion rounds."""
    return max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 3


def test_the_history_page_gives_content_shares_and_no_tag_over_the_bulletins(
        evening, browser, closing, tmp_path):
    from playwright.sync_api import expect

    dashboard = DashboardThread(f"tcp://127.0.0.1:{free_port()}", db=evening)
    closing.append(dashboard)
    # in Berlin, as the evening was scripted: its hours are the page's
    watched = WatchedPage(browser, closing, 1500, 900, timezone_id="Europe/Berlin",
                          locale="en-US")
    page, errors = watched.page, watched.errors
    until = start() + 3 * 3600
    page.goto(dashboard.url + f"history.html?until={until:.0f}")
    page.select_option("#span", "180")
    panel = page.locator('section.hpanel[data-stream="radio-1"]')
    expect(panel).to_be_visible(timeout=WAIT_S * 3000)
    shares = panel.locator(".content-shares")
    expect(shares.locator('[data-content="music"]')).to_have_text("music 91.1%")
    expect(shares.locator('[data-content="speech"]')).to_have_text("speech 6.7%")
    expect(shares.locator('[data-content="silence"]')).to_have_text("dead air 2.2%")
    # the tag listed in every window is on for the music's share alone
    expect(panel.locator('.airtime li[data-tag="calm"] .pct')).to_have_text("91.1%")
    page.wait_for_function(f"() => document.body.dataset.loaded === '{until:.0f}'")
    bulletin, dead_air, music = start() + 33 * 60, start() + 98 * 60, start() + 15 * 60
    assert near(page.evaluate(PIXEL, [bulletin, 0]), [230, 134, 26])  # speech's orange
    assert near(page.evaluate(PIXEL, [dead_air, 0]), [242, 242, 242])
    assert near(page.evaluate(PIXEL, [music, 0]), [27, 158, 119])
    assert near(page.evaluate(PIXEL, [bulletin, 1]), [68, 1, 84])  # the tag off
    assert near(page.evaluate(PIXEL, [dead_air, 1]), [68, 1, 84])
    assert near(page.evaluate(PIXEL, [music, 1]), [253, 231, 37])  # on
    # per hour of the page's zone: the bulletins on the hour, the dead air after midnight's
    hours = panel.locator(".content-hours")
    expect(hours.locator("summary")).to_have_text("content per hour (4 hours)")
    hours.locator("summary").click()
    expect(hours.locator("thead th")).to_have_text(
        ["hour", "music", "speech", "dead air", "windows"])
    rows = hours.locator("tbody tr")
    expect(rows).to_have_count(4)
    assert [rows.nth(i).locator("td").all_text_contents() for i in range(4)] == [
        ["Nov 20, 2026, 22:00", "100.0%", "-", "-", "180"],
        ["Nov 20, 2026, 23:00", "90.0%", "10.0%", "-", "360"],
        ["Nov 21, 2026, 00:00", "83.3%", "10.0%", "6.7%", "360"],
        ["Nov 21, 2026, 01:00", "100.0%", "-", "-", "180"]]
    shot = screenshots(tmp_path) / "history-content.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nhistory screenshot: {shot}")
    assert not [e for e in errors if "WebSocket" not in e], errors


@pytest.mark.slow  # 20 s: the programme in real time; the page's part runs by default above
def test_a_real_daemon_s_bulletin_is_speech_on_the_page_with_no_tag(
        browser, closing, tmp_path):
    """Music, a spoken bulletin (festival, held out of the classifier's fit) and music again
    through a real daemon, in real time four times as fast: the page says "speech" with no
    tag on over the bulletin, and "music" with its tags around it."""
    from playwright.sync_api import expect

    require()
    speech = festival_speech(tmp_path)[: 24 * RATE]
    audio = np.concatenate([game_music(1, 12), speech / np.abs(speech).max() * 0.5,
                            game_music(4, 16)])
    path = tmp_path / "programme.flac"
    write_audio(path, audio.astype(np.float32), RATE)
    model = tiny_model_file(tmp_path / "tiny.pt", window=187, hop=62,
                            thresholds=(0.01, 0.01, 0.01, 0.01))
    daemon, page, errors = real_daemon_page(browser, closing, make_config(model, tmp_path))
    daemon.add_source(SourceConfig("radio", f"file:{path}", {"realtime": True, "speed": 4.0}))
    panel = page.locator('section.panel[data-stream="radio"]')
    word = panel.locator(".content-now")
    expect(word).to_have_text("music", timeout=WAIT_S * 1000)
    expect(panel.locator(".tile[data-tag]")).not_to_have_count(0)
    expect(word).to_have_text("speech", timeout=WAIT_S * 2000)
    expect(panel.locator(".tile[data-tag]")).to_have_count(0)
    expect(panel.locator(".tile.none")).to_have_text("no active tag")
    expect(word).to_have_text("music", timeout=WAIT_S * 2000)
    expect(panel.locator(".tile[data-tag]")).not_to_have_count(0, timeout=WAIT_S * 1000)
    assert errors == []
