"""Engine speed: cross-stream batching, publish-to-subscriber latency and per-window overhead.

Two zoo models are saved as real model files (``streamtag.model.modelfile.save``, RANDOM weights:
the speed of a network does not depend on its weights) in a temporary folder and loaded with
``InferenceModel.load``, as the daemon loads them:

- ``short_chunk_resnet``: 128 mels (the musicnn preset, 16 kHz, hop 256), 231-frame window
  (3.7 s), hop 62 frames (0.99 s);
- ``crnn``: 96 mels (the mtg_jamendo preset, 12 kHz, hop 256), 1366-frame window (29.1 s),
  hop 47 frames (1.00 s). ``--models vggish`` is the alternative long-window model.

Three measurements, each with the engine's worker thread running:

1. Throughput. N non-live streams (1, 8, 64) are fed pre-generated audio
   (``testsignals.music_like``, one seed per stream) in 0.5 s chunks as fast as the engine
   takes it, by one feeder thread per stream (as the daemon runs one thread per source; a
   non-live stream waits in ``accept`` under back-pressure, which would stall every other stream
   of a round-robin feeder). Each stream gets exactly max(2, ceil(--windows / N)) windows (a
   second one, so steady state is seen at 64 streams too). Wall time
   runs from the first ``accept`` to the last result at the sink; windows/s = windows scored /
   wall time; real-time streams = windows/s × hop seconds (one window per stream per hop of
   audio). Batched (``max_batch=64``) against one window at a time (``max_batch=1``).
2. Latency. Live streams fed at playback speed in 0.1 s chunks (one pacing thread for all;
   ``accept`` never waits for a live stream), phases staggered across the hop as independent
   radio streams would be; each stream first gets, at once, the audio of its first window less
   its phase, so a window is due within a second of going live. The sink publishes as the
   daemon does (events, then scores) on a ``Publisher`` at tcp://127.0.0.1:<free port>; a
   ``Subscriber`` receives in another process (as real subscribers do; ``--subscriber thread``
   puts it in a thread of this process, where its decoding competes with the engine for the
   GIL). One window goes through the whole path first, unmeasured, so first-call costs are not
   counted. Engine latency is the message's ``latency_ms``
   (last sample accepted → sink call); end to end is receive time − the ``arrival`` of the
   accept call that completed the window, found by matching the window's ``end_sample`` to the
   chunk boundaries (one monotonic clock), cross-checked with ``latency_ms`` + (receive wall
   time − header ``sent_at``). The number of live streams is --live-load (0.5) of the capacity
   measured in part 1, at most --max-live-streams (8), so that latency measures the pipeline and
   not a queue that grows until live windows are dropped.
3. Overhead per window, excluding the model forward:
   - engine side: ``engine.stats["overhead_s"] / windows``: wall time in the worker's scoring
     step outside ``model.forward`` — stacking the batch, smoothing, building each
     ``WindowResult``, the sink call (counting in part 1, publishing in part 2), bookkeeping.
     Not included: waiting to fill a batch (``max_wait_ms``), the forward itself (numpy →
     tensor, the network, sigmoid, → numpy).
   - feeding side: CPU time of the feeder threads inside ``accept``/``finish_stream``
     (``time.thread_time``, so back-pressure and GIL waits are excluded): log-mel framing,
     the frame ring, cutting each window (a transposed copy), queueing. Steady state per
     window = the CPU of the calls after the one that completed each stream's first window,
     divided by the windows after each stream's first (a hop of audio framed and one window
     cut per window; in the live run it also holds the audio after the last window, under a
     hop per stream). A stream's first window, which frames a whole window of audio, is shown
     apart, and the raw figure is all feeding CPU / all windows.

   Both are means, as the brief for this benchmark defines them; on a shared machine a batch
   whose thread was preempted inflates the mean, so the median over batches of overhead ÷ batch
   size is shown beside it, and the publishing sink's own wall and CPU time per window.

Targets: batched ≥ 5× one-at-a-time windows/s at 64 streams; overhead (engine + steady-state
feeding) ≤ 1 ms per window, judged on the worst throughput run (counting sink) and, apart, on
the live run (publishing sink). torch threads are set explicitly (--threads; inter-op threads
1); the feeders and the subscriber run beside them. Nothing here asserts absolute times: the
figures are printed, with the load average at the start and the end.

On CUDA (``--device cuda``) the same runs are made with 1024 windows per configuration; the
real-time streams column is then the streams one GPU sustains with this CPU framing them. When
CUDA is not available the option says so and exits with status 2.

    python benchmarks/engine.py [--quick] [--threads 1 [2]] [--device cpu|cuda]
                                [--models short_chunk_resnet crnn] [--streams 1 8 64]
                                [--windows 64] [--repeats 1] [--subscriber process|thread]
                                [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # numpy's pools stay at one; torch's threads are set per run

import argparse  # noqa: E402
import bisect  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import cpu_name  # noqa: E402 - benchmarks/machine.py, beside this script

from streamtag import nets  # noqa: E402
from streamtag.audio.testsignals import music_like  # noqa: E402
from streamtag.engine.batching import Engine, EngineConfig, EngineSink, WindowResult  # noqa: E402
from streamtag.engine.smoothing import TagEvent  # noqa: E402
from streamtag.frontend import LogMelOptions  # noqa: E402
from streamtag.model import modelfile  # noqa: E402
from streamtag.model.inference import InferenceModel  # noqa: E402
from streamtag.wire.protocol import HeartbeatBody  # noqa: E402
from streamtag.wire.publisher import Publisher  # noqa: E402
from streamtag.wire.subscriber import Subscriber  # noqa: E402

N_TAGS = 56  # MTG-Jamendo mood/theme
BATCHED = 64  # max_batch of the batched runs unless --max-batch says otherwise
CHUNK_S = 0.5  # non-live feeding
LIVE_CHUNK_S = 0.1
BATCHING_TARGET = 5.0  # batched / one-at-a-time windows/s at TARGET_STREAMS streams
TARGET_STREAMS = 64
OVERHEAD_TARGET_MS = 1.0


@dataclasses.dataclass(frozen=True)
class ModelSetup:
    name: str
    frontend: LogMelOptions
    window: int  # frames
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def hop(self) -> int:
        """Frames in about one second."""
        return round(self.frontend.sample_rate / self.frontend.hop_length)


def setups() -> dict[str, ModelSetup]:
    jamendo = LogMelOptions.preset("mtg_jamendo")
    return {
        "short_chunk_resnet": ModelSetup(
            "short_chunk_resnet", LogMelOptions.preset("musicnn").replace(n_mels=128),
            nets.spec("short_chunk_resnet")["default_input"][1]),
        "crnn": ModelSetup("crnn", jamendo, nets.spec("crnn")["default_input"][1],
                           {"n_mels": jamendo.n_mels}),
        "vggish": ModelSetup("vggish", jamendo, nets.spec("vggish")["default_input"][1]),
    }


def save_model(setup: ModelSetup, folder: Path) -> Path:
    torch.manual_seed(0)
    module = nets.build(setup.name, N_TAGS, **setup.options)
    path = folder / f"{setup.name}.pt"
    modelfile.save(module, path, {
        "name": setup.name, "tags": [f"tag{i:02d}" for i in range(N_TAGS)],
        "input_kind": "logmel", "frontend": setup.frontend, "window": setup.window,
        "hop": setup.hop, "architecture": {"name": setup.name, **setup.options},
        "recipe": "random weights: benchmarks/engine.py measures speed only"})
    return path


class AudioBank:
    """Pre-generated music-like audio, one seed per stream index, grown on demand."""

    def __init__(self, sample_rate: float, seed: int) -> None:
        self.sample_rate = sample_rate
        self.seed = seed
        self._audio: dict[int, np.ndarray] = {}

    def get(self, index: int, samples: int) -> np.ndarray:
        have = self._audio.get(index)
        if have is None or len(have) < samples:
            seconds = math.ceil(samples / self.sample_rate) + 1
            have = music_like(seconds, self.sample_rate, seed=self.seed + index)
            self._audio[index] = have
        return have[:samples]


def hop_seconds(model: InferenceModel) -> float:
    return model.hop * model.frontend.hop_length / model.sample_rate


def samples_for_windows(model: InferenceModel, windows: int) -> int:
    """Stream length that gives exactly ``windows`` windows: with centred frames, n samples give
    1 + n // hop_length frames, and the last window then ends on the last frame."""
    frames = model.window + (windows - 1) * model.hop
    return (frames - 1) * model.frontend.hop_length


def first_window_samples(model: InferenceModel) -> int:
    """Samples after which a stream's first window is complete (its last frame is framed)."""
    o = model.frontend
    pad = o.n_fft // 2 if o.center else 0
    return (model.window - 1) * o.hop_length - pad + o.n_fft


# -- 1. throughput -------------------------------------------------------------------------


class CountingSink(EngineSink):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.windows = 0
        self.last = 0.0

    def on_window(self, result: WindowResult) -> None:
        now = time.monotonic()
        with self.lock:
            self.windows += 1
            self.last = max(self.last, now)

    def on_stream_end(self, stream_id: str, events: list[TagEvent], end_s: float) -> None:
        pass


class BatchLog:
    """Each batch's engine overhead: ``on_batch`` runs after a batch's forward and before its
    results are dispatched, when ``stats["overhead_s"]`` holds the batches before it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sizes: list[int] = []
        self.marks: list[float] = []
        engine.on_batch = self.on_batch

    def on_batch(self, size: int, forward_s: float) -> None:
        self.sizes.append(size)
        self.marks.append(self.engine.stats["overhead_s"])

    def median_ms_per_window(self) -> float:
        """Median over batches of overhead / batch size: robust to the odd batch whose thread
        was preempted on a shared machine, which the mean is not."""
        if not self.sizes:
            return math.nan
        ends = [*self.marks[1:], self.engine.stats["overhead_s"]]
        per_window = [(b - a) / n for a, b, n in zip(self.marks, ends, self.sizes, strict=True)]
        return 1e3 * float(np.median(per_window))


def run_throughput(model: InferenceModel, bank: AudioBank, streams: int, windows_each: int,
                   max_batch: int) -> dict[str, Any]:
    sink = CountingSink()
    engine = Engine(model, sink, EngineConfig(max_batch=max_batch))
    batches = BatchLog(engine)
    length = samples_for_windows(model, windows_each)
    audio = [bank.get(i, length) for i in range(streams)]
    ids = [f"s{i}" for i in range(streams)]
    for sid in ids:
        engine.add_stream(sid)
    chunk = round(CHUNK_S * model.sample_rate)
    barrier = threading.Barrier(streams + 1)
    firsts = [math.inf] * streams
    costs = [FeedCost(first_window_samples(model)) for _ in range(streams)]
    errors: list[BaseException] = []

    def feed(i: int) -> None:
        try:
            signal, sid, cost = audio[i], ids[i], costs[i]
            barrier.wait()
            firsts[i] = time.monotonic()
            for start in range(0, len(signal), chunk):
                piece = signal[start: start + chunk]
                t0 = time.thread_time()
                engine.accept(sid, piece)
                cost.add(time.thread_time() - t0, len(piece))
            t0 = time.thread_time()
            engine.finish_stream(sid)
            cost.add(time.thread_time() - t0, 0)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(i,), name=f"feed-{i}")
               for i in range(streams)]
    engine.start()
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join()
    engine.stop()
    if errors:
        raise errors[0]
    stats = engine.stats
    scored = stats["windows"]
    expected = streams * windows_each
    if scored != expected or stats["dropped_windows"] or stats["failed_batches"]:
        raise RuntimeError(f"{model.name}, {streams} streams, max_batch {max_batch}: scored "
                           f"{scored} of {expected} windows ({stats['dropped_windows']} dropped, "
                           f"{stats['failed_batches']} failed batches)")
    wall = sink.last - min(firsts)
    windows_per_s = scored / wall
    sizes = list(engine.batch_sizes)
    return {
        "streams": streams, "max_batch": max_batch, "windows": scored, "wall_s": wall,
        "windows_per_s": windows_per_s, "realtime_streams": windows_per_s * hop_seconds(model),
        "batches": stats["batches"], "mean_batch": float(np.mean(sizes)),
        "max_batch_seen": max(sizes),
        "forward_ms_per_window": 1e3 * stats["forward_s"] / scored,
        **overhead(stats, batches, costs, scored - streams),
    }


class FeedCost:
    """CPU time one stream's feeder spends in ``accept``/``finish_stream``, split at the
    stream's first window: the calls up to the one that completes it are start-up (a whole
    window of audio framed), the rest steady state (a hop of audio and one window cut per
    window)."""

    def __init__(self, first_window_samples: int) -> None:
        self.first = first_window_samples
        self.fed = 0
        self.startup_s = 0.0
        self.steady_s = 0.0

    def add(self, cpu_s: float, samples: int) -> None:
        if self.fed < self.first:
            self.startup_s += cpu_s
        else:
            self.steady_s += cpu_s
        self.fed += samples


def overhead(stats: dict, batches: BatchLog, costs: list[FeedCost],
             steady_windows: int) -> dict[str, float]:
    windows = max(stats["windows"], 1)
    engine_ms = 1e3 * stats["overhead_s"] / windows
    startup = sum(c.startup_s for c in costs)
    steady = sum(c.steady_s for c in costs)
    steady_ms = 1e3 * steady / steady_windows if steady_windows > 0 else math.nan
    return {"engine_overhead_ms": engine_ms,
            "engine_overhead_ms_median": batches.median_ms_per_window(),
            "feed_ms_raw": 1e3 * (startup + steady) / windows,
            "feed_ms_first_window": 1e3 * startup / len(costs), "feed_ms_steady": steady_ms,
            "overhead_ms": engine_ms + steady_ms}


# -- 2. latency ----------------------------------------------------------------------------


class PublishingSink(EngineSink):
    """What the daemon's sink does with a result: events first, then the scores."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.calls: list[tuple[int, float, float]] = []  # (events, wall s, CPU s) per window

    def on_window(self, result: WindowResult) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        self._publish(result)
        self.calls.append((len(result.events), time.perf_counter() - t0,
                           time.thread_time() - c0))

    def _publish(self, result: WindowResult) -> None:
        for event in result.events:
            self.publisher.publish_event(
                result.stream_id, tag=event.tag, state=event.state, score=event.score,
                time_s=event.time_s, sample=round(event.time_s * result.sample_rate))
        self.publisher.publish_scores(
            result.stream_id, start_s=result.start_s, end_s=result.end_s,
            start_sample=result.start_sample, end_sample=result.end_sample, tags=result.tags,
            raw=result.raw, smoothed=result.smoothed, active=result.active,
            model={"name": result.model_name, "hash": result.model_hash},
            latency_ms=result.latency_ms)

    def on_stream_end(self, stream_id: str, events: list[TagEvent], end_s: float) -> None:
        pass


def subscribe(endpoint: str, conn: Connection) -> None:
    """The receiving side, in a thread or a process: a Subscriber for scores and heartbeats.
    Over ``conn`` it says "ready", then "heard" at the first heartbeat; on any message from the
    other end it stops and sends back the scores it received and the messages it missed."""
    try:
        with Subscriber(endpoint, topics=("scores", "heartbeat")) as sub:
            conn.send("ready")
            heard = False
            scores: list[tuple[str, int, float, float, float, float]] = []
            while not conn.poll():
                message = sub.recv(50)
                if message is None:
                    continue
                mono, wall = time.monotonic(), time.time()
                if isinstance(message.body, HeartbeatBody):
                    if not heard:
                        conn.send("heard")
                        heard = True
                    continue
                body = message.body
                scores.append((message.stream, body.end_sample, body.latency_ms,
                               message.sent_at, wall, mono))
            conn.recv()
            conn.send((scores, sub.missed))
    except BaseException as exc:  # noqa: BLE001 - reported by the other end
        conn.send(f"error: {type(exc).__name__}: {exc}")


def start_subscriber(endpoint: str, where: str) -> tuple[Connection, Any]:
    """A subscriber in its own process (as real subscribers are: it does not share the daemon's
    GIL) or in a thread of this one; returns our end of its pipe and the runner."""
    ours, theirs = multiprocessing.Pipe()
    if where == "process":
        runner: Any = multiprocessing.get_context("spawn").Process(
            target=subscribe, args=(endpoint, theirs), name="subscriber", daemon=True)
    else:
        runner = threading.Thread(target=subscribe, args=(endpoint, theirs), name="subscriber",
                                  daemon=True)
    runner.start()
    said = ours.recv() if ours.poll(60) else "no reply within 60 s"
    if said != "ready":
        raise RuntimeError(f"the subscriber did not start: {said}")
    return ours, runner


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(max(values))}


def _median_ms(seconds: list[float]) -> float:
    return 1e3 * float(np.median(seconds)) if seconds else math.nan


def run_latency(model: InferenceModel, bank: AudioBank, streams: int, seconds: float,
                subscriber: str, max_batch: int = BATCHED) -> dict[str, Any]:
    publisher = Publisher("tcp://127.0.0.1:*", sndhwm=10000)
    conn, runner = start_subscriber(publisher.endpoint, subscriber)
    deadline = time.monotonic() + 10
    heard = None
    while heard is None and time.monotonic() < deadline:
        publisher.heartbeat(0)  # until the subscription has reached the publisher
        if conn.poll(0.05):
            heard = conn.recv()
    if heard != "heard":
        raise RuntimeError(f"the subscriber did not connect: {heard}")
    # One window through the whole path first, so first-call costs are not measured.
    warm = Engine(model, PublishingSink(publisher))
    warm.add_stream("warmup")
    warm.accept("warmup", bank.get(999, first_window_samples(model)))
    warm.drain()
    sink = PublishingSink(publisher)
    engine = Engine(model, sink, EngineConfig(max_batch=max_batch))
    batches = BatchLog(engine)
    ids = [f"live{i}" for i in range(streams)]
    chunk = round(LIVE_CHUNK_S * model.sample_rate)
    hop_samples = model.hop * model.frontend.hop_length
    n_chunks = round(seconds / LIVE_CHUNK_S)
    # Stream i's first window completes (i + 1) / streams of a hop after going live.
    preroll = [max(0, first_window_samples(model) - round((i + 1) / streams * hop_samples))
               for i in range(streams)]
    audio = [bank.get(1000 + i, preroll[i] + n_chunks * chunk) for i in range(streams)]
    bounds: dict[str, tuple[list[int], list[float]]] = {sid: ([], []) for sid in ids}
    costs = [FeedCost(first_window_samples(model)) for _ in ids]
    engine.start()
    for sid in ids:
        engine.add_stream(sid, live=True)
    for i, sid in enumerate(ids):  # the catch-up at the start; no window completes in it
        t0 = time.thread_time()
        engine.accept(sid, audio[i][: preroll[i]])
        costs[i].add(time.thread_time() - t0, preroll[i])
        bounds[sid][0].append(preroll[i])
        bounds[sid][1].append(time.monotonic())
    start = time.monotonic()
    for k in range(n_chunks):
        wait = start + (k + 1) * LIVE_CHUNK_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for i, sid in enumerate(ids):
            a = preroll[i] + k * chunk
            arrival = time.monotonic()
            t0 = time.thread_time()
            engine.accept(sid, audio[i][a: a + chunk], arrival)
            costs[i].add(time.thread_time() - t0, chunk)
            bounds[sid][0].append(a + chunk)
            bounds[sid][1].append(arrival)
    late = time.monotonic() - (start + n_chunks * LIVE_CHUNK_S)
    deadline = time.monotonic() + 60
    while (any(engine.stream_counters(sid)["pending"] for sid in ids)
           and time.monotonic() < deadline):
        time.sleep(0.01)
    scored = engine.stats["windows"]
    steady_windows = sum(max(0, engine.stream_counters(sid)["windows"] - 1) for sid in ids)
    time.sleep(0.5)  # for the last messages on their way over the loopback
    conn.send("stop")
    reply = conn.recv() if conn.poll(30) else "no reply"
    runner.join(10)
    if isinstance(reply, str):
        raise RuntimeError(f"the subscriber failed: {reply}")
    all_scores, missed = reply
    for sid in ids:
        engine.remove_stream(sid)  # nothing is queued; no final window for a cut-off stream
    engine.stop()
    publisher.close()
    engine_ms, e2e_ms, e2e_wall_ms, transport_ms = [], [], [], []
    received = [m for m in all_scores if m[0] in bounds]
    for sid, end_sample, latency_ms, sent_at, wall, mono in received:
        ends, arrivals = bounds[sid]
        arrival = arrivals[bisect.bisect_left(ends, end_sample)]
        engine_ms.append(latency_ms)
        e2e_ms.append(1e3 * (mono - arrival))
        e2e_wall_ms.append(latency_ms + 1e3 * (wall - sent_at))
        transport_ms.append(1e3 * (wall - sent_at))
    stats = engine.stats
    sizes = list(engine.batch_sizes)
    return {
        "streams": streams, "seconds": seconds, "windows": scored,
        "received": len(received), "lost_messages": missed,
        "subscriber": subscriber, "events_published": sum(c[0] for c in sink.calls),
        "windows_with_events": sum(1 for c in sink.calls if c[0]),
        "sink_ms_median_without_events": _median_ms([c[1] for c in sink.calls if not c[0]]),
        "sink_cpu_ms_median_without_events": _median_ms([c[2] for c in sink.calls
                                                          if not c[0]]),
        "sink_ms_median_with_events": _median_ms([c[1] for c in sink.calls if c[0]]),
        "dropped_windows": stats["dropped_windows"], "pacing_late_s": late,
        "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
        "forward_ms_per_window": 1e3 * stats["forward_s"] / max(scored, 1),
        "engine_ms": percentiles(engine_ms), "e2e_ms": percentiles(e2e_ms),
        "transport_ms": percentiles(transport_ms),
        "e2e_check_max_diff_ms": float(max((abs(a - b) for a, b in
                                            zip(e2e_ms, e2e_wall_ms, strict=True)),
                                           default=math.nan)),
        **overhead(stats, batches, costs, steady_windows),
    }


# -- report --------------------------------------------------------------------------------


def machine(device: str) -> dict[str, Any]:
    cpu = cpu_name()
    info = {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": device, "load_average": list(os.getloadavg()),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def _ms(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "—"


def throughput_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | threads | streams | windows | batched win/s | batched RT streams "
             "| mean batch | one-at-a-time win/s | one-at-a-time RT streams | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, s = r["batched"], r["single"]
        lines.append(f"| {r['model']} | {r['threads']} | {r['streams']} | {b['windows']} "
                     f"| {_num(b['windows_per_s'])} | {_num(b['realtime_streams'])} "
                     f"| {b['mean_batch']:.1f} | {_num(s['windows_per_s'])} "
                     f"| {_num(s['realtime_streams'])} | **{r['ratio']:.2f}×** |")
    return "\n".join(lines)


def latency_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | threads | live streams | windows | dropped | mean batch "
             "| engine p50 / p99 ms | end-to-end p50 / p99 ms | transport p50 / p99 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency"]
        e, t, x = lat["engine_ms"], lat["e2e_ms"], lat["transport_ms"]
        lines.append(f"| {r['model']} | {r['threads']} | {lat['streams']} "
                     f"| {lat['received']} | {lat['dropped_windows']} | {lat['mean_batch']:.1f} "
                     f"| {_num(e['p50'])} / {_num(e['p99'])} | {_num(t['p50'])} / "
                     f"{_num(t['p99'])} | {_num(x['p50'])} / {_num(x['p99'])} |")
    return "\n".join(lines)


def overhead_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for r in result["throughput"]:
        for key, label in (("batched", f"max_batch {r['batched']['max_batch']}"),
                           ("single", "max_batch 1")):
            rows.append((f"{r['streams']} streams, {label}", r[key]))
    if result.get("latency"):
        rows.append((f"{result['latency']['streams']} live, publishing", result["latency"]))
    return rows


def overhead_table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | threads | run | engine overhead ms/window (mean; median of batches) "
             "| feeding ms/window (steady) | feeding ms per stream's first window "
             "| feeding ms/window (raw) | total ms/window | forward ms/window |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        for label, r in overhead_rows(result):
            lines.append(f"| {result['model']} | {result['threads']} | {label} "
                         f"| {r['engine_overhead_ms']:.3f}; {r['engine_overhead_ms_median']:.3f} "
                         f"| {_ms(r['feed_ms_steady'])} | {_ms(r['feed_ms_first_window'])} "
                         f"| {_ms(r['feed_ms_raw'])} "
                         f"| {r['overhead_ms']:.3f} | {_num(r['forward_ms_per_window'])} |")
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for result in results:
        what = f"{result['model']}, {result['threads']} thread(s)"
        at = [r for r in result["throughput"] if r["streams"] == TARGET_STREAMS]
        name = f"batching ≥ {BATCHING_TARGET:g}× at {TARGET_STREAMS} streams ({what})"
        if at:
            ratio = at[0]["ratio"]
            out.append({"target": name, "value": f"{ratio:.2f}×",
                        "met": ratio >= BATCHING_TARGET})
        else:
            out.append({"target": name, "value": "not measured", "met": None})
        rows = overhead_rows(result)
        engine_rows = [lr for lr in rows if "live" not in lr[0]]
        live_rows = [lr for lr in rows if "live" in lr[0]]
        for label, group in (("engine and feeding, worst throughput run", engine_rows),
                             ("with publishing, live run", live_rows)):
            if not group:
                continue
            run, worst = max(group, key=lambda lr: lr[1]["overhead_ms"])
            out.append({"target": f"overhead ≤ {OVERHEAD_TARGET_MS:g} ms/window, {label} "
                                  f"({what})",
                        "value": f"{worst['overhead_ms']:.3f} ms ({run})",
                        "met": worst["overhead_ms"] <= OVERHEAD_TARGET_MS})
    return out


def main() -> int:
    choices = list(setups())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=choices,
                        default=["short_chunk_resnet", "crnn"], metavar="NAME",
                        help=f"models among {', '.join(choices)} (default: short_chunk_resnet "
                             "crnn)")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N (default cpu); the feeders always run on the "
                             "CPU")
    parser.add_argument("--threads", nargs="+", type=int, default=[1],
                        help="torch intra-op threads; each count is a full run (default 1)")
    parser.add_argument("--streams", nargs="+", type=int,
                        help="stream counts for throughput (default 1 8 64; --quick 1 8 16)")
    parser.add_argument("--windows", type=int,
                        help="windows per throughput configuration, split evenly over the "
                             "streams, at least 2 each (default 64 on the CPU, 1024 on CUDA; "
                             "--quick 16)")
    parser.add_argument("--max-batch", type=int, default=BATCHED,
                        help=f"max_batch of the batched runs and the live run (default {BATCHED})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each throughput configuration; the fastest counts "
                             "(default 1)")
    parser.add_argument("--live-seconds", type=float,
                        help="seconds of live-paced audio for latency (default 10; --quick 5)")
    parser.add_argument("--live-load", type=float, default=0.5,
                        help="live streams as a fraction of the measured real-time capacity "
                             "(default 0.5)")
    parser.add_argument("--max-live-streams", type=int, default=8,
                        help="at most this many live streams (default 8)")
    parser.add_argument("--live-streams", type=int,
                        help="exactly this many live streams (overrides --live-load)")
    parser.add_argument("--subscriber", choices=("process", "thread"), default="process",
                        help="where the subscriber runs: its own process, as a real one does "
                             "(default), or a thread of the benchmark's process, where its "
                             "decoding competes with the engine for the GIL")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: fewer windows, streams 1 8 16, 5 s of live audio")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is; by default the benchmark sets "
                             "it as the daemon does (streamtag.model.inference.keep_freed_memory)")
    args = parser.parse_args()
    if not args.default_allocator:
        from streamtag.model.inference import keep_freed_memory

        keep_freed_memory()

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available here (torch "
              f"{torch.__version__}, torch.cuda.is_available() is False); run on the CPU with "
              "--device cpu", file=sys.stderr)
        return 2
    streams = args.streams or ([1, 8, 16] if args.quick else [1, 8, 64])
    windows = args.windows or (16 if args.quick else 1024 if cuda else 64)
    live_seconds = args.live_seconds or (5.0 if args.quick else 10.0)
    if (min(streams) < 1 or windows < 1 or min(args.threads) < 1 or live_seconds <= 0
            or args.repeats < 1 or args.max_batch < 1):
        parser.error("--streams, --windows, --threads, --repeats, --max-batch and "
                     "--live-seconds must be positive")

    torch.set_num_interop_threads(1)
    host = machine(args.device)
    print(f"# {host['cpu']}, {host['cores']} cores, torch {host['torch']}, device "
          f"{host.get('gpu', args.device)}, load average {host['load_average'][0]:.2f}, "
          f"{host['date']}")
    print(f"# throughput: streams {streams}, {windows} windows per configuration, chunks "
          f"{CHUNK_S:g} s; latency: {live_seconds:g} s live in {LIVE_CHUNK_S:g} s chunks; "
          "RANDOM weights", flush=True)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="streamtag-engine-bench-") as folder:
        torch.set_num_threads(args.threads[0])
        paths = {name: save_model(setups()[name], Path(folder)) for name in args.models}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name in args.models:
                model = InferenceModel.load(paths[name], device=args.device)
                for batch in (1, 2, 1):  # the profiling executor settles over a few passes
                    model.forward(np.zeros(model.input_shape(batch), dtype=np.float32))
                bank = AudioBank(model.sample_rate, seed=0)
                result: dict[str, Any] = {
                    "model": name, "threads": threads, "window": model.window,
                    "hop": model.hop, "hop_s": hop_seconds(model),
                    "window_s": model.window * model.frontend.hop_length / model.sample_rate,
                    "throughput": [], "latency": None}
                for index, n in enumerate(streams):
                    each = max(2, math.ceil(windows / n))  # steady state needs a second
                    row: dict[str, Any] = {"model": name, "threads": threads, "streams": n}
                    # Alternate which mode runs first, so a change in the machine's background
                    # load does not always favour the same one.
                    order = [("batched", args.max_batch), ("single", 1)]
                    order = order[:: -1 if index % 2 else 1]
                    for _ in range(args.repeats):
                        for key, max_batch in order:
                            run = run_throughput(model, bank, n, each, max_batch)
                            seen = [*row.get(key, {}).get("all_windows_per_s", []),
                                    run["windows_per_s"]]
                            if key not in row or run["windows_per_s"] > row[key]["windows_per_s"]:
                                row[key] = run
                            row[key]["all_windows_per_s"] = seen
                        order.reverse()
                    row["ratio"] = row["batched"]["windows_per_s"] / row["single"]["windows_per_s"]
                    result["throughput"].append(row)
                    b, s = row["batched"], row["single"]
                    print(f"{name:20s} {threads} thr {n:4d} streams  batched "
                          f"{b['windows_per_s']:8.2f} win/s (mean batch {b['mean_batch']:.1f})  "
                          f"one-at-a-time {s['windows_per_s']:8.2f} win/s  "
                          f"ratio {row['ratio']:.2f}  ({b['wall_s'] + s['wall_s']:.0f} s)",
                          flush=True)
                capacity = max(r["batched"]["realtime_streams"] for r in result["throughput"])
                live = args.live_streams or max(1, min(args.max_live_streams,
                                                       math.floor(args.live_load * capacity)))
                lat = run_latency(model, bank, live, live_seconds, args.subscriber,
                                  args.max_batch)
                result["latency"] = lat
                result["capacity_streams"] = capacity
                print(f"{name:20s} {threads} thr {live:4d} live     engine p50/p99 "
                      f"{lat['engine_ms']['p50']:.1f}/{lat['engine_ms']['p99']:.1f} ms  "
                      f"end-to-end {lat['e2e_ms']['p50']:.1f}/{lat['e2e_ms']['p99']:.1f} ms  "
                      f"({lat['received']} windows, {lat['dropped_windows']} dropped)",
                      flush=True)
                results.append(result)
    total = time.perf_counter() - started
    host["load_average_end"] = list(os.getloadavg())

    flat = [r for result in results for r in result["throughput"]]
    print(f"\n## Throughput (device {args.device}; batched = max_batch {args.max_batch}, "
          "ratio = batched / one-at-a-time windows/s; RT streams = windows/s × hop seconds)\n")
    print(throughput_table(flat))
    print(f"\n## Publish-to-subscriber latency (live-paced, {live_seconds:g} s, max_batch "
          f"{args.max_batch}; end-to-end = last sample accepted → received by the "
          "subscriber)\n")
    print(latency_table(results))
    print("\n## Overhead per window outside the model forward (engine: stats overhead_s; "
          "feeding: CPU time in accept, steady = after each stream's first window; total = "
          "engine mean + steady feeding)\n")
    print(overhead_table(results))
    checks = targets(results)
    print("\n## Targets\n")
    for c in checks:
        verdict = "not measured" if c["met"] is None else "met" if c["met"] else "MISSED"
        print(f"- {c['target']}: {c['value']} — {verdict}")
    for result in results:
        lat = result["latency"]
        print(f"\n{result['model']} ({result['threads']} thread(s)): window "
              f"{result['window_s']:.2f} s, hop {result['hop_s']:.3f} s; live run: "
              f"{lat['lost_messages']} messages lost, pacing {lat['pacing_late_s'] * 1e3:.0f} ms "
              f"late at the end, end-to-end methods agree within "
              f"{lat['e2e_check_max_diff_ms']:.2f} ms; {lat['events_published']} tag events "
              f"in {lat['windows_with_events']} of {lat['windows']} windows; publishing took "
              f"{lat['sink_ms_median_without_events']:.3f} ms (median; CPU "
              f"{lat['sink_cpu_ms_median_without_events']:.3f} ms) for a window without "
              f"events, {lat['sink_ms_median_with_events']:.3f} ms with; subscriber in a "
              f"{lat['subscriber']}")
    if not cuda:
        print("\nCUDA: not run (--device cuda needs torch.cuda.is_available())")
    print(f"load average {host['load_average'][0]:.2f} at the start, "
          f"{host['load_average_end'][0]:.2f} at the end; total {total:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": host, "settings": {
                "models": args.models, "device": args.device, "threads": args.threads,
                "streams": streams, "windows": windows, "chunk_s": CHUNK_S,
                "live_chunk_s": LIVE_CHUNK_S, "live_seconds": live_seconds,
                "live_load": args.live_load, "max_live_streams": args.max_live_streams,
                "repeats": args.repeats, "max_batch": args.max_batch,
                "quick": args.quick, "weights": "random"},
                "total_seconds": total, "results": results, "targets": checks}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
