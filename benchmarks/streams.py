"""Streams per core, end to end as a radio monitor runs the daemon, and the forward per window.

1. Streams per core. N MP3 files of music-like audio (``testsignals.music_like``, 44.1 kHz
   mono, one seed per file) are sources of one in-process ``Daemon`` (``file:`` sources,
   not real time: each goes as fast as the engine takes it), which decodes (PyAV), resamples
   (soxr), frames (the C++ log-mel), cuts a window every second (``hop_seconds = 1``), runs the
   model, smooths and publishes every window to a subscriber in ANOTHER process over ZeroMQ on
   127.0.0.1, which counts the scores messages. Wall time runs from adding the sources to the
   last stream's final status; CPU time is the daemon process's user + system time over that
   span (``resource.getrusage``), the subscriber's not included. Real-time streams per core =
   audio seconds tagged / CPU seconds (how many live one-window-per-second streams one core of
   this CPU would carry). Per model, the backends (``--backends``: ``torch-as-loaded``, the
   TorchScript module as the daemon ran it before the torch backend froze and optimised it;
   ``torch``; ``onnxruntime``) run alternately in the same run, ``--repeats`` times each; the
   best repeat of each is reported (on a shared machine the others carry other processes'
   load), with its ratio to the first configuration listed.
2. Forward per window: ``InferenceModel.forward`` on random windows at batch 1 and 16 (1
   thread), each backend of each model, interleaved; the median of ``--forward-reps`` calls;
   the ratio is the first backend's time over the last's.

The shipped default model (models/default/model.pt), short_chunk_resnet (random weights:
speed does not depend on them) saved with ``modelfile.save``, and any installed model by name
(``streamtag models install musicnn-mtt``, then ``--models musicnn-mtt``). Nothing here
asserts a time: the figures are printed with the machine's load average at the start and the
end.

    python benchmarks/streams.py [--streams 8] [--seconds 60] [--repeats 2]
                                 [--models default short_chunk_resnet] [--json out.json]
                                 [--precision fp32 int8] [--block-s 0.5 2]
                                 [--channels 2 --loudness 0 1]

``--device cuda`` serves the model on the GPU (TorchScript: ``--backends torch-as-loaded torch``);
CPU seconds are still the daemon process's, and ``x real time (wall)`` is what one process
carries on that box.

``--processes 1 2`` instead compares one daemon process (as above) with ``streamtag run
--processes N`` (``streamtag.daemon.supervisor``: N worker processes behind an in-process proxy
and control socket), on the first of ``--models`` and of ``--backends`` (by default what ``run``
serves: ONNX Runtime on the CPU, TorchScript on CUDA), each N a fresh supervised run whose
sources are added by control (``add_source``, routed to the worker that owns the stream, from 8
clients at once): CPU time is the workers' (from /proc) plus this process's (the proxy, the
control socket), over the same span. ``auto`` is counted as ``streamtag run --processes auto``
counts it; ``--device cuda`` serves every worker on the GPU. Beside the wall's rate, ``steady``
is the scores messages a second from the last add to the first stream's end (every stream
running: the real-time streams the box carries). The whole-box figures in docs/operations.md
came from

    python benchmarks/streams.py --processes auto 16 --files 16 --repeats 1 --streams 256 \
        --seconds 60 --models default --backends onnxruntime   # torch --device cuda: the GPU

``--winograd-rows 0 1`` runs each configuration with the graph rewrites as they were before
musicnn's long temporal filters were cut in parts (``0``: its timbral filters F(4, 7), its temporal
filters direct convolutions; what issue #37's musicnn-msd figures were measured with) and as
served (``1``, the default: F(6, 7), and F(5, 5) on parts of the 128- and 64-frame filters).

``--content 0 1 2`` runs each configuration without ``[content]`` (0), with it as served (1:
each window's music, speech, silence, tone or noise, streamtag.engine.content, speech by
silero-vad's detector where ``streamtag models install speech`` put it in the model store) and
with it but speech left to the content network (2: the detector not loaded).

``--loudness 0 1`` runs each configuration without and with ``[health] loudness`` (the sources
measure EBU R128 at the files' rate and channels); ``--channels 2`` makes the MP3s stereo, as
a radio stream is.

``--precision int8`` quantizes each model first (``streamtag.catalog.quantize``, calibrated on two
of the MP3s), prints what the quantizer measured, and serves the int8 graph on ONNX Runtime beside
the FP32 runs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest.mock import patch  # noqa: E402

import machine  # noqa: E402 - benchmarks/machine.py, beside this script
import numpy as np  # noqa: E402
import torch  # noqa: E402
import zmq  # noqa: E402

from streamtag import nets  # noqa: E402
from streamtag.audio.files import write_audio  # noqa: E402
from streamtag.audio.testsignals import music_like  # noqa: E402
from streamtag.catalog.installed import installed, path_of  # noqa: E402
from streamtag.catalog.shipped import default_model_path  # noqa: E402
from streamtag.commands import stop_on_signals  # noqa: E402
from streamtag.commands.run import worker_processes  # noqa: E402
from streamtag.daemon.config import (  # noqa: E402
    PROCESSES_AUTO,
    ControlConfig,
    DaemonConfig,
    EngineConfig,
    ModelConfig,
    PublishConfig,
    SourceConfig,
)
from streamtag.daemon.daemon import Daemon  # noqa: E402
from streamtag.daemon.supervisor import Supervisor  # noqa: E402
from streamtag.engine import batching as engine_module  # noqa: E402
from streamtag.engine.config import CPU_MAX_BATCH, ContentConfig, HealthConfig  # noqa: E402
from streamtag.engine.speech import SpeechPlan  # noqa: E402
from streamtag.frontend import LogMelOptions  # noqa: E402
from streamtag.model import modelfile  # noqa: E402
from streamtag.model.inference import InferenceModel, keep_freed_memory  # noqa: E402
from streamtag.sources import file as file_source  # noqa: E402
from streamtag.wire.control import control_request  # noqa: E402
from streamtag.wire.protocol import StatusBody, decode  # noqa: E402

FILE_RATE = 44100
N_TAGS = 50


# The TorchScript module exactly as loaded, as the daemon ran it before the torch backend froze
# and optimised it (the baseline of the streams-per-core goals), labelled apart from "torch".
AS_LOADED = "torch-as-loaded"
SERVES = {AS_LOADED: "torch"}


@contextmanager
def as_loaded():
    """While the daemon loads its model: freezing fails, so the module as loaded serves."""
    def refuse(*args, **kwargs):
        raise RuntimeError("the benchmark's as-loaded baseline")

    with patch.object(torch.jit, "freeze", refuse):
        yield


def model_files(names: list[str], folder: Path) -> dict[str, Path]:
    paths = {}
    for name in names:
        if name == "default":
            paths[name] = default_model_path()
            continue
        if name in installed():  # e.g. musicnn-mtt (streamtag models install musicnn-mtt)
            paths[name] = path_of(name)
            continue
        frontend = LogMelOptions.preset("musicnn").replace(n_mels=128)
        torch.manual_seed(0)
        paths[name] = folder / f"{name}.pt"
        modelfile.save(nets.build(name, N_TAGS), paths[name], {
            "name": name, "tags": [f"tag{i:02d}" for i in range(N_TAGS)],
            "input_kind": "logmel", "frontend": frontend,
            "window": nets.spec(name)["default_input"][1],
            "hop": round(frontend.sample_rate / frontend.hop_length)})
    return paths


def _write_piece(path: Path, seconds: float, seed: int, channels: int) -> Path:
    x = music_like(seconds, FILE_RATE, seed=seed)
    if channels == 2:
        x = np.stack([x, music_like(seconds, FILE_RATE, seed=400 + seed)])
    write_audio(path, x, FILE_RATE)
    return path


def mp3_files(count: int, seconds: float, folder: Path, channels: int = 1,
              distinct: int = 0) -> list[Path]:
    """Mono files, or stereo ones whose second channel is another piece (a radio stream).
    ``distinct`` > 0: only that many different files, the streams taking them in turn (each
    stream still decodes its own copy of the work); they are written by a pool of processes,
    one per core (about 2.5 s of one core per minute of audio)."""
    pieces = min(count, distinct) if distinct > 0 else count
    jobs = [(folder / f"stream{i:03d}.mp3", seconds, 100 + i, channels) for i in range(pieces)]
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        written = list(pool.map(_write_piece, *zip(*jobs, strict=True)))
    return [written[i % pieces] for i in range(count)]


def subscriber(endpoint: str, streams: int, conn) -> None:
    """Counts scores messages until every stream has sent its final status. A scores message
    is counted by its topic frame alone and only status messages are decoded: a Python
    subscriber that decodes everything takes a core per ~4,000 scores messages a second
    (docs/operations.md, the proxy), which a 16-core box outruns, and the wall time would be
    the subscriber's."""
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, 0)
    for prefix in (b"scores.", b"status."):
        socket.setsockopt(zmq.SUBSCRIBE, prefix)
    socket.connect(endpoint)
    arrived: list[float] = []  # each scores message's time.monotonic()
    ended: set[str] = set()
    first_end = None
    conn.send("ready")
    deadline = time.monotonic() + 3600
    while len(ended) < streams and time.monotonic() < deadline:
        if not socket.poll(200):
            continue
        frames = socket.recv_multipart()
        if frames[0].startswith(b"scores."):
            arrived.append(time.monotonic())
            continue
        msg = decode(frames)
        match msg.body:
            case StatusBody(state="ended" | "failed"):
                ended.add(msg.stream)
                first_end = first_end or time.monotonic()
    conn.send({"scores": len(arrived), "arrived": arrived, "first_end": first_end})
    socket.close(0)


def heard_from(parent, timeout_s: float) -> dict:
    """What the subscriber process heard (``subscriber``'s last message), or nothing heard
    (-1 scores) when it says nothing within ``timeout_s``."""
    if parent.poll(timeout_s):
        return parent.recv()
    return {"scores": -1, "arrived": [], "first_end": None}


def steady_rate(heard: dict, added_at: float) -> float:
    """Scores messages a second from the moment every source was added to the first stream's
    end: every stream runs all along, so at one window per second of audio this is how many
    real-time streams the box carries (NaN when that span is under a second)."""
    first_end = heard["first_end"]
    if first_end is None or first_end - added_at < 1.0:
        return float("nan")
    inside = sum(1 for t in heard["arrived"] if added_at <= t < first_end)
    return inside / (first_end - added_at)


# how each --content value is shown beside the backend
CONTENT_SHOWN = {0: " (no content)", 1: "", 2: " (content, speech by the network)"}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_streams(model: Path, backend: str, files: list[Path], seconds: float,
                engine: EngineConfig, turn_windows: int = engine_module.TURN_WINDOWS,
                hold: bool = True, turn_ms: float = engine_module.TURN_FORWARD_S * 1e3,
                block_s: float = file_source.BLOCK_S, device: str = "cpu",
                loudness: bool = False, winograd_rows: bool = True,
                content: int = 1) -> dict:
    """``content``: 0 off, 1 as served, 2 on with speech left to the content network."""
    config = DaemonConfig(
        model=ModelConfig(path=str(model), device=device),
        health=HealthConfig(loudness=loudness), content=ContentConfig(enabled=content > 0),
        publish=PublishConfig(endpoint="tcp://127.0.0.1:*", heartbeat_s=0.2, sndhwm=0),
        control=ControlConfig(endpoint=""),
        engine=EngineConfig(**{**engine.__dict__, "backend": SERVES.get(backend, backend),
                               "hop_seconds": 1.0}))
    # hold 0: each message sent as it is published (the engine takes the sink's turn() as the
    # daemon is made)
    unheld = nullcontext() if hold else patch.object(Daemon, "turn", lambda self: nullcontext())
    # the daemon's start loads the model and makes its engine: every graph is rewritten there
    network = SpeechPlan(None, "speech by the content network (--content 2)")
    by_network = (patch.object(SpeechPlan, "installed", classmethod(lambda cls: network))
                  if content == 2 else nullcontext())
    with as_loaded() if backend == AS_LOADED else nullcontext(), unheld, \
            machine.winograd_rows(winograd_rows), by_network:
        daemon = Daemon(config).start()
    turns = patch.multiple(engine_module, TURN_WINDOWS=turn_windows,
                           TURN_FORWARD_S=turn_ms / 1e3)
    turns.start()
    blocks = patch.object(file_source, "BLOCK_S", block_s)
    blocks.start()
    source_cpu: list[float] = []  # each source thread's own CPU clock, read as it ends
    run_source = Daemon._run_source

    def timed_source(self, run) -> None:
        started = time.thread_time()
        try:
            run_source(self, run)
        finally:
            source_cpu.append(time.thread_time() - started)

    timed = patch.object(Daemon, "_run_source", timed_source)
    timed.start()
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=subscriber, args=(daemon.publisher.endpoint, len(files), child), daemon=True)
    process.start()
    try:
        parent.recv()
        time.sleep(1.0)  # the subscription reaches the publisher
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        for i, path in enumerate(files):
            daemon.add_source(SourceConfig(f"s{i:03d}", f"file:{path}"))
        added_at = time.monotonic()
        while not daemon.idle():
            time.sleep(0.01)
        wall = time.perf_counter() - wall0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        heard = heard_from(parent, 30)
        served = AS_LOADED if backend == AS_LOADED else daemon.model.backend
        limit = daemon.engine.batch_limit
        stats = dict(daemon.engine.stats)
        speech = daemon.engine.speech_note
        speech_stats = dict(daemon.engine.speech_stats)
    finally:
        daemon.stop()
        turns.stop()
        blocks.stop()
        timed.stop()
        process.join(5)
    user = usage1.ru_utime - usage0.ru_utime
    system = usage1.ru_stime - usage0.ru_stime
    audio_s = seconds * len(files)
    return {"backend": served, "streams": len(files), "audio_s": audio_s, "wall_s": wall,
            "user_s": user, "system_s": system, "windows": stats["windows"],
            "forward_s": stats["forward_s"], "batch_limit": limit,
            "overhead_s": stats["overhead_s"], "batches": stats["batches"],
            "turns": stats["turns"], "turn_windows": turn_windows, "turn_ms": turn_ms,
            "received": heard["scores"], "steady_streams": steady_rate(heard, added_at),
            "hold": hold, "block_s": block_s, "reused_windows": stats["reused_windows"],
            "forward_cpu_s": stats["forward_cpu_s"], "scoring_cpu_s": stats["scoring_cpu_s"],
            "source_threads_s": sum(source_cpu), "speech": speech,
            "speech_cpu_s": speech_stats["cpu_s"], "speech_chunks": speech_stats["chunks"],
            "streams_per_core": audio_s / (user + system),
            "realtime_x": audio_s / wall}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_supervised(model: Path, backend: str, files: list[Path], seconds: float,
                   processes: int, folder: Path, max_batch: int | None = None,
                   device: str = "cpu") -> dict:
    """``run_streams``'s measure for ``streamtag run --processes N``: the sources added by
    control once every worker serves, the CPU of the workers and of this process (the
    supervisor: proxy and control socket) from the first add to the last final status."""
    token_file = folder / f"control-{processes}.token"
    config = DaemonConfig(
        model=ModelConfig(path=str(model), device=device),
        publish=PublishConfig(endpoint="tcp://127.0.0.1:*", heartbeat_s=0.2, sndhwm=0),
        control=ControlConfig(endpoint="tcp://127.0.0.1:*", token_file=str(token_file),
                              file_roots=(str(folder),)),
        engine=EngineConfig(backend=SERVES.get(backend, backend), hop_seconds=1.0,
                            max_batch=max_batch))
    supervisor = Supervisor(config, processes, stop_signals=stop_on_signals).start()
    token = token_file.read_text().strip()
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=subscriber, args=(supervisor.endpoint, len(files), child), daemon=True)
    process.start()
    try:
        parent.recv()
        time.sleep(1.0)  # the subscription reaches the workers through the proxy
        pids = [w["pid"] for w in supervisor.workers()]
        workers0 = sum(process_cpu_seconds(pid) for pid in pids)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()

        def add(i: int) -> None:
            reply = control_request(supervisor.control.endpoint,
                                    {"cmd": "add_source", "id": f"s{i:03d}",
                                     "spec": f"file:{files[i]}"}, 10_000, token=token)
            if not reply["ok"]:
                raise RuntimeError(reply["error"])

        # Several clients at once, as several users or scripts would: one request's connection
        # and round trip (a few ms) times hundreds of streams would be the wall of a short run.
        with ThreadPoolExecutor(max_workers=8) as clients:
            list(clients.map(add, range(len(files))))
        adding = time.perf_counter() - wall0
        added_at = time.monotonic()
        heard = heard_from(parent, 3600)
        wall = time.perf_counter() - wall0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        workers1 = sum(process_cpu_seconds(pid) for pid in pids)
        status = supervisor.status()
        stats = status["engine"]
        limits = [w.get("max_batch") for w in status["workers"]]
    finally:
        supervisor.stop()
        process.join(5)
    supervisor_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    workers_s = workers1 - workers0
    audio_s = seconds * len(files)
    return {"processes": processes, "streams": len(files), "audio_s": audio_s, "wall_s": wall,
            "workers_cpu_s": workers_s, "supervisor_cpu_s": supervisor_s, "adding_s": adding,
            "windows": stats.get("windows", 0), "received": heard["scores"],
            "steady_streams": steady_rate(heard, added_at), "batch_limit": limits,
            "forward_cpu_s": stats.get("forward_cpu_s"),
            "scoring_cpu_s": stats.get("scoring_cpu_s"),
            "streams_per_core": audio_s / (workers_s + supervisor_s),
            "realtime_x": audio_s / wall}


def in_own_process(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a spawned process of its own: what the run held goes
    back with the process before the next run starts. On a GPU the baseline, run in this
    process, left it holding 19 GB after its daemon stopped and torch's cache was emptied
    (musicnn-msd on an H100), and the 16 worker processes after it ran out of memory."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


def processes_count(value: str, device: str) -> int:
    """A ``--processes`` value: a count, or ``auto`` counted (and said) as ``streamtag run
    --processes auto --device DEVICE`` counts it here."""
    if value != PROCESSES_AUTO:
        return int(value)
    return worker_processes(DaemonConfig(processes=PROCESSES_AUTO,
                                         model=ModelConfig(device=device)))


def processes_main(args: argparse.Namespace) -> int:
    """One daemon process against ``--processes N`` for each N, the first model and backend,
    alternately ``--repeats`` times; the best repeat of each, and each repeat's ratios."""
    backend = args.backends[0]
    with tempfile.TemporaryDirectory(prefix="streamtag-bench-") as name:
        folder = Path(name)
        model = model_files(args.models[:1], folder)[args.models[0]]
        files = mp3_files(args.streams, args.seconds, folder, distinct=args.files)
        counts = [processes_count(n, args.device) for n in args.processes]
        runs: dict[int, list[dict]] = {0: [], **{n: [] for n in counts}}
        max_batch = args.max_batch[0] or None
        for _ in range(args.repeats):
            one = in_own_process(run_streams, model, backend, files, args.seconds,
                                 EngineConfig(backend=SERVES.get(backend, backend),
                                              max_batch=max_batch), device=args.device)
            runs[0].append({**one, "workers_cpu_s": one["user_s"] + one["system_s"],
                            "supervisor_cpu_s": 0.0})
            for n in counts:
                runs[n].append(run_supervised(model, backend, files, args.seconds, n, folder,
                                              max_batch, args.device))
    best = {n: max(r, key=lambda x: x["streams_per_core"]) for n, r in runs.items()}
    base = best[0]["streams_per_core"]
    print(f"\n{args.streams} MP3 file sources x {args.seconds:g} s, one window per second, "
          f"{args.models[0]} on {backend} ({args.device}); best of {args.repeats}")
    print("| processes | max_batch | real-time streams per core | x real time (wall) | "
          "real-time streams carried (steady) | CPU s: workers + supervisor | wall s (adding "
          "the sources) | windows (received) | ratio per core | ratio wall | ratio steady |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, r in best.items():
        shown = "1 (one daemon process, no supervisor)" if n == 0 else \
            f"{n} (streamtag run --processes {n})"
        print(f"| {shown} | {r['batch_limit']} | {r['streams_per_core']:.0f} | "
              f"{r['realtime_x']:.0f} | {r['steady_streams']:.0f} | "
              f"{r['workers_cpu_s']:.1f} + {r['supervisor_cpu_s']:.1f} | {r['wall_s']:.1f} "
              f"({r.get('adding_s', 0.0):.1f}) | {r['windows']} ({r['received']}) | "
              f"{r['streams_per_core'] / base:.2f} | "
              f"{r['realtime_x'] / best[0]['realtime_x']:.2f} | "
              f"{r['steady_streams'] / best[0]['steady_streams']:.2f} |", flush=True)
    # Each repeat runs every configuration back to back, so a repeat's ratios compare runs that
    # saw about the same machine; on a shared box their median says more than the best runs.
    print(f"\nPer repeat, against the one daemon process of that repeat ({args.repeats} "
          "repeats): median [lowest, highest]")
    print("| processes | real-time streams per core: ratio | x real time (wall): ratio |")
    print("|---|---|---|")
    for n in counts:
        for_core = [r["streams_per_core"] / o["streams_per_core"]
                    for r, o in zip(runs[n], runs[0], strict=True)]
        for_wall = [r["realtime_x"] / o["realtime_x"] for r, o in zip(runs[n], runs[0],
                                                                       strict=True)]
        print(f"| {n} | {statistics.median(for_core):.2f} [{min(for_core):.2f}, "
              f"{max(for_core):.2f}] | {statistics.median(for_wall):.2f} "
              f"[{min(for_wall):.2f}, {max(for_wall):.2f}] |", flush=True)
    # Every run serves the same files, so every run scores as many windows as the one
    # process did; fewer means forwards failed (the workers' log says why) and the figures
    # count audio that was not scored.
    expected = runs[0][0]["windows"]
    for n, repeats in runs.items():
        for i, r in enumerate(repeats):
            if r["received"] != expected or r["windows"] != expected:
                print(f"! {n or 'one'} process(es), repeat {i + 1}: {r['windows']} windows "
                      f"scored, {r['received']} received, of {expected}: its figures count "
                      "audio that was not scored (the log above says why)", flush=True)
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args),
                                                "processes": {str(n): r for n, r in
                                                              runs.items()}}, indent=2))
    return 0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_memory(model: Path, backend: str, files: list[Path], streams: int,
               settle_s: float) -> dict:
    """RSS of the daemon serving ``streams`` real-time (looped) file sources, after
    ``settle_s`` seconds, and the RSS before the first source."""
    config = DaemonConfig(
        model=ModelConfig(path=str(model), device="cpu"),
        publish=PublishConfig(endpoint="tcp://127.0.0.1:*", heartbeat_s=0.5),
        control=ControlConfig(endpoint=""),
        engine=EngineConfig(backend=backend, hop_seconds=1.0))
    daemon = Daemon(config).start()
    try:
        before = rss_mb()
        for i in range(streams):
            daemon.add_source(SourceConfig(f"s{i:03d}", f"file:{files[i % len(files)]}",
                                           {"realtime": True, "loop": True}))
        time.sleep(settle_s)
        after = rss_mb()
        windows = daemon.engine.stats["windows"]
        dropped = daemon.engine.stats["dropped_windows"]
    finally:
        daemon.stop()
    return {"streams": streams, "rss_before_mb": before, "rss_mb": after,
            "windows": windows, "dropped_windows": dropped}


def forward_ms(paths: dict[str, Path], backends: list[str], reps: int,
               device: str = "cpu") -> list[dict]:
    rows = []
    for name, path in paths.items():
        loaded = modelfile.load(path, device=device)
        models = {}
        for b in backends:
            with as_loaded() if b == AS_LOADED else nullcontext():
                models[b] = InferenceModel(loaded, backend=SERVES.get(b, b), threads=1)
        for batch in (1, 16):
            x = np.random.default_rng(0).standard_normal(
                models[backends[0]].input_shape(batch), dtype=np.float32)
            times: dict[str, list[float]] = {b: [] for b in backends}
            for b in backends:
                models[b].forward(x)  # first-call costs
            for _ in range(reps):
                for b in backends:
                    t0 = time.perf_counter()
                    models[b].forward(x)
                    times[b].append(time.perf_counter() - t0)
            row = {"model": name, "batch": batch}
            row.update({b: 1e3 * float(np.median(times[b])) / batch for b in backends})
            rows.append(row)
    return rows


def main() -> int:
    keep_freed_memory()  # as `streamtag run` does, before any thread starts
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["default", "short_chunk_resnet"])
    parser.add_argument("--backends", nargs="+", choices=[AS_LOADED, "torch", "onnxruntime"],
                        help="default: torch onnxruntime; with --processes, what `run` serves "
                             "(backend auto: onnxruntime on the CPU, torch on CUDA)")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per stream")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[EngineConfig.workers])
    parser.add_argument("--threads", type=int, nargs="+", default=[EngineConfig.threads])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[0],
                        help="one or more: each runs beside the others; 0 (the default): left "
                             f"out, the engine measures the model for the cheapest size up to "
                             f"{CPU_MAX_BATCH} on the CPU")
    parser.add_argument("--turn-windows", type=int, nargs="+",
                        default=[engine_module.TURN_WINDOWS],
                        help="windows a worker takes in one turn at most, one or more (1: one "
                             "forward pass a turn, as before turns)")
    parser.add_argument("--turn-ms", type=float, nargs="+",
                        default=[engine_module.TURN_FORWARD_S * 1e3],
                        help="the most forward time a turn holds its windows back, ms, one or "
                             "more")
    parser.add_argument("--hold", type=int, nargs="+", default=[1], choices=[0, 1],
                        help="1: a turn's messages leave together (Publisher.held), 0: each "
                             "as it is published; one or both")
    parser.add_argument("--decoders", type=int, nargs="+", default=[EngineConfig.decoders],
                        help="source threads working at once, one or more (default 0: the "
                             "cores left over from the inference threads)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "int8"],
                        help="int8: each model quantized first (streamtag.catalog.quantize, "
                        "calibrated "
                             "on two of the MP3s) and served by ONNX Runtime; one or both")
    parser.add_argument("--block-s", type=float, nargs="+", default=[file_source.BLOCK_S],
                        help="seconds of decoded audio a file source hands on at once, one or "
                             "more")
    parser.add_argument("--winograd-rows", type=int, nargs="+", default=[1], choices=[0, 1],
                        help="1: the graph rewrites as served; 0: musicnn's timbral filters "
                             "F(4, 7) and its temporal ones direct, as before")
    parser.add_argument("--loudness", type=int, nargs="+", default=[0], choices=[0, 1],
                        help="[health] loudness: EBU R128 measured by the sources (1), or not")
    parser.add_argument("--content", type=int, nargs="+", default=[1], choices=[0, 1, 2],
                        help="[content]: what each window's audio is (1, as served: speech by "
                             "silero-vad where installed), off (0), or on with speech by the "
                             "content network (2)")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 2],
                        help="the MP3s' channels (2: a second piece in the right channel)")
    parser.add_argument("--reuse", type=int, nargs="+", default=[1], choices=[0, 1],
                        help="1: overlapping windows share work (engine.reuse_windows), 0: "
                             "every window computed whole; one or both")
    parser.add_argument("--forward-reps", type=int, default=20)
    parser.add_argument("--skip-forward", action="store_true")
    parser.add_argument("--memory", type=int, nargs="*", default=[],
                        help="instead: RSS with this many real-time streams (e.g. 1 32 256), "
                             "each in a fresh process")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds of real-time streaming before RSS is read")
    parser.add_argument("--device", default="cpu",
                        help="cpu, or cuda (with --backends torch torch-as-loaded: ONNX Runtime "
                             "serves on the CPU only); CPU seconds are still the process's")
    parser.add_argument("--processes", nargs="+", default=[],
                        help="instead: one daemon process against `streamtag run --processes "
                             "N` for each N (e.g. 1 2 auto: auto as `run` counts it), the "
                             "first of --models and --backends, on --device")
    parser.add_argument("--files", type=int, default=0,
                        help="distinct MP3 files, the streams taking them in turn (default 0: "
                             "one per stream)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.backends is None:  # --processes measures the daemon as shipped: backend auto
        args.backends = ((["torch"] if args.device.startswith("cuda") else ["onnxruntime"])
                         if args.processes else ["torch", "onnxruntime"])
    print(f"# {machine.cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__}", flush=True)
    configs = [(backend, batch, workers, threads, decoders, (turn, turn_ms), hold, block_s,
                precision, reuse, loudness, rows, content)
               for precision in args.precision
               for backend in (args.backends if precision == "fp32" else ["onnxruntime"])
               for batch in args.max_batch for workers in args.workers for threads in args.threads
               for decoders in args.decoders for turn in args.turn_windows
               for turn_ms in args.turn_ms
               for hold in args.hold for block_s in args.block_s for reuse in args.reuse
               for loudness in args.loudness for rows in args.winograd_rows
               for content in args.content]
    result: dict = {"args": vars(args), "streams": [], "forward": []}
    if args.memory:
        return memory_main(args)
    if args.processes:
        return processes_main(args)
    with tempfile.TemporaryDirectory(prefix="streamtag-bench-") as folder:
        paths = model_files(args.models, Path(folder))
        files = mp3_files(args.streams, args.seconds, Path(folder), args.channels)
        quantized = {}
        if "int8" in args.precision:
            from streamtag.catalog.quantize import quantize_file

            print("\nint8 graphs (streamtag.catalog.quantize on two of the MP3s): largest and mean "
                  "difference from FP32 on the windows not calibrated on, tag decisions that "
                  "agree, one window's forward FP32 -> int8")
            for name, path in paths.items():
                quantized[name] = Path(folder) / f"{name}-int8.pt"
                done = quantize_file(path, files[:2], quantized[name])
                print(f"- {name}: {done.max_difference:.3g} / {done.mean_difference:.2g}, "
                      f"{100 * done.decisions_agree:.1f} %, {done.fp32_ms:.2f} -> "
                      f"{done.int8_ms:.2f} ms", flush=True)
        print(f"\n{args.streams} MP3 file sources x {args.seconds:g} s, one window per second")
        print("| model | backend | max_batch | turn (windows, forward) | held | block s | "
              "workers x threads | decoders | real-time streams per core | x real time (wall) | "
              "CPU s (user + system) | windows | mean batch | mean turn | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, path in paths.items():
            runs: dict[tuple, list[dict]] = {c: [] for c in configs}
            for _ in range(args.repeats):
                for config in configs:
                    backend, batch, workers, threads, decoders, turn, hold, block_s, \
                        precision, reuse, loudness, rows, content = config
                    engine = EngineConfig(workers=workers, threads=threads,
                                          max_batch=batch or None, decoders=decoders,
                                          precision=precision, reuse_windows=bool(reuse))
                    served = quantized[name] if precision == "int8" else path
                    runs[config].append(run_streams(served, backend, files, args.seconds, engine,
                                                    turn[0], bool(hold), turn[1], block_s,
                                                    args.device, bool(loudness), bool(rows),
                                                    content))
            best = {c: max(r, key=lambda x: x["streams_per_core"]) for c, r in runs.items()}
            base = best[configs[0]]["streams_per_core"]
            for config in configs:
                _, batch, workers, threads, decoders, turn, hold, block_s, precision, \
                    reuse, loudness, rows, content = config
                r = best[config]
                shown_batch = batch or f"{r['batch_limit']} (measured)"
                turns = EngineConfig(workers=workers, threads=threads).decoder_turns()
                shown_decoders = decoders or f"{turns} (default)"
                shown = f"{r['backend']}{' int8' if precision == 'int8' else ''}"
                shown += " (windows reused)" if r["reused_windows"] else ""
                shown += " + loudness" if loudness else ""
                shown += CONTENT_SHOWN[content] if content != 1 else (
                    "" if r["speech_chunks"] else " (speech by the network: no detector)")
                shown += "" if rows else " (F(4, 7), temporal direct)"
                print(f"| {name} | {shown} | "
                      f"{shown_batch} | {turn[0]}, {turn[1]:g} ms | "
                      f"{hold} | {block_s:g} | "
                      f"{workers} x {threads} | {shown_decoders} | {r['streams_per_core']:.0f} | "
                      f"{r['realtime_x']:.0f} | {r['user_s']:.1f} + {r['system_s']:.1f} | "
                      f"{r['windows']} ({r['received']} received) | "
                      f"{r['windows'] / r['batches']:.1f} | {r['windows'] / r['turns']:.1f} | "
                      f"{r['streams_per_core'] / base:.2f} |", flush=True)
                result["streams"].append({"model": name, "max_batch": batch,
                                          "precision": precision, "reuse": reuse,
                                          "loudness": loudness, "winograd_rows": rows,
                                          "content": content,
                                          "workers": workers, "threads": threads,
                                          "decoders": decoders, **r, "all": runs[config]})
        print("\nWhere the CPU went, ms per window (best repeat of each): the forward, the rest of "
              "scoring (stacking, smoothing, encoding, publishing, counters: the engine's "
              "thread), the sources' threads (decoding, resampling, framing, cutting "
              "windows, queueing: one second of audio per window, each thread's own CPU "
              "clock) and the rest of the process (its other threads: main, heartbeat, "
              "ZeroMQ's)")
        print("| model | backend | max_batch | turn (windows, forward) | held | block s | forward "
              "| scoring outside the forward (of it: the speech detector) | sources' threads "
              "| rest of the process | of all: system time |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in result["streams"]:
            per = 1e3 / row["windows"]
            total = row["user_s"] + row["system_s"]
            shown_batch = row["max_batch"] or f"{row['batch_limit']} (measured)"
            shown_backend = row["backend"] + (" int8" if row["precision"] == "int8" else "")
            shown_backend += " (windows reused)" if row["reused_windows"] else ""
            shown_backend += " + loudness" if row["loudness"] else ""
            shown_backend += CONTENT_SHOWN[row["content"]]
            shown_backend += "" if row["winograd_rows"] else " (F(4, 7), temporal direct)"
            print(f"| {row['model']} | {shown_backend} | {shown_batch} | "
                  f"{row['turn_windows']}, {row['turn_ms']:g} ms | {int(row['hold'])} | "
                  f"{row['block_s']:g} | "
                  f"{row['forward_cpu_s'] * per:.2f} | "
                  f"{(row['scoring_cpu_s'] - row['forward_cpu_s']) * per:.3f} "
                  f"({row['speech_cpu_s'] * per:.3f}) | "
                  f"{row['source_threads_s'] * per:.2f} | "
                  f"{(total - row['scoring_cpu_s'] - row['source_threads_s']) * per:.2f} | "
                  f"{row['system_s'] * per:.2f} |")
        if not args.skip_forward:
            print("\nms per window, 1 thread (median of "
                  f"{args.forward_reps} calls)")
            print("| model | batch | " + " | ".join(args.backends) + " | ratio |")
            print("|---|---|" + "---|" * len(args.backends) + "---|")
            for row in forward_ms(paths, args.backends, args.forward_reps, args.device):
                ratio = row[args.backends[0]] / row[args.backends[-1]]
                print(f"| {row['model']} | {row['batch']} | "
                      + " | ".join(f"{row[b]:.2f}" for b in args.backends)
                      + f" | {ratio:.1f}x |", flush=True)
                result["forward"].append(row)
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def memory_main(args: argparse.Namespace) -> int:
    """Each stream count in a fresh process (RSS only grows), the model (first of --models) on
    the first of --backends."""
    if len(args.memory) > 1:
        import subprocess

        print("| streams | RSS MB | RSS before the sources MB | MB per stream (over 1 stream) "
              "| windows scored | dropped |")
        print("|---|---|---|---|---|---|")
        base = None
        for count in args.memory:
            out = subprocess.run([sys.executable, __file__, "--memory", str(count),
                                  "--models", args.models[0], "--backends", args.backends[0],
                                  "--settle", str(args.settle)], capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            base = row if base is None else base
            per = ((row["rss_mb"] - base["rss_mb"]) / (count - base["streams"])
                   if count > base["streams"] else float("nan"))
            print(f"| {count} | {row['rss_mb']:.0f} | {row['rss_before_mb']:.0f} | {per:.2f} | "
                  f"{row['windows']} | {row['dropped_windows']} |", flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="streamtag-bench-") as folder:
        paths = model_files(args.models[:1], Path(folder))
        files = mp3_files(min(8, args.memory[0]), 20.0, Path(folder))
        row = run_memory(paths[args.models[0]], args.backends[0], files, args.memory[0],
                         args.settle)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
