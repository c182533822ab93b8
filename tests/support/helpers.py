"""What several test modules share: small real model files (TorchScript files written by
streamtag.model.modelfile), running the CLI, free ports, waiting, stopping processes, the protocol
decoder's contract, a daemon started in process with a subscriber, a daemon's config file for one
started as a process, a feed watched in a thread, and an Ogg station over HTTP for it to play.
Fixtures are in conftest.py, the other real servers in servers.py."""

from __future__ import annotations

import collections
import http.server
import importlib.util
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamtag.audio.files import load_audio
from streamtag.daemon.config import (
    ControlConfig,
    DaemonConfig,
    EngineConfig,
    ModelConfig,
    PublishConfig,
)
from streamtag.daemon.daemon import Daemon
from streamtag.engine.batching import EngineSink, WindowResult
from streamtag.engine.smoothing import SmoothingConfig
from streamtag.errors import ProtocolError
from streamtag.frontend import LogMelOptions, OnlineLogMel, compute_logmel
from streamtag.model import modelfile
from streamtag.model.inference import InferenceModel
from streamtag.wire.protocol import Message, decode, encode
from streamtag.wire.subscriber import Subscriber

TAGS = ("calm", "loud", "bright", "dark")


class TinyTagger(nn.Module):
    """Conv over mel bands, mean over time, linear: enough to react to loudness and timbre."""

    def __init__(self, n_mels: int, n_tags: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(n_mels, 8, kernel_size=3, padding=1)
        self.out = nn.Linear(8, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x / 10.0)).mean(dim=2)
        return self.out(h)


def trained_looking(module: nn.Module) -> nn.Module:
    """Batch norms with the statistics and factors of a trained network, some negative."""
    generator = torch.Generator().manual_seed(3)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator))
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=generator))
            m.bias.data.copy_(torch.randn(n, generator=generator))
    return module.eval()


def tiny_model_file(path: Path, *, seed: int = 0, preset: str = "musicnn", window: int = 32,
                    hop: int = 16, tags: tuple[str, ...] = TAGS, name: str = "tiny",
                    thresholds: tuple[float, ...] | None = None) -> Path:
    frontend = LogMelOptions.preset(preset)
    model = TinyTagger(frontend.n_mels, len(tags), seed)
    modelfile.save(model, path, {
        "name": name, "tags": list(tags), "input_kind": "logmel", "frontend": frontend,
        "window": window, "hop": hop,
        "thresholds": list(thresholds) if thresholds else [0.5] * len(tags),
        "architecture": {"name": "tiny"}})
    return path


def with_changed_weights(path: Path, out: Path) -> Path:
    """A copy of the model file with one weight tensor's bytes changed (the archive whole): a
    file changed after it was saved, its manifest's weights hash no longer theirs."""
    import zipfile

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/data/0"):
                data = bytes(b ^ 0x55 for b in data)
            dst.writestr(item, data)
    return out


def run_streamtag(*args: str, popen: bool = False, **kwargs):
    """Runs ``python -m streamtag ARGS`` as a user would, from outside the source tree: ``-m``
    puts the working directory first on sys.path, and the source tree's streamtag/ (which lacks
    the built extension in a non-editable install) would shadow the installed package."""
    command = [sys.executable, "-m", "streamtag", *args]
    kwargs.setdefault("cwd", tempfile.gettempdir())
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kwargs)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def run_side_by_side(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Each ``streamtag`` command run as ``run_streamtag`` runs it, all started at once (each
    spends most of its time starting, or waiting out a timeout)."""
    started = [run_streamtag(*args, popen=True) for args in commands]
    done = []
    try:
        for proc in started:
            out, err = proc.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in started:
            stop_process(proc)
    return done


def load_file_module(path: Path, name: str):
    """The Python file at `path` (a benchmark, a data script: no package) loaded as module
    `name`, without putting its folder on sys.path, where its other files would shadow
    installed packages for every later test."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run_python(code: str, **kwargs) -> str:
    """Runs ``python -c CODE`` from outside the source tree (as ``run_streamtag`` does, and for
    the same reason) and returns its standard output; a failure raises with its stderr."""
    kwargs.setdefault("cwd", tempfile.gettempdir())
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"python -c failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


_HANDED_OUT: set[int] = set()


def _outside_ephemeral() -> list[range]:
    """Port ranges the kernel never gives an outgoing connection's local end."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
    except (OSError, ValueError):
        low, high = 32768, 60999    # Linux's default
    ranges = [range(10000, low), range(high + 1, 65536)]
    return [r for r in ranges if len(r) >= 1000]


def _worker_share() -> tuple[int, int]:
    """(this pytest-xdist worker's number, the number of workers); (0, 1) in one process."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return (int(name[2:]) if name[2:].isdigit() else 0) % max(count, 1), max(count, 1)


def free_port() -> int:
    """A port nobody listens on, for a server the test starts later.

    Asking the kernel for port 0 would give a port from its ephemeral range; once released, that
    port can become the local end of any outgoing connection (ffmpeg feeding Icecast, a proxy's
    upstream) before the test's server binds it. So the port comes from outside that range, and
    no port is handed out twice in one test run: each worker process of the run hands out its
    own share of the ports (those equal to its number modulo the number of workers)."""
    ranges = _outside_ephemeral()
    worker, workers = _worker_share()
    for _ in range(500):
        if ranges:
            port = random.choice(random.choice(ranges))
            if port % workers != worker:
                continue
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free TCP port on 127.0.0.1 after 500 tries")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def decodes_or_refuses(frames) -> None:
    """The decoder's contract: it refuses with ProtocolError, or whatever it accepts survives
    a round trip unchanged."""
    try:
        message = decode(frames)
    except ProtocolError:
        return
    assert isinstance(message, Message)
    assert decode(encode(message)) == message


def feed(options: LogMelOptions, x: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, int]:
    """``x`` through a fresh ``OnlineLogMel`` in chunks of ``sizes`` (the rest in one last
    chunk), popping after each: every frame, and the count of non-finite samples."""
    fe = OnlineLogMel(options)
    out, i = [], 0
    for size in sizes:
        fe.accept_waveform(x[i: i + size])
        out.append(fe.pop())
        i += size
    fe.accept_waveform(x[i:])
    fe.input_finished()
    out.append(fe.pop())
    return np.concatenate(out), fe.nonfinite_samples


# -- the daemon in process, on 127.0.0.1 ----------------------------------------------------


def make_config(model_path, tmp_path, **changes) -> DaemonConfig:
    base = DaemonConfig(
        model=ModelConfig(path=str(model_path), device="cpu"),
        publish=PublishConfig(endpoint=f"tcp://127.0.0.1:{free_port()}", heartbeat_s=0.1),
        control=ControlConfig(endpoint=f"tcp://127.0.0.1:{free_port()}",
                              # the session's pytest temp root: every test file lies below it
                              file_roots=(str(tmp_path.parent.parent), )),
        smoothing=SmoothingConfig(time_constant_s=0, margin=0, min_on_s=0, min_off_s=0),
        engine=EngineConfig(max_wait_ms=5))
    return DaemonConfig(**{**base.__dict__, **changes})


def collect(sub: Subscriber, streams: set[str], timeout_s: float = 60.0) -> list:
    """Messages until every stream in `streams` has published a final status."""
    done: set[str] = set()
    got = []
    deadline = time.monotonic() + timeout_s
    while done != streams and time.monotonic() < deadline:
        msg = sub.recv(200)
        if msg is None:
            continue
        got.append(msg)
        if msg.header.msg_type == "status" and msg.body.state in ("ended", "failed"):
            done.add(msg.header.stream)
    assert done == streams, f"no final status for {streams - done}"
    return got


def wait_for_heartbeat(sub: Subscriber) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = sub.recv(200)
        if msg is not None and msg.header.msg_type == "heartbeat":
            return
    raise AssertionError("no heartbeat: the subscription never became active")


def assert_no_gaps(messages) -> None:
    """seq counts per topic (stream and kind), one up each time."""
    by_topic: dict[str, list[int]] = {}
    for m in messages:
        by_topic.setdefault(m.topic, []).append(m.header.seq)
    for topic, seqs in by_topic.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), topic


def offline(model_path, path) -> np.ndarray:
    model = InferenceModel.load(model_path, device="cpu")
    audio, _ = load_audio(path, model.sample_rate)
    frames = compute_logmel(audio, model.frontend)
    ends = list(range(model.window, len(frames) + 1, model.hop))
    if len(frames) > ends[-1]:
        ends.append(len(frames))
    return model.forward(np.stack([frames[e - model.window: e].T for e in ends]))


def started(config: DaemonConfig) -> tuple[Daemon, Subscriber]:
    daemon = Daemon(config).start()
    sub = Subscriber(daemon.publisher.endpoint)
    wait_for_heartbeat(sub)
    return daemon, sub


# -- the trainer tests' recipes ---------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def tiny_recipe(name: str, root, cache, **sections: dict) -> str:
    """The skeleton every trainer test's recipe shares, as TOML text: the synthetic benchmark
    in ``root``, the musicnn preset at hop 512, seed 0, deterministic, on the CPU, features
    cached in ``cache``. ``sections`` add or replace keys section by section (``data``,
    ``frontend``, ``model``, ``model_options`` for ``[model.options]``, ``train``, ...); a key
    set to None is left out."""
    recipe = {"data": {"kind": "synthetic", "root": str(root)},
              "frontend": {"preset": "musicnn", "hop_length": 512},
              "model": {}, "model_options": {},
              "train": {"cache_dir": str(cache), "seed": 0, "deterministic": True,
                        "device": "cpu"}}
    for section, values in sections.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    lines = [f"name = {_toml_value(name)}"]
    for section, values in recipe.items():
        lines.append(f"[{section.replace('_', '.')}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def cp_resnet_recipe(name: str, synthetic_root, cache, *, n_clips: int, clip_seconds: float,
                     n_mels: int, window: int, base_channels: int, batch_size: int,
                     windows_per_track: int) -> str:
    """``tiny_recipe`` for a small CP-ResNet trained 4 epochs at a learning rate of 3e-3 on
    ``n_clips`` synthetic clips of ``clip_seconds`` (in the folder that the ``synthetic_root``
    fixture gives for them), on windows of ``window`` frames every half window."""
    return tiny_recipe(
        name, synthetic_root(n_clips, clip_seconds), cache,
        data={"n_clips": n_clips, "synthetic": {"clip_seconds": clip_seconds}},
        frontend={"n_mels": n_mels},
        model={"architecture": "cp_resnet", "window": window, "hop": window // 2},
        model_options={"base_channels": base_channels},
        train={"epochs": 4, "batch_size": batch_size, "windows_per_track": windows_per_track,
               "lr": 3e-3})


class Feed:
    """A subscriber read in a thread: every message with its arrival time (a proxy's feed or a
    supervisor's, watched for pauses)."""

    def __init__(self, endpoint: str) -> None:
        self.subscriber = Subscriber(endpoint)
        self.messages: list[tuple[float, object]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.subscriber.recv(100)
            if message is not None:
                with self._lock:
                    self.messages.append((time.monotonic(), message))

    def of(self, kind: str, since: float = 0.0) -> list[tuple[float, object]]:
        with self._lock:
            return [(t, m) for t, m in self.messages
                    if t >= since and m.header.msg_type == kind]

    def count(self, stream: str, session: str | None = None, since: float = 0.0) -> int:
        return sum(m.header.stream == stream and (session is None or m.header.session == session)
                   for _, m in self.of("scores", since))

    def advanced(self, streams, since: float, count: int) -> bool:
        return all(self.count(s, since=since) >= count for s in streams)

    def longest_pause(self, stream: str, since: float, until: float) -> float:
        times = [since] + [t for t, m in self.of("scores", since)
                           if m.header.stream == stream and t <= until] + [until]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def sessions_of(self, streams, since: float) -> dict[str, str]:
        """Each stream's session in the scores since ``since``, checking that exactly the
        streams of ``streams`` were heard, each under one session (from one daemon)."""
        seen: dict[str, set[str]] = collections.defaultdict(set)
        for _, m in self.of("scores", since):
            seen[m.header.stream].add(m.header.session)
        assert set(seen) == set(streams), f"streams never seen: {set(streams) - set(seen)}"
        for stream, its in seen.items():
            assert len(its) == 1, f"{stream} came under {len(its)} sessions"
        return {stream: next(iter(its)) for stream, its in seen.items()}

    def assert_seq_unbroken(self) -> None:
        """Under each session, seq counts up by one per topic of scores; the subscriber saw
        no gap."""
        by_topic: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
        for _, m in self.of("scores"):
            by_topic[m.header.session, m.topic].append(m.header.seq)
        for (session, topic), seqs in by_topic.items():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (session[:8], topic)
        assert self.subscriber.gaps == 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.subscriber.close()


class OggStation:
    """An HTTP station on 127.0.0.1 that plays ``data`` (Ogg, ``seconds`` long) at ``url``,
    paced at real time: once, or looped until closed (``loop``), named by ``icy-name`` when
    given a ``name``. It answers 404 until ``serve`` is set (set at once unless
    ``serving=False``); ``requests`` counts the GETs."""

    def __init__(self, data: bytes, seconds: float, *, loop: bool = False,
                 name: str | None = None, serving: bool = True) -> None:
        owner = self
        self.serve, self.cut = threading.Event(), threading.Event()
        if serving:
            self.serve.set()
        self.requests = 0
        bytes_per_s = len(data) / seconds

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                if not owner.serve.is_set():
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/ogg")
                if name is not None:
                    self.send_header("icy-name", name)
                self.end_headers()
                t0, sent = time.monotonic(), 0
                while not owner.cut.is_set() and (loop or sent < len(data)):
                    start = sent % len(data)
                    piece = data[start:start + 4096]
                    try:
                        self.wfile.write(piece)
                    except OSError:
                        return
                    sent += len(piece)
                    owner.cut.wait(max(0.0, t0 + sent / bytes_per_s - time.monotonic()))

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ogg"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        """Stops the server and cuts the plays under way."""
        self.cut.set()
        self.server.shutdown()
        self.server.server_close()


def daemon_config_file(path: Path, model: Path, audio: Path, streams, *, publish: str,
                       connect: bool = False, sections: str = "", max_wait_ms: int | None = 5,
                       loop: bool = False) -> Path:
    """A daemon's TOML config written to ``path``: ``model`` on the CPU; publishing on
    ``publish`` (connecting to it: ``connect``) with a heartbeat every 0.2 s; ``sections``
    (TOML text) as they are; batches waiting ``max_wait_ms`` at most (None: the default); and
    for each id in ``streams`` a ``file:`` source of ``audio`` at real speed, ``loop``ed when
    asked."""
    path.write_text(
        f'[model]\npath = "{model}"\ndevice = "cpu"\n\n'
        f'[publish]\nendpoint = "{publish}"\n' + ("connect = true\n" if connect else "")
        + "heartbeat_s = 0.2\n\n" + sections
        + ("" if max_wait_ms is None else f"[engine]\nmax_wait_ms = {max_wait_ms}\n\n")
        + "".join(f'[[sources]]\nid = "{sid}"\nspec = "file:{audio}"\nrealtime = true\n'
                  + ("loop = true\n" if loop else "") + "\n" for sid in streams))
    return path


def is_ready(metrics_port: int) -> bool:
    """Whether a daemon's (or supervisor's) /readyz answers 200 on 127.0.0.1."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz",
                                    timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def http_get(port: int, path: str) -> tuple[int, str]:
    """The status code and body of GET http://127.0.0.1:PORT/PATH (503 is an answer too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


class WindowsSink(EngineSink):
    """An engine's sink that keeps every scored window, in the order they came (from any
    worker); stream ends are not kept."""

    def __init__(self) -> None:
        self.results: list[WindowResult] = []
        self.lock = threading.Lock()

    def on_window(self, result: WindowResult) -> None:
        with self.lock:
            self.results.append(result)

    def on_stream_end(self, stream_id: str, events: list, end_s: float) -> None:
        pass
