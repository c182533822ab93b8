"""A scripted evening of one station for the content views' tests: music with a news bulletin
on the hour, dead air after midnight's bulletin, sent by a real Publisher (the daemon's
messages, content included, as protocol 1.7 has them) and stored by a real recorder. Every
window lists the tag "calm" as active, speech and dead air too, as the first windows of a
run of speech do before the daemon takes the tags back: no view may show it there."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from support.history_station import MODEL, RATE, Station, record

from streamtag.history.timeparse import Zone, zone_named
from streamtag.wire.protocol import ScoresBody, StatusBody

TAGS = ("calm", "dark")
HOP_S = 10.0  # one window every 10 s: three hours in 1,080 messages
WINDOW_S = 12.0  # windows overlap, as a daemon's do: speech makes spans
ZONE = zone_named("Europe/Berlin")
DAY = date(2026, 11, 20)  # UTC+01:00 all evening


@dataclass(frozen=True)
class Part:
    content: str
    minutes: float


# 22:30 to 01:30 in Berlin: a bulletin at 23:00 and at midnight, 4 minutes of dead air after
# the second
PROGRAMME = (Part("music", 30), Part("speech", 6), Part("music", 54), Part("speech", 6),
             Part("silence", 4), Part("music", 50), Part("music", 30))


def start(zone: Zone = ZONE) -> float:
    return zone.timestamp(DAY, 22, 30)


def play(station: Station, stream: str, t0: float, programme=PROGRAMME) -> list[tuple]:
    """Sends `programme` from `t0`, a window every HOP_S; returns (sent_at, content) of each
    window."""
    station.send(stream, StatusBody(state="running", title="Evening", source="test"), t0 - 1)
    sent, i = [], 0
    for part in programme:
        for _ in range(round(part.minutes * 60 / HOP_S)):
            at = t0 + i * HOP_S
            station.send(stream, ScoresBody(
                start_s=i * HOP_S, end_s=i * HOP_S + WINDOW_S,
                start_sample=int(i * HOP_S * RATE), end_sample=int((i * HOP_S + WINDOW_S) * RATE),
                tags=TAGS, raw=(0.9, 0.1), smoothed=(0.9, 0.1), active=("calm",), model=MODEL,
                latency_ms=1.0, content=part.content), at)
            sent.append((at, part.content))
            i += 1
    return sent


def recorded(url: str, t0: float | None = None) -> list[tuple]:
    """The evening recorded into the database at `url` through a real recorder."""
    return record(url, lambda station: play(station, "radio-1", start() if t0 is None else t0))
