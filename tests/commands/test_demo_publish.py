"""streamtag demo --publish ENDPOINT: other readers watch the demo there; a non-loopback
endpoint is refused (the demo has no keys)."""

from __future__ import annotations

import json
import time

import zmq
from support.helpers import free_port, run_streamtag, stop_process, tiny_model_file


def test_a_reader_of_its_own_hears_the_demo_on_the_endpoint_given(tmp_path):
    model = tiny_model_file(tmp_path / "tiny.pt")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"scores.demo")
    sub.connect(endpoint)  # before the demo binds: ZeroMQ connects when it is there
    proc = run_streamtag("demo", "--model", str(model), "--seconds", "6", "--speed", "5",
                         "--device", "cpu", "--publish", endpoint, popen=True)
    heard = []
    try:
        deadline = time.monotonic() + 120
        while not heard and time.monotonic() < deadline and proc.poll() is None:
            if sub.poll(200):
                heard.append(sub.recv_multipart())
        out, err = proc.communicate(timeout=120)
    finally:
        stop_process(proc)
        sub.close()
        ctx.term()
    assert proc.returncode == 0, err
    assert f"publishing on {endpoint}" in out
    assert heard, "nothing heard on --publish's endpoint"
    assert json.loads(heard[0][1])["stream"] == "demo"


def test_a_non_loopback_endpoint_is_refused():
    done = run_streamtag("demo", "--publish", f"tcp://0.0.0.0:{free_port()}", timeout=60)
    assert done.returncode == 2
    assert "the demo publishes on this machine only" in done.stderr
