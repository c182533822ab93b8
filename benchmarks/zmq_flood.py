"""A daemon's ZeroMQ ports flooded with idle peers past its open-files limit: what it holds,
what it spends, and whether a subscriber, a signed control request, its probe and its station
are served meanwhile (docs/security.md, "ZeroMQ port limits").

A real ``streamtag run`` (the tiny test model, one looped file station, the metrics port) runs
under an open-files limit of `--files` (1,024: a common default), soft and hard, so it cannot
raise it; this process connects `--peers` ZeroMQ SUB sockets to its feed and as many DEALER
sockets to its control port, from eight loopback addresses, each of which greets and then says
nothing (and connects again when ended). Printed, over `--seconds` of flood: the daemon's
descriptors (most and at the end), its CPU (share of a core, /proc), how long a subscriber
that joins during the flood takes to hear the station, how long `streamtag status` and
/healthz take to answer, and the log's tracebacks and "Too many open files".

    python benchmarks/zmq_flood.py [--peers 1050] [--files 1024] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import zmq  # noqa: E402
from support.helpers import (  # noqa: E402
    Feed,
    daemon_config_file,
    free_port,
    is_ready,
    tiny_model_file,
)

from streamtag.audio.files import write_audio  # noqa: E402
from streamtag.audio.testsignals import music_like  # noqa: E402


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(action) -> float | None:
    start = time.monotonic()
    try:
        return time.monotonic() - start if action() else None
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1050)
    parser.add_argument("--ports", choices=("feed", "control", "both"), default="both",
                        help="which port the peers go to (both: --peers to each)")
    parser.add_argument("--files", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this side's sockets
    with tempfile.TemporaryDirectory(prefix="streamtag-zmq-flood-") as folder:
        root = Path(folder)
        publish, control = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
        port = free_port()
        audio = root / "station.flac"
        write_audio(audio, music_like(20.0, 16000, seed=5), 16000)
        token = root / "control.token"
        config = daemon_config_file(
            root / "daemon.toml", tiny_model_file(root / "tiny.pt"), audio, ["honest"],
            publish=publish, loop=True,
            sections=(f"[metrics]\nport = {port}\n\n[control]\nendpoint = \"{control}\"\n"
                      f"token_file = \"{token}\"\n\n"))
        limit = (args.files, args.files)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMTAG_HOME": str(root / "home")}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "streamtag", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=folder, env=env,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit))
        contexts: list[zmq.Context] = []  # a context holds 1,023 sockets: a new one a 1,000
        peers: list[zmq.Socket] = []
        late = None
        try:
            deadline = time.monotonic() + 120
            while not is_ready(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)
            before = descriptors(daemon.pid)
            ports = {"feed": ((zmq.SUB, publish),), "control": ((zmq.DEALER, control),)}
            for kind, endpoint in ports.get(args.ports, ports["feed"] + ports["control"]):
                for i in range(args.peers):
                    if len(peers) % 1000 == 0:
                        contexts.append(zmq.Context())
                    peer = contexts[-1].socket(kind)
                    peer.setsockopt(zmq.LINGER, 0)
                    peer.connect(f"tcp://127.0.0.{2 + i % 8}:0;{endpoint[len('tcp://'):]}")
                    peers.append(peer)
            flooded, cpu_before = time.monotonic(), cpu_s(daemon.pid)
            most = descriptors(daemon.pid)
            late = Feed(publish)
            heard = None
            while time.monotonic() < flooded + args.seconds:
                most = max(most, descriptors(daemon.pid))
                if heard is None and late.count("honest") > 0:
                    heard = time.monotonic() - flooded
                time.sleep(0.1)
            share = (cpu_s(daemon.pid) - cpu_before) / (time.monotonic() - flooded)
            status = timed(lambda: subprocess.run(
                [sys.executable, "-m", "streamtag", "status", "--control", control,
                 "--token-file", str(token)], capture_output=True, timeout=30,
                env=env, cwd=folder).returncode == 0)
            healthz = timed(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=10).status == 200)
            at_end = descriptors(daemon.pid)
        finally:
            for peer in peers:
                peer.close(linger=0)
            for context in contexts:
                context.term()
            if late is not None:
                late.close()
            daemon.terminate()
            stderr = daemon.communicate(timeout=30)[1]

    def shown(seconds: float | None) -> str:
        return "no answer" if seconds is None else f"{seconds * 1000:.0f} ms"

    where = {"feed": "SUB peers on the feed", "control": "DEALER peers on control",
             "both": "SUB peers on the feed and as many DEALER peers on control"}[args.ports]
    print(f"open-files limit {args.files}; {args.peers} idle {where}, from 8 addresses, "
          f"for {args.seconds:g} s")
    print(f"descriptors: {before} before, {most} at most, {at_end} at the end")
    print(f"daemon CPU during the flood: {share:.2f} of a core")
    print(f"a subscriber joining in the flood heard the station after {shown(heard)}")
    print(f"streamtag status: {shown(status)}; /healthz: {shown(healthz)}")
    print(f"daemon log: {stderr.count('Traceback')} tracebacks, "
          f"{stderr.count('Too many open files')} 'Too many open files', "
          f"{len(stderr.splitlines())} lines")


if __name__ == "__main__":
    main()
