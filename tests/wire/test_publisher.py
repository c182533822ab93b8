"""Publisher, subscriber, control socket and proxy over real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import io
import json
import queue
import socket
import threading
import time

import pytest
import zmq
from support.helpers import free_port, run_python

from streamtag.commands.listen import run_listen
from streamtag.errors import ModelError, ProtocolError
from streamtag.wire.control import ControlServer, control_request
from streamtag.wire.protocol import (
    PROTOCOL_VERSION,
    EventBody,
    ModelRef,
    ScoresBody,
    decode,
    encode,
    make_message,
)
from streamtag.wire.proxy import run_proxy
from streamtag.wire.publisher import Publisher
from streamtag.wire.replay import ReplayRing, ReplayServer
from streamtag.wire.sockets import wait_released
from streamtag.wire.subscriber import ReceivedMessage, Subscriber

ANY_PORT = "tcp://127.0.0.1:*"
TAGS = ["rock", "calm", "vocal"]


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)  # closes whatever a failing test left open


def publish_scores(pub: Publisher, stream: str = "radio-1", i: int = 0) -> bool:
    return pub.publish_scores(stream, start_s=i * 1.0, end_s=i * 1.0 + 3.0,
                              start_sample=i * 16000, end_sample=i * 16000 + 48000, tags=TAGS,
                              raw=[0.9, 0.1, 0.6], smoothed=[0.8, 0.2, 0.55],
                              active=["rock", "vocal"], model=ModelRef("crnn", "sha256:ab"),
                              latency_ms=12.0)


def publish_event(pub: Publisher, stream: str = "radio-1", i: int = 0) -> bool:
    return pub.publish_event(stream, tag="rock", state="on" if i % 2 == 0 else "off",
                             score=0.75, time_s=i * 0.5, sample=i * 8000)


def await_subscription(pub: Publisher, sub: Subscriber, timeout_s: float = 5.0) -> None:
    """PUB drops what is sent before the subscription arrives: send heartbeats until one
    gets through, then drain them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.heartbeat(streams=1)
        message = sub.recv(20)
        if message is not None:
            while sub.recv(50) is not None:
                pass
            return
    raise AssertionError(f"the subscriber never received from {pub.endpoint}")


def receive(sub: Subscriber, n: int, timeout_s: float = 5.0) -> list[ReceivedMessage]:
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        message = sub.recv(100)
        if message is not None:
            got.append(message)
    return got


def drain(sub: Subscriber, quiet_ms: int = 2000) -> list[ReceivedMessage]:
    """Everything that arrives until nothing has for `quiet_ms` (on a machine busy with other
    work, a flood's messages came in bursts more than 300 ms apart)."""
    got = []
    while (message := sub.recv(quiet_ms)) is not None:
        got.append(message)
    return got


# ---------------------------------------------------------------- publisher -> subscriber

def test_messages_arrive_in_order_with_seq_increasing_by_one(ctx):
    with Publisher(ANY_PORT, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")
        await_subscription(pub, sub)
        for i in range(5):
            assert publish_scores(pub, i=i)
            assert publish_event(pub, i=i)
        pub.publish_status("radio-1", state="running", counters={"windows": 5},
                           title="Song", source="test")
        got = receive(sub, 11)
    assert len(got) == 11
    by_topic: dict[str, list[int]] = {}
    for message in got:
        assert message.session == pub.session and message.gap == 0 and not message.restarted
        by_topic.setdefault(message.topic, []).append(message.seq)
    assert by_topic == {"scores.radio-1": [0, 1, 2, 3, 4], "event.radio-1": [0, 1, 2, 3, 4],
                        "status.radio-1": [0]}
    scores = [m for m in got if m.msg_type == "scores"]
    assert [m.body.start_sample for m in scores] == [0, 16000, 32000, 48000, 64000]
    assert scores[0].body.tags == tuple(TAGS) and scores[0].body.active == ("rock", "vocal")
    status = [m for m in got if m.msg_type == "status"][0]
    assert status.body.title == "Song" and status.body.counters == {"windows": 5}
    assert sub.gaps == 0 and sub.restarts == 0 and sub.invalid == 0


def test_a_gap_in_seq_is_marked_on_the_next_message(ctx):
    with Publisher(ANY_PORT, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        await_subscription(pub, sub)
        body = EventBody(tag="rock", state="on", score=0.9, time_s=1.0, sample=16000)
        for seq in (0, 1, 5, 6):  # 2, 3 and 4 never sent
            pub.send_message(make_message(body, session=pub.session, stream="radio-1", seq=seq))
        got = receive(sub, 4)
    assert [(m.seq, m.gap) for m in got] == [(0, 0), (1, 0), (5, 3), (6, 0)]
    assert sub.gaps == 1 and sub.missed == 3


def rebind(endpoint: str, ctx: zmq.Context, timeout_s: float = 5.0) -> Publisher:
    """A new Publisher on an endpoint just closed: ZeroMQ frees the port in the background."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return Publisher(endpoint, context=ctx)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_publisher_restart_is_detected_by_a_new_session(ctx):
    first = Publisher(ANY_PORT, context=ctx)
    endpoint = first.endpoint
    with Subscriber(endpoint, context=ctx) as sub:
        await_subscription(first, sub)
        for i in range(3):
            publish_scores(first, i=i)
        before = receive(sub, 3)
        first.close(linger_ms=0)
        assert [m.seq for m in before] == [0, 1, 2]
        with rebind(endpoint, ctx) as second:  # same endpoint, new session
            assert second.session != first.session
            deadline = time.monotonic() + 10
            after = None
            while after is None and time.monotonic() < deadline:
                publish_scores(second)  # lost until the subscriber has reconnected
                after = sub.recv(50)
            assert after is not None, "the subscriber did not reconnect to the new publisher"
            publish_scores(second)
            following = receive(sub, 1)
    assert after.session == second.session and after.restarted
    assert after.gap == after.seq  # everything the new session sent before reconnecting
    assert following[0].seq == after.seq + 1 and not following[0].restarted
    assert following[0].gap == 0
    assert sub.restarts == 1


def test_subscriber_receives_only_the_streams_it_asked_for(ctx):
    with Publisher(ANY_PORT, context=ctx) as pub, \
            Subscriber(pub.endpoint, streams=["radio-1"], topics=("event", "heartbeat"),
                       context=ctx) as sub:
        assert sub.subscriptions == [b"event.radio-1", b"heartbeat"]
        await_subscription(pub, sub)
        publish_scores(pub, "radio-1")    # a topic not subscribed
        publish_event(pub, "radio-10")    # shares the prefix event.radio-1
        publish_event(pub, "radio-2")
        publish_event(pub, "radio-1")
        got = receive(sub, 2, timeout_s=0.5)
    assert [(m.topic, m.seq) for m in got] == [("event.radio-1", 0)]


def test_undecodable_messages_are_skipped_and_counted(ctx):
    raw = ctx.socket(zmq.PUB)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    with Subscriber(f"tcp://127.0.0.1:{port}", context=ctx) as sub:
        good = encode(make_message(EventBody(tag="rock", state="on", score=1.0, time_s=0.0,
                                             sample=0), session="s1", stream="a", seq=0))
        ours = f'"version":"{PROTOCOL_VERSION}"'.encode()
        bad_version = [good[0], good[1].replace(ours, b'"version":"9.0"'), good[2]]
        deadline = time.monotonic() + 5
        message = None
        while message is None and time.monotonic() < deadline:
            raw.send_multipart([b"event.a", b"not json", b"{}"])
            raw.send_multipart(bad_version)
            raw.send_multipart(good)
            message = sub.recv(50)
        assert message is not None and message.topic == "event.a"
        assert sub.invalid >= 2
    raw.close(linger=0)


def test_any_thread_may_publish_and_seq_stays_in_order(ctx):
    with Publisher(ANY_PORT, context=ctx) as pub, \
            Subscriber(pub.endpoint, topics=("event", "heartbeat"), context=ctx) as sub:
        await_subscription(pub, sub)
        threads = [threading.Thread(target=lambda: [publish_event(pub, i=i) for i in range(100)])
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = receive(sub, 400)
    assert [m.seq for m in got] == list(range(400)) and sub.gaps == 0


def test_held_messages_leave_together_at_the_end_in_order(ctx):
    with Publisher(ANY_PORT, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        await_subscription(pub, sub)
        sent_before = pub.sent
        with pub.held():
            for i in range(3):
                assert publish_scores(pub, i=i)
            with pub.held():  # nested: sent at the outermost end
                assert publish_event(pub, i=0)
            other = threading.Thread(target=publish_event, args=(pub,), kwargs={"i": 1})
            other.start()  # another thread's message waits in the same hold
            other.join()
            assert sub.recv(300) is None  # nothing has left yet
        got = receive(sub, 5)
        publish_scores(pub, i=3)  # after the hold, at once again
        got += receive(sub, 1)
    assert [(m.topic, m.seq) for m in got] == [
        ("scores.radio-1", 0), ("scores.radio-1", 1), ("scores.radio-1", 2),
        ("event.radio-1", 0), ("event.radio-1", 1), ("scores.radio-1", 3)]
    assert sub.gaps == 0 and pub.sent - sent_before == 6


def test_closing_inside_a_hold_sends_what_it_held(ctx):
    with Publisher(ANY_PORT, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        await_subscription(pub, sub)
        with pub.held():
            publish_scores(pub, i=0)
            pub.close()
            with pytest.raises(RuntimeError, match="closed"):
                publish_scores(pub, i=1)
        got = receive(sub, 1)
    assert [(m.topic, m.seq) for m in got] == [("scores.radio-1", 0)]


# ---------------------------------------------------------------- slow subscribers

N_FLOOD = 12000
LONG_TITLE = "x" * 1000  # ~1.2 kB messages: 12000 of them overflow any socket buffer


def flood(pub: Publisher, n: int = N_FLOOD) -> None:
    """Publishes `n` status messages as fast as the socket takes them."""
    for _ in range(n):
        pub.publish_status("radio-1", state="running", title=LONG_TITLE)


def test_a_subscriber_that_never_reads_does_not_slow_publishing(ctx):
    with Publisher(ANY_PORT, sndhwm=10, context=ctx) as pub, \
            Subscriber(pub.endpoint, rcvhwm=10, topics=("status", "heartbeat"),
                       context=ctx) as sub:
        await_subscription(pub, sub)
        # The flood completes: NOBLOCK sends never wait for the reader. A blocking send would
        # wait for ever once the 10-message queues are full, so a bound 100× the ~0.2 s the
        # flood takes tells the two apart on any machine (the time itself is no assertion).
        flooding = threading.Thread(target=flood, args=(pub,), daemon=True)
        flooding.start()
        flooding.join(60)
        assert not flooding.is_alive(), "publishing blocked on a subscriber that never reads"
        assert pub.dropped == 0  # PUB drops per subscriber, silently ...
        got = drain(sub)
    # ... and the subscriber sees every loss as a gap, so received + lost adds up.
    assert 0 < len(got) < N_FLOOD
    assert sub.gaps > 0 and sub.missed + len(got) == got[-1].seq + 1


def test_refuse_policy_counts_what_the_hwm_drops(ctx):
    with Publisher(ANY_PORT, sndhwm=10, hwm_policy="refuse", context=ctx) as pub, \
            Subscriber(pub.endpoint, rcvhwm=10, topics=("status", "heartbeat"),
                       context=ctx) as sub:
        await_subscription(pub, sub)
        sent_before = pub.sent
        flood(pub)
        assert pub.dropped > 0
        assert pub.sent - sent_before + pub.dropped == N_FLOOD
        assert pub.next_seq("status", "radio-1") == N_FLOOD  # dropped ones used their seq
        got = drain(sub)
    assert len(got) == pub.sent - sent_before
    assert sub.missed + len(got) <= N_FLOOD


# ---------------------------------------------------------------- a reader without streamtag

def test_a_plain_pyzmq_json_subscriber_reads_every_message_type(ctx):
    """Follows docs/protocol.md only: three frames, JSON, check the major version."""
    with Publisher(ANY_PORT, context=ctx) as pub:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(pub.endpoint)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        received: dict[str, tuple[str, dict, dict]] = {}
        deadline = time.monotonic() + 5
        while len(received) < 4 and time.monotonic() < deadline:
            publish_scores(pub)
            publish_event(pub)
            pub.publish_status("radio-1", state="failed", error="HTTP 404", source="http://x")
            pub.heartbeat(streams=1)
            while sock.poll(20):
                frames = sock.recv_multipart()
                # the publisher writes exactly what protocol.encode writes for the message
                assert encode(decode(frames)) == frames
                topic, header, body = frames
                header, body = json.loads(header), json.loads(body)
                assert header["version"].split(".")[0] == "1"
                received[header["msg_type"]] = (topic.decode(), header, body)
        sock.close(linger=0)
    assert set(received) == {"scores", "event", "status", "heartbeat"}
    for msg_type, (topic, header, _) in received.items():
        assert {"version", "msg_type", "msg_id", "session", "stream", "seq",
                "sent_at"} <= set(header)
        assert header["session"] == pub.session
        expected = "heartbeat" if msg_type == "heartbeat" else f"{msg_type}.{header['stream']}"
        assert topic == expected
    scores = received["scores"][2]
    assert dict(zip(scores["tags"], scores["smoothed"], strict=True)) == {
        "rock": 0.8, "calm": 0.2, "vocal": 0.55}
    assert scores["model"] == {"name": "crnn", "hash": "sha256:ab"}
    assert received["event"][2]["state"] in ("on", "off")
    assert received["status"][2]["error"] == "HTTP 404"
    assert received["heartbeat"][2]["streams"] == 1 and received["heartbeat"][1]["stream"] == ""


# ---------------------------------------------------------------- publisher life

def test_publisher_refuses_bad_input_and_use_after_close(ctx):
    pub = Publisher(ANY_PORT, context=ctx)
    with pytest.raises(OSError, match="cannot bind"):
        Publisher(pub.endpoint, context=ctx)  # taken
    with pytest.raises(ProtocolError, match="stream id"):
        publish_event(pub, "radio 1")
    with pytest.raises(ProtocolError, match="finite"):
        pub.publish_event("a", tag="rock", state="on", score=float("nan"), time_s=0, sample=0)
    with pytest.raises(ValueError, match="hwm_policy"):
        Publisher(ANY_PORT, hwm_policy="block", context=ctx)
    assert pub.next_seq("event", "radio 1") == 0  # a refused message used no seq
    pub.close()
    pub.close()
    assert pub.closed
    with pytest.raises(RuntimeError, match="closed"):
        pub.heartbeat(streams=0)


# ---------------------------------------------------------------- control socket

@pytest.fixture
def control(ctx):
    snapshots = {"radio-1": {"active": ["rock"]}}

    def boom(request):
        raise RuntimeError("model file is corrupt")

    def refuse(request):
        raise ModelError("reload_model refuses 'x.pt': give a model")

    handlers = {
        "status": lambda request: {"streams": ["radio-1"], "uptime_s": 1.0},
        "snapshot": lambda request: {"snapshot": snapshots[request.get("stream", "radio-1")]},
        "reload_model": boom,
        "refuse": refuse,
    }
    server = ControlServer(ANY_PORT, handlers, context=ctx, poll_ms=20).start()
    yield server
    assert server.stop(timeout_s=2.0)


def test_control_commands_are_answered(control, ctx):
    reply = control_request(control.endpoint, {"cmd": "status"}, context=ctx)
    assert reply == {"ok": True, "streams": ["radio-1"], "uptime_s": 1.0}
    reply = control_request(control.endpoint, {"cmd": "snapshot", "stream": "radio-1"},
                            context=ctx)
    assert reply == {"ok": True, "snapshot": {"active": ["rock"]}}
    reply = control_request(control.endpoint, {"cmd": "ping"}, context=ctx)
    assert reply["protocol"] == PROTOCOL_VERSION and "snapshot" in reply["commands"]


def test_control_errors_keep_the_server_serving(control, ctx):
    reply = control_request(control.endpoint, {"cmd": "dance"}, context=ctx)
    assert reply["ok"] is False
    assert "unknown command 'dance'" in reply["error"]
    assert "ping, refuse, reload_model, snapshot, status" in reply["error"]
    reply = control_request(control.endpoint, {"cmd": "reload_model"}, context=ctx)
    assert reply == {"ok": False, "error": "command 'reload_model' failed: RuntimeError: "
                                           "model file is corrupt"}  # not expected: named so
    # A request refused (a StreamtagError) is said in its own words.
    reply = control_request(control.endpoint, {"cmd": "refuse"}, context=ctx)
    assert reply == {"ok": False, "error": "reload_model refuses 'x.pt': give a model"}
    reply = control_request(control.endpoint, {"cmd": "snapshot", "stream": "nope"},
                            context=ctx)
    assert reply["ok"] is False and "KeyError" in reply["error"]
    # Malformed requests from a client that does not use control_request.
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(control.endpoint)
    for payload in (b"status", b'["cmd"]', b'{"cmd": 1}'):
        req.send(payload)
        assert req.poll(2000), "no reply to a malformed request"
        reply = json.loads(req.recv())
        assert reply["ok"] is False and '{"cmd": "status"}' in reply["error"]
    req.close(linger=0)
    assert control_request(control.endpoint, {"cmd": "status"}, context=ctx)["ok"] is True


def test_control_server_stops_promptly(ctx):
    server = ControlServer(ANY_PORT, {}, context=ctx).start()
    assert control_request(server.endpoint, {"cmd": "ping"}, context=ctx)["ok"]
    t0 = time.monotonic()
    assert server.stop(timeout_s=2.0)
    assert time.monotonic() - t0 < 2.0


def test_control_request_times_out_with_a_clear_message(ctx):
    silent = ctx.socket(zmq.ROUTER)  # takes requests, never answers
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    with pytest.raises(TimeoutError, match="no reply from the control socket"):
        control_request(f"tcp://127.0.0.1:{port}", {"cmd": "status"}, timeout_ms=200,
                        context=ctx)
    silent.close(linger=0)
    with pytest.raises(ProtocolError, match="cmd"):
        control_request(f"tcp://127.0.0.1:{port}", {"command": "status"}, context=ctx)


# ---------------------------------------------------------------- streamtag listen

class Background:
    """Publishes a scores, event, status and heartbeat message every 20 ms until stopped."""

    def __init__(self, pub: Publisher):
        self.pub = pub
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.wait(0.02):
            publish_scores(self.pub, i=i)
            publish_event(self.pub, i=i)
            self.pub.publish_status("radio-1", state="running", title="Song")
            self.pub.heartbeat(streams=1)
            i += 1

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_listen_prints_one_line_per_message(ctx):
    out = io.StringIO()
    with Publisher(ANY_PORT, context=ctx) as pub, Background(pub):
        status = run_listen(pub.endpoint, ["radio-1"], count=8, duration=10, out=out,
                             context=ctx)
    lines = out.getvalue().splitlines()
    assert status == 0 and len(lines) == 8
    assert any("active: rock, vocal" in line and "top: rock 0.80" in line for line in lines)
    assert any(">>> rock ON" in line or ">>> rock OFF" in line for line in lines)
    assert any("status running" in line and '"Song"' in line for line in lines)
    assert all("\033[" not in line for line in lines)  # no colour when not a terminal


def test_listen_says_nothing_of_silence_while_it_hears_a_daemon(ctx, capsys):
    out = io.StringIO()
    with Publisher(ANY_PORT, context=ctx) as pub, Background(pub):
        assert run_listen(pub.endpoint, ["radio-9"], duration=3.0, out=out, context=ctx,
                          nothing_heard_s=2.0) == 0
    # another stream's messages only: nothing printed (heartbeats are not the stream's), yet
    # the daemon's heartbeats were heard, so nothing is said of silence
    assert out.getvalue() == ""
    assert "nothing heard" not in capsys.readouterr().err


def test_listen_json_lines_parse(ctx):
    out = io.StringIO()
    with Publisher(ANY_PORT, context=ctx) as pub, Background(pub):
        status = run_listen(pub.endpoint, None, as_json=True, count=8, duration=10, out=out,
                             context=ctx)
    lines = out.getvalue().splitlines()
    assert status == 0 and len(lines) == 8
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"topic", "header", "body", "gap", "restarted"}
        assert record["header"]["session"] == pub.session
        assert record["gap"] == 0 and record["restarted"] is False


def test_listen_ends_after_its_duration_and_reports_bad_arguments(ctx, capsys):
    quiet = ctx.socket(zmq.PUB)  # a publisher that never says anything
    quiet.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{quiet.bind_to_random_port('tcp://127.0.0.1')}"
    out = io.StringIO()
    t0 = time.monotonic()
    assert run_listen(endpoint, None, duration=0.2, out=out, context=ctx) == 0
    assert time.monotonic() - t0 < 3 and out.getvalue() == ""
    assert "nothing heard" not in capsys.readouterr().err  # 0.2 s of silence is not said
    # Silence past a few heartbeats is said once, with what to check, and listening goes on
    assert run_listen(endpoint, None, duration=1.0, out=out, context=ctx,
                      nothing_heard_s=0.3) == 0
    err = capsys.readouterr().err
    assert err.count("nothing heard") == 1 and endpoint in err, err
    assert "--server-key and --client-key" in err and out.getvalue() == ""
    # a --duration that ends before that wait, past a heartbeat's, says it as it stops
    assert run_listen(endpoint, None, duration=3.2, out=out, context=ctx) == 0
    err = capsys.readouterr().err
    assert err.count("nothing heard") == 1 and "in 3.2 s" in err and "Stopped (--duration)" in err
    assert run_listen(endpoint, ["no spaces"], count=1, out=out, context=ctx) == 2
    assert run_listen("nonsense", None, count=1, out=out, context=ctx) == 2
    assert "streamtag listen" in capsys.readouterr().err
    quiet.close(linger=0)


# ---------------------------------------------------------------- proxy

def test_two_daemons_reach_one_subscriber_through_the_proxy(ctx):
    stop = threading.Event()
    ready: queue.Queue = queue.Queue()
    bound = Publisher(ANY_PORT, context=ctx)  # a daemon that binds: the proxy connects to it
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(run_proxy(
            ANY_PORT, ANY_PORT, stop, upstream=[bound.endpoint], context=ctx, poll_ms=20,
            ready=lambda frontend, backend: ready.put((frontend, backend)))),
        daemon=True)
    thread.start()
    try:
        frontend, backend = ready.get(timeout=5)
        connecting = Publisher(frontend, connect=True, context=ctx)  # a daemon that connects
        with Subscriber(backend, topics=("event",), context=ctx) as sub:
            sessions = {}
            deadline = time.monotonic() + 10
            while len(sessions) < 2 and time.monotonic() < deadline:
                publish_event(bound, "studio-a")
                publish_event(connecting, "studio-b")
                while (message := sub.recv(20)) is not None:
                    sessions[message.session] = message.stream
        connecting.close(linger_ms=0)
        assert sessions == {bound.session: "studio-a", connecting.session: "studio-b"}
        assert sub.restarts == 0
    finally:
        stop.set()
        thread.join(5)
        bound.close(linger_ms=0)
    assert not thread.is_alive(), "run_proxy did not stop"
    assert result and result[0].forwarded >= 2 and result[0].subscriptions >= 1


def test_proxy_needs_somewhere_to_read_from():
    with pytest.raises(ValueError, match="frontend"):
        run_proxy(None, ANY_PORT, threading.Event())


def test_scores_body_is_what_the_publisher_was_given(ctx):
    with Publisher(ANY_PORT, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        await_subscription(pub, sub)
        # tags and active as any iterable, an iterator too, as ScoresBody takes them (first:
        # the publisher meets this model's tags here)
        pub.publish_scores("radio-1", start_s=2.0, end_s=5.0, start_sample=32000,
                           end_sample=80000, tags=iter(list(TAGS)), raw=[0.9, 0.1, 0.6],
                           smoothed=[0.8, 0.2, 0.55], active=iter(["rock", "vocal"]),
                           model={"name": "crnn", "hash": "sha256:ab"}, latency_ms=12.0)
        publish_scores(pub, i=2)
        messages = receive(sub, 2)
    for message in messages:
        assert message.body == ScoresBody(start_s=2.0, end_s=5.0, start_sample=32000,
                                          end_sample=80000, tags=TAGS, raw=[0.9, 0.1, 0.6],
                                          smoothed=[0.8, 0.2, 0.55], active=["rock", "vocal"],
                                          model=ModelRef("crnn", "sha256:ab"), latency_ms=12.0)


def test_a_subscriber_process_loads_no_server_module():
    """A program that only listens (or sends control requests) imports the client side alone:
    not the publisher, the control server, the daemon or torch."""
    code = ("import sys, streamtag.wire.subscriber; "
            "print(sorted(m for m in sys.modules if m.startswith(('streamtag.', 'torch'))))")
    loaded = run_python(code)
    for server_side in ("streamtag.wire.publisher", "streamtag.wire.control",
                        "streamtag.daemon.daemon", "torch"):
        assert f"'{server_side}'" not in loaded, loaded
    assert "'streamtag.wire.subscriber'" in loaded


def test_a_connecting_publisher_waits_for_the_proxy_so_its_first_message_arrives(ctx):
    """Behind a proxy the daemon's PUB connects; what it sends before the proxy is there and
    has passed it the subscribers' subscriptions is dropped unseen (a restarted stream's
    first status, reported as a gap; without the wait, none of these 21 messages arrived).
    With connected_wait_s it waits for the handshake."""
    stop, ready = threading.Event(), queue.Queue()
    thread = threading.Thread(target=lambda: run_proxy(
        ANY_PORT, ANY_PORT, stop, context=ctx, poll_ms=20,
        ready=lambda frontend, backend: ready.put((frontend, backend))), daemon=True)
    thread.start()
    try:
        frontend, backend = ready.get(timeout=5)
        with Subscriber(backend, context=ctx) as sub:
            time.sleep(0.5)  # the subscription reaches the proxy's frontend
            publisher = Publisher(frontend, connect=True, context=ctx, connected_wait_s=10.0)
            publisher.publish_status("radio", state="starting")
            for i in range(20):  # later messages arrive either way
                publish_event(publisher, "radio", i)
            got = []
            while (message := sub.recv(1000)) is not None:
                got.append(message)
            publisher.close(linger_ms=0)
    finally:
        stop.set()
        thread.join(5)
    assert got, "nothing arrived"
    assert (got[0].msg_type, got[0].header.seq, got[0].gap) == ("status", 0, 0)
    assert len(got) == 21 and sub.gaps == 0


def _bound_and_closed(kind: str, endpoint: str, ctx: zmq.Context) -> None:
    """Binds a socket of ``kind`` to ``endpoint`` and closes it again, as its owner does."""
    if kind == "publisher":
        Publisher(endpoint, context=ctx).close()
    elif kind == "control":
        ControlServer(endpoint, {}, token="t", context=ctx, poll_ms=5).start().stop()
    elif kind == "replay":
        ReplayServer(endpoint, ReplayRing(1 << 20, "s"), context=ctx).start().stop()
    else:  # the proxy's frontend
        stop, bound = threading.Event(), threading.Event()
        thread = threading.Thread(target=run_proxy, args=(endpoint, ANY_PORT, stop),
                                  kwargs={"context": ctx, "poll_ms": 5,
                                          "ready": lambda *_: bound.set()})
        thread.start()
        assert bound.wait(10)
        stop.set()
        thread.join(10)


@pytest.mark.parametrize("kind", ["publisher", "control", "replay", "proxy"])
def test_a_closed_sockets_port_can_be_bound_again_at_once(kind, ctx):
    """A daemon stopped and started again in one process binds the same ports: libzmq closes a
    listener in its own threads after the socket's close returns, so each closer waits until the
    port is free (without, a third of immediate rebinds failed with 'Address already in use' on
    a 2-core machine, and this test's control and replay rounds failed)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    rounds = 40 if kind in ("publisher", "replay") else 15
    for _ in range(rounds):
        _bound_and_closed(kind, endpoint, ctx)
    with socket.socket() as plain:  # and any program may bind it
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        plain.bind(("127.0.0.1", int(endpoint.rpartition(":")[2])))


def test_waiting_for_a_port_ends_when_it_is_free_and_not_before():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        endpoint = f"tcp://127.0.0.1:{held.getsockname()[1]}"
        assert not wait_released(endpoint, timeout_s=0.05)
    assert wait_released(endpoint, timeout_s=0.05)
    assert wait_released("ipc:///nowhere/at/all", timeout_s=0.05)
    assert wait_released("inproc://x", timeout_s=0.05)
