"""Peers that mean harm. Anyone who can reach a daemon's PUB socket or a proxy's frontend can
send messages, so here a forged publisher (a real ZeroMQ PUB socket on 127.0.0.1, writing
frames by hand) sends what no daemon would: integers past 64 bits, text and arrays past any
honest size, frames of megabytes, a new session in every message, titles that are terminal
escape sequences. Each attack runs against the real reader it targets (the protocol decoder,
a Subscriber, the recorder on SQLite, ``streamtag listen``), and the wire's bounds are checked
by property tests (docs/protocol.md, "Bounds")."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import threading
import time
import uuid

import numpy as np
import pytest
import sqlalchemy as sa
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.helpers import decodes_or_refuses, wait_until
from support.history_station import stored_keys

from streamtag.commands.listen import format_message, run_listen
from streamtag.engine.tagging import FileTags, Segment, format_csv
from streamtag.errors import ProtocolError
from streamtag.history import schema
from streamtag.history.recorder import FEED_MAX_FRAME_BYTES, FEED_SOCKET_RCVHWM, Recorder
from streamtag.wire import subscriber as subscriber_module
from streamtag.wire.protocol import (
    MAX_BODY_BYTES,
    MAX_COUNTERS,
    MAX_DETAIL_LENGTH,
    MAX_FRAME_BYTES,
    MAX_INTEGER,
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    MAX_STREAM_COUNT,
    MAX_TAGS,
    MAX_TEXT_LENGTH,
    PROTOCOL_VERSION,
    EventBody,
    HeartbeatBody,
    Message,
    ScoresBody,
    ScoresEncoder,
    StatusBody,
    TrackBody,
    decode,
    decode_reply,
    decode_request,
    encode,
    encode_reply,
    encode_request,
    make_message,
)
from streamtag.wire.subscriber import ReceivedMessage, Subscriber

SESSION = "5f0c6a2e9d1b4c7e8a3f2b1d0e9c8a7b"
TAGS = ["rock", "calm", "vocal"]
MODEL = {"name": "tiny", "hash": "sha256:0123abcd"}


# ---------------------------------------------------------------- forged frames

def bodies() -> dict[str, dict]:
    """An honest body of each type, as JSON objects."""
    return {
        "scores": {"start_s": 3.0, "end_s": 6.0, "start_sample": 48000, "end_sample": 96000,
                   "tags": list(TAGS), "raw": [0.9, 0.1, 0.7], "smoothed": [0.8, 0.1, 0.6],
                   "active": ["rock"], "model": dict(MODEL), "latency_ms": 4.5},
        "event": {"tag": "rock", "state": "on", "score": 0.8, "time_s": 4.5, "sample": 72000},
        "status": {"state": "running", "error": None, "counters": {"windows": 3},
                   "title": "A - B", "source": "http://example.com/live"},
        "heartbeat": {"uptime_s": 12.5, "streams": 2},
        "track": {"title": "A - B", "reason": "end", "start_s": 0.0, "end_s": 60.0,
                  "start_sample": 0, "end_sample": 960000, "started_at": 1.7e9,
                  "ended_at": 1.7e9 + 60, "windows": 58, "tags": list(TAGS),
                  "mean_raw": [0.9, 0.1, 0.7], "mean_smoothed": [0.8, 0.1, 0.6],
                  "active_share": [0.9, 0.0, 0.5], "active": ["rock"], "model": dict(MODEL)},
    }


def forged(msg_type: str, body: dict | None = None, *, stream: str = "radio-1",
           session: str = SESSION, seq: int = 0) -> list[bytes]:
    """The three frames of a message written by hand, with whatever values are given."""
    stream = "" if msg_type == "heartbeat" else stream
    header = {"version": PROTOCOL_VERSION, "msg_type": msg_type, "msg_id": "f" * 32,
              "session": session, "stream": stream, "seq": seq, "sent_at": 1.7e9}
    topic = "heartbeat" if msg_type == "heartbeat" else f"{msg_type}.{stream}"
    return [topic.encode(), json.dumps(header).encode(),
            json.dumps(bodies()[msg_type] if body is None else body,
                       ensure_ascii=False).encode("utf-8", "surrogatepass")]


@pytest.fixture
def forger():
    """A PUB socket of the attacker's, bound on 127.0.0.1: (socket, endpoint)."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    yield pub, f"tcp://127.0.0.1:{port}"
    pub.close(linger=0)
    ctx.term()


def hear(pub: zmq.Socket, sub: Subscriber, frames: list[bytes]) -> ReceivedMessage:
    pub.send_multipart(frames)
    message = sub.recv(5000)
    assert message is not None, "the subscriber heard nothing"
    return message


def subscribed(pub: zmq.Socket, sub: Subscriber) -> None:
    """Heartbeats of a session of its own until the subscriber hears one."""
    def heard() -> bool:
        pub.send_multipart(forged("heartbeat", session="warm-up"))
        return sub.recv(50) is not None

    wait_until(heard, 10, "the subscription to take effect", interval=0)


# ---------------------------------------------------------------- protocol bounds

def with_value(msg_type: str, field: str, value) -> list[bytes]:
    """An honest message of `msg_type` with one field (``header.seq``, ``counters.windows``,
    ``start_sample``: end_sample follows it) set to `value`."""
    body = bodies()[msg_type]
    if field == "header.seq":
        return forged(msg_type, body, seq=value)
    if field.startswith("counters."):
        body["counters"][field.split(".", 1)[1]] = value
    else:
        body[field] = value
        if field == "start_sample":
            body["end_sample"] = value
    return forged(msg_type, body)


@pytest.mark.parametrize("msg_type, field, most", [
    ("scores", "header.seq", MAX_INTEGER),
    ("scores", "start_sample", MAX_INTEGER),
    ("scores", "end_sample", MAX_INTEGER),
    ("event", "sample", MAX_INTEGER),
    ("track", "windows", MAX_INTEGER),
    ("track", "end_sample", MAX_INTEGER),
    ("status", "counters.windows", MAX_INTEGER),
    ("heartbeat", "streams", MAX_STREAM_COUNT),
])
def test_integers_past_what_a_database_holds_are_decode_errors(msg_type, field, most):
    assert decode(with_value(msg_type, field, most)).msg_type == msg_type
    for hostile in (most + 1, 2**64, 10**400):
        with pytest.raises(ProtocolError, match=r"must be .*<= |too large|not valid JSON"):
            decode(with_value(msg_type, field, hostile))


def names(count: int, length: int = 8) -> list[str]:
    return [f"{i:0{length}d}" for i in range(count)]


@pytest.mark.parametrize("msg_type, change, most", [
    ("status", lambda b, n: b.update(title="t" * n), MAX_TEXT_LENGTH),
    ("track", lambda b, n: b.update(title="t" * n), MAX_TEXT_LENGTH),
    ("status", lambda b, n: b.update(error="e" * n), MAX_DETAIL_LENGTH),
    ("status", lambda b, n: b.update(source="s" * n), MAX_DETAIL_LENGTH),
    ("event", lambda b, n: b.update(tag="t" * n), MAX_TEXT_LENGTH),
    ("scores", lambda b, n: b.update(tags=["t" * n, "b"], raw=[0.1, 0.2],
                                     smoothed=[0.1, 0.2], active=[]), MAX_TEXT_LENGTH),
    ("scores", lambda b, n: b["model"].update(name="m" * n), MAX_TEXT_LENGTH),
    ("scores", lambda b, n: b.update(tags=names(n), raw=[0.5] * n, smoothed=[0.5] * n,
                                     active=[]), MAX_TAGS),
    ("scores", lambda b, n: b.update(active=["rock"] * n), MAX_TAGS),
    ("track", lambda b, n: b.update(tags=names(n), mean_raw=[0.5] * n,
                                    mean_smoothed=[0.5] * n, active_share=[0.0] * n,
                                    active=[]), MAX_TAGS),
    ("status", lambda b, n: b.update(counters=dict.fromkeys(names(n), 1)), MAX_COUNTERS),
    ("status", lambda b, n: b.update(counters={"c" * n: 1}), MAX_TEXT_LENGTH),
])
def test_text_and_arrays_past_their_caps_are_decode_errors(msg_type, change, most):
    at_cap, past = bodies()[msg_type], bodies()[msg_type]
    change(at_cap, most)
    change(past, most + 1)
    assert decode(forged(msg_type, at_cap)).msg_type == msg_type
    with pytest.raises(ProtocolError, match=rf"at most {most} (characters|items)"):
        decode(forged(msg_type, past))


def test_a_frame_past_the_cap_is_refused_before_it_is_parsed():
    # Bytes that are not even UTF-8: the size is what refuses them, before any parsing.
    frames = forged("heartbeat")
    for index in (1, 2):
        hostile = list(frames)
        hostile[index] = b"\xff" * (MAX_FRAME_BYTES + 1)
        started = time.perf_counter()
        with pytest.raises(ProtocolError, match=rf"{MAX_FRAME_BYTES + 1} bytes, over the "
                                                rf"{MAX_FRAME_BYTES}"):
            decode(hostile)
        assert time.perf_counter() - started < 0.05
    with pytest.raises(ProtocolError, match="topic frame is 1000 bytes"):
        decode([b"h" * 1000, *frames[1:]])
    # frames past the third are counted, never read
    with pytest.raises(ProtocolError, match="expected 3 frames .* got 100000"):
        decode(frames + [b""] * 99997)
    with pytest.raises(ProtocolError, match="control request is"):
        decode_request(b" " * (MAX_REQUEST_BYTES + 1))
    with pytest.raises(ProtocolError, match="control reply is"):
        decode_reply(b" " * (MAX_REPLY_BYTES + 1))


def test_writers_refuse_what_readers_refuse():
    with pytest.raises(ProtocolError, match="header seq"):
        make_message(HeartbeatBody(uptime_s=1.0, streams=1), session=SESSION, stream="",
                     seq=MAX_INTEGER + 1)
    with pytest.raises(ProtocolError, match="heartbeat streams"):
        HeartbeatBody(uptime_s=1.0, streams=MAX_STREAM_COUNT + 1)
    with pytest.raises(ProtocolError, match=f"scores tags must have at most {MAX_TAGS} items"):
        ScoresEncoder(names(MAX_TAGS + 1), MODEL)
    encoder = ScoresEncoder(TAGS, MODEL)
    with pytest.raises(ProtocolError, match="scores end_sample"):
        encoder.body_frame(start_s=0.0, end_s=1.0, start_sample=0, end_sample=2**63,
                           raw=[0.1] * 3, smoothed=[0.1] * 3, active=[], latency_ms=1.0)
    with pytest.raises(ProtocolError, match=f"scores active must have at most {MAX_TAGS}"):
        encoder.body_frame(start_s=0.0, end_s=1.0, start_sample=0, end_sample=1,
                           raw=[0.1] * 3, smoothed=[0.1] * 3, active=["rock"] * (MAX_TAGS + 1),
                           latency_ms=1.0)
    # Each field within its cap, the whole past the frame's: 4096 tags of 2000 characters.
    big = names(MAX_TAGS, 2000)
    body = ScoresBody(start_s=0.0, end_s=1.0, start_sample=0, end_sample=1, tags=big,
                      raw=[0.5] * MAX_TAGS, smoothed=[0.5] * MAX_TAGS, active=[], model=MODEL,
                      latency_ms=1.0)
    with pytest.raises(ProtocolError, match=f"scores body frame would be .* over the "
                                            f"{MAX_BODY_BYTES['scores']}"):
        encode(make_message(body, session=SESSION, stream="radio-1", seq=0))
    with pytest.raises(ProtocolError, match="scores body would be"):
        ScoresEncoder(big, MODEL).body_frame(
            start_s=0.0, end_s=1.0, start_sample=0, end_sample=1, raw=[0.5] * MAX_TAGS,
            smoothed=[0.5] * MAX_TAGS, active=[], latency_ms=1.0)


def test_the_largest_honest_message_is_far_below_the_frame_cap():
    # A 4096-tag model with 64-character tag names, every tag active: the biggest body an
    # honest daemon writes (docs/protocol.md quotes its size).
    tags = [f"{i:04d}-" + "x" * 59 for i in range(MAX_TAGS)]
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((3, MAX_TAGS)) * 0.98 + 0.01, 6).tolist()
    body = TrackBody(title="t" * MAX_TEXT_LENGTH, reason="end", start_s=0.0, end_s=1e6,
                     start_sample=0, end_sample=2**40, started_at=1.7e9, ended_at=1.7e9,
                     windows=10**6, tags=tags, mean_raw=scores[0], mean_smoothed=scores[1],
                     active_share=[0.75] * MAX_TAGS, active=tags, model=MODEL)
    frames = encode(make_message(body, session=SESSION, stream="s" * 128, seq=2**40))
    assert 600_000 < len(frames[2]) < MAX_FRAME_BYTES / 5
    assert decode(frames).body == body


# ---------------------------------------------------------------- property tests

def _hostile_int() -> st.SearchStrategy:
    return (st.integers(min_value=MAX_INTEGER - 2, max_value=MAX_INTEGER + 2)
            | st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([2**64, -1]))


def _long_text(draw_sizes: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(lambda n, c: c * n, draw_sizes, st.sampled_from(["a", "é", "\x1b", "𝄞"]))


def _long_list(item: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(lambda n, x: [x] * n,
                     st.sampled_from([0, 1, MAX_TAGS - 1, MAX_TAGS, MAX_TAGS + 1]), item)


_HOSTILE = st.one_of(
    _hostile_int(),
    _long_text(st.sampled_from([0, MAX_TEXT_LENGTH, MAX_TEXT_LENGTH + 1, MAX_DETAIL_LENGTH + 1])),
    _long_list(st.sampled_from([0.5, "rock", 2**64, None])),
    st.builds(lambda depth: json.loads("[" * depth + "]" * depth),
              st.sampled_from([1, 50, 500])),
    st.floats(allow_nan=False), st.none(), st.booleans(),
)
_FIELDS = sorted({name for body in bodies().values() for name in body}
                 | {"header.seq", "header.session", "header.msg_id", "header.stream"})


def _within_bounds(message: Message) -> None:
    """Whatever decodes keeps every bound: integers, arrays, text and the frames it makes."""
    for part in (message.header, message.body):
        for name, value in part.to_dict().items():
            if isinstance(value, int) and not isinstance(value, bool):
                assert -MAX_INTEGER - 1 <= value <= MAX_INTEGER, name
            if isinstance(value, list):
                assert len(value) <= MAX_TAGS, name
            if isinstance(value, str):
                assert len(value) <= MAX_DETAIL_LENGTH, name
    assert all(len(frame) <= MAX_FRAME_BYTES for frame in encode(message))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg_type=st.sampled_from(sorted(bodies())),
       changes=st.dictionaries(st.sampled_from(_FIELDS), _HOSTILE, min_size=1, max_size=3))
def test_hostile_values_decode_to_a_bounded_message_or_protocol_error(msg_type, changes):
    body = bodies()[msg_type]
    header_changes = {}
    for name, value in changes.items():
        if name.startswith("header."):
            header_changes[name.split(".", 1)[1]] = value
        else:
            body[name] = value
    frames = forged(msg_type, body)
    header = {**json.loads(frames[1]), **header_changes}
    frames[1] = json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogatepass")
    decodes_or_refuses(frames)
    try:
        message = decode(frames)
    except ProtocolError:
        return
    _within_bounds(message)


_JSON = st.recursive(
    st.none() | st.booleans() | _hostile_int() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200)
       | st.builds(lambda value: json.dumps(value).encode(), _JSON)
       | st.builds(lambda extra: json.dumps({"cmd": "status", **extra}).encode(),
                   st.dictionaries(st.text(max_size=6), _JSON, max_size=4))
       | st.builds(lambda extra, ok: json.dumps({"ok": ok, "error": "no", **extra}).encode(),
                   st.dictionaries(st.text(max_size=6), _JSON, max_size=4), st.booleans()))
def test_control_frames_decode_to_what_re_encodes_or_protocol_error(data):
    for decoder, encoder in ((decode_request, encode_request), (decode_reply, encode_reply)):
        try:
            value = decoder(data)
        except ProtocolError:
            continue
        assert isinstance(value, dict)
        assert decoder(encoder(value)) == value


@pytest.mark.parametrize("size", [MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1,
                                  10 * MAX_REQUEST_BYTES])
def test_control_requests_past_their_cap_are_refused_and_those_within_decode(size):
    frame = b'{"cmd":"ping","pad":"' + b"x" * (size - 23) + b'"}'
    assert len(frame) == size
    if size <= MAX_REQUEST_BYTES:
        assert decode_request(frame)["cmd"] == "ping"
    else:
        with pytest.raises(ProtocolError, match=f"over the {MAX_REQUEST_BYTES}"):
            decode_request(frame)
        with pytest.raises(ProtocolError, match=f"over the {MAX_REQUEST_BYTES}"):
            encode_request(json.loads(frame))


# ---------------------------------------------------------------- the recorder

def test_a_forged_seq_past_int64_is_refused_and_the_recorder_stores_what_follows(
        tmp_path, forger):
    # Once, such a message killed the recorder's writer thread (an OverflowError from the
    # database driver) and everything after it was lost.
    pub, endpoint = forger
    engine = schema.create_db_engine(f"sqlite:///{tmp_path / 'tags.db'}")
    schema.upgrade(engine)
    recorder = Recorder(engine, endpoint).start()
    try:
        def heard() -> bool:
            pub.send_multipart(forged("heartbeat", seq=0))
            return recorder.stats.received["heartbeat"] > 0

        wait_until(heard, 10, "the recorder to subscribe", interval=0.05)
        pub.send_multipart(forged("status", seq=0))
        pub.send_multipart(forged("status", seq=2**64))
        pub.send_multipart(forged("event", {**bodies()["event"], "sample": 2**64}, seq=0))
        for seq in range(1, 6):
            pub.send_multipart(forged("status", seq=seq))
        pub.send_multipart(forged("event", seq=1))
        expected = {("status", "radio-1", SESSION, seq) for seq in range(6)}
        expected.add(("event", "radio-1", SESSION, 1))
        wait_until(lambda: set(stored_keys(engine)) == expected, 10,
                   "the honest messages to be stored", interval=0.1)
        assert recorder.stats.invalid >= 2
        with engine.connect() as conn:  # the refused ones are not stored as anything
            seqs = [r.first_seq for r in conn.execute(sa.select(schema.gaps))]
        assert all(seq <= MAX_INTEGER for seq in seqs)
    finally:
        recorder.stop(2)
        engine.dispose()


# ---------------------------------------------------------------- the subscriber

def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


RSS_GROWTH_BOUND_MB = 48  # the bounds' own worst case is about 20 MB


@pytest.mark.slow  # 20 s; test_forgetting_streams_... checks the bounds' logic in the default run
def test_forged_sessions_leave_a_subscriber_s_memory_bounded(forger):
    # 200,000 forged sessions: 100,000 under a new stream id each, 50,000 restarts of one
    # stream, 50,000 heartbeats of new daemon sessions; ids at their longest. Without bounds
    # a subscriber kept all of them (126 MB more here; 409 MB in the review's run).
    pub, endpoint = forger
    sub = Subscriber(endpoint)
    status = json.dumps({"state": "running"}).encode()
    heartbeat = json.dumps({"uptime_s": 1.0, "streams": 1}).encode()

    def frames(kind: str, i: int) -> list[bytes]:
        session = f"{kind[0]}{i:0127d}"
        if kind == "beat":
            header = {"version": PROTOCOL_VERSION, "msg_type": "heartbeat", "msg_id": "m",
                      "session": session, "stream": "", "seq": 3, "sent_at": 1.0}
            return [b"heartbeat", json.dumps(header).encode(), heartbeat]
        stream = f"s{i:0127d}" if kind == "streams" else "radio-1"
        header = {"version": PROTOCOL_VERSION, "msg_type": "status", "msg_id": "m",
                  "session": session, "stream": stream, "seq": 5, "sent_at": 1.0}
        return [f"status.{stream}".encode(), json.dumps(header).encode(), status]

    def flood(kind: str, count: int, start: int) -> None:
        for base in range(start, start + count, 500):  # within the sockets' queues: no loss
            for i in range(base, base + 500):
                pub.send_multipart(frames(kind, i))
            for _ in range(500):
                assert sub.recv(5000) is not None, "a forged message was lost"

    with sub:
        subscribed(pub, sub)
        honest = forged("status", stream="honest-1", session="honest", seq=0)
        assert hear(pub, sub, honest).gap == 0
        for kind in ("streams", "restarts", "beat"):  # the allocator's and sockets' warm-up
            flood(kind, 5000, 10**7)
        before = _rss_mb()
        for kind, count in (("streams", 100_000), ("restarts", 50_000), ("beat", 50_000)):
            flood(kind, count, 0)
        grown = _rss_mb() - before
        assert grown < RSS_GROWTH_BOUND_MB, f"the subscriber grew {grown:.0f} MB"
        assert sub.pruned > 150_000
        # The honest stream, forgotten under the flood, is judged as one first heard: no
        # invented gap, no invented restart.
        back = hear(pub, sub, forged("status", stream="honest-1", session="honest", seq=9))
        assert (back.gap, back.restarted) == (0, False)


def test_forgetting_streams_loses_judgements_but_invents_no_gap(forger, monkeypatch):
    # The bounds made tiny, to see what forgetting does with a few messages.
    monkeypatch.setattr(subscriber_module, "MAX_STREAMS", 3)
    monkeypatch.setattr(subscriber_module, "MAX_SESSIONS_PER_STREAM", 2)
    monkeypatch.setattr(subscriber_module, "MAX_HEARTBEAT_SESSIONS", 2)
    pub, endpoint = forger

    def status(stream: str, session: str, seq: int) -> list[bytes]:
        return forged("status", stream=stream, session=session, seq=seq)

    with Subscriber(endpoint) as sub:
        subscribed(pub, sub)
        for seq in range(3):
            assert hear(pub, sub, status("a", "s1", seq)).gap == 0
        first = hear(pub, sub, status("a", "s2", 0))  # the daemon restarted
        assert (first.restarted, first.gap) == (True, 0)
        assert hear(pub, sub, status("a", "s2", 2)).gap == 1
        # a stream first heard in a session seen starting should begin at 0
        assert hear(pub, sub, status("b", "s2", 4)).gap == 4
        for i in range(5):  # forged streams push a and b out
            hear(pub, sub, status(f"forged-{i}", f"f{i}", 7))
        assert sub.pruned >= 2
        for stream, seq in (("a", 9), ("b", 9)):  # back: judged as first heard
            back = hear(pub, sub, status(stream, "s2", seq))
            assert (back.gap, back.restarted) == (0, False), stream
        assert hear(pub, sub, status("a", "s2", 11)).gap == 1  # judged again from there
        assert hear(pub, sub, status("a", "s3", 0)).restarted
        # forgotten heartbeat sessions likewise
        hear(pub, sub, forged("heartbeat", session="d1", seq=0))
        for i in range(3):
            hear(pub, sub, forged("heartbeat", session=f"other-{i}", seq=5))
        assert hear(pub, sub, forged("heartbeat", session="d1", seq=8)).gap == 0


# A reader's defaults, and the recorder's: more messages held by ZeroMQ, of smaller frames
READERS = {"reader": {},
           "recorder": {"socket_rcvhwm": FEED_SOCKET_RCVHWM,
                        "max_frame_bytes": FEED_MAX_FRAME_BYTES}}


@pytest.mark.parametrize("reader", list(READERS))
def test_a_subscriber_never_reads_a_frame_past_the_cap(forger, reader):
    pub, endpoint = forger
    cap = READERS[reader].get("max_frame_bytes", MAX_FRAME_BYTES)
    with Subscriber(endpoint, **READERS[reader]) as sub:
        subscribed(pub, sub)
        frames = forged("heartbeat")
        pub.send_multipart([frames[0], frames[1], b" " * cap])  # read, and refused
        wait_until(lambda: sub.recv(50) is None and sub.invalid == 1, 10,
                   "the frame at the cap to be read and refused")
        pub.send_multipart([frames[0], frames[1], b" " * (cap + 1)])
        assert sub.recv(1000) is None
        # ZeroMQ dropped the connection that sent it, unread (MAXMSGSIZE): nothing decoded
        assert sub.invalid == 1
        subscribed(pub, sub)  # it connects again and hears the rest
        assert sub.invalid == 1


_HOLDING_READER = """
import sys, json
from streamtag.wire.subscriber import Subscriber
sub = Subscriber(sys.argv[1], **json.loads(sys.argv[2]))
print("connected", flush=True)
sys.stdin.readline()  # never reads: what ZeroMQ takes for it, it holds
"""


@pytest.mark.parametrize("reader", list(READERS))
def test_what_zeromq_holds_for_a_reader_that_does_not_read_is_bounded(reader, tmp_path):
    # A forger sends frames at the reader's cap as fast as a socket takes them, to a reader
    # busy elsewhere: ZeroMQ takes what its queue may hold (socket_rcvhwm messages) and the
    # rest waits at the forger. The reader's memory grows by about that, 32 MiB here either
    # way (8 of 4 MiB, 32 of 1 MiB), not by the 5 times as much sent.
    import subprocess
    import sys

    from streamtag.wire.subscriber import SOCKET_RCVHWM

    options = READERS[reader]
    held = options.get("socket_rcvhwm", SOCKET_RCVHWM)
    cap = options.get("max_frame_bytes", MAX_FRAME_BYTES)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # hears the reader's subscriptions
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    reader_proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDING_READER, f"tcp://127.0.0.1:{port}", json.dumps(options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert reader_proc.stdout.readline().strip() == "connected"
        assert pub.poll(10_000), "the reader's subscriptions never came"
        time.sleep(0.3)  # the rest of them
        before = _proc_kb(reader_proc.pid, "VmRSS")
        frames = forged("status")
        body = b" " * cap
        for _ in range(5 * held):
            pub.send_multipart([frames[0], frames[1], body])
        sent_mb = 5 * held * cap / 2**20

        def grown_mb() -> float:
            return (_proc_kb(reader_proc.pid, "VmRSS") - before) / 1024

        # until ZeroMQ has taken all it will (its queue, and the message being read)
        wait_until(lambda: grown_mb() >= (held - 1) * cap / 2**20, 30,
                   f"the {reader} to take what its queue holds")
        time.sleep(1.0)
        assert grown_mb() <= (held + 2) * cap / 2**20 + 8, (grown_mb(), sent_mb)
    finally:
        reader_proc.kill()
        reader_proc.communicate()  # and its pipes closed
        pub.close(linger=0)
        ctx.term()


# ---------------------------------------------------------------- terminals and spreadsheets

HOSTILE_TITLE = "\x1b]0;owned\x07\x1b[2J\x1b[1;1HSong\r\nMISSING 99 scores messages\x9b31m\x7f!"
TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def hostile_messages() -> list[list[bytes]]:
    title = {**bodies()["status"], "title": HOSTILE_TITLE, "error": "\x1b[31merror\x1b[0m",
             "source": "\x9d8;;http://x\x9c", "counters": {"\x1b[5mblink": 1}}
    event = {**bodies()["event"], "tag": "\x1b[2Krock"}
    track = {**bodies()["track"], "title": HOSTILE_TITLE}
    return [forged("status", title, seq=0), forged("event", event, seq=0),
            forged("track", track, seq=0),
            forged("heartbeat", session="\x1b[2J\x1b[Hdaemon", seq=0)]


def listen_while_forging(pub: zmq.Socket, endpoint: str, **options) -> str:
    """``streamtag listen`` (run_listen) printing what the forger keeps sending."""
    out = io.StringIO()
    stop = threading.Event()

    def send() -> None:
        while not stop.wait(0.05):
            for frames in hostile_messages():
                pub.send_multipart(frames)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert run_listen(endpoint, out=out, duration=20, **options) == 0
    finally:
        stop.set()
        sender.join()
    return out.getvalue()


def test_listen_shows_station_text_without_terminal_controls(forger):
    pub, endpoint = forger
    text = listen_while_forging(pub, endpoint, count=8)
    lines = text.splitlines()
    assert len(lines) == 8  # one line a message: a title cannot start a line of its own
    assert not TERMINAL_CONTROLS.search(text), repr(text)
    assert "Song MISSING 99 scores messages!" in text  # the text itself is shown
    assert "rock ON" in text and "error: error" in text

    tracks = listen_while_forging(pub, endpoint, count=4, tracks=True)
    assert len(tracks.splitlines()) == 4 and not TERMINAL_CONTROLS.search(tracks)

    shown = listen_while_forging(pub, endpoint, count=4, as_json=True)
    assert not TERMINAL_CONTROLS.search(shown) and "\\u009b" in shown
    titles = {json.loads(line)["body"].get("title") for line in shown.splitlines()}
    assert HOSTILE_TITLE in titles  # the JSON carries the title unchanged


def test_a_coloured_line_holds_only_its_own_escape_sequences():
    for frames in hostile_messages():
        decoded = decode(frames)
        message = ReceivedMessage(decoded.header, decoded.body, gap=2, restarted=True)
        plain = format_message(message, color=False)
        assert not TERMINAL_CONTROLS.search(plain) and "\n" not in plain, repr(plain)
        # with colour: the same line and the colours listen paints, nothing else
        coloured = format_message(message, color=True)
        assert re.sub(r"\x1b\[(?:0|1|31|32)m", "", coloured) == plain


def test_tag_csv_writes_paths_tags_and_errors_as_text_and_numbers_as_numbers():
    results = [
        FileTags(path="=HYPERLINK(\"http://evil\",\"x\").mp3", duration_s=3.0, windows=1,
                 segments=[Segment("-2+3", 0.0, 1.5, 0.25)], mean_scores={"@SUM(A1)": 0.5},
                 tags=["@SUM(A1)"]),
        FileTags(path="+cmd.mp3", error="\tcannot decode: =1+1"),
    ]
    rows = list(csv.reader(io.StringIO(format_csv(results))))
    assert rows[1][:3] == ["'=HYPERLINK(\"http://evil\",\"x\").mp3", "segment", "'-2+3"]
    assert rows[2][2] == "'@SUM(A1)"
    assert rows[3][0] == "'+cmd.mp3" and rows[3][7] == "'\tcannot decode: =1+1"
    assert [float(v) for v in rows[1][3:6]] == [0.0, 1.5, 0.25]


# ---------------------------------------------------------------- writing, for completeness

def test_bodies_of_the_review_round_trip_at_their_caps():
    # The bounds in effect for a message a writer builds, at each cap exactly.
    tags = names(MAX_TAGS)
    body = ScoresBody(start_s=0.0, end_s=1.0, start_sample=MAX_INTEGER, end_sample=MAX_INTEGER,
                      tags=tags, raw=[0.5] * MAX_TAGS, smoothed=[0.5] * MAX_TAGS, active=tags,
                      model={"name": "m" * MAX_TEXT_LENGTH, "hash": "h"}, latency_ms=1.0)
    status = StatusBody(state="failed", error="e" * MAX_DETAIL_LENGTH, title="t" * 4096,
                        counters={f"c{i}": MAX_INTEGER for i in range(MAX_COUNTERS)})
    event = EventBody(tag="t" * MAX_TEXT_LENGTH, state="on", score=-0.5, time_s=0.0,
                      sample=MAX_INTEGER)
    for b in (body, status, event):
        message = make_message(b, session=SESSION, stream="radio-1", seq=MAX_INTEGER)
        assert decode(encode(message)) == message


@pytest.mark.slow  # 15 s: 20,000 subscriptions
def test_a_peer_s_huge_subscriptions_do_not_grow_the_publisher_and_honest_ones_work():
    # libzmq keeps every distinct subscription in a trie at ~46 bytes per topic byte, for
    # good: any local process that reached the feed port grew the daemon by 2.7 GB with 1,000
    # subscriptions of 60 KB (each under the old 64 KiB cap). Past 512 bytes the peer is now
    # dropped before anything is kept. The attacker is another process: its own XSUB keeps
    # its subscriptions too.
    import subprocess
    import sys

    from streamtag.wire.publisher import Publisher
    from streamtag.wire.subscriber import Subscriber

    ctx = zmq.Context()
    publisher = Publisher("tcp://127.0.0.1:*", context=ctx)
    longest = "s" * 128  # the longest stream id: a topic of 135 bytes
    honest = Subscriber(publisher.endpoint, streams=[longest], context=ctx)
    attacker = subprocess.Popen([sys.executable, "-c", (
        "import random, time, zmq\n"
        "x = zmq.Context().socket(zmq.XSUB)\n"
        f"x.connect({publisher.endpoint!r})\n"
        "time.sleep(0.3)\n"
        "rng = random.Random(1)\n"
        "for i in range(300):\n"
        "    x.send(b'\\x01' + bytes(rng.randrange(97, 123) for _ in range(60000)))\n"
        "time.sleep(2)\n")])
    try:
        before = _rss_mb()
        while attacker.poll() is None:
            publisher.heartbeat(streams=0)
            time.sleep(0.05)
        assert attacker.returncode == 0
        grown = _rss_mb() - before
        assert grown < 100, f"the publisher grew {grown:.0f} MB"  # 300 of them: 823 MB before

        def heard() -> bool:
            publisher.publish_event(longest, tag="rock", state="on", score=0.9, time_s=1.0,
                                    sample=16000)
            got = honest.recv(timeout_ms=100)
            return got is not None and got.header.stream == longest
        wait_until(heard, 10, "the honest subscriber's longest topic to be served")
    finally:
        if attacker.poll() is None:
            attacker.kill()
        honest.close()
        publisher.close()
        ctx.term()


# ---------------------------------------------------------------- memory bounded by bytes
#
# A forged publisher on a proxy's frontend (no CURVE keys), beside a real daemon publishing
# there, against the real reader processes on the proxy's backend: statuses of 4 MB (over
# the 256 KiB a status body may be), statuses of 240 kB (within it, their counters past what a
# reader keeps), scores of 0.85 MB for 4,096 tags (within the 1 MiB a scores body may be, over
# what the dashboard keeps), and thousands of forged streams. Each reader's peak RSS (VmHWM in
# /proc) and the database's growth stay within bounds, and the daemon's own messages after
# the flood are still shown or stored. Before these bounds, the first three grew the
# dashboard, `listen --tracks` and `record` by their whole size.

BIG_STATUSES = 60        # of 4.1 MB: 246 MB
MID_STATUSES = 100       # of 240 kB
WIDE_SCORES = 20         # of 0.85 MB
FORGED_STREAMS = 6000    # small statuses, each of its own stream
GROWTH_BOUND_MB = 150    # what a reader's peak RSS may grow by, over what it had before


def _proc_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _forged_frames(msg_type: str, stream: str, body: dict) -> list[bytes]:
    header = {"version": PROTOCOL_VERSION, "msg_type": msg_type, "msg_id": uuid.uuid4().hex,
              "session": uuid.uuid4().hex, "stream": stream, "seq": 0,
              "sent_at": time.time()}
    return [f"{msg_type}.{stream}".encode(), json.dumps(header).encode(),
            json.dumps(body).encode()]


def _flood() -> list[list[bytes]]:
    big = {"state": "running", "counters": {f"{i:04d}" + "c" * 3996: i for i in range(1024)}}
    mid = {"state": "running", "counters": {f"{i:02d}" + "m" * 3998: i for i in range(60)}}
    tags = [f"{i:04d}" + "t" * 196 for i in range(MAX_TAGS)]
    wide = {**bodies()["scores"], "tags": tags, "raw": [0.5] * MAX_TAGS,
            "smoothed": [0.5] * MAX_TAGS, "active": tags[:8]}
    # the big ones last: a frame over the recorder's cap (FEED_MAX_FRAME_BYTES) drops its
    # connection, and what is sent before it is connected again does not reach it
    frames = [_forged_frames("status", f"forged-mid-{i}", mid) for i in range(MID_STATUSES)]
    frames += [_forged_frames("scores", f"forged-wide-{i}", wide) for i in range(WIDE_SCORES)]
    frames += [_forged_frames("status", f"forged-{i}", {"state": "running", "title": "x"})
               for i in range(FORGED_STREAMS)]
    frames += [_forged_frames("status", f"forged-big-{i}", big) for i in range(BIG_STATUSES)]
    assert len(frames[-1][2]) > 4_000_000 and 200_000 < len(frames[0][2]) < 262_144
    return frames


class _Feed:
    """A real `streamtag proxy` process; a daemon in this process publishing to its frontend;
    a forged publisher (an XPUB, so it hears the readers' subscriptions) connected there."""

    def __init__(self, tmp_path) -> None:
        import subprocess
        import sys
        import tempfile

        from support.helpers import free_port, make_config, tiny_model_file

        from streamtag.audio.files import write_audio
        from streamtag.audio.testsignals import music_like
        from streamtag.daemon.config import PublishConfig
        from streamtag.daemon.daemon import Daemon

        self.frontend = f"tcp://127.0.0.1:{free_port()}"
        self.backend = f"tcp://127.0.0.1:{free_port()}"
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "streamtag", "proxy", "--frontend", self.frontend,
             "--backend", self.backend], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=tempfile.gettempdir())
        self.audio = tmp_path / "honest.flac"
        write_audio(self.audio, music_like(1.5, 44100, seed=3), 44100)
        config = make_config(tiny_model_file(tmp_path / "tiny.pt"), tmp_path,
                             publish=PublishConfig(endpoint=self.frontend, connect=True,
                                                   heartbeat_s=0.1))
        self.daemon = Daemon(config).start()
        self.ctx = zmq.Context()
        self.forger = self.ctx.socket(zmq.XPUB)
        self.forger.setsockopt(zmq.SNDHWM, 0)
        self.forger.setsockopt(zmq.LINGER, 0)
        self.forger.connect(self.frontend)

    def add_source(self, stream: str) -> None:
        """A stream of 1.5 s of music at real speed, titled by its id."""
        from streamtag.wire.control import control_request

        reply = control_request(self.daemon.control.endpoint, {
            "cmd": "add_source", "id": stream, "spec": str(self.audio), "title": stream,
            "realtime": True})
        assert reply["ok"], reply

    def until_heard(self, heard, what: str, timeout_s: float = 60.0,
                    prefix: str = "honest") -> str:
        """Adds a stream `PREFIX-N` every 4 s (a reader just started may miss the first)
        until `heard(id)` is true for one; that id."""
        deadline = time.monotonic() + timeout_s
        for n in range(1000):
            stream = f"{prefix}-{n}"
            self.add_source(stream)
            until = min(deadline, time.monotonic() + 4)
            while time.monotonic() < until:
                if heard(stream):
                    return stream
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                break
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def forge(self) -> None:
        """Waits for a reader's subscriptions to reach the forger, then sends the flood."""
        wait_until(lambda: self.forger.poll(0) and self.forger.recv(), 10,
                   "a reader's subscription to reach the forged publisher")
        time.sleep(0.3)  # the rest of its subscriptions
        # Paced a little, so that the proxy's queue (1,000 messages a reader) drops few.
        for n, frames in enumerate(_flood()):
            self.forger.send_multipart(frames)
            if n % 200 == 199:
                time.sleep(0.05)

    def close(self) -> None:
        from support.helpers import stop_process

        self.forger.close()
        self.ctx.term()
        self.daemon.stop()
        stop_process(self.proxy)


@pytest.fixture
def forged_feed(tmp_path):
    feed = _Feed(tmp_path)
    yield feed
    feed.close()


@contextlib.contextmanager
def _reader(tmp_path, name: str, *args: str):
    """A real `streamtag ARGS` process, its output in files: (process, stdout path, stderr
    path); stopped on leaving."""
    import subprocess
    import sys
    import tempfile

    from support.helpers import stop_process

    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("w") as out_file, err.open("w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "streamtag", *args], stdout=out_file,
                                stderr=err_file, cwd=tempfile.gettempdir())
        try:
            yield proc, out, err
        finally:
            stop_process(proc)


def _grown_mb(proc, before_kb: int) -> float:
    return (_proc_kb(proc.pid, "VmHWM") - before_kb) / 1024


def test_a_forged_feed_cannot_grow_the_dashboard_past_its_bounds(forged_feed, tmp_path):
    import urllib.request

    from support.helpers import free_port
    from websockets.sync.client import connect as ws_connect

    from streamtag.web.feed import HELLO_PIECE_BYTES, MAX_STREAMS

    port = free_port()

    def health() -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return json.load(r)
        except OSError:
            return {}

    with _reader(tmp_path, "dashboard", "dashboard", "--connect", forged_feed.backend,
                 "--port", str(port)) as (proc, _, err):
        forged_feed.until_heard(lambda stream: stream in health().get("streams", []),
                                "the dashboard to show the daemon's stream")
        before = _proc_kb(proc.pid, "VmRSS")
        forged_feed.forge()
        forged_feed.add_source("honest-after")
        wait_until(lambda: "honest-after" in health().get("streams", []), 60,
                   "the dashboard to show the daemon's stream after the flood", interval=0.2)
        grown = _grown_mb(proc, before)
        state = health()
        assert grown < GROWTH_BOUND_MB, f"the dashboard's peak RSS grew {grown:.0f} MB"
        assert len(state["streams"]) <= MAX_STREAMS
        # The loss is seen: messages too big to keep are counted and said once in the log
        # (streams forgotten for the caps too: test_the_dashboard_s_views_stay_within_bounds).
        assert state["dropped"]["oversized"] >= 1, state["dropped"]
        assert err.read_text().count("over the 65536 the dashboard keeps") == 1
        # A page gets the hello in pieces, the daemon's stream with its tags among them.
        def page() -> tuple[dict, list[int]]:
            with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
                text = ws.recv(timeout=10)
                first = json.loads(text)
                assert first["type"] == "hello" and first["more"] is True
                views, sizes, more = dict(first["streams"]), [len(text)], True
                while more:
                    text = ws.recv(timeout=10)
                    piece = json.loads(text)
                    if piece["type"] != "streams":
                        continue  # a live message between pieces
                    views.update(piece["streams"])
                    sizes.append(len(text))
                    more = piece["more"]
            return views, sizes

        wait_until(lambda: page()[0]["honest-after"]["tags"], 30,
                   "a page to show the daemon's scores after the flood", interval=0.5)
        views, sizes = page()
        assert len(sizes) > 1 and max(sizes) < 2 * HELLO_PIECE_BYTES, sizes
        assert len(views) <= MAX_STREAMS


@pytest.mark.slow  # 6 s; the dashboard's and the recorder's run by default
def test_a_forged_feed_cannot_grow_listen_tracks(forged_feed, tmp_path):
    with _reader(tmp_path, "listen", "listen", forged_feed.backend,
                 "--tracks") as (proc, out, _):
        forged_feed.until_heard(lambda stream: stream in out.read_text(),
                                "listen --tracks to print the daemon's title")
        before = _proc_kb(proc.pid, "VmRSS")
        forged_feed.forge()
        forged_feed.add_source("honest-after")
        wait_until(lambda: re.search(r"honest-after +played", out.read_text()), 60,
                   "listen --tracks to print the daemon's track after the flood",
                   interval=0.2)
        grown = _grown_mb(proc, before)
        assert grown < GROWTH_BOUND_MB, f"listen --tracks' peak RSS grew {grown:.0f} MB"
        assert re.search(r"honest-after +now playing \"honest-after\"", out.read_text())


def test_a_forged_feed_cannot_grow_the_recorder_or_its_database(forged_feed, tmp_path):
    db = tmp_path / "history.db"
    url = f"sqlite:///{db}"
    engine = schema.create_db_engine(url)
    schema.upgrade(engine)

    def stored(stream: str, table=schema.statuses) -> int:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)
                                .where(table.c.stream == stream)).scalar()

    def windows(stream: str) -> int:
        blocks, sessions = schema.window_blocks.c, schema.sessions.c
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.sum(blocks.windows))
                                .join_from(schema.window_blocks, schema.sessions)
                                .where(sessions.stream == stream)).scalar() or 0

    def db_bytes() -> int:
        return sum(p.stat().st_size for p in tmp_path.glob("history.db*"))

    try:
        with _reader(tmp_path, "record", "record", "--connect", forged_feed.backend,
                     "--db", url, "--block-s", "1") as (proc, _, err):
            forged_feed.until_heard(stored, "the recorder to store the daemon's stream")
            before, size_before = _proc_kb(proc.pid, "VmRSS"), db_bytes()
            forged_feed.forge()
            # The flood's last frames, over its frame cap, made it connect again: the first
            # stream after it may be missed while it does (windows: --block-s 1 may write
            # the block after the track).
            after = forged_feed.until_heard(
                lambda stream: stored(stream, schema.tracks) and windows(stream) >= 1,
                "the recorder to store a stream's track and windows after the flood",
                prefix="honest-after")
            grown = _grown_mb(proc, before)
            db_grown = (db_bytes() - size_before) / 1e6
            assert grown < GROWTH_BOUND_MB, f"the recorder's peak RSS grew {grown:.0f} MB"
            # The forged streams' sessions and small statuses are stored, a few MB; the 4 MB
            # statuses are never read and the counters of those of 240 kB cut.
            assert db_grown < 20, f"the database grew {db_grown:.0f} MB"
            assert windows(after) >= 1
            assert stored("forged-big-0") == 0
            with engine.connect() as conn:
                longest = conn.execute(sa.select(sa.func.max(sa.func.length(
                    schema.statuses.c.counters)))).scalar()
            assert longest <= 16 * 1024
            assert err.read_text().count("characters of counters") == 1
    finally:
        engine.dispose()


def test_the_dashboard_s_views_stay_within_bounds(monkeypatch, caplog):
    # The same bounds as the dashboard's, made small: past MAX_STREAMS or MAX_KEPT_BYTES the
    # least recently heard streams are forgotten (counted, said once), the one just heard
    # kept; a page's hello comes in pieces holding every view kept.
    from streamtag.web import feed

    monkeypatch.setattr(feed, "MAX_STREAMS", 50)
    monkeypatch.setattr(feed, "MAX_KEPT_BYTES", 2_000_000)
    state = feed.FeedState(["tcp://127.0.0.1:1"])

    def message(msg_type: str, stream: str, body: dict) -> dict:
        frames = _forged_frames(msg_type, stream, body)
        decoded = decode(frames)
        received = ReceivedMessage(decoded.header, decoded.body, size=sum(map(len, frames)))
        return {**received.to_dict(), "size": received.size}

    honest = message("scores", "honest", bodies()["scores"])
    for i in range(500):
        state.apply_message(message("status", f"forged-{i}", {"state": "running"}))
        if i % 10 == 0:
            assert state.apply_message(honest) is not None
    assert len(state.streams) == 50 and "honest" in state.streams
    assert state.forgotten == 451
    tags = [f"t{i:03d}" + "x" * 40 for i in range(500)]
    wide = {**bodies()["scores"], "tags": tags, "raw": [0.5] * 500, "smoothed": [0.5] * 500,
            "active": tags}  # 50 kB: kept, and every tag in its second's bin
    for i in range(60):
        state.apply_message(message("scores", f"wide-{i}", wide))
        state.apply_message(honest)
        assert state.kept_bytes <= feed.MAX_KEPT_BYTES
    assert "honest" in state.streams and len(state.streams) < 20
    too_big = {**wide, "tags": tags + [t + "y" for t in tags]}  # 75 kB: over the 64 KiB kept
    too_big.update(raw=[0.5] * 1000, smoothed=[0.5] * 1000, active=too_big["tags"])
    assert state.apply_message(message("scores", "huge", too_big)) is None
    assert state.oversized == 1 and "huge" not in state.streams
    assert sum("forgot stream" in r.message for r in caplog.records) == 1
    pieces = [json.loads(p) for p in state.hello_pieces(piece_bytes=50_000)]
    assert len(pieces) > 2 and all(p["more"] for p in pieces[:-1]) and not pieces[-1]["more"]
    assert [p["type"] for p in pieces] == ["hello"] + ["streams"] * (len(pieces) - 1)
    views = {k: v for p in pieces for k, v in p["streams"].items()}
    assert views == json.loads(json.dumps(state.hello()["streams"]))


def test_a_subscriber_s_queue_is_bounded_in_bytes():
    # Forged scores of 0.85 MB, as fast as a socket takes them: ZeroMQ holds a few
    # (SOCKET_RCVHWM) and the subscriber reads ahead at most max_queue_bytes (and one
    # message more); the rest waits at the publisher, which drops what it cannot hold. The
    # same messages of 3 kB (the largest honest ones) all fit.
    tags = [f"{i:04d}" + "t" * 196 for i in range(MAX_TAGS)]
    wide = {**bodies()["scores"], "tags": tags, "raw": [0.5] * MAX_TAGS,
            "smoothed": [0.5] * MAX_TAGS, "active": tags[:8]}
    frames = _forged_frames("scores", "forged", wide)
    size = sum(map(len, frames))
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}", context=ctx, max_queue_bytes=4 * size)
    try:
        def heard() -> bool:
            pub.send_multipart(_forged_frames("status", "probe", {"state": "running"}))
            return sub.recv(50) is not None
        wait_until(heard, 10, "the subscription to be active")
        for _ in range(60):
            pub.send_multipart(frames)
        most = 0
        for _ in range(20):
            got = sub.recv(2000)
            assert got is not None and got.size == size
            most = max(most, sub.waiting_bytes)
            time.sleep(0.02)  # a slow reader: ZeroMQ fills meanwhile
        assert 0 < most <= 5 * size, most
    finally:
        sub.close()
        pub.close(linger=0)
        ctx.term()
