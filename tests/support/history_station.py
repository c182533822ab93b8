"""A daemon stand-in for the recorder's and the history's tests: a real Publisher sending a
synthetic radio programme built here, so a test knows every message it sent; recording what it
sends through a real recorder, reading back what the recorder stored, and `streamtag history`
run on it."""

from __future__ import annotations

import collections
import re
import subprocess
import time
import types

import numpy as np
import sqlalchemy as sa
from support.helpers import http_get, wait_until

from streamtag.cli import main
from streamtag.history import blocks, schema
from streamtag.history.recorder import Recorder
from streamtag.wire.protocol import (
    EventBody,
    ScoresBody,
    StatusBody,
    TrackBody,
    make_message,
    topic_for,
)
from streamtag.wire.publisher import Publisher

TAGS = ("calm", "energetic", "vocal", "dark", "bright")
MODEL = {"name": "tiny", "hash": "sha256:0123abcd"}
HOP_S = 1.0
WINDOW_S = 3.0
RATE = 16000
TRACK_WINDOWS = 240  # a "song" every four minutes of audio


# ---------------------------------------------------------------- a daemon stand-in

class Station:
    """A real Publisher sending messages built here, so the test knows each one it sent."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*") -> None:
        self.pub = Publisher(endpoint, sndhwm=0, linger_ms=2000)
        self.endpoint = self.pub.endpoint
        self.session = self.pub.session
        self.sent: list = []
        self._seq: dict[str, int] = {}
        self._state: dict[str, dict] = {}

    def send(self, stream: str, body, sent_at: float | None = None):
        topic = topic_for(body.msg_type, stream)
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        message = make_message(body, session=self.session, stream=stream, seq=seq,
                               sent_at=sent_at)
        assert self.pub.send_message(message)
        self.sent.append(message)
        return message

    def play(self, stream: str, windows: range, t0: float | None = None) -> list:
        """Windows of a synthetic programme: scores, tag events, a status at the start and a
        track every TRACK_WINDOWS windows. Deterministic in (stream, window index)."""
        first = len(self.sent)
        state = self._state.setdefault(stream, {"active": set(), "track": [], "n": 0})
        k = sum(map(ord, stream))
        for i in windows:
            at = None if t0 is None else t0 + i * HOP_S
            if i == windows.start:
                self.send(stream, StatusBody(state="running", counters={"windows": i},
                                             title=f"{stream} programme", source="test"), at)
            rng = np.random.default_rng(k * 100_003 + i)
            raw = np.round(rng.random(len(TAGS)), 6)
            # Each tag switches on and off in its own rhythm, so shares differ per tag.
            active = {tag for j, tag in enumerate(TAGS)
                      if ((i + 7 * k) // (30 + 17 * j)) % (2 + j % 2) == 0}
            smoothed = np.round(np.where([t in active for t in TAGS], 0.6 + 0.4 * raw,
                                         0.4 * raw), 6)
            for tag in TAGS:
                if (tag in active) != (tag in state["active"]):
                    self.send(stream, EventBody(
                        tag=tag, state="on" if tag in active else "off",
                        score=float(smoothed[TAGS.index(tag)]), time_s=i * HOP_S + WINDOW_S,
                        sample=int((i * HOP_S + WINDOW_S) * RATE)), at)
            state["active"] = active
            self.send(stream, ScoresBody(
                start_s=i * HOP_S, end_s=i * HOP_S + WINDOW_S, start_sample=int(i * HOP_S * RATE),
                end_sample=int((i * HOP_S + WINDOW_S) * RATE), tags=TAGS, raw=raw.tolist(),
                smoothed=smoothed.tolist(), active=sorted(active), model=MODEL,
                latency_ms=1.5), at)
            state["track"].append((i, raw, smoothed, active, at))
            if len(state["track"]) == TRACK_WINDOWS:
                self._track(stream, state)
        return self.sent[first:]

    def _track(self, stream: str, state: dict) -> None:
        part = state["track"]
        state["track"] = []
        state["n"] += 1
        share = [sum(tag in a for _, _, _, a, _ in part) / len(part) for tag in TAGS]
        start, end = part[0][0] * HOP_S, part[-1][0] * HOP_S + WINDOW_S
        started_at = part[0][4] if part[0][4] is not None else time.time()
        ended_at = started_at + end - start
        self.send(stream, TrackBody(
            title=f"{stream} song {state['n']}", reason="title_change", start_s=start,
            end_s=end, start_sample=int(start * RATE), end_sample=int(end * RATE),
            started_at=started_at, ended_at=ended_at, windows=len(part), tags=TAGS,
            mean_raw=np.mean([r for _, r, _, _, _ in part], axis=0).round(6).tolist(),
            mean_smoothed=np.mean([s for _, _, s, _, _ in part], axis=0).round(6).tolist(),
            active_share=share, active=[t for t, s in zip(TAGS, share, strict=True) if s > 0.5],
            model=MODEL), part[-1][4])

    def close(self) -> None:
        self.pub.close()


def keys(messages) -> collections.Counter:
    return collections.Counter((m.msg_type, m.stream, m.session, m.seq) for m in messages)


def stored_keys(engine) -> collections.Counter:
    out = collections.Counter()
    with engine.connect() as conn:
        for msg_type, table in schema.MESSAGE_TABLES.items():
            for row in conn.execute(sa.select(table.c.stream, table.c.session, table.c.seq)):
                out[(msg_type, row.stream, row.session, row.seq)] += 1
        for window in blocks.decoded_windows(conn):
            out[("scores", window["stream"], window["session"], window["seq"])] += 1
    return out


def stored_count(engine) -> int:
    with engine.connect() as conn:
        return sum(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                   for t in schema.MESSAGE_TABLES.values()) + (conn.execute(
                       sa.select(sa.func.sum(schema.window_blocks.c.windows))).scalar() or 0)


def stored_windows(engine) -> list:
    """The windows stored, as rows of the old `scores` table (scores as float arrays)."""
    with engine.connect() as conn:
        return [types.SimpleNamespace(**w) for w in blocks.decoded_windows(conn, scores=True)]


def table_rows(engine, table) -> list:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table)))


def scrape_received(port: int) -> dict[str, float]:
    """A ``record`` process's messages received per type, from its metrics port (empty while
    the port does not answer yet)."""
    try:
        text = http_get(port, "/metrics")[1]
    except OSError:
        return {}
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^streamtag_record_received_messages_total\{msg_type="(\w+)"\} (\S+)$', text, re.M)}


def await_subscribed(station: Station, engine, timeout: float = 20.0) -> None:
    """Heartbeats until the recorder has stored one of them: from then on it receives
    everything. Any one will do (a recorder gathers what arrives for a moment before it
    writes, so the one just sent may not be stored yet when the next is sent)."""
    first = station.pub.next_seq("heartbeat")

    def stored() -> bool:
        station.pub.heartbeat(2)
        time.sleep(0.1)
        with engine.connect() as conn:
            last = conn.execute(sa.select(schema.daemons.c.last_seq).where(
                schema.daemons.c.session == station.session)).scalar()
        return last is not None and last >= first

    wait_until(stored, timeout, "the recorder to store a heartbeat", interval=0.1)


def wait_stored(engine, count: int, timeout: float = 30.0) -> None:
    wait_until(lambda: stored_count(engine) >= count, timeout,
               f"{count} messages in the database", interval=0.1)


def record(url: str, script):
    """Runs `script(station)` into the database at `url` through a real recorder: the
    database upgraded, the recorder subscribed before the script sends, and everything the
    station sent stored before this returns what the script did."""
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)
    station = Station()
    recorder = Recorder(engine, station.endpoint, max_block_age_s=1.0).start()
    try:
        await_subscribed(station, engine)
        result = script(station)
        wait_stored(engine, len(station.sent))
    finally:
        recorder.stop(5)
        station.close()
        engine.dispose()
    return result


def history(capsys, *args: str) -> subprocess.CompletedProcess:
    """``streamtag history ARGS`` run in this process (its start-up is the slow part)."""
    capsys.readouterr()
    code = main(["history", *args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)
