"""Fan-out: scores messages per second from one publisher to 1, 4 and 16 subscribers, through
``streamtag proxy`` (a real process, as deployed) and, side by side, straight from the
publisher's PUB socket (the single-daemon case), with the ratio proxy / direct.

The publisher sends real scores messages (``--tags`` tags, encoded once by
``streamtag.protocol``, so the publisher's encoding is not what is measured) on a ZeroMQ PUB
socket with no high-water mark, as fast as ZeroMQ takes them: nothing is lost on the way to
the proxy. In "proxy" runs it connects to the proxy's frontend and the subscribers to its
backend; in "direct" runs the subscribers connect to the publisher. Each subscriber is its own
process (a raw ZeroMQ SUB with the receive high-water mark of ``streamtag.client.Subscriber``,
counting messages without decoding them, so a subscriber is as fast as one can be). Before the
timed burst, heartbeats flow until every subscriber has one (the subscriptions reached the
publisher through the proxy); after it, ``status`` messages mark the end.

Per run: delivered messages/s per subscriber (median over subscribers: its messages / its time
from first to last), the total delivered to all subscribers per second, and the share lost
(the proxy's per-subscriber queue is 1000 messages; a subscriber that falls behind loses).

    PYTHONPATH=. python benchmarks/proxy.py [--messages 30000] [--subscribers 1 4 16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time

import zmq

from streamtag.protocol import (
    HeartbeatBody,
    ScoresBody,
    StatusBody,
    encode,
    make_message,
    new_session_id,
)

SUBSCRIBER_RCVHWM = 10_000  # streamtag.client.Subscriber's


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(count: int, tags: int, session: str) -> tuple[list, list, list]:
    """`count` distinct scores messages over 100 streams, a heartbeat and a status."""
    names = [f"tag{i}" for i in range(tags)]
    scores = []
    for i in range(count):
        body = ScoresBody(start_s=i * 1.0, end_s=i * 1.0 + 3.0, start_sample=i * 16000,
                          end_sample=i * 16000 + 48000, tags=names,
                          raw=[round((i * 7 + t) % 1000 / 1000, 6) for t in range(tags)],
                          smoothed=[round((i * 3 + t) % 1000 / 1000, 6) for t in range(tags)],
                          active=names[: i % 4], model={"name": "bench", "hash": "0" * 16},
                          latency_ms=12.5)
        scores.append(encode(make_message(body, session=session, stream=f"radio-{i % 100}",
                                          seq=i // 100)))
    beat = encode(make_message(HeartbeatBody(uptime_s=1.0, streams=100), session=session,
                               stream="", seq=0))
    end = encode(make_message(StatusBody(state="ended"), session=session, stream="radio-0",
                              seq=0))
    return scores, beat, end


def subscriber(endpoint: str, ready, results) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, SUBSCRIBER_RCVHWM)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    received, first, last, said_ready = 0, None, None, False
    while sock.poll(20_000):
        frames = sock.recv_multipart(copy=False)
        topic = frames[0].bytes
        if topic.startswith(b"scores"):
            last = time.perf_counter()
            first = first if first is not None else last
            received += 1
        elif topic.startswith(b"heartbeat") and not said_ready:
            ready.put(os.getpid())
            said_ready = True
        elif topic.startswith(b"status"):
            break
    results.put((received, first, last))
    sock.close(linger=0)
    ctx.term()


def run(mode: str, count: int, n_subscribers: int, frames) -> dict:
    scores, beat, end = frames
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)  # nothing lost before the proxy
    proxy = None
    if mode == "proxy":
        frontend, backend = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
        proxy = subprocess.Popen([sys.executable, "-m", "streamtag", "proxy", "--frontend",
                                  frontend, "--backend", backend], stderr=subprocess.PIPE,
                                 text=True)
        proxy.stderr.readline()  # "streamtag proxy: daemons publish to ...": it is bound
        pub.connect(frontend)
        endpoint = backend
    else:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        pub.bind(endpoint)
    mp = multiprocessing.get_context("spawn")
    ready, results = mp.Queue(), mp.Queue()
    subs = [mp.Process(target=subscriber, args=(endpoint, ready, results))
            for _ in range(n_subscribers)]
    for p in subs:
        p.start()
    try:
        joined, deadline = 0, time.monotonic() + 60
        while joined < n_subscribers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: only {joined} of {n_subscribers} subscribers "
                                   "received a heartbeat in 60 s")
            pub.send_multipart(beat)
            while not ready.empty():
                ready.get()
                joined += 1
            time.sleep(0.01)
        time.sleep(0.2)  # heartbeats still in flight arrive before the timed burst
        t0 = time.perf_counter()
        for i in range(count):
            pub.send_multipart(scores[i], copy=False)
        sent_s = time.perf_counter() - t0
        got = []
        deadline = time.monotonic() + 120
        while len(got) < n_subscribers and time.monotonic() < deadline:
            pub.send_multipart(end)  # repeated: a queue that is full drops the first ones
            time.sleep(0.05)
            while not results.empty():
                got.append(results.get())
    finally:
        for p in subs:
            p.join(5)
            if p.is_alive():
                p.kill()
        pub.close(linger=0)
        ctx.term()
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
    if len(got) < n_subscribers:
        raise RuntimeError(f"{mode}: {n_subscribers - len(got)} subscribers never finished")
    rates = [n / (last - first) for n, first, last in got if n > 1]
    starts = [first for n, first, _ in got if n]
    ends = [last for n, _, last in got if n]
    total = sum(n for n, _, _ in got)
    return {"mode": mode, "subscribers": n_subscribers, "send_rate": count / sent_s,
            "per_subscriber": statistics.median(rates) if rates else 0.0,
            "total_rate": total / (max(ends) - min(starts)) if ends else 0.0,
            "lost": 1 - total / (count * n_subscribers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30_000, help="scores messages per run")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tags", type=int, default=50, help="tags per scores message")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the best is kept")
    args = parser.parse_args()
    frames = messages(args.messages, args.tags, new_session_id())
    size = sum(len(f) for f in frames[0][0])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.messages} scores messages of {size} bytes ({args.tags} tags), "
          f"best of {args.repeats}")
    print(f"{'subscribers':>11} | {'mode':>6} | {'sent/s':>9} | {'per sub/s':>9} | "
          f"{'all subs/s':>10} | {'lost':>6} | proxy/direct (per sub)")
    for n in args.subscribers:
        best = {}
        for mode in ("direct", "proxy"):
            runs = [run(mode, args.messages, n, frames) for _ in range(args.repeats)]
            best[mode] = max(runs, key=lambda r: r["per_subscriber"])
        for mode in ("direct", "proxy"):
            r = best[mode]
            ratio = (f"{best['proxy']['per_subscriber'] / best['direct']['per_subscriber']:.2f}x"
                     if mode == "proxy" and best["direct"]["per_subscriber"] else "")
            print(f"{n:>11} | {mode:>6} | {r['send_rate']:>9.0f} | {r['per_subscriber']:>9.0f} | "
                  f"{r['total_rate']:>10.0f} | {r['lost']:>6.1%} | {ratio}", flush=True)


if __name__ == "__main__":
    main()
