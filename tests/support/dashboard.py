"""What the dashboard and venue tests share: a `FakeDaemon` (a real Publisher and, when asked,
a real ControlServer on 127.0.0.1, publishing what a daemon would), the real dashboard server in
a thread, and Debian's chromium driven by playwright, with what a page requested and logged.

Import it after `pytest.importorskip("websockets")`: the dashboard server needs websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

from streamtag.web import run_dashboard
from streamtag.web.feed import FeedState
from streamtag.web.server import Dashboard
from streamtag.wire.control import ControlServer
from streamtag.wire.protocol import AudioLevel, Mood, ScoresBody
from streamtag.wire.publisher import Publisher

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync")
BROWSER_MISSING = "needs Debian chromium and playwright: apt-get install chromium; " \
                  "pip install playwright"
MODEL = {"name": "venue-test", "hash": "sha256:0123abcd"}
WAIT_S = 10.0


def tag_scores(tags: tuple[str, ...], active: tuple[str, ...]) -> list[float]:
    return [0.9 if tag in active else 0.1 for tag in tags]


def scores_body(end_s: float, tags: tuple[str, ...], active: tuple[str, ...] = (),
                audio: AudioLevel | None = None, mood: Mood | None = None,
                content: str | None = None) -> ScoresBody:
    """The window of a second ending at `end_s`: 0.9 for the active tags, 0.1 for the others;
    `content` what its audio is (protocol 1.7)."""
    values = tag_scores(tags, active)
    return ScoresBody(start_s=max(0.0, end_s - 1), end_s=end_s,
                      start_sample=int(max(0.0, end_s - 1) * 16000), end_sample=int(end_s * 16000),
                      tags=tags, raw=values, smoothed=values, active=active, model=MODEL,
                      latency_ms=5.0, audio=audio, mood=mood, content=content)


class FakeDaemon:
    """What a daemon publishes on `endpoint` for its streams, as the test sets it (`set`,
    `set_active`, `status`): heartbeats, each stream's scores for `tags` and, every `status_s`
    (never when None), each stream's status with its title. Each keyword names a stream and
    its state: active (tags), scores (False: none published), audio (AudioLevel), mood (Mood),
    content (what the audio is: music, speech, ...; None: not said), title, state and error
    (its status: "running" and None unless set). With `control`, a ControlServer answers
    snapshot and status as a daemon would.
    A new FakeDaemon on the same endpoints is a restarted daemon (a new session)."""

    def __init__(self, endpoint: str, control: str | None = None, *, tags: tuple[str, ...],
                 status_s: float | None = None, heartbeat_s: float = 0.2, tick_s: float = 0.1,
                 **streams: dict):
        self.tags = tuple(tags)
        self.streams = {name: {"active": (), "scores": True, "audio": None, "mood": None,
                               "content": None, "title": None, **state}
                        for name, state in streams.items()}
        self.publisher = self._bind(endpoint)
        self.control = None
        if control is not None:
            self.control = ControlServer(control, {"snapshot": self._snapshot,
                                                   "status": self._status}).start()
        self._intervals = (heartbeat_s, status_s, tick_s)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # held by whoever publishes: a ZeroMQ socket is not shared
        self._thread = threading.Thread(target=self._run, name="fake-daemon", daemon=True)
        self._thread.start()

    @staticmethod
    def _bind(endpoint: str) -> Publisher:
        # The previous publisher's port is released asynchronously by ZeroMQ's I/O thread.
        deadline = time.monotonic() + 5
        while True:
            try:
                return Publisher(endpoint, linger_ms=0)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _snapshot(self, request: dict) -> dict:
        with self._lock:
            return {"session": self.publisher.session,
                    "model": {**MODEL, "tags": list(self.tags),
                              "thresholds": [0.5] * len(self.tags)},
                    "streams": {name: {"tags": list(self.tags),
                                       "smoothed": tag_scores(self.tags, state["active"]),
                                       "active": list(state["active"]), "windows": 7}
                                for name, state in self.streams.items()}}

    def _status(self, request: dict) -> dict:
        with self._lock:
            return {"session": self.publisher.session,
                    "streams": {name: {"state": state.get("state", "running"),
                                       "error": state.get("error"),
                                       "source": "device:test", "title": state["title"],
                                       "counters": {"windows": 7}}
                                for name, state in self.streams.items()}}

    def set(self, stream: str = "room", **state) -> None:
        with self._lock:
            self.streams[stream].update(state)

    def set_active(self, *tags: str, stream: str = "room") -> None:
        """The stream's active tags from now on, with an event for each that changed."""
        with self._lock:
            state = self.streams[stream]
            before, state["active"] = state["active"], tuple(tags)
            window_end = self.publisher.uptime_s
            for tag in self.tags:
                if (tag in before) != (tag in tags):
                    self.publisher.publish_event(stream, tag=tag,
                                                 state="on" if tag in tags else "off",
                                                 score=0.9 if tag in tags else 0.1,
                                                 time_s=window_end,
                                                 sample=int(window_end * 16000))

    def status(self, state: str, error: str | None = None, station: str | None = None,
               stream: str = "room") -> None:
        with self._lock:
            self.publisher.publish_status(stream, state=state, error=error,
                                          counters={"windows": 1}, source="device:test",
                                          station=station)

    def _run(self) -> None:
        heartbeat_s, status_s, tick_s = self._intervals
        next_heartbeat = next_status = 0.0
        while not self._stop.wait(tick_s):
            with self._lock:
                if time.monotonic() >= next_heartbeat:
                    self.publisher.heartbeat(len(self.streams))
                    next_heartbeat = time.monotonic() + heartbeat_s
                # late subscribers get each stream's title within `status_s`
                titles = status_s is not None and time.monotonic() >= next_status
                if titles:
                    next_status = time.monotonic() + status_s
                for name, state in self.streams.items():
                    if titles:
                        self.publisher.publish_status(name, state=state.get("state", "running"),
                                                      error=state.get("error"),
                                                      title=state["title"])
                    if state["scores"]:
                        self.publisher.publish(name, scores_body(
                            self.publisher.uptime_s, self.tags, state["active"], state["audio"],
                            state["mood"], state["content"]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.control is not None:
            self.control.stop()
        self.publisher.close(linger_ms=0)


class DashboardThread:
    """The real dashboard server in a thread, stopped by `stop()`; `url` once it listens.
    run_dashboard runs it; with `state` (a FeedState to start from: a bridge that has heard the
    feed for a while), `Dashboard.run`, what run_dashboard runs, on a Dashboard given it."""

    def __init__(self, connect: str, port: int = 0, control: str | None = None,
                 state: FeedState | None = None, **options):
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.url = ""

        def ready(url: str) -> None:
            self.url = url
            self._ready.set()

        def run() -> None:
            try:
                if state is None:
                    run_dashboard(connect, port, "127.0.0.1", control, ready, self._stop,
                                  **options)
                else:
                    dashboard = Dashboard(connect, control, **options)
                    dashboard.state = state
                    asyncio.run(dashboard.run("127.0.0.1", port, ready, self._stop))
            except BaseException as exc:  # handed to the test thread
                self._error = exc
                self._ready.set()

        self._thread = threading.Thread(target=run, name="dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(WAIT_S) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the dashboard did not start: {self._error!r}")

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "ws"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), "the dashboard did not stop"


def real_daemon_page(browser, closing: list, config) -> tuple:
    """A real daemon of `config` (its sources added by the test), the real dashboard on its
    feed and a 1600x900 page of it in `browser`, all closed with the test: (the daemon, the
    page, the errors the page raises)."""
    from support.helpers import started

    daemon, sub = started(config)
    sub.close()
    closing.append(daemon.stop)
    dashboard = DashboardThread(daemon.publisher.endpoint, history_s=60)
    closing.append(dashboard)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    closing.append(page)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(dashboard.url)
    return daemon, page, errors


def close_all(opened: list) -> None:
    """Stops what a test opened, last started first: objects with close() or stop(), or
    functions to call."""
    for thing in reversed(opened):
        (thing if callable(thing) else getattr(thing, "close", None) or thing.stop)()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.links += [value for name, value in attrs
                       if name in ("src", "href", "action", "poster", "srcset") and value]


def page_links(html: str) -> list[str]:
    """What a page's tags load or link to (src, href, action, poster, srcset)."""
    parser = _Links()
    parser.feed(html)
    return parser.links


@contextlib.contextmanager
def chromium(*flags: str) -> Iterator:
    """Debian's chromium, headless, launched by playwright with CHROMIUM_FLAGS and `flags`;
    the test is skipped, saying what to install, when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(BROWSER_MISSING)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(BROWSER_MISSING)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=[*CHROMIUM_FLAGS, *flags], headless=True,
                                             timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


class WatchedPage:
    """A new page in `browser` (`options` as for browser.new_page), closed with the test, with
    the URLs it requested and the errors it logged."""

    def __init__(self, browser, closing: list, width: int, height: int, **options) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height}, **options)
        closing.append(self.page)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console",
                     lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def outside(self, url: str) -> list[str]:
        """What it requested elsewhere than the server at `url`."""
        return requests_outside(url, self.requests)


def watched_page(browser, closing: list, width: int, height: int):
    """A WatchedPage as (the page, the URLs it requests, the errors it logs)."""
    watched = WatchedPage(browser, closing, width, height)
    return watched.page, watched.requests, watched.errors


def requests_outside(url: str, requests: list[str]) -> list[str]:
    """The requests a page at `url` made elsewhere than its own server (data: URLs aside)."""
    origin = url.rstrip("/")
    return [u for u in requests
            if not u.startswith((origin + "/", origin.replace("http", "ws", 1) + "/"))
            and not u.startswith("data:")]
