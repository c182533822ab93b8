"""The dashboard's history view: the last minutes or hours of a history database (written by
``streamtag record``) as one JSON answer for the page history.html.

Per stream (each with windows, tracks or spans in the range: a station off air throughout is
listed, with no windows): windows, each tag's share of airtime, and a heat strip of the leading
tags' shares over time (bins never narrower than the stream's hop); the as-run log (the tracks
with what cut them, and the one now playing), the spans off air, silent and not recorded, the
last events, and what is missing (gaps, daemon restarts). Answers are cached for a few
seconds: a page refreshes every minute, and the query reads every window of the range.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import sqlalchemy as sa

from streamtag.errors import ConfigError
from streamtag.history import report, schema
from streamtag.history.plot import bin_count, hop_s

DEFAULT_HOURS = 1.0
MIN_HOURS = 10 / 60  # ten minutes: the shortest span the page offers
MAX_HOURS = 24.0 * 7
BINS = 180
TOP_TAGS = 8
MAX_EVENTS = 200
CACHE_S = 10.0


class HistoryNotYet(ConfigError):
    """The database is not there yet (the recorder makes it when it starts): asked again on
    the next request."""


class HistoryView:
    """Reads a history database for the page; safe to call from several threads. A database
    that does not exist yet, or holds no history yet, is waited for: the dashboard may start
    before the recorder that makes it (``not_yet`` says why it waits; each request looks
    again). Any other problem with it is a ConfigError naming the fix, at once."""

    def __init__(self, url: str) -> None:
        self._given = url
        self.engine = schema.create_db_engine(url, reader=True)
        self.url = schema.describe_url(self.engine)
        self._lock = threading.Lock()
        self._cache: dict[float, tuple[float, dict[str, Any]]] = {}
        self.not_yet = self._check()

    def _check(self) -> str | None:
        """None once the database holds this code's history; else what it waits for."""
        try:
            schema.require_existing(self._given)
        except ConfigError as exc:
            return f"{exc} (waiting for it: the page shows it once the recorder made it)"
        try:
            with self.engine.connect() as connection:
                empty = schema.current_revision(connection) is None
        except sa.exc.DatabaseError:
            empty = False  # check_readable names what is wrong with it
        if empty:
            return (f"{self.url} holds no streamtag history yet; waiting for 'streamtag "
                    "record --db URL' to write it")
        schema.check_readable(self.engine)  # ConfigError naming the fix
        return None

    def answer(self, hours: float = DEFAULT_HOURS, now: float | None = None) -> dict[str, Any]:
        """The `hours` up to now, or up to `now` where given (no later than the clock's)."""
        if not MIN_HOURS - 1e-9 <= hours <= MAX_HOURS:
            raise ValueError(f"the span must be from 10 minutes to {MAX_HOURS:g} hours "
                             f"(minutes=10..{60 * MAX_HOURS:g} or "
                             f"hours={MIN_HOURS:.2g}..{MAX_HOURS:g}), got {hours:g} hours")
        with self._lock:
            if self.not_yet is not None:
                self.not_yet = self._check()
                if self.not_yet is not None:
                    raise HistoryNotYet(self.not_yet)
            if now is not None:  # a span of the past (the page's ?until=): not cached
                return self._compute(hours, min(now, time.time()))
            cached = self._cache.get(hours)
            if cached and time.monotonic() - cached[0] < CACHE_S:
                return cached[1]
            result = self._compute(hours, time.time())
            self._cache = {hours: (time.monotonic(), result)}
            return result

    def _compute(self, hours: float, now: float) -> dict[str, Any]:
        since = now - hours * 3600.0
        history = report.load_history(self.engine, since=since, until=now, top=TOP_TAGS,
                                      now=now)
        streams = {}
        for stream, airtime in sorted(history.airtime.items()):
            tags = sorted(airtime.tags, key=lambda t: -airtime.share(t))[:TOP_TAGS]
            bins = min(BINS, bin_count(since, now, hop_s(airtime)))
            edges, counts, share = report.tag_share_bins(self.engine, stream, tags, since, now,
                                                         bins)
            streams[stream] = {
                "windows": airtime.windows, "first_at": airtime.first_at,
                "last_at": airtime.last_at,
                "airtime": [[t, round(airtime.share(t), 6)]
                            for t in sorted(airtime.tags, key=lambda t: -airtime.share(t))],
                "strip": {"tags": tags, "counts": counts.astype(int).tolist(),
                          "share": [[None if np.isnan(v) else round(float(v), 4) for v in row]
                                    for row in share]}}
        for stream in history.streams():  # off air throughout, or tracks without windows
            streams.setdefault(stream, {"windows": 0, "first_at": None, "last_at": None,
                                        "airtime": [],
                                        "strip": {"tags": [], "counts": [], "share": []}})
        streams = dict(sorted(streams.items()))
        return {"since": since, "until": now, "hours": hours, "bins": BINS,  # at most
                # a track's heard audio shorter than its length by more than this is said
                "heard_shown_s": report.HEARD_SHOWN_S,
                "database": self.url, "streams": streams,
                "tracks": [{k: t[k] for k in ("stream", "title", "started_at", "ended_at",
                                              "start_s", "end_s", "windows", "active", "top")}
                           for t in history.tracks],
                "asrun": [e.to_dict() for e in history.as_run],
                "off_air": [s.to_dict() for s in history.off_air],
                "silence": [s.to_dict() for s in history.silence],
                "not_recorded": [s.to_dict() for s in history.not_recorded],
                "events": history.events[-MAX_EVENTS:], "events_total": len(history.events),
                "gaps": history.gaps, "restarts": history.restarts}

    def close(self) -> None:
        self.engine.dispose()
