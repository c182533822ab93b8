"""The venue page (/venue): one stream's mood, full screen, for a screen across a room.

A `FakeDaemon` (support.dashboard: a real Publisher on 127.0.0.1, publishing what a daemon would:
heartbeats, status with the title, and protocol 1.2 scores carrying audio levels and a mood)
feeds the real dashboard server, and Debian's chromium, driven by playwright, shows the page.
The bridge's mood course is tested with its own clock; a page joining late draws it.

Screenshots of the page, dark and light, landscape and portrait, are written to the folder
named by STREAMTAG_SCREENSHOTS (else the test's tmp_path).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("websockets", reason="the dashboard needs websockets: pip install websockets")

from support.dashboard import (  # noqa: E402
    WAIT_S,
    DashboardThread,
    FakeDaemon,
    WatchedPage,
    page_links,
    scores_body,
)
from support.helpers import free_port  # noqa: E402

from streamtag.commands.dashboard import cmd_dashboard  # noqa: E402
from streamtag.web.feed import MOOD_COURSE_S, MOOD_POINTS, MOOD_SLICE_S, FeedState  # noqa: E402
from streamtag.web.server import PAGES, load_static  # noqa: E402
from streamtag.wire.protocol import (  # noqa: E402
    AudioLevel,
    Mood,
    decode,
    encode,
    make_message,
)

TAGS = ("calm", "happy", "sad", "energetic", "electronic", "chillout")
LANDSCAPE = (1920, 1080)
PORTRAIT = (1080, 1920)
VENUE_FILES = ("/venue", "/venue.js", "/venue.css", "/feed.js")


def mood(words=("calm", "warm"), valence=0.4, arousal=-0.4, genres=("electronic", "chillout"),
         since_s=0.0) -> Mood:
    return Mood(words=tuple(words), valence=valence, arousal=arousal, since_s=since_s,
                genres=tuple(genres))


def audio(energy: float) -> AudioLevel:
    return AudioLevel(rms_dbfs=-40 + 30 * energy, peak_dbfs=-20 + 18 * energy, clipped=0,
                      onset_rate_hz=4 * energy, energy=energy)


def mood_daemon(endpoint: str, **streams: dict) -> FakeDaemon:
    """A daemon's feed of the venue's streams (keywords as for FakeDaemon), each stream's
    title published every half second."""
    return FakeDaemon(endpoint, tags=TAGS, status_s=0.5, **streams)


class Clock:
    """The bridge's wall clock: a time set by the test, else the real one."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> float:
        return time.time() if self.at is None else self.at


@pytest.fixture
def endpoint():
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("STREAMTAG_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def received(message) -> dict:
    """A message as the bridge receives it (ReceivedMessage.to_dict()), through the bytes."""
    return {**decode(encode(message)).to_dict(), "gap": 0, "restarted": False}


def heard_for_a_while(endpoint: str, session: str, course, now: float) -> FeedState:
    """A bridge that has heard `course` (a list of (seconds ago, Mood, AudioLevel)) from the
    stream "room" of the daemon session `session`, one scores message a second."""
    clock = Clock()
    state = FeedState([endpoint], clock=clock)
    for seq, (ago_s, feeling, level) in enumerate(course):
        clock.at = now - ago_s
        state.apply_message(received(make_message(
            scores_body(1000 + seq, TAGS, audio=level, mood=feeling), session=session,
            stream="room", seq=seq, sent_at=clock.at)))
    clock.at = None
    return state


def a_course(spans, end_ago_s: float = 0.0):
    """(seconds ago, mood, audio) each second, for spans of (seconds, words, valence, arousal,
    energy), oldest first, ending `end_ago_s` ago."""
    total = sum(span[0] for span in spans)
    out, ago = [], end_ago_s + total
    for seconds, words, valence, arousal, energy in spans:
        for _ in range(int(seconds)):
            out.append((ago, mood(words, valence, arousal), audio(energy)))
            ago -= 1
    return out


# ---------------------------------------------------------------- files, server, command


def test_venue_files_are_served_and_refer_to_nothing_outside_the_page(endpoint, closing):
    files = load_static()
    assert set(VENUE_FILES) <= set(PAGES)
    links = page_links(files["/venue"][0].decode())
    assert {"venue.css", "feed.js", "venue.js"} <= set(links)
    for link in links:
        assert not re.match(r"^([a-z][a-z0-9+.-]*:|//)", link, re.I) or link.startswith("data:"),\
            link
    for path in VENUE_FILES:
        text = files[path][0].decode()
        assert not re.search(r"https?://", text, re.I), f"{path} names an external URL"
        assert not re.search(r"@import|url\(|@font-face", text, re.I), path
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, path
    # The dashboard's main page links to the venue page, and each stream's panel to its own.
    assert 'href="venue"' in files["/"][0].decode()
    assert '"venue?stream=" + encodeURIComponent(id)' in files["/dashboard.js"][0].decode()

    dashboard = DashboardThread(endpoint)
    closing.append(dashboard)
    for path in VENUE_FILES:
        with urllib.request.urlopen(dashboard.url + path.lstrip("/") + "?theme=light",
                                    timeout=5) as response:
            assert response.read() == files[path][0]
            assert response.headers["Content-Type"] == PAGES[path][1]
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(("venue", "stream", "shown"), [
    (False, None, "http://127.0.0.1:8080/ "),
    (True, None, "http://127.0.0.1:8080/venue "),
    (True, "bar:main", "http://127.0.0.1:8080/venue?stream=bar%3Amain "),
])
def test_the_open_line_names_the_venue_page(monkeypatch, capsys, endpoint, venue, stream, shown):
    def serve(connect, port, host, control, ready, stop, **options):
        ready(f"http://{host}:{port}/")

    monkeypatch.setattr("streamtag.web.server.run_dashboard", serve)
    args = argparse.Namespace(connect=[endpoint], control=None, port=8080, host="127.0.0.1",
                              venue=venue, stream=stream)
    assert cmd_dashboard(args) == 0
    assert f"streamtag dashboard: open {shown}(feed {endpoint})" in capsys.readouterr().err


# ---------------------------------------------------------------- the bridge's mood course


def test_feed_state_keeps_the_mood_course():
    clock = Clock()
    state = FeedState(["tcp://127.0.0.1:1"], clock=clock)
    start = 1_000_000.0  # a slice boundary

    def scores(session: str, at: float, level, feeling, restarted=False, seq=0):
        clock.at = at
        message = received(make_message(scores_body(1 + abs(at - start), TAGS, audio=level,
                                                     mood=feeling),
                                        session=session, stream="room", seq=seq))
        state.apply_message({**message, "restarted": restarted})

    scores("s1", start + 0.5, audio(0.2), mood(("calm",), 0.5, -0.5))
    scores("s1", start + 4.9, audio(0.3), mood(("warm", "calm"), 0.3, -0.2))  # same slice
    scores("s1", start + 5.0, None, mood((), 0.0, 0.0))                        # silence
    room = state.view("room")
    assert room["moods"] == [[start, 0.3, -0.2, 0.3, "warm"], [start + 5, 0.0, 0.0, None, None]]
    assert room["mood"]["words"] == [] and room["audio"] is None
    scores("s1", start + 12, audio(0.9), None)  # a model that names no moods: no point
    assert len(state.view("room")["moods"]) == 2
    assert state.view("room")["audio"]["energy"] == 0.9 and state.view("room")["mood"] is None

    # A new daemon session keeps the course but forgets the mood until its first scores.
    scores("s1", start + 20, audio(0.5), mood(("dark",), -0.5, 0.5))
    clock.at = start + 21
    state.apply_message(received(make_message(scores_body(1, TAGS, audio=audio(0.5)),
                                              session="s2", stream="room", seq=0))
                        | {"restarted": True})
    room = state.view("room")
    assert len(room["moods"]) == 3 and room["mood"] is None
    hello = json.loads(json.dumps(state.hello()))  # what a page gets
    assert hello["streams"]["room"]["moods"] == room["moods"]

    # Half an hour is kept, one point a slice, and no more, however long it runs.
    for i in range(int(2 * MOOD_COURSE_S / MOOD_SLICE_S)):
        scores("s2", start + 30 + i * MOOD_SLICE_S, audio(0.5), mood(("calm",), 0.5, -0.5),
               seq=i + 1)
    moods = state.view("room")["moods"]
    assert len(moods) <= MOOD_POINTS
    assert moods[-1][0] - moods[0][0] <= MOOD_COURSE_S + MOOD_SLICE_S
    assert moods[-1][0] - moods[0][0] >= MOOD_COURSE_S - MOOD_SLICE_S
    clock.at = start  # the clock set back: the course still cannot grow without end
    for i in range(50):
        scores("s2", start - i * MOOD_SLICE_S, audio(0.5), mood(("calm",), 0.5, -0.5))
    assert len(state.view("room")["moods"]) <= MOOD_POINTS


# ---------------------------------------------------------------- the page in a browser


class Venue(WatchedPage):
    """A venue page in the browser, with the URLs it requested and the errors it logged."""

    def __init__(self, browser, closing, url: str, size=LANDSCAPE, motion="no-preference"):
        super().__init__(browser, closing, *size, reduced_motion=motion)
        self.page.goto(url)
        self.shown = self.page.locator(".words.shown")

    def expect_words(self, *words: str) -> None:
        from playwright.sync_api import expect

        expect(self.shown.locator(".word")).to_have_text(list(words), timeout=WAIT_S * 1000)

    def expect_message(self, text: str) -> None:
        from playwright.sync_api import expect

        expect(self.shown.locator(".message")).to_have_text(text, timeout=WAIT_S * 1000)

    def settled(self) -> None:
        """Wait for the cross-fade to end: the words shown opaque, the others gone."""
        self.page.wait_for_function(
            """() => [...document.querySelectorAll('.words')].every((n) =>
                 getComputedStyle(n).opacity === (n.classList.contains('shown') ? '1' : '0'))""",
            timeout=WAIT_S * 1000)

    def energy_shown(self, energy: float) -> None:
        """Wait for the meter's fill to reach `energy` of its track."""
        self.page.wait_for_function(
            """(energy) => {
                 const fill = document.getElementById('meter-fill').getBoundingClientRect();
                 const track = document.querySelector('.meter-track').getBoundingClientRect();
                 return track.width > 0 && Math.abs(fill.width / track.width - energy) < 0.02;
               }""", arg=energy, timeout=WAIT_S * 1000)

    def words_box(self) -> dict:
        """The words' font size and where they lie, against the viewport and the stage."""
        return self.shown.evaluate("""(layer) => {
            const stage = document.getElementById('stage').getBoundingClientRect();
            const boxes = [...layer.querySelectorAll('.word')].map((w) => {
              const range = document.createRange();
              range.selectNodeContents(w);
              const r = range.getBoundingClientRect();
              return {left: r.left, top: r.top, right: r.right, bottom: r.bottom};
            });
            return {font: parseFloat(getComputedStyle(layer).fontSize), boxes,
                    stage: {left: stage.left, top: stage.top, right: stage.right,
                            bottom: stage.bottom},
                    width: innerWidth, height: innerHeight};
        }""")

    def assert_words_fit(self) -> dict:
        box = self.words_box()
        assert box["boxes"], "no words shown"
        for word in box["boxes"]:
            for name in ("left", "top"):
                assert word[name] >= max(0, box["stage"][name]) - 1, (word, box)
            assert word["right"] <= min(box["width"], box["stage"]["right"]) + 1, (word, box)
            assert word["bottom"] <= min(box["height"], box["stage"]["bottom"]) + 1, (word, box)
        return box

    def background(self) -> tuple[int, ...]:
        color = self.page.evaluate("getComputedStyle(document.body).backgroundColor")
        return tuple(int(v) for v in re.findall(r"\d+", color)[:3])

    def shot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))
        assert path.stat().st_size > 10_000


def test_the_mood_is_shown_large_and_follows_the_feed(browser, endpoint, closing):
    station = mood_daemon(endpoint, room={"audio": audio(0.3), "mood": mood(("calm", "warm")),
                                           "title": "Nils Frahm - Says"})
    closing.append(station)
    dashboard = DashboardThread(endpoint)
    closing.append(dashboard)
    venue = Venue(browser, closing, dashboard.url + "venue")
    page = venue.page
    from playwright.sync_api import expect

    venue.expect_words("calm", "warm")
    expect(page.locator("#title")).to_have_text("Nils Frahm - Says", timeout=WAIT_S * 1000)
    expect(page.locator("#genres")).to_have_text("electronic / chillout")
    venue.settled()
    venue.energy_shown(0.3)
    box = venue.assert_words_fit()
    assert box["font"] >= 0.12 * LANDSCAPE[1], box
    # Calm motion: the words cross-fade, the meter eases.
    assert venue.shown.evaluate("n => getComputedStyle(n).transitionDuration") == "1.8s"
    assert page.locator("#reconnecting").is_hidden()

    # The published words change: the new ones fade in, large; the meter follows the energy.
    station.set(mood=mood(("euphoric",), 0.7, 0.8, genres=("dance", "house", "pop")),
                audio=audio(0.85))
    venue.expect_words("euphoric")
    venue.settled()
    venue.energy_shown(0.85)
    expect(page.locator("#genres")).to_have_text("dance / house")
    assert venue.assert_words_fit()["font"] >= 0.12 * LANDSCAPE[1]
    # Long words shrink to fit, in landscape and in portrait.
    for words in (("melancholic",), ("melancholic", "bittersweet")):
        station.set(mood=mood(words, -0.5, -0.3))
        venue.expect_words(*words)
        for size in (LANDSCAPE, PORTRAIT):
            page.set_viewport_size({"width": size[0], "height": size[1]})
            page.wait_for_function(
                """([w, h]) => {
                     const s = document.querySelector('.words.shown');
                     return innerWidth === w && s.dataset.fittedFor === w + 'x' + h;
                   }""", arg=list(size), timeout=WAIT_S * 1000)
            box = venue.assert_words_fit()
            if size == LANDSCAPE:
                assert box["font"] >= 0.12 * LANDSCAPE[1], (words, box)
            else:  # portrait: as wide as the screen allows
                widest = max(b["right"] for b in box["boxes"]) - min(b["left"]
                                                                    for b in box["boxes"])
                assert widest >= 0.6 * PORTRAIT[0], (words, box)
        page.set_viewport_size({"width": LANDSCAPE[0], "height": LANDSCAPE[1]})
    # The music gone (a voice, dead air: the mood has no words): the words and the genre line
    # go at once, the words with a quick fade rather than the mood's slow one.
    station.set(mood=mood((), 0.0, 0.0, genres=()))
    venue.expect_message("waiting for music")
    expect(page.locator("#genres")).to_have_text("")
    assert venue.shown.evaluate("n => getComputedStyle(n).transitionDuration") == "0.4s"
    venue.settled()
    assert not venue.outside(dashboard.url), venue.requests
    assert not venue.errors, venue.errors


def test_the_url_picks_the_stream_and_the_theme(browser, endpoint, closing, shots):
    from playwright.sync_api import expect

    hostile = '<img src="/x" onerror="document.title=1">Title & "quotes"'
    station = mood_daemon(endpoint,
                           bar={"audio": audio(0.6), "mood": None, "title": hostile},
                           room={"audio": audio(0.4), "mood": mood(("warm",), 0.5, 0.1)},
                           yard={"scores": False})
    closing.append(station)
    dashboard = DashboardThread(endpoint)
    closing.append(dashboard)
    # No stream named: the first with a mood ("bar" comes first, but names none).
    chosen = Venue(browser, closing, dashboard.url + "venue", motion="reduce")
    chosen.expect_words("warm")
    expect(chosen.page.locator("body")).to_have_attribute("data-stream", "room")
    # A model that names no moods: the energy and the title, and a line that says so.
    bar = Venue(browser, closing, dashboard.url + "venue?stream=bar&theme=light",
                motion="reduce")
    bar.expect_message("no mood to show")
    expect(bar.page.locator("#title")).to_have_text(hostile, timeout=WAIT_S * 1000)
    expect(bar.page.locator("#meter")).to_be_visible()
    bar.energy_shown(0.6)
    assert bar.page.title() == "streamtag venue"
    assert min(bar.background()) > 200, bar.background()  # light
    assert max(chosen.background()) < 40, chosen.background()  # dark, the default
    # Reduced motion: no fades.
    assert bar.shown.evaluate("n => getComputedStyle(n).transitionDuration") == "0s"
    # No scores yet: waiting. An unknown stream: said so, with the streams there are.
    yard = Venue(browser, closing, dashboard.url + "venue?stream=yard", motion="reduce")
    yard.expect_message("waiting for music")
    expect(yard.page.locator("#meter")).to_be_hidden()
    nope = Venue(browser, closing, dashboard.url + "venue?stream=<b>nope</b>", motion="reduce")
    nope.expect_message("no stream <b>nope</b>")
    expect(nope.shown.locator(".detail")).to_have_text("streams: bar, room, yard")
    # Silence: the mood has no words.
    station.set("room", mood=mood((), 0.0, 0.0, genres=()))
    chosen.expect_message("waiting for music")
    for name, venue in (("no-moods", bar), ("unknown-stream", nope), ("waiting", chosen)):
        venue.shot(shots / f"venue-{name}.png")
    for venue in (chosen, bar, yard, nope):
        assert not venue.outside(dashboard.url), venue.requests
        assert not [u for u in venue.requests if u.endswith("/x")], venue.requests
        assert not venue.errors, venue.errors

    # The dashboard links each stream to its venue screen.
    main = Venue(browser, closing, dashboard.url, motion="reduce")
    link = main.page.locator('section.panel[data-stream="room"] a.venue-link')
    expect(link).to_have_attribute("href", "venue?stream=room", timeout=WAIT_S * 1000)
    link.click()
    main.expect_message("waiting for music")
    expect(main.page.locator("body")).to_have_attribute("data-stream", "room")


def test_a_late_page_draws_the_mood_course(browser, endpoint, closing):
    # The bridge has heard twenty minutes: ten calm, then ten energetic; the page opens now
    # with half an hour's ribbon, so its oldest third is empty.
    station = mood_daemon(endpoint, room={"audio": audio(0.85),
                                           "mood": mood(("energetic",), 0.6, 0.7)})
    closing.append(station)
    course = a_course([(600, ("calm",), 0.5, -0.5, 0.25), (600, ("energetic",), 0.6, 0.7, 0.85)])
    state = heard_for_a_while(endpoint, station.publisher.session, course, time.time())
    dashboard = DashboardThread(endpoint, state=state)
    closing.append(dashboard)
    venue = Venue(browser, closing, dashboard.url + "venue?stream=room&minutes=30",
                  motion="reduce")
    venue.expect_words("energetic")
    from playwright.sync_api import expect

    expect(venue.page.locator("#axis-start")).to_have_text("\u221230 min")

    def pixel(share: float) -> tuple[int, int, int]:
        return tuple(venue.page.evaluate("""(share) => {
            const canvas = document.getElementById('ribbon-canvas');
            const x = Math.min(canvas.width - 1, Math.floor(canvas.width * share));
            return [...canvas.getContext('2d').getImageData(x, canvas.height >> 1, 1, 1).data]
              .slice(0, 3);
        }""", share))

    venue.page.wait_for_function(
        """() => { const c = document.getElementById('ribbon-canvas');
                   const [r, g, b] = c.getContext('2d').getImageData(c.width - 2, c.height >> 1,
                                                                      1, 1).data;
                   return r > g && r > b; }""", timeout=WAIT_S * 1000)
    empty, calm, energetic, now = pixel(0.15), pixel(0.5), pixel(0.8), pixel(0.999)
    assert calm != empty and energetic != empty, (empty, calm, energetic)
    assert calm[1] > calm[0] and calm[2] > calm[0], f"calm and positive is teal: {calm}"
    assert energetic[0] > energetic[2], f"energetic and positive is amber: {energetic}"
    assert math.dist(calm, energetic) > 60, (calm, energetic)
    assert math.dist(now, energetic) < 30, (now, energetic)


def test_the_page_keeps_working_across_restarts(browser, endpoint, closing, shots):
    from playwright.sync_api import expect

    station = mood_daemon(endpoint, room={"audio": audio(0.5), "mood": mood(("dreamy",), 0.3,
                                                                              -0.6)})
    closing.append(station)
    dashboard = DashboardThread(endpoint)
    closing.append(dashboard)
    venue = Venue(browser, closing, dashboard.url + "venue?stream=room", motion="reduce")
    venue.expect_words("dreamy")
    mark = venue.page.locator("#reconnecting")
    assert mark.is_hidden()

    # The daemon goes away: the last mood stays, dimmed, with a mark across the top.
    station.close()
    expect(mark).to_be_visible(timeout=WAIT_S * 1000)
    expect(venue.page.locator("body")).to_have_class("lost")
    venue.expect_words("dreamy")
    venue.page.wait_for_function(
        "() => getComputedStyle(document.querySelector('main')).opacity < 0.6")
    venue.shot(shots / "venue-daemon-lost.png")
    # It comes back as a new session with another mood.
    station = mood_daemon(endpoint, room={"audio": audio(0.9), "mood": mood(("fierce",), -0.6,
                                                                              0.8)})
    closing.append(station)
    venue.expect_words("fierce")
    expect(mark).to_be_hidden(timeout=WAIT_S * 1000)
    expect(venue.page.locator("body")).not_to_have_class("lost")

    # The dashboard server restarts on its port: the page reconnects by itself.
    port = dashboard.port
    dashboard.stop()
    expect(mark).to_be_visible(timeout=WAIT_S * 1000)
    station.set(mood=mood(("serene",), 0.6, -0.7))
    dashboard = DashboardThread(endpoint, port=port)
    closing.append(dashboard)
    venue.expect_words("serene")
    expect(mark).to_be_hidden(timeout=WAIT_S * 1000)
    assert not venue.outside(dashboard.url), venue.requests
    # Chromium logs each refused websocket connection while the server was away; nothing else.
    assert not [e for e in venue.errors if "WebSocket connection to" not in e], venue.errors


def contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """WCAG 2 contrast ratio of two sRGB colours."""
    def luminance(rgb):
        c = [v / 255 for v in rgb[:3]]
        c = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# The reconnecting mark read from across a room, at 1920x1080: text at least 5 % of the
# screen's height (54 px; on a 40-inch screen about 25 mm, the cap height a sign read at 8-10 m
# needs) and at least WCAG's AAA contrast (7:1) against its own opaque background.
MARK_FONT_SHARE = 0.05
MARK_CONTRAST = 7.0


def test_the_genre_line_can_be_hidden_and_the_reconnecting_mark_reads_across_the_room(
        browser, endpoint, closing, shots):
    from playwright.sync_api import expect

    station = mood_daemon(endpoint, room={"audio": audio(0.5), "mood": mood(("calm", "warm")),
                                           "title": "Nils Frahm - Says"})
    closing.append(station)
    dashboard = DashboardThread(endpoint)
    closing.append(dashboard)
    pages = {}
    for theme in ("dark", "light"):
        pages[theme, "1"] = Venue(browser, closing,
                                  dashboard.url + f"venue?stream=room&theme={theme}",
                                  motion="reduce")
        pages[theme, "0"] = Venue(browser, closing,
                                  dashboard.url + f"venue?stream=room&theme={theme}&genre=0",
                                  motion="reduce")
    for (_, genre), venue in pages.items():
        venue.expect_words("calm", "warm")
        expect(venue.page.locator("#title")).to_have_text("Nils Frahm - Says",
                                                          timeout=WAIT_S * 1000)
        if genre == "1":
            expect(venue.page.locator("#genres")).to_have_text("electronic / chillout")
        else:
            expect(venue.page.locator("#genres")).to_be_hidden()
            assert venue.page.locator("#about").inner_text().strip() == "Nils Frahm - Says"

    station.close()  # the daemon goes away: every page marks it
    for (theme, genre), venue in pages.items():
        mark = venue.page.locator("#reconnecting")
        expect(mark).to_be_visible(timeout=WAIT_S * 1000)
        style = mark.evaluate("""(n) => { const s = getComputedStyle(n);
            const r = n.getBoundingClientRect();
            return {font: parseFloat(s.fontSize), color: s.color, background: s.backgroundColor,
                    left: r.left, right: r.right, top: r.top, width: innerWidth}; }""")
        assert style["font"] >= MARK_FONT_SHARE * LANDSCAPE[1], (theme, style)
        fg = tuple(int(v) for v in re.findall(r"[\d.]+", style["color"])[:3])
        bg_values = re.findall(r"[\d.]+", style["background"])
        assert len(bg_values) == 3 or float(bg_values[3]) == 1.0, style  # opaque
        bg = tuple(int(float(v)) for v in bg_values[:3])
        assert contrast(fg, bg) >= MARK_CONTRAST, (theme, style, contrast(fg, bg))
        assert 0 <= style["left"] and style["right"] <= style["width"] and style["top"] >= 0
        if genre == "1":
            venue.shot(shots / f"venue-reconnecting-{theme}.png")


def test_the_page_says_when_the_input_is_lost_or_the_music_stops(browser, endpoint, closing,
                                                                 shots):
    from playwright.sync_api import expect

    station = mood_daemon(endpoint, room={"audio": audio(0.5), "mood": mood(("calm", "warm")),
                                           "title": "Nils Frahm - Says"})
    closing.append(station)
    dashboard = DashboardThread(endpoint)
    closing.append(dashboard)
    venue = Venue(browser, closing, dashboard.url + "venue?stream=room", motion="reduce")
    page = venue.page
    mark, body, meter = page.locator("#reconnecting"), page.locator("body"), page.locator("#meter")
    venue.expect_words("calm", "warm")
    assert mark.is_hidden()

    # The sound card goes away (the daemon lives on): the last mood stays, dimmed, marked.
    station.set(state="reconnecting", error="the device stopped delivering audio", scores=False)
    expect(mark).to_have_text("input lost \u2014 reconnecting", timeout=WAIT_S * 1000)
    expect(body).to_have_class("lost")
    venue.expect_words("calm", "warm")
    venue.shot(shots / "venue-input-lost.png")
    station.set(state="running", error=None, scores=True)
    expect(mark).to_be_hidden(timeout=WAIT_S * 1000)
    expect(body).not_to_have_class("lost")

    # The stream ends (a file played out) or fails: said, not its last mood as if it played.
    station.set(state="ended", scores=False)
    venue.expect_message("the music stopped")
    expect(meter).to_be_hidden()
    assert mark.is_hidden()
    station.set(state="failed", error="no input device matches 'bar'")
    venue.expect_message("no input")
    expect(venue.shown.locator(".detail")).to_have_text(
        "stream room failed: no input device matches 'bar'")
    assert not venue.errors, venue.errors


def test_the_page_waits_for_the_daemon_and_says_so(browser, endpoint, closing):
    dashboard = DashboardThread(endpoint)  # nothing publishes there
    closing.append(dashboard)
    venue = Venue(browser, closing, dashboard.url + "venue")
    venue.expect_message("waiting for the daemon")
    from playwright.sync_api import expect

    expect(venue.shown.locator(".detail")).to_have_text(endpoint)
    # the daemon starts: its mood is shown
    station = mood_daemon(endpoint, room={"audio": audio(0.5), "mood": mood(("calm", "warm"))})
    closing.append(station)
    venue.expect_words("calm", "warm")


def test_screenshots(browser, endpoint, closing, shots):
    """The screen as a room sees it, dark and light, landscape and portrait."""
    station = mood_daemon(endpoint, room={"audio": audio(0.55), "mood": mood(("calm", "warm")),
                                           "title": "Bonobo - Kerala"})
    closing.append(station)
    course = a_course([(240, ("sad",), -0.5, -0.5, 0.15), (300, ("calm",), 0.45, -0.5, 0.3),
                       (240, ("happy",), 0.6, 0.4, 0.7), (150, ("tense",), -0.5, 0.6, 0.9),
                       (30, (), 0.0, 0.0, 0.0), (240, ("warm",), 0.5, -0.1, 0.5)])
    state = heard_for_a_while(endpoint, station.publisher.session, course, time.time())
    dashboard = DashboardThread(endpoint, state=state)
    closing.append(dashboard)
    from playwright.sync_api import expect

    for theme in ("dark", "light"):
        for size in (LANDSCAPE, PORTRAIT):
            venue = Venue(browser, closing, dashboard.url + f"venue?stream=room&theme={theme}",
                          size=size, motion="reduce")
            venue.expect_words("calm", "warm")
            expect(venue.page.locator("#title")).to_have_text("Bonobo - Kerala",
                                                              timeout=WAIT_S * 1000)
            venue.energy_shown(0.55)
            venue.assert_words_fit()
            venue.shot(shots / f"venue-{theme}-{size[0]}x{size[1]}.png")
