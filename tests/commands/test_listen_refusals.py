"""``streamtag listen -v`` names each message it refuses and why; without -v it says nothing of
them. A forged publisher on 127.0.0.1 sends them among honest heartbeats."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import zmq
from support.helpers import run_streamtag

from streamtag.wire.protocol import HeartbeatBody, encode, make_message

SESSION = "5f0c6a2e9d1b4c7e8a3f2b1d0e9c8a7b"


def header(msg_type: str, stream: str) -> bytes:
    return json.dumps({"version": "1.8", "msg_type": msg_type, "msg_id": "ab" * 16,
                       "session": SESSION, "stream": stream, "seq": 0,
                       "sent_at": 1732233600.0}).encode()


INVALID = {case["why"]: [frame.encode() for frame in case["frames"]] for case in json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "protocol" / "invalid.json").read_text(
        encoding="utf-8"))["cases"]}
REFUSED = [
    [b"event.a", header("event", "a"),
     b'{"tag":"rock","state":"maybe","score":0.5,"time_s":1.0,"sample":16000}'],
    INVALID["a scores content that is none of the kinds (1.7)"],  # a closed set's new value
    INVALID["a major version this reader does not read"],
    [b"heartbeat", header("heartbeat", "")],
]


# Values of open sets, and a field a later minor may add: taken, shown
OPEN = [b"status.a", header("status", "a"),
        json.dumps({"state": "running", "error": None, "title": "Brand new",
                    "counters": {"a_counter_never_seen": 7}, "source": "x",
                    "a_field_of_a_later_minor": [1, 2]}).encode()]


def listen_beside_a_forged_publisher(*flags: str):
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}"
    stop = threading.Event()

    def send() -> None:
        seq = 0
        while not stop.wait(0.05):
            pub.send_multipart(encode(make_message(HeartbeatBody(1.0, 1), session=SESSION,
                                                   stream="", seq=seq)))
            seq += 1
            for frames in REFUSED:
                pub.send_multipart(frames)
            pub.send_multipart(OPEN)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return run_streamtag("listen", endpoint, "--duration", "4", *flags, timeout=60)
    finally:
        stop.set()
        sender.join(timeout=10)
        pub.close()
        ctx.term()


def test_listen_v_names_each_refused_message_and_why():
    done = listen_beside_a_forged_publisher("-v")
    assert done.returncode == 0, done.stderr
    assert "heartbeat" in done.stdout  # the honest ones are shown as ever
    said = done.stderr
    assert "refused a message on topic 'event.a' (3 frames): event state" in said, said
    assert "'maybe'" in said
    assert "refused a message on topic 'scores.a' (3 frames): scores content" in said, said
    assert "'jingle'" in said
    assert "refused a message on topic 'heartbeat' (3 frames): protocol version 2.0" in said
    assert "refused a message on topic 'heartbeat' (2 frames): expected 3 frames" in said, said
    assert "a_counter_never_seen=7" in done.stdout and "'status.a'" not in said  # open: shown


def test_listen_without_v_says_nothing_of_refused_messages():
    done = listen_beside_a_forged_publisher()
    assert done.returncode == 0, done.stderr
    assert "heartbeat" in done.stdout
    assert "refused" not in done.stderr
