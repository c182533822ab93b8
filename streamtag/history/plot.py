"""The history as a picture: per stream, a heat strip of each leading tag's share of airtime
over time (the share of the windows in each time bin in which the tag was active; a window of
speech or dead air has no tag on), under a row of what the audio was in each bin (the content
most of its windows had: music, speech, silence, tone or noise), with the tracks marked along
the top (titles cut short where they would overprint), and drawn over the
span they took: off air (red, hatched), silence and stuck tones (white, dotted, each
labelled as what it was) and data lost (black, hatched). Grey is time without any window,
longer than a network stream's windows may come apart (HELD_GAP_HOPS hops, at least
HELD_GAP_S: they come in bursts, as the station's server sends its pages); a shorter run of
empty bins shows the bin before it. A stream with no windows in the range (off air
throughout) is a strip of what it had. Times are in the
report's zone, with dates where the range needs them."""

from __future__ import annotations

import logging
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from streamtag.history.asrun import STUCK_TONE, Span
from streamtag.history.content import CONTENT_KINDS
from streamtag.history.report import (
    History,
    StreamAirtime,
    collector_paused,
    one_line,
    strip_bins,
)
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
# Each span's label, on its own colour: a contrast of at least 4.5 (WCAG AA for small text)
LABEL_COLOUR = {"off_air": "#ffffff", "silence": "#000000", "not_recorded": "#ffffff"}
# The content row's colours, apart from viridis (the tags') and the spans' red, white, black
CONTENT_COLOUR = {"music": "#1b9e77", "speech": "#e6861a", "silence": "#f2f2f2",
                  "tone": "#b05cc6", "noise": "#8c6d46"}
CONTENT_ROW = "content"
# Every text drawn as written: a title is a station's, a tag name a model file's, and
# matplotlib would read "$...$" in one as mathtext (raising on a command it does not know) and,
# where a user's matplotlibrc sets text.usetex, hand it to TeX
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}


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


def content_row(counted: np.ndarray, width: float, held_s: float) -> np.ndarray:
    """(1, bins): per bin the index in CONTENT_KINDS of the content most of its windows had
    (`counted`: windows per kind and bin, report.strip_bins'), NaN where none was known;
    short runs of empty bins held as the tags' are."""
    known = counted.sum(axis=0)
    row = np.where(known > 0, counted.argmax(axis=0).astype(float), np.nan)[np.newaxis, :]
    return hold_short_gaps(known, row, width, held_s)


@collector_paused()
def plot_history(engine: Engine, history: History, path: str, *, top: int = 8) -> list[str]:
    """Write the timeline to `path` (PNG, or any format matplotlib knows by the suffix);
    returns the streams drawn (at most MAX_STREAMS, in order of their names)."""
    from matplotlib import rc_context

    with rc_context(LITERAL_TEXT):  # and the tick labels made as it is saved
        figure, streams = draw_history(engine, history, top=top)
        _save(figure, path)
    return streams


@collector_paused()
def draw_history(engine: Engine, history: History, *, top: int = 8):
    """The timeline as a matplotlib Figure, and the streams drawn: each stream with windows,
    tracks or spans in the range (a stream off air throughout is a strip of its outage).
    Every text is drawn as written (``LITERAL_TEXT``)."""
    from matplotlib import rc_context

    with rc_context(LITERAL_TEXT):
        return _draw_history(engine, history, top)


def _draw_history(engine: Engine, history: History, top: int):
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    zone = history.zone
    streams = history.streams()[:MAX_STREAMS]

    def airtime_of(stream: str) -> StreamAirtime:
        return history.airtime.get(stream) or StreamAirtime()

    def rows(stream: str) -> int:  # a stream without windows: one row saying so
        return (max(1, min(top, len(airtime_of(stream).tags)))
                + (1 if airtime_of(stream).content else 0))

    height = sum(1.2 + 0.28 * rows(s) for s in streams)
    # laid out by `_lay_out`: matplotlib's constrained layout measured every strip's tick
    # labels twice over, half the time of a day's picture of 16 stations
    figure = Figure(figsize=(13, max(2.5, height + 0.8)))
    FigureCanvasAgg(figure)
    if not streams:
        figure.text(0.5, 0.5, "nothing recorded in this range", ha="center", va="center")
        return figure, []
    spans = [s for s in history.off_air + history.silence + history.not_recorded
             if s.stream in streams]
    entries = [e for e in history.as_run if e.stream in streams]
    by_stream: dict[str, list] = {}
    for e in entries:
        by_stream.setdefault(e.stream, []).append(e)
    heard = [airtime_of(s) for s in streams if airtime_of(s).windows]
    # The range asked for (--since up to --until, or up to now); an open end is the first or
    # last thing recorded, an outage or a track at the edge of what was recorded drawn whole
    # (a stream with events alone, no window, track or span: the range, else now)
    since = min([a.first_at for a in heard] + [s.start for s in spans]
                + [e.start for e in entries],
                default=history.now if history.since is None else history.since)
    until = max([a.last_at for a in heard] + [history.now if s.end is None else s.end
                                              for s in spans]
                + [history.now if e.end is None else e.end for e in entries],
                default=history.now)
    if history.since is not None:
        since = history.since
        until = history.now if history.until is None else history.until
    elif history.until is not None:
        until = min(until, history.until)
    if until <= since:
        until = since + 1.0
    hop = max([hop_s(a) for a in heard], default=1.0)
    bins = bin_count(since, until, hop)

    epoch_day = mdates.date2num(datetime(1970, 1, 1, tzinfo=UTC))

    def x(unix_s: float) -> float:  # matplotlib's days: the same for any zone
        return epoch_day + unix_s / 86400.0

    axes = figure.subplots(len(streams), 1, sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": [0.6 + 0.28 * rows(s)
                                                          for s in streams]})[:, 0]
    x0, x1 = x(since), x(until)
    titles: list[list] = []
    content_map = ListedColormap([CONTENT_COLOUR[k] for k in CONTENT_KINDS])
    for ax, stream in zip(axes, streams, strict=True):
        airtime = airtime_of(stream)
        tags = sorted(airtime.tags, key=lambda t: -airtime.share(t))[:top]
        ax.set_facecolor("#dddddd")  # bins without windows: nothing was recorded
        if tags:
            edges, counts, share, kinds = strip_bins(engine, stream, tags, since, until,
                                                     bins, history.tier)
            held = max(HELD_GAP_HOPS * hop, HELD_GAP_S)
            share = hold_short_gaps(counts, share, (until - since) / bins, held)
            ax.imshow(np.ma.masked_invalid(share), aspect="auto", interpolation="nearest",
                      cmap="viridis", vmin=0, vmax=1, extent=(x0, x1, len(tags) - 0.5, -0.5))
            labels = [f"{t}  {100 * airtime.share(t):.0f}%" for t in tags]
            if airtime.content:  # what the audio was, a row above the tags
                ax.imshow(np.ma.masked_invalid(content_row(kinds, (until - since) / bins,
                                                           held)),
                          aspect="auto", interpolation="nearest", cmap=content_map,
                          vmin=-0.5, vmax=len(CONTENT_KINDS) - 0.5,
                          extent=(x0, x1, -0.5, -1.5))
                ax.axhline(-0.5, color="black", linewidth=0.8)
                labels.insert(0, CONTENT_ROW)
            ax.set_ylim(len(tags) - 0.5, -1.5 if airtime.content else -0.5)
            ax.set_yticks(range(-1 if airtime.content else 0, len(tags)), labels, fontsize=9)
        else:
            ax.set_ylim(0.5, -0.5)
            ax.set_yticks([0], ["no windows"], fontsize=9)
        ax.set_ylabel(f"{stream}\n{airtime.windows} windows" if tags else stream,
                      fontsize=10, fontweight="bold")
        # the as-run log: the finished tracks and the one now playing
        tracks = [e for e in by_stream.get(stream, [])
                  if (e.end is None or e.end >= since) and e.start <= until]
        starts = [x(t.start) for t in tracks if t.start >= since]
        if starts:  # one collection: a day of a station is some 360 tracks
            ax.vlines(starts, 0, 1, transform=ax.get_xaxis_transform(), color="white",
                      linewidth=1.0, alpha=0.9)
        titles.append([])  # (each strip's, in order)
        if len(tracks) <= MAX_TRACK_LABELS:
            # Titles above the strip, on two alternating rows; each is cut short where it
            # would reach the next title on its row (fit_titles, once laid out)
            transform = ax.get_xaxis_transform()
            titles[-1].extend(
                ax.text(x(max(t.start, since)), 1.02 + 0.09 * (n % 2),
                        f"\u25b8 {one_line(t.title or '(untitled)')}"
                        + (" (now playing)" if t.now_playing else ""),
                        transform=transform, fontsize=7, va="bottom", ha="left", clip_on=False)
                for n, t in enumerate(tracks))
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
        # (seconds as 01:43:10, not matplotlib's bare "10")
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(
            locator, tz=zone.tz, show_offset=True,
            formats=["%Y", "%b", "%d", "%H:%M", "%H:%M", "%H:%M:%S"]))
        ax.tick_params(axis="x", labelbottom=True, labelsize=8)
    first, last = zone.at(since), zone.at(until)
    axes[-1].set_xlabel(f"{first:%Y-%m-%d %H:%M:%S}{zone.mark(since, until)} to "
                        f"{last:%Y-%m-%d %H:%M:%S}, "
                        f"{zone.label_span(since, until)}\nwhite lines: track changes; red "
                        "hatched: off air; white dotted: silence or stuck tone; black hatched: "
                        "data not recorded; grey: no windows; orange: daemon restart",
                        fontsize=9)
    legend = None
    if any(airtime_of(s).content for s in streams):
        legend = figure.legend(handles=[Patch(facecolor=CONTENT_COLOUR[k], edgecolor="#555555",
                                              label=k) for k in CONTENT_KINDS],
                               title="content row", loc="lower center", ncols=5, fontsize=8,
                               title_fontsize=8, frameon=False)
    # A colour bar about two strips tall, at the top, however many strips there are
    bar = figure.add_axes((0.9, 0.5, 0.01, 0.2), label="<colorbar>")
    figure.colorbar(ScalarMappable(Normalize(0, 1), "viridis"), cax=bar,
                    label="share of windows\nwith the tag active")
    _lay_out(figure, list(axes), titles, bar, legend,
             bar_share=min(0.8, 3.0 / figure.get_figheight()))
    for row in titles:  # once laid out: the titles' room is known
        fit_titles(row)
    return figure, streams


def _lay_out(figure, axes: list, titles: list[list], bar, legend, *, bar_share: float,
             pad_pt: float = 5.0) -> None:
    """Places the strips top to bottom, the colour bar at the top right and the legend at the
    bottom, each with the room its labels take: each strip's tick labels and name on its
    left, the times under it (measured on the first strip: every strip has the same), the
    last strip's caption, the titles above a strip (at heights that are shares of its own,
    so its height is solved for), the colour bar's numbers and label. The strips' heights
    keep their ratios and fill the figure's height."""
    renderer = figure.canvas.get_renderer()
    width, height = figure.bbox.width, figure.bbox.height  # pixels
    pad = pad_pt * figure.dpi / 72.0
    left = max(ax.bbox.x0 - ax.yaxis.get_tightbbox(renderer).x0 for ax in axes) + pad
    times = axes[0].xaxis.get_tightbbox(renderer)
    below = axes[0].bbox.y0 - times.y0
    last = axes[-1].xaxis.get_tightbbox(renderer)  # with the caption
    below_last = axes[-1].bbox.y0 - last.y0
    # past the strips' right end: the times' corner text, and a time whose tick falls at the
    # end (its label centred on it, half of it beyond; which time does depends on the range)
    half = max((t.get_window_extent(renderer).width / 2 for t in axes[0].get_xticklabels()
                if t.get_visible() and t.get_text()), default=0.0)
    over = max(times.x1 - axes[0].bbox.x1, last.x1 - axes[-1].bbox.x1, half, 0.0)
    ratios = axes[0].get_subplotspec().get_gridspec().get_height_ratios()
    # each strip's titles above it: (share of the strip's height, text height) at the top
    above: list[tuple[float, float]] = []
    for row in titles:
        boxes = [(t.get_position()[1] - 1.0, t.get_window_extent(renderer).height)
                 for t in row]
        above.append(max(boxes, default=(0.0, 0.0)))
    bottom = pad + (legend.get_window_extent(renderer).height + pad if legend else 0.0)
    fixed = (pad + bottom + below_last + (len(axes) - 1) * (below + pad)
             + sum(text for _, text in above))
    scale = max(height - fixed, 0.1 * height) / sum(
        r * (1.0 + share) for r, (share, _) in zip(ratios, above, strict=True))
    # top to bottom: each strip's bottom and height
    rows, y = [], height - pad
    for n, (ratio, (share, text)) in enumerate(zip(ratios, above, strict=True)):
        strip = ratio * scale
        y -= text + share * strip + strip
        rows.append((y, strip))
        y -= below_last if n == len(axes) - 1 else below + pad
    top = rows[0][0] + rows[0][1]
    # the colour bar: as tall as a share of the strips, as wide as a twentieth of that, its
    # numbers (as many as its height takes) and label beside it
    bar_h = bar_share * (top - rows[-1][0])
    bar_w = bar_h / 20.0
    bar.set_position((0.0, 0.0, bar_w / width, bar_h / height))
    bar_right = bar.get_tightbbox(renderer).x1 - bar.bbox.x1
    gap = max(2 * pad, over + pad)  # between the strips and the bar: room for what hangs over
    right = width - gap - bar_w - bar_right - pad
    bar.set_position(((right + gap) / width, (top - bar_h) / height, bar_w / width,
                      bar_h / height))
    for ax, (y, strip) in zip(axes, rows, strict=True):
        ax.set_position((left / width, y / height, (right - left) / width, strip / height))
    if legend is not None:
        legend.set_bbox_to_anchor((0.5, pad / height), transform=figure.transFigure)


def fit_titles(texts: list, pad_px: float = 4.0) -> None:
    """Cuts each title (on rows alternating with its neighbours') short, with an ellipsis,
    where it would reach the next title on its row or the strip's right edge; a title with no
    room for a character past its marker is the marker alone."""
    if not texts:
        return
    renderer = texts[0].axes.figure.canvas.get_renderer()
    right = texts[0].axes.get_window_extent(renderer).x1
    for n, text in enumerate(texts):
        limit = (texts[n + 2].get_window_extent(renderer).x0 if n + 2 < len(texts)
                 else right) - pad_px
        whole = text.get_text()
        if text.get_window_extent(renderer).x1 <= limit:
            continue
        low, high = 0, len(whole) - 2  # characters kept after "\u25b8 "
        while low < high:  # the most characters that fit, by bisection
            middle = (low + high + 1) // 2
            text.set_text(whole[:2 + middle] + "\u2026")
            if text.get_window_extent(renderer).x1 <= limit:
                low = middle
            else:
                high = middle - 1
        text.set_text(whole[:2 + low].rstrip() + "\u2026" if low else whole[0])


def _save(figure, path: str) -> None:
    """The picture under the name given: in the format its suffix names where matplotlib
    knows it, else PNG (left to itself, matplotlib would add .png to the name). Characters of
    titles that matplotlib's fonts lack are drawn as boxes: one line says so, in place of
    matplotlib's warning per character."""
    suffix = Path(path).suffix.lower().lstrip(".")
    known = figure.canvas.get_supported_filetypes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kind = suffix if suffix in known else "png"
        # zlib's fastest level: a file about twice the size, written in half the time
        figure.savefig(path, dpi=110, format=kind,
                       **({"pil_kwargs": {"compress_level": 1}} if kind == "png" else {}))
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
    if s.kind == "silence" and s.detail == STUCK_TONE:  # dead air, but a tone: said so
        label = STUCK_TONE
    start, end = max(s.start, since), min(now if s.end is None else s.end, until)
    if end <= start:
        return
    ax.axvspan(x(start), x(end), facecolor=colour, alpha=0.75, hatch=hatch,
               edgecolor="black" if s.kind != "not_recorded" else "white", linewidth=0.0)
    # on a box of the span's own colour, opaque: over the hatching and the strip beneath, a
    # bare label was faint (white on pale red)
    ax.text(x(start), 0.5, f"{label} {span(s.length(now))}", transform=ax.get_xaxis_transform(),
            fontsize=8, fontweight="bold", va="center", ha="left", rotation=90,
            color=LABEL_COLOUR[s.kind], clip_on=True,
            bbox={"facecolor": colour, "edgecolor": "none", "alpha": 1.0, "pad": 1.5})
