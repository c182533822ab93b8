"""The daemon's memory and start-up, with and without torch, side by side in one run.

For each configuration (``--trees``: source trees or installed packages, each run with
``PYTHONPATH`` pointing at it, so an older checkout is "today's" and this one is the new; the
trees named by ``--block-torch`` also run with torch made unimportable, as on a machine without
it) and each stream count (``--streams 1 4 64 256``), ``streamtag run`` is started as a
user starts it, with N live ``file:`` sources (``--realtime``: real time, a window every
``hop``) of one music-like MP3, and a subscriber counts its scores. Reported:

- start to first window: seconds from starting the process to the first scores message (its
  imports, the model's load and checks, the first window's audio: the default model's window
  is 3 s of audio, so about 3 s of it is the audio itself, the same for every configuration);
- RSS: the daemon's resident memory (``VmRSS``) once every stream has published scores and
  ``--settle`` more seconds have passed; the per-stream figure is the growth from 1 stream.

Configurations run in turn for each stream count, ``--repeats`` times; the median is printed.
Nothing here asserts anything.

    python benchmarks/memory.py --trees OLD_CHECKOUT . --block-torch . [--streams 1 4 64 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

BLOCK = ("import sys\nsys.modules['torch'] = None\n"
         "from streamtag.cli import main\nsys.exit(main(sys.argv[1:]))\n")
PLAIN = "import sys\nfrom streamtag.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(tree: str, blocked: bool, streams: int, audio: Path, settle: float,
            timeout: float) -> tuple[float, float]:
    """(seconds to the first window, RSS in MB with every stream serving)."""
    feed = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(feed)
    sources = [a for i in range(streams) for a in ("--source", f"s{i}=file:{audio}")]
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BLOCK if blocked else PLAIN, "run",
                             "--realtime", "--control", "", "--publish", feed, *sources],
                            cwd=tempfile.gettempdir(), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    first, heard = None, set()
    try:
        deadline = time.monotonic() + timeout
        while len(heard) < streams and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon ended: {proc.stderr.read().decode()[-2000:]}")
            if not sub.poll(100):
                continue
            parts = sub.recv_multipart()
            if b'"msg_type":"scores"' in parts[-2] if len(parts) > 1 else False:
                first = first or time.perf_counter() - started
                heard.add(parts[0])
        if first is None or len(heard) < streams:
            raise RuntimeError(f"only {len(heard)} of {streams} streams published in time")
        time.sleep(settle)
        return first, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()
        sub.close(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", nargs="+", default=["."],
                        help="source trees (or folders holding an installed streamtag)")
    parser.add_argument("--block-torch", nargs="*", default=[], metavar="TREE",
                        help="also run these trees with torch unimportable")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 64, 256])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    from streamtag.audio.files import write_audio
    from streamtag.audio.testsignals import music_like

    folder = Path(tempfile.mkdtemp(prefix="streamtag-memory-"))
    audio = folder / "music.mp3"
    write_audio(audio, music_like(600.0, 44100, seed=1), 44100)
    configs = [(tree, False) for tree in args.trees]
    configs += [(tree, True) for tree in args.block_torch]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}")
    results: dict[tuple[str, bool], dict[int, tuple[float, float]]] = {c: {} for c in configs}
    for n in args.streams:
        runs: dict[tuple[str, bool], list[tuple[float, float]]] = {c: [] for c in configs}
        for _ in range(args.repeats):
            for config in configs:
                runs[config].append(one_run(*config, n, audio, args.settle, args.timeout))
        for config in configs:
            results[config][n] = (statistics.median(r[0] for r in runs[config]),
                                  statistics.median(r[1] for r in runs[config]))
    print(f"{'configuration':<44} {'streams':>7} {'first window s':>14} {'RSS MB':>8} "
          f"{'MB/stream':>9}")
    for config, by_n in results.items():
        name = f"{config[0]}{' (torch blocked)' if config[1] else ''}"
        base = by_n.get(min(by_n))
        for n, (first, rss) in sorted(by_n.items()):
            per = (rss - base[1]) / (n - min(by_n)) if n > min(by_n) else float("nan")
            print(f"{name:<44} {n:>7} {first:>14.2f} {rss:>8.1f} {per:>9.2f}")
    reference = configs[0]
    for config in configs[1:]:
        ratios = [results[config][n][1] / results[reference][n][1] for n in args.streams]
        print(f"RSS of {config[0]}{' (torch blocked)' if config[1] else ''} / {reference[0]}: "
              + ", ".join(f"{n}: {r:.2f}x" for n, r in zip(args.streams, ratios, strict=True)))
    print(f"load at the end {os.getloadavg()[0]:.2f}; RSS medians of {args.repeats} run(s)")


if __name__ == "__main__":
    main()
