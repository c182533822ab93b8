"""The recorder's throughput into SQLite and PostgreSQL, and the database size per stream-day.

A real ``streamtag record`` process, pinned to one CPU core, records what a Publisher in this
process sends: 64 streams of a 56-tag model (the mood/theme model's size), one scores message
per window, one window per second per stream, plus the tag events (0.54 a window, a tag
flipping every 20-75 windows; `--hold 7`: 0.08, as musicnn-msd's 50 tags flip on real music;
`--tags 13 --hold 0.57`: the default model's 13 tags and 0.36 events a window, as they flip on
real music, docs/history.md). That load is 64 windows a second; the target is to sustain at
least 20 times it on one core.

Measured per database:
- burst: every message of `--windows` windows per stream, encoded first and then sent as fast
  as ZeroMQ takes them (so that the recorder, not this process's encoding, sets the pace);
  messages per second from the first send to the last commit (wall clock), and per CPU-second
  of the recorder (its user + system time; steadier on a shared machine). Checked: every
  message stored once.
- real time: `--realtime-s` seconds at the real load (64 windows a second); the share of one
  core the recorder used, and the headroom (how many times the load that core would take).
- size: bytes on disk per window, scaled to a stream-day (86,400 windows and their events).
- bytes per window before and after: the same windows (`--size-streams` streams of a 50-tag
  model with loudness on, an hour each) written one row per window as schema revision 0008
  stored them, and packed in blocks with their rollups as the recorder stores them now. Two
  materials: tagger-like scores (each tag's logit a slow random walk around its own level,
  as overlapping windows give) and uniform random scores (nothing to compress: the worst case).

- windows per CPU-second: the burst's scores messages (one per window) per CPU-second of the
  recorder, the figure a fleet's recorders are sized by.

    python benchmarks/record.py                      # SQLite and a throwaway PostgreSQL
    python benchmarks/record.py --postgres postgresql://user@host/db --json
    python benchmarks/record.py --databases sqlite --windows 60
    python benchmarks/record.py --sizes-only         # the before/after table alone

Before and after a change, side by side in one run: --compare PATH runs the recorder of the
streamtag checkout at PATH as well (a folder, or a git revision such as ``main``, which is
written to a temporary folder), alternating the two ``--rounds`` times per database, and
prints each one's median windows per CPU-second for each database:

    python benchmarks/record.py --compare main --rounds 3 --realtime-s 0

PostgreSQL: without --postgres, a cluster is started from Debian's server binaries (as in
the tests); without them, PostgreSQL is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamtag.history import blocks, schema  # noqa: E402
from streamtag.wire.protocol import EventBody, ScoresBody, make_message  # noqa: E402
from streamtag.wire.publisher import Publisher  # noqa: E402

STREAMS = 64
N_TAGS = 56
TAGS = tuple(f"tag{i:02d}" for i in range(N_TAGS))
MODEL = {"name": "mood-theme-56", "hash": "sha256:benchmark"}
LOAD_PER_S = STREAMS  # one window a second per stream
TARGET = 20
# How often the benchmark asks the recorder how much it wrote: each scrape costs the recorder
# CPU time, which counts against it.
SCRAPE_EVERY_S = 0.1


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_messages(session: str, windows: range, seq: dict, active: list,
                   hold: float = 1, n_tags: int = N_TAGS) -> list[list]:
    """Per window, every stream's scores of an ``n_tags``-tag model and an event when a tag
    flips; deterministic. Tag j is on for one run of (20 + j) * hold windows (at least one)
    in five: 0.54 events a window at hold 1 with 56 tags."""
    out = []
    rng = np.random.default_rng(windows.start)
    tags = tuple(f"tag{i:02d}" for i in range(n_tags))  # TAGS at the default
    model = MODEL if n_tags == N_TAGS else {**MODEL, "name": f"benchmark-{n_tags}"}
    runs = [max(1, round((20 + j) * hold)) for j in range(n_tags)]
    for i in windows:
        messages = []
        out.append(messages)
        for k in range(STREAMS):
            stream = f"station-{k:02d}"
            raw = np.round(rng.random(n_tags), 6)
            now = {tags[j] for j in range(n_tags) if (i // runs[j] + k) % 5 == 0}
            for tag in sorted(now ^ active[k]):
                topic = f"event.{stream}"
                messages.append(make_message(EventBody(
                    tag=tag, state="on" if tag in now else "off", score=0.5, time_s=i + 3.0,
                    sample=(i + 3) * 16000), session=session, stream=stream,
                    seq=seq.setdefault(topic, 0)))
                seq[topic] += 1
            active[k] = now
            topic = f"scores.{stream}"
            messages.append(make_message(ScoresBody(
                start_s=float(i), end_s=i + 3.0, start_sample=i * 16000,
                end_sample=(i + 3) * 16000, tags=tags, raw=raw.tolist(),
                smoothed=np.round(raw * 0.9, 6).tolist(), active=sorted(now), model=model,
                latency_ms=12.5), session=session, stream=stream,
                seq=seq.setdefault(topic, 0)))
            seq[topic] += 1
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_written(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("streamtag_record_written_messages_total "):
            return float(line.split()[1])
    return 0.0


def wait_written(port: int, count: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if scrape_written(port) >= count:
            return time.perf_counter()
        time.sleep(SCRAPE_EVERY_S)
    raise SystemExit(f"the recorder did not write {count} messages within {timeout_s} s")


def db_bytes(engine: sa.Engine, url: str) -> int:
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(schema.normalise_url(url).database)
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_database_size(current_database())"))
                   .scalar())


def bench(url: str, windows: int, realtime_s: float, core: int | None,
          code: Path = ROOT, hold: float = 1, n_tags: int = N_TAGS) -> dict:
    """One recorder (of the streamtag checkout at ``code``) into a fresh database at ``url``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    imported = subprocess.run(
        [sys.executable, "-c", "import streamtag.history.recorder as r; print(r.__file__)"],
        env=env, cwd=code, capture_output=True, text=True).stdout.strip()
    if not Path(imported).is_relative_to(code):
        # an editable install's import hook comes before the path: both would run its code
        raise SystemExit(f"the recorder of {code} would import {imported or 'nothing'}; "
                         "install streamtag with `pip install .`, not editable, to compare")
    # the recorder's own code makes its schema (another checkout's may differ)
    # (run in its folder: ``python -m`` puts the working folder first on the path)
    subprocess.run([sys.executable, "-m", "streamtag", "record", "--db", url, "--upgrade"],
                   env=env, cwd=code, check=True, capture_output=True)
    engine = schema.create_db_engine(url)
    empty_bytes = db_bytes(engine, url)
    publisher = Publisher("tcp://127.0.0.1:*", sndhwm=0)
    port = free_port()
    preexec = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    recorder = subprocess.Popen(
        [sys.executable, "-m", "streamtag", "record", "--connect", publisher.endpoint,
         "--db", url, "--metrics-port", str(port)], env=env, cwd=code, preexec_fn=preexec,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seq: dict[str, int] = {}
    active = [set() for _ in range(STREAMS)]
    try:
        deadline = time.monotonic() + 60
        while True:  # heartbeats until the recorder has one: it is subscribed
            try:
                if scrape_written(port) >= 1:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or recorder.poll() is not None:
                raise SystemExit(f"the recorder did not start: {recorder.stderr.read()}")
            publisher.heartbeat(STREAMS)
            time.sleep(0.1)
        baseline = scrape_written(port)

        burst = [m for window in build_messages(publisher.session, range(0, windows), seq,
                                                active, hold, n_tags) for m in window]
        with publisher.held():  # encoded first, then sent as fast as ZeroMQ takes them
            for message in burst:
                publisher.send_message(message)
            cpu0 = cpu_seconds(recorder.pid)
            t0 = time.perf_counter()
        t1 = wait_written(port, baseline + len(burst), 600)
        cpu_burst = cpu_seconds(recorder.pid) - cpu0

        per_second = build_messages(publisher.session,
                                    range(windows, windows + int(realtime_s)), seq, active,
                                    hold, n_tags)
        live = [m for window in per_second for m in window]
        cpu0 = cpu_seconds(recorder.pid)
        start = time.perf_counter()
        for n, window in enumerate(per_second):
            time.sleep(max(0.0, start + n - time.perf_counter()))
            for message in window:
                publisher.send_message(message)
        wait_written(port, baseline + len(burst) + len(live), 60)
        elapsed = time.perf_counter() - start
        cpu_live = cpu_seconds(recorder.pid) - cpu0 if live else 0.0

        with engine.connect() as conn:
            events = conn.execute(sa.select(sa.func.count()).select_from(schema.events))
            if sa.inspect(conn).has_table(schema.window_blocks.name):
                windows = conn.execute(sa.select(sa.func.sum(schema.window_blocks.c.windows)))
            else:  # a --compare checkout from before blocks: a row per window
                windows = conn.execute(sa.select(sa.func.count()).select_from(
                    schema.legacy_scores))
            stored = events.scalar() + (windows.scalar() or 0)
            gaps = conn.execute(sa.select(sa.func.count()).select_from(schema.gaps)).scalar()
        sent = len(burst) + len(live)
        scores_sent = sum(isinstance(m.body, ScoresBody) for m in burst + live)
        size = db_bytes(engine, url) - empty_bytes
    finally:
        recorder.terminate()
        recorder.communicate(timeout=60)
        publisher.close()
        engine.dispose()
    burst_rate = len(burst) / (t1 - t0)
    burst_cpu_rate = len(burst) / cpu_burst
    burst_windows = sum(isinstance(m.body, ScoresBody) for m in burst)
    return {
        "database": engine.dialect.name, "code": str(code), "messages": sent, "stored": stored,
        "burst_windows_per_cpu_s": round(burst_windows / cpu_burst),
        "events_per_window": round((len(burst) - burst_windows) / burst_windows, 3),
        "gaps": gaps, "burst_messages": len(burst),
        "burst_msgs_per_s": round(burst_rate), "burst_msgs_per_cpu_s": round(burst_cpu_rate),
        "burst_x_load": round(burst_rate / LOAD_PER_S, 1),
        "cpu_x_load": round(burst_cpu_rate / LOAD_PER_S, 1),
        "realtime_core_share": round(cpu_live / elapsed, 4) if live else None,
        "realtime_headroom_x": round(elapsed / cpu_live, 1) if cpu_live else None,
        "bytes_per_window": round(size / scores_sent, 1),
        "mb_per_stream_day": round(size / scores_sent * 86400 / 1e6, 1),
    }


def fresh_postgres(server_url: str, prefix: str = "bench") -> str:
    """A new database on the server at ``server_url`` (its own for each run)."""
    name = f"{prefix}_{time.monotonic_ns()}"
    admin = sa.create_engine(schema.normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"

SIZE_TAGS = tuple(f"tag{i:02d}" for i in range(50))


def size_material(streams: int, windows: int, kind: str, t0: float) -> list[list]:
    """Per stream, its windows (blocks.Window) of a 50-tag model with loudness on."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(streams):
        level = rng.normal(-3.0, 1.5, len(SIZE_TAGS))
        logit = level.copy()
        smoothed = np.zeros(len(SIZE_TAGS))
        rows = []
        for i in range(windows):
            if kind == "tagger-like":
                logit = 0.9 * logit + 0.1 * level + rng.normal(0, 0.35, len(SIZE_TAGS))
                raw = 1 / (1 + np.exp(-logit))
            else:
                raw = rng.random(len(SIZE_TAGS))
            raw = np.round(raw, 6)
            smoothed = np.round(0.7 * smoothed + 0.3 * raw, 6)
            active = [t for t, v in zip(SIZE_TAGS, smoothed, strict=True) if v > 0.5]
            rms = round(float(-18 + 4 * np.sin(i / 40) + rng.normal(0, 1)), 2)
            rows.append(blocks.Window(
                seq=i, sent_at=t0 + i + float(rng.random()) * 0.01, start_s=float(i),
                end_s=i + 3.0, start_sample=i * 16000, end_sample=(i + 3) * 16000, raw=raw,
                smoothed=smoothed, active=schema.pack_names(active),
                latency_ms=round(float(rng.gamma(2, 6)), 3), rms_dbfs=rms,
                peak_dbfs=round(rms + 12 + float(rng.random()) * 3, 2), clipped=0,
                onset_rate_hz=round(float(rng.random()) * 4, 3), energy=float(rng.random()),
                mood=schema.pack_names(["calm"] if i % 300 < 200 else ["lively"]),
                valence=round(float(np.sin(i / 100)), 3), arousal=round(float(np.cos(i / 90)), 3),
                momentary_lufs=round(rms + 2.5 + float(rng.normal(0, 1)), 2),
                short_term_lufs=round(rms + 2.0, 2), content="music"))
        out.append(rows)
    return out


def _size_db(make_url, name: str, revision: str | None) -> tuple[sa.Engine, str]:
    from alembic import command

    url = make_url(name)
    engine = schema.create_db_engine(url)
    if revision is None:
        schema.upgrade(engine)
    else:
        with engine.begin() as conn:
            command.upgrade(schema._alembic_config(conn), revision)
    return engine, url


def bytes_before_after(make_url, streams: int, windows: int) -> list[dict]:
    """Bytes per window, one row per window (revision 0008) and in blocks (now)."""
    out = []
    t0 = time.time() - windows - 3600
    for kind in ("tagger-like", "uniform"):
        material = size_material(streams, windows, kind, t0)
        result = {"material": kind, "tags": len(SIZE_TAGS), "windows": streams * windows}
        for layout in ("before", "after"):
            engine, url = _size_db(make_url, f"{kind}-{layout}", "0008" if layout == "before"
                                   else None)
            empty = db_bytes(engine, url)
            with engine.begin() as conn:
                conn.execute(schema.models.insert(), {"id": 1, "name": "size", "hash": "x",
                                                      "tags": schema.pack_names(SIZE_TAGS)})
                conn.execute(schema.sessions.insert(), [
                    {"id": k + 1, "stream": f"station-{k:02d}", "session": "s" * 32,
                     "first_sent_at": t0, "restarted": False} for k in range(streams)])
            for k, rows in enumerate(material):
                with engine.begin() as conn:
                    if layout == "before":
                        conn.execute(schema.legacy_scores.insert(), [{
                            "stream": f"station-{k:02d}", "session": "s" * 32, "model_id": 1,
                            **{c.name: getattr(w, c.name) for c in schema.legacy_scores.columns
                               if hasattr(w, c.name)},
                            "raw": schema.pack_scores(w.raw),
                            "smoothed": schema.pack_scores(w.smoothed)} for w in rows])
                        continue
                    store = blocks.OpenBlocks(1)
                    closed = [b for w in rows
                              for b in store.add(f"station-{k:02d}", "s", 1, SIZE_TAGS, w, 0)]
                    closed += store.close_all()
                    pairs = [b.rows() for b in closed]
                    conn.execute(schema.window_blocks.insert(),
                                 [{**p[0], "session_id": k + 1} for p in pairs])
                    conn.execute(schema.window_rollups.insert(),
                                 [{**p[1], "session_id": k + 1} for p in pairs])
            result[layout] = round((db_bytes(engine, url) - empty) / (streams * windows), 1)
            result["database"] = engine.dialect.name
            engine.dispose()
        out.append(result)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres", help="a PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--windows", type=int, default=300,
                        help="windows per stream in the burst (default 300: 19,200 scores)")
    parser.add_argument("--realtime-s", type=float, default=10.0,
                        help="seconds at the real load after the burst (0: none)")
    parser.add_argument("--core", type=int, default=0, help="CPU core for the recorder")
    parser.add_argument("--compare", metavar="PATH|REF",
                        help="another streamtag checkout whose recorder runs too, alternated: "
                             "a folder, or a git revision of this checkout (e.g. main)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each recorder per database (default 1)")
    parser.add_argument("--hold", type=float, default=1,
                        help="each tag's runs on and off this many times as long: 1 (default) "
                             "sends 0.54 tag events a window, 7 sends 0.08, what musicnn-msd's "
                             "50 tags give on real music")
    parser.add_argument("--tags", type=int, default=N_TAGS,
                        help=f"tags of the model (default {N_TAGS}); --tags 13 --hold 0.57 "
                             "sends 0.36 events a window, what the default model's 13 tags "
                             "give on real music")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--size-streams", type=int, default=8,
                        help="streams of an hour each for the before/after sizes (default 8)")
    parser.add_argument("--sizes-only", action="store_true",
                        help="only the bytes per window before and after")
    args = parser.parse_args()
    codes = [ROOT] if args.compare is None else [checkout(args.compare), ROOT]
    results, notes, server, sizes = [], [], None, []
    try:
        for name in args.databases.split(","):
            if name == "postgresql" and not args.postgres:
                sys.path.insert(0, str(ROOT / "tests"))
                try:
                    from support.postgres import PostgresServer

                    server = PostgresServer()
                    server.start()
                except Exception as exc:  # pytest's Skipped names what to install
                    notes.append(f"postgresql skipped: {exc}")
                    continue
            sizes_url = "" if name == "sqlite" else args.postgres or server.url
            sizes += bytes_before_after(_url_maker(name, sizes_url), args.size_streams, 3600)
            if args.sizes_only:
                continue
            for _ in range(args.rounds):
                for code in codes:
                    if name == "sqlite":
                        url = f"sqlite:///{tempfile.mkdtemp(prefix='streamtag-bench-')}/tags.db"
                    else:
                        url = args.postgres or fresh_postgres(server.url)
                    results.append(bench(url, args.windows, args.realtime_s, args.core, code,
                                         args.hold, args.tags))
    finally:
        if server is not None:
            server.close()
    if args.json:
        print(json.dumps({"load_msgs_per_s": LOAD_PER_S, "target_x": TARGET,
                          "results": results, "bytes_per_window": sizes, "notes": notes},
                         indent=1))
    else:
        print(f"load: {STREAMS} streams x 1 window/s = {LOAD_PER_S} scores/s, {args.tags} tags; "
              f"target {TARGET}x = {TARGET * LOAD_PER_S} msgs/s on one core")
        for r in results:
            print(f"{r['database']:>10} ({Path(r['code']).name}): burst "
                  f"{r['burst_windows_per_cpu_s']} windows per CPU-s "
                  f"({r['events_per_window']} events a window); "
                  f"{r['burst_msgs_per_s']} msgs/s wall ({r['burst_x_load']}x load), "
                  f"{r['burst_msgs_per_cpu_s']} msgs per CPU-s ({r['cpu_x_load']}x)"
                  + (f"; real time uses {100 * r['realtime_core_share']:.1f}% of a core "
                     f"({r['realtime_headroom_x']}x headroom)"
                     if r["realtime_core_share"] is not None else "")
                  + f"; {r['bytes_per_window']} B/window = {r['mb_per_stream_day']} MB per "
                  f"stream-day; stored {r['stored']}/{r['messages']}, gaps {r['gaps']}")
        if args.compare is not None:
            print("median windows per CPU-second of one recorder:")
            for name in dict.fromkeys(r["database"] for r in results):
                medians = [statistics.median(r["burst_windows_per_cpu_s"] for r in results
                                             if r["database"] == name and r["code"] == str(c))
                           for c in codes]
                print(f"{name:>10}: {codes[0].name} {medians[0]:.0f}, {codes[1].name} "
                      f"{medians[1]:.0f} ({medians[1] / medians[0]:.2f}x)")
        print(f"bytes per window, one row each (revision 0008) | packed in blocks with rollups "
              f"(now); {args.size_streams} streams x 3600 windows, {len(SIZE_TAGS)} tags, "
              "loudness on:")
        for r in sizes:
            print(f"{r['database']:>10} {r['material']:>12}: {r['before']:>7} B | "
                  f"{r['after']:>6} B  ({r['before'] / r['after']:.1f}x smaller; "
                  f"{r['after'] * 86400 / 1e6:.1f} MB per stream-day)")
        for note in notes:
            print(note)
    ok = all(r["stored"] == r["messages"] and r["gaps"] == 0 for r in results)
    return 0 if ok else 1


def checkout(where: str) -> Path:
    """The streamtag checkout at ``where``: a folder, or a git revision of this one written
    into a temporary folder (with this checkout's built extension, which it shares)."""
    if Path(where).is_dir():
        return Path(where).resolve()
    folder = Path(tempfile.mkdtemp(prefix="streamtag-compare-")) / where.replace("/", "-")
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", where], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--compare {where}: neither a folder nor a git revision of {ROOT} "
                         f"({archive.stderr.decode(errors='replace').strip()})")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    for built in (ROOT / "streamtag").glob("_core*.so"):
        shutil.copy2(built, folder / "streamtag")
    return folder


def _url_maker(name: str, url: str):
    """New databases for the size runs: files beside each other, or PostgreSQL databases
    made on the server of `url`."""
    if name == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="streamtag-size-"))
        return lambda label: f"sqlite:///{folder / label}.db"

    return lambda label: fresh_postgres(url, f"size_{label.replace('-', '_')}")


if __name__ == "__main__":
    sys.exit(main())
