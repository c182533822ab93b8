"""The history as a picture: per stream, a heat strip of each leading tag's share of airtime
over time (the share of the windows in each time bin in which the tag was active), with the
tracks marked along the top and missing data shaded."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy.engine import Engine

from streamtag.history.report import History, tag_share_bins

MAX_BINS = 240          # columns per strip: enough to see a mood change, few enough to read
MAX_TRACK_LABELS = 30   # more titles than this would overprint; only lines are drawn then
MAX_STREAMS = 16        # strips in one picture; more would not be read (choose with --stream)


def plot_history(engine: Engine, history: History, path: str, *, top: int = 8) -> list[str]:
    """Write the timeline to `path` (PNG, or any format matplotlib knows by the suffix);
    returns the streams drawn (at most MAX_STREAMS, in order of their names)."""
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    streams = sorted(s for s, a in history.airtime.items() if a.windows)[:MAX_STREAMS]
    height = sum(1.2 + 0.28 * min(top, len(history.airtime[s].tags)) for s in streams)
    figure = Figure(figsize=(13, max(2.5, height + 0.8)), layout="constrained")
    FigureCanvasAgg(figure)
    if not streams:
        figure.text(0.5, 0.5, "nothing recorded in this range", ha="center", va="center")
        figure.savefig(path, dpi=110)
        return []
    since = min(history.airtime[s].first_at for s in streams)
    until = max(history.airtime[s].last_at for s in streams)
    if history.since is not None:
        since = max(since, history.since)
    if until <= since:
        until = since + 1.0
    bins = MAX_BINS
    ratios = [0.6 + 0.28 * min(top, len(history.airtime[s].tags)) for s in streams]
    axes = figure.subplots(len(streams), 1, sharex=True, squeeze=False,
                           gridspec_kw={"height_ratios": ratios})[:, 0]
    image = None
    x0, x1 = mdates.date2num(datetime.fromtimestamp(since)), mdates.date2num(
        datetime.fromtimestamp(until))
    for ax, stream in zip(axes, streams, strict=True):
        airtime = history.airtime[stream]
        tags = sorted(airtime.tags, key=lambda t: -airtime.share(t))[:top]
        edges, counts, share = tag_share_bins(engine, stream, tags, since, until, bins)
        image = ax.imshow(np.ma.masked_invalid(share), aspect="auto", interpolation="nearest",
                          cmap="viridis", vmin=0, vmax=1, extent=(x0, x1, len(tags) - 0.5, -0.5))
        ax.set_yticks(range(len(tags)),
                      [f"{t}  {100 * airtime.share(t):.0f}%" for t in tags], fontsize=9)
        ax.set_ylabel(f"{stream}\n{airtime.windows} windows", fontsize=10,
                      fontweight="bold")
        ax.set_facecolor("#dddddd")  # bins without windows: nothing was recorded
        tracks = [t for t in history.tracks if t["stream"] == stream
                  and t["ended_at"] >= since and t["started_at"] <= until]
        for t in tracks:
            if t["started_at"] >= since:
                ax.axvline(mdates.date2num(datetime.fromtimestamp(t["started_at"])),
                           color="white", linewidth=1.0, alpha=0.9)
        if len(tracks) <= MAX_TRACK_LABELS:
            # Titles above the strip, on two alternating rows so neighbours do not overprint.
            transform = ax.get_xaxis_transform()
            for n, t in enumerate(tracks):
                start = max(t["started_at"], since)
                ax.text(mdates.date2num(datetime.fromtimestamp(start)), 1.02 + 0.09 * (n % 2),
                        f"\u25b8 {t['title'] or '(untitled)'}", transform=transform,
                        fontsize=7, va="bottom", ha="left", clip_on=False)
        for gap in (g for g in history.gaps if g["stream"] == stream):
            at = mdates.date2num(datetime.fromtimestamp(gap["detected_at"]))
            ax.axvline(at, color="red", linewidth=1.5, linestyle="--")
        for r in (r for r in history.restarts if r["stream"] == stream):
            ax.axvline(mdates.date2num(datetime.fromtimestamp(r["first_sent_at"])),
                       color="orange", linewidth=1.5)
    axes[-1].set_xlim(x0, x1)
    axes[-1].xaxis_date()
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    axes[-1].set_xlabel(f"local time, {datetime.fromtimestamp(since):%Y-%m-%d %H:%M} to "
                        f"{datetime.fromtimestamp(until):%Y-%m-%d %H:%M}  (white lines: track "
                        "changes; red dashed: data missing; orange: daemon restart)")
    for ax in axes:  # every strip carries its own times: a tall picture is read in parts
        ax.tick_params(axis="x", labelbottom=True, labelsize=8)
    # A colour bar about two strips tall, at the top, however many strips there are.
    figure.colorbar(image, ax=list(axes), label="share of windows\nwith the tag active",
                    shrink=min(0.8, 3.0 / figure.get_figheight()), anchor=(0.0, 1.0))
    figure.savefig(path, dpi=110)
    return streams
