"""The venue dashboard: its server, its websocket bridge, and the page in a real browser.

A `FakeDaemon` (a real Publisher and ControlServer on 127.0.0.1, publishing what a daemon
would: heartbeats, scores with active tags, tag events, status) stands in for the daemon, so
the tags on screen are known. The browser test drives Debian's chromium with playwright.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("websockets", reason="the dashboard needs websockets: pip install websockets")

from support.dashboard import (  # noqa: E402
    MODEL,
    WAIT_S,
    DashboardThread,
    FakeDaemon,
    page_links,
    requests_outside,
    tag_scores,
    watched_page,
)
from support.helpers import wait_until  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from streamtag.commands.dashboard import cmd_dashboard  # noqa: E402
from streamtag.web.feed import FeedState  # noqa: E402
from streamtag.web.server import PAGES, load_static  # noqa: E402
from streamtag.wire.protocol import TrackBody  # noqa: E402

TAGS = ("calm", "loud", "percussive", "bright")
THRESHOLDS = (0.5, 0.5, 0.5, 0.5)  # what FakeDaemon's snapshot gives


def scores_for(active: tuple[str, ...]) -> list[float]:
    return tag_scores(TAGS, active)


def receive_until(ws, predicate, timeout_s: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        if predicate(message):
            return message
    raise AssertionError(f"no matching message within {timeout_s} s")


def room_active(message: dict) -> list[str] | None:
    """The room's active tags as a hello, snapshot or scores message tells them."""
    if message["type"] in ("hello", "snapshot"):
        room = message["streams"].get("room")
        return None if room is None else room["active"]
    if message["type"] == "message" and message["message"]["header"]["msg_type"] == "scores":
        return message["message"]["body"]["active"]
    return None


# ---------------------------------------------------------------- the page's files


def test_page_files_refer_to_nothing_outside_the_page():
    files = load_static()
    assert set(files) == set(PAGES)
    html = files["/"][0].decode()
    links = page_links(html)
    assert links, "index.html should load its css and js"
    for link in links:
        # Relative paths (served by the dashboard) and inline data only.
        assert not re.match(r"^([a-z][a-z0-9+.-]*:|//)", link, re.I) or link.startswith("data:"),\
            link
    for path, (body, _) in files.items():
        text = body.decode()
        assert not re.search(r"https?://", text, re.I), f"{path} names an external URL"
        assert not re.search(r"@import|url\(\s*['\"]?(//|[a-z]+:)(?!data:)", text, re.I), path
        assert "fonts.googleapis" not in text and "cdn" not in text.lower(), path


def test_http_endpoints(endpoints, closing):
    dashboard = DashboardThread(endpoints[0])
    closing.append(dashboard)
    with urllib.request.urlopen(dashboard.url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.read() == load_static()["/"][0]
    with urllib.request.urlopen(dashboard.url + "healthz", timeout=5) as response:
        health = json.load(response)
    assert health["ok"] is True and health["feed"] == [endpoints[0]]
    assert health["daemon"]["seen"] is False
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(dashboard.url + "nothing-here", timeout=5)
    assert error.value.code == 404
    error.value.close()
    # Another site open in the same browser may not read the feed.
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(dashboard.ws_url, origin="http://elsewhere.example", open_timeout=5)
    assert refused.value.response.status_code == 403
    with ws_connect(dashboard.ws_url, origin=dashboard.url.rstrip("/"), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"


def test_port_in_use_is_a_clear_error(endpoints, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = argparse.Namespace(connect=[endpoints[0]], control=None,
                                  port=taken.getsockname()[1], host="127.0.0.1")
        assert cmd_dashboard(args) == 2
    assert "choose one with --port" in capsys.readouterr().err


# ---------------------------------------------------------------- who may read the page


def http_status(port: int, path: str = "/", host: str | None = None,
                origin: str | None = None) -> int:
    """The status of a GET naming `host` (and `origin`), sent to the dashboard on loopback:
    what a browser sends when a name it resolved points at this machine."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {name: value for name, value in (("Host", host), ("Origin", origin)) if value}
    try:
        connection.request("GET", path, headers=headers)
        with connection.getresponse() as response:
            response.read()
            return response.status
    finally:
        connection.close()


def ws_status(port: int, host: str, origin: str | None = None) -> int:
    """101 when a websocket naming `host` (and `origin`) opens and says hello, else the
    status it was refused with."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with ws_connect(f"ws://{host}/ws", sock=sock, origin=origin, open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code
    finally:
        sock.close()


def test_a_page_that_renames_itself_cannot_read_the_dashboard(endpoints, closing):
    # DNS rebinding: a site's name made to resolve to 127.0.0.1 reaches the dashboard, but
    # the browser still names the site in Host, and an open page elsewhere names itself in
    # Origin. Both are refused, for the page and for the feed alike.
    dashboard = DashboardThread(endpoints[0])
    closing.append(dashboard)
    port = dashboard.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
        assert http_status(port, host=host) == 200, host
    assert ws_status(port, f"localhost:{port}") == 101
    assert ws_status(port, f"127.0.0.1:{port}", origin=f"http://127.0.0.1:{port}") == 101
    for path in ("/", "/healthz", "/dashboard.js", "/history.json", "/ws"):
        assert http_status(port, path, host=f"evil.example:{port}") == 403, path
    assert ws_status(port, f"evil.example:{port}") == 403
    assert ws_status(port, f"evil.example:{port}", origin=f"http://evil.example:{port}") == 403
    assert http_status(port, "/healthz", host=f"localhost:{port}",
                       origin="http://evil.example") == 403
    assert ws_status(port, f"localhost:{port}", origin="http://evil.example") == 403
    assert ws_status(port, f"localhost:{port}", origin="null") == 403


def test_a_screen_reached_by_name_is_let_in_with_allow_host(endpoints, closing, capsys):
    dashboard = DashboardThread(endpoints[0], allow_hosts=["Screen.Venue"])
    closing.append(dashboard)
    port = dashboard.port
    assert http_status(port, host=f"screen.venue:{port}") == 200
    assert ws_status(port, f"screen.venue:{port}", origin=f"http://screen.venue:{port}") == 101
    assert http_status(port, host=f"other.venue:{port}") == 403
    args = argparse.Namespace(connect=[endpoints[0]], control=None, port=0, host="127.0.0.1",
                              allow_host=["not a name"])
    assert cmd_dashboard(args) == 2
    assert "--allow-host 'not a name'" in capsys.readouterr().err


def test_bound_to_every_interface_it_names_an_address_a_screen_can_open(endpoints, capsys):
    # `--host 0.0.0.0` printed http://0.0.0.0:PORT/, which no screen elsewhere can open
    import threading

    from streamtag.web.server import run_dashboard

    said, stop = [], threading.Event()
    thread = threading.Thread(target=run_dashboard, args=(endpoints[0], 0, "0.0.0.0", None,
                                                          said.append, stop), daemon=True)
    thread.start()
    try:
        wait_until(lambda: said, WAIT_S, "the dashboard's address")
        (url,) = said
        where = urllib.parse.urlsplit(url)
        assert where.hostname not in ("0.0.0.0", "") and \
            ipaddress.ip_address(where.hostname).version == 4, url
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        try:  # by that address, and the page answers to it
            connection.request("GET", "/healthz")
            with connection.getresponse() as reply:
                assert reply.status == 200
        finally:
            connection.close()
    finally:
        stop.set()
        thread.join(WAIT_S)


def test_pages_past_the_limit_are_refused_until_one_leaves(endpoints, closing):
    dashboard = DashboardThread(endpoints[0], max_clients=2)
    closing.append(dashboard)
    with contextlib.ExitStack() as open_pages:
        pages = [open_pages.enter_context(ws_connect(dashboard.ws_url, open_timeout=5))
                 for _ in range(2)]
        for page in pages:
            assert json.loads(page.recv(timeout=5))["type"] == "hello"
        with pytest.raises(InvalidStatus) as refused, \
                ws_connect(dashboard.ws_url, open_timeout=5):
            pass
        assert refused.value.response.status_code == 503
        assert b"too many pages open" in refused.value.response.body
        pages[0].close()

        def another_page() -> bool:
            try:
                with ws_connect(dashboard.ws_url, open_timeout=5) as page:
                    return json.loads(page.recv(timeout=5))["type"] == "hello"
            except InvalidStatus:
                return False

        wait_until(another_page, WAIT_S, "a page to be let in once another left")


# ---------------------------------------------------------------- the bridge


def test_feed_state_follows_events_and_restarts():
    state = FeedState(["tcp://127.0.0.1:1"], history_s=60)

    def message(msg_type, session, body, restarted=False, seq=0):
        return {"topic": f"{msg_type}.room",
                "header": {"msg_type": msg_type, "session": session, "stream": "room",
                           "seq": seq, "sent_at": 1.0, "msg_id": "x", "version": "1.0"},
                "body": body, "gap": 0, "restarted": restarted}

    scores = {"tags": list(TAGS), "smoothed": scores_for(("calm",)), "active": ["calm"],
              "model": MODEL}
    state.apply_message(message("scores", "s1", scores))
    state.apply_message(message("event", "s1", {"tag": "loud", "state": "on"}, seq=1))
    state.apply_message(message("event", "s1", {"tag": "calm", "state": "off"}, seq=2))
    assert state.view("room")["active"] == ["loud"]
    state.apply_message(message("status", "s2", {"state": "starting"}, restarted=True))
    room = state.view("room")
    assert room["active"] == [] and room["restarted_at"] is not None
    assert room["history"], "the timeline survives a restart"
    assert state.liveness()["alive"] is True


def track_body(title: str | None, active: tuple[str, ...], start_s: float, end_s: float) -> dict:
    share = [1.0 if tag in active else 0.0 for tag in TAGS]
    return TrackBody(title=title, reason="title_change", start_s=start_s, end_s=end_s,
                     start_sample=int(start_s * 16000), end_sample=int(end_s * 16000),
                     started_at=1.0, ended_at=2.0, windows=3, tags=TAGS,
                     mean_raw=scores_for(active), mean_smoothed=scores_for(active),
                     active_share=share, active=active, model=MODEL).to_dict()


def test_feed_state_keeps_the_last_tracks_across_restarts_and_from_a_status_reply():
    state = FeedState(["tcp://127.0.0.1:1"], history_s=60)

    def message(msg_type, session, body, seq=0):
        return {"topic": f"{msg_type}.room",
                "header": {"msg_type": msg_type, "session": session, "stream": "room",
                           "seq": seq, "sent_at": 1.0, "msg_id": "x", "version": "1.1"},
                "body": body, "gap": 0, "restarted": False}

    for i in range(7):
        state.apply_message(message("track", "s1", track_body(f"song {i}", ("calm",), i, i + 1),
                                    seq=i))
    assert [t["title"] for t in state.view("room")["tracks"]] == [f"song {i}" for i in range(2, 7)]
    state.apply_message(message("status", "s2", {"state": "running", "title": "song 7"}))
    assert len(state.view("room")["tracks"]) == 5  # a daemon restart keeps what was played
    assert state.view("room")["status"]["title"] == "song 7"
    # A dashboard that starts late gets them from the daemon's status reply.
    late = FeedState(["tcp://127.0.0.1:1"], history_s=60)
    status = {"streams": {"room": {"state": "running", "title": "now", "tracks": [
        track_body("before", ("loud",), 0, 3)]}}}
    late.apply_snapshot({"session": "s1", "streams": {"room": {"tags": list(TAGS)}}}, status)
    room = late.view("room")
    assert [t["title"] for t in room["tracks"]] == ["before"] and room["status"]["title"] == "now"


def test_a_stream_that_failed_before_the_page_is_known_by_its_state():
    # The sound card was missing when the daemon started: the stream failed before this
    # bridge heard the feed, scored nothing, and the daemon's snapshot has no tags for it.
    state = FeedState(["tcp://127.0.0.1:1"], history_s=60)
    status = {"streams": {"venue": {"state": "failed", "error": "no input device matches 'x'",
                                    "source": "device:x"}}}
    forwarded = state.apply_snapshot({"session": "s1", "streams": {}}, status)
    assert forwarded["streams"]["venue"]["status"]["state"] == "failed"
    assert state.view("venue")["status"]["error"] == "no input device matches 'x'"
    # asked again: nothing new to forward
    assert state.apply_snapshot({"session": "s1", "streams": {}}, status) is None


def test_a_snapshot_after_live_scores_still_gives_the_pages_the_thresholds():
    # The control socket answered after the feed's first scores (a busy machine): the live
    # view stays as it is, but its thresholds, which only the snapshot carries, reach the
    # pages (before, they never did, and a page showed raw scores until it was reloaded).
    state = FeedState(["tcp://127.0.0.1:1"], history_s=60)
    state.apply_message({
        "topic": "scores.room", "gap": 0, "restarted": False,
        "header": {"version": "1.7", "msg_type": "scores", "msg_id": "a" * 32, "session": "s1",
                   "stream": "room", "seq": 0, "sent_at": 1.0},
        "body": {"start_s": 0.0, "end_s": 1.0, "start_sample": 0, "end_sample": 16000,
                 "tags": list(TAGS), "raw": tag_scores(TAGS, ("loud",)),
                 "smoothed": tag_scores(TAGS, ("loud",)), "active": ["loud"], "model": MODEL,
                 "latency_ms": 1.0}})
    assert state.view("room")["thresholds"] is None
    snapshot = {"session": "s1", "model": {**MODEL, "thresholds": [0.5] * len(TAGS)},
                "streams": {"room": {"tags": list(TAGS), "active": ["calm"], "windows": 7}}}
    forwarded = state.apply_snapshot(snapshot)
    assert forwarded is not None and forwarded["type"] == "snapshot"
    room = forwarded["streams"]["room"]
    assert room["thresholds"] == [0.5] * len(TAGS)
    assert room["active"] == ["loud"]  # the live view's, not the snapshot's
    assert state.apply_snapshot(snapshot) is None  # nothing new the second time


def test_a_merged_snapshot_of_worker_processes_keeps_each_stream_under_its_workers_session():
    # `run --processes 2`: the supervisor's snapshot names each stream's worker session and all
    # of them. The live messages that follow (each under its own worker's session) are no
    # restart: the snapshot's tags stay, and no worker's heartbeat asks for another snapshot.
    state = FeedState(["tcp://127.0.0.1:1"], history_s=60)
    snapshot = {"session": "w0", "sessions": ["w0", "w1"], "streams": {
        "east": {"tags": list(TAGS), "active": ["calm"], "session": "w0"},
        "west": {"tags": list(TAGS), "active": ["loud"], "session": "w1"}}}
    forwarded = state.apply_snapshot(snapshot)
    assert forwarded["streams"]["west"]["session"] == "w1"
    assert state.snapshot_sessions == {"w0", "w1"}
    for stream, session in (("east", "w0"), ("west", "w1")):
        state.apply_message({
            "topic": f"status.{stream}", "gap": 0, "restarted": False,
            "body": {"state": "running", "title": None},
            "header": {"msg_type": "status", "session": session, "stream": stream, "seq": 0,
                       "sent_at": 1.0, "msg_id": "x", "version": "1.2"}})
    assert state.view("west")["restarted_at"] is None
    assert state.view("west")["active"] == ["loud"]
    assert state.view("east")["active"] == ["calm"]


def test_websocket_bridge_snapshot_and_late_join(endpoints, closing):
    pub, control = endpoints
    # Heartbeats only: whatever the page shows of the room comes from the snapshot.
    daemon = FakeDaemon(pub, control, tags=TAGS, room={"active": ("calm", "bright"),
                                                       "scores": False})
    closing.append(daemon)
    dashboard = DashboardThread(pub, control=control)
    closing.append(dashboard)
    with ws_connect(dashboard.ws_url, open_timeout=5) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello" and hello["feed"] == [pub]
        found = hello if room_active(hello) else receive_until(
            ws, lambda m: m["type"] == "snapshot")
        room = found["streams"]["room"]
        assert room["active"] == ["calm", "bright"]
        assert room["thresholds"] == list(THRESHOLDS)
        assert room["status"]["state"] == "running"

        daemon.set(scores=True)
        daemon.set_active("loud")
        forwarded = receive_until(ws, lambda m: room_active(m) == ["loud"])["message"]
        assert set(forwarded) == {"topic", "header", "body", "gap", "restarted"}
        assert forwarded["topic"] == "scores.room"
        assert forwarded["header"]["session"] == daemon.publisher.session
        receive_until(ws, lambda m: m["type"] == "tick" and m["daemon"]["alive"])

    # A page that connects now gets the current state and the timeline in its hello.
    with ws_connect(dashboard.ws_url, open_timeout=5) as late:
        hello = json.loads(late.recv(timeout=5))
        assert hello["streams"]["room"]["active"] == ["loud"]
        assert any("loud" in tags for _, tags in hello["streams"]["room"]["history"])


def test_bridge_with_a_real_daemon(endpoints, closing, tmp_path):
    from support.helpers import TAGS as MODEL_TAGS
    from support.helpers import tiny_model_file

    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like
    from streamtag.daemon.config import (
        ControlConfig,
        DaemonConfig,
        ModelConfig,
        PublishConfig,
        SourceConfig,
    )
    from streamtag.daemon.daemon import Daemon

    pub, control = endpoints
    audio = tmp_path / "music.flac"
    write_audio(audio, music_like(6.0, 16000, seed=4), 16000)
    config = DaemonConfig(
        model=ModelConfig(path=str(tiny_model_file(tmp_path / "tiny.pt")), device="cpu"),
        publish=PublishConfig(endpoint=pub, heartbeat_s=0.2),
        control=ControlConfig(endpoint=control, file_roots=(str(tmp_path),)),
        sources=(SourceConfig("room", f"file:{audio}", {"realtime": True}),))
    daemon = Daemon(config).start()
    closing.append(daemon.stop)
    dashboard = DashboardThread(pub, control=control)
    closing.append(dashboard)
    with ws_connect(dashboard.ws_url, open_timeout=5) as ws:
        scores = receive_until(ws, lambda m: m["type"] == "message"
                               and m["message"]["topic"] == "scores.room")["message"]
        assert scores["body"]["tags"] == list(MODEL_TAGS)
        assert scores["header"]["session"] == daemon.publisher.session
    # The snapshot the daemon gives and the live messages agree on the model's tags.
    with ws_connect(dashboard.ws_url, open_timeout=5) as late:
        room = json.loads(late.recv(timeout=5))["streams"]["room"]
        assert room["tags"] == list(MODEL_TAGS) and len(room["smoothed"]) == len(MODEL_TAGS)
        assert room["model"]["name"] == "tiny"


# ---------------------------------------------------------------- the page in a browser


def fake_room_page(browser, endpoints, closing):
    """A dashboard page on a fake daemon whose stream "room" has "calm" on, once its panel
    shows that tag: (the fake daemon, the page, the panel's locator)."""
    from playwright.sync_api import expect

    pub, control = endpoints
    daemon = FakeDaemon(pub, control, tags=TAGS, room={"active": ("calm",)})
    closing.append(daemon)
    dashboard = DashboardThread(pub, control=control, history_s=60)
    closing.append(dashboard)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    closing.append(page)
    page.goto(dashboard.url)
    panel = page.locator('section.panel[data-stream="room"]')
    expect(panel.locator(".tile[data-tag]")).to_have_count(1, timeout=WAIT_S * 1000)
    return daemon, page, panel


def test_page_shows_the_title_and_the_last_tracks(browser, endpoints, closing, tmp_path):
    from playwright.sync_api import expect

    daemon, page, panel = fake_room_page(browser, endpoints, closing)
    expect(panel.locator(".recent")).to_be_hidden()  # no track has ended yet
    with daemon._lock:
        daemon.publisher.publish_status("room", state="running", title="Artist - Opening")
        daemon.publisher.publish("room", TrackBody(**track_body(None, ("calm",), 0, 95)))
        daemon.publisher.publish_status("room", state="running", title="Artist - Second")
        daemon.publisher.publish("room", TrackBody(**track_body(
            "Artist - Opening", ("loud", "bright"), 95, 290.4)))
    expect(panel.locator(".title")).to_have_text("Artist - Second", timeout=WAIT_S * 1000)
    tracks = panel.locator(".recent .track")
    expect(tracks).to_have_count(2, timeout=WAIT_S * 1000)
    expect(tracks.locator(".track-title")).to_have_text(["Artist - Opening", "(untitled)"])
    expect(tracks.locator(".track-length")).to_have_text(["3:15", "1:35"])
    expect(tracks.first.locator(".chip")).to_have_text(["loud", "bright"])
    page.screenshot(path=str(tmp_path / "dashboard-tracks.png"))


def test_page_shows_tags_and_survives_restarts(browser, endpoints, closing, tmp_path):
    from playwright.sync_api import expect

    pub, control = endpoints
    daemon = FakeDaemon(pub, control, tags=TAGS, room={"active": ("calm",)})
    closing.append(daemon)
    dashboard = DashboardThread(pub, control=control, history_s=60)
    closing.append(dashboard)

    page, requests, errors = watched_page(browser, closing, 1600, 900)
    page.goto(dashboard.url)

    panel = page.locator('section.panel[data-stream="room"]')
    tiles = panel.locator(".tile[data-tag]")
    expect(tiles).to_have_count(1, timeout=WAIT_S * 1000)
    expect(tiles.first).to_have_attribute("data-tag", "calm")
    expect(tiles.first.locator(".name")).to_have_text("calm")

    daemon.set_active("loud", "percussive")
    expect(tiles).to_have_count(2, timeout=WAIT_S * 1000)
    expect(panel.locator(".tile .name")).to_have_text(["loud", "percussive"])
    expect(panel.locator(".bar.on .name")).to_have_text(["loud", "percussive"])
    # With the model's thresholds known, a tag shows how far it stands above its threshold
    # (0.9 over 0.5), not its raw score.
    # (the thresholds come with the page's snapshot from the daemon's control socket, which a
    # busy machine may answer late)
    expect(panel.locator(".tile .score")).to_have_text(["1.8\u00d7", "1.8\u00d7"],
                                                       timeout=WAIT_S * 1000)
    expect(panel.locator(".bar.on .value")).to_have_text(["1.8\u00d7", "1.8\u00d7"])
    expect(panel.locator(".bar:not(.on) .value").first).to_have_text("0.2\u00d7")
    expect(page.locator("#connection")).to_have_text("live")
    time.sleep(1.5)  # a few seconds of timeline under the tiles
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot))
    print(f"\ndashboard screenshot: {shot}")
    # The tiles are meant to be read across a room.
    tile_px = tiles.first.evaluate("node => parseFloat(getComputedStyle(node).fontSize)")
    assert tile_px >= 48, f"tile text is {tile_px}px"

    daemon.status("reconnecting", "connection reset by peer")
    expect(panel.locator(".problem")).to_contain_text("connection reset by peer",
                                                      timeout=WAIT_S * 1000)
    daemon.status("running", station="Room FM")
    expect(panel.locator(".problem")).to_be_hidden(timeout=WAIT_S * 1000)
    expect(panel.locator(".station")).to_have_text("Room FM")  # the server's icy-name

    # The daemon goes away: a banner says for how long; a new daemon (a new session) on the
    # same endpoint is picked up by itself, its tags start from nothing.
    daemon.close()
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Daemon not seen for", timeout=WAIT_S * 1000)
    page.screenshot(path=str(tmp_path / "dashboard-daemon-lost.png"))
    daemon = FakeDaemon(pub, control, tags=TAGS, room={"active": ("bright",)})
    closing.append(daemon)
    expect(banner).to_be_hidden(timeout=WAIT_S * 1000)
    expect(panel.locator(".tile .name")).to_have_text(["bright"], timeout=WAIT_S * 1000)
    expect(panel.locator(".note")).to_contain_text("daemon restarted")

    # The dashboard server restarts on its port: the page reconnects by itself.
    port = dashboard.port
    dashboard.stop()
    expect(banner).to_contain_text("Dashboard server unreachable", timeout=WAIT_S * 1000)
    daemon.set_active("calm", "loud")
    dashboard = DashboardThread(pub, port=port, control=control, history_s=60)
    closing.append(dashboard)
    expect(panel.locator(".tile .name")).to_have_text(["calm", "loud"], timeout=WAIT_S * 1000)
    expect(banner).to_be_hidden()

    outside = requests_outside(dashboard.url, requests)
    assert not outside, f"the page asked for {outside}"
    # Chromium logs each refused websocket connection while the server was away; nothing else.
    assert not [e for e in errors if "WebSocket connection to" not in e], errors
    assert shot.stat().st_size > 10_000


def test_a_hello_in_pieces_draws_every_stream(browser, endpoints, closing, monkeypatch):
    # A bridge that knows many streams sends a page its hello in pieces (here of 2 kB, a
    # stream or two each), live messages between them; the page draws every stream once.
    from playwright.sync_api import expect

    from streamtag.web import feed

    monkeypatch.setattr(feed, "HELLO_PIECE_BYTES", 2000)
    pub, control = endpoints
    names = [f"room{i:02d}" for i in range(30)]
    daemon = FakeDaemon(pub, control, tags=TAGS, **{n: {"active": ("calm",)} for n in names})
    closing.append(daemon)
    dashboard = DashboardThread(pub, control=control, history_s=60)
    closing.append(dashboard)

    def known() -> int:
        with urllib.request.urlopen(dashboard.url + "healthz", timeout=5) as response:
            return len(json.load(response)["streams"])
    wait_until(lambda: known() == len(names), WAIT_S, "the bridge to hear every stream")
    with ws_connect(dashboard.ws_url, open_timeout=5) as ws:
        first = json.loads(ws.recv(timeout=5))
    assert first["type"] == "hello" and first["more"] is True
    assert len(first["streams"]) < len(names)
    page, requests, errors = watched_page(browser, closing, 1600, 900)
    page.goto(dashboard.url)
    panels = page.locator("section.panel[data-stream]")
    expect(panels).to_have_count(len(names), timeout=WAIT_S * 1000)
    for name in names:
        expect(page.locator(f'section.panel[data-stream="{name}"] .tile[data-tag]')) \
            .to_have_count(1, timeout=WAIT_S * 1000)
    assert errors == []
