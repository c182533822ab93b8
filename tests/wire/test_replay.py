"""The replay socket with a real daemon on 127.0.0.1 (a real model file, real decoding, real
ZeroMQ): a subscriber that joins late gets each stream's state without the control token, one
that misses messages or goes away for a while gets them back with no seq gap, a ring too small
says what it lost, a flood of requests stays within the socket's budgets, and only the feed's
keys may ask under CURVE."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time

import pytest
import zmq
from support.helpers import (
    assert_no_gaps,
    free_port,
    make_config,
    run_streamtag,
    wait_until,
)

from streamtag.daemon.config import SecurityConfig, SourceConfig
from streamtag.daemon.daemon import Daemon
from streamtag.wire import replay
from streamtag.wire.protocol import MAX_REPLAY_REPLY_BYTES
from streamtag.wire.replay import ReplayClient
from streamtag.wire.security import client_curve, generate_keys
from streamtag.wire.subscriber import Subscriber

# A subscriber that reads nothing holds at most this much of the feed; the daemon holds
# SNDHWM messages more for it, then drops what does not fit.
SMALL_QUEUES = {"rcvhwm": 4, "socket_rcvhwm": 2, "max_queue_bytes": 16 * 1024}
SNDHWM = 16
PAUSE_S = 2.0


def replay_config(model_path, tmp_path, **publish):
    config = make_config(model_path, tmp_path)
    return dataclasses.replace(config, publish=dataclasses.replace(
        config.publish, replay_endpoint=f"tcp://127.0.0.1:{free_port()}", **publish))


def until_scores(sub: Subscriber, streams: set[str], timeout_s: float = 30.0) -> list:
    """Messages until each of ``streams`` has had a scores message."""
    got, seen = [], set()
    deadline = time.monotonic() + timeout_s
    while seen != streams and time.monotonic() < deadline:
        message = sub.recv(100)
        if message is not None:
            got.append(message)
            if message.msg_type == "scores":
                seen.add(message.stream)
    assert seen == streams, f"no scores from {streams - seen}"
    return got


def until_ended(sub: Subscriber, stream: str, timeout_s: float = 60.0) -> list:
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = sub.recv(100)
        if message is None:
            continue
        got.append(message)
        if message.msg_type == "status" and message.stream == stream \
                and message.body.state in ("ended", "failed"):
            return got
    raise AssertionError(f"{stream} did not end")


def test_a_subscriber_that_joins_late_gets_each_streams_state_without_the_token(
        model_path, audio_files, tmp_path):
    titles = {"a": "Artist A - Song", "b": "Artist B - Other Song"}
    daemon = Daemon(replay_config(model_path, tmp_path)).start()
    try:
        with Subscriber(daemon.publisher.endpoint) as first:
            for stream, title in titles.items():
                daemon.add_source(SourceConfig(stream, f"file:{audio_files[stream]}",
                                               {"realtime": True, "loop": True}, title))
            until_scores(first, set(titles))
        # The status was sent once, before this subscriber was there; nothing here holds
        # the control token (nor could: the test's token file is the daemon's own).
        started = time.monotonic()
        state: dict[str, dict[str, object]] = {s: {} for s in titles}
        with Subscriber(daemon.publisher.endpoint, replay=daemon.replay.endpoint) as late:
            deadline = started + 30
            while (any(len(got) < 2 for got in state.values())
                   and time.monotonic() < deadline):
                message = late.recv(100)
                if message is not None and message.msg_type in ("status", "scores"):
                    state[message.stream].setdefault(message.msg_type, message)
            took_s = time.monotonic() - started
    finally:
        daemon.stop()
    print(f"late joiner: every stream's status and scores after {took_s * 1000:.1f} ms")
    for stream, title in titles.items():
        status, scores = state[stream]["status"], state[stream]["scores"]
        assert status.replayed and scores.replayed  # from the replay socket, not the feed
        assert (status.body.state, status.body.title) == ("running", title)
        assert status.session == scores.session == daemon.publisher.session
        assert scores.body.mood is not None and isinstance(scores.body.active, tuple)
        assert set(scores.body.active) <= set(scores.body.tags)


def test_a_subscriber_that_misses_messages_gets_them_back_with_no_seq_gap(
        model_path, audio_files, tmp_path):
    """Two subscribers with small queues read nothing for 2 s while a stream is scored as
    fast as the engine goes: the daemon drops what they cannot take. The one without a
    replay socket sees gaps; the one with it sees every message of every topic, in order."""
    daemon = Daemon(replay_config(model_path, tmp_path, sndhwm=SNDHWM)).start()
    try:
        with Subscriber(daemon.publisher.endpoint, replay=daemon.replay.endpoint,
                        **SMALL_QUEUES) as sub, \
                Subscriber(daemon.publisher.endpoint, **SMALL_QUEUES) as plain:
            daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}", {"loop": True}))
            got = until_scores(sub, {"a"})
            until_scores(plain, {"a"})
            time.sleep(PAUSE_S)  # neither reads: a slow consumer, a busy machine
            daemon.remove_source("a")
            got += until_ended(sub, "a")
            wait_until(lambda: (plain.recv(100), plain.missed)[1] > 0, 30,
                       "the plain subscriber to see its loss")
    finally:
        daemon.stop()
    assert plain.missed > 0  # the daemon did drop messages for a subscriber this slow
    assert sub.recovered > 0 and (sub.gaps, sub.missed, sub.unrecovered) == (0, 0, 0)
    mine = [m for m in got if m.stream == "a"]
    assert_no_gaps(mine)
    assert not any(m.gap for m in got)
    recovered = [m for m in mine if m.replayed]
    print(f"recovered: {len(recovered)} of the {len(mine)} messages of the stream")


def test_a_subscriber_back_after_two_seconds_away_goes_on_from_where_it_was(
        model_path, audio_files, tmp_path):
    """A subscriber closes (a consumer restarting, a network down) and a new one goes on from
    its positions two seconds later: what was published meanwhile comes first, nothing is
    missing on any topic, nothing comes twice."""
    daemon = Daemon(replay_config(model_path, tmp_path)).start()
    try:
        with Subscriber(daemon.publisher.endpoint, replay=daemon.replay.endpoint) as before:
            daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}",
                                           {"realtime": True, "loop": True}))
            heard = until_scores(before, {"a"})
            heard += until_scores(before, {"a"})
            positions = before.positions()
        time.sleep(PAUSE_S)
        published_meanwhile = daemon.publisher.next_seq("scores", "a") - 1 \
            - positions[0][(daemon.publisher.session, "scores.a")]
        with Subscriber(daemon.publisher.endpoint, replay=daemon.replay.endpoint) as after:
            after.resume(*positions)
            daemon.remove_source("a")
            heard += until_ended(after, "a")
    finally:
        daemon.stop()
    assert published_meanwhile > 0
    assert after.recovered >= published_meanwhile
    assert (after.gaps, after.missed, after.duplicates >= 0) == (0, 0, True)
    assert_no_gaps([m for m in heard if m.stream == "a"])
    keys = [(m.topic, m.seq) for m in heard]
    assert len(keys) == len(set(keys))  # nothing twice


def test_a_ring_too_small_for_what_was_lost_says_so(model_path, audio_files, tmp_path, caplog):
    daemon = Daemon(replay_config(model_path, tmp_path, sndhwm=SNDHWM,
                                  replay_bytes=8 * 1024)).start()
    try:
        with caplog.at_level(logging.WARNING, logger="streamtag.wire.subscriber"), \
                Subscriber(daemon.publisher.endpoint, replay=daemon.replay.endpoint,
                           **SMALL_QUEUES) as sub:
            daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}", {"loop": True}))
            until_scores(sub, {"a"})
            time.sleep(PAUSE_S)
            daemon.remove_source("a")
            got = until_ended(sub, "a")
    finally:
        daemon.stop()
    assert sub.unrecovered > 0 and sub.missed >= sub.unrecovered
    assert any(m.gap for m in got)  # still a gap, where the ring no longer held it
    assert any("no longer held" in r.getMessage() for r in caplog.records)


_FLOOD = """
import sys, time, zmq
endpoint, seconds = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
peers = []
for _ in range(16):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(endpoint)
    peers.append(s)
state = [b"", b'{"cmd":"state"}']
replay = [b"", b'{"cmd":"replay","session":"%s","topics":{"scores.a":[0,null]}}'
          % sys.argv[3].encode()]
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for i, s in enumerate(peers):
        try:
            s.send_multipart(state if i % 2 else replay, zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            pass
print(sent)
"""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_flood_of_requests_costs_the_daemon_no_more_than_the_sockets_budgets(
        model_path, audio_files, tmp_path):
    """16 connections from another process ask for the state and the whole ring (4 MiB) as
    fast as they can for 3 s and read nothing: the daemon reads requests and sends bytes
    within the socket's budgets a second (plus one burst and one reply), holds one reply per
    connection at most, keeps publishing without a gap, and answers an honest reader once the
    flood ends."""
    daemon = Daemon(replay_config(model_path, tmp_path, replay_bytes=4 * 2**20)).start()
    server = daemon.replay
    try:
        with Subscriber(daemon.publisher.endpoint) as sub:
            daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}", {"loop": True}))
            wait_until(lambda: (sub.recv(10), daemon.publisher.ring.dropped)[1] > 0, 60,
                       "a full ring")
            daemon.remove_source("a")
            until_ended(sub, "a")
            daemon.add_source(SourceConfig("b", f"file:{audio_files['b']}",
                                           {"realtime": True, "loop": True}))
            heard = until_scores(sub, {"b"})
            rss_before, cpu_before, started = _rss_bytes(), os.times(), time.monotonic()
            flood = subprocess.run(
                [sys.executable, "-c", _FLOOD, server.endpoint, "3", daemon.publisher.session],
                capture_output=True, text=True, timeout=60, check=True)
            stats = dict(vars(server.stats))
            # the span measured ends after the counts were read: the bounds below hold for it
            elapsed_s = time.monotonic() - started
            cpu_after, rss_after = os.times(), _rss_bytes()
            heard += until_scores(sub, {"b"})
            with ReplayClient(server.endpoint, timeout_ms=10_000) as honest:
                answered = honest.state()
    finally:
        daemon.stop()
    cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    print(f"flood: {flood.stdout.strip()} requests sent in {elapsed_s:.2f} s; the daemon read "
          f"{stats['requests']}, answered {stats['answered']}, said busy {stats['busy']}, "
          f"could not queue {stats['unsent']}, sent {stats['bytes_sent'] / 2**20:.1f} MiB "
          f"({stats['bytes_sent'] / 2**20 / elapsed_s:.1f} MiB/s); this process (daemon and "
          f"a subscriber) used {cpu_s / elapsed_s:.0%} of a CPU and grew by "
          f"{(rss_after - rss_before) / 2**20:.1f} MiB")
    assert stats["requests"] > 0 and stats["bytes_sent"] > MAX_REPLAY_REPLY_BYTES
    assert stats["requests"] <= server.burst_requests + replay.REQUESTS_PER_S * elapsed_s + 1
    assert stats["bytes_sent"] <= (server.burst_bytes + replay.BYTES_PER_S * elapsed_s
                                   + MAX_REPLAY_REPLY_BYTES)
    assert_no_gaps([m for m in heard if m.stream == "b"])
    assert {m.stream for m, _ in answered} == {"a", "b"}


def test_under_curve_only_the_feeds_keys_may_ask(model_path, audio_files, tmp_path):
    keys = tmp_path / "keys"
    for name in ("server", "reader", "admin"):
        generate_keys(keys / name, name)
    config = replay_config(model_path, tmp_path)
    config = dataclasses.replace(config, security=SecurityConfig(
        server_key=str(keys / "server" / "server.key_secret"),
        client_keys=str(keys / "reader"), admin_keys=str(keys / "admin")))
    daemon = Daemon(config).start()
    server_key = keys / "server" / "server.key"
    try:
        daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}",
                                       {"realtime": True, "loop": True}))
        wait_until(lambda: len(daemon.publisher.ring) > 2, 30, "messages in the ring")
        reader = client_curve(server_key, keys / "reader" / "reader.key_secret")
        with ReplayClient(daemon.replay.endpoint, curve=reader, timeout_ms=5000) as client:
            assert {m.stream for m, _ in client.state()} == {"a"}
        admin = client_curve(server_key, keys / "admin" / "admin.key_secret")
        with ReplayClient(daemon.replay.endpoint, curve=admin, timeout_ms=1000) as client, \
                pytest.raises(TimeoutError):
            client.state()  # an admin's key is not a feed reader's: no handshake, no reply
        with ReplayClient(daemon.replay.endpoint, timeout_ms=1000) as client, \
                pytest.raises(TimeoutError):
            client.state()  # nor is no key
    finally:
        daemon.stop()


def test_a_daemon_says_it_is_alive_before_any_streams_status(model_path, audio_files,
                                                             tmp_path):
    """Its first message is a heartbeat: a restarted daemon is heard as alive (and as new)
    before its streams' first statuses."""
    config = replay_config(model_path, tmp_path)
    config = dataclasses.replace(config, sources=(SourceConfig("a", str(audio_files["b"])),),
                                 publish=dataclasses.replace(config.publish, heartbeat_s=60.0))
    daemon = Daemon(config).start()
    try:
        wait_until(lambda: daemon.publisher.next_seq("status", "a") > 0, 30, "a status")
        with ReplayClient(daemon.replay.endpoint) as client:
            first = client.replay(daemon.publisher.session,
                                  {"heartbeat": (0, None), "status.a": (0, None)})
    finally:
        daemon.stop()
    assert [(m.topic, m.seq) for m, _ in first[:2]] == [("heartbeat", 0), ("status.a", 0)]


def test_a_replay_request_past_its_bounds_is_refused_and_the_socket_serves_on(
        model_path, tmp_path):
    daemon = Daemon(replay_config(model_path, tmp_path)).start()
    try:
        ctx = zmq.Context.instance()
        with ctx.socket(zmq.REQ) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(daemon.replay.endpoint)
            topics = ",".join(f'"scores.s{i}":[0,null]' for i in range(300))
            sock.send(('{"cmd":"replay","session":"x","topics":{' + topics + "}}").encode())
            assert sock.poll(5000)
            head = sock.recv_multipart()
            assert b'"ok":false' in head[0] and b"1 to 256 topics" in head[0]
        with ReplayClient(daemon.replay.endpoint, timeout_ms=5000) as client:
            assert client.state() == []  # no stream yet, and served
    finally:
        daemon.stop()


def test_a_subscriber_hears_a_restarted_daemons_streams_from_their_start(
        model_path, audio_files, tmp_path):
    """The daemon restarts on the same endpoints while a subscriber stays: whatever of the new
    session the subscriber's connection missed (its first status, the first windows) is asked
    for, so every topic of the stream is heard from seq 0, the first message of the new session
    says it restarted, and nothing is counted lost."""
    config = replay_config(model_path, tmp_path)
    source = SourceConfig("a", f"file:{audio_files['a']}", {"realtime": True, "loop": True},
                          "Artist A - Song")
    daemon = Daemon(config).start()
    try:
        with Subscriber(config.publish.endpoint, replay=config.publish.replay_endpoint,
                        topics=("status", "scores", "event")) as sub:
            daemon.add_source(source)
            until_scores(sub, {"a"})
            daemon.stop()
            daemon = Daemon(dataclasses.replace(config, sources=(source,))).start()
            session = daemon.publisher.session
            heard = []

            def enough() -> bool:
                message = sub.recv(100)
                if message is not None and message.session == session:
                    heard.append(message)
                return ("status" in {m.msg_type for m in heard}
                        and sum(m.msg_type == "scores" for m in heard) >= 3)

            wait_until(enough, 60, "the restarted daemon's status and windows")
    finally:
        daemon.stop()
    new = heard
    assert new[0].restarted
    assert [m.seq for m in new if m.msg_type == "status"][:1] == [0]
    assert [m.seq for m in new if m.msg_type == "scores"][:3] == [0, 1, 2]
    assert_no_gaps(new)
    assert (sub.missed, sub.unrecovered) == (0, 0)


_SUBSCRIPTIONS = """
import sys, time, zmq
endpoint, seconds = sys.argv[1], float(sys.argv[2])
ctx = zmq.Context()
peers = []
for _ in range(16):  # within the feed's 32 connections from one address, the honest one too
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    peers.append(s)
prefixes = [b"", b"status.", b"scores.a", b"status.a", b"heartbeat"] + [
    b"scores.%d" % i for i in range(200)]
made, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for s in peers:
        for prefix in prefixes:
            s.setsockopt(zmq.SUBSCRIBE, prefix)
            s.setsockopt(zmq.UNSUBSCRIBE, prefix)
            made += 2
print(made)
"""


def test_a_flood_of_subscriptions_makes_the_daemon_send_nothing_more(
        model_path, audio_files, tmp_path):
    """The state goes to whoever asks the replay socket, never out on the feed when someone
    subscribes: 16 connections subscribing and unsubscribing as fast as they can (to
    everything, to a stream's status, to prefixes of no stream) make the daemon send no
    message beyond those it publishes, and an honest subscriber hears each once, in order."""
    daemon = Daemon(replay_config(model_path, tmp_path)).start()
    try:
        with Subscriber(daemon.publisher.endpoint) as sub:
            daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}",
                                           {"realtime": True, "loop": True}))
            heard = until_scores(sub, {"a"})
            rss_before = _rss_bytes()
            flood = subprocess.run(
                [sys.executable, "-c", _SUBSCRIPTIONS, daemon.publisher.endpoint, "3"],
                capture_output=True, text=True, timeout=60, check=True)
            rss_after = _rss_bytes()
            heard += until_scores(sub, {"a"})
    finally:
        daemon.stop()
    publisher = daemon.publisher  # closed: what it stamped and what it sent are final
    stamped = sum(publisher.next_seq(kind, "" if kind == "heartbeat" else "a")
                  for kind in ("heartbeat", "scores", "event", "status", "track", "silence"))
    sent = publisher.sent + publisher.dropped
    print(f"subscription flood: {flood.stdout.strip()} (un)subscriptions; the daemon grew by "
          f"{(rss_after - rss_before) / 2**20:.1f} MiB and sent {sent} messages for the "
          f"{stamped} it published")
    assert sent == stamped
    keys = [(m.topic, m.seq) for m in heard]
    assert len(keys) == len(set(keys))
    assert_no_gaps([m for m in heard if m.stream == "a"])


def test_the_ring_keeps_within_its_bytes_oldest_out_and_each_streams_latest_state():
    """A real publisher's ring: never past its bytes, the oldest pushed out first (a replay
    from before them starts at the oldest kept), each stream's latest status, scores and
    silence kept apart, and the state of more streams than a page holds given page by page."""
    from streamtag.wire.protocol import ReplayRequest, StateRequest, decode
    from streamtag.wire.publisher import Publisher

    with Publisher("tcp://127.0.0.1:*", ring_bytes=64 * 1024) as publisher:
        ring = publisher.ring
        for i in range(2000):
            publisher.publish_status(f"s{i % 50}", state="running", title=f"title {i}")
            assert ring.bytes <= ring.max_bytes
        assert ring.dropped > 0 and len(ring) < 2000
        got, more = ring.replay(ReplayRequest(publisher.session, {"status.s0": (0, None)}))
        seqs = [decode(m).seq for m in got]
        assert not more and seqs == list(range(seqs[0], 40)) and seqs[0] > 0
        assert ring.replay(ReplayRequest("another", {"status.s0": (0, None)})) == ([], False)
        pages, after = [], None
        while True:
            messages, more, last = ring.state(StateRequest(after), most_messages=7)
            pages.append(messages)
            if not more:
                break
            after = last
        titles = [decode(m).body.title for page in pages for m in page]
        assert len(pages) == 8 and all(len(page) <= 7 for page in pages)
        assert sorted(titles) == sorted(f"title {1950 + i}" for i in range(50))


def test_replay_requests_are_checked_before_they_are_served():
    from streamtag.errors import ProtocolError
    from streamtag.wire.protocol import (
        ReplayRequest,
        StateRequest,
        decode_replay_request,
        encode_replay_request,
    )

    request = ReplayRequest("abc", {"scores.radio-1": (3, 9), "heartbeat": (0, None)})
    assert decode_replay_request(encode_replay_request(request)) == request
    assert decode_replay_request(b'{"cmd":"state","after":"radio-1"}') == StateRequest("radio-1")
    for bad, why in (
            (b'{"cmd":"snapshot"}', "cmd"),
            (b'{"cmd":"replay","session":"s","topics":{}}', "1 to 256 topics"),
            (b'{"cmd":"replay","session":"s","topics":{"scores.a":[5,2]}}', "end must be >= 5"),
            (b'{"cmd":"replay","session":"s","topics":{"nonsense.a":[0,null]}}', "not a topic"),
            (b'{"cmd":"replay","session":"s","topics":{"scores.a":[-1,null]}}', "first"),
            (b'{"cmd":"replay","session":"","topics":{"scores.a":[0,null]}}', "session"),
            (b'{"cmd":"state","after":"no spaces"}', "stream id"),
            (b"[" * 100000, "bytes")):
        with pytest.raises(ProtocolError, match=why):
            decode_replay_request(bad)


def test_listen_with_the_replay_socket_prints_each_streams_title_first(model_path, audio_files,
                                                                        tmp_path):
    # what a person sees joining late: `streamtag listen --replay` shows the status sent
    # before it started, title and all, without the token
    daemon = Daemon(replay_config(model_path, tmp_path)).start()
    try:
        with Subscriber(daemon.publisher.endpoint) as first:
            daemon.add_source(SourceConfig("a", f"file:{audio_files['a']}",
                                           {"realtime": True, "loop": True}, "Artist A - Song"))
            until_scores(first, {"a"})
        done = run_streamtag("listen", daemon.publisher.endpoint, "--replay",
                             daemon.replay.endpoint, "--json", "--count", "3", timeout=60)
        plain = run_streamtag("listen", daemon.publisher.endpoint, "--json", "--count", "3",
                              timeout=60)
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    statuses = [m for m in lines if m["header"]["msg_type"] == "status"]
    assert statuses and statuses[0]["body"]["title"] == "Artist A - Song"
    assert statuses[0].get("replayed") is True
    # without it, the status sent before it joined is never seen
    assert plain.returncode == 0
    assert not [line for line in plain.stdout.splitlines() if '"status"' in line]
