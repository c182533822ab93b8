"""The dashboard's history view: the last minutes or hours of a history database (written by
``streamtag record``) as one JSON answer for the page history.html.

Per stream (each with windows, tracks or spans in the range: a station off air throughout is
listed, with no windows): windows, each tag's share of airtime (speech and dead air are no
tag's), what the audio was (its music, speech, silence, tone and noise shares, and per bin of
the strip the content most of its windows had, and its windows per content and quarter hour,
which the page adds up per hour of its zone), and a heat strip of the leading tags' shares
over time (bins never narrower than the stream's hop); the as-run log (the tracks
with what cut them, and the one now playing), the spans off air, silent and not recorded, the
last events, and what is missing (gaps, daemon restarts).

The query reads every window of the range (about 0.4 s for a week of one stream), so answers
are bounded (docs/security.md, "Listener limits"): a span is quantised to whole minutes and its
end (``until``) to the minute before it, so that any float asks for one of a few thousand
spans; the last `MAX_CACHED` answers are kept for `CACHE_S`; requests for a span already being
computed wait for that one; the spans computed one at a time on a thread of their own, at most
`MOST_WAITING` waiting, and past them a request is refused at once (`HistoryBusy`, 503) rather
than queued behind them.

The dashboard may start before the recorder that makes its database: a database that does not
exist yet, or holds no history yet, is waited for (`HistoryNotYet`, 503, looked for again on
each request); any other problem with it is a ConfigError naming the fix, at once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import math
import time
from typing import Any

import numpy as np
import sqlalchemy as sa

from streamtag.errors import ConfigError
from streamtag.history import content, report, schema
from streamtag.history.plot import bin_count, hop_s

DEFAULT_HOURS = 1.0
MIN_HOURS = 10 / 60  # ten minutes: the shortest span the page offers
MAX_HOURS = 24.0 * 7
BINS = 180
TOP_TAGS = 8
MAX_EVENTS = 200
CACHE_S = 10.0
MAX_CACHED = 16
MOST_WAITING = 4

SpanKey = tuple[int, float | None]  # whole minutes, and the end's minute (None: up to now)


class HistoryBusy(Exception):
    """`MOST_WAITING` other spans are being computed or wait for it: try again soon."""


def span_key(hours: float, until: float | None = None) -> SpanKey:
    """The quantised span that answers `hours` up to `until` (None: now): ValueError past
    the bounds."""
    if not MIN_HOURS - 1e-9 <= hours <= MAX_HOURS:
        raise ValueError(f"the span must be from 10 minutes to {MAX_HOURS:g} hours "
                         f"(minutes=10..{60 * MAX_HOURS:g} or "
                         f"hours={MIN_HOURS:.2g}..{MAX_HOURS:g}), got {hours:g} hours")
    minutes = min(max(round(hours * 60.0), round(MIN_HOURS * 60)), round(MAX_HOURS * 60))
    if until is None:
        return minutes, None
    return minutes, math.floor(min(until, time.time()) / 60.0) * 60.0


class HistoryNotYet(ConfigError):
    """The database is not there yet (the recorder makes it when it starts): asked again on
    the next request."""


class HistoryView:
    """Reads a history database for the page: `answer` on the dashboard's event loop, the
    queries on a thread of their own. ``counts``: answers computed, from the cache, joined to
    one being computed, and refused as busy."""

    def __init__(self, url: str, most_waiting: int = MOST_WAITING) -> None:
        self._given = url
        self.engine = schema.create_db_engine(url, reader=True)
        self.url = schema.describe_url(self.engine)
        self.not_yet = self._check()  # why it waits for the database; None once there
        self.most_waiting = most_waiting
        self.counts: collections.Counter[str] = collections.Counter()
        self._cache: collections.OrderedDict[SpanKey, tuple[float, dict[str, Any]]] = \
            collections.OrderedDict()
        self._flights: dict[SpanKey, asyncio.Future[dict[str, Any]]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="streamtag-history")

    async def answer(self, hours: float = DEFAULT_HOURS,
                     until: float | None = None) -> dict[str, Any]:
        """The `hours` up to now, or up to `until` where given (no later than the clock's),
        quantised (`span_key`). ValueError for a span past the bounds, HistoryBusy when too
        many others wait."""
        key = span_key(hours, until)
        if self.not_yet is not None:
            self.not_yet = await asyncio.get_running_loop().run_in_executor(self._executor,
                                                                            self._check)
            if self.not_yet is not None:
                raise HistoryNotYet(self.not_yet)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            self._cache.move_to_end(key)
            self.counts["cached"] += 1
            return cached[1]
        flight = self._flights.get(key)
        if flight is not None:
            self.counts["joined"] += 1
        else:
            if len(self._flights) >= self.most_waiting:
                self.counts["busy"] += 1
                raise HistoryBusy(f"the history view is busy: {len(self._flights)} spans are "
                                  "being read; try again in a few seconds")
            flight = asyncio.get_running_loop().run_in_executor(self._executor, self._read,
                                                                key)
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        return await asyncio.shield(flight)

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

    def _read(self, key: SpanKey) -> dict[str, Any]:
        minutes, until = key
        return self._compute(minutes / 60.0, time.time() if until is None else until)

    def _landed(self, key: SpanKey, flight: asyncio.Future[dict[str, Any]]) -> None:
        self._flights.pop(key, None)
        if flight.cancelled() or flight.exception() is not None:
            return  # the exception is each waiter's; nothing is kept
        self.counts["computed"] += 1
        self._cache[key] = (time.monotonic(), flight.result())
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

    def _compute(self, hours: float, now: float) -> dict[str, Any]:
        since = now - hours * 3600.0
        history = report.load_history(self.engine, since=since, until=now, top=TOP_TAGS,
                                      now=now)
        with self.engine.connect() as conn:
            quarters = content.by_quarter(conn, None, since, now, history.tier)
        streams = {}
        for stream, airtime in sorted(history.airtime.items()):
            tags = sorted(airtime.tags, key=lambda t: -airtime.share(t))[:TOP_TAGS]
            bins = min(BINS, bin_count(since, now, hop_s(airtime)))
            edges, counts, share, kinds = report.strip_bins(self.engine, stream, tags, since,
                                                            now, bins, history.tier)
            known = kinds.sum(axis=0)
            streams[stream] = {
                "windows": airtime.windows, "first_at": airtime.first_at,
                "last_at": airtime.last_at,
                "airtime": [[t, round(airtime.share(t), 6)]
                            for t in sorted(airtime.tags, key=lambda t: -airtime.share(t))],
                "content": [[kind, round(value, 6)]
                            for kind, value in airtime.content_share().items()],
                # windows per content and quarter hour: the page adds them up per hour of
                # its own zone
                "content_quarters": quarters.get(stream, []),
                "strip": {"tags": tags, "counts": counts.astype(int).tolist(),
                          "share": [[None if np.isnan(v) else round(float(v), 4) for v in row]
                                    for row in share],
                          # per bin the content most of its windows had; None: not known
                          "content": [content.CONTENT_KINDS[int(k)] if n else None
                                      for k, n in zip(kinds.argmax(axis=0), known,
                                                      strict=True)]}}
        for stream in history.streams():  # off air throughout, or tracks without windows
            streams.setdefault(stream, {"windows": 0, "first_at": None, "last_at": None,
                                        "airtime": [], "content": [],
                                        "content_quarters": [],
                                        "strip": {"tags": [], "counts": [], "share": [],
                                                  "content": []}})
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
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()
