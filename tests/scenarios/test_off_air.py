"""Off-air time a log can be held to: while a station is off air the monitor asks again about
once a second for the first minute (then backs off), so the outage's end in the history is the
first audio heard after the station's return, with a stated bound on how long before it the
station came back. A real Icecast fed by ffmpeg, the feeder stopped and started again, a real
daemon and recorder writing SQLite."""

from __future__ import annotations

import time

import sqlalchemy as sa
from support.helpers import make_config, started, tiny_model_file, wait_until
from support.servers import Feeder, icecast_server

from streamtag.backoff import Backoff
from streamtag.daemon.config import SourceConfig
from streamtag.history import schema
from streamtag.history.recorder import Recorder
from streamtag.history.report import format_text, load_history

OFF_S = 5.0  # how long the feeder stays away


def test_an_outage_is_probed_about_once_a_second_for_its_first_minute_then_backed_off():
    now = [0.0]
    backoff = Backoff("x", reconnect=True, initial_backoff_s=0.5, max_backoff_s=30.0,
                      max_reconnects=None, probe_s=1.0, probe_for_s=60.0, clock=lambda: now[0])
    waits = []
    while now[0] < 120.0:
        waits.append(backoff.next_wait_s())
        now[0] += waits[-1] + 0.05  # each attempt fails a moment after it starts
    first_minute = [w for w, at in zip(waits, _times(waits), strict=True) if at < 60.0]
    assert first_minute[0] == 0.5 and set(first_minute[1:]) == {1.0}
    later = waits[len(first_minute):]
    assert later[:5] == [1.0, 2.0, 4.0, 8.0, 16.0] and max(later) == 30.0
    backoff.reset()  # audio: the next outage starts afresh, probed quickly again
    assert [backoff.next_wait_s() for _ in range(3)] == [0.5, 1.0, 1.0]


def _times(waits: list[float]) -> list[float]:
    """When each wait began, each attempt taking 0.05 s."""
    out, at = [], 0.0
    for w in waits:
        out.append(at)
        at += w + 0.05
    return out


def statuses(engine, state: str) -> list:
    st = schema.statuses.c
    with engine.connect() as conn:
        return conn.execute(sa.select(st.sent_at, st.counters).where(st.state == state)
                            .order_by(st.sent_at)).all()


def windows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.sum(schema.window_blocks.c.windows))).scalar() or 0


def test_an_outage_ends_in_the_log_within_its_stated_bound_of_the_station_s_return(
        media, tmp_path):
    model = tiny_model_file(tmp_path / "tiny.pt", window=64, hop=32)
    engine = schema.create_db_engine(f"sqlite:///{tmp_path / 'tags.db'}")
    schema.upgrade(engine)
    with icecast_server() as (server, log):
        feeder = Feeder(server, media["mp3_5s"], log)
        feeder.start()
        daemon, sub = started(make_config(model, tmp_path))
        sub.close()
        # windows written within a second of arriving, as the test waits for them
        recorder = Recorder(engine, daemon.publisher.endpoint, max_block_age_s=1).start()
        try:
            wait_until(lambda: recorder.stats.received["heartbeat"] > 0, 10,
                       "the recorder to hear the daemon")
            daemon.add_source(SourceConfig("radio", server.url))
            wait_until(lambda: windows(engine) >= 2, 60, "windows of the station")
            stopped_at = time.time()
            feeder.stop()
            wait_until(lambda: statuses(engine, "reconnecting"), 30, "the loss to be noticed")
            time.sleep(max(0.0, stopped_at + OFF_S - time.time()))
            restarted_at = time.time()
            feeder.start()  # returns once the mount is live again
            live_at = time.time()
            wait_until(lambda: any(s.sent_at > restarted_at
                                   for s in statuses(engine, "running")), 60,
                       "audio back in the log")
            heard = windows(engine)
            wait_until(lambda: windows(engine) >= heard + 2, 60, "windows after the return")
            assert recorder.stop()
        finally:
            daemon.stop()
            feeder.stop()
    history = load_history(engine)
    text = format_text(history)
    engine.dispose()
    (outage,) = history.off_air
    # it ends with the first audio heard after the station came back, and says how long
    # before that the station may have returned: a window that holds the feeder's return
    assert outage.end is not None and outage.back_within_s is not None
    assert outage.end >= restarted_at, (outage.end - restarted_at)
    # (the source notes its failed attempt a moment after the server's 404: a loaded machine
    # may take a little while to get there)
    assert outage.end - outage.back_within_s <= live_at + 0.25, (
        outage.end, outage.back_within_s, live_at)
    # probed about once a second: the end is logged within 2 s of the return
    assert outage.back_within_s <= 2.0, outage.back_within_s
    # it began when the audio stopped coming, not before the feeder went
    assert outage.start >= stopped_at - 1.0
    (line,) = [line for line in text.splitlines() if "back at" in line]
    assert "(first audio heard; on air again within" in line, line
