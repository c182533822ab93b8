"""Generated history at fleet scale, and how long the reports over it take.

`write_history` writes what a recorder would have written for STATIONS streams over DAYS days
at a window a second: per stream and minute a rollup (the last WINDOW_DAYS days also with its
block of windows, packed as the recorder packs them; older windows expired), a track every
four minutes, a silence a day, a "running" status, speech for the first three minutes of each
hour. Tests use a small version; this script runs it at scale and times the reports:

    python benchmarks/history_year.py                       # SQLite in a temporary folder
    python benchmarks/history_year.py --db postgresql://...  # an empty PostgreSQL database

It writes 100 stations' last day with windows and one station's year of rollups, then times
a day of 100 stations' as-run log, airtime and plot (apart and together), a year of one
station's airtime and content per day, and that year's whole report. With `--old CHECKOUT`
(a checkout of an older streamtag, its extension built) it times that streamtag's reports on
the same database first, and prints both side by side:

    git worktree add ../streamtag-main main && cp streamtag/_core*.so ../streamtag-main/streamtag/
    python benchmarks/history_year.py --old ../streamtag-main

`--repeat N` times each report N times and prints the median: a shared machine's runs vary
by a second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

STREAMTAG_AT = "STREAMTAG_BENCHMARK_CHECKOUT"  # the streamtag --old times, in its run
if __name__ == "__main__":  # run from a checkout; imported by a test, the package is there
    sys.path.insert(0, os.environ.get(STREAMTAG_AT) or str(Path(__file__).resolve().parents[1]))
from streamtag.history import blocks, schema  # noqa: E402

TAGS = tuple(f"tag{i:02d}" for i in range(50))
TRACK_S = 240
MINUTE_S = 60
SPEECH_MINUTES = 3  # of each hour: the news
SAMPLE_RATE = 16000


def _minute_windows(minute_at: float, seq0: int, track: int, speech: bool,
                    rng: np.random.Generator) -> list[blocks.Window]:
    """A minute's 60 windows: the track's two tags on; over speech, none but in the first
    minute of each hour's speech (the daemon turns tags off once speech lasted [content]
    min_s, so a run's first windows still list them)."""
    on = [TAGS[track % len(TAGS)], TAGS[(3 * track + 1) % len(TAGS)]]
    level = np.full(len(TAGS), 0.1)
    level[[TAGS.index(t) for t in on]] = 0.8
    out = []
    noisy = np.clip(level + rng.normal(0, 0.02, (MINUTE_S, len(TAGS))), 0, 1)
    active = json.dumps([] if speech and minute_at % 3600 >= MINUTE_S else on)
    for i in range(MINUTE_S):
        start_s = minute_at + i - 3.0
        out.append(blocks.Window(
            seq=seq0 + i, sent_at=minute_at + i + 0.5, start_s=start_s, end_s=start_s + 3.0,
            start_sample=int(start_s * SAMPLE_RATE), end_sample=int((start_s + 3) * SAMPLE_RATE),
            raw=noisy[i], smoothed=noisy[i], active=active, latency_ms=2.0,
            rms_dbfs=-20.0, peak_dbfs=-3.0, clipped=0, short_term_lufs=-16.0,
            content="speech" if speech else "music"))
    return out


def _rollup(minute_at: float, track: int, speech: bool) -> dict:
    """The rollup `blocks.rollup` gives of `_minute_windows`, without making the windows."""
    active = np.zeros(len(TAGS), dtype="<u2")
    mean = np.full(len(TAGS), 0.1)
    on = [track % len(TAGS), (3 * track + 1) % len(TAGS)]
    mean[on] = 0.8
    if not speech:
        active[on] = MINUTE_S
    return {"windows": MINUTE_S, "first_sent_at": minute_at + 0.5,
            "last_sent_at": minute_at + MINUTE_S - 0.5,
            "mean_smoothed": np.rint(mean * 255).astype(np.uint8).tobytes(),
            "active_windows": active.tobytes(), "rms_dbfs": -20.0, "peak_dbfs": -3.0,
            "short_term_lufs": -16.0,
            "content": json.dumps({"speech" if speech else "music": MINUTE_S})}


def _track(stream: str, session: str, k: int, started: float, model_id: int) -> dict:
    on = [k % len(TAGS), (3 * k + 1) % len(TAGS)]
    mean = np.full(len(TAGS), 0.1, dtype=schema.SCORE_DTYPE)
    mean[on] = 0.8
    share = np.zeros(len(TAGS), dtype=schema.SCORE_DTYPE)
    share[on] = 1.0
    start_s = started - 0.0
    return {"stream": stream, "session": session, "seq": k, "sent_at": started + TRACK_S,
            "model_id": model_id, "title": f"{stream} track {k}", "reason": "title",
            "start_s": start_s, "end_s": start_s + TRACK_S,
            "start_sample": int(start_s * SAMPLE_RATE),
            "end_sample": int((start_s + TRACK_S) * SAMPLE_RATE),
            "started_at": started, "ended_at": started + TRACK_S, "windows": TRACK_S,
            "mean_raw": mean.tobytes(), "mean_smoothed": mean.tobytes(),
            "active_share": share.tobytes(),
            "active": json.dumps([TAGS[i] for i in on]), "heard_from_start": True}


def write_history(engine: sa.Engine, stations: list[str], days: float, window_days: float,
                  end: float, seed: int = 0) -> dict[str, int]:
    """Writes `stations`' history for `days` days up to `end` (a whole minute), the last
    `window_days` of it with windows too; the rows written per table."""
    schema.upgrade(engine)
    rng = np.random.default_rng(seed)
    minutes = int(days * 1440)
    first = end - minutes * MINUTE_S
    windows_from = end - window_days * 86400.0
    written = {"window_blocks": 0, "window_rollups": 0, "tracks": 0, "silences": 0}
    with engine.begin() as conn:
        mc = schema.models.c
        model_id = conn.execute(sa.select(mc.id).where(mc.name == "generated")).scalar()
        if model_id is None:
            model_id = conn.execute(schema.models.insert().values(
                name="generated", hash="0", tags=json.dumps(TAGS))).inserted_primary_key[0]
    for stream in stations:
        session = f"gen-{stream}"
        with engine.begin() as conn:
            session_id = conn.execute(schema.sessions.insert().values(
                stream=stream, session=session, first_sent_at=first,
                restarted=False)).inserted_primary_key[0]
            conn.execute(schema.statuses.insert().values(
                stream=stream, session=session, seq=0, sent_at=first, state="running",
                title=None, source=f"http://radio.example/{stream}", counters="{}",
                station=f"Station {stream}", heard_from_start=True))
            block_rows, rollup_rows, track_rows = [], [], []
            for m in range(minutes):
                minute_at = first + m * MINUTE_S
                track = int((minute_at - first) // TRACK_S)
                speech = (minute_at % 3600) < SPEECH_MINUTES * MINUTE_S
                key = {"session_id": session_id, "model_id": model_id,
                       "first_seq": m * MINUTE_S}
                if minute_at >= windows_from:
                    ws = _minute_windows(minute_at, m * MINUTE_S, track, speech, rng)
                    block_rows.append({**key, "last_seq": ws[-1].seq, "windows": len(ws),
                                       "first_sent_at": ws[0].sent_at,
                                       "last_sent_at": ws[-1].sent_at,
                                       "data": blocks.encode(ws, len(TAGS))})
                    rollup_rows.append({**key, "minute_at": minute_at,
                                        **blocks.rollup(ws, TAGS)})
                else:
                    rollup_rows.append({**key, "minute_at": minute_at,
                                        **_rollup(minute_at, track, speech)})
                if (minute_at - first) % TRACK_S == 0 and minute_at + TRACK_S <= end:
                    track_rows.append(_track(stream, session, track, minute_at, model_id))
                for rows, table in ((block_rows, schema.window_blocks),
                                    (rollup_rows, schema.window_rollups),
                                    (track_rows, schema.tracks)):
                    if len(rows) >= 20_000 or (m == minutes - 1 and rows):
                        conn.execute(table.insert(), rows)
                        written[table.name] += len(rows)
                        rows.clear()
            silences = []
            for d in range(int(np.ceil(days))):
                at = first + d * 86400.0 + 7200.0 + 30.0
                if at + 12 > end:
                    break
                common = {"stream": stream, "session": session, "time_s": at - first,
                          "sample": 0, "start_s": at - first,
                          "start_sample": int((at - first) * SAMPLE_RATE),
                          "threshold_dbfs": -60.0, "cause": "silence"}
                silences += [{**common, "seq": 2 * d, "sent_at": at + 8.0, "state": "on",
                              "duration_s": 8.0},
                             {**common, "seq": 2 * d + 1, "sent_at": at + 12.5, "state": "off",
                              "duration_s": 12.0}]
            if silences:
                conn.execute(schema.silences.insert(), silences)
                written["silences"] += len(silences)
    return written


def timed(what: str, fn, taken: dict[str, tuple[float, float]] | None = None,
          repeat: int = 1) -> float:
    """Runs `fn` `repeat` times, printing the median wall-clock and CPU seconds of a run (the
    CPU's tell more on a shared machine, the median more than one run); kept in `taken`
    under `what`."""
    walls, cpus = [], []
    for _ in range(repeat):
        began, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
    took, used = float(np.median(walls)), float(np.median(cpus))
    print(f"{what}: {took:.2f} s ({used:.2f} s CPU)"
          + (f", the median of {repeat} runs" if repeat > 1 else ""), flush=True)
    if taken is not None:
        taken[what] = (took, used)
    return took


def time_reports(url: str, stations: int, year_days: float,
                 repeat: int = 1) -> dict[str, tuple[float, float]]:
    """Times the reports over what `write_history` wrote today: (wall, CPU) seconds per
    report. Works with this streamtag and with older ones (--old), which lack some."""
    import inspect

    from streamtag.history import content, report, tiers
    from streamtag.history.plot import plot_history
    from streamtag.history.timeparse import zone_named

    engine = schema.create_db_engine(url)
    folder = tempfile.mkdtemp(prefix="streamtag-year-")
    end = float(int(time.time() // 86400 * 86400))
    fleet = [f"radio-{i:03d}" for i in range(stations)]
    zone = zone_named("UTC")
    day = (end - 86400.0, end)
    year = (end - year_days * 86400.0, end)
    holder: dict = {}
    taken: dict[str, tuple[float, float]] = {}
    per_day = "airtime_by" in inspect.signature(report.load_history).parameters

    def day_report() -> None:
        holder["h"] = report.load_history(engine, fleet, *day, zone=zone, now=end)
        report.format_text(holder["h"])

    def day_plot() -> None:
        plot_history(engine, holder["h"], os.path.join(folder, "day.png"))

    # the reports' pause of the garbage collector (older streamtags: none)
    paused = getattr(report, "collector_paused", contextlib.nullcontext)

    def day_both() -> None:
        """As `streamtag history --plot` makes both: the collector held off throughout, the
        report's objects gone before it runs again."""
        with paused():
            day_report()
            day_plot()
            del holder["h"]

    def daily_airtime() -> None:
        """Airtime and content per day, as `history --airtime-by day --content-by day`
        reads them, without the as-run log (older streamtags: airtime and content)."""
        with paused(), engine.connect() as conn:
            tags_of = report.model_tags(conn)
            if per_day:
                minutes = tiers.active_minutes(conn, ["year"], *year)
                airtime = report.rollup_airtime(conn, ["year"], *year, tags_of, minutes)
                holder["d"] = report.airtime_by_period(conn, ["year"], *year, zone, "day",
                                                       end, tiers.ROLLUPS, tags_of, airtime,
                                                       minutes)
            else:
                report.rollup_airtime(conn, ["year"], *year, tags_of)
            content.by_period(conn, ["year"], *year, zone, "day", end, tiers.ROLLUPS)

    def year_report() -> None:
        holder["y"] = report.load_history(engine, ["year"], *year, zone=zone, now=end,
                                          content_by="day", period="day",
                                          **({"airtime_by": "day"} if per_day else {}))
        report.format_text(holder["y"])

    timed(DAY_REPORT.format(stations), day_report, taken, repeat)
    print(f"  read from {holder['h'].tier}; {len(holder['h'].as_run)} as-run entries")
    timed(DAY_PLOT.format(stations), day_plot, taken, repeat)
    timed(DAY_BOTH.format(stations), day_both, taken, repeat)
    timed(YEAR_DAILY, daily_airtime, taken, repeat)
    timed(YEAR_REPORT, year_report, taken, repeat)
    print(f"  read from {holder['y'].tier}; {len(holder['y'].content_periods)} days, "
          f"{len(holder['y'].as_run)} as-run entries")
    engine.dispose()
    return taken


DAY_REPORT = "a day of {} stations: as-run log and airtime, text"
DAY_PLOT = "a day of {} stations: plot (16 streams a picture)"
DAY_BOTH = "a day of {} stations: as-run log, airtime and plot together"
YEAR_DAILY = "a year of one station: airtime, airtime per day and content per day"
YEAR_REPORT = "a year of one station: the whole report (as-run, plays, per day), text"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="an empty database (default: SQLite in a temporary folder)")
    parser.add_argument("--stations", type=int, default=100)
    parser.add_argument("--year-days", type=float, default=365.0)
    parser.add_argument("--reports-only", action="store_true",
                        help="time the reports of a --db this script wrote before (today)")
    parser.add_argument("--old", metavar="CHECKOUT",
                        help="also time the reports of the streamtag in this folder (a "
                             "checkout of an older version, with its extension built), on the "
                             "same database, and print both side by side")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="time each report N times and print the median (default 1)")
    parser.add_argument("--json", action="store_true",
                        help="print the reports' figures as one JSON line at the end")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="streamtag-year-")
    url = args.db or f"sqlite:///{os.path.join(folder, 'year.db')}"
    engine = schema.create_db_engine(url)
    end = float(int(time.time() // 86400 * 86400))
    fleet = [f"radio-{i:03d}" for i in range(args.stations)]
    if not args.reports_only:
        timed(f"write {args.stations} stations' day (windows and rollups)",
              lambda: print(write_history(engine, fleet, 1.0, 1.0, end)))
        timed(f"write one station's {args.year_days:g} days (windows of its last day)",
              lambda: print(write_history(engine, ["year"], args.year_days, 1.0, end, seed=1)))
    engine.dispose()
    old: dict[str, list[float]] = {}
    if args.old:
        print(f"-- {args.old}:", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--db", url, "--reports-only", "--json",
             "--stations", str(args.stations), "--year-days", str(args.year_days),
             "--repeat", str(args.repeat)],
            env={**os.environ, "PYTHONPATH": os.path.abspath(args.old),
                 STREAMTAG_AT: os.path.abspath(args.old)},
            stdout=subprocess.PIPE, text=True, check=True)
        lines = done.stdout.splitlines()
        print("\n".join(lines[:-1]))
        old = json.loads(lines[-1])
        print("-- this checkout:", flush=True)
    taken = time_reports(url, args.stations, args.year_days, args.repeat)
    if args.json:
        print(json.dumps(taken))
    elif old:
        print(f"\n{'report':<72} {'old':>15} {'this':>15}")
        for what, (wall, cpu) in taken.items():
            before = old.get(what)
            print(f"{what:<72} "
                  + (f"{before[0]:6.2f} ({before[1]:5.2f})" if before else f"{'-':>15}")
                  + f" {wall:6.2f} ({cpu:5.2f})")
        print("wall-clock seconds (CPU seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
