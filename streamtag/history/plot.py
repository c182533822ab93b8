"""The history as a picture: per stream, a heat strip of each leading tag's share of airtime
over time (the share of the windows in each time bin in which the tag was active), with the
tracks marked along the top, and drawn over the span they took: off air (red, hatched), silence
(white, dotted) and data lost (black, hatched). Grey is time without any window, longer than
a network stream's windows may come apart (HELD_GAP_HOPS hops, at least HELD_GAP_S: they come
in bursts, as the station's server sends its pages); a shorter run of empty bins shows the
bin before it. Times are in the report's zone, with dates where the range needs them."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from streamtag.history.asrun import Span
from streamtag.history.report import History, StreamAirtime, one_line, tag_share_bins
from streamtag.history.timeparse import span

log = logging.getLogger(__name__)
_NO_GLYPH = re.compile(r"Glyph \d+ .* missing from font")

MAX_BINS = 240          # columns per strip: enough to see a mood change, few enough to read
MAX_TRACK_LABELS = 30   # more titles than this would overprint; only lines are drawn then
MAX_STREAMS = 16        # strips in one picture; more would not be read (choose with --stream)
# Runs of empty bins held at the bin before them: at most this many hops, and this long
HELD_GAP_HOPS = 4.0
HELD_GAP_S = 5.0
# How each kind of span is drawn: face colour, hatch, label.
SPAN_STYLE = {"off_air": ("#e4202a", "//", "OFF AIR"),
              "silence": ("#ffffff", "..", "silence"),
              "not_recorded": ("#111111", "xx", "not recorded")}


def hop_s(airtime: StreamAirtime) -> float:
    """A stream's time between windows, from its windows' span and count."""
    if airtime.windows < 2 or airtime.last_at is None or airtime.first_at is None:
        return 1.0
    return max((airtime.last_at - airtime.first_at) / (airtime.windows - 1), 1e-3)


def bin_count(since: float, until: float, hop: float) -> int:
    """Bins for [since, until]: at most MAX_BINS, never narrower than the hop (a bin
    narrower than the time between windows would hold none or one: a barcode)."""
    return int(max(1, min(MAX_BINS, (until - since) // hop)))


def hold_short_gaps(counts: np.ndarray, share: np.ndarray, width: float,
                    longest: float) -> np.ndarray:
    """`share` (tags x bins) with each run of empty bins (`counts` 0) that lies between bins
    with windows and lasts at most `longest` seconds (bins `width` long) showing the bin
    before it; longer runs, and those at the edges, stay empty (NaN)."""
    out = share.copy()
    filled = np.flatnonzero(counts > 0)
    for before, after in zip(filled[:-1], filled[1:], strict=True):
        if 1 < after - before and (after - before - 1) * width <= longest:
            out[:, before + 1:after] = share[:, before:before + 1]
    return out


def plot_history(engine: Engine, history: History, path: str, *, top: int = 8) -> list[str]:
    """Write the timeline to `path` (PNG, or any format matplotlib knows by the suffix);
    returns the streams drawn (at most MAX_STREAMS, in order of their names)."""
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    zone = history.zone
    streams = sorted(s for s, a in history.airtime.items() if a.windows)[:MAX_STREAMS]
    height = sum(1.2 + 0.28 * min(top, len(history.airtime[s].tags)) for s in streams)
    figure = Figure(figsize=(13, max(2.5, height + 0.8)), layout="constrained")
    FigureCanvasAgg(figure)
    if not streams:
        figure.text(0.5, 0.5, "nothing recorded in this range", ha="center", va="center")
        _save(figure, path)
        return []
    since = min(history.airtime[s].first_at for s in streams)
    until = max(history.airtime[s].last_at for s in streams)
    if history.since is not None:
        since = max(since, history.since)
    spans = [s for s in history.off_air + history.silence + history.not_recorded
             if s.stream in streams]
    for s in spans:  # an outage at the edge of what was recorded is drawn whole
        until = max(until, history.now if s.end is None else s.end)
    if history.until is not None:
        until = min(until, history.until)
    if until <= since:
        until = since + 1.0
    hop = max(hop_s(history.airtime[s]) for s in streams)
    bins = bin_count(since, until, hop)

    def x(unix_s: float) -> float:
        return mdates.date2num(zone.at(unix_s))

    ratios = [0.6 + 0.28 * min(top, len(history.airtime[s].tags)) for s in streams]
    axes = figure.subplots(len(streams), 1, sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": ratios})[:, 0]
    image = None
    x0, x1 = x(since), x(until)
    for ax, stream in zip(axes, streams, strict=True):
        airtime = history.airtime[stream]
        tags = sorted(airtime.tags, key=lambda t: -airtime.share(t))[:top]
        edges, counts, share = tag_share_bins(engine, stream, tags, since, until, bins)
        share = hold_short_gaps(counts, share, (until - since) / bins,
                                max(HELD_GAP_HOPS * hop, HELD_GAP_S))
        image = ax.imshow(np.ma.masked_invalid(share), aspect="auto", interpolation="nearest",
                          cmap="viridis", vmin=0, vmax=1, extent=(x0, x1, len(tags) - 0.5, -0.5))
        ax.set_yticks(range(len(tags)),
                      [f"{t}  {100 * airtime.share(t):.0f}%" for t in tags], fontsize=9)
        ax.set_ylabel(f"{stream}\n{airtime.windows} windows", fontsize=10,
                      fontweight="bold")
        ax.set_facecolor("#dddddd")  # bins without windows: nothing was recorded
        # the as-run log: the finished tracks and the one now playing
        tracks = [e for e in history.as_run if e.stream == stream
                  and (e.end is None or e.end >= since) and e.start <= until]
        for t in tracks:
            if t.start >= since:
                ax.axvline(x(t.start), color="white", linewidth=1.0, alpha=0.9)
        if len(tracks) <= MAX_TRACK_LABELS:
            # Titles above the strip, on two alternating rows so neighbours do not overprint.
            transform = ax.get_xaxis_transform()
            for n, t in enumerate(tracks):
                ax.text(x(max(t.start, since)), 1.02 + 0.09 * (n % 2),
                        f"\u25b8 {one_line(t.title or '(untitled)')}"
                        + (" (now playing)" if t.now_playing else ""), transform=transform,
                        fontsize=7, va="bottom", ha="left", clip_on=False)
        for s in (s for s in spans if s.stream == stream):
            _draw_span(ax, s, x, since, until, history.now)
        for r in (r for r in history.restarts if r["stream"] == stream):
            ax.axvline(x(r["first_sent_at"]), color="orange", linewidth=1.5)
    axes[-1].set_xlim(x0, x1)
    # Ticks placed in UTC and labelled in the zone: matplotlib's locator in a zone whose
    # offset changes in the range tried tens of thousands of ticks and drew a smear (whole
    # hours and minutes are the same in both, but in a zone of half-hour offsets)
    locator = mdates.AutoDateLocator(maxticks=12)
    for ax in axes:  # every strip carries its own times: a tall picture is read in parts
        ax.xaxis.set_major_locator(locator)
        # 24-hour times; the date where the range crosses one, and in the corner
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=zone.tz,
                                                                 show_offset=True))
        ax.tick_params(axis="x", labelbottom=True, labelsize=8)
    first, last = zone.at(since), zone.at(until)
    axes[-1].set_xlabel(f"{first:%Y-%m-%d %H:%M:%S}{zone.mark(since, until)} to "
                        f"{last:%Y-%m-%d %H:%M:%S}, "
                        f"{zone.label_span(since, until)}\nwhite lines: track changes; red "
                        "hatched: off air; white dotted: silence; black hatched: data not "
                        "recorded; grey: no windows; orange: daemon restart", fontsize=9)
    # A colour bar about two strips tall, at the top, however many strips there are.
    figure.colorbar(image, ax=list(axes), label="share of windows\nwith the tag active",
                    shrink=min(0.8, 3.0 / figure.get_figheight()), anchor=(0.0, 1.0))
    _save(figure, path)
    return streams


def _save(figure, path: str) -> None:
    """The picture under the name given: in the format its suffix names where matplotlib
    knows it, else PNG (left to itself, matplotlib would add .png to the name). Characters of
    titles that matplotlib's fonts lack are drawn as boxes: one line says so, in place of
    matplotlib's warning per character."""
    suffix = Path(path).suffix.lower().lstrip(".")
    known = figure.canvas.get_supported_filetypes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure.savefig(path, dpi=110, format=suffix if suffix in known else "png")
    missing = 0
    for w in caught:
        if _NO_GLYPH.search(str(w.message)):
            missing += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        log.warning("%d characters of the titles are drawn as boxes: matplotlib's fonts have "
                    "no glyph for them (install a font that has them, such as Debian's "
                    "fonts-noto-cjk for Chinese, Japanese and Korean)", missing)


def _draw_span(ax, s: Span, x, since: float, until: float, now: float) -> None:
    colour, hatch, label = SPAN_STYLE[s.kind]
    start, end = max(s.start, since), min(now if s.end is None else s.end, until)
    if end <= start:
        return
    ax.axvspan(x(start), x(end), facecolor=colour, alpha=0.75, hatch=hatch,
               edgecolor="black" if s.kind != "not_recorded" else "white", linewidth=0.0)
    ax.text(x(start), 0.5, f" {label} {span(s.length(now))}", transform=ax.get_xaxis_transform(),
            fontsize=8, fontweight="bold", va="center", ha="left", rotation=90,
            color="white" if s.kind != "silence" else "black", clip_on=True)
