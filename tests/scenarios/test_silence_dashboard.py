"""Dead air on the dashboard: the feed's view of a silent stream, and the page in Debian's
chromium showing a real daemon's stream level and "silent since HH:MM:SS" while real music
turns to digital silence and back."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

pytest.importorskip("websockets", reason="the dashboard needs websockets: pip install websockets")

from support.dashboard import real_daemon_page  # noqa: E402
from support.helpers import make_config, tiny_model_file  # noqa: E402

from streamtag.audio.files import write_audio  # noqa: E402
from streamtag.daemon.config import SourceConfig  # noqa: E402
from streamtag.web.feed import FeedState  # noqa: E402
from streamtag.wire.protocol import SilenceBody  # noqa: E402
from tests.engine.test_health import RATE, music_with_a_gap  # noqa: E402
from tests.web.test_server import (  # noqa: E402
    WAIT_S,
    fake_room_page,
)


def message(msg_type: str, body: dict, seq: int = 0) -> dict:
    return {"topic": f"{msg_type}.radio", "gap": 0, "restarted": False,
            "header": {"version": "1.2", "msg_type": msg_type, "msg_id": "a" * 32,
                       "session": "s1", "stream": "radio", "seq": seq, "sent_at": 1.0},
            "body": body}


def silence_body(state: str, duration_s: float) -> dict:
    return {"state": state, "time_s": 20.0 if state == "on" else 45.0,
            "sample": 320000 if state == "on" else 720000, "start_s": 20.0,
            "start_sample": 320000, "duration_s": duration_s, "threshold_dbfs": -50.0}


def test_feed_state_knows_since_when_a_stream_is_silent():
    clock = [1000.0]
    state = FeedState(["tcp://127.0.0.1:1"], clock=lambda: clock[0])
    state.apply_message(message("silence", silence_body("on", 10.0)))
    # The "on" arrives once the silence has lasted 10 s: it began 10 s before, by this clock.
    assert state.view("radio")["silence"] == {"since": 990.0, "start_s": 20.0,
                                              "threshold_dbfs": -50.0, "cause": "silence"}
    assert state.hello()["streams"]["radio"]["silence"]["since"] == 990.0  # a late page too
    clock[0] = 1015.0
    state.apply_message(message("silence", silence_body("off", 25.0), seq=1))
    assert state.view("radio")["silence"] is None
    state.apply_message(message("silence", {**silence_body("on", 12.5), "cause": "tone"},
                                seq=2))
    assert state.view("radio")["silence"]["cause"] == "tone"  # a stuck tone
    restarted = message("status", {"state": "running", "error": None, "counters": {}})
    restarted["header"]["session"] = "s2"  # a new daemon session: nothing is silent yet
    state.apply_message(restarted)
    assert state.view("radio")["silence"] is None


def test_page_shows_the_level_and_silent_since(browser, closing, tmp_path):
    from playwright.sync_api import expect

    path = tmp_path / "gap.flac"
    write_audio(path, music_with_a_gap(16, 30, 20), RATE)
    model = tiny_model_file(tmp_path / "tiny.pt", window=128, hop=32,
                            thresholds=(0.01, 0.01, 0.01, 0.01))
    daemon, page, errors = real_daemon_page(browser, closing, make_config(model, tmp_path))
    # Real time, eight times as fast: 16 s of music (2 s to see it), 30 s of silence (dead
    # air after 10 s of it, then 2.5 s to see that), 20 s of music.
    daemon.add_source(SourceConfig("radio", f"file:{path}", {"realtime": True, "speed": 8.0}))
    panel = page.locator('section.panel[data-stream="radio"]')
    level = panel.locator(".level-value")
    expect(level).to_have_text(re.compile(r"^-\d+ dBFS$"), timeout=WAIT_S * 1000)
    expect(panel.locator(".tile[data-tag]")).not_to_have_count(0)
    silence = panel.locator(".silence")
    expect(silence).to_be_visible(timeout=20_000)
    shown = datetime.now()
    text = silence.text_content()
    found = re.fullmatch(r"Silent since (\d\d):(\d\d):(\d\d) \(below -50 dBFS\)", text)
    assert found, text
    since = shown.replace(hour=int(found[1]), minute=int(found[2]), second=int(found[3]),
                          microsecond=0)
    # The "on" came once the silence had lasted 10 s of audio; the page dates its start that
    # much before the message arrived (true for a live stream; this one plays eight times as
    # fast, so the page says 10 s, not the 1.25 s of wall clock it took).
    assert 9 <= (shown - since).total_seconds() <= 13, (shown, since)
    expect(level).to_have_text("silence")
    expect(panel.locator(".tile.none")).to_have_text("no active tag")
    assert "silent" in (panel.get_attribute("class") or "")
    page.screenshot(path=str(tmp_path / "dashboard-silent.png"))
    print(f"\ndashboard screenshot: {tmp_path / 'dashboard-silent.png'}")
    expect(silence).to_be_hidden(timeout=20_000)  # the music is back
    expect(level).to_have_text(re.compile(r"^-\d+ dBFS$"))
    assert errors == []


def test_a_dashboard_that_starts_during_a_silence_learns_it_from_the_snapshot():
    clock = [500.0]
    state = FeedState(["tcp://127.0.0.1:1"], clock=lambda: clock[0])
    snapshot = {"session": "s1", "model": {"name": "m", "hash": "h"},
                "streams": {"radio": {"tags": ["a"], "smoothed": [0.5], "active": [],
                                      "windows": 40,
                                      "silence": {"start_s": 20.0, "duration_s": 14.5,
                                                  "threshold_dbfs": -50.0}},
                            "other": {"tags": ["a"], "smoothed": [0.5], "active": ["a"],
                                      "windows": 40, "silence": None}}}
    forwarded = state.apply_snapshot(snapshot)
    assert forwarded["streams"]["radio"]["silence"] == {"since": 485.5, "start_s": 20.0,
                                                        "threshold_dbfs": -50.0,
                                                        "cause": "silence"}
    assert forwarded["streams"]["other"]["silence"] is None


def test_page_says_stuck_tone_for_a_tone_s_dead_air(browser, endpoints, closing):
    from playwright.sync_api import expect

    daemon, _, panel = fake_room_page(browser, endpoints, closing)
    silence = panel.locator(".silence")
    expect(silence).to_be_hidden()
    fields = dict(time_s=20.0, sample=320000, start_s=20.0, start_sample=320000,
                  threshold_dbfs=-50.0, cause="tone")
    with daemon._lock:
        daemon.publisher.publish("room", SilenceBody(state="on", duration_s=10.0, **fields))
    expect(silence).to_be_visible(timeout=WAIT_S * 1000)
    expect(silence).to_have_text(
        re.compile(r"^Stuck tone since \d\d:\d\d:\d\d \(a steady tone, no music\)$"))
    with daemon._lock:
        daemon.publisher.publish("room", SilenceBody(state="off", duration_s=25.0,
                                                     **{**fields, "time_s": 45.0,
                                                        "sample": 720000}))
    expect(silence).to_be_hidden(timeout=WAIT_S * 1000)
