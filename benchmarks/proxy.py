"""Fan-out: scores messages per second from one publisher to 1, 4 and 16 subscribers, through
``streamtag proxy`` (a real process, as deployed) and, side by side, straight from the
publisher's PUB socket (the single-daemon case), and through the proxy as streamtag had it
before (a Python loop, "pyloop"), with the ratios to direct.

The publisher sends real scores messages (``--tags`` tags, encoded once by
``streamtag.wire.protocol``, so the publisher's encoding is not what is measured) on a ZeroMQ PUB
socket with no high-water mark, as fast as ZeroMQ takes them: nothing is lost on the way to the
proxy. In "proxy" runs it connects to the proxy's frontend and the subscribers to its backend; in
"direct" runs the subscribers connect to the publisher. Each subscriber is its own process and
receives inside libzmq (the receive high-water mark of ``streamtag.wire.subscriber.Subscriber``),
counting with libzmq's proxy statistics, so subscribers are as fast as ZeroMQ peers can be and the
figures are the transport's. What decoding adds in a Python subscriber is measured apart
(``decode_rate``). Before the timed burst, heartbeats flow until every subscriber has one (the
subscriptions reached the publisher through the proxy).

Per run: delivered messages/s per subscriber (median over subscribers: its messages / its time
from first to last), the total delivered to all subscribers per second, and the share lost
(the proxy's per-subscriber queue is 1000 messages: a subscriber that falls behind loses).
On a machine with fewer cores than subscribers + 2, the processes share cores and the figures
are the machine's as much as the proxy's: say how many cores you ran on.

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
import threading
import time

import zmq

from streamtag.wire.protocol import (
    HeartbeatBody,
    ScoresBody,
    decode,
    encode,
    make_message,
    new_session_id,
)

SUBSCRIBER_RCVHWM = 10_000  # streamtag.wire.subscriber.Subscriber's
MODES = ("direct", "proxy", "pyloop")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages(count: int, tags: int, session: str) -> tuple[list, list]:
    """`count` distinct scores messages over 100 streams, and a heartbeat."""
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
    return scores, beat


def subscriber(endpoint: str, ready, burst, done, results) -> None:
    """Receives in libzmq (a steerable proxy into a PUB socket nobody reads, which drops) and
    counts with its statistics, so the subscriber is as fast as a ZeroMQ peer can be and the
    figure is the transport's; ``decode_rate`` below is what a Python subscriber adds."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, SUBSCRIBER_RCVHWM)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    sink = ctx.socket(zmq.PUB)
    sink.bind("inproc://sink")
    control = ctx.socket(zmq.REP)
    control.bind("inproc://control")
    counting = threading.Thread(target=zmq.proxy_steerable, args=(sub, sink, None, control))
    counting.start()
    steer = ctx.socket(zmq.REQ)
    steer.connect("inproc://control")

    def received() -> int:  # messages in so far: 3 frames each
        steer.send(b"STATISTICS")
        return int.from_bytes(steer.recv_multipart()[0], "little") // 3

    while received() == 0:  # heartbeats: the subscription is in place
        time.sleep(0.005)
    ready.put(os.getpid())
    burst.wait()
    base = received()
    samples = []
    while not done.is_set():
        samples.append((time.perf_counter(), received()))
        time.sleep(0.002)
    final = samples[-1][1]
    first = next(t for t, n in samples if n > base) if final > base else None
    last = next(t for t, n in samples if n == final)
    steer.send(b"TERMINATE")
    steer.recv_multipart()
    counting.join()
    for sock in (sub, sink, control, steer):
        sock.close(linger=0)
    ctx.term()
    results.put((final - base, first, last))


def run(mode: str, count: int, n_subscribers: int, frames) -> dict:
    scores, beat = frames
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)  # nothing lost before the proxy
    proxy = None
    if mode in ("proxy", "pyloop"):
        frontend, backend = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
        command = (["-m", "streamtag", "proxy", "--frontend", frontend, "--backend", backend]
                   if mode == "proxy" else [__file__, "--python-loop", frontend, backend])
        proxy = subprocess.Popen([sys.executable, *command], stderr=subprocess.PIPE, text=True)
        proxy.stderr.readline()  # "streamtag proxy: daemons publish to ...": it is bound
        pub.connect(frontend)
        endpoint = backend
    else:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        pub.bind(endpoint)
    mp = multiprocessing.get_context("spawn")
    ready, results, burst, done = mp.Queue(), mp.Queue(), mp.Event(), mp.Event()
    subs = [mp.Process(target=subscriber, args=(endpoint, ready, burst, done, results))
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
        time.sleep(0.5)  # heartbeats still in flight arrive before the timed burst
        burst.set()
        time.sleep(0.2)  # every subscriber has taken its count before the burst
        t0 = time.perf_counter()
        for i in range(count):
            pub.send_multipart(scores[i], copy=False)
        sent_s = time.perf_counter() - t0
        time.sleep(3.0)  # what is still queued arrives (or was dropped)
        done.set()
        got = [results.get(timeout=60) for _ in subs]
    finally:
        for p in subs:
            p.join(10)
            if p.is_alive():
                p.kill()
        pub.close(linger=0)
        ctx.term()
        if proxy is not None:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:  # never leave a proxy behind
                proxy.kill()
                proxy.wait(10)
    rates = [n / (last - first) for n, first, last in got if n > 1 and last > first]
    starts = [first for n, first, _ in got if n]
    ends = [last for n, _, last in got if n]
    total = sum(n for n, _, _ in got)
    return {"mode": mode, "subscribers": n_subscribers, "send_rate": count / sent_s,
            "per_subscriber": statistics.median(rates) if rates else 0.0,
            "total_rate": total / (max(ends) - min(starts)) if ends else 0.0,
            "lost": 1 - total / (count * n_subscribers)}


def python_loop(frontend: str, backend: str) -> None:
    """The peer "pyloop": the proxy as streamtag had it before, a Python loop moving up to
    1000 messages per socket per wake-up between the same XSUB and XPUB sockets."""
    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.SNDHWM, 1000)
    xsub.bind(frontend)
    xpub.bind(backend)
    print("bound", file=sys.stderr, flush=True)
    poller = zmq.Poller()
    poller.register(xsub, zmq.POLLIN)
    poller.register(xpub, zmq.POLLIN)
    while True:
        events = dict(poller.poll(100))
        for source, sink in ((xsub, xpub), (xpub, xsub)):
            if source in events:
                for _ in range(1000):
                    try:
                        frames = source.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        sink.send_multipart(frames, zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        pass


def decode_rate(scores: list) -> float:
    """Messages per second one Python subscriber decodes (streamtag.wire.protocol.decode)."""
    t0 = time.perf_counter()
    for frames in scores:
        decode(frames)
    return len(scores) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30_000, help="scores messages per run")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tags", type=int, default=50, help="tags per scores message")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the best is kept")
    parser.add_argument("--python-loop", nargs=2, metavar=("FRONTEND", "BACKEND"),
                        help=argparse.SUPPRESS)  # runs the "pyloop" peer in its own process
    args = parser.parse_args()
    if args.python_loop:
        python_loop(*args.python_loop)
        return
    frames = messages(args.messages, args.tags, new_session_id())
    size = sum(len(f) for f in frames[0][0])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.messages} scores messages of {size} bytes ({args.tags} tags), "
          f"best of {args.repeats}")
    print(f"{'subscribers':>11} | {'mode':>6} | {'sent/s':>9} | {'per sub/s':>9} | "
          f"{'all subs/s':>10} | {'lost':>6} | / direct (per sub)")
    for n in args.subscribers:
        best = {}
        for mode in MODES:
            runs = [run(mode, args.messages, n, frames) for _ in range(args.repeats)]
            best[mode] = max(runs, key=lambda r: r["per_subscriber"])
        for mode in MODES:
            r = best[mode]
            direct = best["direct"]["per_subscriber"]
            ratio = f"{r['per_subscriber'] / direct:.2f}x" if mode != "direct" and direct else ""
            print(f"{n:>11} | {mode:>6} | {r['send_rate']:>9.0f} | {r['per_subscriber']:>9.0f} | "
                  f"{r['total_rate']:>10.0f} | {r['lost']:>6.1%} | {ratio}", flush=True)
    print(f"one Python subscriber decodes {decode_rate(frames[0]):.0f} scores messages/s "
          "(streamtag.wire.protocol.decode, one core)")


if __name__ == "__main__":
    main()
