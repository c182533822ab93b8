"""docs/protocol.md's examples, run: the recipe for a frame past MAXMSGSIZE in plain pyzmq, the
Python API with CURVE keys, and the C subscriber (examples/c/subscriber.c) built and run
against a real daemon and a forged publisher."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from support.helpers import free_port, run_streamtag, stop_process

from streamtag.audio.files import write_audio
from streamtag.audio.synthetic import SyntheticConfig, generate_clip
from streamtag.wire.protocol import EventBody, make_message
from streamtag.wire.publisher import Publisher
from streamtag.wire.security import generate_keys, load_keys

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
C_EXAMPLE = ROOT / "examples" / "c" / "subscriber.c"
BIG = 5 * 1024 * 1024  # past every reader's 4 MiB cap
SESSION = "5f0c6a2e9d1b4c7e8a3f2b1d0e9c8a7b"


def doc_block(heading: str, language: str = "python") -> str:
    """The first ``language`` block after the heading ``heading`` in docs/protocol.md."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    found = re.search(rf"^```{language}\n(.*?)^```$", text[start:], re.S | re.M)
    assert found, f"no {language} block under {heading}"
    return found.group(1)


def frames(topic: str, seq: int) -> list[bytes]:
    """Three frames a plain reader takes: a topic, a 1.x header, a JSON body."""
    header = {"version": "1.8", "msg_type": "event", "msg_id": f"{seq:032x}",
              "session": SESSION, "stream": "a", "seq": seq, "sent_at": 1732233600.0}
    return [topic.encode(), json.dumps(header).encode(), b"{}"]


@contextlib.contextmanager
def forged_publisher():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield pub, f"tcp://127.0.0.1:{port}"
    finally:
        pub.close()
        ctx.term()


def test_the_recipe_hears_what_follows_a_frame_past_the_cap_and_a_plain_sub_does_not():
    namespace: dict = {}
    exec(compile(doc_block("### A frame past the size cap"), str(DOC), "exec"), namespace)
    heard: queue.Queue = queue.Queue()
    with forged_publisher() as (pub, endpoint):
        def read() -> None:
            for topic, _, _ in namespace["messages"](endpoint, timeout_ms=3000):
                heard.put(topic)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        plain = zmq.Context.instance().socket(zmq.SUB)
        plain.setsockopt(zmq.LINGER, 0)
        plain.setsockopt(zmq.MAXMSGSIZE, 4 * 1024 * 1024)
        plain.setsockopt(zmq.SUBSCRIBE, b"")
        dropped = plain.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        plain.connect(endpoint)
        try:
            plain_heard, recipe_heard = False, False
            deadline = time.monotonic() + 30
            while not (plain_heard and recipe_heard) and time.monotonic() < deadline:
                pub.send_multipart(frames("before", 0))  # until both are subscribed
                while plain.poll(20):  # read all, so that no queue is full when the big one goes
                    plain.recv_multipart()
                    plain_heard = True
                recipe_heard = recipe_heard or not heard.empty()
            assert plain_heard and recipe_heard, "no subscription took effect"
            pub.send_multipart([b"big", b"x" * BIG, b"{}"])
            assert dropped.poll(10_000), "the plain socket kept the connection of the big frame"
            after, seq = False, 1
            deadline = time.monotonic() + 30
            while not after and time.monotonic() < deadline:
                pub.send_multipart(frames("after", seq))
                seq += 1
                with contextlib.suppress(queue.Empty):
                    after = heard.get(timeout=0.01) == "after"
            assert after, "the recipe heard nothing after the big frame"
            # the plain socket was sent the same messages, for as long
            topics = []
            while plain.poll(100):
                topics.append(plain.recv_multipart()[0])
            assert b"after" not in topics and b"big" not in topics, (
                f"libzmq {zmq.zmq_version()} connected again by itself: docs/protocol.md, "
                "A frame past the size cap, says it does not")
        finally:
            plain.disable_monitor()
            dropped.close()
            plain.close()
        reader.join(timeout=10)


def test_the_python_api_example_reads_events_over_curve(tmp_path, monkeypatch, capsys):
    keys = tmp_path / "keys"
    generate_keys(keys, "server")
    generate_keys(keys, "reader")
    ctx = zmq.Context()
    publisher = Publisher("tcp://127.0.0.1:*", context=ctx, linger_ms=0,
                          curve=load_keys(keys / "server.key_secret", True))
    stop = threading.Event()

    def publish() -> None:
        seq = 0
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            publisher.heartbeat(1, interval_s=0.05)
            publisher.send_message(make_message(
                EventBody(tag="rock", state="on", score=0.8, time_s=1.0, sample=16000),
                session=publisher.session, stream="radio-1", seq=seq))
            seq += 1
            stop.wait(0.05)

    code = doc_block("### The Python API").replace("tcp://127.0.0.1:5556", publisher.endpoint)
    monkeypatch.chdir(tmp_path)
    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    try:
        namespace: dict = {"print": lambda *a: (print(*a), stop.set())}
        exec(compile(code, str(DOC), "exec"), namespace)
    finally:
        stop.set()
        sender.join(timeout=10)
        publisher.close()
        ctx.term()
    assert "radio-1 rock on" in capsys.readouterr().out


# -- the C subscriber -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def c_subscriber(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or shutil.which("pkg-config") is None:
        pytest.skip("no C compiler or pkg-config: apt-get install gcc pkg-config")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libzmq", "jansson"],
                           capture_output=True, text=True)
    if flags.returncode != 0:
        pytest.skip("libzmq or jansson's headers are not installed: apt-get install "
                    f"libzmq3-dev libjansson-dev ({flags.stderr.strip()})")
    out = tmp_path_factory.mktemp("c") / "subscriber"
    built = subprocess.run([compiler, "-std=c11", "-Wall", "-Wextra", "-Werror", str(C_EXAMPLE),
                            *flags.stdout.split(), "-o", str(out)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return out


def test_the_c_subscriber_survives_a_frame_past_the_cap(c_subscriber):
    with forged_publisher() as (pub, endpoint):
        proc = subprocess.Popen([str(c_subscriber), "--count", "2", endpoint, "a-"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        taker = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout],
                                 daemon=True)
        taker.start()
        try:
            first = None
            deadline = time.monotonic() + 30
            while first is None and time.monotonic() < deadline:
                pub.send_multipart(frames("a-hello", 0))
                with contextlib.suppress(queue.Empty):
                    first = lines.get(timeout=0.02)
            assert first == "a-hello 0\n", first
            pub.send_multipart([b"a-big", b"x" * BIG, b"{}"])
            second, seq = None, 1
            deadline = time.monotonic() + 30
            while second is None and time.monotonic() < deadline:
                pub.send_multipart(frames("a-after", seq))
                seq += 1
                with contextlib.suppress(queue.Empty):
                    second = lines.get(timeout=0.02)
            assert second is not None and second.startswith("a-after "), second
            assert proc.wait(timeout=10) == 0
        finally:
            stop_process(proc)
            taker.join(timeout=10)
            said = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
        assert "connecting again" in said


def test_the_c_subscriber_reads_a_real_daemon(c_subscriber, tmp_path):
    rate = 16000
    music, _, _ = generate_clip(2, SyntheticConfig(sample_rate=rate, clip_seconds=4.0))
    clip = tmp_path / "clip.wav"
    write_audio(clip, np.asarray(music, dtype=np.float32), rate)
    feed = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "daemon.toml"
    config.write_text(f'[publish]\nendpoint = "{feed}"\nheartbeat_s = 0.2\n', encoding="utf-8")
    reader = subprocess.Popen([str(c_subscriber), "--count", "4", feed, "scores.", "status."],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = run_streamtag("run", "--config", str(config), "--control", "", "--source",
                           f"clip=file:{clip}", "--realtime", "--exit-when-done", "-q",
                           popen=True)
    try:
        out, err = reader.communicate(timeout=90)
    finally:
        stop_process(reader)
        stop_process(daemon)
        daemon.communicate(timeout=10)
    lines = out.splitlines()
    assert reader.returncode == 0 and len(lines) == 4, (out, err)
    assert all(re.fullmatch(r"(scores\.clip|status\.clip) \d+", line)
               for line in lines), lines
    assert any(line.startswith("scores.clip ") for line in lines), lines
    assert "refused" not in err, err
