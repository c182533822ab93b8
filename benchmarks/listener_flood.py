"""A daemon's metrics port flooded with idle half-sent requests: what it holds and whether its
probe is answered (docs/security.md, "Listener limits").

A real ``streamtag run`` (the tiny test model, one looped file station, the metrics port at its
default bounds) runs under an open-files limit of `--files` (1,024: a common default); this
process opens `--connections` connections to the port from eight loopback addresses, each
sending part of a request head and then nothing. Printed: the daemon's descriptors before,
during and 15 s after the flood (/proc/PID/fd), how long /healthz took to answer during the
flood (or that it did not within 5 s), the station's windows in the 5 s after the flood, and the
lines of the daemon's log that are tracebacks.

    python benchmarks/listener_flood.py [--connections 1000] [--files 1024]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.helpers import Feed, daemon_config_file, free_port, is_ready, tiny_model_file  # noqa: E402

from streamtag.audio.files import write_audio  # noqa: E402
from streamtag.audio.testsignals import music_like  # noqa: E402

HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def probe(port: int) -> float | None:
    """Seconds /healthz took to answer 200, or None."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return time.monotonic() - start if reply.status == 200 else None
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--files", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamtag-flood-") as folder:
        root = Path(folder)
        publish, port = f"tcp://127.0.0.1:{free_port()}", free_port()
        audio = root / "station.flac"
        write_audio(audio, music_like(20.0, 16000, seed=5), 16000)
        config = daemon_config_file(root / "daemon.toml", tiny_model_file(root / "tiny.pt"),
                                    audio, ["honest"], publish=publish, loop=True,
                                    sections=f"[metrics]\nport = {port}\n\n")
        limit = (args.files, args.files)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "streamtag", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=folder,
            env={**os.environ, "PYTHONPATH": str(ROOT), "STREAMTAG_HOME": str(root / "home")},
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit))
        feed = Feed(publish)
        flood: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 120
            while not is_ready(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)
            before = descriptors(daemon.pid)
            refused = 0
            for i in range(args.connections):
                sock = socket.socket()
                sock.settimeout(0.3)
                try:
                    sock.bind((f"127.0.0.{2 + i % 8}", 0))
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(HALF_SENT)
                    flood.append(sock)
                except OSError:
                    sock.close()
                    refused += 1
            flooded = time.monotonic()
            answered = probe(port)
            during = descriptors(daemon.pid)
            time.sleep(max(0.0, flooded + 5 - time.monotonic()))
            windows = feed.count("honest", since=flooded)
            time.sleep(10)
            after = descriptors(daemon.pid)
        finally:
            for sock in flood:
                sock.close()
            feed.close()
            daemon.terminate()
            stderr = daemon.communicate(timeout=30)[1]
        print(f"open-files limit {args.files}; {args.connections} half-sent connections "
              f"({refused} not taken by the kernel)")
        print(f"descriptors: {before} before, {during} during, {after} 15 s after")
        print("/healthz during the flood: "
              + (f"200 in {answered * 1000:.1f} ms" if answered is not None
                 else "no answer within 5 s"))
        print(f"station windows in the 5 s after the flood: {windows}")
        print(f"daemon log: {stderr.count('Traceback')} tracebacks, "
              f"{len(stderr.splitlines())} lines")


if __name__ == "__main__":
    main()
