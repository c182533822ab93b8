"""Soak: many streams, an hour of audio in total, through a real daemon at maximum speed.

A ``Daemon`` runs in this process; a subscriber runs in a child process (as real subscribers
do, with its own interpreter) and counts what it receives. The streams alternate between two
kinds of source, so decoding, resampling and pipes are all exercised:

- file: a generated music-like FLAC at 44.1 kHz of exactly its share of the audio (a 30 s piece
  repeated at alternating gain);
- pipe: raw float32 PCM at 48 kHz written by a thread into a real OS pipe, exactly its share.

Reported, and checked (exit status 1 when a check fails):

- memory: the process's resident set (VmRSS) after a warm-up (``--warmup``, default 10 % of the
  audio: the first batches, buffers and caches are allocated by then) and at the end, after
  every stream ended; growth must stay below ``--max-growth`` (5 %);
- windows: for every stream, the windows the daemon published (its final status) equal those
  expected for the samples it took (one every hop once a window is full, one more for the audio
  after the last, as the engine cuts them), and the subscriber received every one of them;
- loss: no sequence gap, invalid message or restart at the subscriber; no dropped or
  non-finite window.

    python benchmarks/soak.py                        # 8 streams, 3600 s of audio in total
    python benchmarks/soak.py --streams 8 --seconds-per-stream 30   # the test suite's version
    python benchmarks/soak.py --model path/to/model.pt --json

Speed figures (x real time) are printed for information; they depend on the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

FILE_RATE = 44100
PIPE_RATE = 48000
FILE_SECONDS = 30.0
TAGS = [f"tag{i}" for i in range(8)]


# -- the pieces -------------------------------------------------------------------------------


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def small_model(path: Path) -> Path:
    """A small convolutional tagger with random weights, as a real model file: the soak
    measures the daemon, not the network (give --model for a real one)."""
    import torch
    from torch import nn

    from streamtag.frontend import LogMelOptions
    from streamtag.model import modelfile

    class SoakTagger(nn.Module):
        def __init__(self, n_mels: int, n_tags: int) -> None:
            super().__init__()
            self.conv = nn.Conv1d(n_mels, 16, kernel_size=5, padding=2)
            self.head = nn.Linear(32, n_tags)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x * 0.1))
            return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))

    torch.manual_seed(0)
    frontend = LogMelOptions.preset("musicnn")
    modelfile.save(SoakTagger(frontend.n_mels, len(TAGS)), path, {
        "name": "soak", "tags": TAGS, "input_kind": "logmel", "frontend": frontend,
        "window": 64, "hop": 16, "thresholds": [0.5] * len(TAGS),
        "architecture": {"name": "soak"}, "recipe": "random weights: benchmarks/soak.py"})
    return path


def expected_windows(samples: int, model) -> int:
    """Windows the engine cuts from a stream of `samples` samples (see engine._Framer)."""
    from streamtag.frontend import OnlineLogMel

    frames = OnlineLogMel(model.frontend).num_frames_for(samples) if samples else 0
    if frames == 0:
        return 0
    if frames < model.window:
        return 1
    regular = (frames - model.window) // model.hop + 1
    return regular + (frames > model.window + (regular - 1) * model.hop)


class PipeFeeder:
    """Writes `seconds` of float32 PCM at PIPE_RATE into a real OS pipe from a thread."""

    def __init__(self, seconds: float, seed: int) -> None:
        from streamtag.audio.testsignals import music_like

        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
        self._block = music_like(10.0, PIPE_RATE, seed=seed)  # repeated, at varying gain
        self._frames = int(round(seconds * PIPE_RATE))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            left, gain = self._frames, 1.0
            while left > 0:
                part = self._block[: min(left, self._block.size)] * np.float32(gain)
                self._writer.write(part.astype("<f4").tobytes())
                left -= part.size
                gain = 0.3 if gain == 1.0 else 1.0
        except OSError:
            pass  # the reader went away (the daemon stopped early)
        finally:
            self._writer.close()

    def close(self) -> None:
        self.reader.close()
        self._thread.join(10)


# -- the subscriber (child process) -----------------------------------------------------------


def subscriber_main(endpoint: str, ids: list[str], timeout_s: float) -> int:
    """Counts what arrives until every stream published its final status; prints JSON."""
    from streamtag.wire.protocol import HeartbeatBody, ScoresBody, StatusBody
    from streamtag.wire.subscriber import Subscriber

    sub = Subscriber(endpoint, rcvhwm=100000)
    deadline = time.monotonic() + 30
    while True:  # subscribed once a heartbeat arrives
        msg = sub.recv(200)
        if msg is not None and isinstance(msg.body, HeartbeatBody):
            break
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no heartbeat"}), flush=True)
            return 1
    print("ready", flush=True)
    streams: dict[str, dict[str, Any]] = {
        i: {"scores": 0, "first_seq": None, "last_seq": None, "final": None} for i in ids}
    done: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while done != set(ids) and time.monotonic() < deadline:
        msg = sub.recv(500)
        if msg is None or msg.header.stream not in streams:
            continue
        s = streams[msg.header.stream]
        match msg.body:
            case ScoresBody():
                s["scores"] += 1
                s["first_seq"] = msg.header.seq if s["first_seq"] is None else s["first_seq"]
                s["last_seq"] = msg.header.seq
            case StatusBody(state="ended" | "failed" as state, error=error, counters=counters):
                s["final"] = {"state": state, "error": error, "counters": dict(counters or {})}
                done.add(msg.header.stream)
    print(json.dumps({"streams": streams, "gaps": sub.gaps, "missed": sub.missed,
                      "invalid": sub.invalid, "restarts": sub.restarts,
                      "received": sub.received, "complete": done == set(ids)}), flush=True)
    sub.close()
    return 0


# -- the soak ---------------------------------------------------------------------------------


def run_soak(streams: int = 8, seconds_per_stream: float = 450.0, model: str | None = None,
             warmup: float = 0.1, max_growth: float = 0.05, timeout_s: float = 3600.0,
             log=None) -> dict[str, Any]:
    """Runs the soak; returns the figures and the failed checks (empty when all passed)."""
    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like
    from streamtag.daemon.config import (
        ControlConfig,
        DaemonConfig,
        ModelConfig,
        PublishConfig,
        SourceConfig,
    )
    from streamtag.daemon.daemon import Daemon

    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    work = Path(tempfile.mkdtemp(prefix="streamtag-soak-"))
    model_path = Path(model) if model else small_model(work / "soak.pt")
    music = work / "music.flac"
    piece = music_like(FILE_SECONDS, FILE_RATE, seed=1)
    frames = int(round(seconds_per_stream * FILE_RATE))
    gains = np.resize(np.repeat(np.float32([1.0, 0.4]), piece.size), 2 * piece.size)
    write_audio(music, np.resize(piece, frames) * np.resize(gains, frames), FILE_RATE)
    config = DaemonConfig(model=ModelConfig(path=str(model_path), device="cpu"),
                          publish=PublishConfig(endpoint=free_endpoint(), heartbeat_s=0.5),
                          control=ControlConfig(endpoint=""))
    daemon = Daemon(config).start()
    model_info = daemon.model
    ids = [f"{'file' if i % 2 == 0 else 'pipe'}{i}" for i in range(streams)]
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--subscribe",
         daemon.publisher.endpoint, "--ids", ",".join(ids), "--timeout", str(timeout_s)],
        stdout=subprocess.PIPE, text=True)
    feeders: list[PipeFeeder] = []
    budget = int(round(seconds_per_stream * model_info.sample_rate))
    rss: list[tuple[float, int, int]] = []  # (time, samples taken in all, RSS KiB)
    result: dict[str, Any] = {"streams": streams, "seconds_per_stream": seconds_per_stream,
                              "model": model_info.name, "failures": []}
    try:
        ready = child.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"the subscriber did not start: {ready!r}")
        rss_idle = rss_kib()
        t0 = time.monotonic()
        for i, sid in enumerate(ids):
            if sid.startswith("file"):
                daemon.add_source(SourceConfig(sid, str(music)))
            else:
                feeders.append(PipeFeeder(seconds_per_stream, seed=10 + i))
                daemon.add_source(SourceConfig(sid, "pipe:", {
                    "format": "f32le", "rate": PIPE_RATE, "stream": feeders[-1].reader}))
        next_report = t0 + 10
        while not daemon.idle():
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"the soak did not finish within {timeout_s} s")
            status = daemon.status()["streams"]
            taken = {sid: s["counters"].get("samples", 0) for sid, s in status.items()}
            rss.append((time.monotonic() - t0, sum(taken.values()), rss_kib()))
            if time.monotonic() >= next_report:
                next_report += 10
                done = sum(taken.values()) / model_info.sample_rate
                say(f"soak: {done:8.0f} s of audio, RSS {rss[-1][2] / 1024:7.1f} MiB, "
                    f"{done / (time.monotonic() - t0):6.0f}x real time")
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        final = daemon.status()
        rss_end = rss_kib()
        out, _ = child.communicate(timeout=120)
        received = json.loads(out.strip().splitlines()[-1])
    finally:
        daemon.stop()
        for feeder in feeders:
            feeder.close()
        if child.poll() is None:
            child.kill()
            child.communicate()
    total = sum(s["counters"]["samples"] for s in final["streams"].values())
    warm = next((kib for _, taken, kib in rss if taken >= warmup * streams * budget),
                rss[-1][2] if rss else rss_end)
    result.update({
        "audio_s": total / model_info.sample_rate, "elapsed_s": elapsed,
        "x_real_time": total / model_info.sample_rate / elapsed,
        "rss_idle_mib": rss_idle / 1024, "rss_start_mib": warm / 1024,
        "rss_end_mib": rss_end / 1024,
        "rss_max_mib": max([rss_end, *(k for *_, k in rss)]) / 1024,
        "rss_growth": rss_end / warm - 1.0,
        "windows_expected": 0, "windows_published": 0, "windows_received": 0,
        "subscriber": {k: received.get(k) for k in ("gaps", "missed", "invalid", "restarts",
                                                     "received", "complete")}})
    failures = result["failures"]
    if result["rss_growth"] >= max_growth:
        failures.append(f"RSS grew {result['rss_growth']:.1%} from {warm / 1024:.1f} MiB "
                        f"(limit {max_growth:.0%})")
    for key in ("gaps", "invalid", "restarts"):
        if received.get(key):
            failures.append(f"the subscriber saw {received[key]} {key}")
    if not received.get("complete"):
        failures.append("the subscriber did not see every stream's final status")
    for sid in ids:
        info = final["streams"][sid]
        counters = info["counters"]
        expected = expected_windows(counters["samples"], model_info)
        got = received["streams"][sid]
        result["windows_expected"] += expected
        result["windows_published"] += counters.get("windows", 0)
        result["windows_received"] += got["scores"]
        if info["state"] != "ended":
            failures.append(f"{sid}: {info['state']} ({info['error']})")
        if abs(counters["samples"] - budget) > 4:  # resampling rounds at the very end
            failures.append(f"{sid}: {counters['samples']} samples, not {budget}")
        if not (counters.get("windows") == expected == got["scores"]):
            failures.append(f"{sid}: {expected} windows expected, {counters.get('windows')} "
                            f"published, {got['scores']} received")
        if got["scores"] and (got["first_seq"], got["last_seq"]) != (0, got["scores"] - 1):
            failures.append(f"{sid}: scores seq {got['first_seq']}..{got['last_seq']} for "
                            f"{got['scores']} messages")
        for key in ("dropped_windows", "nonfinite_windows", "nonfinite"):
            if counters.get(key):
                failures.append(f"{sid}: {key} = {counters[key]}")
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        f"soak: {result['streams']} streams x {result['seconds_per_stream']:g} s "
        f"({result['audio_s']:.0f} s of audio) in {result['elapsed_s']:.1f} s, "
        f"{result['x_real_time']:.0f}x real time, model {result['model']}",
        f"  RSS: {result['rss_idle_mib']:.1f} MiB idle, {result['rss_start_mib']:.1f} MiB after "
        f"warm-up, {result['rss_end_mib']:.1f} MiB at the end ({result['rss_growth']:+.2%}), "
        f"max {result['rss_max_mib']:.1f} MiB",
        f"  windows: {result['windows_expected']} expected, {result['windows_published']} "
        f"published, {result['windows_received']} received",
        f"  subscriber: {result['subscriber']}",
    ]
    failures = result["failures"]
    lines.append("  FAILED: " + "; ".join(failures) if failures else "  all checks passed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--total-seconds", type=float, default=3600.0,
                        help="audio in all streams together (default: one hour)")
    parser.add_argument("--seconds-per-stream", type=float,
                        help="instead of --total-seconds: the audio of each stream")
    parser.add_argument("--model", help="a model file (default: a small random-weight tagger)")
    parser.add_argument("--warmup", type=float, default=0.1,
                        help="fraction of the audio after which the start RSS is taken")
    parser.add_argument("--max-growth", type=float, default=0.05,
                        help="allowed RSS growth from the warm-up to the end (0.05: 5 %%)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--subscribe", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscribe:
        return subscriber_main(args.subscribe, args.ids.split(","), args.timeout)
    import torch

    torch.set_num_threads(1)
    per_stream = args.seconds_per_stream or args.total_seconds / args.streams
    result = run_soak(args.streams, per_stream, args.model, args.warmup, args.max_growth,
                      args.timeout)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
